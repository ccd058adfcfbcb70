/*-------------------------------------------------------------------------
 *
 * ingest.c
 *	  evpipe.ingest(): validate, normalise, dedupe and route one event, and
 *	  write it with its outbox rows in the caller's transaction.
 *	  evpipe.route_explain(): the same decisions, explained, writing nothing.
 *
 *	  Configuration (event types, sources, routes) is cached per backend and
 *	  dropped by a relcache invalidation that a trigger on the configuration
 *	  tables sends at commit.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "pg_jsonc.h"

#include "access/htup_details.h"
#include "access/xact.h"
#include "catalog/namespace.h"
#include "catalog/pg_proc.h"
#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "fmgr.h"
#include "mb/pg_wchar.h"
#include "miscadmin.h"
#include "utils/acl.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/guc.h"
#include "utils/inval.h"
#include "utils/json.h"
#include "utils/jsonb.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/snapmgr.h"
#include "utils/syscache.h"
#include "utils/timestamp.h"

#include "evpipe.h"
#include "jsonschema.h"
#include "mapping.h"
#include "metrics.h"
#include "ratelimit.h"

#define ERRCODE_EVPIPE_TOO_MANY MAKE_SQLSTATE('P', 'T', '4', '2', '9')

PG_FUNCTION_INFO_V1(evpipe_ingest);
PG_FUNCTION_INFO_V1(evpipe_ingest_batch);
PG_FUNCTION_INFO_V1(evpipe_route_explain);
PG_FUNCTION_INFO_V1(evpipe_check_schema);

/* Cached configuration */
typedef struct EpTypeEntry
{
	char	   *name;
	int			version;
	bool		enabled;
	Jsonb	   *schema;
	EpSchema   *compiled;		/* malloc'd by jsonschema.c, built lazily */
} EpTypeEntry;

typedef struct EpSourceEntry
{
	char	   *source;
	double		limit_per_sec;	/* 0: no ingest limit */
	int			limit_burst;
	int			limit_slot;
	char	   *event_type;		/* NULL: no mapping, only role bindings */
	char	   *id_field;
	char	   *ts_field;
	int			nroles;
	char	  **roles;
} EpSourceEntry;

typedef struct EpRouteEntry
{
	int			id;
	char	   *pattern;
	bool		is_prefix;
	int			prefix_len;
	char	   *destination;
	char	   *source;			/* NULL: any */
	char	   *priority;		/* NULL: any */
	bool		enabled;
} EpRouteEntry;

/* A destination that delivers each ordering key in order. */
typedef struct EpOrderEntry
{
	char	   *destination;
	char	   *path;			/* dotted path into the envelope */
} EpOrderEntry;

#define N_CONFIG_RELS 6

static struct
{
	MemoryContext cxt;
	bool		valid;
	int			ntypes;
	EpTypeEntry *types;
	int			nsources;
	EpSourceEntry *sources;
	int			nroutes;
	EpRouteEntry *routes;
	bool		ordering;		/* the schema has outbox.ordering_key (0.2.0) */
	int			norders;
	EpOrderEntry *orders;		/* sorted by destination */
	Oid			relids[N_CONFIG_RELS];
} config;

static bool callback_registered = false;

/* A validated, normalised event */
typedef struct EpEvent
{
	Jsonb	   *envelope;		/* canonical envelope, as stored and sent */
	char	   *event_id;
	char	   *event_type;
	char	   *source;
	TimestampTz ts;
	char	   *correlation_id;
	char	   *priority;
	char	   *traceparent;
	EpTypeEntry *type;
	EpSourceEntry *src;
	const char *id_path;		/* where eventId came from, for messages */
	const char *ts_path;
	const char *payload_path;
} EpEvent;

/* The event id being ingested, for rejection logs. */
static const char *current_event_id = NULL;
static const char *current_source = NULL;

/* The position of the event in evpipe.ingest_batch's array, or -1. */
static int	current_batch_index = -1;

static SPIPlanPtr insert_plan = NULL;
static SPIPlanPtr insert_ordered_plan = NULL;
static SPIPlanPtr existing_plan = NULL;
static SPIPlanPtr existing_dests_plan = NULL;

/* Drop the cached configuration (relcache callback and explicit calls). */
void
evpipe_config_invalidate(void)
{
	config.valid = false;
}

/* Relcache callback: forget the configuration if one of its tables changed. */
static void
config_relcache_cb(Datum arg, Oid relid)
{
	int			i;

	if (!config.valid)
		return;
	if (relid == InvalidOid)
	{
		config.valid = false;
		return;
	}
	for (i = 0; i < N_CONFIG_RELS; i++)
		if (config.relids[i] == relid)
			config.valid = false;
}

/*
 * Raise an ingest rejection: SQLSTATE, short message, and a detail naming the
 * JSON path and the rule. Logs a structured line first when
 * evpipe.log_rejections is on.
 */
static void
pg_attribute_noreturn()
reject(int sqlstate, const char *path, const char *rule, const char *extra,
	   const char *hint, const char *fmt,...)
{
	char		msg[512];
	va_list		ap;

	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);

	/* in a batch, paths start at the event's place in the array */
	if (current_batch_index >= 0 && path[0] == '$')
		path = psprintf("$[%d]%s", current_batch_index, path + 1);

	ep_metric_add(EP_MK_REJECT, rule, NULL, 0, 1);
	if (evpipe_log_rejections)
		ereport(LOG,
				(errmsg("evpipe event=ingest_rejected sqlstate=%s event_id=%s source=%s path=%s rule=%s reason=\"%s\"",
						unpack_sql_state(sqlstate),
						current_event_id ? current_event_id : "-",
						current_source ? current_source : "-",
						path, rule, msg),
				 errhidestmt(true)));
	ereport(ERROR,
			(errcode(sqlstate),
			 errmsg_internal("%s", msg),
			 extra ? errdetail_internal("Path %s, rule \"%s\": %s.", path, rule, extra)
			 : errdetail_internal("Path %s, rule \"%s\".", path, rule),
			 hint ? errhint("%s", hint) : 0));
}

static int
cmp_types(const void *a, const void *b)
{
	return strcmp(((const EpTypeEntry *) a)->name,
				  ((const EpTypeEntry *) b)->name);
}

static int
cmp_sources(const void *a, const void *b)
{
	return strcmp(((const EpSourceEntry *) a)->source,
				  ((const EpSourceEntry *) b)->source);
}

/* Copy a text column of the current SPI row into the config context. */
static char *
spi_text(HeapTuple tup, TupleDesc desc, int col)
{
	char	   *v = SPI_getvalue(tup, desc, col);
	char	   *r;

	if (v == NULL)
		return NULL;
	r = MemoryContextStrdup(config.cxt, v);
	pfree(v);
	return r;
}

/* Run a read-only configuration query; error if it fails. */
static void
spi_config_query(const char *sql)
{
	if (SPI_execute(sql, true, 0) != SPI_OK_SELECT)
		elog(ERROR, "evpipe: configuration query failed: %s", sql);
}

