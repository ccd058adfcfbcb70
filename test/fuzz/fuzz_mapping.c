/*
 * libFuzzer: the JSON-path and source-mapping code (src/mapping.c).
 * Input: the id member's name, a newline, the timestamp member's name, a
 * newline, then a JSON document (any bytes). The names and the document go
 * through what normalise_mapped() does with them, and every byte of the
 * input is also tried as a member name, an excerpt and a number's text.
 * Invariants (abort on violation):
 *   - buffers are never overrun (ASan) and always NUL-terminated;
 *   - a path is "$" and one segment: .name (an identifier) or ["…"] whose
 *     contents are a strict JSON string; read back (by json-c) it gives the
 *     name exactly, or, when the function says it shortened, a proper
 *     prefix of the name (on a UTF-8 boundary) followed by "...";
 *     names of up to 40 bytes are never shortened;
 *   - an id is accepted only from a string (copied byte for byte) or from
 *     an integer-valued number, written canonically (-?(0|[1-9][0-9]*), no
 *     "-0") with the same value (strtod of both agree); plain integer text
 *     is always accepted; json-c's integers give their own text back;
 *   - each member of the document is the id, the timestamp or payload,
 *     exactly as byte comparison with the two names says.
 */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <json-c/json.h>

#include "mapping.h"

#define PATH_LEN 256			/* EP_ERR_PATH_LEN, as ingestenvelope.c uses */

#define REQUIRE(cond, what) \
	do { \
		if (!(cond)) \
		{ \
			fprintf(stderr, "invariant violated: %s (%s:%d)\n", what, __FILE__, __LINE__); \
			abort(); \
		} \
	} while (0)

static int
is_hex(char c)
{
	return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F');
}

/* Strict JSON string contents: no raw control character or quote, valid escapes. */
static int
json_string_contents_ok(const char *s, size_t len)
{
	size_t		i;

	for (i = 0; i < len; i++)
	{
		unsigned char c = (unsigned char) s[i];

		if (c < 0x20 || c == '"')
			return 0;
		if (c == '\\')
		{
			if (i + 1 >= len)
				return 0;
			c = (unsigned char) s[++i];
			if (c == 'u')
			{
				if (i + 4 >= len || !is_hex(s[i + 1]) || !is_hex(s[i + 2]) ||
					!is_hex(s[i + 3]) || !is_hex(s[i + 4]))
					return 0;
				i += 4;
			}
			else if (!strchr("\"\\/bfnrt", c))
				return 0;
		}
	}
	return 1;
}

/*
 * Decode JSON string contents with json-c (an independent reader); the
 * bytes in a malloc'd buffer, their length in *outlen.
 */
static char *
decode(const char *s, size_t len, size_t *outlen)
{
	char	   *q = malloc(len + 3);
	struct json_tokener *tok = json_tokener_new();
	struct json_object *o;
	char	   *r = NULL;

	REQUIRE(q && tok, "memory");
	q[0] = '"';
	memcpy(q + 1, s, len);
	q[len + 1] = '"';
	q[len + 2] = '\0';
	o = json_tokener_parse_ex(tok, q, (int) len + 2);
	REQUIRE(o && json_object_is_type(o, json_type_string) &&
			json_tokener_get_parse_end(tok) == len + 2, "a path segment reads as one JSON string");
	*outlen = (size_t) json_object_get_string_len(o);
	r = malloc(*outlen + 1);
	REQUIRE(r, "memory");
	memcpy(r, json_object_get_string(o), *outlen + 1);
	json_object_put(o);
	json_tokener_free(tok);
	free(q);
	return r;
}

/* What an excerpt of name[0..len) read back must be. */
static void
check_readback(const char *got, size_t gotlen, const char *name, size_t len,
			   int exact, size_t max)
{
	if (exact)
	{
		REQUIRE(gotlen == len && memcmp(got, name, len) == 0, "an exact segment reads back as the name");
		REQUIRE(len <= max, "exact only within max");
		return;
	}
	REQUIRE(gotlen >= 3 && memcmp(got + gotlen - 3, "...", 3) == 0, "a shortened segment ends in ...");
	gotlen -= 3;
	REQUIRE(gotlen < len && memcmp(got, name, gotlen) == 0, "a shortened segment is a proper prefix");
	REQUIRE(gotlen <= max, "at most max bytes kept");
	/* (a stray continuation byte after ASCII, or only such bytes, is no sequence) */
	REQUIRE(gotlen == 0 || ((unsigned char) name[gotlen] & 0xC0) != 0x80 ||
			((unsigned char) name[gotlen - 1] & 0x80) == 0,
			"cut on a UTF-8 boundary");
}

