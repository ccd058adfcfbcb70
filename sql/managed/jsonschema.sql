-- evpipe managed install: the JSON Schema validator (twin of src/jsonschema.c, src/validate.c and the
-- jsonb nesting check of src/jsonutil.c). _schema_error mirrors ep_schema_compile, _validate_at mirrors
-- ep_schema_validate; paths, rules and messages are the C ones byte for byte.
-- Differences that PostgreSQL's regular expressions impose on "pattern" (the C uses glibc POSIX EREs) are
-- listed in docs/jsonschema-suite.md.

-- evpipe.max_depth as the C reads it (default 64 when unset).
CREATE OR REPLACE FUNCTION evpipe._js_max_depth()
RETURNS integer
LANGUAGE plpgsql STABLE PARALLEL SAFE
AS $$
DECLARE
	v text := pg_catalog.current_setting('evpipe.max_depth', true);
BEGIN
	IF v IS NULL OR v = '' THEN
		RETURN 64;
	END IF;
	RETURN v::integer;
END;
$$;
COMMENT ON FUNCTION evpipe._js_max_depth() IS
	'Internal: evpipe.max_depth, 64 when unset (the C default)';

-- ep_json_excerpt: s as JSON string contents, at most maxb bytes of it, in an outlen-byte buffer.
CREATE OR REPLACE FUNCTION evpipe._js_excerpt(s text, outlen integer, maxb integer)
RETURNS text
LANGUAGE plpgsql IMMUTABLE STRICT PARALLEL SAFE
AS $$
DECLARE
	cut boolean := pg_catalog.octet_length(s) > maxb;
	used integer := 0;
	o integer := 0;
	res text := '';
	c text;
	piece text;
	cp integer;
BEGIN
	FOREACH c IN ARRAY pg_catalog.string_to_array(pg_catalog.left(s, maxb), NULL)
	LOOP
		used := used + pg_catalog.octet_length(c);
		EXIT WHEN used > maxb;
		cp := pg_catalog.ascii(c);
		IF cp < 32 OR cp = 127 THEN
			piece := '\u00' || pg_catalog.lpad(pg_catalog.to_hex(cp), 2, '0');
		ELSIF c = '"' OR c = '\' THEN
			piece := '\' || c;
		ELSE
			piece := c;
		END IF;
		IF o + pg_catalog.octet_length(piece) + 4 > outlen THEN
			cut := true;
			EXIT;
		END IF;
		res := res || piece;
		o := o + pg_catalog.octet_length(piece);
	END LOOP;
	IF cut AND o + 4 <= outlen THEN
		res := res || '...';
	END IF;
	RETURN res;
END;
$$;
COMMENT ON FUNCTION evpipe._js_excerpt(text, integer, integer) IS
	'Internal: a name or value as JSON string contents, cut to a byte limit with "..." (ep_json_excerpt)';

-- ep_path_member: the path segment of a member, .name or ["odd name"].
CREATE OR REPLACE FUNCTION evpipe._js_seg(name text)
RETURNS text
LANGUAGE plpgsql IMMUTABLE STRICT PARALLEL SAFE
AS $$
BEGIN
	IF name ~ '^[A-Za-z_][A-Za-z0-9_]*$' AND pg_catalog.octet_length(name) <= 254 THEN
		RETURN '.' || name;
	END IF;
	RETURN '["' || evpipe._js_excerpt(name, 252, 48) || '"]';
END;
$$;
COMMENT ON FUNCTION evpipe._js_seg(text) IS
	'Internal: the path segment of a member name (ep_path_member)';

-- path_push: append a segment whole, or "..." once the 255-byte path is full.
CREATE OR REPLACE FUNCTION evpipe._js_push(path text, seg text)
RETURNS text
LANGUAGE plpgsql IMMUTABLE STRICT PARALLEL SAFE
AS $$
BEGIN
	IF pg_catalog.octet_length(path) >= 3 AND pg_catalog.right(path, 3) = '...' THEN
		RETURN path;
	END IF;
	IF pg_catalog.octet_length(path) + pg_catalog.octet_length(seg) + 3 >= 256 THEN
		RETURN path || '...';
	END IF;
	RETURN path || seg;
END;
$$;
COMMENT ON FUNCTION evpipe._js_push(text, text) IS
	'Internal: append a segment to an error path, cutting it at 255 bytes between segments';

-- strtod of a number's text: float8, infinite or zero where it over- or underflows.
CREATE OR REPLACE FUNCTION evpipe._js_f8(n numeric)
RETURNS double precision
LANGUAGE plpgsql IMMUTABLE STRICT PARALLEL SAFE
AS $$
BEGIN
	RETURN n::double precision;
EXCEPTION WHEN numeric_value_out_of_range THEN
	IF pg_catalog.abs(n) > 1 THEN
		RETURN CASE WHEN n > 0 THEN 'Infinity'::double precision ELSE '-Infinity'::double precision END;
	END IF;
	RETURN CASE WHEN n > 0 THEN 0::double precision ELSE '-0'::double precision END;
END;
$$;
COMMENT ON FUNCTION evpipe._js_f8(numeric) IS
	'Internal: a JSON number as the C double (strtod: infinite or zero out of range)';

-- 2^k or 5^k exactly, as numeric.
CREATE OR REPLACE FUNCTION evpipe._js_ipow(base integer, k integer)
RETURNS numeric
LANGUAGE plpgsql IMMUTABLE STRICT PARALLEL SAFE
AS $$
DECLARE
	v numeric := 1;
	chunk numeric := CASE WHEN base = 2 THEN 1152921504606846976::numeric ELSE 7450580596923828125::numeric END;
	step integer := CASE WHEN base = 2 THEN 60 ELSE 27 END;
BEGIN
	WHILE k >= step LOOP
		v := v * chunk;
		k := k - step;
	END LOOP;
	WHILE k > 0 LOOP
		v := v * base;
		k := k - 1;
	END LOOP;
	RETURN v;
END;
$$;
COMMENT ON FUNCTION evpipe._js_ipow(integer, integer) IS
	'Internal: an exact power of 2 or 5';

-- printf("%.17g") of a finite double, from its exact binary value.
CREATE OR REPLACE FUNCTION evpipe._js_g17(d double precision)
RETURNS text
LANGUAGE plpgsql IMMUTABLE STRICT PARALLEL SAFE
AS $$
DECLARE
	b bytea;
	neg boolean;
	e integer;
	m numeric;
	dig text;
	k integer := 0;
	x integer;
	head text;
	rest text;
	up boolean := false;
	res text;
BEGIN
	IF d = 'Infinity'::double precision THEN
		RETURN 'inf';
	ELSIF d = '-Infinity'::double precision THEN
		RETURN '-inf';
	ELSIF d = 0 THEN
		RETURN CASE WHEN pg_catalog.get_byte(pg_catalog.float8send(d), 0) >= 128 THEN '-0' ELSE '0' END;
	END IF;
	b := pg_catalog.float8send(d);
	neg := pg_catalog.get_byte(b, 0) >= 128;
	e := ((pg_catalog.get_byte(b, 0) & 127) << 4) | (pg_catalog.get_byte(b, 1) >> 4);
	m := (pg_catalog.get_byte(b, 1) & 15)::numeric;
	FOR i IN 2..7 LOOP
		m := m * 256 + pg_catalog.get_byte(b, i);
	END LOOP;
	IF e = 0 THEN
		e := -1074;
	ELSE
		m := m + 4503599627370496;
		e := e - 1075;
	END IF;
	IF e >= 0 THEN
		dig := pg_catalog.trunc(m * evpipe._js_ipow(2, e))::text;
	ELSE
		dig := pg_catalog.trunc(m * evpipe._js_ipow(5, -e))::text;
		k := -e;
	END IF;
	x := pg_catalog.length(dig) - 1 - k;
	IF pg_catalog.length(dig) > 17 THEN
		head := pg_catalog.left(dig, 17);
		rest := pg_catalog.substr(dig, 18);
		IF pg_catalog.left(rest, 1) > '5' THEN
			up := true;
		ELSIF pg_catalog.left(rest, 1) = '5' THEN
			IF pg_catalog.rtrim(pg_catalog.substr(rest, 2), '0') <> '' THEN
				up := true;
			ELSE
				up := pg_catalog.right(head, 1) IN ('1', '3', '5', '7', '9');
			END IF;
		END IF;
		IF up THEN
			head := (head::numeric + 1)::text;
			IF pg_catalog.length(head) > 17 THEN
				head := pg_catalog.left(head, 17);
				x := x + 1;
			END IF;
		END IF;
		dig := head;
	END IF;
	dig := pg_catalog.rtrim(dig, '0');
	IF x < -4 OR x >= 17 THEN
		res := pg_catalog.left(dig, 1);
		IF pg_catalog.length(dig) > 1 THEN
			res := res || '.' || pg_catalog.substr(dig, 2);
		END IF;
		res := res || 'e' || CASE WHEN x < 0 THEN '-' ELSE '+' END ||
			CASE WHEN pg_catalog.abs(x) < 10 THEN '0' ELSE '' END || pg_catalog.abs(x)::text;
	ELSIF x >= 0 THEN
		IF pg_catalog.length(dig) <= x + 1 THEN
			res := dig || pg_catalog.repeat('0', x + 1 - pg_catalog.length(dig));
		ELSE
			res := pg_catalog.left(dig, x + 1) || '.' || pg_catalog.substr(dig, x + 2);
		END IF;
	ELSE
		res := '0.' || pg_catalog.repeat('0', -x - 1) || dig;
	END IF;
	RETURN CASE WHEN neg THEN '-' || res ELSE res END;
