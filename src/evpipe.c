/*-------------------------------------------------------------------------
 *
 * evpipe.c
 *	  Module entry: configuration variables, shared memory, and waking the
 *	  delivery workers when a transaction that wrote outbox rows commits.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/xact.h"
#include "access/htup_details.h"
#include "commands/trigger.h"
#include "executor/spi.h"
#include "funcapi.h"
#include "fmgr.h"
#include "miscadmin.h"
#include "storage/ipc.h"
#include "storage/latch.h"
#include "storage/proc.h"
#include "storage/shmem.h"
#include "utils/guc.h"
#include "utils/inval.h"
#include "utils/rel.h"
#include "utils/builtins.h"
#include "utils/timestamp.h"

#include "evpipe.h"
#include "metrics.h"
#include "netpolicy.h"
#include "notifier.h"
#include "ratelimit.h"

PG_MODULE_MAGIC;

int			evpipe_max_event_bytes = 262144;
int			evpipe_max_batch_events = 10000;
int			evpipe_max_depth = 64;
bool		evpipe_log_rejections = false;
char	   *evpipe_database = NULL;
int			evpipe_workers = 2;
int			evpipe_max_in_flight = 64;
int			evpipe_batch_size = 100;
int			evpipe_lease_ms = 60000;
int			evpipe_tick_ms = 1000;
int			evpipe_delivered_retention_s = 7 * 86400;
int			evpipe_event_retention_s = 7 * 86400;
int			evpipe_max_destinations = 256;
bool		evpipe_log_deliveries = false;
bool		evpipe_outcome_events = false;
char	   *evpipe_destination_networks = NULL;

EvpipeShared *evpipe_shared = NULL;

static bool preloaded = false;
static bool wake_at_commit = false;
static bool xact_callback_registered = false;
static shmem_request_hook_type prev_shmem_request_hook = NULL;
static shmem_startup_hook_type prev_shmem_startup_hook = NULL;

void		_PG_init(void);
PG_FUNCTION_INFO_V1(evpipe_wake_workers);
PG_FUNCTION_INFO_V1(evpipe_config_changed);
PG_FUNCTION_INFO_V1(evpipe_version);

/* Size of the shared state. */
static Size
evpipe_shmem_size(void)
{
	return add_size(add_size(MAXALIGN(sizeof(EvpipeShared)),
							 MAXALIGN(ep_rate_shmem_size())),
					ep_metrics_shmem_size());
}

/* Ask the postmaster for our shared memory (PG15: from shmem_request_hook). */
static void
evpipe_shmem_request(void)
{
	if (prev_shmem_request_hook)
		prev_shmem_request_hook();
	RequestAddinShmemSpace(evpipe_shmem_size());
}

/* Create or attach the shared state. */
static void
evpipe_shmem_startup(void)
{
	bool		found;

	if (prev_shmem_startup_hook)
		prev_shmem_startup_hook();

	LWLockAcquire(AddinShmemInitLock, LW_EXCLUSIVE);
	evpipe_shared = ShmemInitStruct("evpipe", evpipe_shmem_size(), &found);
	if (!found)
	{
		int			i;

		memset(evpipe_shared, 0, evpipe_shmem_size());
		pg_atomic_init_u32(&evpipe_shared->wake_pending, 0);
		evpipe_shared->nworkers = evpipe_workers;
		for (i = 0; i < EVPIPE_MAX_WORKERS; i++)
		{
			pg_atomic_init_u32(&evpipe_shared->workers[i].pgprocno, 0);
			pg_atomic_init_u32(&evpipe_shared->workers[i].pid, 0);
			pg_atomic_init_u32(&evpipe_shared->workers[i].sleeping, 0);
			pg_atomic_init_u32(&evpipe_shared->workers[i].lingering, 0);
			pg_atomic_init_u32(&evpipe_shared->workers[i].wake, 0);
		}
		pg_atomic_init_u32(&evpipe_shared->wake_next, 0);
		pg_atomic_init_u32(&evpipe_shared->notifier.pgprocno, 0);
		pg_atomic_init_u32(&evpipe_shared->notifier.pid, 0);
		pg_atomic_init_u32(&evpipe_shared->notifier.sleeping, 0);
		pg_atomic_init_u32(&evpipe_shared->notifier.lingering, 0);
		pg_atomic_init_u32(&evpipe_shared->notifier.wake, 0);
		pg_atomic_init_u32(&evpipe_shared->notify_pending, 0);
	}
	ep_rate_shmem_init((char *) evpipe_shared + MAXALIGN(sizeof(EvpipeShared)),
					   found);
	ep_metrics_shmem_init((char *) evpipe_shared + MAXALIGN(sizeof(EvpipeShared)) +
						  MAXALIGN(ep_rate_shmem_size()), found);
	LWLockRelease(AddinShmemInitLock);
}