/* Load event types, sources and routes. Requires SPI to be connected. */
static void
config_load(void)
{
	static const char *const relnames[N_CONFIG_RELS] = {
		"event_types", "sources", "source_roles", "routes", "destinations",
		"source_limits"};
	Oid			nsp;
	uint64		i;
	int			j;

	if (!callback_registered)
	{
		CacheRegisterRelcacheCallback(config_relcache_cb, (Datum) 0);
		callback_registered = true;
	}
	if (config.cxt == NULL)
		config.cxt = AllocSetContextCreate(CacheMemoryContext,
										   "evpipe configuration",
										   ALLOCSET_SMALL_SIZES);
	for (j = 0; j < config.ntypes; j++)
		if (config.types[j].compiled)
			ep_schema_free(config.types[j].compiled);
	MemoryContextReset(config.cxt);
	memset(&config.ntypes, 0,
		   sizeof(config) - offsetof(typeof(config), ntypes));

	/* An invalidation arriving while we load makes us load again next time */
	config.valid = true;

	nsp = get_namespace_oid("evpipe", false);
	for (j = 0; j < N_CONFIG_RELS; j++)
		config.relids[j] = get_relname_relid(relnames[j], nsp);

	/*
	 * Read with the latest snapshot, not the statement's: an invalidation
	 * consumed before this point is for a commit this snapshot sees; one
	 * consumed later clears config.valid again.
	 */
	PushActiveSnapshot(GetLatestSnapshot());

	spi_config_query("SELECT DISTINCT ON (event_type) event_type, version, enabled, schema "
					 "FROM evpipe.event_types ORDER BY event_type, version DESC");
	config.ntypes = (int) SPI_processed;
	config.types = MemoryContextAllocZero(config.cxt,
										  sizeof(EpTypeEntry) * (SPI_processed + 1));
	for (i = 0; i < SPI_processed; i++)
	{
		HeapTuple	tup = SPI_tuptable->vals[i];
		TupleDesc	desc = SPI_tuptable->tupdesc;
		EpTypeEntry *t = &config.types[i];
		bool		isnull;
		MemoryContext old;

		t->name = spi_text(tup, desc, 1);
		t->version = DatumGetInt32(SPI_getbinval(tup, desc, 2, &isnull));
		t->enabled = DatumGetBool(SPI_getbinval(tup, desc, 3, &isnull));
		old = MemoryContextSwitchTo(config.cxt);
		t->schema = DatumGetJsonbPCopy(SPI_getbinval(tup, desc, 4, &isnull));
		MemoryContextSwitchTo(old);
	}
	qsort(config.types, config.ntypes, sizeof(EpTypeEntry), cmp_types);

	spi_config_query("SELECT s.source, s.event_type, s.id_field, s.timestamp_field, "
					 "ARRAY(SELECT r.role_name::text FROM evpipe.source_roles r "
					 "WHERE r.source = s.source ORDER BY 1), l.per_sec, l.burst "
					 "FROM evpipe.sources s LEFT JOIN evpipe.source_limits l USING (source)");
	config.nsources = (int) SPI_processed;
	config.sources = MemoryContextAllocZero(config.cxt,
											sizeof(EpSourceEntry) * (SPI_processed + 1));
	for (i = 0; i < SPI_processed; i++)
	{
		HeapTuple	tup = SPI_tuptable->vals[i];
		TupleDesc	desc = SPI_tuptable->tupdesc;
		EpSourceEntry *s = &config.sources[i];
		bool		isnull;
		Datum		d;
		Datum	   *elems;
		bool	   *nulls;
		int			n;
		int			k;

		s->source = spi_text(tup, desc, 1);
		s->event_type = spi_text(tup, desc, 2);
		s->id_field = spi_text(tup, desc, 3);
		s->ts_field = spi_text(tup, desc, 4);
		d = SPI_getbinval(tup, desc, 5, &isnull);
		deconstruct_array(DatumGetArrayTypeP(d), TEXTOID, -1, false,
						  TYPALIGN_INT, &elems, &nulls, &n);
		d = SPI_getbinval(tup, desc, 6, &isnull);
		s->limit_per_sec = isnull ? 0 : DatumGetFloat8(d);
		d = SPI_getbinval(tup, desc, 7, &isnull);
		s->limit_burst = isnull ? 1 : DatumGetInt32(d);
		s->limit_slot = -1;
		if (s->limit_per_sec > 0 && evpipe_is_preloaded())
		{
			char		key[160];

			snprintf(key, sizeof(key), "source\x1f%s", s->source);
			s->limit_slot = ep_rate_slot(key);
		}
		s->nroles = n;
		s->roles = MemoryContextAllocZero(config.cxt, sizeof(char *) * (n + 1));
		for (k = 0; k < n; k++)
			s->roles[k] = MemoryContextStrdup(config.cxt,
											  TextDatumGetCString(elems[k]));
	}
	qsort(config.sources, config.nsources, sizeof(EpSourceEntry), cmp_sources);

	spi_config_query("SELECT id, event_type, destination, source, priority, enabled "
					 "FROM evpipe.routes ORDER BY id");
	config.nroutes = (int) SPI_processed;
	config.routes = MemoryContextAllocZero(config.cxt,
										   sizeof(EpRouteEntry) * (SPI_processed + 1));
	for (i = 0; i < SPI_processed; i++)
	{
		HeapTuple	tup = SPI_tuptable->vals[i];
		TupleDesc	desc = SPI_tuptable->tupdesc;
		EpRouteEntry *r = &config.routes[i];
		bool		isnull;
		int			len;

		r->id = DatumGetInt32(SPI_getbinval(tup, desc, 1, &isnull));
		r->pattern = spi_text(tup, desc, 2);
		r->destination = spi_text(tup, desc, 3);
		r->source = spi_text(tup, desc, 4);
		r->priority = spi_text(tup, desc, 5);
		r->enabled = DatumGetBool(SPI_getbinval(tup, desc, 6, &isnull));
		len = strlen(r->pattern);
		r->is_prefix = (len > 0 && r->pattern[len - 1] == '*');
		r->prefix_len = r->is_prefix ? len - 1 : len;
	}

	/* ordered destinations (a database still at 0.1.0 has none) */
	config.ordering = get_attnum(get_relname_relid("outbox", nsp), "ordering_key") != InvalidAttrNumber;
	if (config.ordering)
	{
		spi_config_query("SELECT name, COALESCE(config ->> 'ordering_key', CASE WHEN kind = 'sqs'"
						 " AND config ->> 'queue_url' LIKE '%.fifo' THEN COALESCE(config ->> 'message_group_field', 'source') END)"
						 " FROM evpipe.destinations WHERE config ? 'ordering_key'"
						 " OR (kind = 'sqs' AND config ->> 'queue_url' LIKE '%.fifo')"
						 " ORDER BY name COLLATE \"C\"");
		config.norders = (int) SPI_processed;
		config.orders = MemoryContextAllocZero(config.cxt,
											   sizeof(EpOrderEntry) * (SPI_processed + 1));
		for (i = 0; i < SPI_processed; i++)
		{
			config.orders[i].destination = spi_text(SPI_tuptable->vals[i], SPI_tuptable->tupdesc, 1);
			config.orders[i].path = spi_text(SPI_tuptable->vals[i], SPI_tuptable->tupdesc, 2);
		}
	}
	PopActiveSnapshot();
}

/* Order destination entries by name, bytewise (as the load sorts them). */
static int
cmp_orders(const void *a, const void *b)
{
	return strcmp(((const EpOrderEntry *) a)->destination,
				  ((const EpOrderEntry *) b)->destination);
}

/*
 * The ordering key of an event for a destination: the value at the
 * destination's ordering_key path (a string as it is, other values as JSON
 * text), "" when the member is absent or null (the default group), or NULL
 * when the destination is not ordered.
 */
static char *
ordering_key(Jsonb *envelope, const char *destination)
{
	EpOrderEntry key;
	EpOrderEntry *o;
	JsonbContainer *c = &envelope->root;
	JsonbValue *v = NULL;
	char	   *path;
	char	   *seg;
	char	   *save = NULL;

	if (config.norders == 0)
		return NULL;
	key.destination = (char *) destination;
	o = bsearch(&key, config.orders, config.norders, sizeof(EpOrderEntry), cmp_orders);
	if (o == NULL)
		return NULL;
	path = pstrdup(o->path);
	for (seg = strtok_r(path, ".", &save); seg; seg = strtok_r(NULL, ".", &save))
	{
		if (c == NULL || !JsonContainerIsObject(c))
			return pstrdup("");
		v = evpipe_jsonb_get(c, seg);
		if (v == NULL)
			return pstrdup("");
		c = v->type == jbvBinary ? v->val.binary.data : NULL;
	}
	if (v == NULL || v->type == jbvNull)
		return pstrdup("");
	if (v->type == jbvString)
		return pnstrdup(v->val.string.val, v->val.string.len);
	if (v->type == jbvBinary)
		return JsonbToCString(NULL, v->val.binary.data, v->val.binary.len);
	return JsonbToCString(NULL, &JsonbValueToJsonb(v)->root, 0);
}

/* The ordering keys of an event for its destinations; NIL if none is ordered. */
static List *
ordering_keys(Jsonb *envelope, List *dests)
{
	List	   *keys = NIL;
	bool		any = false;
	ListCell   *lc;

	if (config.norders == 0)
		return NIL;
	foreach(lc, dests)
	{
		char	   *k = ordering_key(envelope, lfirst(lc));

		any |= (k != NULL);
		keys = lappend(keys, k);
	}
	return any ? keys : NIL;
}

/* Make sure the configuration is loaded. Requires SPI. */
static void
config_ensure(void)
{
	if (!config.valid)
		config_load();
}

static EpTypeEntry *
find_type(const char *name)
{
	EpTypeEntry key;

	key.name = (char *) name;
	return bsearch(&key, config.types, config.ntypes, sizeof(EpTypeEntry),
				   cmp_types);
}

static EpSourceEntry *
find_source(const char *name)
{
	EpSourceEntry key;

	key.source = (char *) name;
	return bsearch(&key, config.sources, config.nsources,
				   sizeof(EpSourceEntry), cmp_sources);
}

/* Convert a jsonb schema to json-c for the validator; NULL if too deep. */
static struct json_object *
schema_to_jsonc(Jsonb *schema)
{
	int			too_deep;

	return evpipe_jsonb_to_jsonc(&schema->root, evpipe_max_depth * 2 + 8,
								 &too_deep);
}

