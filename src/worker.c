/*-------------------------------------------------------------------------
 *
 * worker.c
 *	  Delivery workers: claim outbox rows with short leases in one short
 *	  transaction, deliver them outside any transaction (libcurl multi, a
 *	  sliding window of up to evpipe.max_in_flight requests), record the
 *	  outcomes in another short transaction. Function destinations run in
 *	  the database, each in its own subtransaction.
 *
 *	  The wait loop watches the latch, postmaster death and curl's sockets
 *	  together, so SIGTERM and SIGHUP act promptly with requests in flight.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <curl/curl.h>

#include "access/xact.h"
#include "access/xlog.h"
#include "catalog/namespace.h"
#include "catalog/pg_type.h"
#include "common/base64.h"
#include "common/hmac.h"
#include "executor/spi.h"
#include "fmgr.h"
#include "mb/pg_wchar.h"
#include "miscadmin.h"
#include "pgstat.h"
#include "postmaster/bgworker.h"
#include "postmaster/interrupt.h"
#include "storage/ipc.h"
#include "storage/latch.h"
#include "storage/proc.h"
#include "tcop/tcopprot.h"
#include "utils/acl.h"
#include "utils/builtins.h"
#include "utils/guc.h"
#include "utils/inval.h"
#include "utils/jsonb.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/resowner.h"
#include "utils/snapmgr.h"
#include "utils/timestamp.h"
#include "utils/wait_event.h"

#include "common/pg_prng.h"

#include "delivery.h"
#include "evpipe.h"
#include "metrics.h"
#include "netpolicy.h"
#include "ratelimit.h"
#include "retention.h"

#define MAX_SOCKETS 1024

/* destination defaults: see README, "Failure taxonomy" */
#define EP_BREAKER_WINDOW_MS 5000
#define EP_MAX_AGE_MS (24 * 3600 * 1000)	/* AWS EventBridge's bound */

/* rows moved to the dead-letter table per expiry transaction */
#define EXPIRE_BATCH 1000

/* after new work, how long a worker looks again without being woken */
#define LINGER_MS 2

typedef struct SockEntry
{
	curl_socket_t fd;
	int			what;			/* CURL_POLL_IN / OUT / INOUT */
	int			pos;			/* position in the wait set */
	int			set_what;		/* what the wait set waits for */
} SockEntry;

/* A finished attempt, waiting to be recorded. */
typedef struct Outcome
{
	int64		outbox_id;
	int			attempts;
	OutcomeKind kind;
	int			status;
	char	   *error;
	char	   *excerpt;
	TimestampTz next_at;
	char	   *event_id;
	char	   *dest;
} Outcome;

static volatile sig_atomic_t got_sigterm = false;

static struct
{
	int			index;
	MemoryContext loop_cxt;
	MemoryContext tx_caller_cxt;	/* current when the transaction began */
	MemoryContext dest_cxt;
	MemoryContext outcome_cxt;
	bool		dests_valid;
	Oid			dest_relid;
	Oid			outbox_relid;
	bool		ordering;		/* outbox.ordering_key exists (0.2.0) */
	int			ndests;
	DestConfig *dests;
	int			next_dest;		/* round-robin start for claims */
	CURLM	   *multi;
	dlist_head	active;			/* requests in curl */
	dlist_head	scheduled;		/* requests waiting for their rate slot */
	int			nactive;		/* rows in flight or scheduled */
	TimestampTz next_retry;		/* earliest retry this worker scheduled */
	List	   *outcomes;		/* Outcome *, in outcome_cxt */
	SockEntry  *socks;
	int			nsocks;
	bool		socks_changed;	/* sockets added or removed since the set was built */
	WaitEventSet *set;			/* see wait_set() */
	TimestampTz curl_deadline;	/* when curl wants a timeout call; 0: none */
	bool		ext_ready;
	TimestampTz last_claim;
	TimestampTz linger_until;	/* wait briefly, unannounced, until then */
	TimestampTz last_expiry;		/* last max_age_ms sweep (worker 0) */
	TimestampTz last_release;	/* last stale-lease release (worker 0) */
	ResourceOwner owner;		/* for resources used between transactions */
	uint64		delivered_total;
} W;

static void record_outcomes(void);
static void launch_request(DeliveryRequest *r);

/* SIGTERM: finish promptly; the loop gives in-flight rows back. */
static void
worker_sigterm(SIGNAL_ARGS)
{
	int			save_errno = errno;

	got_sigterm = true;
	SetLatch(MyLatch);
	errno = save_errno;
}

/* Register evpipe.workers delivery workers (from _PG_init). */
void
evpipe_worker_register_all(void)
{
	int			i;

	for (i = 0; i < evpipe_workers; i++)
	{
		BackgroundWorker bgw;

		memset(&bgw, 0, sizeof(bgw));
		bgw.bgw_flags = BGWORKER_SHMEM_ACCESS |
			BGWORKER_BACKEND_DATABASE_CONNECTION;
		bgw.bgw_start_time = BgWorkerStart_RecoveryFinished;
		bgw.bgw_restart_time = 1;
		snprintf(bgw.bgw_library_name, BGW_MAXLEN, "evpipe");
		snprintf(bgw.bgw_function_name, BGW_MAXLEN, "evpipe_worker_main");
		snprintf(bgw.bgw_name, BGW_MAXLEN, "evpipe delivery worker %d", i);
		snprintf(bgw.bgw_type, BGW_MAXLEN, "evpipe delivery worker");
		bgw.bgw_main_arg = Int32GetDatum(i);
		RegisterBackgroundWorker(&bgw);
	}
}

/* Clear our shared-memory slot at exit. */
static void
worker_cleanup(int code, Datum arg)
{
	int			i = DatumGetInt32(arg);

	if (evpipe_shared)
	{
		pg_atomic_write_u32(&evpipe_shared->workers[i].pgprocno, 0);
		pg_atomic_write_u32(&evpipe_shared->workers[i].pid, 0);
	}
	if (W.multi)
	{
		curl_multi_cleanup(W.multi);
		W.multi = NULL;
	}
}

/* Relcache callback: destinations changed. */
static void
dest_relcache_cb(Datum arg, Oid relid)
{
	if (relid == InvalidOid || relid == W.dest_relid || relid == W.outbox_relid)
		W.dests_valid = false;
}

/*------------------------------------------------------------------------
 * Destination configuration
 *------------------------------------------------------------------------
 */

static int
config_int(Jsonb *cfg, const char *key, int dflt)
{
	JsonbValue *v = evpipe_jsonb_get(&cfg->root, key);

	if (v == NULL || v->type != jbvNumeric)
		return dflt;
	return DatumGetInt32(DirectFunctionCall1(numeric_int4,
											 NumericGetDatum(v->val.numeric)));
}

static double
config_double(Jsonb *cfg, const char *key, double dflt)
{
	JsonbValue *v = evpipe_jsonb_get(&cfg->root, key);

	if (v == NULL || v->type != jbvNumeric)
		return dflt;
	return DatumGetFloat8(DirectFunctionCall1(numeric_float8,
											  NumericGetDatum(v->val.numeric)));
}

