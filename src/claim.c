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

#include "utils/builtins.h"
#include "utils/memutils.h"
#include "utils/timestamp.h"

#include "engine.h"
#include "enginedb.h"
#include "evpipe.h"
#include "metrics.h"
#include "ratelimit.h"

/* Rows claimed for one destination, with their rate-limit offsets. */
typedef struct ClaimPlan
{
	DestConfig *dest;
	int			reserved;
	int			used;
	int64	   *offsets;		/* microseconds from reserved_at */
	TimestampTz reserved_at;	/* when the offsets were given (our clock) */
	bool		shared;			/* its rate limit's schedule is in the database */
	TimestampTz tat;			/* shared: the schedule's next send (its clock) */
	int			wanted;			/* shared: rows it would have taken */
	int64		full_us;		/* shared: how long the schedule stays full */
	List	   *items;			/* DeliveryItem * */
	bool		probe;			/* the circuit breaker's probe row */
} ClaimPlan;

/* microseconds between the Unix epoch and PostgreSQL's */
#define UNIX_TO_PG_EPOCH_US \
	((int64) (POSTGRES_EPOCH_JDATE - UNIX_EPOCH_JDATE) * SECS_PER_DAY * USECS_PER_SEC)

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
	EpRows	   *rows = ep_db_exec(EP_SQL_RELEASE, NULL);

	if (rows->processed > 0)
		ereport(LOG,
				(errmsg("evpipe event=leases_released rows=" UINT64_FORMAT " reason=\"holder is gone\"",
						rows->processed)));
}

/* Append the outbox ids of a list's requests. */
static int
request_ids(dlist_head *list, int64 **ids, int n, int *cap)
{
	dlist_iter	iter;

	dlist_foreach(iter, list)
	{
		DeliveryRequest *r = dlist_container(DeliveryRequest, node, iter.cur);
		int			i;

		for (i = 0; i < r->nitems; i++)
		{
			if (n >= *cap)
			{
				*cap *= 2;
				*ids = repalloc(*ids, sizeof(int64) * *cap);
			}
			(*ids)[n++] = r->items[i].outbox_id;
		}
	}
	return n;
}

/*
 * Release the rows leased to this worker's holder that it no longer has in
 * flight nor waiting to be recorded: after a server crash lost the last
 * (asynchronous) outcome commits, a daemon that reconnects with the same
 * holder would otherwise keep them until their lease ran out. Requires an
 * open transaction.
 */
void
ep_release_forgotten_leases(void)
{
	int			cap = 64;
	int64	   *ids = palloc(sizeof(int64) * cap);
	int			n = 0;
	int32		holder = ep_worker.lease_holder;
	ListCell   *lc;
	EpRows	   *rows;

	n = request_ids(&ep_worker.active, &ids, n, &cap);
	n = request_ids(&ep_worker.scheduled, &ids, n, &cap);
	foreach(lc, ep_worker.outcomes)
	{
		if (n >= cap)
		{
			cap *= 2;
			ids = repalloc(ids, sizeof(int64) * cap);
		}
		ids[n++] = ((Outcome *) lfirst(lc))->outbox_id;
	}
	{
		EpParam		params[2] = {{&holder, 1}, {ids, n}};

		rows = ep_db_exec(EP_SQL_RELEASE_MINE, params);
	}
	if (rows->processed > 0)
		ereport(LOG,
				(errmsg("evpipe event=leases_released rows=" UINT64_FORMAT " reason=\"not in flight after a reconnect\"",
						rows->processed)));
}

/*
 * Take this worker's lease holder lock for the session (EP_SQL_RELEASE
 * reads them); false if another session holds it. Requires an open
 * transaction.
 */
bool
ep_take_lease_lock(void)
{
	int32		cls = EP_LEASE_LOCK_CLASS;
	int32		holder = ep_worker.lease_holder;
	EpParam		params[2] = {{&cls, 1}, {&holder, 1}};
	EpRows	   *rows = ep_db_exec(EP_SQL_HOLD_LEASE, params);

	return rows->processed == 1 && ep_cell(rows, 0, 0) != NULL &&
		strcmp(ep_cell(rows, 0, 0), "t") == 0;
}

/* how far ahead a claim reserves send times */
#define RATE_HORIZON_MS 1000

/*
 * A shared schedule another host filled up to the horizon: how long until
 * it has room for a quarter of what this claim wanted (0: it had room).
 * Until then a claim would reserve nothing; after it, claiming again keeps
 * the hosts taking turns at the limit instead of waiting for a tick.
 */
static int64
schedule_full_us(const ClaimPlan *p, TimestampTz db_now)
{
	int64		interval = ep_rate_interval_us(p->dest->rate_limit);
	int64		us;

	if (p->reserved >= p->wanted)
		return 0;
	us = p->tat - (db_now + (int64) RATE_HORIZON_MS * 1000) +
		interval * Max(1, p->wanted / 4);
	return Min(Max(us, 5000), (int64) RATE_HORIZON_MS * 1000);
}

