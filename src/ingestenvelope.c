/*-------------------------------------------------------------------------
 *
 * ingestenvelope.c
 *	  The checks of an event's envelope, and its normalisation: members,
 *	  eventId, source, payload, timestamp and the optional members; the
 *	  events of mapped sources rebuilt as envelopes; the source's role
 *	  bindings and ingest limit; the payload against its type's schema.
 *	  Rejections (SQLSTATE, message, path and rule), the traceparent of an
 *	  event that has none, and the jsonb builders used for envelopes and
 *	  answers.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "pg_jsonc.h"

#include "mb/pg_wchar.h"
#include "miscadmin.h"
#include "utils/acl.h"
#include "utils/builtins.h"
#include "utils/jsonb.h"
#include "utils/timestamp.h"

#include "evpipe.h"
#include "ingest.h"
#include "jsonschema.h"
#include "mapping.h"
#include "metrics.h"
#include "ratelimit.h"

#define ERRCODE_EVPIPE_TOO_MANY MAKE_SQLSTATE('P', 'T', '4', '2', '9')

/* The event id being ingested, for rejection logs. */
const char *ep_ingest_current_event_id = NULL;
const char *ep_ingest_current_source = NULL;

/* The position of the event in evpipe.ingest_batch's array, or -1. */
int			ep_ingest_current_batch_index = -1;

/*
 * Raise an ingest rejection: SQLSTATE, short message, and a detail naming the
 * JSON path and the rule. Logs a structured line first when
 * evpipe.log_rejections is on.
 */
void
pg_attribute_noreturn()
ep_ingest_reject(int sqlstate, const char *path, const char *rule, const char *extra,
				 const char *hint, const char *fmt,...)
{
	char		msg[512];
	va_list		ap;

	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);

	/* in a batch, paths start at the event's place in the array */
	if (ep_ingest_current_batch_index >= 0 && path[0] == '$')
		path = psprintf("$[%d]%s", ep_ingest_current_batch_index, path + 1);

	ep_metric_add(EP_MK_REJECT, rule, NULL, 0, 1);
	if (evpipe_log_rejections)
		ereport(LOG,
				(errmsg("evpipe event=ingest_rejected sqlstate=%s event_id=%s source=%s path=%s rule=%s reason=\"%s\"",
						unpack_sql_state(sqlstate),
						ep_ingest_current_event_id ? ep_ingest_current_event_id : "-",
						ep_ingest_current_source ? ep_ingest_current_source : "-",
						path, rule, msg),
				 errhidestmt(true)));
	ereport(ERROR,
			(errcode(sqlstate),
			 errmsg_internal("%s", msg),
			 extra ? errdetail_internal("Path %s, rule \"%s\": %s.", path, rule, extra)
			 : errdetail_internal("Path %s, rule \"%s\".", path, rule),
			 hint ? errhint("%s", hint) : 0));
}

/*
 * A member name for a message: in quotes, JSON-escaped as in paths (an
 * operator may map any name), and cut as paths cut it.
 */
static char *
quoted_name(const char *name)
{
	char		buf[EP_PATH_NAME_MAX * 6 + 8];

	ep_json_excerpt(buf, sizeof(buf), name, strlen(name), EP_PATH_NAME_MAX);
	return psprintf("\"%s\"", buf);
}

/* A jsonb string member as a C string, or a rejection naming its path. */
static char *
string_member(JsonbValue *v, const char *path, const char *name)
{
	if (v->type != jbvString)
		ep_ingest_reject(ERRCODE_INVALID_PARAMETER_VALUE, path, "type", NULL, NULL,
						 "member %s must be a string", quoted_name(name));
	return pnstrdup(v->val.string.val, v->val.string.len);
}

/* Whether a string has a control character (U+0000-U+001F, U+007F). */
static bool
has_control(const char *s)
{
	for (; *s; s++)
		if ((unsigned char) *s < 0x20 || *s == 0x7f)
			return true;
	return false;
}

/* Number of Unicode characters in a UTF-8 string. */
static int
char_count(const char *s)
{
	return pg_mbstrlen(s);
}

