/*-------------------------------------------------------------------------
 *
 * retention.c
 *	  Removing old events (evpipe.event_retention) and old delivered rows
 *	  (evpipe.delivered_retention), run by delivery worker 0.
 *
 * Every batch is its own short transaction deleting at most
 * EP_RETENTION_BATCH rows, and a round runs at most ROUND_BATCHES batches
 * per table and about ROUND_BUDGET_MS in all, then worker 0 delivers for at
 * least as long before the next round: producers never wait behind a long
 * transaction, no lock stronger than ROW EXCLUSIVE is taken, and autovacuum
 * sees a steady trickle of dead rows rather than a storm.
 *
 * Old events are found through the B-tree index events_ingested_at, walking
 * forward in ingested_at order: a pass starts at the oldest event and ends
 * when a batch finds fewer than a batch's worth of rows older than the
 * retention. Events that still have an outbox row or a dead letter are kept
 * (the outbox and replay need them); the cursor passes them, so a pass
 * examines each kept event once rather than once per batch. The check and
 * the delete are one statement with one snapshot: a dead letter being
 * replayed is seen either as the dead letter or as its new outbox row.
 *
 * A database still at version 0.1.0 has no such index: events are then kept
 * (a scan of the whole table per batch would be worse than the growth), and
 * a log line says to run ALTER EXTENSION evpipe UPDATE.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/xact.h"
#include "catalog/namespace.h"
#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "miscadmin.h"
#include "pgstat.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/snapmgr.h"
#include "utils/timestamp.h"

#include "evpipe.h"
#include "retention.h"

/* batches per table in one round, and the round's time budget */
#define ROUND_BATCHES 10
#define ROUND_BUDGET_MS 250
/* pause between rounds while a table still has old rows to remove */
#define BACKLOG_PAUSE_MS 250

/* when the last round started, and whether it left work behind */
static TimestampTz last_round = 0;
static bool backlog = false;

/* the pass over old events: where the next batch starts (ingested_at) */
static TimestampTz pass_cursor = DT_NOBEGIN;
static bool pass_cursor_strict = false;	/* start after it, not at it */

static bool logged_no_index = false;
static MemoryContext rt_caller_cxt = NULL;

/* Start a short transaction with SPI and a snapshot; say what it does. */
static void
rt_begin(const char *activity)
{
	rt_caller_cxt = CurrentMemoryContext;
	SetCurrentStatementStartTimestamp();
	StartTransactionCommand();
	if (SPI_connect() != SPI_OK_CONNECT)
		ereport(ERROR,
				(errcode(ERRCODE_INTERNAL_ERROR),
				 errmsg("evpipe: SPI_connect failed")));
	PushActiveSnapshot(GetTransactionSnapshot());
	pgstat_report_activity(STATE_RUNNING, activity);
}

/* Commit the short transaction and go back to the caller's context. */
static void
rt_commit(void)
{
	SPI_finish();
	PopActiveSnapshot();
	CommitTransactionCommand();
	MemoryContextSwitchTo(rt_caller_cxt);
	pgstat_report_stat(false);
	pgstat_report_activity(STATE_IDLE, NULL);
}

/*
 * Whether a round is due: every Min(60 s, Max(1 s, retention / 10)) for the
 * shorter retention in use, or soon again while old rows are left.
 */
bool
ep_retention_due(TimestampTz now)
{
	int			r = 0;
	int64		period_ms;

	if (evpipe_event_retention_s > 0)
		r = evpipe_event_retention_s;
	if (evpipe_delivered_retention_s > 0 &&
		(r == 0 || evpipe_delivered_retention_s < r))
		r = evpipe_delivered_retention_s;
	if (r == 0)
		return false;
	period_ms = backlog ? BACKLOG_PAUSE_MS :
		(int64) Min(60, Max(1, r / 10)) * 1000;
	return now - last_round >= period_ms * 1000;
}

/* Delete one batch of delivered rows older than their retention. */
static uint64
remove_delivered_batch(void)
{
	char		sql[512];

	snprintf(sql, sizeof(sql),
			 "DELETE FROM evpipe.delivered WHERE ctid = ANY (ARRAY("
			 "SELECT ctid FROM evpipe.delivered WHERE delivered_at < pg_catalog.now() - "
			 "interval '%d seconds' LIMIT %d))",
			 evpipe_delivered_retention_s, EP_RETENTION_BATCH);
	if (SPI_execute(sql, false, 0) != SPI_OK_DELETE)
		ereport(ERROR,
				(errcode(ERRCODE_INTERNAL_ERROR),
				 errmsg("evpipe: removing old delivered rows failed")));
	return SPI_processed;
}

/* Whether evpipe.events has the index retention walks (0.2.0 and later). */
static bool
events_index_exists(void)
{
	Oid			nsp = get_namespace_oid("evpipe", true);

	return OidIsValid(nsp) &&
		OidIsValid(get_relname_relid("events_ingested_at", nsp));
}

/*
 * Delete one batch of old events (those without outbox rows or dead
 * letters) from the pass cursor on, and move the cursor. Returns whether
 * the pass goes on; *removed is set to the rows deleted.
 */
