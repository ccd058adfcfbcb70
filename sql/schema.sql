-- Payloads are validated against their type's JSON Schema (a supported
\set SHOW_CONTEXT never
-- subset of draft 2020-12). Schemas are checked when registered.
SELECT evpipe.register_event_type('ORDER_PLACED', '{
	"$defs": {
		"money": {"type": "number", "minimum": 0, "multipleOf": 0.01},
		"line": {
			"type": "object",
			"required": ["sku", "qty"],
			"properties": {
				"sku": {"type": "string", "pattern": "^[A-Z]{3}-\\d{3}$"},
				"qty": {"type": "integer", "minimum": 1, "maximum": 100},
				"price": {"$ref": "#/$defs/money"}
			},
			"additionalProperties": false
		}
	},
	"type": "object",
	"required": ["orderId", "lines", "email"],
	"properties": {
		"orderId": {"type": "string", "format": "uuid"},
		"email": {"type": "string", "format": "email", "maxLength": 254},
		"placedAt": {"type": "string", "format": "date-time"},
		"status": {"enum": ["new", "paid", "shipped"]},
		"channel": {"const": "web"},
		"note": {"type": ["string", "null"], "minLength": 2, "maxLength": 5},
		"discount": {"type": "number", "exclusiveMinimum": 0, "exclusiveMaximum": 1},
		"tags": {"type": "array", "items": {"type": "string"}, "minItems": 1, "maxItems": 3, "uniqueItems": true},
		"lines": {"type": "array", "items": {"$ref": "#/$defs/line"}, "minItems": 1},
		"meta": {"type": "object", "additionalProperties": {"type": "integer"}}
	}
}');
SELECT evpipe.create_destination('orders', 'http', '{"url": "http://127.0.0.1:9/orders"}');
SELECT evpipe.add_route('ORDER_PLACED', 'orders');

CREATE FUNCTION ord(id text, patch jsonb) RETURNS text LANGUAGE sql AS $$
	SELECT try_ingest(ev(id, 'ORDER_PLACED', jsonb_build_object(
		'orderId', '6f1c2a4e-8b9d-4e2f-a1b3-c5d7e9f0a2b4', 'email', 'ann@example.com',
		'lines', '[{"sku": "ABC-123", "qty": 2, "price": 9.99}]'::jsonb) || patch));
$$;

CREATE FUNCTION ord_status(id text, patch jsonb) RETURNS text LANGUAGE sql AS $$
	SELECT ingest_status(ev(id, 'ORDER_PLACED', jsonb_build_object(
		'orderId', '6f1c2a4e-8b9d-4e2f-a1b3-c5d7e9f0a2b4', 'email', 'ann@example.com',
		'lines', '[{"sku": "ABC-123", "qty": 2, "price": 9.99}]'::jsonb) || patch));
$$;

-- valid
SELECT ord('o1', '{}');
SELECT ord('o2', '{"status": "paid", "channel": "web", "note": "hi", "discount": 0.5, "tags": ["a", "b"], "meta": {"n": 1}, "placedAt": "2026-11-21T10:00:00.123+01:00"}');
SELECT ord('o3', '{"note": null}');
-- each keyword refused
SELECT ord('bad', '{"orderId": 7}');                               -- type
SELECT ord('bad', '{"orderId": "not-a-uuid"}');                    -- format uuid
SELECT ord('bad', '{"email": "ann.example.com"}');                 -- format email
SELECT ord('bad', '{"placedAt": "2026-13-01T00:00:00Z"}');         -- format date-time
SELECT ord('bad', '{"status": "lost"}');                           -- enum
SELECT ord('bad', '{"channel": "phone"}');                         -- const
SELECT ord('bad', '{"note": "x"}');                                -- minLength
SELECT ord('bad', '{"note": "toolong"}');                          -- maxLength
SELECT ord('bad', '{"note": 5}');                                  -- type list
SELECT ord('bad', '{"discount": 0}');                              -- exclusiveMinimum
SELECT ord('bad', '{"discount": 1}');                              -- exclusiveMaximum
SELECT ord('bad', '{"tags": []}');                                 -- minItems
SELECT ord('bad', '{"tags": ["a", "b", "c", "d"]}');               -- maxItems
SELECT ord('bad', '{"tags": ["a", "a"]}');                         -- uniqueItems
SELECT ord('bad', '{"tags": ["a", 1]}');                           -- items
SELECT ord('bad', '{"meta": {"n": 1.5}}');                         -- additionalProperties schema
SELECT ord('bad', '{"lines": [{"sku": "ABC-123", "qty": 0}]}');    -- minimum through $ref
SELECT ord('bad', '{"lines": [{"sku": "ABC-123", "qty": 101}]}');  -- maximum
SELECT ord('bad', '{"lines": [{"sku": "abc-123", "qty": 1}]}');    -- pattern
SELECT ord('bad', '{"lines": [{"sku": "ABC-123", "qty": 1, "price": 1.005}]}'); -- multipleOf
SELECT ord('bad', '{"lines": [{"sku": "ABC-123", "qty": 1, "colour": "red"}]}'); -- additionalProperties false
SELECT ord('bad', '{"lines": [{"qty": 1}]}');                      -- required, nested
SELECT try_ingest(ev('bad', 'ORDER_PLACED', '{"orderId": "6f1c2a4e-8b9d-4e2f-a1b3-c5d7e9f0a2b4"}')); -- required
-- integers: 2.0 is an integer, 2.5 is not
SELECT ord_status('o4', '{"lines": [{"sku": "ABC-123", "qty": 2.0}]}');
SELECT ord('bad', '{"lines": [{"sku": "ABC-123", "qty": 2.5}]}');