/* Whether the library was loaded through shared_preload_libraries. */
bool
evpipe_is_preloaded(void)
{
	return preloaded && evpipe_shared != NULL;
}

/*
 * Run a kept SPI plan (read-write, every row) with the named boolean
 * settings off for that statement only (planner switches, jit); they are
 * restored after it, and by the (sub)transaction's abort if it fails.
 */
int
evpipe_execute_plan_with_off(SPIPlanPtr plan, Datum *values, const char *nulls,
							 const char *const *settings, int nsettings)
{
	int			nestlevel = NewGUCNestLevel();
	int			rc;
	int			i;

	for (i = 0; i < nsettings; i++)
		(void) set_config_option(settings[i], "off", PGC_USERSET, PGC_S_SESSION,
								 GUC_ACTION_SAVE, true, 0, false);
	rc = SPI_execute_plan(plan, values, nulls, false, 0);
	AtEOXact_GUC(true, nestlevel);
	return rc;
}

/*
 * Wake one sleeping worker other than `except` (-1: any), taking turns; its
 * own flag tells it the wake-up is for it. Workers that are awake read the
 * shared flag before they next sleep, so they need no signal.
 */
void
evpipe_wake_one_worker(int except)
{
	int			n;
	uint32		start;
	int			k;

	if (!evpipe_is_preloaded())
		return;
	n = Min(evpipe_shared->nworkers, EVPIPE_MAX_WORKERS);
	if (n <= 0)
		return;
	/* pairs with the barrier a worker passes between "sleeping" and its check */
	pg_memory_barrier();
	start = pg_atomic_fetch_add_u32(&evpipe_shared->wake_next, 1);
	for (k = 0; k < n; k++)
	{
		int			i = (start + k) % n;
		EvpipeWorkerSlot *slot = &evpipe_shared->workers[i];
		uint32		procno;

		if (i == except || pg_atomic_read_u32(&slot->sleeping) == 0)
			continue;
		procno = pg_atomic_read_u32(&slot->pgprocno);
		if (procno == 0 || procno > ProcGlobal->allProcCount)
			continue;
		pg_atomic_write_u32(&slot->wake, 1);
		SetLatch(&ProcGlobal->allProcs[procno - 1].procLatch);
		return;
	}
}

/*
 * New work: raise the shared flag and wake one sleeping worker. One is
 * enough: a worker whose claim comes back full wakes another. No signal at
 * all while a worker lingers: it reads the flag within milliseconds, and a
 * busy producer then costs no system call per commit.
 */
void
evpipe_wake_workers_now(void)
{
	int			n;
	int			i;

	if (!evpipe_is_preloaded())
		return;
	pg_atomic_write_u32(&evpipe_shared->wake_pending, 1);
	pg_memory_barrier();
	n = Min(evpipe_shared->nworkers, EVPIPE_MAX_WORKERS);
	for (i = 0; i < n; i++)
		if (pg_atomic_read_u32(&evpipe_shared->workers[i].lingering) != 0)
			return;
	evpipe_wake_one_worker(-1);
}

