/*-------------------------------------------------------------------------
 *
 * destination.c
 *	  The worker's cache of evpipe.destinations: each destination's config
 *	  parsed once into a DestConfig with its kind (a table of kinds, no
 *	  string compares at delivery time), rebuilt when the table changes.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "catalog/namespace.h"
#include "common/base64.h"
#include "executor/spi.h"
#include "utils/builtins.h"
#include "utils/inval.h"
#include "utils/jsonb.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/snapmgr.h"

#include "engine.h"
#include "evpipe.h"
#include "ratelimit.h"

/* destination defaults: see README, "Failure taxonomy" */
#define BREAKER_WINDOW_MS 5000
#define MAX_AGE_MS (24 * 3600 * 1000)	/* AWS EventBridge's bound */
/* Every destination kind; a destination of another kind is never claimed. */
static const DeliveryKind *const kinds[] = {&http_kind, &sqs_kind, &graphql_kind, &function_kind};

/* The kind of a destination by its name, or NULL. */
static const DeliveryKind *
kind_named(const char *name)
{
	int			i;

	for (i = 0; i < lengthof(kinds); i++)
		if (strcmp(kinds[i]->name, name) == 0)
			return kinds[i];
	return NULL;
}

/* Relcache callback: destinations changed. */
static void
dest_relcache_cb(Datum arg, Oid relid)
{
	if (relid == InvalidOid || relid == ep_worker.dest_relid || relid == ep_worker.outbox_relid)
		ep_worker.dests_valid = false;
}

/* An integer config key, or dflt. */
static int
config_int(Jsonb *cfg, const char *key, int dflt)
{
	JsonbValue *v = evpipe_jsonb_get(&cfg->root, key);

	if (v == NULL || v->type != jbvNumeric)
		return dflt;
	return DatumGetInt32(DirectFunctionCall1(numeric_int4,
											 NumericGetDatum(v->val.numeric)));
}

/* A numeric config key, or dflt. */
static double
config_double(Jsonb *cfg, const char *key, double dflt)
{
	JsonbValue *v = evpipe_jsonb_get(&cfg->root, key);

	if (v == NULL || v->type != jbvNumeric)
		return dflt;
	return DatumGetFloat8(DirectFunctionCall1(numeric_float8,
											  NumericGetDatum(v->val.numeric)));
}

/* A boolean config key, or dflt. */
static bool
config_bool(Jsonb *cfg, const char *key, bool dflt)
{
	JsonbValue *v = evpipe_jsonb_get(&cfg->root, key);

	if (v == NULL || v->type != jbvBool)
		return dflt;
	return v->val.boolean;
}

/* A string config key (palloc'd), or NULL. */
static char *
config_str(Jsonb *cfg, const char *key)
{
	JsonbValue *v = evpipe_jsonb_get(&cfg->root, key);

	if (v == NULL || v->type != jbvString)
		return NULL;
	return pnstrdup(v->val.string.val, v->val.string.len);
}

/* Headers object of a config as a list of "Name: value" strings. */
static List *
config_headers(Jsonb *cfg)
{
	JsonbValue *hv = evpipe_jsonb_get(&cfg->root, "headers");
	List	   *out = NIL;
	JsonbIterator *it;
	JsonbValue	k;
	JsonbValue	v;
	JsonbIteratorToken tok;

	if (hv == NULL || hv->type != jbvBinary)
		return NIL;
	it = JsonbIteratorInit(hv->val.binary.data);
	while ((tok = JsonbIteratorNext(&it, &k, true)) != WJB_DONE)
	{
		if (tok != WJB_KEY)
			continue;
		tok = JsonbIteratorNext(&it, &v, true);
		if (v.type != jbvString)
			continue;
		out = lappend(out, psprintf("%.*s: %.*s", k.val.string.len,
									k.val.string.val, v.val.string.len,
									v.val.string.val));
	}
	return out;
}

/* Decode a webhook secret: whsec_<base64> per Standard Webhooks, or raw. */
static void
decode_secret(DestConfig *d, const char *secret)
{
	if (secret == NULL)
		return;
	if (strncmp(secret, "whsec_", 6) == 0)
	{
		const char *b64 = secret + 6;
		int			len = strlen(b64);
		int			maxlen = pg_b64_dec_len(len);
		char	   *buf = palloc(maxlen + 1);
		int			n = pg_b64_decode(b64, len, buf, maxlen);

		if (n > 0)
		{
			d->secret = buf;
			d->secret_len = n;
			return;
		}
	}
	d->secret = pstrdup(secret);
	d->secret_len = strlen(secret);
}