static bool
config_bool(Jsonb *cfg, const char *key, bool dflt)
{
	JsonbValue *v = evpipe_jsonb_get(&cfg->root, key);

	if (v == NULL || v->type != jbvBool)
		return dflt;
	return v->val.boolean;
}

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
static void
load_destinations(void)
{
	MemoryContext old;
	uint64		i;
	dlist_iter	iter;

	if (W.dest_cxt == NULL)
		W.dest_cxt = AllocSetContextCreate(TopMemoryContext,
										   "evpipe destinations",
										   ALLOCSET_DEFAULT_SIZES);
	/* in-flight requests keep their own copies; drop their pointers */
	dlist_foreach(iter, &W.active)
	{
		DeliveryRequest *r = dlist_container(DeliveryRequest, node, iter.cur);

		r->dest = NULL;
	}
	MemoryContextReset(W.dest_cxt);
	W.ndests = 0;
	W.dests = NULL;
	W.dests_valid = true;
	W.dest_relid = get_relname_relid("destinations",
									 get_namespace_oid("evpipe", false));
	W.outbox_relid = get_relname_relid("outbox", get_namespace_oid("evpipe", false));
	/* a database still at 0.1.0 has no ordering keys */
	W.ordering = get_attnum(W.outbox_relid, "ordering_key") != InvalidAttrNumber;

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

	old = MemoryContextSwitchTo(W.dest_cxt);
	W.ndests = (int) SPI_processed;
	W.dests = palloc0(sizeof(DestConfig) * (SPI_processed + 1));
	for (i = 0; i < SPI_processed; i++)
	{
		HeapTuple	tup = SPI_tuptable->vals[i];
		TupleDesc	desc = SPI_tuptable->tupdesc;
		DestConfig *d = &W.dests[i];
		bool		isnull;
		Jsonb	   *cfg;
		char	   *secret;

		d->name = SPI_getvalue(tup, desc, 1);
		d->kind = SPI_getvalue(tup, desc, 2);
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
		d->breaker_window_ms = config_int(cfg, "breaker_window_ms", EP_BREAKER_WINDOW_MS);
		d->max_age_ms = config_int(cfg, "max_age_ms", EP_MAX_AGE_MS);
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
		d->ordered = W.ordering && (d->fifo || evpipe_jsonb_get(&cfg->root, "ordering_key") != NULL);
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
	dlist_foreach(iter, &W.active)
	{
		DeliveryRequest *r = dlist_container(DeliveryRequest, node, iter.cur);
		int			j;

		for (j = 0; j < W.ndests; j++)
			if (strcmp(W.dests[j].name, r->dest_name) == 0)
			{
				r->dest = &W.dests[j];
				W.dests[j].in_flight += r->nitems;
			}
	}
}

static const DeliveryKind *
kind_of(const DestConfig *d)
{
	if (strcmp(d->kind, "http") == 0)
		return &http_kind;
	if (strcmp(d->kind, "sqs") == 0)
		return &sqs_kind;
	if (strcmp(d->kind, "graphql") == 0)
		return &graphql_kind;
	return NULL;
}

/*------------------------------------------------------------------------
 * Outcomes
 *------------------------------------------------------------------------
 */

/* Full-jitter exponential backoff for the attempt that just failed. */
static long
backoff_ms(DestConfig *d, int attempts)
{
	double		cap = d->backoff_base_ms;
	int			i;

	for (i = 1; i < attempts && cap < d->backoff_max_ms; i++)
		cap *= 2;
	if (cap > d->backoff_max_ms)
		cap = d->backoff_max_ms;
	return (long) (pg_prng_double(&pg_global_prng_state) * cap);
}

/* Queue an outcome for recording. */
static void
add_outcome(int64 id, int attempts, OutcomeKind kind, int status,
			const char *error, const char *excerpt, long delay_ms,
			const char *event_id, const char *dest)
{
	MemoryContext old = MemoryContextSwitchTo(W.outcome_cxt);
	Outcome    *o = palloc0(sizeof(Outcome));

	o->outbox_id = id;
	o->attempts = attempts;
	o->kind = kind;
	o->status = status;
	o->error = error ? pstrdup(error) : NULL;
	o->excerpt = excerpt ? pstrdup(excerpt) : NULL;
	o->next_at = TimestampTzPlusMilliseconds(GetCurrentTimestamp(),
											 delay_ms > 0 ? delay_ms : 0);
	o->event_id = pstrdup(event_id);
	o->dest = pstrdup(dest);
	W.outcomes = lappend(W.outcomes, o);
	MemoryContextSwitchTo(old);
}

/*
 * A row of an ordered destination became final: once that is recorded, the
 * next event of its key is the head and may be claimed, so claim (which
 * records the outcomes first) instead of waiting for a tick.
 */
static void
ordered_row_final(DestConfig *d, OutcomeKind kind)
{
	if (d != NULL && d->ordered && kind != OUTCOME_RETRY && kind != OUTCOME_RELEASE)
		d->backlog = true;
}

/*
 * Tell the destination's circuit breaker how an attempt ended (failed: a
 * transient failure) and log when that opens or closes it.
 */
static void
breaker_record(DestConfig *d, bool failed, ItemResult *res)
{
	long		open_ms;

	switch (ep_breaker_record(d->slot, failed, res->unreachable,
							  d->breaker_threshold, d->breaker_window_ms,
							  d->backoff_base_ms, d->breaker_max_open_ms, &open_ms))
	{
		case EP_CIRCUIT_OPEN:
			ereport(LOG,
					(errmsg("evpipe event=circuit_open destination=%s open_ms=%ld status=%d error=\"%s\"",
							d->name, open_ms, res->status, res->error),
					 errhidestmt(true)));
			break;
		case EP_CIRCUIT_CLOSED:
			ereport(LOG,
					(errmsg("evpipe event=circuit_closed destination=%s", d->name),
					 errhidestmt(true)));
			break;
		default:
			break;
	}
}

/* The wait before an item's next attempt: backoff, or Retry-After if longer. */
static long
retry_delay(DestConfig *d, DeliveryItem *item, long retry_after_ms)
{
	long		delay = backoff_ms(d, item->attempts);

	return retry_after_ms > delay ? retry_after_ms : delay;
}

/* Whether an item's next attempt would come after its max_age_ms. */
static bool
retry_too_late(DestConfig *d, DeliveryItem *item, long delay_ms)
{
	TimestampTz next_at;

	if (d->max_age_ms <= 0 || item->created_us == 0)
		return false;
	next_at = TimestampTzPlusMilliseconds(GetCurrentTimestamp(), delay_ms);
	return next_at - item->created_us > (int64) d->max_age_ms * 1000;
}

/*
 * Turn one item's result into an outcome: success, a retry after backoff
 * (or Retry-After), or a dead letter when permanent or out of attempts.
 */
static void
settle_item(DestConfig *d, DeliveryItem *item, ItemResult *res,
			const char *excerpt, long retry_after_ms)
{
	const char *name = d ? d->name : "?";
	int			max_attempts = d ? d->max_attempts : 1;
	long		delay = d ? retry_delay(d, item, retry_after_ms) : 0;

	if (d != NULL && !(res->status == 429 && retry_after_ms > 0))
		breaker_record(d, !res->ok && !res->permanent, res);
	if (res->ok || res->permanent || item->attempts >= max_attempts ||
		(d != NULL && retry_too_late(d, item, delay)))
		ordered_row_final(d, OUTCOME_DEAD);

	if (res->ok)
	{
		ep_metric_add(EP_MK_DELIVERY, name, item->event_type, EP_M_DELIVERED, 1);
		if (item->created_us)
			ep_metric_latency(name, item->event_type,
							  GetCurrentTimestamp() - item->created_us);
		add_outcome(item->outbox_id, item->attempts, OUTCOME_DELIVERED,
					res->status, NULL, NULL, 0, item->event_id, name);
		if (evpipe_log_deliveries)
			ereport(LOG,
					(errmsg("evpipe event=delivered event_id=%s destination=%s attempt=%d status=%d",
							item->event_id, name, item->attempts, res->status),
					 errhidestmt(true)));
	}
	else if (res->status == 429 && retry_after_ms > 0 && d != NULL)
	{
		/* the target asked us to wait: pause it, do not spend the attempt */
		add_outcome(item->outbox_id, item->attempts, OUTCOME_RELEASE,
					res->status, res->error, excerpt, retry_after_ms,
					item->event_id, name);
	}
	else if (res->permanent || item->attempts >= max_attempts || d == NULL)
	{
		ep_metric_add(EP_MK_DELIVERY, name, item->event_type, EP_M_DEAD, 1);
		add_outcome(item->outbox_id, item->attempts, OUTCOME_DEAD,
					res->status, res->error, excerpt, 0, item->event_id, name);
	}
	else if (retry_too_late(d, item, delay))
	{
		char		error[sizeof(res->error) + 128];

		snprintf(error, sizeof(error),
				 "max_age_ms exceeded: no attempt is left within %d ms of ingest; last error: %s",
				 d->max_age_ms, res->error);
		ep_metric_add(EP_MK_DELIVERY, name, item->event_type, EP_M_DEAD, 1);
		add_outcome(item->outbox_id, item->attempts, OUTCOME_DEAD,
					res->status, error, excerpt, 0, item->event_id, name);
	}
	else
	{
		ep_metric_add(EP_MK_DELIVERY, name, item->event_type, EP_M_RETRIED, 1);

		add_outcome(item->outbox_id, item->attempts, OUTCOME_RETRY,
					res->status, res->error, excerpt, delay, item->event_id,
					name);
		{
			TimestampTz at = TimestampTzPlusMilliseconds(GetCurrentTimestamp(), delay);

			if (W.next_retry == 0 || at < W.next_retry)
				W.next_retry = at;
		}
		ereport(LOG,
				(errmsg("evpipe event=retry_scheduled event_id=%s destination=%s attempt=%d status=%d delay_ms=%ld error_class=%s error=\"%s\"",
						item->event_id, name, item->attempts, res->status,
						delay, res->status ? "http" : "transport", res->error),
				 errhidestmt(true)));
	}
}

/* Set an item result. */
void
ep_result_set(ItemResult *res, bool ok, bool permanent, int status,
			  const char *fmt,...)
{
	va_list		ap;

	res->ok = ok;
	res->permanent = permanent;
	res->unreachable = false;
	res->status = status;
	res->error[0] = '\0';
	if (fmt)
	{
		va_start(ap, fmt);
		vsnprintf(res->error, sizeof(res->error), fmt, ap);
		va_end(ap);
	}
}

/*------------------------------------------------------------------------
 * curl plumbing
 *------------------------------------------------------------------------
 */

/* curl socket callback: track which sockets to wait on. No palloc here. */
static int
sock_cb(CURL *easy, curl_socket_t fd, int what, void *userp, void *socketp)
{
	int			i;

	for (i = 0; i < W.nsocks; i++)
		if (W.socks[i].fd == fd)
			break;
	if (what == CURL_POLL_REMOVE)
	{
		if (i < W.nsocks)
		{
			W.socks[i] = W.socks[--W.nsocks];
			W.socks_changed = true;
		}
		return 0;
	}
	if (i == W.nsocks)
	{
		if (W.nsocks >= MAX_SOCKETS)
			return -1;
		W.nsocks++;
		W.socks_changed = true;
	}
	else if (W.socks[i].fd != fd)
		W.socks_changed = true;
	W.socks[i].fd = fd;
	W.socks[i].what = what;
	return 0;
}

/* Wait-set events for what curl wants on a socket. */
static uint32
sock_events(int what)
{
	uint32		ev = 0;

	if (what & CURL_POLL_IN)
		ev |= WL_SOCKET_READABLE;
	if (what & CURL_POLL_OUT)
		ev |= WL_SOCKET_WRITEABLE;
	/* CURL_POLL_NONE is not used by curl; readable is the safe reading */
	return ev ? ev : WL_SOCKET_READABLE;
}

/* curl timer callback: when curl next needs a call without socket activity. */
static int
timer_cb(CURLM *multi, long timeout_ms, void *userp)
{
	W.curl_deadline = timeout_ms < 0 ? 0 :
		TimestampTzPlusMilliseconds(GetCurrentTimestamp(), timeout_ms);
	return 0;
}

/* Keep the first bytes of the answer. No palloc here. */
static size_t
write_cb(char *ptr, size_t size, size_t nmemb, void *userdata)
{
	DeliveryRequest *r = userdata;
	size_t		n = size * nmemb;
	size_t		room = EP_RESPONSE_MAX - r->response_len;

	if (n > room)
	{
		r->response_truncated = true;
		memcpy(r->response + r->response_len, ptr, room);
		r->response_len += room;
	}
	else
	{
		memcpy(r->response + r->response_len, ptr, n);
		r->response_len += n;
	}
	r->response[r->response_len] = '\0';
	return size * nmemb;
}

/* Keep the Retry-After and Content-Type headers. No palloc here. */
static size_t
header_cb(char *buf, size_t size, size_t nitems, void *userdata)
{
	DeliveryRequest *r = userdata;
	size_t		n = size * nitems;
	char	   *dst = NULL;
	size_t		dstlen = 0;
	size_t		skip = 0;

	if (n > 12 && pg_strncasecmp(buf, "retry-after:", 12) == 0)
	{
		dst = r->retry_after;
		dstlen = sizeof(r->retry_after);
		skip = 12;
	}
	else if (n > 13 && pg_strncasecmp(buf, "content-type:", 13) == 0)
	{
		dst = r->content_type;
		dstlen = sizeof(r->content_type);
		skip = 13;
	}
	if (dst)
	{
		size_t		len = n - skip;

		while (len > 0 && (buf[skip] == ' ' || buf[skip] == '\t'))
			skip++, len--;
		while (len > 0 && (buf[skip + len - 1] == '\r' ||
						   buf[skip + len - 1] == '\n' ||
						   buf[skip + len - 1] == ' '))
			len--;
		if (len >= dstlen)
			len = dstlen - 1;
		memcpy(dst, buf + skip, len);
		dst[len] = '\0';
	}
	return n;
}

/* Append a header to a request; false if curl could not. */
bool
ep_curl_header(DeliveryRequest *r, const char *fmt,...)
{
	char		buf[2048];
	va_list		ap;
	struct curl_slist *l;

	va_start(ap, fmt);
	vsnprintf(buf, sizeof(buf), fmt, ap);
	va_end(ap);
	l = curl_slist_append(r->headers, buf);
	if (l == NULL)
		return false;
	r->headers = l;
	return true;
}

/* Free a request and its curl handle. */
static void
request_free(DeliveryRequest *r)
{
	if (r->easy)
	{
		/* removing a handle that was never added fails harmlessly */
		if (W.multi)
			(void) curl_multi_remove_handle(W.multi, r->easy);
		curl_easy_cleanup(r->easy);
	}
	if (r->headers)
		curl_slist_free_all(r->headers);
	MemoryContextDelete(r->cxt);
}

#define SETOPT(e, opt, val) \
	do { if (curl_easy_setopt((e), (opt), (val)) != CURLE_OK) ok = false; } while (0)

/* Run a kind's build() with the worker's resource owner in place. */
static bool
build_request(const DeliveryKind *kind, DeliveryRequest *r, char *error,
			  size_t errlen)
{
	ResourceOwner save = CurrentResourceOwner;
	MemoryContext old = MemoryContextSwitchTo(r->cxt);	/* the body lives as
														 * long as the request */
	bool		ok;

	if (CurrentResourceOwner == NULL)
		CurrentResourceOwner = W.owner;
	ok = kind->build(r, error, errlen);
	CurrentResourceOwner = save;
	MemoryContextSwitchTo(old);
	return ok;
}

/*
 * Start an HTTP request for claimed items. On failure to build or start,
 * the items get outcomes at once.
 */
static void
start_request(DestConfig *d, const DeliveryKind *kind, DeliveryRequest *r,
			  TimestampTz start_at)
{
	char		error[512];
	bool		ok = true;
	int			i;

	r->easy = curl_easy_init();
	if (r->easy == NULL)
	{
		for (i = 0; i < r->nitems; i++)
		{
			ItemResult	res;

			ep_result_set(&res, false, false, 0, "could not create a curl handle");
			settle_item(d, &r->items[i], &res, NULL, 0);
		}
		request_free(r);
		return;
	}
	r->response = MemoryContextAlloc(r->cxt, EP_RESPONSE_MAX + 1);
	r->response[0] = '\0';
	error[0] = '\0';

	/* build() may hash (pg_hmac), which needs a resource owner */
	if (!build_request(kind, r, error, sizeof(error)))
	{
		for (i = 0; i < r->nitems; i++)
		{
			ItemResult	res;

			ep_result_set(&res, false, true, 0, "%s", error);
			settle_item(d, &r->items[i], &res, NULL, 0);
		}
		request_free(r);
		return;
	}
	/* (no "Expect:" here: curl 7.88's SigV4 signs it and then drops it) */
	ok = ok && ep_curl_header(r, "User-Agent: evpipe/0.2.0");
	SETOPT(r->easy, CURLOPT_POST, 1L);
	SETOPT(r->easy, CURLOPT_POSTFIELDS, r->body);
	SETOPT(r->easy, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t) r->body_len);
	SETOPT(r->easy, CURLOPT_HTTPHEADER, r->headers);
	SETOPT(r->easy, CURLOPT_TIMEOUT_MS, (long) d->timeout_ms);
	SETOPT(r->easy, CURLOPT_CONNECTTIMEOUT_MS, (long) Min(d->timeout_ms, 10000));
	SETOPT(r->easy, CURLOPT_NOSIGNAL, 1L);
	SETOPT(r->easy, CURLOPT_WRITEFUNCTION, write_cb);
	SETOPT(r->easy, CURLOPT_WRITEDATA, r);
	SETOPT(r->easy, CURLOPT_HEADERFUNCTION, header_cb);
	SETOPT(r->easy, CURLOPT_HEADERDATA, r);
	SETOPT(r->easy, CURLOPT_ERRORBUFFER, r->errbuf);
	SETOPT(r->easy, CURLOPT_PRIVATE, r);
	SETOPT(r->easy, CURLOPT_PROTOCOLS_STR, "http,https");
	SETOPT(r->easy, CURLOPT_FOLLOWLOCATION, d->follow_redirects ? 1L : 0L);
	SETOPT(r->easy, CURLOPT_REDIR_PROTOCOLS_STR, "http,https");
	SETOPT(r->easy, CURLOPT_MAXREDIRS, 5L);
	SETOPT(r->easy, CURLOPT_SSL_VERIFYPEER, d->tls_verify ? 1L : 0L);
	SETOPT(r->easy, CURLOPT_SSL_VERIFYHOST, d->tls_verify ? 2L : 0L);
	SETOPT(r->easy, CURLOPT_TCP_KEEPALIVE, 1L);
	SETOPT(r->easy, CURLOPT_TCP_NODELAY, 1L);
	/* every address curl connects to (redirects, proxies) meets the policy */
	SETOPT(r->easy, CURLOPT_OPENSOCKETFUNCTION, ep_netpolicy_opensocket);
	SETOPT(r->easy, CURLOPT_OPENSOCKETDATA, &r->netguard);
	SETOPT(r->easy, CURLOPT_FRESH_CONNECT, ep_netpolicy_fresh_connect());
	SETOPT(r->easy, CURLOPT_MAXLIFETIME_CONN, ep_netpolicy_max_lifetime());
	r->errbuf[0] = '\0';
	if (!ok)
	{
		for (i = 0; i < r->nitems; i++)
		{
			ItemResult	res;

			ep_result_set(&res, false, false, 0, "could not configure the request");
			settle_item(d, &r->items[i], &res, NULL, 0);
		}
		request_free(r);
		return;
	}
	W.nactive += r->nitems;
	d->in_flight += r->nitems;
	if (start_at > GetCurrentTimestamp())
	{
		r->start_at = start_at;
		dlist_push_tail(&W.scheduled, &r->node);
		return;
	}
	launch_request(r);
}