/* At commit, wake the workers once if this transaction asked for it. */
static void
evpipe_xact_callback(XactEvent event, void *arg)
{
	switch (event)
	{
		case XACT_EVENT_COMMIT:
			if (wake_at_commit)
			{
				wake_at_commit = false;
				/* skip the syscalls if a wake-up is already pending */
				if (evpipe_is_preloaded() &&
					pg_atomic_exchange_u32(&evpipe_shared->wake_pending, 1) == 0)
					evpipe_wake_workers_now();
				/* and evpiped daemons, through the notifier */
				evpipe_notifier_poke();
			}
			break;
		case XACT_EVENT_ABORT:
		case XACT_EVENT_PARALLEL_ABORT:
			wake_at_commit = false;
			break;
		default:
			break;
	}
}

/* Ask for a worker wake-up when the current transaction commits. */
void
evpipe_request_wake(void)
{
	if (!xact_callback_registered)
	{
		RegisterXactCallback(evpipe_xact_callback, NULL);
		xact_callback_registered = true;
	}
	wake_at_commit = true;
}

/* SQL: evpipe.version(): the installed schema's version, as pg_extension has it. */
Datum
evpipe_version(PG_FUNCTION_ARGS)
{
	MemoryContext caller = CurrentMemoryContext;
	text	   *result = NULL;

	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	if (SPI_execute("SELECT extversion FROM pg_catalog.pg_extension WHERE extname = 'evpipe'",
					true, 1) != SPI_OK_SELECT)
		elog(ERROR, "reading the extension's version failed");
	if (SPI_processed == 1)
	{
		char	   *v = SPI_getvalue(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1);

		if (v != NULL)
		{
			MemoryContext spi = MemoryContextSwitchTo(caller);

			result = cstring_to_text(v);
			MemoryContextSwitchTo(spi);
		}
	}
	SPI_finish();
	if (result == NULL)
		PG_RETURN_NULL();
	PG_RETURN_TEXT_P(result);
}

/* SQL: evpipe._wake_workers() */
Datum
evpipe_wake_workers(PG_FUNCTION_ARGS)
{
	evpipe_request_wake();
	PG_RETURN_VOID();
}

/*
 * Trigger on the configuration tables: send a relcache invalidation for the
 * table at commit, so every backend and worker drops its cached
 * configuration, and wake the workers so they notice promptly.
 */
Datum
evpipe_config_changed(PG_FUNCTION_ARGS)
{
	TriggerData *trigdata = (TriggerData *) fcinfo->context;

	if (!CALLED_AS_TRIGGER(fcinfo))
		ereport(ERROR,
				(errcode(ERRCODE_E_R_I_E_TRIGGER_PROTOCOL_VIOLATED),
				 errmsg("evpipe._config_changed() must be called as a trigger")));
	CacheInvalidateRelcache(trigdata->tg_relation);
	evpipe_request_wake();
	return PointerGetDatum(NULL);
}

/* Refuse an evpipe.destination_networks value that is not a CIDR list. */
static bool
check_destination_networks(char **newval, void **extra, GucSource source)
{
	char		err[256];
	EpNetPolicy *policy = ep_netpolicy_parse(*newval, err, sizeof(err));

	if (policy == NULL)
	{
		GUC_check_errcode(ERRCODE_INVALID_PARAMETER_VALUE);
		GUC_check_errdetail("%s.", err);
		GUC_check_errhint("The value is a comma-separated list of IPv4 and IPv6 networks, such as \"10.0.0.0/8, ::1/128\", or empty for any address.");
		return false;
	}
#if PG_VERSION_NUM >= 160000
	{
		/* a GUC's extra must come from guc_malloc */
		size_t		size = sizeof(EpNetPolicy) + policy->ncidrs * sizeof(EpCidr);
		void	   *copy = guc_malloc(LOG, size);

		if (copy == NULL)
		{
			free(policy);
			return false;
		}
		memcpy(copy, policy, size);
		free(policy);
		policy = copy;
	}
#endif
	*extra = policy;			/* malloc'd: the GUC machinery frees it */
	return true;
}

