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

/* Give back reservations that were not used (claimed fewer rows). */
extern void ep_rate_unreserve(int slot, double rate, int count);

/* Pause a destination for every worker for ms milliseconds. */
extern void ep_rate_pause(int slot, long ms);

/* Milliseconds a destination stays paused (0 if not paused). */
extern long ep_rate_paused_ms(int slot);

/* Snapshot for evpipe.stats: sends in the last second, throttled time. */
extern void ep_rate_stats(const char *name, double *current_rate,
						  double *throttled_s, TimestampTz *paused_until);

#endif							/* EVPIPE_RATELIMIT_H */