/* Hand a prepared request to curl. */
static void
launch_request(DeliveryRequest *r)
{
	CURLMcode	mrc;
	int			i;

	r->started = GetCurrentTimestamp();
	mrc = curl_multi_add_handle(W.multi, r->easy);
	if (mrc != CURLM_OK)
	{
		W.nactive -= r->nitems;
		if (r->dest)
			r->dest->in_flight -= r->nitems;
		for (i = 0; i < r->nitems; i++)
		{
			ItemResult	res;

			ep_result_set(&res, false, false, 0, "could not start the request: %s",
						  curl_multi_strerror(mrc));
			settle_item(r->dest, &r->items[i], &res, NULL, 0);
		}
		request_free(r);
		return;
	}
	dlist_push_tail(&W.active, &r->node);
}

/* Launch scheduled requests whose time has come; ms until the next one. */
static long
launch_due(void)
{
	dlist_mutable_iter iter;
	TimestampTz now = GetCurrentTimestamp();
	long		next = -1;

	dlist_foreach_modify(iter, &W.scheduled)
	{
		DeliveryRequest *r = dlist_container(DeliveryRequest, node, iter.cur);

		if (r->start_at <= now)
		{
			dlist_delete(&r->node);
			launch_request(r);
		}
		else
		{
			long		ms = (long) ((r->start_at - now + 999) / 1000);

			if (next < 0 || ms < next)
				next = ms;
		}
	}
	return next;
}

/* A printable excerpt of an answer for the dead-letter table. */
static char *
response_excerpt(DeliveryRequest *r)
{
	size_t		len = Min(r->response_len, EP_EXCERPT_MAX);
	char	   *s;
	size_t		i;

	if (len == 0)
		return NULL;
	/* do not cut a UTF-8 sequence */
	while (len > 0 && len < r->response_len &&
		   ((unsigned char) r->response[len] & 0xC0) == 0x80)
		len--;
	s = pnstrdup(r->response, len);
	for (i = 0; i < len; i++)
		if ((unsigned char) s[i] < 0x20 && s[i] != '\n' && s[i] != '\t')
			s[i] = ' ';
	if (pg_verifymbstr(s, len, true))
		return s;
	return pstrdup("(answer is not valid UTF-8)");
}

/* Handle every finished transfer. */
static void
collect_finished(void)
{
	CURLMsg    *msg;
	int			left;

	while ((msg = curl_multi_info_read(W.multi, &left)) != NULL)
	{
		DeliveryRequest *r = NULL;
		DestConfig *d;
		long		status = 0;
		long		retry_after_ms = -1;
		char	   *excerpt;
		int			i;

		if (msg->msg != CURLMSG_DONE)
			continue;
		if (curl_easy_getinfo(msg->easy_handle, CURLINFO_PRIVATE, (char **) &r) != CURLE_OK ||
			r == NULL)
			continue;
		dlist_delete(&r->node);
		W.nactive -= r->nitems;
		d = r->dest;
		if (d)
			d->in_flight -= r->nitems;

		if (msg->data.result == CURLE_OK &&
			curl_easy_getinfo(r->easy, CURLINFO_RESPONSE_CODE, &status) == CURLE_OK &&
			status > 0)
		{
			const DeliveryKind *kind = d ? kind_of(d) : NULL;

			if (r->retry_after[0])
				retry_after_ms = ep_parse_retry_after(r->retry_after,
													  (long) time(NULL));
			if (kind)
				kind->classify(r, status);
			else
				for (i = 0; i < r->nitems; i++)
					ep_result_set(&r->results[i], false, false, (int) status,
								  "destination was changed while in flight");
			if (d && retry_after_ms > 0 && (status == 429 || status == 503))
			{
				if (ep_rate_paused_ms(d->slot) == 0)
					ereport(LOG,
							(errmsg("evpipe event=destination_paused destination=%s status=%ld pause_ms=%ld reason=retry_after",
									d->name, status, retry_after_ms),
							 errhidestmt(true)));
				ep_rate_pause(d->slot, retry_after_ms);
			}
		}
		else
		{
			CURLcode	rc = msg->data.result;

			/* the network policy refused the address: permanent, no evidence */
			bool		refused = (rc == CURLE_COULDNT_CONNECT &&
								   r->netguard.last_refused);
			const char *what = refused ? r->netguard.error :
				r->errbuf[0] ? r->errbuf : curl_easy_strerror(rc);
			bool		permanent = (refused || rc == CURLE_UNSUPPORTED_PROTOCOL ||
									 rc == CURLE_URL_MALFORMAT ||
									 rc == CURLE_TOO_MANY_REDIRECTS);

			/* no answer at all: evidence about the target, not the event */
			bool		unreachable = !refused && (rc == CURLE_COULDNT_CONNECT ||
									   rc == CURLE_COULDNT_RESOLVE_HOST ||
									   rc == CURLE_COULDNT_RESOLVE_PROXY);

			for (i = 0; i < r->nitems; i++)
			{
				ep_result_set(&r->results[i], false, permanent, 0, "%s%s",
							  rc == CURLE_OPERATION_TIMEDOUT ? "timeout: " : "",
							  what);
				r->results[i].unreachable = unreachable;
			}
		}

		excerpt = response_excerpt(r);
		for (i = 0; i < r->nitems; i++)
			settle_item(d, &r->items[i], &r->results[i], excerpt,
						r->results[i].status == 429 || r->results[i].status == 503 ?
						retry_after_ms : -1);
		request_free(r);
	}
}

/*------------------------------------------------------------------------
 * Transactions
 *------------------------------------------------------------------------
 */

/* Start a short transaction with SPI and a snapshot. */
static void
begin_tx(const char *activity)
{
	W.tx_caller_cxt = CurrentMemoryContext;
	SetCurrentStatementStartTimestamp();
	StartTransactionCommand();
	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "evpipe: SPI_connect failed");
	PushActiveSnapshot(GetTransactionSnapshot());
	pgstat_report_activity(STATE_RUNNING, activity);
}

/* Commit the short transaction. */
static void
commit_tx(void)
{
	SPI_finish();
	PopActiveSnapshot();
	CommitTransactionCommand();
	/* the commit leaves TopMemoryContext current: go back to the loop's */
	MemoryContextSwitchTo(W.tx_caller_cxt);
	pgstat_report_stat(false);
	pgstat_report_activity(STATE_IDLE, NULL);
}

/*
 * Release leases held by processes that are no longer delivery workers (a
 * crash, a restart, rows restored from a dump taken while they were in
 * flight) now rather than at their expiry. Leased rows have next_attempt_at
 * at the lease's end: each destination's future range of the claim index.
 * Requires an open transaction.
 */