/* The compiled schema of a type's newest version, compiled on first use. */
static EpSchema *
type_schema(EpTypeEntry *t)
{
	struct json_object *obj;
	EpSchemaError err;

	if (t->compiled)
		return t->compiled;
	obj = schema_to_jsonc(t->schema);
	if (obj == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("schema of event type \"%s\" version %d nests too deeply",
						t->name, t->version),
				 errhint("Raise evpipe.max_depth or register a flatter schema.")));
	memset(&err, 0, sizeof(err));
	t->compiled = ep_schema_compile(obj, evpipe_max_depth, &err);
	json_object_put(obj);
	if (t->compiled == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("schema of event type \"%s\" version %d is not valid",
						t->name, t->version),
				 errdetail_internal("Path %s, rule \"%s\": %s.", err.path,
									err.rule, err.message)));
	return t->compiled;
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
		reject(ERRCODE_INVALID_PARAMETER_VALUE, path, "type", NULL, NULL,
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
		reject(ERRCODE_INVALID_DATETIME_FORMAT, path, "format", NULL,
			   "Use ISO-8601 with a zone, for example 2026-11-21T10:00:00Z.",
			   "member \"timestamp\" is not an ISO-8601 timestamp with a zone");
	return DatumGetTimestampTz(DirectFunctionCall3(timestamptz_in,
												   CStringGetDatum(s),
												   ObjectIdGetDatum(InvalidOid),
												   Int32GetDatum(-1)));
}

/* Push a string (or null) member onto a jsonb being built. */
static void
push_str(JsonbParseState **ps, const char *key, const char *val)
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

static void
push_key(JsonbParseState **ps, const char *key)
{
	JsonbValue	k;

	k.type = jbvString;
	k.val.string.val = (char *) key;
	k.val.string.len = strlen(key);
	pushJsonbValue(ps, WJB_KEY, &k);
}

static void
push_bool(JsonbParseState **ps, const char *key, bool b)
{
	JsonbValue	v;

	push_key(ps, key);
	v.type = jbvBool;
	v.val.boolean = b;
	pushJsonbValue(ps, WJB_VALUE, &v);
}

static void
push_int(JsonbParseState **ps, const char *key, int i)
{
	JsonbValue	v;

	push_key(ps, key);
	v.type = jbvNumeric;
	v.val.numeric = DatumGetNumeric(DirectFunctionCall1(int4_numeric,
														Int32GetDatum(i)));
	pushJsonbValue(ps, WJB_VALUE, &v);
}

