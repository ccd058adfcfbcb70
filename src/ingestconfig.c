/*-------------------------------------------------------------------------
 *
 * ingestconfig.c
 *	  The configuration of ingest, cached per backend: event types (each
 *	  type's newest version, its schema compiled on first use), sources with
 *	  their role bindings and limits, routes, and the ordered destinations.
 *	  Loaded with SPI on first use and dropped by a relcache invalidation
 *	  that a trigger on the configuration tables sends at commit.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "pg_jsonc.h"

#include "catalog/namespace.h"
#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/inval.h"
#include "utils/jsonb.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/snapmgr.h"

#include "evpipe.h"
#include "ingest.h"
#include "jsonschema.h"
#include "ratelimit.h"

/* The cached configuration; valid is false until it is loaded. */
EpIngestConfig ep_ingest_config;

static bool callback_registered = false;

/* Drop the cached configuration (relcache callback and explicit calls). */
void
evpipe_config_invalidate(void)
{
	ep_ingest_config.valid = false;
}

/* Relcache callback: forget the configuration if one of its tables changed. */
static void
config_relcache_cb(Datum arg, Oid relid)
{
	int			i;

	if (!ep_ingest_config.valid)
		return;
	if (relid == InvalidOid)
	{
		ep_ingest_config.valid = false;
		return;
	}
	for (i = 0; i < N_CONFIG_RELS; i++)
		if (ep_ingest_config.relids[i] == relid)
			ep_ingest_config.valid = false;
}

/* Order event types by name, bytewise (for qsort and bsearch). */
static int
cmp_types(const void *a, const void *b)
{
	return strcmp(((const EpTypeEntry *) a)->name,
				  ((const EpTypeEntry *) b)->name);
}

/* Order sources by name, bytewise (for qsort and bsearch). */
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
	r = MemoryContextStrdup(ep_ingest_config.cxt, v);
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
	if (ep_ingest_config.cxt == NULL)
		ep_ingest_config.cxt = AllocSetContextCreate(CacheMemoryContext,
													 "evpipe configuration",
													 ALLOCSET_SMALL_SIZES);
	for (j = 0; j < ep_ingest_config.ntypes; j++)
		if (ep_ingest_config.types[j].compiled)
			ep_schema_free(ep_ingest_config.types[j].compiled);
	MemoryContextReset(ep_ingest_config.cxt);
	memset(&ep_ingest_config.ntypes, 0,
		   sizeof(ep_ingest_config) - offsetof(typeof(ep_ingest_config), ntypes));

	/* An invalidation arriving while we load makes us load again next time */
	ep_ingest_config.valid = true;

	nsp = get_namespace_oid("evpipe", false);
	for (j = 0; j < N_CONFIG_RELS; j++)
		ep_ingest_config.relids[j] = get_relname_relid(relnames[j], nsp);

	/*
	 * Read with the latest snapshot, not the statement's: an invalidation
	 * consumed before this point is for a commit this snapshot sees; one
	 * consumed later clears ep_ingest_config.valid again.
	 */
	PushActiveSnapshot(GetLatestSnapshot());

	spi_config_query("SELECT DISTINCT ON (event_type) event_type, version, enabled, schema "
					 "FROM evpipe.event_types ORDER BY event_type, version DESC");
	ep_ingest_config.ntypes = (int) SPI_processed;
	ep_ingest_config.types = MemoryContextAllocZero(ep_ingest_config.cxt,
													sizeof(EpTypeEntry) * (SPI_processed + 1));
	for (i = 0; i < SPI_processed; i++)
	{
		HeapTuple	tup = SPI_tuptable->vals[i];
		TupleDesc	desc = SPI_tuptable->tupdesc;
		EpTypeEntry *t = &ep_ingest_config.types[i];
		bool		isnull;
		MemoryContext old;

		t->name = spi_text(tup, desc, 1);
		t->version = DatumGetInt32(SPI_getbinval(tup, desc, 2, &isnull));
		t->enabled = DatumGetBool(SPI_getbinval(tup, desc, 3, &isnull));
		old = MemoryContextSwitchTo(ep_ingest_config.cxt);
		t->schema = DatumGetJsonbPCopy(SPI_getbinval(tup, desc, 4, &isnull));
		MemoryContextSwitchTo(old);
	}
	qsort(ep_ingest_config.types, ep_ingest_config.ntypes, sizeof(EpTypeEntry), cmp_types);

	spi_config_query("SELECT s.source, s.event_type, s.id_field, s.timestamp_field, "
					 "ARRAY(SELECT r.role_name::text FROM evpipe.source_roles r "
					 "WHERE r.source = s.source ORDER BY 1), l.per_sec, l.burst "
					 "FROM evpipe.sources s LEFT JOIN evpipe.source_limits l USING (source)");
	ep_ingest_config.nsources = (int) SPI_processed;
	ep_ingest_config.sources = MemoryContextAllocZero(ep_ingest_config.cxt,
													  sizeof(EpSourceEntry) * (SPI_processed + 1));
	for (i = 0; i < SPI_processed; i++)
	{
		HeapTuple	tup = SPI_tuptable->vals[i];
		TupleDesc	desc = SPI_tuptable->tupdesc;
		EpSourceEntry *s = &ep_ingest_config.sources[i];
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
		s->roles = MemoryContextAllocZero(ep_ingest_config.cxt, sizeof(char *) * (n + 1));
		for (k = 0; k < n; k++)
			s->roles[k] = MemoryContextStrdup(ep_ingest_config.cxt,
											  TextDatumGetCString(elems[k]));
	}
	qsort(ep_ingest_config.sources, ep_ingest_config.nsources, sizeof(EpSourceEntry), cmp_sources);

	spi_config_query("SELECT id, event_type, destination, source, priority, enabled "
					 "FROM evpipe.routes ORDER BY id");
	ep_ingest_config.nroutes = (int) SPI_processed;
	ep_ingest_config.routes = MemoryContextAllocZero(ep_ingest_config.cxt,
													 sizeof(EpRouteEntry) * (SPI_processed + 1));
	for (i = 0; i < SPI_processed; i++)
	{
		HeapTuple	tup = SPI_tuptable->vals[i];
		TupleDesc	desc = SPI_tuptable->tupdesc;
		EpRouteEntry *r = &ep_ingest_config.routes[i];
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
	ep_ingest_config.ordering = get_attnum(get_relname_relid("outbox", nsp), "ordering_key") != InvalidAttrNumber;
	if (ep_ingest_config.ordering)
	{
		spi_config_query("SELECT name, COALESCE(config ->> 'ordering_key', CASE WHEN kind = 'sqs'"
						 " AND config ->> 'queue_url' LIKE '%.fifo' THEN COALESCE(config ->> 'message_group_field', 'source') END)"
						 " FROM evpipe.destinations WHERE config ? 'ordering_key'"
						 " OR (kind = 'sqs' AND config ->> 'queue_url' LIKE '%.fifo')"
						 " ORDER BY name COLLATE \"C\"");
		ep_ingest_config.norders = (int) SPI_processed;
		ep_ingest_config.orders = MemoryContextAllocZero(ep_ingest_config.cxt,
														 sizeof(EpOrderEntry) * (SPI_processed + 1));
		for (i = 0; i < SPI_processed; i++)
		{
			ep_ingest_config.orders[i].destination = spi_text(SPI_tuptable->vals[i], SPI_tuptable->tupdesc, 1);
			ep_ingest_config.orders[i].path = spi_text(SPI_tuptable->vals[i], SPI_tuptable->tupdesc, 2);
		}
	}
	PopActiveSnapshot();
}

