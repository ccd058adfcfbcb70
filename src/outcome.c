/*-------------------------------------------------------------------------
 *
 * outcome.c
 *	  What became of each attempt: success, a retry after full-jitter
 *	  backoff (or Retry-After), or a dead letter when permanent, out of
 *	  attempts or past max_age_ms; the circuit breaker hears of each one.
 *	  Outcomes are queued and recorded in one statement per transaction;
 *	  rows held back past max_age_ms are dead-lettered the same way.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/xact.h"
#include "common/pg_prng.h"
#include "miscadmin.h"
#include "utils/builtins.h"
#include "utils/guc.h"
#include "utils/memutils.h"
#include "utils/timestamp.h"

#include "engine.h"
#include "enginedb.h"
#include "evpipe.h"
#include "logquote.h"
#include "metrics.h"
#include "ratelimit.h"

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
void
ep_add_outcome(int64 id, int attempts, OutcomeKind kind, int status,
			   const char *error, const char *excerpt, long delay_ms,
			   const char *event_id, const char *dest)
{
	MemoryContext old = MemoryContextSwitchTo(ep_worker.outcome_cxt);
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
	ep_worker.outcomes = lappend(ep_worker.outcomes, o);
	MemoryContextSwitchTo(old);
}

/*
 * A row of an ordered destination became final: once that is recorded, the
 * next event of its key is the head and may be claimed, so claim (which
 * records the outcomes first) instead of waiting for a tick.
 */
