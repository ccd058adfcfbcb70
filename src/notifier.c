/*-------------------------------------------------------------------------
 *
 * notifier.c
 *	  The "evpipe notifier" background worker: wakes evpiped daemons when
 *	  new rows are committed, without costing producers anything they do
 *	  not pay already. A producer's commit raises a flag in shared memory
 *	  (an atomic exchange, as for the in-server workers) and sets the
 *	  notifier's latch only while it sleeps; the notifier turns the flag
 *	  into one NOTIFY evpipe_wake in a transaction of its own, at most one
 *	  per NOTIFY_GAP_MS, and lingers a while after each, so a stream of
 *	  commits costs no system call per commit. A NOTIFY in each producer's
 *	  transaction would take the notification queue's global lock in every
 *	  commit instead.
 *
 *	  Daemons also poll (evpipe.tick_ms), so a notification that does not
 *	  arrive (a reconnect, a transaction pooler) only delays them.
 *
 *	  With evpipe.workers = 0 the notifier also runs retention, which
 *	  worker 0 runs otherwise.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/xact.h"
#include "catalog/namespace.h"
#include "commands/async.h"
#include "miscadmin.h"
#include "pgstat.h"
#include "postmaster/bgworker.h"
#include "postmaster/interrupt.h"
#include "storage/ipc.h"
#include "storage/latch.h"
#include "storage/proc.h"
#include "tcop/tcopprot.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/timestamp.h"
#include "utils/wait_event.h"

#include "evpipe.h"
#include "notifier.h"
#include "retention.h"

#define NOTIFY_GAP_MS 2			/* at most one NOTIFY per this */
#define LINGER_MS 100			/* after one, watch the flag this long */

static volatile sig_atomic_t got_sigterm = false;

/* SIGTERM: stop. */
static void
notifier_sigterm(SIGNAL_ARGS)
{
	int			save_errno = errno;

	got_sigterm = true;
	SetLatch(MyLatch);
	errno = save_errno;
}

/* Register the notifier (from _PG_init). */
void
evpipe_notifier_register(void)
{
	BackgroundWorker bgw;

	memset(&bgw, 0, sizeof(bgw));
	bgw.bgw_flags = BGWORKER_SHMEM_ACCESS | BGWORKER_BACKEND_DATABASE_CONNECTION;
	bgw.bgw_start_time = BgWorkerStart_RecoveryFinished;
	bgw.bgw_restart_time = 1;
	snprintf(bgw.bgw_library_name, BGW_MAXLEN, "evpipe");
	snprintf(bgw.bgw_function_name, BGW_MAXLEN, "evpipe_notifier_main");
	snprintf(bgw.bgw_name, BGW_MAXLEN, "evpipe notifier");
	snprintf(bgw.bgw_type, BGW_MAXLEN, "evpipe notifier");
	RegisterBackgroundWorker(&bgw);
}

/* A producer committed new rows: tell the notifier (from its commit). */
void
evpipe_notifier_poke(void)
{
	EvpipeWorkerSlot *slot;
	uint32		procno;

	if (!evpipe_is_preloaded() ||
		pg_atomic_exchange_u32(&evpipe_shared->notify_pending, 1) != 0)
		return;
	slot = &evpipe_shared->notifier;
	/* pairs with the barrier the notifier passes between "sleeping" and its check */
	pg_memory_barrier();
	if (pg_atomic_read_u32(&slot->sleeping) == 0)
		return;
	procno = pg_atomic_read_u32(&slot->pgprocno);
	if (procno == 0 || procno > ProcGlobal->allProcCount)
		return;
	SetLatch(&ProcGlobal->allProcs[procno - 1].procLatch);
}

/* One NOTIFY evpipe_wake, in a transaction of its own. */
static void
notify_daemons(void)
{
	SetCurrentStatementStartTimestamp();
	StartTransactionCommand();
	pgstat_report_activity(STATE_RUNNING, "evpipe notifier: NOTIFY evpipe_wake");
	Async_Notify("evpipe_wake", NULL);
	CommitTransactionCommand();
	pgstat_report_activity(STATE_IDLE, NULL);
}