static void
release_stale_leases(void)
{
	static const char *const plan_off[] = {
		"enable_hashjoin", "enable_mergejoin", "enable_seqscan", "enable_bitmapscan"};
	static SPIPlanPtr plan = NULL;

	if (plan == NULL)
	{
		plan = SPI_prepare_cursor("UPDATE evpipe.outbox o SET next_attempt_at = pg_catalog.now(),"
								  " leased_by = NULL, lease_until = NULL"
								  " FROM (SELECT x.id FROM evpipe.destinations d CROSS JOIN LATERAL ("
								  "  SELECT l.id FROM evpipe.outbox l WHERE l.destination = d.name"
								  "   AND l.next_attempt_at > pg_catalog.now() AND l.leased_by IS NOT NULL"
								  "   AND l.lease_until > pg_catalog.now()"
								  "   AND l.leased_by <> ALL (ARRAY(SELECT pid FROM pg_catalog.pg_stat_activity"
								  "    WHERE backend_type = 'evpipe delivery worker'))"
								  "  FOR UPDATE SKIP LOCKED) x) s"
								  " WHERE o.id = s.id",
								  0, NULL, CURSOR_OPT_GENERIC_PLAN);
		if (plan == NULL || SPI_keepplan(plan) != 0)
			elog(ERROR, "evpipe: could not prepare the lease release statement");
	}
	if (evpipe_execute_plan_with_off(plan, NULL, NULL, plan_off,
									 lengthof(plan_off)) != SPI_OK_UPDATE)
		elog(ERROR, "evpipe: releasing stale leases failed");
	if (SPI_processed > 0)
		ereport(LOG,
				(errmsg("evpipe event=leases_released rows=" UINT64_FORMAT " reason=\"holder is gone\"",
						SPI_processed)));
}

/* Whether the extension is installed in our database. */
static bool
extension_ready(void)
{
	bool		ready;

	begin_tx("evpipe: checking for the extension");
	ready = OidIsValid(get_namespace_oid("evpipe", true)) &&
		OidIsValid(get_relname_relid("outbox", get_namespace_oid("evpipe", true)));
	if (ready)
	{
		release_stale_leases();
		if (!W.dests_valid || W.dests == NULL)
			load_destinations();
	}
	commit_tx();
	return ready;
}

/*
 * Ingest an outcome event for each delivery that reached a final state in
 * this transaction (evpipe.outcome_events). Requires an open transaction.
 */
static void
emit_outcome_events(void)
{
	static SPIPlanPtr plan = NULL;
	ListCell   *lc;

	if (plan == NULL)
	{
		Oid			types[6] = {TEXTOID, TEXTOID, BOOLOID, INT4OID, INT4OID, TEXTOID};

		plan = SPI_prepare("SELECT evpipe._emit_outcome($1, $2, $3, $4, $5, $6)", 6, types);
		if (plan == NULL || SPI_keepplan(plan) != 0)
			elog(ERROR, "evpipe: could not prepare the outcome event statement");
	}
	foreach(lc, W.outcomes)
	{
		Outcome    *o = lfirst(lc);
		Datum		values[6];
		char		nulls[7] = "      ";

		if (o->kind != OUTCOME_DELIVERED && o->kind != OUTCOME_DEAD &&
			o->kind != OUTCOME_EXPIRED)
			continue;
		values[0] = CStringGetTextDatum(o->event_id);
		values[1] = CStringGetTextDatum(o->dest);
		values[2] = BoolGetDatum(o->kind == OUTCOME_DELIVERED);
		values[3] = Int32GetDatum(o->kind == OUTCOME_EXPIRED ? o->attempts - 1 : o->attempts);
		values[4] = Int32GetDatum(o->status);
		nulls[4] = o->status ? ' ' : 'n';
		values[5] = o->error ? CStringGetTextDatum(o->error) : (Datum) 0;
		nulls[5] = o->error ? ' ' : 'n';
		if (SPI_execute_plan(plan, values, nulls, false, 0) != SPI_OK_SELECT)
			elog(ERROR, "evpipe: emitting an outcome event failed");
	}
}

/*
 * Record queued outcomes in one statement: delivered rows move to
 * evpipe.delivered, dead ones to evpipe.dead_letters (with a WARNING and a
 * NOTIFY), retries get their next attempt time. Only rows still leased by
 * this worker for the same attempt are touched: if the lease was lost, the
 * other worker's attempt wins. Requires an open transaction.
 */
static void
record_outcomes_in_tx(void)
{
	static SPIPlanPtr plans[2] = {NULL, NULL};	/* [W.ordering] */
	SPIPlanPtr	plan = plans[W.ordering];
	int			n = list_length(W.outcomes);
	Datum	   *ids;
	Datum	   *att;
	Datum	   *kinds;
	Datum	   *statuses;
	bool	   *status_nulls;
	Datum	   *errors;
	bool	   *error_nulls;
	Datum	   *excerpts;
	bool	   *excerpt_nulls;
	Datum	   *next;
	Datum		values[9];
	int			dims[1];
	int			lbs[1] = {1};
	ListCell   *lc;
	int			i = 0;
	uint64		r;
	static const char *const kind_names[] = {"ok", "retry", "dead", "release", "expired"};

	if (n == 0)
		return;
	if (plan == NULL)
	{
		Oid			types[9] = {INT8ARRAYOID, INT4ARRAYOID, TEXTARRAYOID,
			INT4ARRAYOID, TEXTARRAYOID, TEXTARRAYOID, TIMESTAMPTZARRAYOID,
		INT4OID, TEXTOID};

		/*
		 * One generic plan: every step is an index lookup by id whatever the
		 * arrays hold, and planning this statement costs more than running
		 * it.
		 */
		plan = SPI_prepare_cursor(psprintf(
						   "WITH r AS ("
						   " SELECT * FROM ROWS FROM (pg_catalog.unnest($1), pg_catalog.unnest($2), pg_catalog.unnest($3),"
						   "  pg_catalog.unnest($4), pg_catalog.unnest($5), pg_catalog.unnest($6), pg_catalog.unnest($7))"
						   "  AS r(id, attempts, outcome, status, error, excerpt, next_at)),"
						   " mine AS ("
						   " SELECT o.id, r.outcome, r.status, r.error, r.excerpt, r.next_at"
						   " FROM evpipe.outbox o JOIN r ON o.id = r.id AND o.attempts = r.attempts"
						   " WHERE o.leased_by = $8 FOR UPDATE OF o),"
						   " ok AS ("
						   " DELETE FROM evpipe.outbox o USING mine m WHERE o.id = m.id AND m.outcome = 'ok'"
						   " RETURNING o.event_id, o.destination, o.attempts, o.created_at, o.first_attempt_at, m.status),"
						   " ok_ins AS ("
						   " INSERT INTO evpipe.delivered (event_id, destination, attempts, created_at,"
						   "  first_attempt_at, last_status)"
						   /* an eventId ingested again after event retention: its newest delivery */
						   " SELECT * FROM ok ON CONFLICT (event_id, destination) DO UPDATE SET"
						   "  attempts = excluded.attempts, created_at = excluded.created_at,"
						   "  first_attempt_at = excluded.first_attempt_at, last_status = excluded.last_status,"
						   "  delivered_at = pg_catalog.now() RETURNING 1),"
						   /* expired: the claim counted an attempt that was not made */
						   " dead AS ("
						   " DELETE FROM evpipe.outbox o USING mine m WHERE o.id = m.id AND m.outcome IN ('dead', 'expired')"
						   " RETURNING o.event_id, o.destination,"
						   "  CASE m.outcome WHEN 'expired' THEN o.attempts - 1 ELSE o.attempts END,"
						   "  o.created_at, o.first_attempt_at, m.status, m.error, m.excerpt%s),"
						   " dead_ins AS ("
						   " INSERT INTO evpipe.dead_letters AS x (event_id, event_type, source, destination,"
						   "  attempts, created_at, first_attempt_at, last_attempt_at, last_status, last_error,"
						   "  response_excerpt, traceparent, event%s)"
						   " SELECT d.event_id, e.event_type, e.source, d.destination, d.attempts, d.created_at,"
						   "  d.first_attempt_at, pg_catalog.now(), d.status, d.error, d.excerpt, e.traceparent, e.event%s"
						   " FROM dead d JOIN evpipe.events e USING (event_id)"
						   " ON CONFLICT (event_id, destination) DO UPDATE SET attempts = excluded.attempts,%s"
						   "  last_attempt_at = excluded.last_attempt_at, last_status = excluded.last_status,"
						   "  last_error = excluded.last_error, response_excerpt = excluded.response_excerpt,"
						   "  dead_at = pg_catalog.now()"
						   " RETURNING x.event_id, x.event_type, x.destination, x.attempts, x.last_status, x.last_error),"
						   " retry AS ("
						   " UPDATE evpipe.outbox o SET next_attempt_at = m.next_at, leased_by = NULL,"
						   "  lease_until = NULL, last_status = m.status, last_error = m.error,"
						   "  response_excerpt = m.excerpt"
						   " FROM mine m WHERE o.id = m.id AND m.outcome = 'retry' RETURNING 1),"
						   " released AS ("
						   " UPDATE evpipe.outbox o SET next_attempt_at = m.next_at, leased_by = NULL,"
						   "  lease_until = NULL, attempts = o.attempts - 1"
						   " FROM mine m WHERE o.id = m.id AND m.outcome = 'release' RETURNING 1),"
						   " notified AS ("
						   " SELECT pg_catalog.pg_notify('evpipe_dead_letter', pg_catalog.json_build_object("
						   "  'eventId', event_id, 'eventType', event_type, 'destination', destination,"
						   "  'attempts', attempts, 'lastStatus', last_status, 'lastError', last_error)::text)"
						   " FROM dead_ins)"
						   " SELECT d.event_id, d.destination, d.attempts, d.last_status, d.last_error,"
						   "  (SELECT pg_catalog.count(*) FROM notified)"
						   " FROM dead_ins d",
						   W.ordering ? ", o.ordering_key" : "",
						   W.ordering ? ", ordering_key" : "",
						   W.ordering ? ", d.ordering_key" : "",
						   W.ordering ? " ordering_key = excluded.ordering_key," : ""),
						   9, types, CURSOR_OPT_GENERIC_PLAN);
		if (plan == NULL || SPI_keepplan(plan) != 0)
			elog(ERROR, "evpipe: could not prepare the outcome statement");
		plans[W.ordering] = plan;
	}

	ids = palloc(sizeof(Datum) * n);
	att = palloc(sizeof(Datum) * n);
	kinds = palloc(sizeof(Datum) * n);
	statuses = palloc(sizeof(Datum) * n);
	status_nulls = palloc(sizeof(bool) * n);
	errors = palloc(sizeof(Datum) * n);
	error_nulls = palloc(sizeof(bool) * n);
	excerpts = palloc(sizeof(Datum) * n);
	excerpt_nulls = palloc(sizeof(bool) * n);
	next = palloc(sizeof(Datum) * n);
	foreach(lc, W.outcomes)
	{
		Outcome    *o = lfirst(lc);

		ids[i] = Int64GetDatum(o->outbox_id);
		att[i] = Int32GetDatum(o->attempts);
		kinds[i] = CStringGetTextDatum(kind_names[o->kind]);
		statuses[i] = Int32GetDatum(o->status);
		status_nulls[i] = (o->status == 0);
		errors[i] = o->error ? CStringGetTextDatum(o->error) : (Datum) 0;
		error_nulls[i] = (o->error == NULL);
		excerpts[i] = o->excerpt ? CStringGetTextDatum(o->excerpt) : (Datum) 0;
		excerpt_nulls[i] = (o->excerpt == NULL);
		next[i] = TimestampTzGetDatum(o->next_at);
		i++;
	}
	dims[0] = n;
	values[0] = PointerGetDatum(construct_array(ids, n, INT8OID, 8, FLOAT8PASSBYVAL, TYPALIGN_DOUBLE));
	values[1] = PointerGetDatum(construct_array(att, n, INT4OID, 4, true, TYPALIGN_INT));
	values[2] = PointerGetDatum(construct_array(kinds, n, TEXTOID, -1, false, TYPALIGN_INT));
	values[3] = PointerGetDatum(construct_md_array(statuses, status_nulls, 1, dims, lbs,
												   INT4OID, 4, true, TYPALIGN_INT));
	values[4] = PointerGetDatum(construct_md_array(errors, error_nulls, 1, dims, lbs,
												   TEXTOID, -1, false, TYPALIGN_INT));
	values[5] = PointerGetDatum(construct_md_array(excerpts, excerpt_nulls, 1, dims, lbs,
												   TEXTOID, -1, false, TYPALIGN_INT));
	values[6] = PointerGetDatum(construct_array(next, n, TIMESTAMPTZOID, 8,
												FLOAT8PASSBYVAL, TYPALIGN_DOUBLE));
	values[7] = Int32GetDatum(MyProcPid);
	values[8] = (Datum) 0;

	if (SPI_execute_plan(plan, values, NULL, false, 0) != SPI_OK_SELECT)
		elog(ERROR, "evpipe: recording outcomes failed");
	for (r = 0; r < SPI_processed; r++)
	{
		HeapTuple	tup = SPI_tuptable->vals[r];
		TupleDesc	desc = SPI_tuptable->tupdesc;
		char	   *status = SPI_getvalue(tup, desc, 4);

		ereport(WARNING,
				(errmsg("evpipe event=dead_letter event_id=%s destination=%s attempts=%s status=%s error=\"%s\"",
						SPI_getvalue(tup, desc, 1), SPI_getvalue(tup, desc, 2),
						SPI_getvalue(tup, desc, 3), status ? status : "-",
						SPI_getvalue(tup, desc, 5)),
				 errhidestmt(true)));
	}
	if (evpipe_outcome_events)
		emit_outcome_events();
	foreach(lc, W.outcomes)
		if (((Outcome *) lfirst(lc))->kind == OUTCOME_DELIVERED)
			W.delivered_total++;
	W.outcomes = NIL;
	MemoryContextReset(W.outcome_cxt);
}

