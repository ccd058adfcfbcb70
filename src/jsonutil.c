/*-------------------------------------------------------------------------
 *
 * jsonutil.c
 *	  Helpers between jsonb and json-c, and small format checks.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "pg_jsonc.h"

#include <errno.h>

#include "utils/builtins.h"
#include "utils/jsonb.h"
#include "utils/numeric.h"

#include "evpipe.h"

/* Make a json-c number from a jsonb numeric, keeping its text. */
static struct json_object *
numeric_to_jsonc(Numeric num)
{
	char	   *s = DatumGetCString(DirectFunctionCall1(numeric_out,
														NumericGetDatum(num)));
	struct json_object *o;

	if (strpbrk(s, ".eE") == NULL)
	{
		char	   *end;
		long long	ll;

		errno = 0;
		ll = strtoll(s, &end, 10);
		if (errno == 0 && *end == '\0')
		{
			o = json_object_new_int64((int64_t) ll);
			pfree(s);
			return o;
		}
	}
	o = json_object_new_double_s(strtod(s, NULL), s);
	pfree(s);
	return o;
}

/* Make a json-c scalar from a jsonb scalar. */
static struct json_object *
scalar_to_jsonc(JsonbValue *v)
{
	switch (v->type)
	{
		case jbvNull:
			return NULL;
		case jbvBool:
			return json_object_new_boolean(v->val.boolean ? 1 : 0);
		case jbvNumeric:
			return numeric_to_jsonc(v->val.numeric);
		case jbvString:
			return json_object_new_string_len(v->val.string.val,
											  v->val.string.len);
		default:
			return NULL;
	}
}

/*
 * Convert a jsonb container to a json-c tree, iteratively (no recursion on
 * the input's depth). Returns NULL with *depth_exceeded set when the input
 * nests deeper than max_depth; raises an error when memory runs out. The
 * caller owns the result (json_object_put).
 */
struct json_object *
evpipe_jsonb_to_jsonc(JsonbContainer *container, int max_depth,
					  int *depth_exceeded)
{
	struct json_object *volatile root = NULL;
	struct json_object **stack;
	int			depth = 0;
	char	   *volatile key = NULL;

	*depth_exceeded = 0;
	stack = palloc(sizeof(struct json_object *) * (max_depth + 2));

	PG_TRY();
	{
		JsonbIterator *it = JsonbIteratorInit(container);
		JsonbValue	v;
		JsonbIteratorToken tok;
		bool		raw_scalar = false;

		while ((tok = JsonbIteratorNext(&it, &v, false)) != WJB_DONE)
		{
			struct json_object *o = NULL;
			bool		push = false;

			switch (tok)
			{
				case WJB_BEGIN_ARRAY:
					if (v.val.array.rawScalar)
					{
						raw_scalar = true;
						continue;
					}
					o = json_object_new_array();
					push = true;
					break;
				case WJB_BEGIN_OBJECT:
					o = json_object_new_object();
					push = true;
					break;
				case WJB_KEY:
					key = pnstrdup(v.val.string.val, v.val.string.len);
					continue;
				case WJB_VALUE:
				case WJB_ELEM:
					o = scalar_to_jsonc(&v);
					/* json-c represents null as a NULL pointer */
					if (o == NULL && v.type != jbvNull)
						ereport(ERROR,
								(errcode(ERRCODE_OUT_OF_MEMORY),
								 errmsg("out of memory converting an event to JSON")));
					break;
				case WJB_END_ARRAY:
				case WJB_END_OBJECT:
					if (raw_scalar)
						continue;
					depth--;
					continue;
				default:
					continue;
			}
			if (o == NULL && push)
				ereport(ERROR,
						(errcode(ERRCODE_OUT_OF_MEMORY),
						 errmsg("out of memory converting an event to JSON")));
			if (raw_scalar || depth == 0)
				root = o;
			else if (json_object_is_type(stack[depth - 1], json_type_array))
			{
				if (json_object_array_add(stack[depth - 1], o) != 0)
				{
					json_object_put(o);
					ereport(ERROR,
							(errcode(ERRCODE_OUT_OF_MEMORY),
							 errmsg("out of memory converting an event to JSON")));
				}
			}
			else
			{
				if (json_object_object_add(stack[depth - 1], key, o) != 0)
				{
					json_object_put(o);
					ereport(ERROR,
							(errcode(ERRCODE_OUT_OF_MEMORY),
							 errmsg("out of memory converting an event to JSON")));
				}
				pfree(key);
				key = NULL;
			}
			if (push)
			{
				if (depth >= max_depth)
				{
					*depth_exceeded = 1;
					break;
				}
				stack[depth++] = o;
			}
		}
	}
	PG_CATCH();
	{
		if (root != NULL)
			json_object_put(root);
		PG_RE_THROW();
	}
	PG_END_TRY();

	pfree(stack);
	if (*depth_exceeded)
	{
		json_object_put(root);
		return NULL;
	}
	return root;
}

/* Look up a member of a jsonb object; NULL if absent. */
JsonbValue *
evpipe_jsonb_get(JsonbContainer *container, const char *key)
{
	JsonbValue	k;

	k.type = jbvString;
	k.val.string.val = (char *) key;
	k.val.string.len = strlen(key);
	return findJsonbValueFromContainer(container, JB_FOBJECT, &k);
}

/* eventId: 1-128 characters from [A-Za-z0-9._:-] (UUIDs qualify). */
bool
evpipe_valid_event_id(const char *s, int len)
{
	int			i;

	if (len < 1 || len > EVPIPE_MAX_EVENT_ID_LEN)
		return false;
	for (i = 0; i < len; i++)
	{
		char		c = s[i];

		if (!((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') ||
			  (c >= '0' && c <= '9') || c == '.' || c == '_' || c == ':' ||
			  c == '-'))
			return false;
	}
	return true;
}

/* Whether s[0..n) are lower-case hex digits, not all zero. */
static bool
lower_hex_nonzero(const char *s, int n)
{
	bool		nonzero = false;
	int			i;

	for (i = 0; i < n; i++)
	{
		if (!((s[i] >= '0' && s[i] <= '9') || (s[i] >= 'a' && s[i] <= 'f')))
			return false;
		if (s[i] != '0')
			nonzero = true;
	}
	return nonzero;
}

/*
 * W3C traceparent: version-traceid-parentid-flags, lower-case hex; version
 * ff is invalid; version 00 is exactly 55 characters; trace and parent ids
 * are not all zeros.
 */
bool
evpipe_valid_traceparent(const char *s, int len)
{
	if (len < 55)
		return false;
	if (!((s[0] >= '0' && s[0] <= '9') || (s[0] >= 'a' && s[0] <= 'f')) ||
		!((s[1] >= '0' && s[1] <= '9') || (s[1] >= 'a' && s[1] <= 'f')))
		return false;
	if (s[0] == 'f' && s[1] == 'f')
		return false;
	if (s[0] == '0' && s[1] == '0' && len != 55)
		return false;
	if (len > 55 && s[55] != '-')
		return false;
	if (s[2] != '-' || s[35] != '-' || s[52] != '-')
		return false;
	if (!lower_hex_nonzero(s + 3, 32) || !lower_hex_nonzero(s + 36, 16))
		return false;
	if (!((s[53] >= '0' && s[53] <= '9') || (s[53] >= 'a' && s[53] <= 'f')) ||
		!((s[54] >= '0' && s[54] <= '9') || (s[54] >= 'a' && s[54] <= 'f')))
		return false;
	return true;
}
