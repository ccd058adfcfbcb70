/*-------------------------------------------------------------------------
 *
 * engine.c
 *	  The delivery worker's host: a background worker per evpipe.workers,
 *	  its main loop and its short transactions. Each pass claims due rows
 *	  (claim.c), launches and drives their requests (transport.c), and has
 *	  the outcomes recorded (outcome.c); worker 0 also runs the maintenance
 *	  (retention.c, expiry of held rows, leases of processes that are gone).
 *
 *	  The wait watches the latch, postmaster death and curl's sockets
 *	  together, so SIGTERM and SIGHUP act promptly with requests in flight.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <curl/curl.h>

#include "access/xact.h"
#include "catalog/namespace.h"
#include "executor/spi.h"
#include "miscadmin.h"
#include "pgstat.h"
#include "postmaster/bgworker.h"
#include "postmaster/interrupt.h"
#include "storage/ipc.h"
#include "storage/latch.h"
#include "storage/proc.h"
#include "tcop/tcopprot.h"
#include "utils/guc.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/resowner.h"
#include "utils/snapmgr.h"
#include "utils/timestamp.h"
#include "utils/wait_event.h"

#include "engine.h"
#include "evpipe.h"
#include "ratelimit.h"
#include "retention.h"

/* after new work, how long a worker looks again without being woken */
#define LINGER_MS 2

/* the worker's state; SIGTERM's flag */
EpWorker	ep_worker;
volatile sig_atomic_t ep_got_sigterm = false;
/* SIGTERM: finish promptly; the loop gives in-flight rows back. */
static void
worker_sigterm(SIGNAL_ARGS)
{
	int			save_errno = errno;

	ep_got_sigterm = true;
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
	if (ep_worker.multi)
	{
		curl_multi_cleanup(ep_worker.multi);
		ep_worker.multi = NULL;
	}
}

/* Start a short transaction with SPI and a snapshot. */
void
ep_begin_tx(const char *activity)
{
	ep_worker.tx_caller_cxt = CurrentMemoryContext;
	SetCurrentStatementStartTimestamp();
	StartTransactionCommand();
	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "evpipe: SPI_connect failed");
	PushActiveSnapshot(GetTransactionSnapshot());
	pgstat_report_activity(STATE_RUNNING, activity);
}

/* Commit the short transaction. */
void
ep_commit_tx(void)
{
	SPI_finish();
	PopActiveSnapshot();
	CommitTransactionCommand();
	/* the commit leaves TopMemoryContext current: go back to the loop's */
	MemoryContextSwitchTo(ep_worker.tx_caller_cxt);
	pgstat_report_stat(false);
	pgstat_report_activity(STATE_IDLE, NULL);
}

/* Whether the extension is installed in our database. */
static bool
extension_ready(void)
{
	bool		ready;

	ep_begin_tx("evpipe: checking for the extension");
	ready = OidIsValid(get_namespace_oid("evpipe", true)) &&
		OidIsValid(get_relname_relid("outbox", get_namespace_oid("evpipe", true)));
	if (ready)
	{
		ep_release_stale_leases();
		if (!ep_worker.dests_valid || ep_worker.dests == NULL)
			ep_load_destinations();
	}
	ep_commit_tx();
	return ready;
}