/* Record outcomes in their own short transaction. */
static void
record_outcomes(void)
{
	if (W.outcomes == NIL)
		return;
	begin_tx("evpipe: recording outcomes");
	record_outcomes_in_tx();
	commit_tx();
}

/*------------------------------------------------------------------------
 * Claims
 *------------------------------------------------------------------------
 */

/* Rows a destination may take now, before its rate limit. */
static int
dest_capacity(DestConfig *d, int free_slots)
{
	int			cap;

	if (!d->enabled)
		return 0;
	if (strcmp(d->kind, "function") != 0 && kind_of(d) == NULL)
		return 0;
	cap = d->max_in_flight - d->in_flight;
	if (cap > free_slots)
		cap = free_slots;
	return cap;
}

/*
 * Call a function destination's handler for one row, in a subtransaction,
 * as the destination's owner, with timeout_ms as statement_timeout.
 */
static void
call_function(DestConfig *d, DeliveryItem *item)
{
	MemoryContext oldcxt = CurrentMemoryContext;
	ResourceOwner oldowner = CurrentResourceOwner;
	ItemResult	res;
	Oid			save_userid;
	int			save_sec;

	GetUserIdAndSecContext(&save_userid, &save_sec);
	BeginInternalSubTransaction(NULL);
	MemoryContextSwitchTo(oldcxt);
	PG_TRY();
	{
		Oid			argtypes[1] = {JSONBOID};
		Datum		args[1];
		char		timeout[32];
		Oid			fn;
		char	   *call;

		snprintf(timeout, sizeof(timeout), "%d", d->timeout_ms);
		(void) set_config_option("statement_timeout", timeout, PGC_SUSET,
								 PGC_S_SESSION, GUC_ACTION_LOCAL, true, 0, false);
		fn = DatumGetObjectId(DirectFunctionCall1(regprocedurein,
												  CStringGetDatum(d->function)));
		call = psprintf("SELECT %s.%s($1)",
						quote_identifier(get_namespace_name(get_func_namespace(fn))),
						quote_identifier(get_func_name(fn)));
		args[0] = DirectFunctionCall1(jsonb_in, CStringGetDatum(item->body));
		SetUserIdAndSecContext(d->owner, save_sec | SECURITY_LOCAL_USERID_CHANGE);
		if (SPI_execute_with_args(call, 1, argtypes, args, NULL, false, 1) < 0)
			elog(ERROR, "evpipe: calling the handler failed");
		SetUserIdAndSecContext(save_userid, save_sec);
		ReleaseCurrentSubTransaction();
		MemoryContextSwitchTo(oldcxt);
		CurrentResourceOwner = oldowner;
		ep_result_set(&res, true, false, 0, NULL);
	}
	PG_CATCH();
	{
		ErrorData  *edata;
		int			cls;

		MemoryContextSwitchTo(oldcxt);
		edata = CopyErrorData();
		FlushErrorState();
		RollbackAndReleaseCurrentSubTransaction();
		MemoryContextSwitchTo(oldcxt);
		CurrentResourceOwner = oldowner;
		SetUserIdAndSecContext(save_userid, save_sec);
		cls = ERRCODE_TO_CATEGORY(edata->sqlerrcode);
		ep_result_set(&res, false,
					  cls == ERRCODE_DATA_EXCEPTION ||
					  cls == ERRCODE_INTEGRITY_CONSTRAINT_VIOLATION,
					  0, "%s: %s", unpack_sql_state(edata->sqlerrcode),
					  edata->message ? edata->message : "error");
		FreeErrorData(edata);
	}
	PG_END_TRY();
	settle_item(d, item, &res, NULL, -1);
}

/* Fill a DeliveryItem from a claimed row (columns as in the claim query). */
static void
fill_item(DeliveryItem *item, HeapTuple tup, TupleDesc desc)
{
	bool		isnull;

	item->outbox_id = DatumGetInt64(SPI_getbinval(tup, desc, 1, &isnull));
	item->attempts = DatumGetInt32(SPI_getbinval(tup, desc, 4, &isnull));
	item->event_id = SPI_getvalue(tup, desc, 2);
	item->body = SPI_getvalue(tup, desc, 5);
	item->payload = SPI_getvalue(tup, desc, 6);
	item->event_type = SPI_getvalue(tup, desc, 7);
	item->source = SPI_getvalue(tup, desc, 8);
	item->correlation_id = SPI_getvalue(tup, desc, 9);
	item->traceparent = SPI_getvalue(tup, desc, 10);
	item->timestamp = SPI_getvalue(tup, desc, 11);
	item->group = SPI_getvalue(tup, desc, 12);
	item->created_us = DatumGetTimestampTz(SPI_getbinval(tup, desc, 13, &isnull));
}

/*
 * A claimed row ingested longer ago than its destination's max_age_ms is
 * not attempted: it gets an outcome that dead-letters it (the attempt the
 * claim counted is taken back), with the previous attempt's error.
 */
static bool
claim_expired(DestConfig *d, DeliveryItem *item, HeapTuple tup, TupleDesc desc)
{
	int64		age_us = GetCurrentTimestamp() - item->created_us;
	bool		isnull;
	Datum		status;
	char	   *last_error;
	char	   *error;

	if (d->max_age_ms <= 0 || item->created_us == 0 ||
		age_us <= (int64) d->max_age_ms * 1000)
		return false;
	status = SPI_getbinval(tup, desc, 14, &isnull);
	last_error = SPI_getvalue(tup, desc, 15);
	error = psprintf("max_age_ms exceeded: ingested " INT64_FORMAT " s ago, limit %d ms, not attempted again%s%s",
					 age_us / USECS_PER_SEC, d->max_age_ms,
					 last_error ? "; last error: " : "", last_error ? last_error : "");
	ep_metric_add(EP_MK_DELIVERY, d->name, item->event_type, EP_M_DEAD, 1);
	ordered_row_final(d, OUTCOME_EXPIRED);
	add_outcome(item->outbox_id, item->attempts, OUTCOME_EXPIRED,
				isnull ? 0 : DatumGetInt32(status), error, NULL, 0,
				item->event_id, d->name);
	return true;
}

/* A new request for a destination, in its own memory context. */
static DeliveryRequest *
new_request(DestConfig *d, int nitems)
{
	MemoryContext cxt = AllocSetContextCreate(TopMemoryContext,
											  "evpipe request",
											  ALLOCSET_SMALL_SIZES);
	DeliveryRequest *r = MemoryContextAllocZero(cxt, sizeof(DeliveryRequest));

	r->cxt = cxt;
	r->dest = d;
	r->dest_name = MemoryContextStrdup(cxt, d->name);
	r->items = MemoryContextAllocZero(cxt, sizeof(DeliveryItem) * nitems);
	r->results = MemoryContextAllocZero(cxt, sizeof(ItemResult) * nitems);
	return r;
}

/* Copy an item into a request's context. */
static void
copy_item(DeliveryRequest *r, DeliveryItem *src)
{
	MemoryContext old = MemoryContextSwitchTo(r->cxt);
	DeliveryItem *dst = &r->items[r->nitems++];

	dst->outbox_id = src->outbox_id;
	dst->attempts = src->attempts;
	dst->created_us = src->created_us;
#define COPY(f) dst->f = src->f ? pstrdup(src->f) : NULL
	COPY(event_id);
	COPY(body);
	COPY(payload);
	COPY(event_type);
	COPY(source);
	COPY(correlation_id);
	COPY(traceparent);
	COPY(timestamp);
	COPY(group);
#undef COPY
	MemoryContextSwitchTo(old);
}

/* Rows claimed for one destination, with their rate-limit offsets. */
typedef struct ClaimPlan
{
	DestConfig *dest;
	int			reserved;
	int			used;
	int64	   *offsets;		/* microseconds from the claim */
	List	   *items;			/* DeliveryItem * */
	bool		probe;			/* the circuit breaker's probe row */
} ClaimPlan;

/* A copy of a claimed row's item in the current memory context. */
static DeliveryItem *
item_copy(DeliveryItem *src)
{
	DeliveryItem *dst = palloc(sizeof(DeliveryItem));

	*dst = *src;
#define COPY(f) dst->f = src->f ? pstrdup(src->f) : NULL
	COPY(event_id);
	COPY(body);
	COPY(payload);
	COPY(event_type);
	COPY(source);
	COPY(correlation_id);
	COPY(traceparent);
	COPY(timestamp);
	COPY(group);
#undef COPY
	return dst;
}

