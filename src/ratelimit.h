/*-------------------------------------------------------------------------
 *
 * ratelimit.h
 *	  Per-destination state shared by every worker: rate limits (spaced
 *	  sends), pauses (Retry-After), and counters.
 *
 *-------------------------------------------------------------------------
 */
#ifndef EVPIPE_RATELIMIT_H
#define EVPIPE_RATELIMIT_H

#include "postgres.h"

#include "utils/timestamp.h"

extern Size ep_rate_shmem_size(void);
extern void ep_rate_shmem_init(void *base, bool found);

/* Slot of a destination (created on first use); -1 if none is free. */
extern int	ep_rate_slot(const char *name);

/*
 * Reserve up to `want` sends for a destination limited to `rate` per second
 * with a burst of `burst`, within the next horizon_ms. Fills offsets_us[i]
 * with when each reserved send may start (microseconds from now). Returns
 * how many were reserved (0 while paused). rate <= 0 means no limit.
 */
extern int	ep_rate_reserve(int slot, double rate, int burst, int want,
							int horizon_ms, int64 *offsets_us);

/*
 * The same against a schedule the caller keeps (*tat, on the clock of now,
 * e.g. the database's, so that processes sharing no memory share one
 * limit): *tat advances by what was reserved. Pauses and counts stay the
 * slot's.
 */
extern int	ep_rate_reserve_at(int slot, TimestampTz *tat, TimestampTz now,
							   double rate, int burst, int want, int horizon_ms,
							   int64 *offsets_us);

/* How far apart sends at `rate` per second are spaced. */
extern int64 ep_rate_interval_us(double rate);

/* Give back reservations that were not used (claimed fewer rows). */
extern void ep_rate_unreserve(int slot, double rate, int count);

/* Pause a destination for every worker for ms milliseconds. */
extern void ep_rate_pause(int slot, long ms);

/* Milliseconds a destination stays paused (0 if not paused). */
extern long ep_rate_paused_ms(int slot);

/* Circuit breaker states, and "no change" for ep_breaker_record. */
#define EP_CIRCUIT_CLOSED 0
#define EP_CIRCUIT_OPEN 1
#define EP_CIRCUIT_HALF_OPEN 2
#define EP_CIRCUIT_NO_CHANGE (-1)

/*
 * How many of `want` rows a destination may claim as its circuit allows:
 * all while closed, none while open, one probe (*probe set) once the open
 * time is over and no probe is out (or the last one is older than
 * probe_stale_ms).
 */
extern int	ep_breaker_admit(int slot, int want, long probe_stale_ms, bool *probe);

/* A probe's claim found no row. */
extern void ep_breaker_unadmit(int slot);

/*
 * Record an attempt's end: failed means a transient failure (the target
 * did not answer, or answered 5xx/408); unreachable, that it could not be
 * reached at all (connection refused, DNS). The circuit opens after
 * `threshold` failures in a row that span window_ms, or whose last
 * `threshold` were unreachable (see ratelimit.c). Returns EP_CIRCUIT_OPEN
 * when this opened the circuit (*open_ms: for how long), EP_CIRCUIT_CLOSED
 * when it closed it, else EP_CIRCUIT_NO_CHANGE. threshold <= 0 disables.
 */
extern int	ep_breaker_record(int slot, bool failed, bool unreachable,
							  int threshold, long window_ms, long base_ms,
							  long max_ms, long *open_ms);

/* Whether the circuit lets no claim through now (open, or a probe out). */
extern bool ep_breaker_blocked(int slot);

/* Snapshot for evpipe.stats: sends in the last second, throttled time,
 * pause, circuit state and when an open circuit lets a probe through. */
extern void ep_rate_stats(const char *name, double *current_rate,
						  double *throttled_s, TimestampTz *paused_until,
						  int *circuit, TimestampTz *open_until);

#endif							/* EVPIPE_RATELIMIT_H */