/* Retention: old delivered rows and old events (worker 0 only; retention.c). */
static void
maintenance(void)
{
	ep_retention_run(&ep_got_sigterm);
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

/*
 * The wait set: the latch, postmaster death and curl's sockets. Kept across
 * waits (creating one costs system calls); rebuilt when curl adds or removes
 * a socket, adjusted in place when it only changes what to wait for.
 */
static WaitEventSet *
wait_set(void)
{
	int			i;

	if (ep_worker.set != NULL && !ep_worker.socks_changed)
	{
		for (i = 0; i < ep_worker.nsocks; i++)
			if (ep_worker.socks[i].what != ep_worker.socks[i].set_what)
			{
				ModifyWaitEvent(ep_worker.set, ep_worker.socks[i].pos, sock_events(ep_worker.socks[i].what), NULL);
				ep_worker.socks[i].set_what = ep_worker.socks[i].what;
			}
		return ep_worker.set;
	}
	if (ep_worker.set != NULL)
		FreeWaitEventSet(ep_worker.set);
	ep_worker.set = CreateWaitEventSet(TopMemoryContext, ep_worker.nsocks + 2);
	AddWaitEventToSet(ep_worker.set, WL_LATCH_SET, PGINVALID_SOCKET, MyLatch, NULL);
	AddWaitEventToSet(ep_worker.set, WL_EXIT_ON_PM_DEATH, PGINVALID_SOCKET, NULL, NULL);
	for (i = 0; i < ep_worker.nsocks; i++)
	{
		ep_worker.socks[i].pos = AddWaitEventToSet(ep_worker.set, sock_events(ep_worker.socks[i].what),
										   ep_worker.socks[i].fd, NULL, NULL);
		ep_worker.socks[i].set_what = ep_worker.socks[i].what;
	}
	ep_worker.socks_changed = false;
	return ep_worker.set;
}

/* Wait for the latch, curl's sockets or a timeout; then drive curl. */
static void
wait_and_drive(long timeout_ms)
{
	WaitEventSet *set;
	WaitEvent	events[EP_MAX_SOCKETS + 2];
	CURLMcode	mrc;
	int			nready;
	int			i;
	int			running;
	EvpipeWorkerSlot *slot = &evpipe_shared->workers[ep_worker.index];

	if (ep_worker.curl_deadline != 0)
	{
		long		curl_ms = (long) ((ep_worker.curl_deadline - GetCurrentTimestamp() + 999) / 1000);

		if (curl_ms < timeout_ms)
			timeout_ms = curl_ms;
	}
	if (timeout_ms < 0)
		timeout_ms = 0;

	set = wait_set();
	if (ep_worker.nactive == 0)
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
		if (now < ep_worker.linger_until)
		{
			timeout_ms = Min(timeout_ms, (long) ((ep_worker.linger_until - now + 999) / 1000));
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
		mrc = curl_multi_socket_action(ep_worker.multi, events[i].fd, mask, &running);
		if (mrc != CURLM_OK)
			ereport(LOG,
					(errmsg("evpipe: curl_multi_socket_action failed: %s",
							curl_multi_strerror(mrc))));
	}
	if (ep_worker.curl_deadline != 0 && GetCurrentTimestamp() >= ep_worker.curl_deadline)
	{
		ep_worker.curl_deadline = 0;
		mrc = curl_multi_socket_action(ep_worker.multi, CURL_SOCKET_TIMEOUT, 0, &running);
		if (mrc != CURLM_OK)
			ereport(LOG,
					(errmsg("evpipe: curl_multi_socket_action failed: %s",
							curl_multi_strerror(mrc))));
	}
	ep_collect_finished();
}

/*
 * Whether a claim is worth a transaction now: some destination whose last
 * claim was full has a quarter of its slots free and is not paused.
 */
static bool
backlog_claimable(void)
{
	int			free_slots = evpipe_max_in_flight - ep_worker.nactive;
	int			i;

	if (!ep_worker.dests_valid)
		return true;
	for (i = 0; i < ep_worker.ndests; i++)
	{
		DestConfig *d = &ep_worker.dests[i];
		int			cap = ep_dest_capacity(d, free_slots);

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

	memset(&ep_worker, 0, sizeof(ep_worker));
	ep_worker.index = index;
	ep_worker.lease_holder = MyProcPid;
	dlist_init(&ep_worker.active);
	dlist_init(&ep_worker.scheduled);

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

	ep_worker.loop_cxt = AllocSetContextCreate(TopMemoryContext, "evpipe worker loop",
									   ALLOCSET_DEFAULT_SIZES);
	ep_worker.outcome_cxt = AllocSetContextCreate(TopMemoryContext, "evpipe outcomes",
										  ALLOCSET_DEFAULT_SIZES);
	ep_worker.owner = ResourceOwnerCreate(NULL, "evpipe worker");
	ep_destinations_init();
	ep_transport_init();

	ereport(LOG,
			(errmsg("evpipe event=worker_start worker=%d pid=%d database=%s max_in_flight=%d",
					index, MyProcPid, evpipe_database, evpipe_max_in_flight)));

	for (;;)
	{
		long		timeout;
		long		next_launch;
		TimestampTz now;

		MemoryContextReset(ep_worker.loop_cxt);
		MemoryContextSwitchTo(ep_worker.loop_cxt);
		CHECK_FOR_INTERRUPTS();

		if (ep_got_sigterm)
			break;
		if (ConfigReloadPending)
		{
			ConfigReloadPending = false;
			ProcessConfigFile(PGC_SIGHUP);
			ep_worker.dests_valid = false;
			pending_wake = true;
		}
		/* the shared flag (new rows), or a wake-up meant for this worker */
		if ((pg_atomic_exchange_u32(&evpipe_shared->wake_pending, 0) |
			 pg_atomic_exchange_u32(&evpipe_shared->workers[index].wake, 0)) != 0)
			pending_wake = true;

		now = GetCurrentTimestamp();
		PG_TRY();
		{
			if (!ep_worker.ext_ready)
			{
				ep_worker.ext_ready = extension_ready();
				if (!ep_worker.ext_ready && !logged_waiting)
				{
					ereport(LOG,
							(errmsg("evpipe event=waiting_for_extension database=%s",
									evpipe_database),
							 errhint("Run CREATE EXTENSION evpipe in database \"%s\".",
									 evpipe_database)));
					logged_waiting = true;
				}
			}
			if (ep_worker.ext_ready)
			{
				bool		due;

				/* a wake-up means new rows, for any destination */
				if (pending_wake)
				{
					int			i;

					ep_worker.linger_until = TimestampTzPlusMilliseconds(now, LINGER_MS);

					for (i = 0; i < ep_worker.ndests; i++)
						ep_worker.dests[i].backlog = true;
					pending_wake = false;
				}
				due = now >= next_tick || !ep_worker.dests_valid ||
					(ep_worker.next_retry != 0 && now >= ep_worker.next_retry) ||
					backlog_claimable();
				if (due)
				{
					if (ep_worker.next_retry != 0 && now >= ep_worker.next_retry)
						ep_worker.next_retry = 0;
					if (now >= next_tick)
						next_tick = TimestampTzPlusMilliseconds(now, evpipe_tick_ms);
					ep_claim_and_start();
				}
				else if (ep_worker.outcomes != NIL)
					ep_record_outcomes();
				/* max_age_ms: every minute, or sooner for short ones */
				/* leases of processes that are gone: every 10 s */
				if (index == 0 && now - ep_worker.last_release > 10 * USECS_PER_SEC)
				{
					ep_worker.last_release = now;
					ep_begin_tx("evpipe: releasing leases of processes that are gone");
					ep_release_stale_leases();
					ep_commit_tx();
				}
				if (index == 0 && now - ep_worker.last_expiry > ep_expiry_interval_us())
				{
					ep_worker.last_expiry = now;
					(void) ep_expire_held_rows();
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
			MemoryContextSwitchTo(ep_worker.loop_cxt);
			EmitErrorReport();
			FlushErrorState();
			AbortCurrentTransaction();
			MemoryContextSwitchTo(ep_worker.loop_cxt);
			ep_worker.dests_valid = false;
			ep_worker.ext_ready = false;
			logged_waiting = false;
			next_tick = TimestampTzPlusMilliseconds(GetCurrentTimestamp(),
													Max(evpipe_tick_ms, 1000));
			pgstat_report_activity(STATE_IDLE, NULL);
		}
		PG_END_TRY();

		next_launch = ep_launch_due();
		now = GetCurrentTimestamp();
		if (!ep_worker.ext_ready)
			timeout = Max(evpipe_tick_ms, 1000);
		else if (pending_wake || backlog_claimable())
			timeout = 0;
		else
		{
			timeout = (long) ((next_tick - now) / 1000);
			if (ep_worker.next_retry != 0 && (ep_worker.next_retry - now) / 1000 < timeout)
				timeout = (long) ((ep_worker.next_retry - now) / 1000);
			if (next_launch >= 0 && next_launch < timeout)
				timeout = next_launch;
			if (ep_worker.outcomes != NIL && timeout > 5)
				timeout = 5;
			if (timeout < 0)
				timeout = 0;
		}
		if (ep_worker.nactive > 0)
			pgstat_report_activity(STATE_RUNNING,
								   psprintf("evpipe: %d deliveries in flight", ep_worker.nactive));
		wait_and_drive(timeout);
	}

	ereport(LOG,
			(errmsg("evpipe event=worker_stop worker=%d pid=%d in_flight=%d delivered=" UINT64_FORMAT,
					index, MyProcPid, ep_worker.nactive, ep_worker.delivered_total)));
	PG_TRY();
	{
		ep_release_in_flight();
	}
	PG_CATCH();
	{
		EmitErrorReport();
		FlushErrorState();
	}
	PG_END_TRY();
	proc_exit(1);
}
