/*-------------------------------------------------------------------------
 *
 * jsonschema.h
 *	  A JSON Schema (draft 2020-12 subset) validator on json-c. No
 *	  PostgreSQL dependency, so it can be unit-tested and fuzzed alone.
 *
 *-------------------------------------------------------------------------
 */
#ifndef EVPIPE_JSONSCHEMA_H
#define EVPIPE_JSONSCHEMA_H

#include <stdbool.h>
#include <stddef.h>

struct json_object;

#define EP_ERR_PATH_LEN 256
#define EP_ERR_RULE_LEN 64
#define EP_ERR_MSG_LEN 256

/* The first error found: where, which keyword, and what. */
typedef struct EpSchemaError
{
	char		path[EP_ERR_PATH_LEN];	/* e.g. $.payload.items[2].name */
	char		rule[EP_ERR_RULE_LEN];	/* keyword, "schema" or "depth" */
	char		message[EP_ERR_MSG_LEN];	/* short, lower-case */
} EpSchemaError;

typedef struct EpSchema EpSchema;	/* compiled, immutable, malloc'd */

/*
 * Compile a schema; NULL with *err filled if it is invalid, uses an
 * unsupported keyword, nests deeper than max_depth, or memory runs out.
 * Keeps no reference to `schema`.
 */
extern EpSchema *ep_schema_compile(struct json_object *schema, int max_depth,
								   EpSchemaError *err);
extern void ep_schema_free(EpSchema *schema);

/*
 * Validate an instance; error paths start with root_path. An instance
 * nesting deeper than max_depth fails with rule "depth".
 */
extern bool ep_schema_validate(const EpSchema *schema,
							   struct json_object *instance,
							   const char *root_path, int max_depth,
							   EpSchemaError *err);

/* Whether s[0..len) is a valid "uuid", "date-time" or "email". */
extern bool ep_format_valid(const char *format, const char *s, size_t len);

/* Deep JSON equality: 1 == 1.0; object member order does not matter. */
extern bool ep_json_equal(struct json_object *a, struct json_object *b);

#endif							/* EVPIPE_JSONSCHEMA_H */
