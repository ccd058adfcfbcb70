/* Unit tests of JSON-path segments and the mapped-source rules (src/mapping.c). */
#include <stdlib.h>
#include <string.h>

#include <json-c/json.h>

#include "mapping.h"
#include "unit.h"

/*
 * The member name a segment stands for: .name as it is, ["…"] decoded as
 * a JSON string by json-c. NULL if the segment is neither.
 */
static char *
segment_name(const char *seg)
{
	size_t		len = strlen(seg);
	struct json_object *o;
	char	   *name = NULL;

	if (len >= 2 && seg[0] == '.')
		return strdup(seg + 1);
	if (len < 4 || seg[0] != '[' || seg[1] != '"' || seg[len - 2] != '"' || seg[len - 1] != ']')
		return NULL;
	{
		char	   *quoted = strndup(seg + 1, len - 2);
		struct json_tokener *tok = json_tokener_new();
		size_t		qlen = strlen(quoted);

		o = json_tokener_parse_ex(tok, quoted, (int) qlen);
		/* the whole quoted text is one JSON string */
		if (o && json_object_is_type(o, json_type_string) &&
			json_tokener_get_error(tok) == json_tokener_success &&
			json_tokener_get_parse_end(tok) == qlen)
			name = strdup(json_object_get_string(o));
		json_object_put(o);
		json_tokener_free(tok);
		free(quoted);
	}
	return name;
}

/* The segment of a name is as expected, exact or not as expected, and reads back. */
static int
seg_is(const char *name, size_t max, const char *want, int want_exact)
{
	char		seg[256];
	int			exact = ep_path_member(seg, sizeof(seg), name, max);
	char	   *back = segment_name(seg);
	int			ok;

	ok = strcmp(seg, want) == 0 && exact == want_exact && back != NULL &&
		(want_exact ? strcmp(back, name) == 0 : 1);
	if (!ok)
		printf("# segment of \"%s\": got %s (exact %d, reads back as %s)\n",
			   name, seg, exact, back ? back : "(unreadable)");
	free(back);
	return ok;
}

static int
id_is(EpJsonKind kind, const char *text, const char *want)
{
	char		out[64];
	long		n = ep_mapped_id(kind, text, strlen(text), out, sizeof(out));

	if (want == NULL)
		return n == EP_MAPPED_ID_TYPE;
	return n == (long) strlen(want) && strcmp(out, want) == 0;
}