/* Make sure the configuration is loaded. Requires SPI. */
void
ep_ingest_config_ensure(void)
{
	if (!ep_ingest_config.valid)
		config_load();
}

/* The cached event type of a name (its newest version), or NULL. */
EpTypeEntry *
ep_ingest_find_type(const char *name)
{
	EpTypeEntry key;

	key.name = (char *) name;
	return bsearch(&key, ep_ingest_config.types, ep_ingest_config.ntypes, sizeof(EpTypeEntry),
				   cmp_types);
}

/* The cached source of a name, or NULL. */
EpSourceEntry *
ep_ingest_find_source(const char *name)
{
	EpSourceEntry key;

	key.source = (char *) name;
	return bsearch(&key, ep_ingest_config.sources, ep_ingest_config.nsources,
				   sizeof(EpSourceEntry), cmp_sources);
}

/*
 * Convert a jsonb schema to json-c for the validator: NULL with *too_deep
 * set when it nests too deeply (NULL alone is a JSON null).
 */
struct json_object *
ep_ingest_schema_to_jsonc(Jsonb *schema, int *too_deep)
{
	return evpipe_jsonb_to_jsonc(&schema->root, evpipe_max_depth * 2 + 8,
								 too_deep);
}

/* The compiled schema of a type's newest version, compiled on first use. */
EpSchema *
ep_ingest_type_schema(EpTypeEntry *t)
{
	struct json_object *obj;
	EpSchemaError err;
	int			too_deep;

	if (t->compiled)
		return t->compiled;
	obj = ep_ingest_schema_to_jsonc(t->schema, &too_deep);
	if (too_deep)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("schema of event type \"%s\" version %d nests too deeply",
						t->name, t->version),
				 errhint("Raise evpipe.max_depth or register a flatter schema.")));
	memset(&err, 0, sizeof(err));
	t->compiled = ep_schema_compile(obj, evpipe_max_depth, &err);
	if (obj)
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
