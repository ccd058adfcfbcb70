/*-------------------------------------------------------------------------
 *
 * claim.c
 *	  Claims: in one short transaction, record pending outcomes, then lease
 *	  due rows for each destination with room (in-flight cap, circuit
 *	  breaker, rate-limit reservations; for ordered destinations only the
 *	  head of each key). In-database kinds deliver right there; the others
 *	  become requests started after commit. Also releases the leases of
 *	  processes that are gone.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/xact.h"
#include "access/xlog.h"
#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "miscadmin.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/memutils.h"
#include "utils/timestamp.h"

#include "engine.h"
#include "evpipe.h"
#include "metrics.h"
#include "ratelimit.h"

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
/*
 * Release leases held by processes that are no longer delivery workers (a
 * crash, a restart, rows restored from a dump taken while they were in
 * flight) now rather than at their expiry. Leased rows have next_attempt_at
 * at the lease's end: each destination's future range of the claim index.
 * Requires an open transaction.
 */
void
ep_release_stale_leases(void)
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

/* Rows a destination may take now, before its rate limit. */
int
ep_dest_capacity(DestConfig *d, int free_slots)
{
	int			cap;

	if (!d->enabled)
		return 0;
	if (d->ops == NULL)
		return 0;
	cap = d->max_in_flight - d->in_flight;
	if (cap > free_slots)
		cap = free_slots;
	return cap;
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
	ep_ordered_row_final(d, OUTCOME_EXPIRED);
	ep_add_outcome(item->outbox_id, item->attempts, OUTCOME_EXPIRED,
				isnull ? 0 : DatumGetInt32(status), error, NULL, 0,
				item->event_id, d->name);
	return true;
}

/* A copy of a claimed row's item in the current memory context. */
static DeliveryItem *
item_copy(DeliveryItem *src)
{
	DeliveryItem *dst = palloc(sizeof(DeliveryItem));

	ep_item_copy(dst, src);
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
			!plans[i].dest->ops->in_database)
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
void
ep_claim_and_start(void)
{
	int			free_slots = evpipe_max_in_flight - ep_worker.nactive;
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

	ep_begin_tx("evpipe: claiming outbox rows");
	if (!ep_worker.dests_valid)
		ep_load_destinations();

	ep_record_outcomes_in_tx();

	names = palloc(sizeof(Datum) * (ep_worker.ndests + 1));
	limits = palloc(sizeof(Datum) * (ep_worker.ndests + 1));
	leases = palloc(sizeof(Datum) * (ep_worker.ndests + 1));
	groups = palloc(sizeof(Datum) * (ep_worker.ndests + 1));
	fifos = palloc(sizeof(Datum) * (ep_worker.ndests + 1));
	/* plans outlive the transaction (SPI memory does not): loop context */
	plans = MemoryContextAllocZero(loopcxt, sizeof(ClaimPlan) * (ep_worker.ndests + 1));
	for (i = 0; i < ep_worker.ndests && free_slots > 0; i++)
	{
		DestConfig *d = &ep_worker.dests[(ep_worker.next_dest + i) % ep_worker.ndests];
		bool		is_function = d->ops != NULL && d->ops->in_database;
		int			cap = ep_dest_capacity(d, Min(is_function ? evpipe_batch_size : free_slots,
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
	ep_worker.next_dest++;

	if (n > 0)
	{
		static SPIPlanPtr claim_plans[2] = {NULL, NULL};	/* [ep_worker.ordering] */
		SPIPlanPtr	plan = claim_plans[ep_worker.ordering];
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
							   ep_worker.ordering ?
							   " AND (o.ordering_key IS NULL OR NOT EXISTS (SELECT 1 FROM evpipe.outbox p"
							   "  WHERE p.destination = o.destination AND p.ordering_key = o.ordering_key"
							   "  AND p.id < o.id))" : ""),
							   6, types, CURSOR_OPT_GENERIC_PLAN);
			if (plan == NULL || SPI_keepplan(plan) != 0)
				elog(ERROR, "evpipe: could not prepare the claim statement");
			claim_plans[ep_worker.ordering] = plan;
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

			if (!plans[i].dest->ops->in_database)
				continue;
			foreach(lc, plans[i].items)
				plans[i].dest->ops->deliver(plans[i].dest, lfirst(lc));
			plans[i].items = NIL;
		}
		/* function outcomes commit with the claim */
		ep_record_outcomes_in_tx();
	}
	ep_commit_tx();
	ordered_claims_durable(plans, n);
	claimed_at = GetCurrentTimestamp();
	ep_worker.last_claim = claimed_at;

	/* a full claim leaves more behind: let a sleeping worker help */
	for (i = 0; i < n; i++)
		if (plans[i].used > 0 && plans[i].used >= plans[i].reserved)
		{
			evpipe_wake_one_worker(ep_worker.index);
			break;
		}

	/* start requests outside the transaction, batching per destination */
	for (i = 0; i < n; i++)
	{
		ClaimPlan  *p = &plans[i];
		DestConfig *d = p->dest;
		const DeliveryKind *kind = d->ops;
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
		if (kind == NULL || kind->in_database)
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
				ep_start_request(d, kind, cur, claimed_at + cur_offset);
				cur = NULL;
			}
			if (cur == NULL)
			{
				cur = ep_new_request(d, kind->max_batch);
				cur_offset = offset;
				cur_bytes = 0;
			}
			ep_copy_item(cur, item);
			cur_bytes += strlen(item->body);
		}
		if (cur)
			ep_start_request(d, kind, cur, claimed_at + cur_offset);
	}
}