/*
 * Before an ordered destination's rows go out, the outcomes that made them
 * the heads of their keys must be durable: the workers commit
 * asynchronously, and a crash that lost an earlier event's final outcome
 * would send it again after the later one. That outcome's commit record
 * precedes this claim's (the claim saw it), so flushing the WAL up to this
 * claim's commit covers it; the flush is a no-op once the WAL writer got
 * there. Function rows send nothing and need no flush.
 */
static void
ordered_claims_durable(ClaimPlan *plans, int n)
{
	int			i;

	for (i = 0; i < n; i++)
		if (plans[i].dest->ordered && plans[i].items != NIL &&
			strcmp(plans[i].dest->kind, "function") != 0)
		{
			XLogFlush(XactLastCommitEnd);
			return;
		}
}

/*
 * One short transaction: record pending outcomes, then claim due rows for
 * each destination with capacity (and rate-limit reservations) and lease
 * them. Function rows are delivered right here, each in a subtransaction,
 * and recorded in the same transaction, so a handler's writes and the
 * outbox change commit together. HTTP rows become requests, started after
 * commit, at their reserved times.
 */
static void
claim_and_start(void)
{
	int			free_slots = evpipe_max_in_flight - W.nactive;
	Datum	   *names;
	Datum	   *limits;
	Datum	   *leases;
	Datum	   *groups;
	Datum	   *fifos;
	ClaimPlan  *plans;
	int			n = 0;
	int			i;
	uint64		r;
	uint64		nclaimed;
	SPITupleTable *tuptable;
	MemoryContext loopcxt = CurrentMemoryContext;
	TimestampTz claimed_at;

	begin_tx("evpipe: claiming outbox rows");
	if (!W.dests_valid)
		load_destinations();

	record_outcomes_in_tx();

	names = palloc(sizeof(Datum) * (W.ndests + 1));
	limits = palloc(sizeof(Datum) * (W.ndests + 1));
	leases = palloc(sizeof(Datum) * (W.ndests + 1));
	groups = palloc(sizeof(Datum) * (W.ndests + 1));
	fifos = palloc(sizeof(Datum) * (W.ndests + 1));
	/* plans outlive the transaction (SPI memory does not): loop context */
	plans = MemoryContextAllocZero(loopcxt, sizeof(ClaimPlan) * (W.ndests + 1));
	for (i = 0; i < W.ndests && free_slots > 0; i++)
	{
		DestConfig *d = &W.dests[(W.next_dest + i) % W.ndests];
		bool		is_function = strcmp(d->kind, "function") == 0;
		int			cap = dest_capacity(d, Min(is_function ? evpipe_batch_size : free_slots,
											   evpipe_batch_size));
		ClaimPlan  *p = &plans[n];

		if (cap <= 0)
			continue;
		cap = ep_breaker_admit(d->slot, cap, d->timeout_ms + 5000L, &p->probe);
		if (cap <= 0)
			continue;
		p->offsets = MemoryContextAlloc(loopcxt, sizeof(int64) * cap);
		p->reserved = ep_rate_reserve(d->slot, d->rate_limit, d->rate_burst,
									  cap, 1000, p->offsets);
		if (p->reserved <= 0)
		{
			if (p->probe)
				ep_breaker_unadmit(d->slot);
			continue;
		}
		p->dest = d;
		names[n] = CStringGetTextDatum(d->name);
		limits[n] = Int32GetDatum(p->reserved);
		leases[n] = Int32GetDatum(Max(evpipe_lease_ms, d->timeout_ms + 5000));
		fifos[n] = BoolGetDatum(d->fifo);
		groups[n] = d->message_group_field
			? CStringGetTextDatum(d->message_group_field)
			: CStringGetTextDatum(d->fifo ? "source" : "");
		n++;
		if (!is_function)
			free_slots -= p->reserved;
	}
	W.next_dest++;

	if (n > 0)
	{
		static SPIPlanPtr claim_plans[2] = {NULL, NULL};	/* [W.ordering] */
		SPIPlanPtr	plan = claim_plans[W.ordering];
		Datum		values[6];
		int			rc;
		static const char *const claim_plan_off[] = {
			"enable_hashjoin", "enable_mergejoin", "enable_seqscan", "enable_bitmapscan"};

		if (plan == NULL)
		{
			Oid			types[6] = {TEXTARRAYOID, INT4ARRAYOID, INT4ARRAYOID,
			TEXTARRAYOID, INT4OID, BOOLARRAYOID};

			/*
			 * One generic plan, made (and remade after an invalidation, such
			 * as autovacuum's ANALYZE) under the settings below, which leave
			 * index scans and nested loops only. The parameters are arrays
			 * that the claim unnests, so a custom plan knows nothing more of
			 * a destination's rows than a generic one (the plans are the
			 * same), and planning every claim cost a fifth of a worker's
			 * time at full speed.
			 */
			plan = SPI_prepare_cursor(psprintf(
							   "WITH c AS ("
							   " SELECT x.id, d.lease_ms, d.grp FROM ROWS FROM (pg_catalog.unnest($1), pg_catalog.unnest($2),"
							   "  pg_catalog.unnest($3), pg_catalog.unnest($4), pg_catalog.unnest($6))"
							   "  AS d(name, lim, lease_ms, grp, fifo)"
							   " CROSS JOIN LATERAL ("
							   "  SELECT o.id FROM evpipe.outbox o"
							   "  WHERE o.destination = d.name AND o.next_attempt_at <= pg_catalog.now()%s"
							   /* FIFO: one batch in flight for the destination, oldest first */
							   "   AND (NOT d.fifo OR (pg_catalog.pg_try_advisory_xact_lock("
							   "     pg_catalog.hashtext('evpipe.fifo:' || d.name))"
							   /* a lease moved next_attempt_at to its end: an index range */
							   "    AND NOT EXISTS (SELECT 1 FROM evpipe.outbox l WHERE l.destination = d.name"
							   "     AND l.next_attempt_at > pg_catalog.now()"
							   "     AND l.leased_by IS NOT NULL AND l.lease_until > pg_catalog.now())))"
							   "  ORDER BY o.next_attempt_at, o.id LIMIT d.lim FOR UPDATE SKIP LOCKED) x),"
							   " u AS ("
							   " UPDATE evpipe.outbox o SET attempts = o.attempts + 1, leased_by = $5,"
							   "  lease_until = pg_catalog.now() + c.lease_ms * interval '1 millisecond',"
							   "  next_attempt_at = pg_catalog.now() + c.lease_ms * interval '1 millisecond',"
							   "  first_attempt_at = COALESCE(o.first_attempt_at, pg_catalog.now()),"
							   "  last_attempt_at = pg_catalog.now()"
							   " FROM c WHERE o.id = c.id"
							   " RETURNING o.id, o.event_id, o.destination, o.attempts, c.grp, o.created_at,"
							   "  o.last_status, o.last_error)"
							   " SELECT u.id, u.event_id, u.destination, u.attempts,"
							   "  (CASE WHEN dst.config ? 'enrich' THEN pg_catalog.jsonb_set(e.event, '{payload}',"
							   "   (e.event -> 'payload') || (dst.config -> 'enrich')) ELSE e.event END)::text,"
							   "  (CASE WHEN dst.config ? 'enrich' THEN (e.event -> 'payload') || (dst.config -> 'enrich')"
							   "   ELSE e.event -> 'payload' END)::text,"
							   "  e.event_type, e.source, e.correlation_id, e.traceparent, e.event ->> 'timestamp',"
							   "  CASE WHEN u.grp = '' THEN NULL ELSE"
							   "   COALESCE(e.event #>> pg_catalog.string_to_array(u.grp, '.'), e.source) END,"
							   "  u.created_at, u.last_status, u.last_error"
							   " FROM u JOIN evpipe.events e ON e.event_id = u.event_id"
							   " JOIN evpipe.destinations dst ON dst.name = u.destination"
							   " ORDER BY u.destination, u.id",
							   /*
								* ordered rows: only the head of its key, the
								* oldest row of the key still in the outbox
								*/
							   W.ordering ?
							   " AND (o.ordering_key IS NULL OR NOT EXISTS (SELECT 1 FROM evpipe.outbox p"
							   "  WHERE p.destination = o.destination AND p.ordering_key = o.ordering_key"
							   "  AND p.id < o.id))" : ""),
							   6, types, CURSOR_OPT_GENERIC_PLAN);
			if (plan == NULL || SPI_keepplan(plan) != 0)
				elog(ERROR, "evpipe: could not prepare the claim statement");
			claim_plans[W.ordering] = plan;
		}
		values[0] = PointerGetDatum(construct_array(names, n, TEXTOID, -1, false, TYPALIGN_INT));
		values[1] = PointerGetDatum(construct_array(limits, n, INT4OID, 4, true, TYPALIGN_INT));
		values[2] = PointerGetDatum(construct_array(leases, n, INT4OID, 4, true, TYPALIGN_INT));
		values[3] = PointerGetDatum(construct_array(groups, n, TEXTOID, -1, false, TYPALIGN_INT));
		values[4] = Int32GetDatum(MyProcPid);
		values[5] = PointerGetDatum(construct_array(fifos, n, BOOLOID, 1, true, TYPALIGN_CHAR));
		/*
		 * Index scans and nested loops only, for this statement: the planner
		 * cannot know how many rows "LIMIT d.lim" takes and guesses a tenth
		 * of what the destination may hold, which with millions of rows
		 * pending (for any destination) made it hash whole tables, or scan
		 * and sort the outbox, on every claim. The claim touches a few rows
		 * by index, whatever is pending.
		 */
		rc = evpipe_execute_plan_with_off(plan, values, NULL, claim_plan_off,
										  lengthof(claim_plan_off));
		if (rc != SPI_OK_SELECT)
			elog(ERROR, "evpipe: claiming outbox rows failed");

		/*
		 * Copy every claimed row out of SPI_tuptable first: a function
		 * destination's handler runs SPI statements of its own, which
		 * replace SPI_tuptable and SPI_processed (reading on after one
		 * stranded the rest of the claim, leased, until the lease ran out).
		 */
		tuptable = SPI_tuptable;
		nclaimed = SPI_processed;
		for (r = 0; r < nclaimed; r++)
		{
			HeapTuple	tup = tuptable->vals[r];
			TupleDesc	desc = tuptable->tupdesc;
			char	   *dname = SPI_getvalue(tup, desc, 3);
			ClaimPlan  *p = NULL;
			DeliveryItem item;
			MemoryContext old;

			for (i = 0; i < n; i++)
				if (strcmp(plans[i].dest->name, dname) == 0)
					p = &plans[i];
			if (p == NULL)
				continue;
			memset(&item, 0, sizeof(item));
			fill_item(&item, tup, desc);
			p->used++;
			if (claim_expired(p->dest, &item, tup, desc))
				continue;
			old = MemoryContextSwitchTo(loopcxt);
			p->items = lappend(p->items, item_copy(&item));
			MemoryContextSwitchTo(old);
		}
		SPI_freetuptable(tuptable);

		/* function rows: delivered here, each in its own subtransaction */
		for (i = 0; i < n; i++)
		{
			ListCell   *lc;

			if (strcmp(plans[i].dest->kind, "function") != 0)
				continue;
			foreach(lc, plans[i].items)
				call_function(plans[i].dest, lfirst(lc));
			plans[i].items = NIL;
		}
		/* function outcomes commit with the claim */
		record_outcomes_in_tx();
	}
	commit_tx();
	ordered_claims_durable(plans, n);
	claimed_at = GetCurrentTimestamp();
	W.last_claim = claimed_at;

	/* a full claim leaves more behind: let a sleeping worker help */
	for (i = 0; i < n; i++)
		if (plans[i].used > 0 && plans[i].used >= plans[i].reserved)
		{
			evpipe_wake_one_worker(W.index);
			break;
		}

	/* start requests outside the transaction, batching per destination */
	for (i = 0; i < n; i++)
	{
		ClaimPlan  *p = &plans[i];
		DestConfig *d = p->dest;
		const DeliveryKind *kind = kind_of(d);
		DeliveryRequest *cur = NULL;
		int64		cur_offset = 0;
		size_t		cur_bytes = 0;
		ListCell   *lc;
		int			j = 0;

		/*
		 * Rows came back: look again as soon as there is room (another
		 * worker's claim can make this one come back partly empty, so
		 * "full" is not the test); an empty claim ends the backlog.
		 */
		d->backlog = (p->used > 0);
		if (p->probe && p->used == 0)
			ep_breaker_unadmit(d->slot);
		if (p->used < p->reserved)
			ep_rate_unreserve(d->slot, d->rate_limit, p->reserved - p->used);
		if (kind == NULL)
			continue;
		foreach(lc, p->items)
		{
			DeliveryItem *item = lfirst(lc);
			int64		offset = p->offsets[j++];

			/*
			 * A FIFO destination's claim (at most one batch) goes out as one
			 * request: SQS keeps each group's order within a batch, and two
			 * concurrent requests would not.
			 */
			if (cur && (cur->nitems >= kind->max_batch || offset != cur_offset ||
						(kind->max_batch_bytes > 0 &&
						 cur_bytes + strlen(item->body) > kind->max_batch_bytes)))
			{
				start_request(d, kind, cur, claimed_at + cur_offset);
				cur = NULL;
			}
			if (cur == NULL)
			{
				cur = new_request(d, kind->max_batch);
				cur_offset = offset;
				cur_bytes = 0;
			}
			copy_item(cur, item);
			cur_bytes += strlen(item->body);
		}
		if (cur)
			start_request(d, kind, cur, claimed_at + cur_offset);
	}
}

