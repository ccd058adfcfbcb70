/*-------------------------------------------------------------------------
 *
 * evpipe.h
 *	  Declarations shared by the evpipe modules.
 *
 *-------------------------------------------------------------------------
 */
#ifndef EVPIPE_H
#define EVPIPE_H

#include "postgres.h"

#include "port/atomics.h"
#include "storage/lwlock.h"
#include "utils/jsonb.h"

#define EVPIPE_MAX_WORKERS 64

/* GUCs (evpipe.c) */
extern int	evpipe_max_event_bytes;
extern int	evpipe_max_batch_events;

/* eventId: 1-128 characters from [A-Za-z0-9._:-] */
#define EVPIPE_MAX_EVENT_ID_LEN 128
extern int	evpipe_max_depth;
extern bool evpipe_log_rejections;
extern char *evpipe_database;
extern int	evpipe_workers;
extern int	evpipe_max_in_flight;
extern int	evpipe_batch_size;
extern int	evpipe_lease_ms;
extern int	evpipe_tick_ms;
extern int	evpipe_delivered_retention_s;
extern int	evpipe_event_retention_s;
extern int	evpipe_max_destinations;
extern bool evpipe_log_deliveries;
extern bool evpipe_outcome_events;
extern char *evpipe_destination_networks;

/* Per-worker slot in shared memory: no process-local pointers here. */
typedef struct EvpipeWorkerSlot
{
	pg_atomic_uint32 pgprocno;	/* PGPROC index + 1 of the worker, 0 if none */
	pg_atomic_uint32 pid;
	pg_atomic_uint32 sleeping;	/* 1 while waiting for a wake-up */
	pg_atomic_uint32 lingering;	/* 1 while waiting briefly: it looks again soon */
	pg_atomic_uint32 wake;		/* a wake-up meant for this worker */
} EvpipeWorkerSlot;

/* Shared state of the extension. */
typedef struct EvpipeShared
{
	pg_atomic_uint32 wake_pending;	/* set by committing producers */
	pg_atomic_uint32 wake_next;	/* rotates wake-ups among the workers */
	int			nworkers;
	EvpipeWorkerSlot workers[EVPIPE_MAX_WORKERS];
	EvpipeWorkerSlot notifier;	/* the notifier (notifier.c) */
	pg_atomic_uint32 notify_pending;	/* new rows the notifier has not told */
	/* rate limiter and counters follow (ratelimit.c, metrics) */
} EvpipeShared;

extern EvpipeShared *evpipe_shared;

/* evpipe.c */
extern void evpipe_request_wake(void);
extern void evpipe_wake_workers_now(void);
extern void evpipe_wake_one_worker(int except);
extern bool evpipe_is_preloaded(void);
struct _SPI_plan;
extern int	evpipe_execute_plan_with_off(struct _SPI_plan *plan, Datum *values,
										 const char *nulls,
										 const char *const *settings,
										 int nsettings);

/* ingestconfig.c */
extern void evpipe_config_invalidate(void);

/* engine.c */
extern void evpipe_worker_register_all(void);
PGDLLEXPORT extern void evpipe_worker_main(Datum arg);

/* jsonutil.c */
struct json_object;
extern struct json_object *evpipe_jsonb_to_jsonc(JsonbContainer *container,
												 int max_depth,
												 int *depth_exceeded);
extern bool evpipe_valid_event_id(const char *s, int len);
extern bool evpipe_valid_traceparent(const char *s, int len);
extern JsonbValue *evpipe_jsonb_get(JsonbContainer *container, const char *key);

#endif							/* EVPIPE_H */