/* A member segment (seg has no "$") is well-formed and stands for name. */
static void
check_segment(const char *seg, const char *name, int exact, size_t max)
{
	size_t		len = strlen(seg);

	if (seg[0] == '.')
	{
		REQUIRE(exact, "the .name form is exact");
		REQUIRE(ep_path_plain_name(seg + 1) && strcmp(seg + 1, name) == 0, ".name is the identifier itself");
		return;
	}
	REQUIRE(len >= 4 && seg[0] == '[' && seg[1] == '"' && seg[len - 2] == '"' && seg[len - 1] == ']',
			"odd names are [\"…\"]");
	REQUIRE(json_string_contents_ok(seg + 2, len - 4), "strict JSON string contents");
	{
		size_t		gotlen;
		char	   *got = decode(seg + 2, len - 4, &gotlen);

		check_readback(got, gotlen, name, strlen(name), exact, max);
		if (exact)
			REQUIRE(!ep_path_plain_name(name), "an identifier gets the .name form when it fits");
		free(got);
	}
}

/* The path of a mapped member, in ingest's buffer and in tight ones. */
static void
check_paths(const char *name, size_t tight)
{
	char		path[PATH_LEN];
	int			exact = ep_mapped_path(path, sizeof(path), name);
	char	   *buf;

	REQUIRE(memchr(path, '\0', sizeof(path)) != NULL, "NUL-terminated");
	REQUIRE(path[0] == '$', "a path starts with $");
	check_segment(path + 1, name, exact, EP_MAPPED_NAME_MAX);
	if (strlen(name) <= 40)
		REQUIRE(exact, "a name of up to 40 bytes is never shortened");

	/* a buffer of exactly `tight` bytes: ASan sees any overrun */
	buf = malloc(tight ? tight : 1);
	REQUIRE(buf, "memory");
	exact = ep_path_member(buf, tight, name, EP_PATH_NAME_MAX);
	if (tight > 0)
	{
		REQUIRE(memchr(buf, '\0', tight) != NULL, "NUL-terminated in a tight buffer");
		if (buf[0] != '\0')
			check_segment(buf, name, exact, EP_PATH_NAME_MAX);
		else
			REQUIRE(!exact && tight < 8, "empty only when no segment fits");
	}
	free(buf);
}

/* Any bytes as a text excerpt. */
static void
check_excerpt(const char *s, size_t len, size_t outlen, size_t max)
{
	char	   *out = malloc(outlen ? outlen : 1);
	int			whole;

	REQUIRE(out, "memory");
	whole = ep_json_excerpt(out, outlen, s, len, max);
	if (outlen > 0)
	{
		size_t		olen;
		size_t		gotlen;
		char	   *got;

		REQUIRE(memchr(out, '\0', outlen) != NULL, "excerpt NUL-terminated");
		olen = strlen(out);
		REQUIRE(json_string_contents_ok(out, olen), "excerpt is strict JSON string contents");
		got = decode(out, olen, &gotlen);
		if (whole || outlen >= 4)
			check_readback(got, gotlen, s, len, whole, max);
		free(got);
	}
	else
		REQUIRE(whole == (len == 0), "nothing fits in 0 bytes");
	free(out);
}

static int
canonical_integer(const char *s)
{
	int			neg = (*s == '-');

	s += neg;
	if (*s == '0')
		return s[1] == '\0' && !neg;
	if (!(*s >= '1' && *s <= '9'))
		return 0;
	while (*s >= '0' && *s <= '9')
		s++;
	return *s == '\0';
}

static int
plain_integer_text(const char *s, size_t len)
{
	size_t		i = 0;

	if (i < len && s[i] == '-')
		i++;
	if (i >= len)
		return 0;
	if (s[i] == '0')
		return i + 1 == len;
	for (; i < len; i++)
		if (!(s[i] >= '0' && s[i] <= '9'))
			return 0;
	return 1;
}

/* Any bytes as the text of a number id. */
static void
check_number_id(const char *s, size_t len, size_t outlen)
{
	char	   *out = malloc(outlen ? outlen : 1);
	long		n;

	REQUIRE(out, "memory");
	n = ep_mapped_id(EP_JSON_NUMBER, s, len, out, outlen);
	REQUIRE(n >= 0 || n == EP_MAPPED_ID_TYPE || n == EP_MAPPED_ID_LONG, "a known answer");
	if (n >= 0)
	{
		char	   *in = malloc(len + 1);

		REQUIRE(in, "memory");
		REQUIRE((size_t) n < outlen && out[n] == '\0' && strlen(out) == (size_t) n, "id NUL-terminated, length returned");
		REQUIRE(canonical_integer(out), "an integer id is canonical");
		memcpy(in, s, len);
		in[len] = '\0';
		REQUIRE(strlen(in) == len, "accepted text has no NUL");
		REQUIRE(strtod(in, NULL) == strtod(out, NULL), "the id has the number's value");
		if (plain_integer_text(s, len))
			REQUIRE(strcmp(out, in) == 0 || (strcmp(in, "-0") == 0 && strcmp(out, "0") == 0),
					"plain integer text stays as it is");
		free(in);
	}
	else if (n == EP_MAPPED_ID_TYPE)
		REQUIRE(!plain_integer_text(s, len), "plain integer text is never refused");
	else
		REQUIRE(!plain_integer_text(s, len) || len + 1 > outlen, "plain integer text fits in len + 1");
	free(out);
}