/* Parse the timestamp member: RFC 3339 (ISO-8601 with a zone). */
static TimestampTz
parse_timestamp(const char *s, const char *path)
{
	if (!ep_format_valid("date-time", s, strlen(s)) ||
		strncmp(s, "0000", 4) == 0)
		ep_ingest_reject(ERRCODE_INVALID_DATETIME_FORMAT, path, "format", NULL,
						 "Use ISO-8601 with a zone, for example 2026-11-21T10:00:00Z.",
						 "member \"timestamp\" is not an ISO-8601 timestamp with a zone");
	return DatumGetTimestampTz(DirectFunctionCall3(timestamptz_in,
												   CStringGetDatum(s),
												   ObjectIdGetDatum(InvalidOid),
												   Int32GetDatum(-1)));
}

/* Push a string (or null) member onto a jsonb being built. */
void
ep_ingest_push_str(JsonbParseState **ps, const char *key, const char *val)
{
	JsonbValue	k;
	JsonbValue	v;

	k.type = jbvString;
	k.val.string.val = (char *) key;
	k.val.string.len = strlen(key);
	pushJsonbValue(ps, WJB_KEY, &k);
	if (val == NULL)
		v.type = jbvNull;
	else
	{
		v.type = jbvString;
		v.val.string.val = (char *) val;
		v.val.string.len = strlen(val);
	}
	pushJsonbValue(ps, WJB_VALUE, &v);
}

/* Push a member's key onto a jsonb being built. */
void
ep_ingest_push_key(JsonbParseState **ps, const char *key)
{
	JsonbValue	k;

	k.type = jbvString;
	k.val.string.val = (char *) key;
	k.val.string.len = strlen(key);
	pushJsonbValue(ps, WJB_KEY, &k);
}

/* Push a boolean member onto a jsonb being built. */
void
ep_ingest_push_bool(JsonbParseState **ps, const char *key, bool b)
{
	JsonbValue	v;

	ep_ingest_push_key(ps, key);
	v.type = jbvBool;
	v.val.boolean = b;
	pushJsonbValue(ps, WJB_VALUE, &v);
}

/* Push an integer member onto a jsonb being built. */
void
ep_ingest_push_int(JsonbParseState **ps, const char *key, int i)
{
	JsonbValue	v;

	ep_ingest_push_key(ps, key);
	v.type = jbvNumeric;
	v.val.numeric = DatumGetNumeric(DirectFunctionCall1(int4_numeric,
														Int32GetDatum(i)));
	pushJsonbValue(ps, WJB_VALUE, &v);
}

/* Push an array of strings as a member. */
void
ep_ingest_push_str_array(JsonbParseState **ps, const char *key, List *items)
{
	ListCell   *lc;

	ep_ingest_push_key(ps, key);
	pushJsonbValue(ps, WJB_BEGIN_ARRAY, NULL);
	foreach(lc, items)
	{
		JsonbValue	v;
		char	   *s = lfirst(lc);

		v.type = jbvString;
		v.val.string.val = s;
		v.val.string.len = strlen(s);
		pushJsonbValue(ps, WJB_ELEM, &v);
	}
	pushJsonbValue(ps, WJB_END_ARRAY, NULL);
}

/*
 * Normalise the event of a mapped source: eventId and timestamp from the
 * configured members, eventType and source from the registration, every
 * other member becomes the payload.
 */
