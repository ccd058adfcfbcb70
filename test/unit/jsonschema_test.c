/* Unit tests of the JSON Schema validator (src/jsonschema.c). */
#include <stdlib.h>
#include <string.h>

#include <json-c/json.h>

#include "jsonschema.h"
#include "unit.h"

static struct json_object *
parse(const char *s)
{
	struct json_tokener *tok = json_tokener_new_ex(20000);
	struct json_object *o = json_tokener_parse_ex(tok, s, (int) strlen(s) + 1);

	json_tokener_free(tok);
	return o;
}

/* 1 valid, 0 invalid (rule in *rule), -1 schema refused */
static int
check(const char *schema, const char *instance, char *rule)
{
	struct json_object *s = parse(schema);
	struct json_object *i = parse(instance);
	EpSchemaError err;
	EpSchema   *c = ep_schema_compile(s, 64, &err);
	int			r;

	if (rule)
		rule[0] = '\0';
	if (c == NULL)
	{
		if (rule)
			strcpy(rule, err.rule);
		json_object_put(s);
		json_object_put(i);
		return -1;
	}
	r = ep_schema_validate(c, i, "$", 64, &err) ? 1 : 0;
	if (!r && rule)
		strcpy(rule, err.rule);
	ep_schema_free(c);
	json_object_put(s);
	json_object_put(i);
	return r;
}

static void
accepts(const char *schema, const char *instance, const char *desc)
{
	CHECK(check(schema, instance, NULL) == 1, desc);
}

static void
refuses(const char *schema, const char *instance, const char *rule, const char *desc)
{
	char		got[EP_ERR_RULE_LEN];

	CHECK(check(schema, instance, got) == 0 && strcmp(got, rule) == 0, desc);
}

static void
bad_schema(const char *schema, const char *desc)
{
	CHECK(check(schema, "null", NULL) == -1, desc);
}

