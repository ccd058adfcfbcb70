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
#include "catalog/pg_type.h"
#include "common/pg_prng.h"
#include "executor/spi.h"
#include "miscadmin.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/guc.h"
#include "utils/memutils.h"
#include "utils/timestamp.h"

#include "engine.h"
#include "evpipe.h"
#include "metrics.h"
#include "ratelimit.h"

/* rows moved to the dead-letter table per expiry transaction */
#define EXPIRE_BATCH 1000
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
void
ep_settle_item(DestConfig *d, DeliveryItem *item, ItemResult *res,
			const char *excerpt, long retry_after_ms)
{
	const char *name = d ? d->name : "?";
	int			max_attempts = d ? d->max_attempts : 1;
	long		delay = d ? retry_delay(d, item, retry_after_ms) : 0;

	if (d != NULL && !(res->status == 429 && retry_after_ms > 0))
		breaker_record(d, !res->ok && !res->permanent, res);
	if (res->ok || res->permanent || item->attempts >= max_attempts ||
		(d != NULL && retry_too_late(d, item, delay)))
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
	else if (res->status == 429 && retry_after_ms > 0 && d != NULL)
	{
		/* the target asked us to wait: pause it, do not spend the attempt */
		ep_add_outcome(item->outbox_id, item->attempts, OUTCOME_RELEASE,
					res->status, res->error, excerpt, retry_after_ms,
					item->event_id, name);
	}
	else if (res->permanent || item->attempts >= max_attempts || d == NULL)
	{
		ep_metric_add(EP_MK_DELIVERY, name, item->event_type, EP_M_DEAD, 1);
		ep_add_outcome(item->outbox_id, item->attempts, OUTCOME_DEAD,
					res->status, res->error, excerpt, 0, item->event_id, name);
	}
	else if (retry_too_late(d, item, delay))
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
	foreach(lc, ep_worker.outcomes)
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
void
ep_record_outcomes_in_tx(void)
{
	static SPIPlanPtr plans[2] = {NULL, NULL};	/* [ep_worker.ordering] */
	SPIPlanPtr	plan = plans[ep_worker.ordering];
	int			n = list_length(ep_worker.outcomes);
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
						   ep_worker.ordering ? ", o.ordering_key" : "",
						   ep_worker.ordering ? ", ordering_key" : "",
						   ep_worker.ordering ? ", d.ordering_key" : "",
						   ep_worker.ordering ? " ordering_key = excluded.ordering_key," : ""),
						   9, types, CURSOR_OPT_GENERIC_PLAN);
		if (plan == NULL || SPI_keepplan(plan) != 0)
			elog(ERROR, "evpipe: could not prepare the outcome statement");
		plans[ep_worker.ordering] = plan;
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
	foreach(lc, ep_worker.outcomes)
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
	static SPIPlanPtr plan = NULL;
	static const char *const plan_off[] = {
		"enable_hashjoin", "enable_mergejoin", "enable_seqscan", "enable_bitmapscan"};
	uint64		total = 0;
	int			batches = 0;

	while (ep_worker.dests_valid && ep_worker.ndests > 0 && batches++ < 20 && !ep_got_sigterm)
	{
		Datum	   *names = palloc(sizeof(Datum) * ep_worker.ndests);
		Datum	   *ages = palloc(sizeof(Datum) * ep_worker.ndests);
		Datum		values[3];
		uint64		n;
		uint64		r;
		int			i;
		int			k = 0;

		for (i = 0; i < ep_worker.ndests; i++)
			if (ep_worker.dests[i].max_age_ms > 0)
			{
				names[k] = CStringGetTextDatum(ep_worker.dests[i].name);
				ages[k++] = Int32GetDatum(ep_worker.dests[i].max_age_ms);
			}
		if (k == 0)
			break;
		ep_begin_tx("evpipe: dead-lettering rows past max_age_ms");
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
			ep_add_outcome(DatumGetInt64(SPI_getbinval(tup, desc, 1, &isnull)),
						DatumGetInt32(SPI_getbinval(tup, desc, 2, &isnull)),
						OUTCOME_DEAD, isnull ? 0 : DatumGetInt32(status), error,
						NULL, 0, SPI_getvalue(tup, desc, 3), dest);
		}
		/* the outcome statement runs SPI: only after the loop above */
		ep_record_outcomes_in_tx();
		ep_commit_tx();
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