/* Whether the extension is installed in our database. */
static bool
extension_installed(void)
{
	bool		ready;
	Oid			nsp;

	SetCurrentStatementStartTimestamp();
	StartTransactionCommand();
	nsp = get_namespace_oid("evpipe", true);
	ready = OidIsValid(nsp) && OidIsValid(get_relname_relid("delivered", nsp)) &&
		OidIsValid(get_relname_relid("events", nsp));
	CommitTransactionCommand();
	return ready;
}

/*
 * Retention, in place of worker 0 (evpipe.workers = 0): skipped until the
 * extension exists; an error is logged and retried at the next round, not
 * the end of the process.
 */
static void
retention(MemoryContext loop_cxt)
{
	PG_TRY();
	{
		if (extension_installed())
			ep_retention_run(&got_sigterm);
	}
	PG_CATCH();
	{
		MemoryContextSwitchTo(loop_cxt);
		EmitErrorReport();
		FlushErrorState();
		AbortCurrentTransaction();
		MemoryContextSwitchTo(loop_cxt);
	}
	PG_END_TRY();
}

/* Clear our slot at exit. */
static void
notifier_cleanup(int code, Datum arg)
{
	if (evpipe_shared)
		pg_atomic_write_u32(&evpipe_shared->notifier.pgprocno, 0);
}

/* Background worker entry point. */
void
evpipe_notifier_main(Datum arg)
{
	EvpipeWorkerSlot *slot = &evpipe_shared->notifier;
	TimestampTz last_notify = 0;
	MemoryContext loop_cxt;

	pqsignal(SIGHUP, SignalHandlerForConfigReload);
	pqsignal(SIGTERM, notifier_sigterm);
	BackgroundWorkerUnblockSignals();
	BackgroundWorkerInitializeConnection(evpipe_database, NULL, 0);
	pg_atomic_write_u32(&slot->pgprocno, MyProc->pgprocno + 1);
	pg_atomic_write_u32(&slot->pid, MyProcPid);
	before_shmem_exit(notifier_cleanup, (Datum) 0);
	loop_cxt = AllocSetContextCreate(TopMemoryContext, "evpipe notifier",
									 ALLOCSET_DEFAULT_SIZES);
	ereport(LOG,
			(errmsg("evpipe event=notifier_start pid=%d database=%s", MyProcPid,
					evpipe_database)));

	while (!got_sigterm)
	{
		TimestampTz now;
		long		timeout;

		MemoryContextReset(loop_cxt);
		MemoryContextSwitchTo(loop_cxt);
		CHECK_FOR_INTERRUPTS();
		if (ConfigReloadPending)
		{
			ConfigReloadPending = false;
			ProcessConfigFile(PGC_SIGHUP);
		}
		now = GetCurrentTimestamp();
		if (pg_atomic_exchange_u32(&evpipe_shared->notify_pending, 0) != 0)
		{
			notify_daemons();
			last_notify = now;
		}
		/* with no delivery worker, retention is ours, once the extension is there */
		if (evpipe_shared->nworkers == 0 && ep_retention_due(now))
			retention(loop_cxt);

		if (now - last_notify < LINGER_MS * 1000L)
			timeout = NOTIFY_GAP_MS;
		else
		{
			timeout = 1000;		/* retention's clock */
			pg_atomic_write_u32(&slot->sleeping, 1);
			pg_memory_barrier();
			if (pg_atomic_read_u32(&evpipe_shared->notify_pending) != 0)
				timeout = 0;
		}
		(void) WaitLatch(MyLatch, WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH,
						 timeout, PG_WAIT_EXTENSION);
		pg_atomic_write_u32(&slot->sleeping, 0);
		ResetLatch(MyLatch);
	}
	ereport(LOG, (errmsg("evpipe event=notifier_stop pid=%d", MyProcPid)));

	/*
	 * Exit code 1: the postmaster starts the notifier again after a SIGTERM
	 * that was not a shutdown (pg_terminate_backend, DROP DATABASE ... WITH
	 * (FORCE)); with 0 it would never come back.
	 */
	proc_exit(1);
}