/*
 * Rate-limited destinations share one schedule per destination in the
 * database, so that every host together (in-server workers and any number
 * of evpiped) keeps the limit: lock the plans' schedule rows for this
 * transaction and reserve send times against them. Offsets are on the
 * database's clock, counted from when we got the answer on ours.
 */
static void
reserve_shared(ClaimPlan *plans, int n)
{
	char	  **names = palloc(sizeof(char *) * n);
	int			nshared = 0;
	EpParam		params[1];
	EpRows	   *rows;
	TimestampTz got;
	uint64		r;
	int			i;

	for (i = 0; i < n; i++)
		if (plans[i].shared)
			names[nshared++] = plans[i].dest->name;
	if (nshared == 0)
		return;
	params[0].v = names;
	params[0].n = nshared;
	params[0].isnull = NULL;
	rows = ep_db_exec(EP_SQL_RATE_LOCK, params);
	got = GetCurrentTimestamp();
	for (r = 0; r < rows->processed; r++)
		for (i = 0; i < n; i++)
		{
			ClaimPlan  *p = &plans[i];
			DestConfig *d = p->dest;

			if (!p->shared || strcmp(d->name, ep_cell(rows, r, 0)) != 0)
				continue;
			p->tat = ep_cell_int(rows, r, 1, 0);
			p->wanted = p->reserved;
			p->reserved = ep_rate_reserve_at(d->slot, &p->tat, ep_cell_int(rows, r, 2, 0),
											 d->rate_limit, d->rate_burst, p->reserved,
											 RATE_HORIZON_MS, p->offsets);
			p->reserved_at = got;
			p->full_us = schedule_full_us(p, ep_cell_int(rows, r, 2, 0));
		}
}