static Jsonb *
normalise_mapped(Jsonb *raw, EpSourceEntry *src, EpEvent *ev)
{
	JsonbParseState *ps = NULL;
	JsonbIterator *it;
	JsonbValue	k;
	JsonbValue	v;
	JsonbIteratorToken tok;
	JsonbValue *idv;
	JsonbValue *tsv;
	JsonbValue *res;
	char	   *id;
	char	   *ts;
	long		idlen;
	char		idpath[EP_ERR_PATH_LEN];
	char		tspath[EP_ERR_PATH_LEN];

	/* $.name, or $["name"] for a name that is not an identifier */
	ep_mapped_path(idpath, sizeof(idpath), src->id_field);
	ep_mapped_path(tspath, sizeof(tspath), src->ts_field);
	ev->id_path = pstrdup(idpath);
	ev->ts_path = pstrdup(tspath);
	ev->payload_path = "$";

	idv = evpipe_jsonb_get(&raw->root, src->id_field);
	if (idv == NULL)
		ep_ingest_reject(ERRCODE_SQL_JSON_MEMBER_NOT_FOUND, idpath, "required", NULL,
						 NULL, "member %s (the eventId of source \"%s\") is missing",
						 quoted_name(src->id_field), src->source);
	/* a string, or an integer as numeric_out writes it (never longer) */
	if (idv->type == jbvNumeric)
	{
		char	   *num = DatumGetCString(DirectFunctionCall1(numeric_out,
															  NumericGetDatum(idv->val.numeric)));
		size_t		len = strlen(num);

		id = palloc(len + 1);
		idlen = ep_mapped_id(EP_JSON_NUMBER, num, len, id, len + 1);
	}
	else if (idv->type == jbvString)
	{
		id = palloc(idv->val.string.len + 1);
		idlen = ep_mapped_id(EP_JSON_STRING, idv->val.string.val,
							 idv->val.string.len, id, idv->val.string.len + 1);
	}
	else
	{
		id = NULL;
		idlen = ep_mapped_id(EP_JSON_OTHER, NULL, 0, NULL, 0);
	}
	if (idlen < 0)
		ep_ingest_reject(ERRCODE_INVALID_PARAMETER_VALUE, idpath, "type", NULL, NULL,
						 "member %s must be a string or an integer",
						 quoted_name(src->id_field));
	ep_ingest_current_event_id = id;

	tsv = evpipe_jsonb_get(&raw->root, src->ts_field);
	if (tsv == NULL)
		ep_ingest_reject(ERRCODE_SQL_JSON_MEMBER_NOT_FOUND, tspath, "required", NULL,
						 NULL, "member %s (the timestamp of source \"%s\") is missing",
						 quoted_name(src->ts_field), src->source);
	ts = string_member(tsv, tspath, src->ts_field);

	pushJsonbValue(&ps, WJB_BEGIN_OBJECT, NULL);
	ep_ingest_push_str(&ps, "eventId", id);
	ep_ingest_push_str(&ps, "eventType", src->event_type);
	ep_ingest_push_str(&ps, "source", src->source);
	ep_ingest_push_str(&ps, "timestamp", ts);
	ep_ingest_push_key(&ps, "payload");
	pushJsonbValue(&ps, WJB_BEGIN_OBJECT, NULL);
	it = JsonbIteratorInit(&raw->root);
	while ((tok = JsonbIteratorNext(&it, &k, true)) != WJB_DONE)
	{
		if (tok != WJB_KEY)
			continue;
		tok = JsonbIteratorNext(&it, &v, true);
		if (ep_mapped_member(k.val.string.val, k.val.string.len,
							 src->id_field, src->ts_field) != EP_MAPPED_PAYLOAD)
			continue;
		pushJsonbValue(&ps, WJB_KEY, &k);
		pushJsonbValue(&ps, WJB_VALUE, &v);
	}
	pushJsonbValue(&ps, WJB_END_OBJECT, NULL);
	res = pushJsonbValue(&ps, WJB_END_OBJECT, NULL);
	return JsonbValueToJsonb(res);
}

/* Reject unless the caller may ingest as this source. */
static void
check_source_allowed(EpSourceEntry *src, Oid caller)
{
	int			i;

	if (src == NULL || src->nroles == 0 || superuser_arg(caller))
		return;
	for (i = 0; i < src->nroles; i++)
	{
		Oid			r = get_role_oid(src->roles[i], true);

		if (OidIsValid(r) && has_privs_of_role(caller, r))
			return;
	}
	ep_metric_add(EP_MK_REJECT, "permission", NULL, 0, 1);
	if (evpipe_log_rejections)
		ereport(LOG,
				(errmsg("evpipe event=ingest_rejected sqlstate=42501 event_id=%s source=%s reason=\"source bound to other roles\"",
						ep_ingest_current_event_id ? ep_ingest_current_event_id : "-", src->source),
				 errhidestmt(true)));
	ereport(ERROR,
			(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
			 errmsg("permission denied to ingest as source \"%s\"", src->source),
			 errdetail("The source is bound to roles that the current role is not a member of."),
			 errhint("An evpipe_admin can allow it with evpipe.bind_source().")));
}