/* What normalise_mapped() does with a document, on json-c. */
static void
check_document(struct json_object *doc, const char *id_field, const char *ts_field)
{
	struct json_object *idv;
	int			npayload = 0;
	int			nmembers = 0;
	int			has_id;
	int			has_ts;

	if (!json_object_is_type(doc, json_type_object) || id_field[0] == '\0' ||
		ts_field[0] == '\0' || strcmp(id_field, ts_field) == 0)
		return;					/* register_source refuses such names */
	has_id = json_object_object_get_ex(doc, id_field, &idv);
	has_ts = json_object_object_get_ex(doc, ts_field, NULL);
	if (has_id)
	{
		char		out[PATH_LEN];
		long		n;

		if (json_object_is_type(idv, json_type_string))
		{
			size_t		len = (size_t) json_object_get_string_len(idv);
			char	   *id = malloc(len + 1);

			REQUIRE(id, "memory");
			n = ep_mapped_id(EP_JSON_STRING, json_object_get_string(idv), len, id, len + 1);
			REQUIRE(n == (long) len && memcmp(id, json_object_get_string(idv), len) == 0 && id[len] == '\0',
					"a string id is taken byte for byte");
			free(id);
		}
		else if (json_object_is_type(idv, json_type_int) || json_object_is_type(idv, json_type_double))
		{
			const char *text = json_object_to_json_string_ext(idv, JSON_C_TO_STRING_PLAIN);

			n = ep_mapped_id(EP_JSON_NUMBER, text, strlen(text), out, sizeof(out));
			if (json_object_is_type(idv, json_type_int))
				REQUIRE(n == (long) strlen(text) && strcmp(out, text) == 0,
						"a json-c integer is an id, its own text");
			else if (n >= 0)
				REQUIRE(isfinite(json_object_get_double(idv)) &&
						floor(json_object_get_double(idv)) == json_object_get_double(idv),
						"a double is an id only when integral");
		}
		else
			REQUIRE(ep_mapped_id(EP_JSON_OTHER, json_object_get_string(idv), 0, out, sizeof(out)) == EP_MAPPED_ID_TYPE,
					"other types are refused");
	}
	json_object_object_foreach(doc, key, val)
	{
		EpMappedMember m = ep_mapped_member(key, strlen(key), id_field, ts_field);

		(void) val;
		nmembers++;
		REQUIRE(m == (strcmp(key, id_field) == 0 ? EP_MAPPED_ID :
					  strcmp(key, ts_field) == 0 ? EP_MAPPED_TIMESTAMP : EP_MAPPED_PAYLOAD),
				"members classified by their names");
		if (m == EP_MAPPED_PAYLOAD)
			npayload++;
	}
	REQUIRE(npayload == nmembers - has_id - has_ts, "every other member is payload");
}

int			LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char	   *buf = malloc(size + 1);
	char	   *id_field;
	char	   *ts_field;
	char	   *doc_text;
	char	   *nl;
	size_t		doc_len;
	size_t		knob = size ? data[0] : 0;	/* buffer sizes from the input */
	struct json_tokener *tok;
	struct json_object *doc;

	if (buf == NULL)
		return 0;
	memcpy(buf, data, size);
	buf[size] = '\0';

	/* the whole input (NULs and all) as an excerpt and as a number's text */
	check_excerpt(buf, size, knob % 80, (size_t) (knob * 7) % 200);
	check_excerpt(buf, size, 256, EP_PATH_NAME_MAX);
	check_number_id(buf, size, 1 + knob % 64);
	check_number_id(buf, size, size + 1);

	/* names: up to the first two newlines (C strings: cut at a NUL) */
	id_field = buf;
	nl = memchr(id_field, '\n', size);
	ts_field = nl ? nl + 1 : buf + size;
	if (nl)
		*nl = '\0';
	nl = memchr(ts_field, '\n', (size_t) (buf + size - ts_field));
	doc_text = nl ? nl + 1 : buf + size;
	if (nl)
		*nl = '\0';
	doc_len = (size_t) (buf + size - doc_text);

	check_paths(id_field, knob % 72);
	check_paths(ts_field, (knob >> 3) % 72);

	tok = json_tokener_new_ex(64);
	if (tok)
	{
		doc = json_tokener_parse_ex(tok, doc_text, (int) doc_len + 1);
		if (json_tokener_get_error(tok) == json_tokener_success && doc)
		{
			check_document(doc, id_field, ts_field);
			/* every member name of the document as a path, too */
			if (json_object_is_type(doc, json_type_object))
			{
				json_object_object_foreach(doc, key, val)
				{
					(void) val;
					check_paths(key, strlen(key) % 72);
				}
			}
		}
		json_object_put(doc);
		json_tokener_free(tok);
	}
	free(buf);
	return 0;
}
