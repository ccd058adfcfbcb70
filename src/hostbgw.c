/*-------------------------------------------------------------------------
 *
 * hostbgw.c
 *	  The engine's host inside the server: a background worker per
 *	  evpipe.workers running the engine's loop (engine.c) with SPI
 *	  (hostspi.c). Worker 0 is the maintainer and runs retention too.
 *
 *	  The wait watches the latch, postmaster death and curl's sockets
 *	  together, so SIGTERM and SIGHUP act promptly with requests in flight.
 *	  Producers' commits raise a shared flag and wake a sleeping worker
 *	  (evpipe.c); a worker that lingers after new work needs no wake-up.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <curl/curl.h>

#include "access/xact.h"
#include "catalog/namespace.h"
#include "miscadmin.h"
#include "pgstat.h"
#include "postmaster/bgworker.h"
#include "postmaster/interrupt.h"
#include "storage/ipc.h"
#include "storage/latch.h"
#include "storage/proc.h"
#include "tcop/tcopprot.h"
#include "utils/guc.h"
#include "utils/inval.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/resowner.h"
#include "utils/timestamp.h"
#include "utils/wait_event.h"

#include "engine.h"
#include "evpipe.h"
#include "retention.h"

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

/*
 * Whether the extension is installed in our database. Once it is, the
 * worker holds its lease holder's advisory lock (see EP_SQL_RELEASE) and
 * has its destinations.
 */
static bool
extension_ready(void)
{
	bool		ready;

	ep_begin_tx("evpipe: checking for the extension");
	ready = OidIsValid(get_namespace_oid("evpipe", true)) &&
		OidIsValid(get_relname_relid("outbox", get_namespace_oid("evpipe", true)));
	if (ready)
	{
		(void) ep_take_lease_lock();	/* our pid: nobody else holds it */
		ep_release_stale_leases();
		if (!ep_worker.dests_valid || ep_worker.dests == NULL)
			ep_load_destinations();
	}
	ep_commit_tx();
	return ready;
}

/* A full claim left rows behind: let a sleeping worker help. */
void
ep_host_more_work(void)
{
	evpipe_wake_one_worker(ep_worker.index);
}

/* Relcache callback: evpipe.destinations or the outbox may have changed. */
static void
dest_relcache_cb(Datum arg, Oid relid)
{
	ep_destinations_changed(relid);
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

/*
 * Wait for the latch, curl's sockets or a timeout; then drive curl. Says
 * it sleeps (or lingers) first, then looks for new work once more: a
 * producer raises the flag before it looks for a sleeping worker to wake,
 * so one of the two sees the other.
 */
static void
wait_and_drive(long timeout_ms, bool linger)
{
	WaitEventSet *set;
	WaitEvent	events[EP_MAX_SOCKETS + 2];
	int			ready[EP_MAX_SOCKETS];
	int			nready;
	int			i;
	EvpipeWorkerSlot *slot = &evpipe_shared->workers[ep_worker.index];

	set = wait_set();
	if (ep_worker.nactive == 0)
		pgstat_report_activity(STATE_IDLE, NULL);
	if (timeout_ms > 0)
	{
		pg_atomic_write_u32(linger ? &slot->lingering : &slot->sleeping, 1);
		pg_memory_barrier();
		if (pg_atomic_read_u32(&evpipe_shared->wake_pending) != 0 ||
			pg_atomic_read_u32(&slot->wake) != 0)
			timeout_ms = 0;
	}
	nready = WaitEventSetWait(set, timeout_ms, events, lengthof(events),
							  PG_WAIT_EXTENSION);
	pg_atomic_write_u32(&slot->sleeping, 0);
	pg_atomic_write_u32(&slot->lingering, 0);

	memset(ready, 0, sizeof(int) * ep_worker.nsocks);
	for (i = 0; i < nready; i++)
	{
		int			s;

		if (events[i].events & WL_LATCH_SET)
		{
			ResetLatch(MyLatch);
			continue;
		}
		if (!(events[i].events & (WL_SOCKET_READABLE | WL_SOCKET_WRITEABLE)))
			continue;
		for (s = 0; s < ep_worker.nsocks; s++)
			if (ep_worker.socks[s].fd == events[i].fd)
			{
				if (events[i].events & WL_SOCKET_READABLE)
					ready[s] |= CURL_CSELECT_IN;
				if (events[i].events & WL_SOCKET_WRITEABLE)
					ready[s] |= CURL_CSELECT_OUT;
			}
	}
	ep_transport_drive(ready);
}

/* Background worker entry point. */
void
evpipe_worker_main(Datum arg)
{
	int			index = DatumGetInt32(arg);
	volatile bool logged_waiting = false;

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

	ep_engine_start(index, MyProcPid, index == 0);
	ep_worker.owner = ResourceOwnerCreate(NULL, "evpipe worker");
	CacheRegisterRelcacheCallback(dest_relcache_cb, (Datum) 0);

	ereport(LOG,
			(errmsg("evpipe event=worker_start worker=%d pid=%d database=%s max_in_flight=%d",
					index, MyProcPid, evpipe_database, evpipe_max_in_flight)));

	for (;;)
	{
		long		timeout;
		bool		linger = false;

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
			ep_worker.pending_wake = true;
		}
		/* the shared flag (new rows), or a wake-up meant for this worker */
		if ((pg_atomic_exchange_u32(&evpipe_shared->wake_pending, 0) |
			 pg_atomic_exchange_u32(&evpipe_shared->workers[index].wake, 0)) != 0)
			ep_worker.pending_wake = true;

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
				ep_engine_pass();
				/* retention: every minute, or sooner for short retentions */
				if (index == 0 && ep_retention_due(GetCurrentTimestamp()))
					ep_retention_run(&ep_got_sigterm);
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
			ep_engine_failed();
			ep_worker.ext_ready = false;
			logged_waiting = false;
			pgstat_report_activity(STATE_IDLE, NULL);
		}
		PG_END_TRY();

		if (!ep_worker.ext_ready)
		{
			(void) ep_launch_due();
			timeout = Max(evpipe_tick_ms, 1000);
		}
		else
			timeout = ep_engine_timeout(&linger);
		if (ep_worker.nactive > 0)
			pgstat_report_activity(STATE_RUNNING,
								   psprintf("evpipe: %d deliveries in flight", ep_worker.nactive));
		wait_and_drive(timeout, linger);
	}

	ereport(LOG,
			(errmsg("evpipe event=worker_stop worker=%d pid=%d in_flight=%d delivered=" UINT64_FORMAT,
					index, MyProcPid, ep_worker.nactive, ep_worker.delivered_total)));
	PG_TRY();
	{
		ep_engine_stop();
	}
	PG_CATCH();
	{
		EmitErrorReport();
		FlushErrorState();
	}
	PG_END_TRY();
	proc_exit(1);
}