/* Store the shared schedules, giving back what the claim did not use. */
static void
store_shared(ClaimPlan *plans, int n)
{
	char	  **names = palloc(sizeof(char *) * n);
	TimestampTz *tats = palloc(sizeof(TimestampTz) * n);
	int			nshared = 0;
	int			i;

	for (i = 0; i < n; i++)
		if (plans[i].shared)
		{
			ClaimPlan  *p = &plans[i];

			names[nshared] = p->dest->name;
			tats[nshared++] = p->tat - ep_rate_interval_us(p->dest->rate_limit) *
				Max(p->reserved - p->used, 0);
		}
	if (nshared > 0)
	{
		EpParam		params[2] = {{names, nshared}, {tats, nshared}};

		(void) ep_db_exec(EP_SQL_RATE_SET, params);
	}
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

/* Fill a DeliveryItem from a claimed row (columns as in EP_SQL_CLAIM). */
static void
fill_item(DeliveryItem *item, const EpRows *rows, uint64 r)
{
	item->outbox_id = ep_cell_int(rows, r, 0, 0);
	item->attempts = (int) ep_cell_int(rows, r, 3, 0);
	item->event_id = (char *) ep_cell(rows, r, 1);
	item->body = (char *) ep_cell(rows, r, 4);
	item->payload = (char *) ep_cell(rows, r, 5);
	item->event_type = (char *) ep_cell(rows, r, 6);
	item->source = (char *) ep_cell(rows, r, 7);
	item->correlation_id = (char *) ep_cell(rows, r, 8);
	item->traceparent = (char *) ep_cell(rows, r, 9);
	item->timestamp = (char *) ep_cell(rows, r, 10);
	item->group = (char *) ep_cell(rows, r, 11);
	item->created_us = ep_cell(rows, r, 12) ? ep_cell_int(rows, r, 12, 0) - UNIX_TO_PG_EPOCH_US : 0;
}

/*
 * A claimed row ingested longer ago than its destination's max_age_ms is
 * not attempted: it gets an outcome that dead-letters it (the attempt the
 * claim counted is taken back), with the previous attempt's error.
 */
static bool
claim_expired(DestConfig *d, DeliveryItem *item, const EpRows *rows, uint64 r)
{
	int64		age_us = GetCurrentTimestamp() - item->created_us;
	const char *last_error;
	char	   *error;

	if (d->max_age_ms <= 0 || item->created_us == 0 ||
		age_us <= (int64) d->max_age_ms * 1000)
		return false;
	last_error = ep_cell(rows, r, 14);
	error = psprintf("max_age_ms exceeded: ingested " INT64_FORMAT " s ago, limit %d ms, not attempted again%s%s",
					 age_us / USECS_PER_SEC, d->max_age_ms,
					 last_error ? "; last error: " : "", last_error ? last_error : "");
	ep_metric_add(EP_MK_DELIVERY, d->name, item->event_type, EP_M_DEAD, 1);
	ep_ordered_row_final(d, OUTCOME_EXPIRED);
	ep_add_outcome(item->outbox_id, item->attempts, OUTCOME_EXPIRED,
				   (int) ep_cell_int(rows, r, 13, 0), error, NULL, 0,
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
 * claim's commit covers it (a durable commit); the flush is a no-op once
 * the WAL writer got there. Function rows send nothing and need no flush.
 */
static bool
ordered_claims(ClaimPlan *plans, int n)
{
	int			i;

	for (i = 0; i < n; i++)
		if (plans[i].dest->ordered && plans[i].items != NIL &&
			!plans[i].dest->ops->in_database)
			return true;
	return false;
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
	char	  **names;
	int32	   *limits;
	int32	   *leases;
	char	  **groups;
	bool	   *fifos;
	bool	   *probes;
	ClaimPlan  *plans;
	int			n = 0;
	int			i;
	uint64		r;
	MemoryContext loopcxt = CurrentMemoryContext;
	TimestampTz claimed_at;

	ep_begin_tx("evpipe: claiming outbox rows");
	if (!ep_worker.dests_valid)
		ep_load_destinations();

	ep_record_outcomes_in_tx();

	names = palloc(sizeof(char *) * (ep_worker.ndests + 1));
	limits = palloc(sizeof(int32) * (ep_worker.ndests + 1));
	leases = palloc(sizeof(int32) * (ep_worker.ndests + 1));
	groups = palloc(sizeof(char *) * (ep_worker.ndests + 1));
	fifos = palloc(sizeof(bool) * (ep_worker.ndests + 1));
	probes = palloc(sizeof(bool) * (ep_worker.ndests + 1));
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
		p->shared = ep_worker.shared_rate && d->rate_limit > 0 && ep_rate_paused_ms(d->slot) == 0;
		if (p->shared)
			p->reserved = cap;	/* reserved against the shared schedule below */
		else
			p->reserved = ep_rate_reserve(d->slot, d->rate_limit, d->rate_burst,
										  cap, 1000, p->offsets);
		/* sends go at the times reserved, however long the claim takes */
		p->reserved_at = GetCurrentTimestamp();
		if (p->reserved <= 0)
		{
			if (p->probe)
				ep_breaker_unadmit(d->slot);
			memset(p, 0, sizeof(ClaimPlan));
			continue;
		}
		p->dest = d;
		names[n] = d->name;
		limits[n] = p->reserved;
		leases[n] = Max(evpipe_lease_ms, d->timeout_ms + 5000);
		fifos[n] = d->fifo;
		probes[n] = p->probe;
		groups[n] = d->message_group_field ? d->message_group_field : d->fifo ? "source" : "";
		n++;
		if (!is_function)
			free_slots -= p->reserved;
	}
	ep_worker.next_dest++;

	reserve_shared(plans, n);
	for (i = 0; i < n; i++)
		limits[i] = plans[i].reserved;

	if (n > 0)
	{
		int32		holder = ep_worker.lease_holder;
		EpParam		params[7] = {
			{names, n}, {limits, n}, {leases, n}, {groups, n}, {&holder, 1}, {fifos, n}, {probes, n}};
		EpRows	   *rows;

		/*
		 * The rows come back copied out of the host's buffers: a function
		 * destination's handler runs statements of its own (reading
		 * SPI_tuptable after one stranded the rest of a claim, leased,
		 * until the lease ran out).
		 */
		rows = ep_db_exec(ep_worker.ordering ? EP_SQL_CLAIM_ORDERED : EP_SQL_CLAIM, params);
		for (r = 0; r < rows->processed; r++)
		{
			const char *dname = ep_cell(rows, r, 2);
			ClaimPlan  *p = NULL;
			DeliveryItem item;
			MemoryContext old;

			for (i = 0; i < n; i++)
				if (strcmp(plans[i].dest->name, dname) == 0)
					p = &plans[i];
			if (p == NULL)
				continue;
			memset(&item, 0, sizeof(item));
			fill_item(&item, rows, r);
			p->used++;
			if (claim_expired(p->dest, &item, rows, r))
				continue;
			old = MemoryContextSwitchTo(loopcxt);
			p->items = lappend(p->items, item_copy(&item));
			MemoryContextSwitchTo(old);
		}

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
		store_shared(plans, n);
	}
	if (ordered_claims(plans, n))
		ep_commit_tx_durable();
	else
		ep_commit_tx();
	claimed_at = GetCurrentTimestamp();
	ep_worker.last_claim = claimed_at;

	/* a full claim leaves more behind: let a sleeping worker help */
	for (i = 0; i < n; i++)
		if (plans[i].used > 0 && plans[i].used >= plans[i].reserved)
		{
			ep_host_more_work();
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
		if (p->shared && p->used == 0 && p->full_us > 0)
		{
			/* rows may wait that the full schedule kept back: look again */
			d->backlog = true;
			d->look_at = claimed_at + p->full_us;
		}
		else
			d->look_at = 0;
		if (p->probe && p->used == 0)
			ep_breaker_unadmit(d->slot);
		if (p->used < p->reserved && !p->shared)
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
				ep_start_request(d, kind, cur, p->reserved_at + cur_offset);
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
			ep_start_request(d, kind, cur, p->reserved_at + cur_offset);
	}
}
