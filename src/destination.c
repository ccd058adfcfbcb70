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

#include "pg_jsonc.h"

#include "common/base64.h"
#include "utils/builtins.h"
#include "utils/memutils.h"

#include "engine.h"
#include "enginedb.h"
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

/*
 * A relation changed (InvalidOid: any, or unknown): reload the
 * destinations if it was theirs or the outbox's (the host tells).
 */
void
ep_destinations_changed(Oid relid)
{
	if (relid == InvalidOid || relid == ep_worker.dest_relid || relid == ep_worker.outbox_relid)
		ep_worker.dests_valid = false;
}

/* A config member, or NULL. */
static struct json_object *
config_get(struct json_object *cfg, const char *key)
{
	struct json_object *v = NULL;

	if (cfg == NULL || !json_object_object_get_ex(cfg, key, &v))
		return NULL;
	return v;
}

/* Whether a config member is a number. */
static bool
config_is_number(struct json_object *v)
{
	return v != NULL && (json_object_is_type(v, json_type_int) ||
						 json_object_is_type(v, json_type_double));
}

/* An integer config key, or dflt. */
static int
config_int(struct json_object *cfg, const char *key, int dflt)
{
	struct json_object *v = config_get(cfg, key);

	return config_is_number(v) ? json_object_get_int(v) : dflt;
}

/* A numeric config key, or dflt. */
static double
config_double(struct json_object *cfg, const char *key, double dflt)
{
	struct json_object *v = config_get(cfg, key);

	return config_is_number(v) ? json_object_get_double(v) : dflt;
}

/* A boolean config key, or dflt. */
static bool
config_bool(struct json_object *cfg, const char *key, bool dflt)
{
	struct json_object *v = config_get(cfg, key);

	if (v == NULL || !json_object_is_type(v, json_type_boolean))
		return dflt;
	return json_object_get_boolean(v);
}

/* A string config key (palloc'd), or NULL. */
static char *
config_str(struct json_object *cfg, const char *key)
{
	struct json_object *v = config_get(cfg, key);

	if (v == NULL || !json_object_is_type(v, json_type_string))
		return NULL;
	return pnstrdup(json_object_get_string(v), json_object_get_string_len(v));
}

/* Headers object of a config as a list of "Name: value" strings. */
static List *
config_headers(struct json_object *cfg)
{
	struct json_object *hv = config_get(cfg, "headers");
	List	   *out = NIL;

	if (hv == NULL || !json_object_is_type(hv, json_type_object))
		return NIL;
	{
		json_object_object_foreach(hv, name, v)
		{
			if (!json_object_is_type(v, json_type_string))
				continue;
			out = lappend(out, psprintf("%s: %s", name, json_object_get_string(v)));
		}
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

/* Drop the config pointers of a list of requests before a reload. */
static void
forget_request_dests(dlist_head *list)
{
	dlist_iter	iter;

	dlist_foreach(iter, list)
	{
		DeliveryRequest *r = dlist_container(DeliveryRequest, node, iter.cur);

		r->dest = NULL;
	}
}

/*
 * Point a list of requests at their destination's new config, by name, and
 * count their rows as in flight there. A destination that is gone leaves
 * the pointer NULL: the request settles without one.
 */
static void
repoint_request_dests(dlist_head *list)
{
	dlist_iter	iter;

	dlist_foreach(iter, list)
	{
		DeliveryRequest *r = dlist_container(DeliveryRequest, node, iter.cur);
		int			j;

		for (j = 0; j < ep_worker.ndests; j++)
			if (strcmp(ep_worker.dests[j].name, r->dest_name) == 0)
			{
				r->dest = &ep_worker.dests[j];
				ep_worker.dests[j].in_flight += r->nitems;
				break;
			}
	}
}

/* Load all destinations. Requires a transaction and SPI. */
void
ep_load_destinations(void)
{
	MemoryContext old;
	uint64		i;
	EpRows	   *rows;

	if (ep_worker.dest_cxt == NULL)
		ep_worker.dest_cxt = AllocSetContextCreate(TopMemoryContext,
										   "evpipe destinations",
										   ALLOCSET_DEFAULT_SIZES);
	/*
	 * Requests in curl and requests waiting for their rate slot keep their
	 * own copies of what they send; drop their pointers into the old configs.
	 */
	forget_request_dests(&ep_worker.active);
	forget_request_dests(&ep_worker.scheduled);
	MemoryContextReset(ep_worker.dest_cxt);
	ep_worker.ndests = 0;
	ep_worker.dests = NULL;
	ep_worker.dests_valid = true;
	ep_worker.ordering = ep_db_has_ordering();
	{
		EpRows	   *has = ep_db_exec(EP_SQL_HAS_RATE_SCHEDULE, NULL);

		ep_worker.shared_rate = has->processed == 1 && ep_cell(has, 0, 0) != NULL &&
			strcmp(ep_cell(has, 0, 0), "t") == 0;
	}

	/*
	 * Read with the latest snapshot: an invalidation consumed before this
	 * point is for a commit this snapshot sees; one after it clears
	 * dests_valid again.
	 */
	rows = ep_db_exec(EP_SQL_DESTINATIONS, NULL);

	old = MemoryContextSwitchTo(ep_worker.dest_cxt);
	ep_worker.ndests = (int) rows->processed;
	ep_worker.dests = palloc0(sizeof(DestConfig) * (rows->processed + 1));
	for (i = 0; i < rows->processed; i++)
	{
		DestConfig *d = &ep_worker.dests[i];
		const char *cfg_text = ep_cell(rows, i, 3);
		struct json_object *cfg = cfg_text ? json_tokener_parse(cfg_text) : NULL;
		char	   *secret;

		if (cfg == NULL || !json_object_is_type(cfg, json_type_object))
		{
			if (cfg)
				json_object_put(cfg);
			ereport(ERROR,
					(errcode(ERRCODE_DATA_CORRUPTED),
					 errmsg("evpipe: the config of destination \"%s\" is not a JSON object",
							ep_cell(rows, i, 0))));
		}
		d->name = pstrdup(ep_cell(rows, i, 0));
		d->kind = pstrdup(ep_cell(rows, i, 1));
		d->ops = kind_named(d->kind);
		d->enabled = strcmp(ep_cell(rows, i, 2), "t") == 0;
		d->owner = (Oid) ep_cell_int(rows, i, 4, 10);
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
		d->ordered = ep_worker.ordering && (d->fifo || config_get(cfg, "ordering_key") != NULL);
		if (d->fifo)
			d->max_in_flight = 10;	/* one batch in flight, in order */
		d->slot = ep_rate_slot(d->name);
		d->backlog = true;		/* unknown: look */
		json_object_put(cfg);
		if (!d->tls_verify)
			ereport(LOG,
					(errmsg("evpipe event=tls_verify_off destination=%s", d->name),
					 errdetail("TLS certificate verification is turned off for this destination by its config.")));
	}
	MemoryContextSwitchTo(old);

	/* recount in-flight rows per destination and re-point requests */
	repoint_request_dests(&ep_worker.active);
	repoint_request_dests(&ep_worker.scheduled);
}