/* Refuse with PT429 (PostgREST: 429) when a source is over its limit. */
static void
check_source_limit(EpSourceEntry *src)
{
	int64		offset;

	if (src == NULL || src->limit_per_sec <= 0 || src->limit_slot < 0)
		return;
	if (ep_rate_reserve(src->limit_slot, src->limit_per_sec, src->limit_burst,
						1, 0, &offset) == 1)
		return;
	ep_metric_add(EP_MK_THROTTLE, src->source, NULL, 0, 1);
	if (evpipe_log_rejections)
		ereport(LOG,
				(errmsg("evpipe event=ingest_throttled event_id=%s source=%s limit_per_sec=%g",
						ep_ingest_current_event_id ? ep_ingest_current_event_id : "-", src->source,
						src->limit_per_sec),
				 errhidestmt(true)));
	ereport(ERROR,
			(errcode(ERRCODE_EVPIPE_TOO_MANY),
			 errmsg("too many events from source \"%s\"", src->source),
			 errdetail("The source is limited to %g events per second (burst %d).",
					   src->limit_per_sec, src->limit_burst),
			 errhint("Retry later; PostgREST answers 429.")));
}

/* A fresh W3C traceparent for an event that arrives without one. */
char *
ep_ingest_new_traceparent(void)
{
	uint8		r[24];
	char	   *out = palloc(56);
	int			i;
	static const char hex[] = "0123456789abcdef";

	if (!pg_strong_random(r, sizeof(r)))
		return NULL;
	r[0] |= 1;					/* ids are never all zeros */
	r[16] |= 1;
	memcpy(out, "00-", 3);
	for (i = 0; i < 16; i++)
	{
		out[3 + 2 * i] = hex[r[i] >> 4];
		out[4 + 2 * i] = hex[r[i] & 15];
	}
	out[35] = '-';
	for (i = 0; i < 8; i++)
	{
		out[36 + 2 * i] = hex[r[16 + i] >> 4];
		out[37 + 2 * i] = hex[r[16 + i] & 15];
	}
	memcpy(out + 52, "-01", 4);
	return out;
}

/*
 * Validate and normalise an event; fills *ev. The first failure raises an
 * error (class 22, or 42501 for a source bound to other roles).
 */