/* Push an array of strings as a member. */
static void
push_str_array(JsonbParseState **ps, const char *key, List *items)
{
	ListCell   *lc;

	push_key(ps, key);
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
		reject(ERRCODE_SQL_JSON_MEMBER_NOT_FOUND, idpath, "required", NULL,
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
		reject(ERRCODE_INVALID_PARAMETER_VALUE, idpath, "type", NULL, NULL,
			   "member %s must be a string or an integer",
			   quoted_name(src->id_field));
	current_event_id = id;

	tsv = evpipe_jsonb_get(&raw->root, src->ts_field);
	if (tsv == NULL)
		reject(ERRCODE_SQL_JSON_MEMBER_NOT_FOUND, tspath, "required", NULL,
			   NULL, "member %s (the timestamp of source \"%s\") is missing",
			   quoted_name(src->ts_field), src->source);
	ts = string_member(tsv, tspath, src->ts_field);

	pushJsonbValue(&ps, WJB_BEGIN_OBJECT, NULL);
	push_str(&ps, "eventId", id);
	push_str(&ps, "eventType", src->event_type);
	push_str(&ps, "source", src->source);
	push_str(&ps, "timestamp", ts);
	push_key(&ps, "payload");
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
						current_event_id ? current_event_id : "-", src->source),
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
						current_event_id ? current_event_id : "-", src->source,
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
static char *
new_traceparent(void)
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
static void
prepare_event(Jsonb *raw, const char *source_arg, Oid caller, EpEvent *ev)
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
	current_event_id = NULL;
	current_source = source_arg;

	if (JB_ROOT_IS_SCALAR(raw) || !JB_ROOT_IS_OBJECT(raw))
		reject(ERRCODE_SQL_JSON_OBJECT_NOT_FOUND, "$", "type", NULL,
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
			reject(ERRCODE_STRING_DATA_RIGHT_TRUNCATION, "$", "maxBytes", extra,
				   "The limit is evpipe.max_event_bytes.", "event is too large");
		}
	}

	if (source_arg != NULL)
	{
		src = find_source(source_arg);
		if (src == NULL)
			reject(ERRCODE_INVALID_PARAMETER_VALUE, "(argument source)", "registered",
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
			reject(ERRCODE_INVALID_PARAMETER_VALUE, psprintf("$%s", seg),
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
			reject(ERRCODE_SQL_JSON_MEMBER_NOT_FOUND, path, "required", NULL,
				   NULL, "member \"%s\" is missing", members[i]);
		}
	}

	/* eventId */
	if (vals[0]->type != jbvString)
		reject(ERRCODE_INVALID_PARAMETER_VALUE, ev->id_path, "type", NULL, NULL,
			   "member \"eventId\" must be a string");
	if (!evpipe_valid_event_id(vals[0]->val.string.val, vals[0]->val.string.len))
		reject(ERRCODE_INVALID_TEXT_REPRESENTATION, ev->id_path, "pattern",
			   "1-128 characters from [A-Za-z0-9._:-]",
			   "A UUID is a good eventId.", "member \"eventId\" is not a valid event id");
	ev->event_id = pnstrdup(vals[0]->val.string.val, vals[0]->val.string.len);
	current_event_id = ev->event_id;

	/* eventType: a string here, registration checked below */
	ev->event_type = string_member(vals[1], "$.eventType", "eventType");

	/* source */
	ev->source = string_member(vals[2], "$.source", "source");
	if (ev->source[0] == '\0' || char_count(ev->source) > 128 ||
		has_control(ev->source))
		reject(ERRCODE_INVALID_PARAMETER_VALUE, "$.source", "pattern",
			   "1-128 characters, no control characters", NULL,
			   "member \"source\" is not a valid source name");
	current_source = ev->source;
	if (source_arg != NULL && strcmp(source_arg, ev->source) != 0)
		reject(ERRCODE_INVALID_PARAMETER_VALUE, "$.source", "const", NULL,
			   "Leave the source argument out, or make it match the envelope.",
			   "member \"source\" does not match the source argument \"%s\"",
			   source_arg);

	/* payload */
	if (vals[3]->type != jbvBinary || !JsonContainerIsObject(vals[3]->val.binary.data))
		reject(ERRCODE_INVALID_PARAMETER_VALUE, ev->payload_path, "type", NULL,
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
			reject(ERRCODE_INVALID_PARAMETER_VALUE, "$.correlationId", "pattern",
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
			reject(ERRCODE_INVALID_PARAMETER_VALUE, "$.priority", "pattern",
				   "1-32 characters from [A-Za-z0-9_-]", NULL,
				   "member \"priority\" is not valid");
	}
	if (vals[7] != NULL)
	{
		ev->traceparent = string_member(vals[7], "$.traceparent", "traceparent");
		if (!evpipe_valid_traceparent(ev->traceparent, strlen(ev->traceparent)))
			reject(ERRCODE_INVALID_PARAMETER_VALUE, "$.traceparent", "format",
				   "W3C trace context: 00-<32 hex>-<16 hex>-<2 hex>",
				   NULL, "member \"traceparent\" is not a valid W3C traceparent");
	}

	/* the source may be bound to roles */
	if (src == NULL)
		src = find_source(ev->source);
	ev->src = src;
	check_source_allowed(src, caller);
	check_source_limit(src);

	/* eventType registered and enabled */
	ev->type = find_type(ev->event_type);
	if (ev->type == NULL)
		reject(ERRCODE_INVALID_PARAMETER_VALUE, "$.eventType", "registered",
			   NULL, "An evpipe_admin registers types with evpipe.register_event_type().",
			   "event type \"%s\" is not registered",
			   pnstrdup(ev->event_type, Min(strlen(ev->event_type), 128)));
	if (!ev->type->enabled)
		reject(ERRCODE_INVALID_PARAMETER_VALUE, "$.eventType", "registered",
			   NULL, NULL, "event type \"%s\" is disabled", ev->event_type);

	/* payload against the type's schema */
	payload = evpipe_jsonb_to_jsonc(vals[3]->val.binary.data, evpipe_max_depth,
									&too_deep);
	if (payload == NULL)
	{
		char		extra[64];

		snprintf(extra, sizeof(extra), "nesting deeper than %d levels",
				 evpipe_max_depth);
		reject(ERRCODE_INVALID_PARAMETER_VALUE, ev->payload_path, "depth", extra,
			   "The limit is evpipe.max_depth.", "event payload nests too deeply");
	}
	memset(&err, 0, sizeof(err));
	if (!ep_schema_validate(type_schema(ev->type), payload, ev->payload_path,
							evpipe_max_depth, &err))
	{
		json_object_put(payload);
		reject(ERRCODE_INVALID_PARAMETER_VALUE, err.path, err.rule, err.message,
			   NULL, "event payload does not match the schema of \"%s\" version %d",
			   ev->event_type, ev->type->version);
	}
	json_object_put(payload);

	ev->envelope = env;
}

/* Whether a route matches an event; *why explains the decision. */
static bool
route_matches(EpRouteEntry *r, EpEvent *ev, char **why)
{
	if (!r->enabled)
	{
		*why = "rule is disabled";
		return false;
	}
	if (r->is_prefix)
	{
		if (strncmp(ev->event_type, r->pattern, r->prefix_len) != 0)
		{
			*why = psprintf("event type %s does not start with %.*s",
							ev->event_type, r->prefix_len, r->pattern);
			return false;
		}
	}
	else if (strcmp(ev->event_type, r->pattern) != 0)
	{
		*why = psprintf("event type %s is not %s", ev->event_type, r->pattern);
		return false;
	}
	if (r->source && strcmp(r->source, ev->source) != 0)
	{
		*why = psprintf("source %s is not %s", ev->source, r->source);
		return false;
	}
	if (r->priority && (ev->priority == NULL || strcmp(r->priority, ev->priority) != 0))
	{
		*why = ev->priority ? psprintf("priority %s is not %s", ev->priority, r->priority)
			: psprintf("event has no priority, rule needs %s", r->priority);
		return false;
	}
	*why = psprintf("event type %s %s %s%s%s%s%s",
					ev->event_type, r->is_prefix ? "matches prefix" : "is",
					r->pattern,
					r->source ? ", source is " : "", r->source ? r->source : "",
					r->priority ? ", priority is " : "",
					r->priority ? r->priority : "");
	return true;
}

/* Destinations of an event in rule order, without repeats. */
static List *
route_event(EpEvent *ev)
{
	List	   *dests = NIL;
	int			i;

	for (i = 0; i < config.nroutes; i++)
	{
		EpRouteEntry *r = &config.routes[i];
		char	   *why;
		ListCell   *lc;
		bool		seen = false;

		if (!route_matches(r, ev, &why))
			continue;
		foreach(lc, dests)
			if (strcmp(lfirst(lc), r->destination) == 0)
				seen = true;
		if (!seen)
			dests = lappend(dests, r->destination);
	}
	return dests;
}

/* The owner of a function: ingest runs its writes as the extension owner. */
static Oid
function_owner(Oid fn_oid)
{
	static Oid	cached_fn = InvalidOid;
	static Oid	cached_owner = InvalidOid;
	HeapTuple	tup;

	if (fn_oid == cached_fn)
		return cached_owner;
	tup = SearchSysCache1(PROCOID, ObjectIdGetDatum(fn_oid));
	if (!HeapTupleIsValid(tup))
		elog(ERROR, "cache lookup failed for function %u", fn_oid);
	cached_owner = ((Form_pg_proc) GETSTRUCT(tup))->proowner;
	cached_fn = fn_oid;
	ReleaseSysCache(tup);
	return cached_owner;
}

/* Prepare and keep a plan. */
static SPIPlanPtr
keep_plan(const char *sql, int nargs, Oid *types)
{
	SPIPlanPtr	p = SPI_prepare(sql, nargs, types);

	if (p == NULL)
		elog(ERROR, "evpipe: SPI_prepare failed: %s",
			 SPI_result_code_string(SPI_result));
	if (SPI_keepplan(p) != 0)
		elog(ERROR, "evpipe: SPI_keepplan failed");
	return p;
}

/* A text[] datum from a list of C strings. */
static Datum
text_array(List *items)
{
	Datum	   *elems = palloc(sizeof(Datum) * Max(list_length(items), 1));
	ListCell   *lc;
	int			n = 0;

	foreach(lc, items)
		elems[n++] = CStringGetTextDatum(lfirst(lc));
	return PointerGetDatum(construct_array(elems, n, TEXTOID, -1, false,
										   TYPALIGN_INT));
}

/* A text[] datum from a list of C strings, NULL elements for NULL ones. */
static Datum
nullable_text_array(List *items)
{
	int			n = list_length(items);
	Datum	   *elems = palloc(sizeof(Datum) * Max(n, 1));
	bool	   *isnull = palloc(sizeof(bool) * Max(n, 1));
	int			dims[1] = {n};
	int			lbs[1] = {1};
	ListCell   *lc;
	int			i = 0;

	foreach(lc, items)
	{
		isnull[i] = (lfirst(lc) == NULL);
		elems[i] = isnull[i] ? (Datum) 0 : CStringGetTextDatum(lfirst(lc));
		i++;
	}
	return PointerGetDatum(construct_md_array(elems, isnull, 1, dims, lbs,
											  TEXTOID, -1, false, TYPALIGN_INT));
}

static Datum
text_or_null(const char *s, char *nulls, int i)
{
	if (s == NULL)
	{
		nulls[i] = 'n';
		return (Datum) 0;
	}
	return CStringGetTextDatum(s);
}

/*
 * Insert the event and its outbox rows in one statement; returns true if
 * the event was new. dests is never empty, so the statement inserts outbox
 * rows exactly when the event row was new. The statement is kept lean (no
 * second CTE, sort or aggregate): executor start-up is a visible part of a
 * one-event call. A cross join can only be a nested loop, and the event side
 * has one row, so the outbox rows are inserted (and numbered) in route order.
 */
static bool
insert_event(EpEvent *ev, List *dests, Oid caller)
{
	Datum		values[12];
	char		nulls[13];
	int			rc;
	List	   *keys = ordering_keys(ev->envelope, dests);
	SPIPlanPtr	plan;

	if (keys != NIL && insert_ordered_plan == NULL)
	{
		Oid			types[12] = {TEXTOID, TEXTOID, INT4OID, TEXTOID,
			TIMESTAMPTZOID, TEXTOID, TEXTOID, TEXTOID, JSONBOID, NAMEOID,
		TEXTARRAYOID, TEXTARRAYOID};

		/* an ordered destination: each row carries its key */
		insert_ordered_plan = keep_plan(
										"WITH e AS ("
										" INSERT INTO evpipe.events AS ev (event_id, event_type, schema_version, source,"
										"  event_time, correlation_id, priority, traceparent, event, ingested_by)"
										" VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)"
										" ON CONFLICT (event_id) DO NOTHING RETURNING ev.event_id)"
										" INSERT INTO evpipe.outbox (event_id, destination, ordering_key)"
										" SELECT e.event_id, d.d, d.k FROM e,"
										"  ROWS FROM (pg_catalog.unnest($11), pg_catalog.unnest($12)) AS d(d, k)",
										12, types);
	}
	if (keys == NIL && insert_plan == NULL)
	{
		Oid			types[11] = {TEXTOID, TEXTOID, INT4OID, TEXTOID,
			TIMESTAMPTZOID, TEXTOID, TEXTOID, TEXTOID, JSONBOID, NAMEOID,
		TEXTARRAYOID};

		insert_plan = keep_plan(
								"WITH e AS ("
								" INSERT INTO evpipe.events AS ev (event_id, event_type, schema_version, source,"
								"  event_time, correlation_id, priority, traceparent, event, ingested_by)"
								" VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)"
								" ON CONFLICT (event_id) DO NOTHING RETURNING ev.event_id)"
								" INSERT INTO evpipe.outbox (event_id, destination)"
								" SELECT e.event_id, d.d FROM e, pg_catalog.unnest($11) AS d(d)",
								11, types);
	}
	memset(nulls, ' ', sizeof(nulls));
	nulls[12] = '\0';
	values[0] = CStringGetTextDatum(ev->event_id);
	values[1] = CStringGetTextDatum(ev->event_type);
	values[2] = Int32GetDatum(ev->type->version);
	values[3] = CStringGetTextDatum(ev->source);
	values[4] = TimestampTzGetDatum(ev->ts);
	values[5] = text_or_null(ev->correlation_id, nulls, 5);
	values[6] = text_or_null(ev->priority, nulls, 6);
	values[7] = text_or_null(ev->traceparent ? ev->traceparent : new_traceparent(),
							 nulls, 7);
	values[8] = JsonbPGetDatum(ev->envelope);
	values[9] = DirectFunctionCall1(namein,
									CStringGetDatum(GetUserNameFromId(caller, false)));
	values[10] = text_array(dests);
	values[11] = keys != NIL ? nullable_text_array(keys) : (Datum) 0;
	plan = keys != NIL ? insert_ordered_plan : insert_plan;

	Assert(dests != NIL);
	rc = SPI_execute_plan(plan, values, nulls, false, 0);
	if (rc != SPI_OK_INSERT)
		elog(ERROR, "evpipe: inserting the event failed: %s",
			 SPI_result_code_string(rc));
	if (SPI_processed != 0 && SPI_processed != (uint64) list_length(dests))
		elog(ERROR, "evpipe: inserting the event wrote " UINT64_FORMAT " of %d outbox rows",
			 SPI_processed, list_length(dests));
	return SPI_processed > 0;
}

/* The stored envelope of an event id, or NULL. */
static Jsonb *
existing_event(const char *event_id)
{
	Datum		values[1];
	bool		isnull;
	Datum		d;
	int			rc;

	if (existing_plan == NULL)
	{
		Oid			types[1] = {TEXTOID};

		existing_plan = keep_plan("SELECT event FROM evpipe.events WHERE event_id = $1",
								  1, types);
	}
	values[0] = CStringGetTextDatum(event_id);
	rc = SPI_execute_plan(existing_plan, values, NULL, false, 1);
	if (rc != SPI_OK_SELECT)
		elog(ERROR, "evpipe: looking up event failed: %s",
			 SPI_result_code_string(rc));
	if (SPI_processed == 0)
		return NULL;
	d = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull);
	return DatumGetJsonbP(d);
}