-- Schemas are checked when registered: invalid ones are refused then.
CREATE FUNCTION try_register(t text, s jsonb) RETURNS text LANGUAGE plpgsql AS $$
DECLARE st text; msg text; det text;
BEGIN
	RETURN evpipe.register_event_type(t, s)::text;
EXCEPTION WHEN OTHERS THEN
	GET STACKED DIAGNOSTICS st = RETURNED_SQLSTATE, msg = MESSAGE_TEXT, det = PG_EXCEPTION_DETAIL;
	RETURN st || ' ' || msg || ' | ' || det;
END $$;
SELECT try_register('T', '{"type": "thing"}');
SELECT try_register('T', '{"type": []}');
SELECT try_register('T', '{"minLength": -1}');
SELECT try_register('T', '{"minimum": "5"}');
SELECT try_register('T', '{"required": "a"}');
SELECT try_register('T', '{"properties": {"a": 5}}');
SELECT try_register('T', '{"pattern": "(unclosed"}');
SELECT try_register('T', '{"format": "ipv4"}');
SELECT try_register('T', '{"anyOf": [{"type": "string"}]}');
SELECT try_register('T', '{"$ref": "#/$defs/missing"}');
SELECT try_register('T', '{"$defs": {"a": {"$ref": "#/$defs/b"}, "b": {"$ref": "#/$defs/a"}}, "$ref": "#/$defs/a"}');
SELECT try_register('T', '{"$ref": "http://example.com/schema"}');
SELECT try_register('T', '{"items": [{"type": "string"}]}');
SELECT try_register('T', '{"multipleOf": 0}');
SELECT try_register('T', '{"enum": []}');
SELECT try_register('bad name!', '{}');
SELECT try_register('T', NULL);
-- a recursive schema is fine: recursion goes through the instance
SELECT try_register('TREE', '{"$defs": {"node": {"type": "object", "properties": {"children": {"type": "array", "items": {"$ref": "#/$defs/node"}}}}}, "$ref": "#/$defs/node"}');

-- Versions: a new schema for a type is stored beside the old one; events
-- remember the version they were validated with.
SELECT evpipe.register_event_type('VERSIONED', '{"type": "object", "required": ["a"]}');
SELECT evpipe.register_event_type('VERSIONED', '{"type": "object", "required": ["a"]}');  -- same schema: same version
SELECT evpipe.create_destination('versions', 'http', '{"url": "http://127.0.0.1:9/v"}');
SELECT evpipe.add_route('VERSIONED', 'versions');
SELECT ingest_status(ev('v-1', 'VERSIONED', '{"a": 1}'));
SELECT evpipe.register_event_type('VERSIONED', '{"type": "object", "required": ["a", "b"]}');
SELECT try_ingest(ev('v-2', 'VERSIONED', '{"a": 1}'));
SELECT ingest_status(ev('v-2', 'VERSIONED', '{"a": 1, "b": 2}'));
SELECT event_id, schema_version FROM evpipe.events WHERE event_type = 'VERSIONED' ORDER BY 1;
SELECT event_type, version FROM evpipe.event_types WHERE event_type = 'VERSIONED' ORDER BY version;
SELECT event_type, current_version FROM evpipe.event_type_list WHERE event_type = 'VERSIONED';

-- Disabled types are refused; enabled again, accepted.
SELECT evpipe.set_event_type_enabled('VERSIONED', false);
SELECT try_ingest(ev('v-3', 'VERSIONED', '{"a": 1, "b": 2}'));
SELECT evpipe.set_event_type_enabled('VERSIONED', true);
SELECT ingest_status(ev('v-3', 'VERSIONED', '{"a": 1, "b": 2}'));

-- Depth: payloads nest at most evpipe.max_depth (default 64) levels.
SELECT evpipe.register_event_type('ANY', '{"type": "object"}');
SELECT evpipe.add_route('ANY', 'versions');
SELECT ingest_status(ev('deep-ok2', 'ANY', ('{"a":' || repeat('[', 62) || repeat(']', 62) || '}')::jsonb));
SELECT try_ingest(ev('deep-bad', 'ANY', ('{"a":' || repeat('[', 70) || repeat(']', 70) || '}')::jsonb));

-- evpipe.validate (0.4.0): the validator on its own; paths from $, the first error.
SELECT evpipe.validate('{"type": "object", "required": ["a"]}', '{"a": 1}') IS NULL AS valid;
SELECT evpipe.validate('{"type": "object", "required": ["a"]}', '{}');
SELECT evpipe.validate('{"type": "object", "properties": {"items": {"type": "array", "items": {"type": "integer", "minimum": 0}}}}',
	'{"items": [1, 2, -3, "x"]}');
SELECT evpipe.validate('{"type": "string", "format": "uuid"}', '"not-a-uuid"');
SELECT evpipe.validate('{"enum": [1, "a"]}', '1.0') IS NULL AS one_equals_one_point_zero;
SELECT evpipe.validate('{"type": "array"}', (repeat('[', 70) || repeat(']', 70))::jsonb);
-- an invalid schema is refused as register_event_type refuses it
SELECT evpipe.validate('{"type": "strnig"}', '1');
SELECT evpipe.validate('{"$ref": "#/x"}', '1');
SELECT evpipe.validate(NULL, '1') IS NULL AS strict;
-- producers may call it
SET ROLE evpipe_producer;
SELECT evpipe.validate('{"maxLength": 2}', '"abc"');
RESET ROLE;