void
ep_ordered_row_final(DestConfig *d, OutcomeKind kind)
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
							d->name, open_ms, res->status, ep_log_quote(res->error)),
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
void
ep_settle_item(DestConfig *d, DeliveryItem *item, ItemResult *res,
			   const char *excerpt, long retry_after_ms)
{
	const char *name = d ? d->name : "?";
	int			max_attempts = d ? d->max_attempts : 1;
	/* the target asked us to wait (429 with Retry-After): not an attempt */
	bool		paused = d != NULL && res->status == 429 && retry_after_ms > 0;
	bool		exhausted = res->permanent || item->attempts >= max_attempts || d == NULL;
	long		delay = 0;
	bool		too_late = false;

	if (!res->ok && !paused && !exhausted)
	{
		delay = retry_delay(d, item, retry_after_ms);
		too_late = retry_too_late(d, item, delay);
	}
	if (d != NULL && !paused)
		breaker_record(d, !res->ok && !res->permanent, res);
	if (res->ok || (!paused && (exhausted || too_late)))
		ep_ordered_row_final(d, OUTCOME_DEAD);

	if (res->ok)
	{
		ep_metric_add(EP_MK_DELIVERY, name, item->event_type, EP_M_DELIVERED, 1);
		if (item->created_us)
			ep_metric_latency(name, item->event_type,
							  GetCurrentTimestamp() - item->created_us);
		ep_add_outcome(item->outbox_id, item->attempts, OUTCOME_DELIVERED,
					   res->status, NULL, NULL, 0, item->event_id, name);
		if (evpipe_log_deliveries)
			ereport(LOG,
					(errmsg("evpipe event=delivered event_id=%s destination=%s attempt=%d status=%d",
							item->event_id, name, item->attempts, res->status),
					 errhidestmt(true)));
	}
	else if (paused)
	{
		/* the target asked us to wait: pause it, do not spend the attempt */
		ep_add_outcome(item->outbox_id, item->attempts, OUTCOME_RELEASE,
					   res->status, res->error, excerpt, retry_after_ms,
					   item->event_id, name);
	}
	else if (exhausted)
	{
		ep_metric_add(EP_MK_DELIVERY, name, item->event_type, EP_M_DEAD, 1);
		ep_add_outcome(item->outbox_id, item->attempts, OUTCOME_DEAD,
					   res->status, res->error, excerpt, 0, item->event_id, name);
	}
	else if (too_late)
	{
		char		error[sizeof(res->error) + 128];

		snprintf(error, sizeof(error),
				 "max_age_ms exceeded: no attempt is left within %d ms of ingest; last error: %s",
				 d->max_age_ms, res->error);
		ep_metric_add(EP_MK_DELIVERY, name, item->event_type, EP_M_DEAD, 1);
		ep_add_outcome(item->outbox_id, item->attempts, OUTCOME_DEAD,
					   res->status, error, excerpt, 0, item->event_id, name);
	}
	else
	{
		ep_metric_add(EP_MK_DELIVERY, name, item->event_type, EP_M_RETRIED, 1);

		ep_add_outcome(item->outbox_id, item->attempts, OUTCOME_RETRY,
					   res->status, res->error, excerpt, delay, item->event_id,
					   name);
		{
			TimestampTz at = TimestampTzPlusMilliseconds(GetCurrentTimestamp(), delay);

			if (ep_worker.next_retry == 0 || at < ep_worker.next_retry)
				ep_worker.next_retry = at;
		}
		ereport(LOG,
				(errmsg("evpipe event=retry_scheduled event_id=%s destination=%s attempt=%d status=%d delay_ms=%ld error_class=%s error=\"%s\"",
						item->event_id, name, item->attempts, res->status,
						delay, res->status ? "http" : "transport", ep_log_quote(res->error)),
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

/*
 * Ingest an outcome event for each delivery that reached a final state in
 * this transaction (evpipe.outcome_events). Requires an open transaction.
 */
static void
emit_outcome_events(void)
{
	ListCell   *lc;

	foreach(lc, ep_worker.outcomes)
	{
		Outcome    *o = lfirst(lc);
		bool		ok = (o->kind == OUTCOME_DELIVERED);
		int32		attempts = o->kind == OUTCOME_EXPIRED ? o->attempts - 1 : o->attempts;
		int32		status = o->status;
		bool		no_status = (o->status == 0);
		EpParam		params[6] = {
			{&o->event_id, 1}, {&o->dest, 1}, {&ok, 1}, {&attempts, 1},
			{&status, 1, &no_status}, {&o->error, 1}};

		if (o->kind != OUTCOME_DELIVERED && o->kind != OUTCOME_DEAD &&
			o->kind != OUTCOME_EXPIRED)
			continue;
		(void) ep_db_exec(EP_SQL_EMIT_OUTCOME, params);
	}
}

/*
 * Record queued outcomes in one statement: delivered rows move to
 * evpipe.delivered, dead ones to evpipe.dead_letters (with a WARNING and a
 * NOTIFY), retries get their next attempt time. Only rows still leased by
 * this worker for the same attempt are touched: if the lease was lost, the
 * other worker's attempt wins. Requires an open transaction.
 */
void
ep_record_outcomes_in_tx(void)
{
	int			n = list_length(ep_worker.outcomes);
	int64	   *ids;
	int32	   *att;
	char	  **kinds;
	int32	   *statuses;
	bool	   *status_nulls;
	char	  **errors;
	char	  **excerpts;
	TimestampTz *next;
	int32		holder = ep_worker.lease_holder;
	EpRows	   *rows;
	ListCell   *lc;
	int			i = 0;
	uint64		r;
	static const char *const kind_names[] = {"ok", "retry", "dead", "release", "expired"};

	if (n == 0)
		return;
	ids = palloc(sizeof(int64) * n);
	att = palloc(sizeof(int32) * n);
	kinds = palloc(sizeof(char *) * n);
	statuses = palloc(sizeof(int32) * n);
	status_nulls = palloc(sizeof(bool) * n);
	errors = palloc(sizeof(char *) * n);
	excerpts = palloc(sizeof(char *) * n);
	next = palloc(sizeof(TimestampTz) * n);
	foreach(lc, ep_worker.outcomes)
	{
		Outcome    *o = lfirst(lc);

		ids[i] = o->outbox_id;
		att[i] = o->attempts;
		kinds[i] = (char *) kind_names[o->kind];
		statuses[i] = o->status;
		status_nulls[i] = (o->status == 0);
		errors[i] = o->error;	/* NULL: SQL null */
		excerpts[i] = o->excerpt;
		next[i] = o->next_at;
		i++;
	}
	{
		EpParam		params[8] = {
			{ids, n}, {att, n}, {kinds, n}, {statuses, n, status_nulls},
			{errors, n}, {excerpts, n}, {next, n}, {&holder, 1}};

		rows = ep_db_exec(ep_worker.ordering ? EP_SQL_OUTCOMES_ORDERED : EP_SQL_OUTCOMES, params);
	}
	for (r = 0; r < rows->processed; r++)
	{
		const char *status = ep_cell(rows, r, 3);

		ereport(WARNING,
				(errmsg("evpipe event=dead_letter event_id=%s destination=%s attempts=%s status=%s error=\"%s\"",
						ep_cell(rows, r, 0), ep_cell(rows, r, 1),
						ep_cell(rows, r, 2), status ? status : "-",
						ep_log_quote(ep_cell(rows, r, 4))),
				 errhidestmt(true)));
	}
	if (evpipe_outcome_events)
		emit_outcome_events();
	foreach(lc, ep_worker.outcomes)
		if (((Outcome *) lfirst(lc))->kind == OUTCOME_DELIVERED)
			ep_worker.delivered_total++;
	ep_worker.outcomes = NIL;
	MemoryContextReset(ep_worker.outcome_cxt);
}

/* Record outcomes in their own short transaction. */
void
ep_record_outcomes(void)
{
	if (ep_worker.outcomes == NIL)
		return;
	ep_begin_tx("evpipe: recording outcomes");
	ep_record_outcomes_in_tx();
	ep_commit_tx();
}

/* Free a list's requests, queueing their rows to be given back. */
static void
release_requests(dlist_head *list)
{
	dlist_mutable_iter iter;

	dlist_foreach_modify(iter, list)
	{
		DeliveryRequest *r = dlist_container(DeliveryRequest, node, iter.cur);
		int			i;

		dlist_delete(&r->node);
		for (i = 0; i < r->nitems; i++)
			ep_add_outcome(r->items[i].outbox_id, r->items[i].attempts,
						   OUTCOME_RELEASE, 0, NULL, NULL, 0,
						   r->items[i].event_id, r->dest_name);
		ep_request_free(r);
	}
}

/*
 * Give every in-flight row back (SIGTERM): abort the transfers and make the
 * rows due now, without counting the attempt.
 */
void
ep_release_in_flight(void)
{
	release_requests(&ep_worker.active);
	release_requests(&ep_worker.scheduled);
	ep_worker.nactive = 0;
	ep_record_outcomes();
}

/*
 * Dead-letter due rows older than their destination's max_age_ms that no
 * claim takes (an open circuit, a paused destination hold them back, and
 * waiting spends no attempt): lease them to this worker, then record them
 * as dead letters through the outcome statement, a batch per short
 * transaction. Returns how many rows expired. Worker 0 only.
 */
uint64
ep_expire_held_rows(void)
{
	uint64		total = 0;
	int			batches = 0;

	while (ep_worker.dests_valid && ep_worker.ndests > 0 && batches++ < 20 && !ep_got_sigterm)
	{
		char	  **names = palloc(sizeof(char *) * ep_worker.ndests);
		int32	   *ages = palloc(sizeof(int32) * ep_worker.ndests);
		int32		holder = ep_worker.lease_holder;
		EpRows	   *rows;
		uint64		n;
		uint64		r;
		int			i;
		int			k = 0;

		for (i = 0; i < ep_worker.ndests; i++)
			if (ep_worker.dests[i].max_age_ms > 0)
			{
				names[k] = ep_worker.dests[i].name;
				ages[k++] = ep_worker.dests[i].max_age_ms;
			}
		if (k == 0)
			break;
		ep_begin_tx("evpipe: dead-lettering rows past max_age_ms");
		{
			EpParam		params[3] = {{names, k}, {ages, k}, {&holder, 1}};

			rows = ep_db_exec(EP_SQL_EXPIRE, params);
		}
		n = rows->processed;
		for (r = 0; r < n; r++)
		{
			const char *dest = ep_cell(rows, r, 3);
			const char *last_error = ep_cell(rows, r, 5);
			const char *event_type = ep_cell(rows, r, 7);
			char	   *error;

			error = psprintf("max_age_ms exceeded: ingested %s s ago, not delivered%s%s",
							 ep_cell(rows, r, 6),
							 last_error ? "; last error: " : " (never attempted)",
							 last_error ? last_error : "");
			if (event_type)
				ep_metric_add(EP_MK_DELIVERY, dest, event_type, EP_M_DEAD, 1);
			ep_add_outcome(ep_cell_int(rows, r, 0, 0), (int) ep_cell_int(rows, r, 1, 0),
						   OUTCOME_DEAD, (int) ep_cell_int(rows, r, 4, 0), error,
						   NULL, 0, ep_cell(rows, r, 2), dest);
		}
		ep_record_outcomes_in_tx();
		ep_commit_tx();
		total += n;
		if (n > 0)
			ereport(LOG,
					(errmsg("evpipe event=rows_expired rows=" UINT64_FORMAT " reason=max_age_ms", n),
					 errhidestmt(true)));
		if (n < EP_EXPIRE_BATCH)
			break;
		CHECK_FOR_INTERRUPTS();
	}
	return total;
}

/* How often worker 0 looks for expired rows: a tenth of the shortest max_age_ms, 1 s to 60 s. */
int64
ep_expiry_interval_us(void)
{
	int64		shortest = 60 * USECS_PER_SEC * 10;
	int			i;

	for (i = 0; i < ep_worker.ndests; i++)
		if (ep_worker.dests[i].max_age_ms > 0)
			shortest = Min(shortest, (int64) ep_worker.dests[i].max_age_ms * 1000);
	return Min(60 * USECS_PER_SEC, Max(USECS_PER_SEC, shortest / 10));
}