/* Destinations recorded for an event that was ingested before. */
static List *
existing_destinations(const char *event_id)
{
	Datum		values[1];
	List	   *dests = NIL;
	uint64		i;
	int			rc;

	if (existing_dests_plan == NULL)
	{
		Oid			types[1] = {TEXTOID};

		existing_dests_plan = keep_plan(
										"SELECT destination FROM evpipe.outbox WHERE event_id = $1"
										" UNION SELECT destination FROM evpipe.delivered WHERE event_id = $1"
										" UNION SELECT destination FROM evpipe.dead_letters WHERE event_id = $1"
										" ORDER BY 1", 1, types);
	}
	values[0] = CStringGetTextDatum(event_id);
	rc = SPI_execute_plan(existing_dests_plan, values, NULL, true, 0);
	if (rc != SPI_OK_SELECT)
		elog(ERROR, "evpipe: looking up destinations failed");
	for (i = 0; i < SPI_processed; i++)
		dests = lappend(dests, SPI_getvalue(SPI_tuptable->vals[i],
											SPI_tuptable->tupdesc, 1));
	return dests;
}

/* Answer of ingest. */
static Jsonb *
ingest_result(const char *event_id, const char *status, List *dests)
{
	JsonbParseState *ps = NULL;
	JsonbValue *res;

	pushJsonbValue(&ps, WJB_BEGIN_OBJECT, NULL);
	push_str(&ps, "eventId", event_id);
	push_str(&ps, "status", status);
	push_str_array(&ps, "destinations", dests);
	res = pushJsonbValue(&ps, WJB_END_OBJECT, NULL);
	return JsonbValueToJsonb(res);
}

/*
 * Handle an event id that exists already: the same content is a duplicate
 * (nothing written, nothing raised); other content is a conflict (23505).
 */
static Jsonb *
handle_existing(EpEvent *ev, Jsonb *stored)
{
	if (!DatumGetBool(DirectFunctionCall2(jsonb_eq, JsonbPGetDatum(stored),
										  JsonbPGetDatum(ev->envelope))))
	{
		ep_metric_add(EP_MK_REJECT, "unique", NULL, 0, 1);
		if (evpipe_log_rejections)
			ereport(LOG,
					(errmsg("evpipe event=ingest_rejected sqlstate=23505 event_id=%s source=%s reason=\"event id reused with other content\"",
							ev->event_id, ev->source),
					 errhidestmt(true)));
		ereport(ERROR,
				(errcode(ERRCODE_UNIQUE_VIOLATION),
				 errmsg("event \"%s\" already exists with different content",
						ev->event_id),
				 errdetail("Path $.eventId, rule \"unique\": an eventId identifies one event, and a retry must send the same content."),
				 errhint("Use a new eventId for a new event.")));
	}
	ep_metric_add(EP_MK_INGEST, ev->event_type, NULL, EP_M_DUPLICATE, 1);
	return ingest_result(ev->event_id, "duplicate",
						 existing_destinations(ev->event_id));
}

/* Mark the answer 202 Accepted when called through PostgREST. */
static void
set_postgrest_status(void)
{
	const char *method = GetConfigOption("request.method", true, false);

	if (method != NULL && method[0] != '\0')
		(void) set_config_option("response.status", "202", PGC_USERSET,
								 PGC_S_SESSION, GUC_ACTION_LOCAL, true, 0,
								 false);
}

/* What ingest and route_explain share while they run. */
typedef struct IngestCall
{
	Oid			caller;			/* the calling role */
	Oid			save_userid;
	int			save_sec;
	MemoryContext caller_cxt;	/* where the answer must live */
	EpEvent		ev;
	List	   *dests;
} IngestCall;

/*
 * The arguments of ingest-like calls: a jsonb that must not be null (named
 * `what` in the error) and an optional source.
 */
static Jsonb *
call_args(FunctionCallInfo fcinfo, const char *what, char **source_arg)
{
	current_batch_index = -1;
	if (PG_ARGISNULL(0))
		reject(ERRCODE_NULL_VALUE_NOT_ALLOWED, "$", "type", NULL, NULL,
			   "%s must not be null", what);
	*source_arg = PG_ARGISNULL(1) ? NULL : text_to_cstring(PG_GETARG_TEXT_PP(1));
	return PG_GETARG_JSONB_P(0);
}

/*
 * Enter a call: remember the caller, switch to the extension owner for the
 * SPI work, and load the configuration.
 */
static void
enter_call(FunctionCallInfo fcinfo, IngestCall *call)
{
	call->caller = GetUserId();
	call->caller_cxt = CurrentMemoryContext;
	current_batch_index = -1;
	GetUserIdAndSecContext(&call->save_userid, &call->save_sec);
	SetUserIdAndSecContext(function_owner(fcinfo->flinfo->fn_oid),
						   call->save_sec | SECURITY_LOCAL_USERID_CHANGE |
						   SECURITY_RESTRICTED_OPERATION);
	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "evpipe: SPI_connect failed");
	config_ensure();
}

/*
 * Start an ingest-like call: read the arguments, switch to the extension
 * owner for the SPI work, load the configuration, then validate, normalise
 * and route the event into call->ev and call->dests.
 */
static void
begin_call(FunctionCallInfo fcinfo, IngestCall *call)
{
	Jsonb	   *raw;
	char	   *source_arg;

	raw = call_args(fcinfo, "event", &source_arg);
	enter_call(fcinfo, call);
	prepare_event(raw, source_arg, call->caller, &call->ev);
	call->dests = route_event(&call->ev);
}

/* Finish the call: copy the answer out of SPI memory, switch back. */
static Jsonb *
end_call(IngestCall *call, Jsonb *result)
{
	MemoryContext old = MemoryContextSwitchTo(call->caller_cxt);

	result = (Jsonb *) PG_DETOAST_DATUM_COPY(JsonbPGetDatum(result));
	MemoryContextSwitchTo(old);
	SPI_finish();
	SetUserIdAndSecContext(call->save_userid, call->save_sec);
	current_event_id = NULL;
	current_source = NULL;
	current_batch_index = -1;
	return result;
}

/* SQL: evpipe.ingest(event jsonb, source text DEFAULT NULL) RETURNS jsonb */
Datum
evpipe_ingest(PG_FUNCTION_ARGS)
{
	IngestCall	call;
	EpEvent    *ev = &call.ev;
	Jsonb	   *result;

	begin_call(fcinfo, &call);

	if (call.dests == NIL)
	{
		Jsonb	   *stored = existing_event(ev->event_id);

		if (stored != NULL)
			result = handle_existing(ev, stored);
		else
		{
			char		extra[300];

			snprintf(extra, sizeof(extra), "event type %s, source %s, priority %s",
					 ev->event_type, ev->source,
					 ev->priority ? ev->priority : "(none)");
			reject(ERRCODE_INVALID_PARAMETER_VALUE, "$.eventType", "route",
				   extra,
				   "An evpipe_admin adds routes with evpipe.add_route(); evpipe.route_explain() shows the rules.",
				   "no route matches event type \"%s\"", ev->event_type);
		}
	}
	else if (insert_event(ev, call.dests, call.caller))
	{
		ep_metric_add(EP_MK_INGEST, ev->event_type, NULL, EP_M_INGESTED, 1);
		result = ingest_result(ev->event_id, "accepted", call.dests);
		evpipe_request_wake();
		set_postgrest_status();
	}
	else
	{
		Jsonb	   *stored = existing_event(ev->event_id);

		if (stored == NULL)
			ereport(ERROR,
					(errcode(ERRCODE_T_R_SERIALIZATION_FAILURE),
					 errmsg("event \"%s\" was changed concurrently", ev->event_id),
					 errhint("Retry the call.")));
		result = handle_existing(ev, stored);
	}

	PG_RETURN_JSONB_P(end_call(&call, result));
}

/*
 * SQL: evpipe.route_explain(event jsonb, source text DEFAULT NULL)
 * Validates the event like ingest and lists every rule with whether it
 * matches and why. Writes nothing.
 */