void
ep_ingest_prepare_event(Jsonb *raw, const char *source_arg, Oid caller, EpEvent *ev)
{
	static const char *const members[] = {
		"eventId", "eventType", "source", "payload", "timestamp",
		"correlationId", "priority", "traceparent"};
	JsonbValue *vals[lengthof(members)];
	Jsonb	   *env = raw;
	JsonbIterator *it;
	JsonbValue	k;
	JsonbValue	v;
	JsonbIteratorToken tok;
	EpSourceEntry *src = NULL;
	struct json_object *payload;
	EpSchemaError err;
	int			too_deep;
	int			i;
	char	   *timestamp;

	memset(ev, 0, sizeof(*ev));
	ev->id_path = "$.eventId";
	ev->ts_path = "$.timestamp";
	ev->payload_path = "$.payload";
	ep_ingest_current_event_id = NULL;
	ep_ingest_current_source = source_arg;

	if (JB_ROOT_IS_SCALAR(raw) || !JB_ROOT_IS_OBJECT(raw))
		ep_ingest_reject(ERRCODE_SQL_JSON_OBJECT_NOT_FOUND, "$", "type", NULL,
						 "Send one event as a JSON object.",
						 "event must be a JSON object");

	/* size of the JSON text; text is at most 6 bytes per binary byte */
	if ((int64) VARSIZE(raw) * 6 + 64 > evpipe_max_event_bytes)
	{
		char	   *text = JsonbToCString(NULL, &raw->root, VARSIZE(raw));
		size_t		len = strlen(text);

		pfree(text);
		if (len > (size_t) evpipe_max_event_bytes)
		{
			char		extra[96];

			snprintf(extra, sizeof(extra), "%zu bytes, the limit is %d",
					 len, evpipe_max_event_bytes);
			ep_ingest_reject(ERRCODE_STRING_DATA_RIGHT_TRUNCATION, "$", "maxBytes", extra,
							 "The limit is evpipe.max_event_bytes.", "event is too large");
		}
	}

	if (source_arg != NULL)
	{
		src = ep_ingest_find_source(source_arg);
		if (src == NULL)
			ep_ingest_reject(ERRCODE_INVALID_PARAMETER_VALUE, "(argument source)", "registered",
							 NULL, "Register it with evpipe.register_source().",
							 "source \"%s\" is not registered", source_arg);
		if (src->event_type != NULL)
			env = normalise_mapped(raw, src, ev);
	}

	/* members: unknown ones first, then required ones */
	memset(vals, 0, sizeof(vals));
	it = JsonbIteratorInit(&env->root);
	while ((tok = JsonbIteratorNext(&it, &k, true)) != WJB_DONE)
	{
		bool		known = false;

		if (tok != WJB_KEY)
			continue;
		tok = JsonbIteratorNext(&it, &v, true);
		for (i = 0; i < lengthof(members); i++)
		{
			if (k.val.string.len == strlen(members[i]) &&
				memcmp(k.val.string.val, members[i], k.val.string.len) == 0)
			{
				vals[i] = palloc(sizeof(JsonbValue));
				*vals[i] = v;
				known = true;
				break;
			}
		}
		if (!known)
		{
			char	   *name = pnstrdup(k.val.string.val, k.val.string.len);
			char		seg[EP_ERR_PATH_LEN];

			ep_path_member(seg, sizeof(seg), name, EP_PATH_NAME_MAX);
			ep_ingest_reject(ERRCODE_INVALID_PARAMETER_VALUE, psprintf("$%s", seg),
							 "additionalProperties", NULL,
							 "Envelope members are eventId, eventType, source, payload, timestamp, correlationId, priority and traceparent.",
							 "unknown member %s in event", quoted_name(name));
		}
	}
	for (i = 0; i < 5; i++)
	{
		if (vals[i] == NULL)
		{
			char		path[64];

			snprintf(path, sizeof(path), "$.%s", members[i]);
			ep_ingest_reject(ERRCODE_SQL_JSON_MEMBER_NOT_FOUND, path, "required", NULL,
							 NULL, "member \"%s\" is missing", members[i]);
		}
	}

	/* eventId */
	if (vals[0]->type != jbvString)
		ep_ingest_reject(ERRCODE_INVALID_PARAMETER_VALUE, ev->id_path, "type", NULL, NULL,
						 "member \"eventId\" must be a string");
	if (!evpipe_valid_event_id(vals[0]->val.string.val, vals[0]->val.string.len))
		ep_ingest_reject(ERRCODE_INVALID_TEXT_REPRESENTATION, ev->id_path, "pattern",
						 "1-128 characters from [A-Za-z0-9._:-]",
						 "A UUID is a good eventId.", "member \"eventId\" is not a valid event id");
	ev->event_id = pnstrdup(vals[0]->val.string.val, vals[0]->val.string.len);
	ep_ingest_current_event_id = ev->event_id;

	/* eventType: a string here, registration checked below */
	ev->event_type = string_member(vals[1], "$.eventType", "eventType");

	/* source */
	ev->source = string_member(vals[2], "$.source", "source");
	if (ev->source[0] == '\0' || char_count(ev->source) > 128 ||
		has_control(ev->source))
		ep_ingest_reject(ERRCODE_INVALID_PARAMETER_VALUE, "$.source", "pattern",
						 "1-128 characters, no control characters", NULL,
						 "member \"source\" is not a valid source name");
	ep_ingest_current_source = ev->source;
	if (source_arg != NULL && strcmp(source_arg, ev->source) != 0)
		ep_ingest_reject(ERRCODE_INVALID_PARAMETER_VALUE, "$.source", "const", NULL,
						 "Leave the source argument out, or make it match the envelope.",
						 "member \"source\" does not match the source argument \"%s\"",
						 source_arg);

	/* payload */
	if (vals[3]->type != jbvBinary || !JsonContainerIsObject(vals[3]->val.binary.data))
		ep_ingest_reject(ERRCODE_INVALID_PARAMETER_VALUE, ev->payload_path, "type", NULL,
						 NULL, "member \"payload\" must be a JSON object");

	/* timestamp */
	timestamp = string_member(vals[4], ev->ts_path, "timestamp");
	ev->ts = parse_timestamp(timestamp, ev->ts_path);

	/* optional members */
	if (vals[5] != NULL)
	{
		ev->correlation_id = string_member(vals[5], "$.correlationId",
										   "correlationId");
		if (ev->correlation_id[0] == '\0' ||
			char_count(ev->correlation_id) > 128 ||
			has_control(ev->correlation_id))
			ep_ingest_reject(ERRCODE_INVALID_PARAMETER_VALUE, "$.correlationId", "pattern",
							 "1-128 characters, no control characters", NULL,
							 "member \"correlationId\" is not valid");
	}
	if (vals[6] != NULL)
	{
		const char *p;

		ev->priority = string_member(vals[6], "$.priority", "priority");
		for (p = ev->priority; *p; p++)
			if (!isalnum((unsigned char) *p) && *p != '_' && *p != '-')
				break;
		if (*p != '\0' || p == ev->priority || p - ev->priority > 32)
			ep_ingest_reject(ERRCODE_INVALID_PARAMETER_VALUE, "$.priority", "pattern",
							 "1-32 characters from [A-Za-z0-9_-]", NULL,
							 "member \"priority\" is not valid");
	}
	if (vals[7] != NULL)
	{
		ev->traceparent = string_member(vals[7], "$.traceparent", "traceparent");
		if (!evpipe_valid_traceparent(ev->traceparent, strlen(ev->traceparent)))
			ep_ingest_reject(ERRCODE_INVALID_PARAMETER_VALUE, "$.traceparent", "format",
							 "W3C trace context: 00-<32 hex>-<16 hex>-<2 hex>",
							 NULL, "member \"traceparent\" is not a valid W3C traceparent");
	}

	/* the source may be bound to roles */
	if (src == NULL)
		src = ep_ingest_find_source(ev->source);
	ev->src = src;
	check_source_allowed(src, caller);
	check_source_limit(src);

	/* eventType registered and enabled */
	ev->type = ep_ingest_find_type(ev->event_type);
	if (ev->type == NULL)
		ep_ingest_reject(ERRCODE_INVALID_PARAMETER_VALUE, "$.eventType", "registered",
						 NULL, "An evpipe_admin registers types with evpipe.register_event_type().",
						 "event type \"%s\" is not registered",
						 pnstrdup(ev->event_type, Min(strlen(ev->event_type), 128)));
	if (!ev->type->enabled)
		ep_ingest_reject(ERRCODE_INVALID_PARAMETER_VALUE, "$.eventType", "registered",
						 NULL, NULL, "event type \"%s\" is disabled", ev->event_type);

	/* payload against the type's schema */
	payload = evpipe_jsonb_to_jsonc(vals[3]->val.binary.data, evpipe_max_depth,
									&too_deep);
	if (payload == NULL)
	{
		char		extra[64];

		snprintf(extra, sizeof(extra), "nesting deeper than %d levels",
				 evpipe_max_depth);
		ep_ingest_reject(ERRCODE_INVALID_PARAMETER_VALUE, ev->payload_path, "depth", extra,
						 "The limit is evpipe.max_depth.", "event payload nests too deeply");
	}
	memset(&err, 0, sizeof(err));
	if (!ep_schema_validate(ep_ingest_type_schema(ev->type), payload, ev->payload_path,
							evpipe_max_depth, &err))
	{
		json_object_put(payload);
		ep_ingest_reject(ERRCODE_INVALID_PARAMETER_VALUE, err.path, err.rule, err.message,
						 NULL, "event payload does not match the schema of \"%s\" version %d",
						 ev->event_type, ev->type->version);
	}
	json_object_put(payload);

	ev->envelope = env;
}