/* Load all destinations. Requires a transaction and SPI. */
void
ep_load_destinations(void)
{
	MemoryContext old;
	uint64		i;
	dlist_iter	iter;

	if (ep_worker.dest_cxt == NULL)
		ep_worker.dest_cxt = AllocSetContextCreate(TopMemoryContext,
										   "evpipe destinations",
										   ALLOCSET_DEFAULT_SIZES);
	/* in-flight requests keep their own copies; drop their pointers */
	dlist_foreach(iter, &ep_worker.active)
	{
		DeliveryRequest *r = dlist_container(DeliveryRequest, node, iter.cur);

		r->dest = NULL;
	}
	MemoryContextReset(ep_worker.dest_cxt);
	ep_worker.ndests = 0;
	ep_worker.dests = NULL;
	ep_worker.dests_valid = true;
	ep_worker.dest_relid = get_relname_relid("destinations",
									 get_namespace_oid("evpipe", false));
	ep_worker.outbox_relid = get_relname_relid("outbox", get_namespace_oid("evpipe", false));
	/* a database still at 0.1.0 has no ordering keys */
	ep_worker.ordering = get_attnum(ep_worker.outbox_relid, "ordering_key") != InvalidAttrNumber;

	/*
	 * Read with the latest snapshot: an invalidation consumed before this
	 * point is for a commit this snapshot sees; one after it clears
	 * dests_valid again.
	 */
	PushActiveSnapshot(GetLatestSnapshot());
	if (SPI_execute("SELECT name, kind, enabled, config, "
					"COALESCE((SELECT oid FROM pg_catalog.pg_roles WHERE rolname = owner), 10) "
					"FROM evpipe.destinations ORDER BY name",
					true, 0) != SPI_OK_SELECT)
		elog(ERROR, "evpipe: could not read destinations");
	PopActiveSnapshot();

	old = MemoryContextSwitchTo(ep_worker.dest_cxt);
	ep_worker.ndests = (int) SPI_processed;
	ep_worker.dests = palloc0(sizeof(DestConfig) * (SPI_processed + 1));
	for (i = 0; i < SPI_processed; i++)
	{
		HeapTuple	tup = SPI_tuptable->vals[i];
		TupleDesc	desc = SPI_tuptable->tupdesc;
		DestConfig *d = &ep_worker.dests[i];
		bool		isnull;
		Jsonb	   *cfg;
		char	   *secret;

		d->name = SPI_getvalue(tup, desc, 1);
		d->kind = SPI_getvalue(tup, desc, 2);
		d->ops = kind_named(d->kind);
		d->enabled = DatumGetBool(SPI_getbinval(tup, desc, 3, &isnull));
		cfg = DatumGetJsonbPCopy(SPI_getbinval(tup, desc, 4, &isnull));
		d->owner = DatumGetObjectId(SPI_getbinval(tup, desc, 5, &isnull));
		d->max_attempts = config_int(cfg, "max_attempts", 8);
		d->timeout_ms = config_int(cfg, "timeout_ms", 10000);
		d->backoff_base_ms = config_int(cfg, "backoff_base_ms", 1000);
		d->backoff_max_ms = config_int(cfg, "backoff_max_ms", 300000);
		if (d->backoff_max_ms < d->backoff_base_ms)
			d->backoff_max_ms = d->backoff_base_ms;
		d->breaker_threshold = config_int(cfg, "breaker_threshold", 5);
		d->breaker_max_open_ms = config_int(cfg, "breaker_max_open_ms", 60000);
		d->breaker_window_ms = config_int(cfg, "breaker_window_ms", BREAKER_WINDOW_MS);
		d->max_age_ms = config_int(cfg, "max_age_ms", MAX_AGE_MS);
		d->max_in_flight = config_int(cfg, "max_in_flight",
									  Max(1, evpipe_max_in_flight / 2));
		d->rate_limit = config_double(cfg, "rate_limit_per_sec", 0);
		d->rate_burst = config_int(cfg, "rate_limit_burst", 1);
		d->tls_verify = config_bool(cfg, "tls_verify", true);
		d->follow_redirects = config_bool(cfg, "follow_redirects", false);
		d->url = config_str(cfg, "url");
		d->query = config_str(cfg, "query");
		d->function = config_str(cfg, "function");
		d->headers = config_headers(cfg);
		secret = config_str(cfg, "secret");
		decode_secret(d, secret);
		d->queue_url = config_str(cfg, "queue_url");
		d->region = config_str(cfg, "region");
		d->endpoint_url = config_str(cfg, "endpoint_url");
		d->access_key_id = config_str(cfg, "access_key_id");
		d->secret_access_key = config_str(cfg, "secret_access_key");
		d->session_token = config_str(cfg, "session_token");
		d->message_group_field = config_str(cfg, "message_group_field");
		d->fifo = d->queue_url != NULL && strlen(d->queue_url) > 5 &&
			strcmp(d->queue_url + strlen(d->queue_url) - 5, ".fifo") == 0;
		d->ordered = ep_worker.ordering && (d->fifo || evpipe_jsonb_get(&cfg->root, "ordering_key") != NULL);
		if (d->fifo)
			d->max_in_flight = 10;	/* one batch in flight, in order */
		d->slot = ep_rate_slot(d->name);
		d->backlog = true;		/* unknown: look */
		if (!d->tls_verify)
			ereport(LOG,
					(errmsg("evpipe event=tls_verify_off destination=%s", d->name),
					 errdetail("TLS certificate verification is turned off for this destination by its config.")));
	}
	MemoryContextSwitchTo(old);

	/* recount in-flight rows per destination and re-point requests */
	dlist_foreach(iter, &ep_worker.active)
	{
		DeliveryRequest *r = dlist_container(DeliveryRequest, node, iter.cur);
		int			j;

		for (j = 0; j < ep_worker.ndests; j++)
			if (strcmp(ep_worker.dests[j].name, r->dest_name) == 0)
			{
				r->dest = &ep_worker.dests[j];
				ep_worker.dests[j].in_flight += r->nitems;
			}
	}
}

/* Watch evpipe.destinations (and the outbox's shape) for changes. */
void
ep_destinations_init(void)
{
	CacheRegisterRelcacheCallback(dest_relcache_cb, (Datum) 0);
}