static bool
remove_events_batch(uint64 *removed)
{
	char		sql[1536];
	Oid			argtypes[1] = {TIMESTAMPTZOID};
	Datum		args[1];
	bool		isnull;
	int64		examined;
	TimestampTz last;

	snprintf(sql, sizeof(sql),
			 "WITH c AS MATERIALIZED ("
			 " SELECT e.ctid AS t, e.event_id, e.ingested_at FROM evpipe.events e"
			 " WHERE e.ingested_at %s $1"
			 "  AND e.ingested_at < pg_catalog.now() - interval '%d seconds'"
			 " ORDER BY e.ingested_at LIMIT %d),"
			 " d AS (DELETE FROM evpipe.events e WHERE e.ctid = ANY (ARRAY("
			 "  SELECT c.t FROM c"
			 "  WHERE NOT EXISTS (SELECT FROM evpipe.outbox o WHERE o.event_id = c.event_id)"
			 "   AND NOT EXISTS (SELECT FROM evpipe.dead_letters x WHERE x.event_id = c.event_id)))"
			 "  RETURNING 1)"
			 " SELECT (SELECT pg_catalog.count(*) FROM d), (SELECT pg_catalog.count(*) FROM c),"
			 "  (SELECT pg_catalog.max(c.ingested_at) FROM c)",
			 pass_cursor_strict ? ">" : ">=",
			 evpipe_event_retention_s, EP_RETENTION_BATCH);
	args[0] = TimestampTzGetDatum(pass_cursor);
	if (SPI_execute_with_args(sql, 1, argtypes, args, NULL, false, 0) != SPI_OK_SELECT ||
		SPI_processed != 1)
		ereport(ERROR,
				(errcode(ERRCODE_INTERNAL_ERROR),
				 errmsg("evpipe: removing old events failed")));
	*removed = (uint64) DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[0],
													SPI_tuptable->tupdesc, 1, &isnull));
	examined = DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[0],
										   SPI_tuptable->tupdesc, 2, &isnull));
	if (examined < EP_RETENTION_BATCH)
	{
		/* the pass is over: the next one starts at the oldest event again */
		pass_cursor = DT_NOBEGIN;
		pass_cursor_strict = false;
		return false;
	}
	last = DatumGetTimestampTz(SPI_getbinval(SPI_tuptable->vals[0],
											 SPI_tuptable->tupdesc, 3, &isnull));

	/*
	 * Go on from the newest row examined. Rows of that same instant are
	 * examined again (a batch can end in the middle of them), unless the
	 * batch was all kept rows of one instant: then step past it.
	 */
	pass_cursor_strict = (*removed == 0 && last == pass_cursor);
	pass_cursor = last;
	return true;
}

/* Log what a round removed from a table. */
static void
log_removed(const char *what, uint64 rows, int batches, uint64 max_batch)
{
	if (rows == 0)
		return;
	ereport(LOG,
			(errmsg("evpipe event=%s rows=" UINT64_FORMAT " batches=%d max_batch=" UINT64_FORMAT,
					what, rows, batches, max_batch)));
}

/*
 * One round of retention: old delivered rows, then old events, in batches
 * of short transactions; stops early when *stop is set. Call it outside a
 * transaction.
 */
void
ep_retention_run(volatile sig_atomic_t *stop)
{
	TimestampTz start = GetCurrentTimestamp();
	uint64		n = 0;
	uint64		total;
	uint64		max_batch;
	int			batches;
	bool		more;

	/* a failing round waits a whole period too */
	last_round = start;
	backlog = false;

	if (evpipe_delivered_retention_s > 0)
	{
		total = max_batch = 0;
		for (batches = 0; batches < ROUND_BATCHES && !*stop;)
		{
			rt_begin("evpipe: removing old delivered rows");
			n = remove_delivered_batch();
			rt_commit();
			batches++;
			total += n;
			max_batch = Max(max_batch, n);
			if (n < EP_RETENTION_BATCH ||
				TimestampDifferenceExceeds(start, GetCurrentTimestamp(), ROUND_BUDGET_MS))
				break;
			CHECK_FOR_INTERRUPTS();
		}
		if (n >= EP_RETENTION_BATCH)
			backlog = true;
		log_removed("delivered_removed", total, batches, max_batch);
	}

	if (evpipe_event_retention_s <= 0 || *stop)
	{
		pass_cursor = DT_NOBEGIN;
		pass_cursor_strict = false;
		return;
	}
	total = max_batch = 0;
	more = false;
	for (batches = 0; batches < ROUND_BATCHES && !*stop;)
	{
		rt_begin("evpipe: removing old events");
		if (!events_index_exists())
		{
			rt_commit();
			if (!logged_no_index)
				ereport(LOG,
						(errmsg("evpipe event=event_retention_skipped reason=\"index evpipe.events_ingested_at is missing\""),
						 errhint("Run ALTER EXTENSION evpipe UPDATE to remove events older than evpipe.event_retention.")));
			logged_no_index = true;
			more = false;
			break;
		}
		logged_no_index = false;
		more = remove_events_batch(&n);
		rt_commit();
		batches++;
		total += n;
		max_batch = Max(max_batch, n);
		if (!more ||
			TimestampDifferenceExceeds(start, GetCurrentTimestamp(), ROUND_BUDGET_MS))
			break;
		CHECK_FOR_INTERRUPTS();
	}
	if (more)
		backlog = true;
	log_removed("events_removed", total, batches, max_batch);
}