Datum
evpipe_route_explain(PG_FUNCTION_ARGS)
{
	IngestCall	call;
	EpEvent    *ev = &call.ev;
	JsonbParseState *ps = NULL;
	JsonbValue *res;
	int			i;

	begin_call(fcinfo, &call);

	pushJsonbValue(&ps, WJB_BEGIN_OBJECT, NULL);
	push_str(&ps, "eventId", ev->event_id);
	push_str(&ps, "eventType", ev->event_type);
	push_str(&ps, "source", ev->source);
	push_str(&ps, "priority", ev->priority);
	push_int(&ps, "schemaVersion", ev->type->version);
	push_str_array(&ps, "destinations", call.dests);
	push_key(&ps, "rules");
	pushJsonbValue(&ps, WJB_BEGIN_ARRAY, NULL);
	for (i = 0; i < config.nroutes; i++)
	{
		EpRouteEntry *r = &config.routes[i];
		char	   *why;
		bool		m = route_matches(r, ev, &why);
		int			j;

		/* a destination already added by an earlier rule is not added twice */
		for (j = 0; m && j < i; j++)
		{
			char	   *w;

			if (strcmp(config.routes[j].destination, r->destination) == 0 &&
				route_matches(&config.routes[j], ev, &w))
			{
				why = psprintf("%s; destination already added by rule %d",
							   why, config.routes[j].id);
				break;
			}
		}
		pushJsonbValue(&ps, WJB_BEGIN_OBJECT, NULL);
		push_int(&ps, "id", r->id);
		push_str(&ps, "eventType", r->pattern);
		push_str(&ps, "source", r->source);
		push_str(&ps, "priority", r->priority);
		push_str(&ps, "destination", r->destination);
		push_bool(&ps, "enabled", r->enabled);
		push_bool(&ps, "matched", m);
		push_str(&ps, "reason", why);
		pushJsonbValue(&ps, WJB_END_OBJECT, NULL);
	}
	pushJsonbValue(&ps, WJB_END_ARRAY, NULL);
	res = pushJsonbValue(&ps, WJB_END_OBJECT, NULL);
	PG_RETURN_JSONB_P(end_call(&call, JsonbValueToJsonb(res)));
}

/* SQL: evpipe._check_schema(schema jsonb): raise if the schema is invalid. */
Datum
evpipe_check_schema(PG_FUNCTION_ARGS)
{
	Jsonb	   *schema = PG_GETARG_JSONB_P(0);
	struct json_object *obj;
	EpSchema   *compiled;
	EpSchemaError err;

	obj = schema_to_jsonc(schema);
	if (obj == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("invalid JSON Schema: it nests too deeply"),
				 errdetail("Path $, rule \"depth\": deeper than evpipe.max_depth (%d) schema levels.",
						   evpipe_max_depth)));
	memset(&err, 0, sizeof(err));
	compiled = ep_schema_compile(obj, evpipe_max_depth, &err);
	json_object_put(obj);
	if (compiled == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("invalid JSON Schema: %s", err.message),
				 errdetail_internal("Path %s, rule \"%s\".", err.path, err.rule)));
	ep_schema_free(compiled);
	PG_RETURN_VOID();
}

/*------------------------------------------------------------------------
 * Batches
 *------------------------------------------------------------------------
 */

/* One event of a batch, kept after its validation. */
typedef struct BatchEvent
{
	char	   *event_id;
	char	   *event_type;
	int			version;
	char	   *source;
	TimestampTz ts;
	char	   *correlation_id;
	char	   *priority;
	char	   *traceparent;
	Jsonb	   *envelope;
	List	   *dests;			/* rule order; NIL: nothing to insert */
	int			first;			/* earlier event with the same id, or -1 */
	const char *status;			/* "accepted" or "duplicate" once known */
} BatchEvent;

typedef struct BatchIdEntry
{
	char		event_id[EVPIPE_MAX_EVENT_ID_LEN + 1];	/* hash key */
	int			index;
} BatchIdEntry;

/* A copy of a jsonb in the current memory context. */
static Jsonb *
jsonb_copy(Jsonb *j)
{
	Jsonb	   *c = palloc(VARSIZE(j));

	memcpy(c, j, VARSIZE(j));
	return c;
}

/* Compare with jsonb's equality (member order does not matter). */
static bool
jsonb_same(Jsonb *a, Jsonb *b)
{
	return DatumGetBool(DirectFunctionCall2(jsonb_eq, JsonbPGetDatum(a),
											JsonbPGetDatum(b)));
}

/* 23505 for an event of a batch whose id names other content. */
static void
pg_attribute_noreturn()
batch_conflict(int index, const char *event_id, const char *other)
{
	ep_metric_add(EP_MK_REJECT, "unique", NULL, 0, 1);
	ereport(ERROR,
			(errcode(ERRCODE_UNIQUE_VIOLATION),
			 errmsg("event \"%s\" already exists with different content", event_id),
			 errdetail("Path $[%d].eventId, rule \"unique\": %s.", index, other),
			 errhint("Use a new eventId for a new event; the batch wrote nothing.")));
}

static int
cmp_name_cells(const ListCell *a, const ListCell *b)
{
	return strcmp(lfirst(a), lfirst(b));
}

/* Destinations sorted by name, as ingest answers for a duplicate. */
static List *
sorted_names(List *names)
{
	List	   *copy = list_copy(names);

	list_sort(copy, cmp_name_cells);
	return copy;
}

/* A hash table of event ids (BatchIdEntry) in the current memory context. */
static HTAB *
id_table(const char *name, long size)
{
	HASHCTL		ctl;

	memset(&ctl, 0, sizeof(ctl));
	ctl.keysize = EVPIPE_MAX_EVENT_ID_LEN + 1;
	ctl.entrysize = sizeof(BatchIdEntry);
	ctl.hcxt = CurrentMemoryContext;
	return hash_create(name, Max(size, 16), &ctl,
					   HASH_ELEM | HASH_STRINGS | HASH_CONTEXT);
}

/* Whether an event of a batch still waits to be written (or found). */
#define BATCH_OPEN(e) ((e)->first < 0 && (e)->status == NULL)

/*
 * Write the open events of a batch that have destinations, with their outbox
 * rows, in one statement. With on_conflict, ids taken meanwhile are skipped
 * and the written ones are marked accepted; without, a taken id fails the
 * statement with 23505. Returns the number written.
 */