/*
 * Give every in-flight row back (SIGTERM): abort the transfers and make the
 * rows due now, without counting the attempt.
 */
static void
release_in_flight(void)
{
	dlist_mutable_iter iter;

	dlist_foreach_modify(iter, &W.active)
	{
		DeliveryRequest *r = dlist_container(DeliveryRequest, node, iter.cur);
		int			i;

		dlist_delete(&r->node);
		for (i = 0; i < r->nitems; i++)
			add_outcome(r->items[i].outbox_id, r->items[i].attempts,
						OUTCOME_RELEASE, 0, NULL, NULL, 0,
						r->items[i].event_id, r->dest_name);
		request_free(r);
	}
	dlist_foreach_modify(iter, &W.scheduled)
	{
		DeliveryRequest *r = dlist_container(DeliveryRequest, node, iter.cur);
		int			i;

		dlist_delete(&r->node);
		for (i = 0; i < r->nitems; i++)
			add_outcome(r->items[i].outbox_id, r->items[i].attempts,
						OUTCOME_RELEASE, 0, NULL, NULL, 0,
						r->items[i].event_id, r->dest_name);
		request_free(r);
	}
	W.nactive = 0;
	record_outcomes();
}

/*
 * Dead-letter due rows older than their destination's max_age_ms that no
 * claim takes (an open circuit, a paused destination hold them back, and
 * waiting spends no attempt): lease them to this worker, then record them
 * as dead letters through the outcome statement, a batch per short
 * transaction. Returns how many rows expired. Worker 0 only.
 */
static uint64
expire_held_rows(void)
{
	static SPIPlanPtr plan = NULL;
	static const char *const plan_off[] = {
		"enable_hashjoin", "enable_mergejoin", "enable_seqscan", "enable_bitmapscan"};
	uint64		total = 0;
	int			batches = 0;

	while (W.dests_valid && W.ndests > 0 && batches++ < 20 && !got_sigterm)
	{
		Datum	   *names = palloc(sizeof(Datum) * W.ndests);
		Datum	   *ages = palloc(sizeof(Datum) * W.ndests);
		Datum		values[3];
		uint64		n;
		uint64		r;
		int			i;
		int			k = 0;

		for (i = 0; i < W.ndests; i++)
			if (W.dests[i].max_age_ms > 0)
			{
				names[k] = CStringGetTextDatum(W.dests[i].name);
				ages[k++] = Int32GetDatum(W.dests[i].max_age_ms);
			}
		if (k == 0)
			break;
		begin_tx("evpipe: dead-lettering rows past max_age_ms");
		if (plan == NULL)
		{
			Oid			types[3] = {TEXTARRAYOID, INT4ARRAYOID, INT4OID};

			/* due rows by the claim index; leased rows are not due */
			plan = SPI_prepare_cursor(
							   "UPDATE evpipe.outbox o SET leased_by = $3,"
							   "  lease_until = pg_catalog.now() + interval '1 minute',"
							   "  next_attempt_at = pg_catalog.now() + interval '1 minute'"
							   " FROM (SELECT x.id FROM ROWS FROM (pg_catalog.unnest($1), pg_catalog.unnest($2))"
							   "  AS d(name, max_age_ms)"
							   "  CROSS JOIN LATERAL (SELECT o.id FROM evpipe.outbox o"
							   "   WHERE o.destination = d.name AND o.next_attempt_at <= pg_catalog.now()"
							   "    AND o.created_at < pg_catalog.now() - d.max_age_ms * interval '1 millisecond'"
							   "   ORDER BY o.next_attempt_at, o.id LIMIT " CppAsString2(EXPIRE_BATCH)
							   "   FOR UPDATE SKIP LOCKED) x) e"
							   " WHERE o.id = e.id"
							   " RETURNING o.id, o.attempts, o.event_id, o.destination, o.last_status, o.last_error,"
							   "  (pg_catalog.date_part('epoch', pg_catalog.now() - o.created_at))::bigint,"
							   "  (SELECT ev.event_type FROM evpipe.events ev WHERE ev.event_id = o.event_id)",
							   3, types, CURSOR_OPT_GENERIC_PLAN);
			if (plan == NULL || SPI_keepplan(plan) != 0)
				elog(ERROR, "evpipe: could not prepare the expiry statement");
		}
		values[0] = PointerGetDatum(construct_array(names, k, TEXTOID, -1, false, TYPALIGN_INT));
		values[1] = PointerGetDatum(construct_array(ages, k, INT4OID, 4, true, TYPALIGN_INT));
		values[2] = Int32GetDatum(MyProcPid);
		if (evpipe_execute_plan_with_off(plan, values, NULL, plan_off,
										 lengthof(plan_off)) != SPI_OK_UPDATE_RETURNING)
			elog(ERROR, "evpipe: dead-lettering expired rows failed");
		n = SPI_processed;
		for (r = 0; r < n; r++)
		{
			HeapTuple	tup = SPI_tuptable->vals[r];
			TupleDesc	desc = SPI_tuptable->tupdesc;
			bool		isnull;
			char	   *dest = SPI_getvalue(tup, desc, 4);
			char	   *last_error = SPI_getvalue(tup, desc, 6);
			char	   *event_type = SPI_getvalue(tup, desc, 8);
			Datum		status = SPI_getbinval(tup, desc, 5, &isnull);
			char	   *error;

			error = psprintf("max_age_ms exceeded: ingested %s s ago, not delivered%s%s",
							 SPI_getvalue(tup, desc, 7),
							 last_error ? "; last error: " : " (never attempted)",
							 last_error ? last_error : "");
			if (event_type)
				ep_metric_add(EP_MK_DELIVERY, dest, event_type, EP_M_DEAD, 1);
			add_outcome(DatumGetInt64(SPI_getbinval(tup, desc, 1, &isnull)),
						DatumGetInt32(SPI_getbinval(tup, desc, 2, &isnull)),
						OUTCOME_DEAD, isnull ? 0 : DatumGetInt32(status), error,
						NULL, 0, SPI_getvalue(tup, desc, 3), dest);
		}
		/* the outcome statement runs SPI: only after the loop above */
		record_outcomes_in_tx();
		commit_tx();
		total += n;
		if (n > 0)
			ereport(LOG,
					(errmsg("evpipe event=rows_expired rows=" UINT64_FORMAT " reason=max_age_ms", n),
					 errhidestmt(true)));
		if (n < EXPIRE_BATCH)
			break;
		CHECK_FOR_INTERRUPTS();
	}
	return total;
}

/* How often worker 0 looks for expired rows: a tenth of the shortest max_age_ms, 1 s to 60 s. */
static int64
expiry_interval_us(void)
{
	int64		shortest = 60 * USECS_PER_SEC * 10;
	int			i;

	for (i = 0; i < W.ndests; i++)
		if (W.dests[i].max_age_ms > 0)
			shortest = Min(shortest, (int64) W.dests[i].max_age_ms * 1000);
	return Min(60 * USECS_PER_SEC, Max(USECS_PER_SEC, shortest / 10));
}

/* Retention: old delivered rows and old events (worker 0 only; retention.c). */
static void
maintenance(void)
{
	ep_retention_run(&got_sigterm);
}

/*------------------------------------------------------------------------
 * Main loop
 *------------------------------------------------------------------------
 */

/*
 * The wait set: the latch, postmaster death and curl's sockets. Kept across
 * waits (creating one costs system calls); rebuilt when curl adds or removes
 * a socket, adjusted in place when it only changes what to wait for.
 */
static WaitEventSet *
wait_set(void)
{
	int			i;

	if (W.set != NULL && !W.socks_changed)
	{
		for (i = 0; i < W.nsocks; i++)
			if (W.socks[i].what != W.socks[i].set_what)
			{
				ModifyWaitEvent(W.set, W.socks[i].pos, sock_events(W.socks[i].what), NULL);
				W.socks[i].set_what = W.socks[i].what;
			}
		return W.set;
	}
	if (W.set != NULL)
		FreeWaitEventSet(W.set);
	W.set = CreateWaitEventSet(TopMemoryContext, W.nsocks + 2);
	AddWaitEventToSet(W.set, WL_LATCH_SET, PGINVALID_SOCKET, MyLatch, NULL);
	AddWaitEventToSet(W.set, WL_EXIT_ON_PM_DEATH, PGINVALID_SOCKET, NULL, NULL);
	for (i = 0; i < W.nsocks; i++)
	{
		W.socks[i].pos = AddWaitEventToSet(W.set, sock_events(W.socks[i].what),
										   W.socks[i].fd, NULL, NULL);
		W.socks[i].set_what = W.socks[i].what;
	}
	W.socks_changed = false;
	return W.set;
}