int
main(void)
{
	char		buf[256];
	char		name[300];
	char		out[64];
	int			exact;
	int			i;

	/* member segments */
	CHECK(seg_is("id", EP_PATH_NAME_MAX, ".id", 1), "identifier: .id");
	CHECK(seg_is("_x9", EP_PATH_NAME_MAX, "._x9", 1), "identifier with _ and digits: ._x9");
	CHECK(seg_is("a.b", EP_PATH_NAME_MAX, "[\"a.b\"]", 1), "a dot: [\"a.b\"], not .a.b");
	CHECK(seg_is("x\"y", EP_PATH_NAME_MAX, "[\"x\\\"y\"]", 1), "a quote is escaped");
	CHECK(seg_is("with space", EP_PATH_NAME_MAX, "[\"with space\"]", 1), "a space");
	CHECK(seg_is("back\\slash", EP_PATH_NAME_MAX, "[\"back\\\\slash\"]", 1), "a backslash is escaped");
	CHECK(seg_is("a]b[c", EP_PATH_NAME_MAX, "[\"a]b[c\"]", 1), "brackets inside the quotes");
	CHECK(seg_is("", EP_PATH_NAME_MAX, "[\"\"]", 1), "the empty name: [\"\"]");
	CHECK(seg_is("9lives", EP_PATH_NAME_MAX, "[\"9lives\"]", 1), "a leading digit is not an identifier");
	CHECK(seg_is("$ref", EP_PATH_NAME_MAX, "[\"$ref\"]", 1), "$ is not an identifier character");
	CHECK(seg_is("a\nb\x01", EP_PATH_NAME_MAX, "[\"a\\u000ab\\u0001\"]", 1), "control characters as \\u00XX");
	CHECK(seg_is("del\x7f", EP_PATH_NAME_MAX, "[\"del\\u007f\"]", 1), "DEL as \\u007f");
	CHECK(seg_is("caf\xc3\xa9", EP_PATH_NAME_MAX, "[\"caf\xc3\xa9\"]", 1), "UTF-8 kept as it is, quoted");
	CHECK(seg_is("\xe9t\xe9", EP_PATH_NAME_MAX, "[\"\xe9t\xe9\"]", 1), "Latin-1 bytes are never identifier characters");

	/* long names */
	memset(name, 'a', 200);
	name[200] = '\0';
	ep_path_member(buf, sizeof(buf), name, EP_PATH_NAME_MAX);
	CHECK(buf[0] == '.' && strlen(buf) == 201, "a long identifier fits whole");
	name[3] = ' ';
	exact = ep_path_member(buf, sizeof(buf), name, EP_PATH_NAME_MAX);
	CHECK(!exact && strlen(buf) == 2 + 48 + 3 + 2 && strcmp(buf + 50, "...\"]") == 0,
		  "a long odd name: 48 bytes and ..., reported as shortened");
	memset(name, 'a', 47);
	strcpy(name + 47, "\xc3\xa9zzz");
	exact = ep_path_member(buf, sizeof(buf), name, EP_PATH_NAME_MAX);
	CHECK(!exact && strlen(buf) == 2 + 47 + 3 + 2, "shortened on a UTF-8 boundary, not inside \xc3\xa9");
	for (i = 0; i < 40; i++)
		name[i] = (char) (1 + i % 31);
	name[40] = '\0';
	exact = ep_path_member(buf, sizeof(buf), name, EP_PATH_NAME_MAX);
	{
		char	   *back = segment_name(buf);

		CHECK(exact && strlen(buf) == 4 + 240 && back && strcmp(back, name) == 0,
			  "40 control characters: 240 bytes of escapes, whole");
		free(back);
	}
	exact = ep_path_member(buf, 100, name, EP_PATH_NAME_MAX);
	{
		char	   *back = segment_name(buf);

		CHECK(!exact && strlen(buf) < 100 && back && strlen(back) >= 3 &&
			  strcmp(back + strlen(back) - 3, "...") == 0 &&
			  strncmp(back, name, strlen(back) - 3) == 0,
			  "escapes that outgrow the buffer: cut with ..., still a JSON string");
		free(back);
	}
	strcpy(name, "ab cd");
	CHECK(!ep_path_member(buf, 7, name, EP_PATH_NAME_MAX) && buf[0] == '\0', "no room for any segment: empty");
	CHECK(!ep_path_member(buf, 8, name, EP_PATH_NAME_MAX) && strcmp(buf, "[\"...\"]") == 0, "8 bytes: [\"...\"]");
	CHECK(ep_path_member(buf, 4, "id", EP_PATH_NAME_MAX) && strcmp(buf, ".id") == 0, "an identifier exactly fits");

	/* excerpts */
	CHECK(ep_json_excerpt(buf, sizeof(buf), "abc", 3, 40) && strcmp(buf, "abc") == 0, "excerpt: short text whole");
	CHECK(!ep_json_excerpt(buf, 1, "abc", 3, 40) && buf[0] == '\0', "excerpt: 1 byte, empty");
	CHECK(ep_json_excerpt(buf, sizeof(buf), "a\0b", 3, 40) && strcmp(buf, "a\\u0000b") == 0, "excerpt: NUL escaped");
	CHECK(!ep_json_excerpt(buf, 6, "a\"cd", 4, 40) && strcmp(buf, "a...") == 0, "excerpt: no half escape");

	/* mapped paths */
	CHECK(ep_mapped_path(buf, sizeof(buf), "id") && strcmp(buf, "$.id") == 0, "mapped path $.id (as before)");
	CHECK(ep_mapped_path(buf, sizeof(buf), "event.id") && strcmp(buf, "$[\"event.id\"]") == 0, "mapped path $[\"event.id\"]");
	CHECK(ep_mapped_path(buf, sizeof(buf), "at \"utc\"") && strcmp(buf, "$[\"at \\\"utc\\\"\"]") == 0, "mapped path with quotes");
	memset(name, 'x', 120);
	strcpy(name + 120, " y");
	CHECK(ep_mapped_path(buf, sizeof(buf), name) && strlen(buf) == 1 + 2 + 122 + 2, "a mapped odd name of 122 bytes is whole");

	/* members */
	CHECK(ep_mapped_member("id", 2, "id", "ts") == EP_MAPPED_ID, "member: the id");
	CHECK(ep_mapped_member("ts", 2, "id", "ts") == EP_MAPPED_TIMESTAMP, "member: the timestamp");
	CHECK(ep_mapped_member("idx", 3, "id", "ts") == EP_MAPPED_PAYLOAD &&
		  ep_mapped_member("i", 1, "id", "ts") == EP_MAPPED_PAYLOAD &&
		  ep_mapped_member("", 0, "id", "ts") == EP_MAPPED_PAYLOAD, "member: prefixes and extensions are payload");
	CHECK(ep_mapped_member("idx", 2, "id", "ts") == EP_MAPPED_ID, "member: compared by length, not NUL");
	CHECK(ep_mapped_member("a.b", 3, "a.b", "x y") == EP_MAPPED_ID &&
		  ep_mapped_member("x y", 3, "a.b", "x y") == EP_MAPPED_TIMESTAMP, "member: odd names");

	/* ids */
	CHECK(id_is(EP_JSON_STRING, "a1", "a1") && id_is(EP_JSON_STRING, "", ""), "id: strings as they are");
	CHECK(id_is(EP_JSON_STRING, "1.5", "1.5"), "id: a string that looks like a number is a string");
	CHECK(ep_mapped_id(EP_JSON_STRING, "a1", 2, out, 2) == EP_MAPPED_ID_LONG, "id: string longer than the buffer");
	CHECK(id_is(EP_JSON_OTHER, "", NULL), "id: other types refused");
	CHECK(id_is(EP_JSON_NUMBER, "42", "42") && id_is(EP_JSON_NUMBER, "-7", "-7") &&
		  id_is(EP_JSON_NUMBER, "0", "0"), "id: integers as numeric_out writes them");
	CHECK(id_is(EP_JSON_NUMBER, "99999999999999999999999", "99999999999999999999999"), "id: beyond 64 bits");
	CHECK(id_is(EP_JSON_NUMBER, "1.0", NULL) && id_is(EP_JSON_NUMBER, "1.5", NULL) &&
		  id_is(EP_JSON_NUMBER, "0.0", NULL) && id_is(EP_JSON_NUMBER, "-3.25", NULL), "id: a point is not an integer");
	CHECK(id_is(EP_JSON_NUMBER, "1e2", "100") && id_is(EP_JSON_NUMBER, "1E+2", "100") &&
		  id_is(EP_JSON_NUMBER, "1.5e1", "15") && id_is(EP_JSON_NUMBER, "12.5e3", "12500") &&
		  id_is(EP_JSON_NUMBER, "0.05e2", "5") && id_is(EP_JSON_NUMBER, "0.50e2", "50"),
		  "id: exponents applied as numeric does");
	CHECK(id_is(EP_JSON_NUMBER, "1.50e1", NULL) && id_is(EP_JSON_NUMBER, "1e-1", NULL) &&
		  id_is(EP_JSON_NUMBER, "100e-2", NULL), "id: digits left after the point are not an integer");
	CHECK(id_is(EP_JSON_NUMBER, "-0", "0") && id_is(EP_JSON_NUMBER, "0e5", "0") &&
		  id_is(EP_JSON_NUMBER, "-0.0e1", "0"), "id: every zero is 0");
	CHECK(id_is(EP_JSON_NUMBER, "", NULL) && id_is(EP_JSON_NUMBER, "-", NULL) &&
		  id_is(EP_JSON_NUMBER, "01", NULL) && id_is(EP_JSON_NUMBER, "+1", NULL) &&
		  id_is(EP_JSON_NUMBER, "1.", NULL) && id_is(EP_JSON_NUMBER, ".5", NULL) &&
		  id_is(EP_JSON_NUMBER, "1e", NULL) && id_is(EP_JSON_NUMBER, "1e+", NULL) &&
		  id_is(EP_JSON_NUMBER, "NaN", NULL) && id_is(EP_JSON_NUMBER, "Infinity", NULL) &&
		  id_is(EP_JSON_NUMBER, " 1", NULL) && id_is(EP_JSON_NUMBER, "1 ", NULL) &&
		  id_is(EP_JSON_NUMBER, "0x10", NULL), "id: not JSON number text is refused");
	CHECK(ep_mapped_id(EP_JSON_NUMBER, "1e300", 5, out, sizeof(out)) == EP_MAPPED_ID_LONG &&
		  ep_mapped_id(EP_JSON_NUMBER, "1e99999999999999", 16, out, sizeof(out)) == EP_MAPPED_ID_LONG,
		  "id: huge exponents do not fit, no overflow");
	CHECK(ep_mapped_id(EP_JSON_NUMBER, "12345", 5, out, 5) == EP_MAPPED_ID_LONG &&
		  ep_mapped_id(EP_JSON_NUMBER, "12345", 5, out, 6) == 5, "id: len + 1 bytes suffice without an exponent");
	{
		/* the old rule (numeric_out text has no '.', 'e' or 'E') on numeric_out-like text */
		static const char *const texts[] = {"0", "7", "-7", "10", "123456789012345678901234567890",
			"0.5", "-0.001", "1.000", "10.0"};
		int			same = 1;

		for (i = 0; i < (int) (sizeof(texts) / sizeof(texts[0])); i++)
		{
			long		n = ep_mapped_id(EP_JSON_NUMBER, texts[i], strlen(texts[i]), out, sizeof(out));
			int			old_ok = strpbrk(texts[i], ".eE") == NULL;

			if ((n >= 0) != old_ok || (n >= 0 && strcmp(out, texts[i]) != 0))
				same = 0;
		}
		CHECK(same, "id: on numeric_out text, the same decisions as before");
	}
	return unit_done();
}