static uint64
batch_insert(BatchEvent *evs, int n, Oid caller, bool on_conflict)
{
	static SPIPlanPtr plans[2][2] = {{NULL, NULL}, {NULL, NULL}};	/* [ordered][on_conflict] */
	Datum	   *ids = palloc(sizeof(Datum) * n);
	Datum	   *types = palloc(sizeof(Datum) * n);
	Datum	   *versions = palloc(sizeof(Datum) * n);
	Datum	   *sources = palloc(sizeof(Datum) * n);
	Datum	   *times = palloc(sizeof(Datum) * n);
	Datum	   *corr = palloc(sizeof(Datum) * n);
	bool	   *corr_null = palloc(sizeof(bool) * n);
	Datum	   *prio = palloc(sizeof(Datum) * n);
	bool	   *prio_null = palloc(sizeof(bool) * n);
	Datum	   *trace = palloc(sizeof(Datum) * n);
	Datum	   *events = palloc(sizeof(Datum) * n);
	List	   *out_ids = NIL;
	List	   *out_dests = NIL;
	List	   *out_keys = NIL;
	bool		ordered = false;
	Datum		values[13];
	int			dims[1];
	int			lbs[1] = {1};
	int			m = 0;
	int			i;
	uint64		r;
	HTAB	   *written;
	int			rc;
	static const char *const no_jit[] = {"jit"};

	for (i = 0; i < n; i++)
	{
		BatchEvent *e = &evs[i];
		ListCell   *lc;

		if (!BATCH_OPEN(e) || e->dests == NIL)
			continue;
		ids[m] = CStringGetTextDatum(e->event_id);
		types[m] = CStringGetTextDatum(e->event_type);
		versions[m] = Int32GetDatum(e->version);
		sources[m] = CStringGetTextDatum(e->source);
		times[m] = TimestampTzGetDatum(e->ts);
		corr_null[m] = (e->correlation_id == NULL);
		corr[m] = corr_null[m] ? (Datum) 0 : CStringGetTextDatum(e->correlation_id);
		prio_null[m] = (e->priority == NULL);
		prio[m] = prio_null[m] ? (Datum) 0 : CStringGetTextDatum(e->priority);
		trace[m] = CStringGetTextDatum(e->traceparent);
		events[m] = JsonbPGetDatum(e->envelope);
		m++;
		foreach(lc, e->dests)
		{
			char	   *k = config.norders > 0 ? ordering_key(e->envelope, lfirst(lc)) : NULL;

			out_ids = lappend(out_ids, e->event_id);
			out_dests = lappend(out_dests, lfirst(lc));
			out_keys = lappend(out_keys, k);
			ordered |= (k != NULL);
		}
	}
	if (m == 0)
		return 0;

	if (plans[ordered][on_conflict] == NULL)
	{
		Oid			argtypes[13] = {TEXTARRAYOID, TEXTARRAYOID, INT4ARRAYOID,
			TEXTARRAYOID, TIMESTAMPTZARRAYOID, TEXTARRAYOID, TEXTARRAYOID,
		TEXTARRAYOID, JSONBARRAYOID, NAMEOID, TEXTARRAYOID, TEXTARRAYOID, TEXTARRAYOID};

		plans[ordered][on_conflict] = keep_plan(
									   psprintf("WITH e AS ("
												" INSERT INTO evpipe.events AS ev (event_id, event_type, schema_version, source,"
												"  event_time, correlation_id, priority, traceparent, event, ingested_by)"
												" SELECT v.*, $10 FROM ROWS FROM (pg_catalog.unnest($1), pg_catalog.unnest($2),"
												"  pg_catalog.unnest($3), pg_catalog.unnest($4), pg_catalog.unnest($5),"
												"  pg_catalog.unnest($6), pg_catalog.unnest($7), pg_catalog.unnest($8),"
												"  pg_catalog.unnest($9)) AS v"
												" %s RETURNING ev.event_id),"
												" o AS ("
												" INSERT INTO evpipe.outbox (event_id, destination%s)"
												" SELECT d.event_id, d.destination%s"
												" FROM ROWS FROM (pg_catalog.unnest($11), pg_catalog.unnest($12)%s)"
												"  WITH ORDINALITY AS d(event_id, destination%s, n)"
												" %s ORDER BY d.n"
												" RETURNING 1)"
												" SELECT e.event_id FROM e",
												on_conflict ? "ON CONFLICT (event_id) DO NOTHING" : "",
												ordered ? ", ordering_key" : "",
												ordered ? ", d.k" : "",
												ordered ? ", pg_catalog.unnest($13)" : "",
												ordered ? ", k" : "",
												on_conflict ? "WHERE d.event_id IN (SELECT e.event_id FROM e)" : ""),
												ordered ? 13 : 12, argtypes);
	}
	dims[0] = m;
	values[0] = PointerGetDatum(construct_array(ids, m, TEXTOID, -1, false, TYPALIGN_INT));
	values[1] = PointerGetDatum(construct_array(types, m, TEXTOID, -1, false, TYPALIGN_INT));
	values[2] = PointerGetDatum(construct_array(versions, m, INT4OID, 4, true, TYPALIGN_INT));
	values[3] = PointerGetDatum(construct_array(sources, m, TEXTOID, -1, false, TYPALIGN_INT));
	values[4] = PointerGetDatum(construct_array(times, m, TIMESTAMPTZOID, 8,
												FLOAT8PASSBYVAL, TYPALIGN_DOUBLE));
	values[5] = PointerGetDatum(construct_md_array(corr, corr_null, 1, dims, lbs,
												   TEXTOID, -1, false, TYPALIGN_INT));
	values[6] = PointerGetDatum(construct_md_array(prio, prio_null, 1, dims, lbs,
												   TEXTOID, -1, false, TYPALIGN_INT));
	values[7] = PointerGetDatum(construct_array(trace, m, TEXTOID, -1, false, TYPALIGN_INT));
	values[8] = PointerGetDatum(construct_array(events, m, JSONBOID, -1, false, TYPALIGN_INT));
	values[9] = DirectFunctionCall1(namein,
									CStringGetDatum(GetUserNameFromId(caller, false)));
	values[10] = text_array(out_ids);
	values[11] = text_array(out_dests);
	values[12] = ordered ? nullable_text_array(out_keys) : (Datum) 0;

	/* no JIT: compiling the statement costs more than running it */
	rc = evpipe_execute_plan_with_off(plans[ordered][on_conflict], values, NULL,
									  no_jit, lengthof(no_jit));
	if (rc != SPI_OK_SELECT)
		elog(ERROR, "evpipe: inserting the batch failed");

	/* mark what was written */
	written = id_table("evpipe batch written", SPI_processed);
	for (r = 0; r < SPI_processed; r++)
		(void) hash_search(written,
						   SPI_getvalue(SPI_tuptable->vals[r], SPI_tuptable->tupdesc, 1),
						   HASH_ENTER, NULL);
	for (i = 0; i < n; i++)
		if (BATCH_OPEN(&evs[i]) && evs[i].dests != NIL &&
			hash_search(written, evs[i].event_id, HASH_FIND, NULL) != NULL)
			evs[i].status = "accepted";
	return SPI_processed;
}

/*
 * Open events of a batch whose id is taken: the same content is a duplicate,
 * answered with its recorded destinations; other content is a conflict
 * (23505) that fails the whole batch. An unroutable event whose id is free
 * is refused. With after_write, an id that is free now was taken and given
 * up meanwhile (40001); before writing it is left open.
 */
static void
batch_existing(BatchEvent *evs, int n, bool after_write)
{
	Datum	   *ids = palloc(sizeof(Datum) * n);
	List	  **dests;
	HTAB	   *stored;
	HTAB	   *rows;
	Datum		values[1];
	int			m = 0;
	int			i;
	uint64		r;
	static SPIPlanPtr events_plan = NULL;
	static SPIPlanPtr dests_plan = NULL;

	for (i = 0; i < n; i++)
		if (BATCH_OPEN(&evs[i]))
			ids[m++] = CStringGetTextDatum(evs[i].event_id);
	if (m == 0)
		return;

	if (events_plan == NULL)
	{
		Oid			t[1] = {TEXTARRAYOID};

		events_plan = keep_plan("SELECT event_id, event FROM evpipe.events"
								" WHERE event_id = ANY ($1)", 1, t);
		dests_plan = keep_plan("SELECT event_id, destination FROM evpipe.outbox WHERE event_id = ANY ($1)"
							   " UNION SELECT event_id, destination FROM evpipe.delivered WHERE event_id = ANY ($1)"
							   " UNION SELECT event_id, destination FROM evpipe.dead_letters WHERE event_id = ANY ($1)",
							   1, t);
	}
	values[0] = PointerGetDatum(construct_array(ids, m, TEXTOID, -1, false, TYPALIGN_INT));

	/* not read-only: a fresh snapshot sees what other sessions committed */
	if (SPI_execute_plan(events_plan, values, NULL, false, 0) != SPI_OK_SELECT)
		elog(ERROR, "evpipe: looking up events failed");
	if (SPI_processed == 0 && !after_write)
	{
		/* nothing taken: only unroutable events need an answer */
		for (i = 0; i < n; i++)
			if (BATCH_OPEN(&evs[i]) && evs[i].dests == NIL)
				break;
		if (i == n)
			return;
	}

	/* id -> stored event */
	rows = id_table("evpipe batch rows", SPI_processed);
	for (r = 0; r < SPI_processed; r++)
	{
		BatchIdEntry *ent = hash_search(rows,
										SPI_getvalue(SPI_tuptable->vals[r],
													 SPI_tuptable->tupdesc, 1),
										HASH_ENTER, NULL);

		ent->index = (int) r;
	}

	for (i = 0; i < n; i++)
	{
		BatchEvent *e = &evs[i];
		BatchIdEntry *ent;
		bool		isnull;

		if (!BATCH_OPEN(e))
			continue;
		ent = hash_search(rows, e->event_id, HASH_FIND, NULL);
		if (ent == NULL)
		{
			if (e->dests == NIL)
			{
				char		extra[300];

				current_batch_index = i;
				snprintf(extra, sizeof(extra), "event type %s, source %s, priority %s",
						 e->event_type, e->source, e->priority ? e->priority : "(none)");
				reject(ERRCODE_INVALID_PARAMETER_VALUE, "$.eventType", "route", extra,
					   "An evpipe_admin adds routes with evpipe.add_route(); evpipe.route_explain() shows the rules.",
					   "no route matches event type \"%s\"", e->event_type);
			}
			if (after_write)
				ereport(ERROR,
						(errcode(ERRCODE_T_R_SERIALIZATION_FAILURE),
						 errmsg("event \"%s\" was changed concurrently", e->event_id),
						 errhint("Retry the call.")));
			continue;
		}
		if (!jsonb_same(DatumGetJsonbP(SPI_getbinval(SPI_tuptable->vals[ent->index],
													 SPI_tuptable->tupdesc, 2,
													 &isnull)),
						e->envelope))
			batch_conflict(i, e->event_id,
						   "an eventId identifies one event, and a retry must send the same content");
		e->status = "duplicate";
	}

	/* the destinations recorded for the duplicates */
	if (SPI_execute_plan(dests_plan, values, NULL, false, 0) != SPI_OK_SELECT)
		elog(ERROR, "evpipe: looking up destinations failed");
	stored = id_table("evpipe batch stored", m);
	dests = palloc0(sizeof(List *) * m);
	for (r = 0; r < SPI_processed; r++)
	{
		HeapTuple	tup = SPI_tuptable->vals[r];
		bool		found;
		BatchIdEntry *ent = hash_search(stored,
										SPI_getvalue(tup, SPI_tuptable->tupdesc, 1),
										HASH_ENTER, &found);

		if (!found)
			ent->index = hash_get_num_entries(stored) - 1;
		dests[ent->index] = lappend(dests[ent->index],
									SPI_getvalue(tup, SPI_tuptable->tupdesc, 2));
	}
	for (i = 0; i < n; i++)
	{
		BatchEvent *e = &evs[i];
		BatchIdEntry *ent;

		if (e->first >= 0 || e->status == NULL || strcmp(e->status, "duplicate") != 0)
			continue;
		ent = hash_search(stored, e->event_id, HASH_FIND, NULL);
		e->dests = ent ? sorted_names(dests[ent->index]) : NIL;
	}
}

