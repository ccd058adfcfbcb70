/* libFuzzer: schema text, a newline or NUL, instance text. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <json-c/json.h>

#include "jsonschema.h"

static struct json_object *
parse(const char *s, size_t len)
{
	struct json_tokener *tok = json_tokener_new_ex(200);
	struct json_object *o;

	if (tok == NULL)
		return NULL;
	o = json_tokener_parse_ex(tok, s, (int) len);
	if (json_tokener_get_error(tok) != json_tokener_success)
	{
		json_object_put(o);
		o = NULL;
	}
	json_tokener_free(tok);
	return o;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char	   *buf = malloc(size + 2);
	size_t		split = 0;
	struct json_object *schema;
	struct json_object *inst;
	EpSchemaError err;

	if (buf == NULL)
		return 0;
	memcpy(buf, data, size);
	buf[size] = '\0';
	buf[size + 1] = '\0';
	while (split < size && buf[split] != '\n' && buf[split] != '\0')
		split++;
	buf[split] = '\0';
	schema = parse(buf, split + 1);
	inst = split < size ? parse(buf + split + 1, size - split) : NULL;
	if (schema)
	{
		EpSchema   *c = ep_schema_compile(schema, 32, &err);

		if (c)
		{
			ep_schema_validate(c, inst, "$.payload", 32, &err);
			ep_schema_free(c);
		}
	}
	if (inst)
	{
		ep_json_equal(inst, inst);
		ep_format_valid("date-time", buf, split);
		ep_format_valid("email", buf, split);
		ep_format_valid("uuid", buf, split);
	}
	json_object_put(schema);
	json_object_put(inst);
	free(buf);
	return 0;
}
