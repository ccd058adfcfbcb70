/*-------------------------------------------------------------------------
 *
 * validate.c
 *	  The JSON Schema validator's SQL face: evpipe._check_schema() refuses
 *	  a schema the validator cannot compile (register_event_type calls it),
 *	  evpipe.validate() checks any document against any schema and answers
 *	  the first error as {path, rule, message}, as ingest would report it.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "pg_jsonc.h"

#include "fmgr.h"
#include "utils/builtins.h"
#include "utils/jsonb.h"

#include "evpipe.h"
#include "ingest.h"
#include "jsonschema.h"

PG_FUNCTION_INFO_V1(evpipe_check_schema);
PG_FUNCTION_INFO_V1(evpipe_validate);

/* Compile a schema or raise the error register_event_type shows. */
static EpSchema *
compile_or_raise(Jsonb *schema)
{
	struct json_object *obj;
	EpSchema   *compiled;
	EpSchemaError err;
	int			too_deep = 0;

	obj = ep_ingest_schema_to_jsonc(schema, &too_deep);
	if (too_deep)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("invalid JSON Schema: it nests too deeply"),
				 errdetail("Path $, rule \"depth\": deeper than evpipe.max_depth (%d) schema levels.",
						   evpipe_max_depth)));
	memset(&err, 0, sizeof(err));
	compiled = ep_schema_compile(obj, evpipe_max_depth, &err);
	if (obj)
		json_object_put(obj);
	if (compiled == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("invalid JSON Schema: %s", err.message),
				 errdetail_internal("Path %s, rule \"%s\".", err.path, err.rule)));
	return compiled;
}

/* SQL: evpipe._check_schema(schema jsonb): raise if the schema is invalid. */
Datum
evpipe_check_schema(PG_FUNCTION_ARGS)
{
	ep_schema_free(compile_or_raise(PG_GETARG_JSONB_P(0)));
	PG_RETURN_VOID();
}

/* The answer {path, rule, message} of one error, as jsonb. */
static Jsonb *
error_object(const char *path, const char *rule, const char *message)
{
	JsonbParseState *ps = NULL;

	pushJsonbValue(&ps, WJB_BEGIN_OBJECT, NULL);
	ep_ingest_push_str(&ps, "path", path);
	ep_ingest_push_str(&ps, "rule", rule);
	ep_ingest_push_str(&ps, "message", message);
	return JsonbValueToJsonb(pushJsonbValue(&ps, WJB_END_OBJECT, NULL));
}

/*
 * SQL: evpipe.validate(schema jsonb, document jsonb): NULL when the
 * document is valid, else the first error with paths from $.
 */
Datum
evpipe_validate(PG_FUNCTION_ARGS)
{
	Jsonb	   *schema = PG_GETARG_JSONB_P(0);
	Jsonb	   *doc = PG_GETARG_JSONB_P(1);
	EpSchema   *compiled;
	struct json_object *obj;
	EpSchemaError err;
	int			too_deep = 0;
	bool		ok;

	compiled = compile_or_raise(schema);
	obj = evpipe_jsonb_to_jsonc(&doc->root, evpipe_max_depth, &too_deep);
	if (too_deep)
	{
		char		msg[64];

		ep_schema_free(compiled);
		snprintf(msg, sizeof(msg), "nesting deeper than %d levels", evpipe_max_depth);
		PG_RETURN_JSONB_P(error_object("$", "depth", msg));
	}
	memset(&err, 0, sizeof(err));
	ok = ep_schema_validate(compiled, obj, "$", evpipe_max_depth, &err);
	if (obj)
		json_object_put(obj);
	ep_schema_free(compiled);
	if (ok)
		PG_RETURN_NULL();
	PG_RETURN_JSONB_P(error_object(err.path, err.rule, err.message));
}