int
main(void)
{
	char		deep[40000];
	int			k;
	EpSchemaError err;

	accepts("{\"type\":\"string\"}", "\"x\"", "type string");
	refuses("{\"type\":\"string\"}", "1", "type", "type string refuses number");
	accepts("{\"type\":\"integer\"}", "2.0", "2.0 is an integer");
	refuses("{\"type\":\"integer\"}", "2.5", "type", "2.5 is not an integer");
	accepts("{\"type\":\"number\"}", "3", "integer is a number");
	accepts("{\"type\":[\"string\",\"null\"]}", "null", "type list");
	refuses("{\"type\":[\"string\",\"null\"]}", "true", "type", "type list refuses boolean");
	accepts("{\"enum\":[1,\"a\",{\"b\":[1]}]}", "{\"b\":[1.0]}", "enum deep equality, 1 == 1.0");
	refuses("{\"enum\":[1,2]}", "3", "enum", "enum refuses");
	accepts("{\"const\":{\"a\":1,\"b\":2}}", "{\"b\":2,\"a\":1}", "const ignores member order");
	refuses("{\"const\":\"x\"}", "\"y\"", "const", "const refuses");
	accepts("{\"minimum\":5,\"maximum\":10}", "5", "minimum inclusive");
	refuses("{\"minimum\":5}", "4.99", "minimum", "minimum refuses");
	refuses("{\"maximum\":10}", "10.01", "maximum", "maximum refuses");
	refuses("{\"exclusiveMinimum\":0}", "0", "exclusiveMinimum", "exclusiveMinimum");
	refuses("{\"exclusiveMaximum\":1}", "1", "exclusiveMaximum", "exclusiveMaximum");
	accepts("{\"multipleOf\":0.01}", "19.99", "multipleOf 0.01 with doubles");
	refuses("{\"multipleOf\":0.01}", "1.005", "multipleOf", "multipleOf refuses");
	accepts("{\"multipleOf\":3}", "9", "multipleOf integer");
	refuses("{\"multipleOf\":3}", "10", "multipleOf", "multipleOf integer refuses");
	accepts("{\"minLength\":2,\"maxLength\":3}", "\"\\u00e9\\u00e9\\u00e9\"", "lengths count characters, not bytes");
	refuses("{\"maxLength\":2}", "\"abc\"", "maxLength", "maxLength");
	refuses("{\"minLength\":2}", "\"a\"", "minLength", "minLength");
	accepts("{\"pattern\":\"^[A-Z]{3}-\\\\d{3}$\"}", "\"ABC-123\"", "pattern with \\d");
	refuses("{\"pattern\":\"^\\\\d+$\"}", "\"12a\"", "pattern", "pattern refuses");
	accepts("{\"pattern\":\"b\"}", "\"abc\"", "pattern is unanchored");
	accepts("{\"pattern\":\"^[\\\\w-]+$\"}", "\"a_b-c\"", "\\w inside brackets");
	refuses("{\"pattern\":\"^a$\"}", "\"a\\u0000b\"", "pattern", "NUL does not end the string for pattern");
	accepts("{\"format\":\"uuid\"}", "\"6f1c2a4e-8b9d-4e2f-a1b3-c5d7e9f0a2b4\"", "uuid");
	refuses("{\"format\":\"uuid\"}", "\"6f1c2a4e8b9d4e2fa1b3c5d7e9f0a2b4\"", "format", "uuid without hyphens");
	accepts("{\"format\":\"date-time\"}", "\"2024-02-29T23:59:60.5+05:30\"", "date-time leap day, leap second, offset");
	refuses("{\"format\":\"date-time\"}", "\"2023-02-29T00:00:00Z\"", "format", "date-time not a leap year");
	refuses("{\"format\":\"date-time\"}", "\"2023-01-01T00:00:00\"", "format", "date-time needs a zone");
	accepts("{\"format\":\"email\"}", "\"ann.lee+x@mail.example.com\"", "email");
	refuses("{\"format\":\"email\"}", "\"ann@example\"", "format", "email needs a dot in the domain");
	refuses("{\"format\":\"email\"}", "\"a@-x.com\"", "format", "email label starting with -");
	accepts("{\"minItems\":1,\"maxItems\":2,\"items\":{\"type\":\"integer\"}}", "[1,2]", "items and sizes");
	refuses("{\"items\":{\"type\":\"integer\"}}", "[1,\"a\"]", "type", "items refuses an element");
	refuses("{\"minItems\":1}", "[]", "minItems", "minItems");
	refuses("{\"maxItems\":1}", "[1,2]", "maxItems", "maxItems");
	refuses("{\"uniqueItems\":true}", "[1,{\"a\":1},1.0]", "uniqueItems", "uniqueItems 1 == 1.0");
	accepts("{\"uniqueItems\":true}", "[1,2,\"1\",[1],{\"a\":1}]", "uniqueItems distinct values");
	accepts("{\"required\":[\"a\"],\"properties\":{\"a\":{\"type\":\"string\"}}}", "{\"a\":\"x\",\"b\":1}", "required and properties");
	refuses("{\"required\":[\"a\"]}", "{}", "required", "required refuses");
	refuses("{\"properties\":{\"a\":{\"type\":\"string\"}},\"additionalProperties\":false}", "{\"a\":\"x\",\"b\":1}", "additionalProperties", "additionalProperties false");
	refuses("{\"additionalProperties\":{\"type\":\"integer\"}}", "{\"b\":1.5}", "type", "additionalProperties schema");
	accepts("{\"$defs\":{\"n\":{\"type\":\"object\",\"properties\":{\"c\":{\"type\":\"array\",\"items\":{\"$ref\":\"#/$defs/n\"}}}}},\"$ref\":\"#/$defs/n\"}", "{\"c\":[{\"c\":[{}]}]}", "recursive $ref");
	refuses("{\"definitions\":{\"a/b\":{\"type\":\"string\"}},\"$ref\":\"#/definitions/a~1b\"}", "1", "type", "$ref with ~1 escape and definitions");
	accepts("true", "{\"anything\":1}", "boolean schema true");
	refuses("false", "1", "false", "boolean schema false");
	accepts("{\"title\":\"t\",\"description\":\"d\",\"$comment\":\"c\",\"default\":1,\"examples\":[1]}", "1", "annotations are ignored");
	bad_schema("{\"type\":\"thing\"}", "unknown type refused");
	bad_schema("{\"anyOf\":[]}", "unsupported keyword refused");
	bad_schema("{\"$ref\":\"#/$defs/x\"}", "missing def refused");
	bad_schema("{\"$defs\":{\"a\":{\"$ref\":\"#/$defs/a\"}},\"$ref\":\"#/$defs/a\"}", "self ref cycle refused");
	bad_schema("{\"pattern\":\"(\"}", "bad pattern refused");
	bad_schema("{\"pattern\":\"\\\\bword\"}", "unsupported escape refused");
	bad_schema("{\"format\":\"hostname\"}", "unknown format refused");
	bad_schema("{\"minLength\":1.5}", "non-integer minLength refused");
	bad_schema("{\"items\":[{}]}", "items array form refused");
	bad_schema("{\"properties\":{\"a\":{\"$defs\":{}}}}", "nested $defs refused");
	bad_schema("[]", "non-object schema refused");
	bad_schema("{\"pattern\":\"(a{1000}){1000}\"}", "nested repetitions that expand too far refused");
	bad_schema("{\"pattern\":\"((a{50}){50}){50}\"}", "three nested repetitions refused");
	bad_schema("{\"pattern\":\"a{5000}\"}", "a repetition above 1000 refused");
	bad_schema("{\"pattern\":\"x+++*++++++++++\"}", "stacked quantifiers refused (they compile exponentially)");
	bad_schema("{\"pattern\":\"a**\"}", "a quantifier after a quantifier refused");
	accepts("{\"pattern\":\"^[a-z]{1,64}@[a-z]{1,255}\\\\.[a-z]{2,10}$\"}", "\"ann@example.com\"", "ordinary bounded patterns still compile");

	/* depth limits: a 10,000-deep instance and schema */
	strcpy(deep, "");
	for (k = 0; k < 10000; k++)
		strcat(deep, "[");
	for (k = 0; k < 10000; k++)
		strcat(deep, "]");
	refuses("{}", deep, "depth", "10,000-deep instance refused with rule depth");
	{
		char	   *s = malloc(200000);
		struct json_object *o;

		strcpy(s, "");
		for (k = 0; k < 5000; k++)
			strcat(s, "{\"items\":");
		strcat(s, "{}");
		for (k = 0; k < 5000; k++)
			strcat(s, "}");
		o = parse(s);
		CHECK(o != NULL && ep_schema_compile(o, 64, &err) == NULL && strcmp(err.rule, "depth") == 0,
			  "5,000-deep schema refused with rule depth");
		json_object_put(o);
		free(s);
	}
	/* error messages stay bounded and safe */
	{
		struct json_object *s = parse("{\"const\":1}");
		struct json_object *i = json_object_new_string_len("\n\n\n\"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa", 58);
		EpSchema   *c = ep_schema_compile(s, 64, &err);

		CHECK(c && !ep_schema_validate(c, i, "$.payload", 64, &err) &&
			  strchr(err.message, '\n') == NULL && strstr(err.message, "...") != NULL &&
			  strcmp(err.path, "$.payload") == 0,
			  "messages escape control characters and truncate");
		ep_schema_free(c);
		json_object_put(s);
		json_object_put(i);
	}
	/* a path longer than the buffer is cut between segments, marked "..." */
	{
		static char sch[4096];
		static char ins[4096];
		char		want[EP_ERR_PATH_LEN];
		char		name[41];
		struct json_object *s;
		struct json_object *i;
		EpSchema   *c;

		memset(name, 'n', 40);
		name[40] = '\0';
		strcpy(sch, "");
		strcpy(ins, "");
		strcpy(want, "$");
		for (k = 0; k < 8; k++)
		{
			name[0] = (char) ('a' + k);
			strcat(sch, "{\"properties\":{\"");
			strcat(sch, name);
			strcat(sch, "\":");
			strcat(ins, "{\"");
			strcat(ins, name);
			strcat(ins, "\":");
			if (k < 6)
			{
				strcat(want, ".");
				strcat(want, name);
			}
		}
		strcat(want, "...");
		strcat(sch, "{\"type\":\"string\"}");
		strcat(ins, "1");
		for (k = 0; k < 8; k++)
		{
			strcat(sch, "}}");
			strcat(ins, "}");
		}
		s = parse(sch);
		i = parse(ins);
		c = s ? ep_schema_compile(s, 64, &err) : NULL;
		CHECK(c && i && !ep_schema_validate(c, i, "$", 64, &err) &&
			  strcmp(err.rule, "type") == 0 && strcmp(err.path, want) == 0,
			  "a long path is cut between segments and ends with ...");
		if (c)
			ep_schema_free(c);
		json_object_put(s);
		json_object_put(i);
	}
	CHECK(ep_format_valid("uuid", "6F1C2A4E-8B9D-4E2F-A1B3-C5D7E9F0A2B4", 36), "uuid is case-insensitive");
	CHECK(!ep_format_valid("nope", "x", 1), "unknown format is invalid");
	return unit_done();
}
