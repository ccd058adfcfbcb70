-- mapping.sql: the PL/pgSQL twin of src/mapping.c (read it side by side).
-- JSON-path segments, written the way the validator's error paths and
-- ingest's write them, and the rules of mapped sources (sources that cannot
-- send the envelope): which member is the eventId, the timestamp or payload,
-- and when an id member is an id.
--
-- A path is "$" followed by segments: [3] for an array element, .name for a
-- member whose name is [A-Za-z_][A-Za-z0-9_]*, and ["name"] for any other
-- member, the name written as the contents of a JSON string ("\"", "\\" and
-- "\u00XX" for control characters; other characters as they are). A name
-- longer than the limit (in bytes) is cut on a character boundary and ends
-- in "..." inside the quotes.

-- ep_path_plain_name(): whether a member name can be written as .name (ASCII, not empty).
CREATE OR REPLACE FUNCTION evpipe._path_plain_name(name text)
RETURNS boolean
LANGUAGE plpgsql IMMUTABLE STRICT PARALLEL SAFE
AS $$
BEGIN
	RETURN name ~ '^[A-Za-z_][A-Za-z0-9_]*$';
END
$$;
COMMENT ON FUNCTION evpipe._path_plain_name(text) IS
	'Internal (twin of mapping.c ep_path_plain_name): whether a member name is written .name in a JSON path';

-- ep_json_excerpt(): s as the contents of a JSON string, at most max_bytes of
-- it, in a buffer of outlen bytes (a NUL included); cut on a character
-- boundary and ended with "..." when it does not all fit. exact tells whether
-- all of s was written.
CREATE OR REPLACE FUNCTION evpipe._json_excerpt(s text, max_bytes integer, outlen integer,
	OUT excerpt text, OUT exact boolean)
LANGUAGE plpgsql IMMUTABLE STRICT PARALLEL SAFE
AS $$
DECLARE
	o integer := 0;			-- bytes written
	taken integer := 0;		-- bytes of s read
	cut boolean := false;
	parts text[] := '{}';
	ch text;
	b integer;
	need integer;
	code integer;
BEGIN
	IF outlen <= 0 THEN
		excerpt := '';
		exact := s = '';
		RETURN;
	END IF;
	-- the common case: nothing to escape, nothing to cut
	IF octet_length(s) <= max_bytes AND octet_length(s) + 4 <= outlen
		AND s !~ '[\x01-\x1f\x7f"\\]' THEN
		excerpt := s;
		exact := true;
		RETURN;
	END IF;
	cut := octet_length(s) > max_bytes;
	FOREACH ch IN ARRAY regexp_split_to_array(s, '') LOOP
		b := octet_length(ch);
		-- the bytes kept are the whole characters within max_bytes
		EXIT WHEN taken + b > max_bytes;
		code := ascii(ch);
		need := CASE WHEN b > 1 THEN b
			WHEN code < 32 OR code = 127 THEN 6
			WHEN ch = '"' OR ch = '\' THEN 2
			ELSE 1 END;
		-- room for this character's text, a later "..." and the terminator
		IF o + need + 4 > outlen THEN
			cut := true;
			EXIT;
		END IF;
		parts := parts || CASE WHEN b > 1 THEN ch WHEN need = 6 THEN '\u00' || lpad(to_hex(code), 2, '0')
			WHEN need = 2 THEN '\' || ch ELSE ch END;
		o := o + need;
		taken := taken + b;
	END LOOP;
	excerpt := array_to_string(parts, '');
	IF cut AND o + 4 <= outlen THEN
		excerpt := excerpt || '...';
	END IF;
	exact := NOT cut;
END
$$;
COMMENT ON FUNCTION evpipe._json_excerpt(text, integer, integer) IS
	'Internal (twin of mapping.c ep_json_excerpt): a string as JSON string contents, cut to a byte limit on a character boundary';

-- ep_path_member(): the path segment of member name, .name or ["name"] (an
-- odd name cut to max_bytes), for a buffer of outlen bytes.
CREATE OR REPLACE FUNCTION evpipe._path_member(name text, max_bytes integer, outlen integer DEFAULT 256)
RETURNS text
LANGUAGE plpgsql IMMUTABLE STRICT PARALLEL SAFE
AS $$
BEGIN
	IF name ~ '^[A-Za-z_][A-Za-z0-9_]*$' AND octet_length(name) + 2 <= outlen THEN
		RETURN '.' || name;
	END IF;
	IF outlen < 8 THEN			-- not even ["..."]
		RETURN '';
	END IF;
	RETURN '["' || (evpipe._json_excerpt(name, max_bytes, outlen - 4)).excerpt || '"]';
END
$$;
COMMENT ON FUNCTION evpipe._path_member(text, integer, integer) IS
	'Internal (twin of mapping.c ep_path_member): the JSON path segment of a member, .name or ["name"]';

-- ep_mapped_path(): the path of a mapped source's member, "$" and its
-- segment (names kept up to EP_MAPPED_NAME_MAX = 128 bytes, paths up to
-- EP_ERR_PATH_LEN = 256 bytes).
CREATE OR REPLACE FUNCTION evpipe._mapped_path(field text)
RETURNS text
LANGUAGE plpgsql IMMUTABLE STRICT PARALLEL SAFE
AS $$
BEGIN
	IF field ~ '^[A-Za-z_][A-Za-z0-9_]*$' AND octet_length(field) <= 253 THEN
		RETURN '$.' || field;
	END IF;
	RETURN '$' || evpipe._path_member(field, 128, 255);
END
$$;
COMMENT ON FUNCTION evpipe._mapped_path(text) IS
	'Internal (twin of mapping.c ep_mapped_path): the JSON path of a mapped source''s eventId or timestamp member';

-- ep_mapped_id(): the eventId of a mapped event from its id member: a
-- string as it is; a number only when it is an integer the way numeric
-- keeps it (jsonb prints a number as numeric_out does: no exponent, no "+",
-- no leading zeros, so an integer is exactly a text without a point); NULL
-- for anything else (EP_MAPPED_ID_TYPE).
CREATE OR REPLACE FUNCTION evpipe._mapped_id(v jsonb)
RETURNS text
LANGUAGE plpgsql IMMUTABLE STRICT PARALLEL SAFE
AS $$
DECLARE
	t text;
BEGIN
	CASE jsonb_typeof(v)
		WHEN 'string' THEN
			RETURN v #>> '{}';
		WHEN 'number' THEN
			t := v::text;
			IF strpos(t, '.') > 0 THEN
				RETURN NULL;
			END IF;
			RETURN t;
		ELSE
			RETURN NULL;
	END CASE;
END
$$;
COMMENT ON FUNCTION evpipe._mapped_id(jsonb) IS
	'Internal (twin of mapping.c ep_mapped_id): the eventId of a mapped event from its id member, or NULL when it is neither a string nor an integer';