/*
 * Write a batch. The common case, all ids new, goes in with a plain INSERT
 * in a subtransaction. If an id is taken (a retried batch, or another
 * session meanwhile: 23505), that is rolled back, the taken ids are looked
 * up (duplicates or conflicts), and the rest goes in with ON CONFLICT DO
 * NOTHING (speculative insertion, slower), after which the ids skipped are
 * looked up again.
 */
static void
batch_write(BatchEvent *evs, int n, Oid caller)
{
	MemoryContext cxt = CurrentMemoryContext;
	ResourceOwner owner = CurrentResourceOwner;
	volatile bool taken = false;
	int			i;

	/* an unroutable event is a duplicate of a stored one, or refused */
	for (i = 0; i < n; i++)
		if (BATCH_OPEN(&evs[i]) && evs[i].dests == NIL)
		{
			batch_existing(evs, n, false);
			break;
		}

	BeginInternalSubTransaction(NULL);
	MemoryContextSwitchTo(cxt);
	PG_TRY();
	{
		(void) batch_insert(evs, n, caller, false);
		ReleaseCurrentSubTransaction();
		MemoryContextSwitchTo(cxt);
		CurrentResourceOwner = owner;
	}
	PG_CATCH();
	{
		ErrorData  *edata;

		MemoryContextSwitchTo(cxt);
		edata = CopyErrorData();
		if (edata->sqlerrcode != ERRCODE_UNIQUE_VIOLATION)
			PG_RE_THROW();
		FlushErrorState();
		RollbackAndReleaseCurrentSubTransaction();
		MemoryContextSwitchTo(cxt);
		CurrentResourceOwner = owner;
		FreeErrorData(edata);
		taken = true;
	}
	PG_END_TRY();

	if (taken)
	{
		for (i = 0; i < n; i++)
			if (evs[i].status != NULL && strcmp(evs[i].status, "accepted") == 0)
				evs[i].status = NULL;
		batch_existing(evs, n, false);
		(void) batch_insert(evs, n, caller, true);
		batch_existing(evs, n, true);
	}
}

/* The answer for one event of a batch. */
static void
push_batch_answer(JsonbParseState **ps, BatchEvent *e)
{
	pushJsonbValue(ps, WJB_BEGIN_OBJECT, NULL);
	push_str(ps, "eventId", e->event_id);
	push_str(ps, "status", e->status);
	push_str_array(ps, "destinations", e->dests);
	pushJsonbValue(ps, WJB_END_OBJECT, NULL);
}

/*
 * SQL: evpipe.ingest_batch(events jsonb, source text DEFAULT NULL)
 * RETURNS jsonb
 *
 * Ingest a JSON array of events in one call, all or nothing: each event is
 * checked like evpipe.ingest (paths in errors start at $[i]), then the new
 * ones and their outbox rows are written with one statement. Answers an
 * array with one {eventId, status, destinations} per event, in order.
 */
Datum
evpipe_ingest_batch(PG_FUNCTION_ARGS)
{
	IngestCall	call;
	Jsonb	   *arr;
	char	   *source_arg;
	int			n;
	int			i;
	BatchEvent *evs;
	MemoryContext batch_cxt;
	MemoryContext event_cxt;
	JsonbIterator *it;
	JsonbValue	v;
	JsonbIteratorToken tok;
	HTAB	   *seen;
	JsonbParseState *ps = NULL;
	JsonbValue *res;
	bool		any_accepted = false;

	arr = call_args(fcinfo, "events", &source_arg);
	if (!JB_ROOT_IS_ARRAY(arr) || JB_ROOT_IS_SCALAR(arr))
		reject(ERRCODE_SQL_JSON_ARRAY_NOT_FOUND, "$", "type", NULL,
			   "Send the events as a JSON array; evpipe.ingest takes one event.",
			   "events must be a JSON array");
	n = JB_ROOT_COUNT(arr);
	if (n > evpipe_max_batch_events)
	{
		char		extra[96];

		snprintf(extra, sizeof(extra), "%d events, the limit is %d", n,
				 evpipe_max_batch_events);
		reject(ERRCODE_INVALID_PARAMETER_VALUE, "$", "maxItems", extra,
			   "The limit is evpipe.max_batch_events; split the batch.",
			   "too many events in one batch");
	}

	enter_call(fcinfo, &call);
	batch_cxt = CurrentMemoryContext;
	event_cxt = AllocSetContextCreate(batch_cxt, "evpipe batch event",
									  ALLOCSET_DEFAULT_SIZES);
	evs = palloc0(sizeof(BatchEvent) * Max(n, 1));
	seen = id_table("evpipe batch ids", n);

	/* check, normalise and route each event; keep what is written */
	i = 0;
	it = JsonbIteratorInit(&arr->root);
	while ((tok = JsonbIteratorNext(&it, &v, true)) != WJB_DONE)
	{
		EpEvent		ev;
		List	   *dests;
		Jsonb	   *raw;
		BatchEvent *e;
		BatchIdEntry *ent;
		bool		found;
		MemoryContext old;

		if (tok != WJB_ELEM)
			continue;
		CHECK_FOR_INTERRUPTS();
		current_batch_index = i;
		e = &evs[i];
		old = MemoryContextSwitchTo(event_cxt);
		raw = JsonbValueToJsonb(&v);
		prepare_event(raw, source_arg, call.caller, &ev);
		dests = route_event(&ev);

		MemoryContextSwitchTo(batch_cxt);
		e->event_id = pstrdup(ev.event_id);
		e->event_type = pstrdup(ev.event_type);
		e->version = ev.type->version;
		e->source = pstrdup(ev.source);
		e->ts = ev.ts;
		e->correlation_id = ev.correlation_id ? pstrdup(ev.correlation_id) : NULL;
		e->priority = ev.priority ? pstrdup(ev.priority) : NULL;
		e->traceparent = ev.traceparent ? pstrdup(ev.traceparent) : new_traceparent();
		e->envelope = jsonb_copy(ev.envelope);
		e->dests = list_copy(dests);	/* names live in the configuration */
		e->first = -1;

		/* the same id earlier in the batch: a duplicate, or a conflict */
		ent = hash_search(seen, e->event_id, HASH_ENTER, &found);
		if (found)
		{
			if (!jsonb_same(evs[ent->index].envelope, e->envelope))
				batch_conflict(i, e->event_id,
							   psprintf("event $[%d] has this eventId with other content",
										ent->index));
			e->first = ent->index;
		}
		else
			ent->index = i;
		MemoryContextSwitchTo(old);
		MemoryContextReset(event_cxt);
		i++;
	}
	current_batch_index = -1;
	current_event_id = NULL;
	current_source = NULL;

	batch_write(evs, n, call.caller);
	for (i = 0; i < n; i++)
		if (evs[i].status != NULL && strcmp(evs[i].status, "accepted") == 0)
		{
			any_accepted = true;
			ep_metric_add(EP_MK_INGEST, evs[i].event_type, NULL, EP_M_INGESTED, 1);
		}

	/* repeats within the batch answer like their first occurrence */
	pushJsonbValue(&ps, WJB_BEGIN_ARRAY, NULL);
	for (i = 0; i < n; i++)
	{
		BatchEvent *e = &evs[i];

		if (e->first >= 0)
		{
			e->status = "duplicate";
			e->dests = sorted_names(evs[e->first].dests);
		}
		if (strcmp(e->status, "duplicate") == 0)
			ep_metric_add(EP_MK_INGEST, e->event_type, NULL, EP_M_DUPLICATE, 1);
		push_batch_answer(&ps, e);
	}
	res = pushJsonbValue(&ps, WJB_END_ARRAY, NULL);
	if (any_accepted)
	{
		evpipe_request_wake();
		set_postgrest_status();
	}
	PG_RETURN_JSONB_P(end_call(&call, JsonbValueToJsonb(res)));
}