/* Make the workers' open-socket check apply the new list. */
static void
assign_destination_networks(const char *newval, void *extra)
{
	ep_netpolicy_install((const EpNetPolicy *) extra);
}

/* Define configuration variables, request shared memory, start workers. */
void
_PG_init(void)
{
	preloaded = process_shared_preload_libraries_in_progress;

	DefineCustomIntVariable("evpipe.max_event_bytes",
							"Largest event accepted by evpipe.ingest, in bytes of JSON text.",
							NULL, &evpipe_max_event_bytes, 262144, 64,
							64 * 1024 * 1024, PGC_SUSET, GUC_UNIT_BYTE,
							NULL, NULL, NULL);
	DefineCustomIntVariable("evpipe.max_batch_events",
							"Most events accepted by one evpipe.ingest_batch call.",
							NULL, &evpipe_max_batch_events, 10000, 1,
							1000000, PGC_SUSET, 0,
							NULL, NULL, NULL);
	DefineCustomIntVariable("evpipe.max_depth",
							"Deepest nesting of arrays and objects accepted in an event payload and in schemas.",
							NULL, &evpipe_max_depth, 64, 2, 1000, PGC_SUSET, 0,
							NULL, NULL, NULL);
	DefineCustomBoolVariable("evpipe.log_rejections",
							 "Log one structured line per rejected ingest.",
							 NULL, &evpipe_log_rejections, false, PGC_SUSET, 0,
							 NULL, NULL, NULL);
	DefineCustomBoolVariable("evpipe.outcome_events",
							 "Ingest evpipe.delivery_succeeded and evpipe.delivery_failed events when deliveries reach a final state.",
							 NULL, &evpipe_outcome_events, false, PGC_SIGHUP, 0,
							 NULL, NULL, NULL);
	DefineCustomBoolVariable("evpipe.log_deliveries",
							 "Log one structured line per successful delivery.",
							 NULL, &evpipe_log_deliveries, false, PGC_SIGHUP, 0,
							 NULL, NULL, NULL);
	DefineCustomStringVariable("evpipe.destination_networks",
							   "Networks destinations may connect to: a comma-separated list of CIDRs; empty allows any address.",
							   "Link-local and cloud metadata addresses are refused whatever the list says.",
							   &evpipe_destination_networks, "", PGC_SUSET, 0,
							   check_destination_networks,
							   assign_destination_networks, NULL);
	/* start-up settings can only be defined while preloading */
	if (preloaded)
	{
		DefineCustomStringVariable("evpipe.database",
								   "Database the delivery workers connect to.",
								   NULL, &evpipe_database, "postgres",
								   PGC_POSTMASTER, 0, NULL, NULL, NULL);
		DefineCustomIntVariable("evpipe.workers",
								"Number of delivery workers.",
								NULL, &evpipe_workers, 2, 0, EVPIPE_MAX_WORKERS,
								PGC_POSTMASTER, 0, NULL, NULL, NULL);
		DefineCustomIntVariable("evpipe.max_destinations",
								"Destinations tracked in shared memory for rate limits and pauses.",
								NULL, &evpipe_max_destinations, 256, 16, 65536,
								PGC_POSTMASTER, 0, NULL, NULL, NULL);
	}
	DefineCustomIntVariable("evpipe.max_in_flight",
							"Concurrent requests per delivery worker.",
							NULL, &evpipe_max_in_flight, 64, 1, 1024,
							PGC_SIGHUP, 0, NULL, NULL, NULL);
	DefineCustomIntVariable("evpipe.batch_size",
							"Outbox rows a worker claims in one transaction.",
							NULL, &evpipe_batch_size, 100, 1, 10000,
							PGC_SIGHUP, 0, NULL, NULL, NULL);
	DefineCustomIntVariable("evpipe.lease_ms",
							"How long a claimed outbox row stays leased to a worker before another may claim it.",
							NULL, &evpipe_lease_ms, 60000, 1000,
							24 * 3600 * 1000, PGC_SIGHUP, GUC_UNIT_MS,
							NULL, NULL, NULL);
	DefineCustomIntVariable("evpipe.tick_ms",
							"Safety tick of an idle worker: how often it looks for due retries and expired leases.",
							NULL, &evpipe_tick_ms, 1000, 10, 600000,
							PGC_SIGHUP, GUC_UNIT_MS, NULL, NULL, NULL);
	DefineCustomIntVariable("evpipe.delivered_retention",
							"How long delivered rows are kept in evpipe.delivered (0 keeps them forever).",
							NULL, &evpipe_delivered_retention_s, 7 * 86400, 0,
							INT_MAX, PGC_SIGHUP, GUC_UNIT_S, NULL, NULL, NULL);
	DefineCustomIntVariable("evpipe.event_retention",
							"How long events are kept in evpipe.events, and so how long an eventId is deduplicated (0 keeps them forever).",
							"Events with an outbox row or a dead letter are kept whatever their age.",
							&evpipe_event_retention_s, 7 * 86400, 0,
							INT_MAX, PGC_SIGHUP, GUC_UNIT_S, NULL, NULL, NULL);
	MarkGUCPrefixReserved("evpipe");

	if (!preloaded)
	{
		ereport(WARNING,
				(errmsg("evpipe is not in shared_preload_libraries: events are accepted but nothing is delivered"),
				 errhint("Add evpipe to shared_preload_libraries and restart the server.")));
		return;
	}

	prev_shmem_request_hook = shmem_request_hook;
	shmem_request_hook = evpipe_shmem_request;
	prev_shmem_startup_hook = shmem_startup_hook;
	shmem_startup_hook = evpipe_shmem_startup;

	evpipe_worker_register_all();
	evpipe_notifier_register();
}