/* Wait for the latch, curl's sockets or a timeout; then drive curl. */
static void
wait_and_drive(long timeout_ms)
{
	WaitEventSet *set;
	WaitEvent	events[MAX_SOCKETS + 2];
	CURLMcode	mrc;
	int			nready;
	int			i;
	int			running;
	EvpipeWorkerSlot *slot = &evpipe_shared->workers[W.index];

	if (W.curl_deadline != 0)
	{
		long		curl_ms = (long) ((W.curl_deadline - GetCurrentTimestamp() + 999) / 1000);

		if (curl_ms < timeout_ms)
			timeout_ms = curl_ms;
	}
	if (timeout_ms < 0)
		timeout_ms = 0;

	set = wait_set();
	if (W.nactive == 0)
		pgstat_report_activity(STATE_IDLE, NULL);

	/*
	 * Say we sleep, then look for new work once more: a producer raises the
	 * flag before it looks for a sleeping worker to wake, so one of the two
	 * sees the other.
	 */
	if (timeout_ms > 0)
	{
		TimestampTz now = GetCurrentTimestamp();

		/*
		 * Soon after new work, linger: wait at most LINGER_MS and look again,
		 * so producers committing in a stream need not signal each time.
		 */
		if (now < W.linger_until)
		{
			timeout_ms = Min(timeout_ms, (long) ((W.linger_until - now + 999) / 1000));
			pg_atomic_write_u32(&slot->lingering, 1);
		}
		else
			pg_atomic_write_u32(&slot->sleeping, 1);
		pg_memory_barrier();
		if (pg_atomic_read_u32(&evpipe_shared->wake_pending) != 0 ||
			pg_atomic_read_u32(&slot->wake) != 0)
			timeout_ms = 0;
	}
	nready = WaitEventSetWait(set, timeout_ms, events, lengthof(events),
							  PG_WAIT_EXTENSION);
	pg_atomic_write_u32(&slot->sleeping, 0);
	pg_atomic_write_u32(&slot->lingering, 0);

	for (i = 0; i < nready; i++)
	{
		int			mask = 0;

		if (events[i].events & WL_LATCH_SET)
		{
			ResetLatch(MyLatch);
			continue;
		}
		if (!(events[i].events & (WL_SOCKET_READABLE | WL_SOCKET_WRITEABLE)))
			continue;
		if (events[i].events & WL_SOCKET_READABLE)
			mask |= CURL_CSELECT_IN;
		if (events[i].events & WL_SOCKET_WRITEABLE)
			mask |= CURL_CSELECT_OUT;
		mrc = curl_multi_socket_action(W.multi, events[i].fd, mask, &running);
		if (mrc != CURLM_OK)
			ereport(LOG,
					(errmsg("evpipe: curl_multi_socket_action failed: %s",
							curl_multi_strerror(mrc))));
	}
	if (W.curl_deadline != 0 && GetCurrentTimestamp() >= W.curl_deadline)
	{
		W.curl_deadline = 0;
		mrc = curl_multi_socket_action(W.multi, CURL_SOCKET_TIMEOUT, 0, &running);
		if (mrc != CURLM_OK)
			ereport(LOG,
					(errmsg("evpipe: curl_multi_socket_action failed: %s",
							curl_multi_strerror(mrc))));
	}
	collect_finished();
}

/*
 * Whether a claim is worth a transaction now: some destination whose last
 * claim was full has a quarter of its slots free and is not paused.
 */
static bool
backlog_claimable(void)
{
	int			free_slots = evpipe_max_in_flight - W.nactive;
	int			i;

	if (!W.dests_valid)
		return true;
	for (i = 0; i < W.ndests; i++)
	{
		DestConfig *d = &W.dests[i];
		int			cap = dest_capacity(d, free_slots);

		if (d->backlog && cap > 0 && cap >= Max(1, d->max_in_flight / 4) &&
			ep_rate_paused_ms(d->slot) == 0 && !ep_breaker_blocked(d->slot))
			return true;
	}
	return false;
}

/* Background worker entry point. */
void
evpipe_worker_main(Datum arg)
{
	int			index = DatumGetInt32(arg);
	volatile bool logged_waiting = false;
	volatile bool pending_wake = true;
	volatile TimestampTz next_tick = 0;

	memset(&W, 0, sizeof(W));
	W.index = index;
	dlist_init(&W.active);
	dlist_init(&W.scheduled);

	pqsignal(SIGHUP, SignalHandlerForConfigReload);
	pqsignal(SIGTERM, worker_sigterm);
	BackgroundWorkerUnblockSignals();
	BackgroundWorkerInitializeConnection(evpipe_database, NULL, 0);

	/*
	 * The worker's own commits need not wait for the WAL flush: a claim or
	 * an outcome lost in a crash leaves its rows in the outbox, delivered
	 * again (at least once); a function handler's writes are lost together
	 * with its outcome. Producers' commits are untouched.
	 */
	SetConfigOption("synchronous_commit", "off", PGC_SUSET, PGC_S_OVERRIDE);

	/*
	 * No JIT: the worker's statements touch a few rows by index, but their
	 * cost estimates can be huge (millions of rows pending), and compiling
	 * them cost ~450 ms per claim.
	 */
	SetConfigOption("jit", "off", PGC_SUSET, PGC_S_OVERRIDE);

	pg_atomic_write_u32(&evpipe_shared->workers[index].pgprocno,
						MyProc->pgprocno + 1);
	pg_atomic_write_u32(&evpipe_shared->workers[index].pid, MyProcPid);
	before_shmem_exit(worker_cleanup, Int32GetDatum(index));

	W.loop_cxt = AllocSetContextCreate(TopMemoryContext, "evpipe worker loop",
									   ALLOCSET_DEFAULT_SIZES);
	W.outcome_cxt = AllocSetContextCreate(TopMemoryContext, "evpipe outcomes",
										  ALLOCSET_DEFAULT_SIZES);
	W.socks = MemoryContextAlloc(TopMemoryContext, sizeof(SockEntry) * MAX_SOCKETS);
	W.owner = ResourceOwnerCreate(NULL, "evpipe worker");
	CacheRegisterRelcacheCallback(dest_relcache_cb, (Datum) 0);

	if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK)
		ereport(FATAL, (errmsg("evpipe: could not initialise libcurl")));
	W.multi = curl_multi_init();
	if (W.multi == NULL ||
		curl_multi_setopt(W.multi, CURLMOPT_SOCKETFUNCTION, sock_cb) != CURLM_OK ||
		curl_multi_setopt(W.multi, CURLMOPT_TIMERFUNCTION, timer_cb) != CURLM_OK ||
		curl_multi_setopt(W.multi, CURLMOPT_MAXCONNECTS, (long) evpipe_max_in_flight * 2) != CURLM_OK)
		ereport(FATAL, (errmsg("evpipe: could not initialise a curl multi handle")));

	ereport(LOG,
			(errmsg("evpipe event=worker_start worker=%d pid=%d database=%s max_in_flight=%d",
					index, MyProcPid, evpipe_database, evpipe_max_in_flight)));

	for (;;)
	{
		long		timeout;
		long		next_launch;
		TimestampTz now;

		MemoryContextReset(W.loop_cxt);
		MemoryContextSwitchTo(W.loop_cxt);
		CHECK_FOR_INTERRUPTS();

		if (got_sigterm)
			break;
		if (ConfigReloadPending)
		{
			ConfigReloadPending = false;
			ProcessConfigFile(PGC_SIGHUP);
			W.dests_valid = false;
			pending_wake = true;
		}
		/* the shared flag (new rows), or a wake-up meant for this worker */
		if ((pg_atomic_exchange_u32(&evpipe_shared->wake_pending, 0) |
			 pg_atomic_exchange_u32(&evpipe_shared->workers[index].wake, 0)) != 0)
			pending_wake = true;

		now = GetCurrentTimestamp();
		PG_TRY();
		{
			if (!W.ext_ready)
			{
				W.ext_ready = extension_ready();
				if (!W.ext_ready && !logged_waiting)
				{
					ereport(LOG,
							(errmsg("evpipe event=waiting_for_extension database=%s",
									evpipe_database),
							 errhint("Run CREATE EXTENSION evpipe in database \"%s\".",
									 evpipe_database)));
					logged_waiting = true;
				}
			}
			if (W.ext_ready)
			{
				bool		due;

				/* a wake-up means new rows, for any destination */
				if (pending_wake)
				{
					int			i;

					W.linger_until = TimestampTzPlusMilliseconds(now, LINGER_MS);

					for (i = 0; i < W.ndests; i++)
						W.dests[i].backlog = true;
					pending_wake = false;
				}
				due = now >= next_tick || !W.dests_valid ||
					(W.next_retry != 0 && now >= W.next_retry) ||
					backlog_claimable();
				if (due)
				{
					if (W.next_retry != 0 && now >= W.next_retry)
						W.next_retry = 0;
					if (now >= next_tick)
						next_tick = TimestampTzPlusMilliseconds(now, evpipe_tick_ms);
					claim_and_start();
				}
				else if (W.outcomes != NIL)
					record_outcomes();
				/* max_age_ms: every minute, or sooner for short ones */
				/* leases of processes that are gone: every 10 s */
				if (index == 0 && now - W.last_release > 10 * USECS_PER_SEC)
				{
					W.last_release = now;
					begin_tx("evpipe: releasing leases of processes that are gone");
					release_stale_leases();
					commit_tx();
				}
				if (index == 0 && now - W.last_expiry > expiry_interval_us())
				{
					W.last_expiry = now;
					(void) expire_held_rows();
				}
				/* retention: every minute, or sooner for short retentions */
				if (index == 0 && ep_retention_due(now))
				{
					maintenance();
				}
			}
		}
		PG_CATCH();
		{
			/* log, abort the transaction, and carry on after a pause */
			MemoryContextSwitchTo(W.loop_cxt);
			EmitErrorReport();
			FlushErrorState();
			AbortCurrentTransaction();
			MemoryContextSwitchTo(W.loop_cxt);
			W.dests_valid = false;
			W.ext_ready = false;
			logged_waiting = false;
			next_tick = TimestampTzPlusMilliseconds(GetCurrentTimestamp(),
													Max(evpipe_tick_ms, 1000));
			pgstat_report_activity(STATE_IDLE, NULL);
		}
		PG_END_TRY();

		next_launch = launch_due();
		now = GetCurrentTimestamp();
		if (!W.ext_ready)
			timeout = Max(evpipe_tick_ms, 1000);
		else if (pending_wake || backlog_claimable())
			timeout = 0;
		else
		{
			timeout = (long) ((next_tick - now) / 1000);
			if (W.next_retry != 0 && (W.next_retry - now) / 1000 < timeout)
				timeout = (long) ((W.next_retry - now) / 1000);
			if (next_launch >= 0 && next_launch < timeout)
				timeout = next_launch;
			if (W.outcomes != NIL && timeout > 5)
				timeout = 5;
			if (timeout < 0)
				timeout = 0;
		}
		if (W.nactive > 0)
			pgstat_report_activity(STATE_RUNNING,
								   psprintf("evpipe: %d deliveries in flight", W.nactive));
		wait_and_drive(timeout);
	}

	ereport(LOG,
			(errmsg("evpipe event=worker_stop worker=%d pid=%d in_flight=%d delivered=" UINT64_FORMAT,
					index, MyProcPid, W.nactive, W.delivered_total)));
	PG_TRY();
	{
		release_in_flight();
	}
	PG_CATCH();
	{
		EmitErrorReport();
		FlushErrorState();
	}
	PG_END_TRY();
	proc_exit(1);
}