END;
$$;
COMMENT ON FUNCTION evpipe._js_g17(double precision) IS
	'Internal: a double as printf %.17g writes it';

-- A JSON value as json-c writes it (JSON_C_TO_STRING_PLAIN: no spaces, "/" escaped).
CREATE OR REPLACE FUNCTION evpipe._js_jsonc_text(j jsonb)
RETURNS text
LANGUAGE plpgsql IMMUTABLE STRICT PARALLEL SAFE
AS $$
BEGIN
	RETURN pg_catalog.replace(
		pg_catalog.regexp_replace(j::text, '("(?:[^"\\]|\\.)*")|([,:]) ', '\1\2', 'g'),
		'/', '\/');
END;
$$;
COMMENT ON FUNCTION evpipe._js_jsonc_text(jsonb) IS
	'Internal: a JSON value as json-c serialises it (plain, slashes escaped)';

-- value_text: a short text of an instance value for messages.
CREATE OR REPLACE FUNCTION evpipe._js_value_text(v jsonb)
RETURNS text
LANGUAGE plpgsql IMMUTABLE STRICT PARALLEL SAFE
AS $$
BEGIN
	IF pg_catalog.jsonb_typeof(v) = 'string' THEN
		RETURN '"' || evpipe._js_excerpt(v #>> '{}', 62, 40) || '"';
	END IF;
	RETURN evpipe._js_excerpt(evpipe._js_jsonc_text(v), 64, 40);
END;
$$;
COMMENT ON FUNCTION evpipe._js_value_text(jsonb) IS
	'Internal: an instance value as validator messages quote it (value_text)';

-- Whether a JSON number is a json-c int (integer text within int64) or a double.
CREATE OR REPLACE FUNCTION evpipe._js_is_int64(n numeric)
RETURNS boolean
LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE
AS $$
SELECT pg_catalog.scale(n) = 0 AND n BETWEEN -9223372036854775808 AND 9223372036854775807
$$;
COMMENT ON FUNCTION evpipe._js_is_int64(numeric) IS
	'Internal: whether json-c holds a number as an int64 (no decimal point, in range)';

-- ep_json_equal: deep equality, numbers compared as doubles unless both are int64.
CREATE OR REPLACE FUNCTION evpipe._js_equal(a jsonb, b jsonb)
RETURNS boolean
LANGUAGE plpgsql IMMUTABLE STRICT PARALLEL SAFE
AS $$
DECLARE
	t text;
	na numeric;
	nb numeric;
	k text;
BEGIN
	IF a = b THEN
		RETURN true;			-- jsonb equality implies the C one
	END IF;
	t := pg_catalog.jsonb_typeof(a);
	IF t <> pg_catalog.jsonb_typeof(b) THEN
		RETURN false;
	END IF;
	IF t = 'number' THEN
		na := a::numeric;
		nb := b::numeric;
		IF evpipe._js_is_int64(na) AND evpipe._js_is_int64(nb) THEN
			RETURN false;
		END IF;
		RETURN evpipe._js_f8(na) = evpipe._js_f8(nb);
	ELSIF t = 'array' THEN
		IF pg_catalog.jsonb_array_length(a) <> pg_catalog.jsonb_array_length(b) THEN
			RETURN false;
		END IF;
		FOR i IN 0..pg_catalog.jsonb_array_length(a) - 1 LOOP
			IF NOT evpipe._js_equal(a -> i, b -> i) THEN
				RETURN false;
			END IF;
		END LOOP;
		RETURN true;
	ELSIF t = 'object' THEN
		FOR k IN SELECT pg_catalog.jsonb_object_keys(a) LOOP
			IF NOT b ? k OR NOT evpipe._js_equal(a -> k, b -> k) THEN
				RETURN false;
			END IF;
		END LOOP;
		RETURN (SELECT pg_catalog.count(*) FROM pg_catalog.jsonb_object_keys(a)) =
			(SELECT pg_catalog.count(*) FROM pg_catalog.jsonb_object_keys(b));
	END IF;
	RETURN false;
END;
$$;
COMMENT ON FUNCTION evpipe._js_equal(jsonb, jsonb) IS
	'Internal: JSON equality as the C validator decides it (1 == 1.0, member order ignored)';

-- A text that two values share exactly when their hashes agree (numbers by their double bits).
CREATE OR REPLACE FUNCTION evpipe._js_canon(v jsonb)
RETURNS text
LANGUAGE plpgsql IMMUTABLE STRICT PARALLEL SAFE
AS $$
DECLARE
	t text := pg_catalog.jsonb_typeof(v);
	d double precision;
	r text;
	k text;
BEGIN
	IF t = 'number' THEN
		d := evpipe._js_f8(v::numeric);
		IF d = 0 THEN
			d := 0;
		END IF;
		RETURN 'n' || pg_catalog.encode(pg_catalog.float8send(d), 'hex');
	ELSIF t = 'array' THEN
		r := '[';
		FOR i IN 0..pg_catalog.jsonb_array_length(v) - 1 LOOP
			r := r || evpipe._js_canon(v -> i) || ',';
		END LOOP;
		RETURN r || ']';
	ELSIF t = 'object' THEN
		r := '{';
		FOR k IN SELECT pg_catalog.jsonb_object_keys(v) LOOP
			r := r || pg_catalog.to_jsonb(k)::text || ':' || evpipe._js_canon(v -> k) || ',';
		END LOOP;
		RETURN r || '}';
	END IF;
	RETURN v::text;
END;
$$;
COMMENT ON FUNCTION evpipe._js_canon(jsonb) IS
	'Internal: a canonical text of a value, numbers by their double value (uniqueItems)';

-- 64-bit unsigned helpers for json_hash (values as numeric in [0, 2^64)).
CREATE OR REPLACE FUNCTION evpipe._js_u64xor(a numeric, b numeric)
RETURNS numeric
LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE
AS $$
SELECT CASE WHEN x < 0 THEN x::numeric + 18446744073709551616 ELSE x::numeric END
FROM (SELECT (CASE WHEN a >= 9223372036854775808 THEN a - 18446744073709551616 ELSE a END)::bigint #
			 (CASE WHEN b >= 9223372036854775808 THEN b - 18446744073709551616 ELSE b END)::bigint AS x) s
$$;
COMMENT ON FUNCTION evpipe._js_u64xor(numeric, numeric) IS
	'Internal: exclusive or of two unsigned 64-bit values';

-- mix(): the 64-bit finaliser of the C hash.
CREATE OR REPLACE FUNCTION evpipe._js_mix(h numeric)
RETURNS numeric
LANGUAGE plpgsql IMMUTABLE STRICT PARALLEL SAFE
AS $$
BEGIN
	h := evpipe._js_u64xor(h, pg_catalog.div(h, 8589934592));
	h := pg_catalog.mod(h * 18397679294719823053, 18446744073709551616);
	h := evpipe._js_u64xor(h, pg_catalog.div(h, 8589934592));
	h := pg_catalog.mod(h * 14181476777654086739, 18446744073709551616);
	h := evpipe._js_u64xor(h, pg_catalog.div(h, 8589934592));
	RETURN h;
END;
$$;
COMMENT ON FUNCTION evpipe._js_mix(numeric) IS
	'Internal: the 64-bit mixing step of the uniqueItems hash';

-- bytes_hash(): FNV-1a over the UTF-8 bytes of a text.
CREATE OR REPLACE FUNCTION evpipe._js_bytes_hash(s text)
RETURNS numeric
LANGUAGE plpgsql IMMUTABLE STRICT PARALLEL SAFE
AS $$
DECLARE
	b bytea := pg_catalog.convert_to(s, 'UTF8');
	h numeric := 1469598103934665603;
BEGIN
	FOR i IN 0..pg_catalog.length(b) - 1 LOOP
		h := evpipe._js_u64xor(h, pg_catalog.get_byte(b, i));
		h := pg_catalog.mod(h * 1099511628211, 18446744073709551616);
	END LOOP;
	RETURN h;
END;
$$;
COMMENT ON FUNCTION evpipe._js_bytes_hash(text) IS
	'Internal: FNV-1a hash of the bytes of a text';

-- json_hash(): the C hash of a value (orders duplicate groups for uniqueItems).
CREATE OR REPLACE FUNCTION evpipe._js_hash(v jsonb)
RETURNS numeric
LANGUAGE plpgsql IMMUTABLE STRICT PARALLEL SAFE
AS $$
DECLARE
	t text := pg_catalog.jsonb_typeof(v);
	d double precision;
	bits numeric;
	h numeric;
	k text;
BEGIN
	IF t = 'null' THEN
		RETURN 11400714819323198485;
	ELSIF t = 'boolean' THEN
		RETURN CASE WHEN v = 'true'::jsonb THEN 3 ELSE 5 END;
	ELSIF t = 'number' THEN
		d := evpipe._js_f8(v::numeric);
		IF d = 0 THEN
			d := 0;
		END IF;
		bits := ('x' || pg_catalog.encode(pg_catalog.float8send(d), 'hex'))::bit(64)::bigint::numeric;
		IF bits < 0 THEN
			bits := bits + 18446744073709551616;
		END IF;
		RETURN evpipe._js_mix(evpipe._js_u64xor(bits, 7));
	ELSIF t = 'string' THEN
		RETURN evpipe._js_mix(evpipe._js_u64xor(evpipe._js_bytes_hash(v #>> '{}'), 11));
	ELSIF t = 'array' THEN
		h := 13;
		FOR i IN 0..pg_catalog.jsonb_array_length(v) - 1 LOOP
			h := evpipe._js_mix(pg_catalog.mod(h * 31 + evpipe._js_hash(v -> i), 18446744073709551616));
		END LOOP;
		RETURN h;
	END IF;
	h := 17;
	FOR k IN SELECT pg_catalog.jsonb_object_keys(v) LOOP
		h := pg_catalog.mod(h + evpipe._js_mix(evpipe._js_u64xor(evpipe._js_bytes_hash(k), evpipe._js_hash(v -> k))),
							18446744073709551616);
	END LOOP;
	RETURN evpipe._js_mix(h);
END;
$$;
COMMENT ON FUNCTION evpipe._js_hash(jsonb) IS
	'Internal: the C validator''s hash of a JSON value, as an unsigned 64-bit number';

-- uniqueItems: the pair of equal items the C reports (lowest hash group first), or NULL.
CREATE OR REPLACE FUNCTION evpipe._js_unique(arr jsonb)
RETURNS integer[]
LANGUAGE plpgsql IMMUTABLE STRICT PARALLEL SAFE
AS $$
DECLARE
	n integer := pg_catalog.jsonb_array_length(arr);
	distinct_n bigint;
	g record;
	best integer[];
	best_hash numeric;
	pair integer[];
	h numeric;
BEGIN
	IF n < 2 THEN
		RETURN NULL;
	END IF;
	SELECT pg_catalog.count(DISTINCT CASE WHEN pg_catalog.jsonb_typeof(v) IN ('string', 'boolean', 'null') THEN v::text
		   WHEN pg_catalog.jsonb_typeof(v) = 'number' AND pg_catalog.abs(v::numeric) < 1e300 AND
				(v::numeric = 0 OR pg_catalog.abs(v::numeric) > 1e-300)
		   THEN 'n' || pg_catalog.encode(pg_catalog.float8send(v::numeric::double precision + 0), 'hex')
		   ELSE evpipe._js_canon(v) END)
	  INTO distinct_n
	  FROM pg_catalog.jsonb_array_elements(arr) v;
	IF distinct_n = n THEN
		RETURN NULL;
	END IF;
	-- groups of items whose hashes agree, each in index order
	FOR g IN
		SELECT pg_catalog.array_agg((o - 1)::integer ORDER BY o) AS idx
		  FROM pg_catalog.jsonb_array_elements(arr) WITH ORDINALITY AS e(v, o)
		 GROUP BY evpipe._js_canon(v)
		HAVING pg_catalog.count(*) > 1
	LOOP
		pair := NULL;
		<<outer>>
		FOR a IN 1..pg_catalog.array_length(g.idx, 1) - 1 LOOP
			FOR b IN a + 1..pg_catalog.array_length(g.idx, 1) LOOP
				IF evpipe._js_equal(arr -> g.idx[a], arr -> g.idx[b]) THEN
					pair := ARRAY[g.idx[a], g.idx[b]];
					EXIT outer;
				END IF;
			END LOOP;
		END LOOP;
		IF pair IS NOT NULL THEN
			IF best IS NULL THEN
				best := pair;
			ELSE
				IF best_hash IS NULL THEN
					best_hash := evpipe._js_hash(arr -> best[1]);
				END IF;
				h := evpipe._js_hash(arr -> pair[1]);
				IF h < best_hash OR (h = best_hash AND pair[1] < best[1]) THEN
					best := pair;
					best_hash := h;
				END IF;
			END IF;
		END IF;
	END LOOP;
	RETURN best;
END;
$$;
COMMENT ON FUNCTION evpipe._js_unique(jsonb) IS
	'Internal: the first pair of equal array items in the C validator''s order, or NULL';

-- ep_format_valid for "uuid", "date-time" and "email".
CREATE OR REPLACE FUNCTION evpipe._js_format_valid(format text, s text)
RETURNS boolean
LANGUAGE plpgsql IMMUTABLE STRICT PARALLEL SAFE
AS $$
DECLARE
	p text[];
	y integer;
	mo integer;
	d integer;
	dim integer;
	at integer;
	loc text;
	dom text;
BEGIN
	IF format = 'uuid' THEN
		RETURN s ~ '^[0-9A-Fa-f]{8}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{12}$';
	ELSIF format = 'date-time' THEN
		p := pg_catalog.regexp_match(s,
			'^([0-9]{4})-([0-9]{2})-([0-9]{2})[Tt]([0-9]{2}):([0-9]{2}):([0-9]{2})(?:\.[0-9]+)?(?:[Zz]|[+-]([0-9]{2}):([0-9]{2}))$');
		IF p IS NULL THEN
			RETURN false;
		END IF;
		y := p[1]::integer;
		mo := p[2]::integer;
		d := p[3]::integer;
		IF mo < 1 OR mo > 12 OR d < 1 OR p[4]::integer > 23 OR p[5]::integer > 59 OR p[6]::integer > 60 THEN
			RETURN false;
		END IF;
		dim := (ARRAY[31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31])[mo];
		IF mo = 2 AND ((y % 4 = 0 AND y % 100 <> 0) OR y % 400 = 0) THEN
			dim := 29;
		END IF;
		IF d > dim THEN
			RETURN false;
		END IF;
		RETURN p[7] IS NULL OR (p[7]::integer <= 23 AND p[8]::integer <= 59);
	ELSIF format = 'email' THEN
		IF pg_catalog.octet_length(s) > 254 THEN
			RETURN false;
		END IF;
		at := pg_catalog.strpos(s, '@');
		IF at = 0 THEN
			RETURN false;
		END IF;
		loc := pg_catalog.left(s, at - 1);
		dom := pg_catalog.substr(s, at + 1);
		IF loc = '' OR pg_catalog.octet_length(loc) > 64 OR pg_catalog.strpos(dom, '@') > 0 THEN
			RETURN false;
		END IF;
		IF loc !~ '^[A-Za-z0-9!#$%&''*+/=?^_`{|}~.-]+$' OR pg_catalog.left(loc, 1) = '.' OR pg_catalog.right(loc, 1) = '.' THEN
			RETURN false;
		END IF;
		RETURN dom ~ '^[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)+$';
	END IF;
	RETURN false;
END;
$$;
COMMENT ON FUNCTION evpipe._js_format_valid(text, text) IS
	'Internal: whether a string is a valid uuid, date-time (RFC 3339) or email (ep_format_valid)';

-- translate_pattern: the C's ECMA-to-POSIX translation. Returns {ere, why, pg}: ere the C's ERE
-- (NULL with why when refused), pg the same expression for PostgreSQL's regex engine (ERE mode).
CREATE OR REPLACE FUNCTION evpipe._js_translate(src text)
RETURNS text[]
LANGUAGE plpgsql IMMUTABLE STRICT PARALLEL SAFE
AS $$
DECLARE
	ch text[] := pg_catalog.string_to_array(src, NULL);
	n integer := COALESCE(pg_catalog.array_length(ch, 1), 0);
	i integer := 1;
	o integer := 0;
	inb boolean := false;
	ere text := '';
	pg text := '';
	c text;
	e text;
	rep text;
	prep text;
BEGIN
	WHILE i <= n LOOP
		c := ch[i];
		IF c = '\' THEN
			i := i + 1;
			IF i > n THEN
				RETURN ARRAY[NULL, 'pattern ends with a backslash', NULL];
			END IF;
			e := ch[i];
			prep := NULL;
			IF e = 'd' THEN
				rep := CASE WHEN inb THEN '0-9' ELSE '[0-9]' END;
			ELSIF e = 'w' THEN
				rep := CASE WHEN inb THEN 'A-Za-z0-9_' ELSE '[A-Za-z0-9_]' END;
			ELSIF e = 's' THEN
				rep := CASE WHEN inb THEN '[:space:]' ELSE '[[:space:]]' END;
			ELSIF e IN ('D', 'W', 'S') THEN
				IF inb THEN
					RETURN ARRAY[NULL, '\D, \W and \S are not supported inside [...]', NULL];
				END IF;
				rep := CASE e WHEN 'D' THEN '[^0-9]' WHEN 'W' THEN '[^A-Za-z0-9_]' ELSE '[^[:space:]]' END;
			ELSIF e = 'n' THEN
				rep := E'\n';
			ELSIF e = 't' THEN
				rep := E'\t';
			ELSIF e = 'r' THEN
				rep := E'\r';
			ELSIF e ~ '^[A-Za-z0-9]$' THEN
				RETURN ARRAY[NULL, 'unsupported escape in pattern', NULL];
			ELSIF inb THEN
				rep := e;
			ELSE
				rep := '\' || e;
				-- glibc's GNU anchors, spelt the PostgreSQL way
				prep := CASE e WHEN '<' THEN '[[:<:]]' WHEN '>' THEN '[[:>:]]' WHEN '`' THEN '^' WHEN '''' THEN '$' END;
			END IF;
			IF o + pg_catalog.octet_length(rep) + 1 > 4096 THEN
				RETURN ARRAY[NULL, 'pattern is too long', NULL];
			END IF;
			o := o + pg_catalog.octet_length(rep);
			ere := ere || rep;
			pg := pg || COALESCE(prep, rep);
			i := i + 1;
			CONTINUE;
		END IF;
		IF inb THEN
			IF c = ']' AND NOT (i > 1 AND (ch[i - 1] = '[' OR (ch[i - 1] = '^' AND i > 2 AND ch[i - 2] = '['))) THEN
				inb := false;
			END IF;
		ELSIF c = '[' THEN
			inb := true;
		END IF;
		IF o + pg_catalog.octet_length(c) + 1 > 4096 THEN
			RETURN ARRAY[NULL, 'pattern is too long', NULL];
		END IF;
		o := o + pg_catalog.octet_length(c);
		ere := ere || c;
		pg := pg || c;
		i := i + 1;
	END LOOP;
	RETURN ARRAY[ere, NULL, pg];
END;
$$;
COMMENT ON FUNCTION evpipe._js_translate(text) IS
	'Internal: translate a JSON Schema pattern to a POSIX ERE as the C does ({ere, why, pg})';

-- glibc's rules for "{" and PostgreSQL's limit of 255 repetitions: NULL where glibc's regcomp refuses a brace
-- that is not a repetition count, else the expression with counts above 255 spelt as nested repetitions.
CREATE OR REPLACE FUNCTION evpipe._js_regex_counts(re text)
RETURNS text
LANGUAGE plpgsql IMMUTABLE STRICT PARALLEL SAFE
AS $$
DECLARE
	ch text[] := pg_catalog.string_to_array(re, NULL);
	n integer := COALESCE(pg_catalog.array_length(ch, 1), 0);
	i integer := 1;
	j integer;
	out text := '';
	atom text;
	atom_pos integer;
	opens integer[] := '{}';
	d1 text;
	d2 text;
	comma boolean;
	lo integer;
	hi integer;
	k integer;
	rep text;
BEGIN
	WHILE i <= n LOOP
		IF ch[i] = '\' AND i < n THEN
			atom_pos := pg_catalog.length(out);
			atom := ch[i] || ch[i + 1];
			out := out || atom;
			i := i + 2;
		ELSIF ch[i] = '[' THEN
			j := i + 1;
			IF j <= n AND ch[j] = '^' THEN j := j + 1; END IF;
			IF j <= n AND ch[j] = ']' THEN j := j + 1; END IF;
			WHILE j <= n AND ch[j] <> ']' LOOP
				IF ch[j] = '[' AND j < n AND ch[j + 1] IN (':', '.', '=') THEN
					k := j + 2;
					WHILE k < n AND NOT (ch[k] = ch[j + 1] AND ch[k + 1] = ']') LOOP
						k := k + 1;
					END LOOP;
					j := k + 2;
				ELSE
					j := j + 1;
				END IF;
			END LOOP;
			IF j > n THEN
				RETURN re;			-- unterminated: the regex compiler refuses it
			END IF;
			atom_pos := pg_catalog.length(out);
			atom := pg_catalog.array_to_string(ch[i:j], '');
			out := out || atom;
			i := j + 1;
		ELSIF ch[i] = '(' THEN
			opens := opens || pg_catalog.length(out);
			out := out || '(';
			atom := NULL;
			i := i + 1;
		ELSIF ch[i] = ')' AND pg_catalog.array_length(opens, 1) > 0 THEN
			atom_pos := opens[pg_catalog.array_length(opens, 1)];
			opens := opens[1:pg_catalog.array_length(opens, 1) - 1];
			out := out || ')';
			atom := pg_catalog.substr(out, atom_pos + 1);
			i := i + 1;
		ELSIF ch[i] = '{' THEN
			j := i + 1;
			d1 := '';
			d2 := '';
			comma := false;
			WHILE j <= n AND ch[j] BETWEEN '0' AND '9' AND pg_catalog.length(ch[j]) = 1 LOOP
				d1 := d1 || ch[j];
				j := j + 1;
			END LOOP;
			IF j <= n AND ch[j] = ',' THEN
				comma := true;
				j := j + 1;
				WHILE j <= n AND ch[j] BETWEEN '0' AND '9' AND pg_catalog.length(ch[j]) = 1 LOOP
					d2 := d2 || ch[j];
					j := j + 1;
				END LOOP;
			END IF;
			IF j > n OR ch[j] <> '}' OR (d1 = '' AND NOT comma) THEN
				RETURN NULL;		-- glibc: "{" that starts no repetition count
			END IF;
			lo := CASE WHEN d1 = '' THEN 0 ELSE LEAST(d1::numeric, 100000)::integer END;
			hi := CASE WHEN NOT comma THEN lo WHEN d2 = '' THEN -1 ELSE LEAST(d2::numeric, 100000)::integer END;
			IF atom IS NOT NULL AND (lo > 255 OR hi > 255) AND (hi = -1 OR hi >= lo) THEN
				rep := '';
				IF lo > 255 THEN
					rep := '(' || atom || '{250}){' || (lo / 250) || '}';
					IF lo % 250 > 0 THEN
						rep := rep || atom || '{' || (lo % 250) || '}';
					END IF;
				ELSIF lo > 0 THEN
					rep := atom || '{' || lo || '}';
				END IF;
				IF hi = -1 THEN
					rep := rep || atom || '*';
				ELSIF hi > lo THEN
					k := hi - lo;
					IF k > 255 THEN
						rep := rep || '(' || atom || '{0,250}){0,' || (k / 250) || '}';
						IF k % 250 > 0 THEN
							rep := rep || atom || '{0,' || (k % 250) || '}';
						END IF;
					ELSE
						rep := rep || atom || '{0,' || k || '}';
					END IF;
				END IF;
				out := pg_catalog.left(out, atom_pos) || rep;
			ELSIF d1 = '' THEN
				out := out || '{0,' || d2 || '}';	-- glibc reads {,m} as {0,m}, PostgreSQL as text
			ELSE
				out := out || pg_catalog.array_to_string(ch[i:j], '');
			END IF;
			atom := NULL;
			i := j + 1;
		ELSE
			IF ch[i] IN ('*', '+', '?', '|', '^', '$') THEN
				atom := NULL;
			ELSE
				atom_pos := pg_catalog.length(out);
				atom := ch[i];
			END IF;
			out := out || ch[i];
			i := i + 1;
		END IF;
	END LOOP;
	RETURN out;
END;
$$;
COMMENT ON FUNCTION evpipe._js_regex_counts(text) IS
	'Internal: refuse braces glibc refuses, spell repetition counts above 255 for PostgreSQL';

-- The PostgreSQL regex of a pattern of a valid schema (fast path without brackets).
CREATE OR REPLACE FUNCTION evpipe._js_regex(src text)
RETURNS text
LANGUAGE plpgsql IMMUTABLE STRICT PARALLEL SAFE
AS $$
DECLARE
	t text;
BEGIN
	IF pg_catalog.strpos(src, '{') > 0 AND (src ~ '[0-9]{3}' OR pg_catalog.strpos(src, '{,') > 0) THEN
		RETURN '(?e)' || evpipe._js_regex_counts((evpipe._js_translate(src))[3]);
	END IF;
	IF pg_catalog.strpos(src, '\') = 0 THEN
		RETURN '(?e)' || src;
	END IF;
	IF pg_catalog.strpos(src, '[') > 0 OR pg_catalog.strpos(src, ']') > 0 OR pg_catalog.strpos(src, U&'\E000') > 0 THEN
		RETURN '(?e)' || (evpipe._js_translate(src))[3];
	END IF;
	t := pg_catalog.replace(src, '\\', U&'\E000');
	t := pg_catalog.replace(t, '\d', '[0-9]');
	t := pg_catalog.replace(t, '\w', '[A-Za-z0-9_]');
	t := pg_catalog.replace(t, '\s', '[[:space:]]');
	t := pg_catalog.replace(t, '\D', '[^0-9]');
	t := pg_catalog.replace(t, '\W', '[^A-Za-z0-9_]');
	t := pg_catalog.replace(t, '\S', '[^[:space:]]');
	t := pg_catalog.replace(t, '\n', E'\n');
	t := pg_catalog.replace(t, '\t', E'\t');
	t := pg_catalog.replace(t, '\r', E'\r');
	t := pg_catalog.replace(t, '\<', '[[:<:]]');
	t := pg_catalog.replace(t, '\>', '[[:>:]]');
	t := pg_catalog.replace(t, '\`', '^');
	t := pg_catalog.replace(t, '\''', '$');
	RETURN '(?e)' || pg_catalog.replace(t, U&'\E000', '\\');
END;
$$;
COMMENT ON FUNCTION evpipe._js_regex(text) IS
	'Internal: the PostgreSQL regular expression that matches like the C''s translated pattern';

-- pattern_too_complex: the C's estimate of how far counted repetitions expand (on the ERE's bytes).
CREATE OR REPLACE FUNCTION evpipe._js_too_complex(ere text)
RETURNS boolean
LANGUAGE plpgsql IMMUTABLE STRICT PARALLEL SAFE
AS $$
DECLARE
	b bytea := pg_catalog.convert_to(ere, 'UTF8');
	len integer := pg_catalog.length(b);
	s double precision[] := ARRAY[0]::double precision[];
	last double precision := 0;
	lvl integer := 0;
	i integer := 0;
	quant integer := 0;
	afterq integer := 0;
	c integer;
	nn double precision;
	mm double precision;
	cl integer;
BEGIN
	-- s[lvl + 1] is sum[level]
	WHILE i < len LOOP
		c := pg_catalog.get_byte(b, i);
		IF c = 40 THEN						-- (
			lvl := lvl + 1;
			IF lvl > 64 THEN
				RETURN true;
			END IF;
			s[lvl + 1] := 0;
			last := 0;
			i := i + 1;
			CONTINUE;
		END IF;
		IF c = 41 AND lvl > 0 THEN			-- )
			last := CASE WHEN s[lvl + 1] > 1 THEN s[lvl + 1] ELSE 1 END;
			lvl := lvl - 1;
			s[lvl + 1] := s[lvl + 1] + last;
			i := i + 1;
		ELSIF c IN (42, 43, 63) THEN		-- * + ?
			IF afterq <> 0 THEN
				RETURN true;
			END IF;
			quant := quant + 1;
			IF quant > 64 THEN
				RETURN true;
			END IF;
			afterq := 2;
			s[lvl + 1] := s[lvl + 1] + last;
			last := last * 2;
			i := i + 1;
		ELSIF c = 123 THEN					-- {
			IF afterq <> 0 THEN
				RETURN true;
			END IF;
			quant := quant + 1;
			IF quant > 64 THEN
				RETURN true;
			END IF;
			afterq := 2;
			nn := 0;
			mm := -1;
			i := i + 1;
			WHILE i < len AND pg_catalog.get_byte(b, i) BETWEEN 48 AND 57 AND nn <= 100000 LOOP
				nn := nn * 10 + (pg_catalog.get_byte(b, i) - 48);
				i := i + 1;
			END LOOP;
			IF i < len AND pg_catalog.get_byte(b, i) = 44 THEN
				i := i + 1;
				IF i < len AND pg_catalog.get_byte(b, i) BETWEEN 48 AND 57 THEN
					mm := 0;
					WHILE i < len AND pg_catalog.get_byte(b, i) BETWEEN 48 AND 57 AND mm <= 100000 LOOP
						mm := mm * 10 + (pg_catalog.get_byte(b, i) - 48);
						i := i + 1;
					END LOOP;
				ELSE
					mm := nn + 1;
				END IF;
			END IF;
			IF i < len AND pg_catalog.get_byte(b, i) = 125 THEN
				i := i + 1;
			END IF;
			IF mm < nn THEN
				mm := nn;
			END IF;
			IF mm > 1000 THEN
				RETURN true;
			END IF;
			s[lvl + 1] := s[lvl + 1] + last * (mm - 1);
			last := last * mm;
		ELSE
			IF c = 92 AND i + 1 < len THEN	-- backslash and a byte
				i := i + 2;
			ELSIF c = 91 THEN				-- [: one atom
				i := i + 1;
				IF i < len AND pg_catalog.get_byte(b, i) = 94 THEN
					i := i + 1;
				END IF;
				IF i < len AND pg_catalog.get_byte(b, i) = 93 THEN
					i := i + 1;
				END IF;
				WHILE i < len AND pg_catalog.get_byte(b, i) <> 93 LOOP
					IF pg_catalog.get_byte(b, i) = 91 AND i + 1 < len AND pg_catalog.get_byte(b, i + 1) IN (58, 46, 61) THEN
						cl := pg_catalog.get_byte(b, i + 1);
						i := i + 2;
						WHILE i < len AND NOT (pg_catalog.get_byte(b, i) = cl AND i + 1 < len AND pg_catalog.get_byte(b, i + 1) = 93) LOOP
							i := i + 1;
						END LOOP;
						IF i < len THEN
							i := i + 2;
						END IF;
					ELSE
						i := i + 1;
					END IF;
				END LOOP;
				IF i < len THEN
					i := i + 1;
				END IF;
			ELSE
				i := i + 1;
			END IF;
			last := 1;
			s[lvl + 1] := s[lvl + 1] + 1;
		END IF;
		IF s[lvl + 1] > 5000 OR last > 5000 THEN
			RETURN true;
		END IF;
		IF afterq > 0 THEN
			afterq := afterq - 1;
		END IF;
	END LOOP;
	RETURN false;
END;
$$;
COMMENT ON FUNCTION evpipe._js_too_complex(text) IS
	'Internal: whether a translated pattern''s repetitions expand too far (pattern_too_complex)';

-- find_def: the name a "#/$defs/..." reference points at (JSON pointer ~0 ~1 undone, 511 bytes at most).
CREATE OR REPLACE FUNCTION evpipe._js_ref_name(ref text)
RETURNS text
LANGUAGE plpgsql IMMUTABLE STRICT PARALLEL SAFE
AS $$
DECLARE
	name text;
	b bytea;
BEGIN
	IF pg_catalog.left(ref, 8) = '#/$defs/' THEN
		name := pg_catalog.substr(ref, 9);
	ELSIF pg_catalog.left(ref, 14) = '#/definitions/' THEN
		name := pg_catalog.substr(ref, 15);
	ELSE
		RETURN NULL;
	END IF;
	name := pg_catalog.replace(pg_catalog.replace(name, '~1', '/'), '~0', '~');
	IF pg_catalog.octet_length(name) > 511 THEN
		b := pg_catalog.substr(pg_catalog.convert_to(name, 'UTF8'), 1, 511);
		IF pg_catalog.get_byte(pg_catalog.convert_to(name, 'UTF8'), 511) & 192 = 128 THEN
			RETURN NULL;		-- cut inside a character: names no definition
		END IF;
		name := pg_catalog.convert_from(b, 'UTF8');
	END IF;
	RETURN name;
END;
$$;
COMMENT ON FUNCTION evpipe._js_ref_name(text) IS
	'Internal: the definition name a $ref names (find_def)';

-- compile_node: NULL, or {path, rule, message} of the first error in one (sub)schema.
CREATE OR REPLACE FUNCTION evpipe._js_compile_node(v jsonb, depth integer, path text, defs jsonb, max_depth integer)
RETURNS text[]
LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE
AS $$
BEGIN
	IF depth > max_depth THEN
		RETURN ARRAY[path, 'depth', pg_catalog.format('schema nests deeper than %s levels', max_depth)];
	END IF;
	IF pg_catalog.jsonb_typeof(v) = 'boolean' THEN
		RETURN NULL;
	END IF;
	IF pg_catalog.jsonb_typeof(v) IS DISTINCT FROM 'object' THEN
		RETURN ARRAY[path, 'schema', 'a schema must be an object or a boolean'];
	END IF;
	RETURN evpipe._js_compile_keywords(v, depth, path, defs, max_depth);
END;
$$;
COMMENT ON FUNCTION evpipe._js_compile_node(jsonb, integer, text, jsonb, integer) IS
	'Internal: check one schema as ep_schema_compile does (compile_node)';

-- compile_keywords: the keywords of one schema object, in jsonb (= json-c) member order.
CREATE OR REPLACE FUNCTION evpipe._js_compile_keywords(v jsonb, depth integer, path text, defs jsonb, max_depth integer)
RETURNS text[]
LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE
AS $$
DECLARE
	kw text;
	val jsonb;
	p text;
	t text;
	e text[];
	tr text[];
	d double precision;
	n numeric;
	seen text[];
	r jsonb;
	k text;
	sub jsonb;
BEGIN
	FOR kw, val IN SELECT key, value FROM pg_catalog.jsonb_each(v) LOOP
		CONTINUE WHEN kw IN ('$schema', '$id', '$comment', 'title', 'description', 'default',
							 'examples', 'deprecated', 'readOnly', 'writeOnly', '$anchor');
		p := evpipe._js_push(path, evpipe._js_seg(kw));
		t := pg_catalog.jsonb_typeof(val);
		IF kw IN ('$defs', 'definitions') THEN
			IF depth <> 0 THEN
				RETURN ARRAY[p, '$defs', pg_catalog.format('"%s" is supported only at the root of a schema', kw)];
			END IF;
		ELSIF kw = '$ref' THEN
			IF t <> 'string' THEN
				RETURN ARRAY[p, '$ref', '"$ref" must be a string'];
			END IF;
			k := val #>> '{}';
			IF pg_catalog.left(k, 8) <> '#/$defs/' AND pg_catalog.left(k, 14) <> '#/definitions/' THEN
				RETURN ARRAY[p, '$ref', 'only references of the form #/$defs/name are supported'];
			END IF;
			IF defs IS NULL OR evpipe._js_ref_name(k) IS NULL OR NOT defs ? evpipe._js_ref_name(k) THEN
				RETURN ARRAY[p, '$ref', pg_catalog.format('"%s" refers to no definition', evpipe._js_excerpt(k, 64, 48))];
			END IF;
		ELSIF kw = 'type' THEN
			IF t = 'string' THEN
				IF (val #>> '{}') NOT IN ('null', 'boolean', 'object', 'array', 'number', 'string', 'integer') THEN
					RETURN ARRAY[p, 'type', 'unknown type name'];
				END IF;
			ELSIF t = 'array' AND pg_catalog.jsonb_array_length(val) > 0 THEN
				seen := '{}';
				FOR i IN 0..pg_catalog.jsonb_array_length(val) - 1 LOOP
					IF pg_catalog.jsonb_typeof(val -> i) <> 'string' OR
						(val ->> i) NOT IN ('null', 'boolean', 'object', 'array', 'number', 'string', 'integer') THEN
						RETURN ARRAY[p, 'type', 'unknown type name in "type"'];
					END IF;
					IF (val ->> i) = ANY (seen) THEN
						RETURN ARRAY[p, 'type', '"type" lists a type twice'];
					END IF;
					seen := seen || (val ->> i);
				END LOOP;
			ELSE
				RETURN ARRAY[p, 'type', '"type" must be a type name or a non-empty array of them'];
			END IF;
		ELSIF kw = 'enum' THEN
			IF t <> 'array' OR pg_catalog.jsonb_array_length(val) = 0 THEN
				RETURN ARRAY[p, 'enum', '"enum" must be a non-empty array'];
			END IF;
		ELSIF kw = 'const' THEN
			NULL;
		ELSIF kw IN ('minimum', 'maximum', 'exclusiveMinimum', 'exclusiveMaximum', 'multipleOf') THEN
			IF t <> 'number' THEN
				RETURN ARRAY[p, kw, pg_catalog.format('"%s" must be a number', kw)];
			END IF;
			d := evpipe._js_f8(val::numeric);
			IF d IN ('Infinity'::double precision, '-Infinity'::double precision) THEN
				RETURN ARRAY[p, kw, pg_catalog.format('"%s" must be a number', kw)];
			END IF;
			IF kw = 'multipleOf' AND d <= 0 THEN
				RETURN ARRAY[p, kw, '"multipleOf" must be greater than 0'];
			END IF;
		ELSIF kw IN ('minLength', 'maxLength', 'minItems', 'maxItems') THEN
			IF t = 'number' THEN
				n := val::numeric;
				d := evpipe._js_f8(n);
			END IF;
			IF t <> 'number' OR NOT (evpipe._js_is_int64(n) OR
				(d NOT IN ('Infinity'::double precision, '-Infinity'::double precision) AND pg_catalog.floor(d) = d))
				OR d < 0 OR d > 2147483647 THEN
				RETURN ARRAY[p, kw, pg_catalog.format('"%s" must be a non-negative integer', kw)];
			END IF;
		ELSIF kw = 'uniqueItems' THEN
			IF t <> 'boolean' THEN
				RETURN ARRAY[p, kw, '"uniqueItems" must be a boolean'];
			END IF;
		ELSIF kw = 'pattern' THEN
			IF t <> 'string' THEN
				RETURN ARRAY[p, kw, '"pattern" must be a string'];
			END IF;
			k := val #>> '{}';
			IF pg_catalog.octet_length(k) > 1024 THEN
				RETURN ARRAY[p, kw, '"pattern" is too long or contains a NUL'];
			END IF;
			tr := evpipe._js_translate(k);
			IF tr[1] IS NULL THEN
				RETURN ARRAY[p, kw, tr[2]];
			END IF;
			IF evpipe._js_too_complex(tr[1]) THEN
				RETURN ARRAY[p, kw, '"pattern" is too complex (repetitions expand too far)'];
			END IF;
			k := evpipe._js_regex_counts(tr[3]);
			IF k IS NULL THEN
				RETURN ARRAY[p, kw, '"pattern" is not a valid regular expression'];
			END IF;
			BEGIN
				PERFORM '' ~ ('(?e)' || k);
			EXCEPTION WHEN invalid_regular_expression OR program_limit_exceeded THEN
				RETURN ARRAY[p, kw, '"pattern" is not a valid regular expression'];
			END;
		ELSIF kw = 'format' THEN
			IF t <> 'string' THEN
				RETURN ARRAY[p, kw, '"format" must be a string'];
			END IF;
			IF (val #>> '{}') NOT IN ('uuid', 'date-time', 'email') THEN
				RETURN ARRAY[p, kw, 'unsupported format (supported: uuid, date-time, email)'];
			END IF;
		ELSIF kw = 'items' THEN
			IF t = 'array' THEN
				RETURN ARRAY[p, kw, '"items" must be a single schema (the array form is not supported)'];
			END IF;
			e := evpipe._js_compile_node(val, depth + 1, p, defs, max_depth);
			IF e IS NOT NULL THEN
				RETURN e;
			END IF;
		ELSIF kw = 'required' THEN
			IF t <> 'array' THEN
				RETURN ARRAY[p, kw, '"required" must be an array of strings'];
			END IF;
			seen := '{}';
			FOR i IN 0..pg_catalog.jsonb_array_length(val) - 1 LOOP
				IF pg_catalog.jsonb_typeof(val -> i) <> 'string' THEN
					RETURN ARRAY[p, kw, '"required" must be an array of strings'];
				END IF;
				IF (val ->> i) = ANY (seen) THEN
					RETURN ARRAY[p, kw, '"required" lists a name twice'];
				END IF;
				seen := seen || (val ->> i);
			END LOOP;
		ELSIF kw = 'properties' THEN
			IF t <> 'object' THEN
				RETURN ARRAY[p, kw, '"properties" must be an object of schemas'];
			END IF;
			FOR k, sub IN SELECT key, value FROM pg_catalog.jsonb_each(val) LOOP
				e := evpipe._js_compile_node(sub, depth + 1, evpipe._js_push(p, evpipe._js_seg(k)), defs, max_depth);
				IF e IS NOT NULL THEN
					RETURN e;
				END IF;
			END LOOP;
		ELSIF kw = 'additionalProperties' THEN
			IF t <> 'boolean' THEN
				e := evpipe._js_compile_node(val, depth + 1, p, defs, max_depth);
				IF e IS NOT NULL THEN
					RETURN e;
				END IF;
			END IF;
		ELSE
			RETURN ARRAY[p, 'schema', pg_catalog.format('unsupported keyword "%s"', evpipe._js_excerpt(kw, 64, 40))];
		END IF;
	END LOOP;
	RETURN NULL;
END;
$$;
COMMENT ON FUNCTION evpipe._js_compile_keywords(jsonb, integer, text, jsonb, integer) IS
	'Internal: check the keywords of one schema object as ep_schema_compile does (compile_keywords)';

-- ep_schema_compile: NULL when the C would compile the schema, else {path, rule, message}.
CREATE OR REPLACE FUNCTION evpipe._schema_error(schema jsonb, max_depth integer)
RETURNS text[]
LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE
AS $$
DECLARE
	defs jsonb;
	kw text;
	e text[];
	name text;
	dv jsonb;
	r text;
	steps integer;
	ndefs integer;
BEGIN
	IF schema IS NULL THEN
		schema := 'null';
	END IF;
	IF pg_catalog.jsonb_typeof(schema) = 'object' AND (schema ? '$defs' OR schema ? 'definitions') THEN
		kw := CASE WHEN schema ? '$defs' THEN '$defs' ELSE 'definitions' END;
		defs := schema -> kw;
		IF schema ? '$defs' AND schema ? 'definitions' THEN
			RETURN ARRAY['$', '$defs', 'use either "$defs" or "definitions", not both'];
		ELSIF pg_catalog.jsonb_typeof(defs) <> 'object' THEN
			RETURN ARRAY['$', '$defs', pg_catalog.format('"%s" must be an object of schemas', kw)];
		END IF;
		FOR name, dv IN SELECT key, value FROM pg_catalog.jsonb_each(defs) LOOP
			IF pg_catalog.jsonb_typeof(dv) = 'object' THEN
				e := evpipe._js_compile_keywords(dv, 1,
					evpipe._js_push(evpipe._js_push('$', evpipe._js_seg(kw)), evpipe._js_seg(name)), defs, max_depth);
			ELSIF pg_catalog.jsonb_typeof(dv) <> 'boolean' THEN
				e := ARRAY[evpipe._js_push(evpipe._js_push('$', evpipe._js_seg(kw)), evpipe._js_seg(name)),
						   'schema', 'a schema must be an object or a boolean'];
			END IF;
			IF e IS NOT NULL THEN
				RETURN e;
			END IF;
		END LOOP;
	END IF;
	e := evpipe._js_compile_node(schema, 0, '$', defs, max_depth);
	IF e IS NOT NULL THEN
		RETURN e;
	END IF;
	-- $ref chains among the definitions that never descend into the instance would loop
	IF defs IS NOT NULL THEN
		SELECT pg_catalog.count(*) INTO ndefs FROM pg_catalog.jsonb_object_keys(defs);
		FOR name IN SELECT pg_catalog.jsonb_object_keys(defs) LOOP
			r := name;
			steps := 0;
			WHILE r IS NOT NULL AND steps <= ndefs + 1 LOOP
				dv := defs -> r;
				r := CASE WHEN pg_catalog.jsonb_typeof(dv) = 'object' THEN evpipe._js_ref_name(dv ->> '$ref') END;
				steps := steps + 1;
			END LOOP;
			IF r IS NOT NULL THEN
				RETURN ARRAY['$', '$ref', '"$ref" definitions refer to each other in a cycle'];
			END IF;
		END LOOP;
	END IF;
	RETURN NULL;
END;
$$;
COMMENT ON FUNCTION evpipe._schema_error(jsonb, integer) IS
	'Internal: NULL when the validator accepts a JSON Schema, else {path, rule, message} of the first error';

-- A schema that asks only for a type (a string) and, of a string, a length:
-- the schema of most properties. Its check needs no call (_js_leaf_valid).
-- SQL functions, inlined where they are used (_js_vnode's properties, the
-- set-based check of a batch in evpipe._ingest_batch_prepare).
CREATE OR REPLACE FUNCTION evpipe._js_leaf(l jsonb)
RETURNS boolean
LANGUAGE sql IMMUTABLE PARALLEL SAFE
AS $$
SELECT coalesce(pg_catalog.jsonb_typeof(l -> 'type') = 'string'
	AND NOT l ?| ARRAY['$ref', 'enum', 'const', 'minimum', 'maximum', 'exclusiveMinimum', 'exclusiveMaximum',
		'multipleOf', 'pattern', 'format', 'minItems', 'maxItems', 'uniqueItems', 'items', 'required',
		'properties', 'additionalProperties'], false)
$$;
COMMENT ON FUNCTION evpipe._js_leaf(jsonb) IS
	'Internal: whether a schema asks only for a type and, of a string, a length';

-- Whether a value certainly satisfies a _js_leaf schema: true when
-- _js_vnode would find it valid; false when it would not, or when only
-- _js_vnode can tell (an integer written as 1.0, say).
CREATE OR REPLACE FUNCTION evpipe._js_leaf_valid(v jsonb, l jsonb)
RETURNS boolean
LANGUAGE sql IMMUTABLE PARALLEL SAFE
AS $$
SELECT CASE
	WHEN pg_catalog.jsonb_typeof(v) = l ->> 'type' THEN
		CASE WHEN pg_catalog.jsonb_typeof(v) <> 'string' OR NOT l ?| ARRAY['minLength', 'maxLength'] THEN true
		ELSE coalesce((NOT l ? 'minLength'
				OR pg_catalog.length(v #>> '{}') >= pg_catalog.floor((l -> 'minLength')::numeric::double precision))
			AND (NOT l ? 'maxLength'
				OR pg_catalog.length(v #>> '{}') <= pg_catalog.floor((l -> 'maxLength')::numeric::double precision)), false) END
	WHEN l ->> 'type' = 'integer' AND pg_catalog.jsonb_typeof(v) = 'number' THEN
		pg_catalog.scale(v::numeric) = 0 AND v::numeric BETWEEN -9223372036854775808 AND 9223372036854775807
	ELSE false END
$$;
COMMENT ON FUNCTION evpipe._js_leaf_valid(jsonb, jsonb) IS
	'Internal: whether a value certainly satisfies a type-and-length schema (false: invalid, or for _js_vnode to tell)';

-- A schema for an object that asks only for required members and
-- properties with _js_leaf schemas (and no other member, of the keywords
-- _js_vnode reads of an object): an object satisfies it exactly when it has
-- the required members and every property it has is _js_leaf_valid
-- (evpipe._ingest_batch_prepare checks a batch so, in two statements).
CREATE OR REPLACE FUNCTION evpipe._js_flat(s jsonb)
RETURNS boolean
LANGUAGE sql IMMUTABLE PARALLEL SAFE
AS $$
SELECT coalesce(pg_catalog.jsonb_typeof(s) = 'object'
	AND (NOT s ? 'type' OR s -> 'type' = '"object"'::jsonb)
	AND NOT s ?| ARRAY['$ref', 'enum', 'const']
	AND (NOT s ? 'additionalProperties' OR s -> 'additionalProperties' = 'true'::jsonb)
	AND (NOT s ? 'required' OR pg_catalog.jsonb_typeof(s -> 'required') = 'array')
	AND (NOT s ? 'properties' OR pg_catalog.jsonb_typeof(s -> 'properties') = 'object'
		AND NOT EXISTS (SELECT 1 FROM pg_catalog.jsonb_each(s -> 'properties') AS p
			WHERE NOT evpipe._js_leaf(p.value))), false)
$$;
COMMENT ON FUNCTION evpipe._js_flat(jsonb) IS
	'Internal: whether a schema asks of an object only required members and type-and-length properties';

-- validate_node: NULL, or {rule, message, segment_n, ..., segment_1} (the path's segments innermost first).
CREATE OR REPLACE FUNCTION evpipe._js_vnode(s jsonb, i jsonb, defs jsonb)
RETURNS text[]
LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE
AS $$
DECLARE
	it text;
	e text[];
	t jsonb;
	tn text;
	num numeric;
	d double precision;
	isint boolean;
	kv jsonb;
	str text;
	cnt integer;
	ok boolean;
	q double precision;
	m double precision;
	props jsonb;
	keys jsonb;
	k text;
	pair integer[];
BEGIN
	IF pg_catalog.jsonb_typeof(s) = 'boolean' THEN
		IF s = 'false'::jsonb THEN
			RETURN ARRAY['false', 'no value is allowed here'];
		END IF;
		RETURN NULL;
	END IF;
	it := pg_catalog.jsonb_typeof(i);
	IF s ?| ARRAY['$ref', 'type', 'enum', 'const'] THEN
		IF s ? '$ref' THEN
			e := evpipe._js_vnode(defs -> evpipe._js_ref_name(s ->> '$ref'), i, defs);
			IF e IS NOT NULL THEN
				RETURN e;
			END IF;
		END IF;
		t := s -> 'type';
		IF t IS NOT NULL THEN
			IF pg_catalog.jsonb_typeof(t) = 'string' THEN
				tn := t #>> '{}';
				ok := tn = it OR (it = 'number' AND tn = 'number');
			ELSE
				ok := t ? it;
				tn := NULL;
			END IF;
			IF NOT ok AND it = 'number' AND (tn = 'integer' OR (tn IS NULL AND t ? 'integer')) THEN
				num := i::numeric;
				IF pg_catalog.scale(num) = 0 AND num BETWEEN -9223372036854775808 AND 9223372036854775807 THEN
					ok := true;
				ELSE
					d := evpipe._js_f8(num);
					ok := d NOT IN ('Infinity'::double precision, '-Infinity'::double precision) AND pg_catalog.floor(d) = d;
				END IF;
			END IF;
			IF NOT ok THEN
				IF tn IS NULL THEN
					SELECT pg_catalog.string_agg(x, ' or ' ORDER BY o) INTO tn
					  FROM pg_catalog.unnest(ARRAY['null', 'boolean', 'object', 'array', 'number', 'string', 'integer'])
						   WITH ORDINALITY AS u(x, o)
					 WHERE t ? x;
				END IF;
				RETURN ARRAY['type', pg_catalog.format('expected %s, got %s', tn, it)];
			END IF;
		END IF;
		t := s -> 'enum';
		IF t IS NOT NULL THEN
			ok := it NOT IN ('object', 'array') AND t @> pg_catalog.jsonb_build_array(i);
			IF NOT ok AND it IN ('number', 'object', 'array') THEN
				FOR x IN 0..pg_catalog.jsonb_array_length(t) - 1 LOOP
					IF evpipe._js_equal(i, t -> x) THEN
						ok := true;
						EXIT;
					END IF;
				END LOOP;
			END IF;
			IF NOT ok THEN
				RETURN ARRAY['enum', pg_catalog.format('value %s is not one of the allowed values', evpipe._js_value_text(i))];
			END IF;
		END IF;
		t := s -> 'const';
		IF t IS NOT NULL AND NOT evpipe._js_equal(i, t) THEN
			RETURN ARRAY['const', pg_catalog.format('value %s is not the required constant', evpipe._js_value_text(i))];
		END IF;
	END IF;
	IF it = 'number' THEN
		IF s ?| ARRAY['minimum', 'maximum', 'exclusiveMinimum', 'exclusiveMaximum', 'multipleOf'] THEN
			num := i::numeric;
			IF pg_catalog.abs(num) < 1e300 AND (num = 0 OR pg_catalog.abs(num) > 1e-300) THEN
				d := num::double precision;
			ELSE
				d := evpipe._js_f8(num);
			END IF;
			t := s -> 'minimum';
			IF t IS NOT NULL THEN
				m := evpipe._js_f8(t::numeric);
				IF NOT (d >= m) THEN
					RETURN ARRAY['minimum', pg_catalog.format('value %s is less than minimum %s', evpipe._js_value_text(i), evpipe._js_g17(m))];
				END IF;
			END IF;
			t := s -> 'maximum';
			IF t IS NOT NULL THEN
				m := evpipe._js_f8(t::numeric);
				IF NOT (d <= m) THEN
					RETURN ARRAY['maximum', pg_catalog.format('value %s is greater than maximum %s', evpipe._js_value_text(i), evpipe._js_g17(m))];
				END IF;
			END IF;
			t := s -> 'exclusiveMinimum';
			IF t IS NOT NULL THEN
				m := evpipe._js_f8(t::numeric);
				IF NOT (d > m) THEN
					RETURN ARRAY['exclusiveMinimum', pg_catalog.format('value %s is not greater than %s', evpipe._js_value_text(i), evpipe._js_g17(m))];
				END IF;
			END IF;
			t := s -> 'exclusiveMaximum';
			IF t IS NOT NULL THEN
				m := evpipe._js_f8(t::numeric);
				IF NOT (d < m) THEN
					RETURN ARRAY['exclusiveMaximum', pg_catalog.format('value %s is not less than %s', evpipe._js_value_text(i), evpipe._js_g17(m))];
				END IF;
			END IF;
			t := s -> 'multipleOf';
			IF t IS NOT NULL THEN
				m := evpipe._js_f8(t::numeric);
				IF pg_catalog.scale(num) = 0 AND num BETWEEN -9223372036854775808 AND 9223372036854775807 AND
					pg_catalog.floor(m) = m AND m < 9007199254740992 THEN
					ok := num::bigint % m::bigint = 0;
				ELSE
					IF d IN ('Infinity'::double precision, '-Infinity'::double precision) THEN
						q := d;
					ELSIF d <> 0 AND (pg_catalog.abs(d) > 1e290::double precision OR pg_catalog.abs(d) < 1e-290::double precision OR
									  m > 1e290::double precision OR m < 1e-290::double precision) THEN
						BEGIN
							q := d / m;
						EXCEPTION WHEN numeric_value_out_of_range THEN
							q := CASE WHEN pg_catalog.abs(d) > m THEN 'Infinity'::double precision ELSE 0::double precision END;
						END;
					ELSE
						q := d / m;
					END IF;
					ok := q NOT IN ('Infinity'::double precision, '-Infinity'::double precision) AND
						pg_catalog.abs(q - pg_catalog.round(q)) <
						1e-9::double precision * (CASE WHEN pg_catalog.abs(q) > 1 THEN pg_catalog.abs(q) ELSE 1::double precision END);
				END IF;
				IF NOT ok THEN
					RETURN ARRAY['multipleOf', pg_catalog.format('value %s is not a multiple of %s', evpipe._js_value_text(i), evpipe._js_g17(m))];
				END IF;
			END IF;
		END IF;
	ELSIF it = 'string' THEN
		IF s ?| ARRAY['minLength', 'maxLength', 'pattern', 'format'] THEN
			str := i #>> '{}';
			t := s -> 'minLength';
			IF t IS NOT NULL THEN
				cnt := pg_catalog.floor(t::numeric::double precision);
				IF pg_catalog.length(str) < cnt THEN
					RETURN ARRAY['minLength', pg_catalog.format('string is shorter than %s characters', cnt)];
				END IF;
			END IF;
			t := s -> 'maxLength';
			IF t IS NOT NULL THEN
				cnt := pg_catalog.floor(t::numeric::double precision);
				IF pg_catalog.length(str) > cnt THEN
					RETURN ARRAY['maxLength', pg_catalog.format('string is longer than %s characters', cnt)];
				END IF;
			END IF;
			tn := s ->> 'pattern';
			IF tn IS NOT NULL AND str !~ evpipe._js_regex(tn) THEN
				RETURN ARRAY['pattern', pg_catalog.format('string does not match pattern "%s"', evpipe._js_excerpt(tn, 64, 40))];
			END IF;
			tn := s ->> 'format';
			IF tn IS NOT NULL AND NOT evpipe._js_format_valid(tn, str) THEN
				RETURN ARRAY['format', pg_catalog.format('string is not a valid %s', tn)];
			END IF;
		END IF;
	ELSIF it = 'array' THEN
		IF s ?| ARRAY['minItems', 'maxItems', 'uniqueItems', 'items'] THEN
			cnt := pg_catalog.jsonb_array_length(i);
			t := s -> 'minItems';
			IF t IS NOT NULL AND cnt < pg_catalog.floor(t::numeric::double precision) THEN
				RETURN ARRAY['minItems', pg_catalog.format('array has fewer than %s items', pg_catalog.floor(t::numeric::double precision)::bigint)];
			END IF;
			t := s -> 'maxItems';
			IF t IS NOT NULL AND cnt > pg_catalog.floor(t::numeric::double precision) THEN
				RETURN ARRAY['maxItems', pg_catalog.format('array has more than %s items', pg_catalog.floor(t::numeric::double precision)::bigint)];
			END IF;
			IF s -> 'uniqueItems' = 'true'::jsonb AND cnt > 1 THEN
				pair := evpipe._js_unique(i);
				IF pair IS NOT NULL THEN
					RETURN ARRAY['uniqueItems', pg_catalog.format('array items %s and %s are equal', pair[1], pair[2])];
				END IF;
			END IF;
			t := s -> 'items';
			IF t IS NOT NULL THEN
				FOR x IN 0..cnt - 1 LOOP
					e := evpipe._js_vnode(t, i -> x, defs);
					IF e IS NOT NULL THEN
						RETURN e || ('[' || x || ']');
					END IF;
				END LOOP;
			END IF;
		END IF;
	ELSIF it = 'object' THEN
		IF s ?| ARRAY['required', 'properties', 'additionalProperties'] THEN
			t := s -> 'required';
			IF t IS NOT NULL THEN
				FOR x IN 0..pg_catalog.jsonb_array_length(t) - 1 LOOP
					IF NOT i ? (t ->> x) THEN
						RETURN ARRAY['required', pg_catalog.format('missing required property "%s"', evpipe._js_excerpt(t ->> x, 64, 40))];
					END IF;
				END LOOP;
			END IF;
			props := s -> 'properties';
			IF props IS NOT NULL THEN
				keys := pg_catalog.jsonb_path_query_array(props, 'strict $.keyvalue().key');
				FOR x IN 0..pg_catalog.jsonb_array_length(keys) - 1 LOOP
					k := keys ->> x;
					kv := i -> k;
					IF kv IS NOT NULL THEN
						-- a property whose schema asks only for a type (and, of a
						-- string, a length) that its value has is valid without a
						-- call; anything else, and any doubt, takes the call
						t := props -> k;
						CONTINUE WHEN evpipe._js_leaf(t) AND evpipe._js_leaf_valid(kv, t);
						e := evpipe._js_vnode(props -> k, kv, defs);
						IF e IS NOT NULL THEN
							RETURN e || evpipe._js_seg(k);
						END IF;
					END IF;
				END LOOP;
			END IF;
			t := s -> 'additionalProperties';
			IF t IS NOT NULL AND t <> 'true'::jsonb THEN
				keys := pg_catalog.jsonb_path_query_array(i, 'strict $.keyvalue().key');
				FOR x IN 0..pg_catalog.jsonb_array_length(keys) - 1 LOOP
					k := keys ->> x;
					CONTINUE WHEN props IS NOT NULL AND props ? k;
					IF t = 'false'::jsonb THEN
						RETURN ARRAY['additionalProperties', pg_catalog.format('property "%s" is not allowed', evpipe._js_excerpt(k, 64, 40)),
									 evpipe._js_seg(k)];
					END IF;
					e := evpipe._js_vnode(t, i -> k, defs);
					IF e IS NOT NULL THEN
						RETURN e || evpipe._js_seg(k);
					END IF;
				END LOOP;
			END IF;
		END IF;
	END IF;
	RETURN NULL;
END;
$$;
COMMENT ON FUNCTION evpipe._js_vnode(jsonb, jsonb, jsonb) IS
	'Internal: validate an instance against one schema node (validate_node); the error path comes back innermost first';

-- evpipe_jsonb_to_jsonc's too_deep: an array or object nested max_depth levels down (the root is level 0).
CREATE OR REPLACE FUNCTION evpipe._too_deep(doc jsonb, max_depth integer)
RETURNS boolean
LANGUAGE plpgsql IMMUTABLE STRICT PARALLEL SAFE
AS $$
BEGIN
	IF max_depth <= 0 THEN
		RETURN pg_catalog.jsonb_typeof(doc) IN ('object', 'array');
	ELSIF max_depth = 64 THEN
		RETURN pg_catalog.jsonb_path_exists(doc, 'strict $.**{64} ? (@.type() == "object" || @.type() == "array")');
	END IF;
	RETURN pg_catalog.jsonb_path_exists(doc,
		('strict $.**{' || max_depth || '} ? (@.type() == "object" || @.type() == "array")')::jsonpath);
END;
$$;
COMMENT ON FUNCTION evpipe._too_deep(jsonb, integer) IS
	'Internal: whether a document nests arrays and objects deeper than max_depth levels (ingest refuses it)';

-- ep_schema_validate: NULL when the instance is valid, else {path, rule, message}; paths start at root_path.
CREATE OR REPLACE FUNCTION evpipe._validate_at(schema jsonb, instance jsonb, root_path text, max_depth integer)
RETURNS text[]
LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE
AS $$
DECLARE
	e text[];
	path text := evpipe._js_push('', COALESCE(root_path, '$'));
	deep boolean;
BEGIN
	IF instance IS NULL THEN
		instance := 'null';
	END IF;
	-- any value deeper than max_depth (deeper_than)
	IF max_depth < 0 THEN
		deep := true;
	ELSIF max_depth = 64 THEN
		deep := pg_catalog.jsonb_path_exists(instance, 'strict $.**{65}');
	ELSE
		deep := pg_catalog.jsonb_path_exists(instance, ('strict $.**{' || (max_depth + 1) || '}')::jsonpath);
	END IF;
	IF deep THEN
		RETURN ARRAY[path, 'depth', pg_catalog.format('nesting deeper than %s levels', max_depth)];
	END IF;
	IF schema IS NULL THEN
		RETURN NULL;
	END IF;
	e := evpipe._js_vnode(schema, instance, COALESCE(schema -> '$defs', schema -> 'definitions'));
	IF e IS NULL THEN
		RETURN NULL;
	END IF;
	FOR x IN REVERSE pg_catalog.array_length(e, 1)..3 LOOP
		path := evpipe._js_push(path, e[x]);
	END LOOP;
	RETURN ARRAY[path, e[1], e[2]];
END;
$$;
COMMENT ON FUNCTION evpipe._validate_at(jsonb, jsonb, text, integer) IS
	'Internal: validate an instance against a (valid) JSON Schema: NULL, or {path, rule, message} of the first error';

-- Twin of the C evpipe._check_schema (src/validate.c): raise if the validator cannot compile the schema.
CREATE OR REPLACE FUNCTION evpipe._check_schema(schema jsonb)
RETURNS void
LANGUAGE plpgsql STRICT IMMUTABLE
AS $$
DECLARE
	md integer := evpipe._js_max_depth();
	e text[];
BEGIN
	-- deeper than the conversion of the schema allows
	IF evpipe._too_deep(schema, md * 2 + 8) THEN
		RAISE EXCEPTION USING ERRCODE = '22023', MESSAGE = 'invalid JSON Schema: it nests too deeply',
			DETAIL = pg_catalog.format('Path $, rule "depth": deeper than evpipe.max_depth (%s) schema levels.', md);
	END IF;
	e := evpipe._schema_error(schema, md);
	IF e IS NOT NULL THEN
		RAISE EXCEPTION USING ERRCODE = '22023', MESSAGE = 'invalid JSON Schema: ' || e[3],
			DETAIL = pg_catalog.format('Path %s, rule "%s".', e[1], e[2]);
	END IF;
END;
$$;

-- Twin of the C evpipe.validate (src/validate.c, 0.4.0): NULL when valid, else the first error as jsonb.
CREATE OR REPLACE FUNCTION evpipe.validate(schema jsonb, document jsonb)
RETURNS jsonb
LANGUAGE plpgsql STRICT IMMUTABLE PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	md integer := evpipe._js_max_depth();
	e text[];
BEGIN
	PERFORM evpipe._check_schema(schema);
	IF evpipe._too_deep(document, md) THEN
		RETURN pg_catalog.jsonb_build_object('path', '$', 'rule', 'depth',
			'message', pg_catalog.format('nesting deeper than %s levels', md));
	END IF;
	e := evpipe._validate_at(schema, document, '$', md);
	IF e IS NULL THEN
		RETURN NULL;
	END IF;
	RETURN pg_catalog.jsonb_build_object('path', e[1], 'rule', e[2], 'message', e[3]);
END;
$$;