/* SQL: evpipe._runtime(destination): rate and pause state from shmem. */
PG_FUNCTION_INFO_V1(evpipe_runtime);
Datum
evpipe_runtime(PG_FUNCTION_ARGS)
{
	char	   *name = text_to_cstring(PG_GETARG_TEXT_PP(0));
	TupleDesc	desc;
	Datum		values[5];
	bool		nulls[5] = {false, false, false, false, false};
	double		current_rate;
	double		throttled_s;
	TimestampTz paused_until;
	int			circuit;
	TimestampTz open_until;
	static const char *const circuit_names[] = {"closed", "open", "half_open"};

	if (get_call_result_type(fcinfo, NULL, &desc) != TYPEFUNC_COMPOSITE)
		elog(ERROR, "evpipe: return type must be a row type");
	ep_rate_stats(name, &current_rate, &throttled_s, &paused_until, &circuit,
				  &open_until);
	values[0] = Float8GetDatum(current_rate);
	values[1] = Float8GetDatum(throttled_s);
	values[2] = TimestampTzGetDatum(paused_until);
	nulls[2] = (paused_until <= GetCurrentTimestamp());
	values[3] = CStringGetTextDatum(circuit_names[circuit]);
	values[4] = TimestampTzGetDatum(open_until);
	nulls[4] = (circuit != EP_CIRCUIT_OPEN);
	if (!evpipe_is_preloaded())
		nulls[0] = nulls[1] = nulls[2] = nulls[3] = nulls[4] = true;
	PG_RETURN_DATUM(HeapTupleGetDatum(heap_form_tuple(BlessTupleDesc(desc),
													  values, nulls)));
}
