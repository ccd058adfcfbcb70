/*-------------------------------------------------------------------------
 *
 * ratelimit.c
 *	  Per-destination rate limits and pauses in shared memory, shared by all
 *	  delivery workers.
 *
 *	  The limit spaces sends evenly (a generic cell rate algorithm): send n
 *	  may start no earlier than the "theoretical arrival time" tat, which
 *	  advances by 1/rate per send; a burst of b lets tat run (b - 1)/rate
 *	  ahead of now. Unlike a bucket that refills a whole second at once, this
 *	  never lets two windows' worth through at a window's edge.
 *
 *	  The circuit breaker stops a destination that is down from being
 *	  hammered by its whole backlog, and keeps a long outage from using up
 *	  every row's attempts. "Down" is decided from evidence over time, not
 *	  from a count alone: a target that fails each event's first attempts
 *	  and then accepts it is not down, it is flaky, and bounded retries are
 *	  the answer to that. The circuit opens when the destination has had at
 *	  least `threshold` transient failures in a row (no success between them,
 *	  counted across all workers) and either
 *	    - those failures span at least `window_ms` (every request failing for
 *	      a sustained stretch), or
 *	    - the last `threshold` of them could not reach the target at all
 *	      (connection refused, DNS failure): no answer, nothing per event.
 *	  Open, it lets no row be claimed for the destination's base backoff,
 *	  then lets one probe row through (half open). The probe's success, or
 *	  any success, closes it at once; its failure opens it again for twice
 *	  as long, up to a maximum. Rows that wait spend no attempts.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "storage/shmem.h"
#include "storage/spin.h"
#include "utils/timestamp.h"

#include "evpipe.h"
#include "ratelimit.h"

#define SLOT_NAME_LEN 72
#define RATE_WINDOW 8			/* one-second buckets kept for the current rate */
#define RATE_MARGIN 1.05		/* sends are spaced 5% wider than 1/rate */

typedef struct RateSlot
{
	slock_t		mutex;
	bool		used;
	char		name[SLOT_NAME_LEN];
	TimestampTz tat;			/* theoretical arrival time of the next send */
	TimestampTz paused_until;
	int64		throttled_us;	/* total time sends waited for the limit */
	int64		bucket_sec[RATE_WINDOW];
	int64		bucket_count[RATE_WINDOW];
	/* circuit breaker */
	int			failures;		/* transient failures in a row */
	int			unreachable;	/* of those, the last ones without an answer */
	TimestampTz streak_start;	/* when the first of them was recorded */
	int			circuit;		/* EP_CIRCUIT_* */
	TimestampTz open_until;		/* open: when a probe may go */
	int64		open_ms;		/* how long it opened last time */
	TimestampTz probe_at;		/* half open: when the probe was claimed, 0: none */
} RateSlot;

typedef struct RateShared
{
	slock_t		mutex;			/* protects slot allocation */
	int			nslots;
	RateSlot	slots[FLEXIBLE_ARRAY_MEMBER];
} RateShared;

static RateShared *rate = NULL;

/* Shared memory needed for evpipe.max_destinations slots. */
Size
ep_rate_shmem_size(void)
{
	return add_size(offsetof(RateShared, slots),
					mul_size(sizeof(RateSlot), evpipe_max_destinations));
}

/* Attach (and on first use initialise) the shared slots. */
void
ep_rate_shmem_init(void *base, bool found)
{
	rate = (RateShared *) base;
	if (!found)
	{
		int			i;

		memset(rate, 0, ep_rate_shmem_size());
		SpinLockInit(&rate->mutex);
		rate->nslots = evpipe_max_destinations;
		for (i = 0; i < rate->nslots; i++)
			SpinLockInit(&rate->slots[i].mutex);
	}
}

/* Find or create the slot of a destination. */
int
ep_rate_slot(const char *name)
{
	int			i;
	int			free_slot = -1;

	if (rate == NULL)
		return -1;
	SpinLockAcquire(&rate->mutex);
	for (i = 0; i < rate->nslots; i++)
	{
		if (rate->slots[i].used &&
			strncmp(rate->slots[i].name, name, SLOT_NAME_LEN) == 0)
		{
			SpinLockRelease(&rate->mutex);
			return i;
		}
		if (!rate->slots[i].used && free_slot < 0)
			free_slot = i;
	}
	if (free_slot >= 0)
	{
		RateSlot   *s = &rate->slots[free_slot];

		s->used = true;
		strlcpy(s->name, name, SLOT_NAME_LEN);
		s->tat = 0;
		s->paused_until = 0;
		s->throttled_us = 0;
		memset(s->bucket_sec, 0, sizeof(s->bucket_sec));
		memset(s->bucket_count, 0, sizeof(s->bucket_count));
		s->failures = 0;
		s->unreachable = 0;
		s->streak_start = 0;
		s->circuit = EP_CIRCUIT_CLOSED;
		s->open_until = 0;
		s->open_ms = 0;
		s->probe_at = 0;
	}
	SpinLockRelease(&rate->mutex);
	return free_slot;
}

/* Count sends in per-second buckets (caller holds the slot mutex). */
static void
count_sends(RateSlot *s, TimestampTz at, int n)
{
	int64		sec = at / USECS_PER_SEC;
	int			b = (int) (sec % RATE_WINDOW);

	if (s->bucket_sec[b] != sec)
	{
		s->bucket_sec[b] = sec;
		s->bucket_count[b] = 0;
	}
	s->bucket_count[b] += n;
}

/* The spacing of sends at per_sec, with the margin. */
int64
ep_rate_interval_us(double per_sec)
{
	int64		interval = (int64) (USECS_PER_SEC * RATE_MARGIN / per_sec);

	return Max(interval, 1);
}

/*
 * Reserve spaced send times against *tat (the slot's own, or one the
 * caller keeps elsewhere), as of now on tat's clock; see ratelimit.h.
 */
static int
reserve(int slot, TimestampTz *tat, TimestampTz now, double per_sec, int burst,
		int want, int horizon_ms, int64 *offsets_us)
{
	RateSlot   *s;
	TimestampTz local_now = GetCurrentTimestamp();
	int			n = 0;

	if (want <= 0)
		return 0;
	if (slot < 0 || rate == NULL)
	{
		for (n = 0; n < want; n++)
			offsets_us[n] = 0;
		return want;
	}
	s = &rate->slots[slot];
	SpinLockAcquire(&s->mutex);
	if (s->paused_until > local_now)
	{
		SpinLockRelease(&s->mutex);
		return 0;
	}
	if (tat == NULL)
		tat = &s->tat;
	if (per_sec <= 0)
	{
		for (n = 0; n < want; n++)
			offsets_us[n] = 0;
		count_sends(s, local_now, want);
		SpinLockRelease(&s->mutex);
		return want;
	}
	else
	{
		/* a 5% margin keeps network jitter from bunching arrivals */
		int64		interval = ep_rate_interval_us(per_sec);
		int64		tolerance = interval * (Max(burst, 1) - 1);
		TimestampTz horizon = now + (int64) horizon_ms * 1000;

		while (n < want)
		{
			TimestampTz start = Max(now, *tat - tolerance);

			if (start > horizon)
				break;
			offsets_us[n] = start - now;
			if (start > now)
				s->throttled_us += start - now;
			count_sends(s, local_now + (start - now), 1);
			*tat = Max(*tat, start) + interval;
			n++;
		}
	}
	SpinLockRelease(&s->mutex);
	return n;
}

/* Reserve spaced send times; see ratelimit.h. */
int
ep_rate_reserve(int slot, double per_sec, int burst, int want,
				int horizon_ms, int64 *offsets_us)
{
	return reserve(slot, NULL, GetCurrentTimestamp(), per_sec, burst, want,
				   horizon_ms, offsets_us);
}

/* The same against a schedule kept in the database; see ratelimit.h. */
int
ep_rate_reserve_at(int slot, TimestampTz *tat, TimestampTz now, double per_sec,
				   int burst, int want, int horizon_ms, int64 *offsets_us)
{
	return reserve(slot, tat, now, per_sec, burst, want, horizon_ms, offsets_us);
}

/* Give back unused reservations: the last ones reserved. */
void
ep_rate_unreserve(int slot, double per_sec, int count)
{
	RateSlot   *s;

	if (slot < 0 || rate == NULL || per_sec <= 0 || count <= 0)
		return;
	s = &rate->slots[slot];
	SpinLockAcquire(&s->mutex);
	s->tat -= ep_rate_interval_us(per_sec) * count;
	SpinLockRelease(&s->mutex);
}

/* Pause a destination for everyone. */
void
ep_rate_pause(int slot, long ms)
{
	RateSlot   *s;
	TimestampTz until;

	if (slot < 0 || rate == NULL || ms <= 0)
		return;
	s = &rate->slots[slot];
	until = GetCurrentTimestamp() + (int64) ms * 1000;
	SpinLockAcquire(&s->mutex);
	if (until > s->paused_until)
		s->paused_until = until;
	SpinLockRelease(&s->mutex);
}

/* How long a destination stays paused. */
long
ep_rate_paused_ms(int slot)
{
	RateSlot   *s;
	TimestampTz now = GetCurrentTimestamp();
	long		ms = 0;

	if (slot < 0 || rate == NULL)
		return 0;
	s = &rate->slots[slot];
	SpinLockAcquire(&s->mutex);
	if (s->paused_until > now)
		ms = (long) ((s->paused_until - now) / 1000) + 1;
	SpinLockRelease(&s->mutex);
	return ms;
}

/* Rows a destination may claim now, as its circuit allows; see ratelimit.h. */
int
ep_breaker_admit(int slot, int want, long probe_stale_ms, bool *probe)
{
	RateSlot   *s;
	TimestampTz now = GetCurrentTimestamp();
	int			n = want;

	*probe = false;
	if (slot < 0 || rate == NULL || want <= 0)
		return want;
	s = &rate->slots[slot];
	SpinLockAcquire(&s->mutex);
	if (s->circuit == EP_CIRCUIT_OPEN && now >= s->open_until)
	{
		s->circuit = EP_CIRCUIT_HALF_OPEN;
		s->probe_at = 0;
	}
	if (s->circuit == EP_CIRCUIT_OPEN)
		n = 0;
	else if (s->circuit == EP_CIRCUIT_HALF_OPEN)
	{
		/* one probe at a time; a probe whose worker died is replaced */
		if (s->probe_at != 0 && now - s->probe_at < (int64) probe_stale_ms * 1000)
			n = 0;
		else
		{
			s->probe_at = now;
			n = 1;
			*probe = true;
		}
	}
	SpinLockRelease(&s->mutex);
	return n;
}

/* The probe's claim found no row: the next claim may probe. */
void
ep_breaker_unadmit(int slot)
{
	RateSlot   *s;

	if (slot < 0 || rate == NULL)
		return;
	s = &rate->slots[slot];
	SpinLockAcquire(&s->mutex);
	if (s->circuit == EP_CIRCUIT_HALF_OPEN)
		s->probe_at = 0;
	SpinLockRelease(&s->mutex);
}

/* Record an answer (or its absence); see ratelimit.h. */
int
ep_breaker_record(int slot, bool failed, bool unreachable, int threshold,
				  long window_ms, long base_ms, long max_ms, long *open_ms)
{
	RateSlot   *s;
	TimestampTz now = GetCurrentTimestamp();
	int			change = EP_CIRCUIT_NO_CHANGE;

	*open_ms = 0;
	if (slot < 0 || rate == NULL || threshold <= 0)
		return change;
	s = &rate->slots[slot];
	SpinLockAcquire(&s->mutex);
	if (!failed)
	{
		s->failures = 0;
		s->unreachable = 0;
		s->streak_start = 0;
		if (s->circuit != EP_CIRCUIT_CLOSED)
		{
			s->circuit = EP_CIRCUIT_CLOSED;
			s->open_ms = 0;
			s->probe_at = 0;
			change = EP_CIRCUIT_CLOSED;
		}
	}
	else
	{
		bool		down;

		if (s->failures == 0)
			s->streak_start = now;
		if (s->failures < INT_MAX)
			s->failures++;
		if (!unreachable)
			s->unreachable = 0;
		else if (s->unreachable < INT_MAX)
			s->unreachable++;
		down = s->failures >= threshold &&
			(s->unreachable >= threshold ||
			 now - s->streak_start >= (int64) window_ms * 1000);
		if (s->circuit == EP_CIRCUIT_HALF_OPEN ||
			(s->circuit == EP_CIRCUIT_CLOSED && down))
		{
			s->open_ms = s->circuit == EP_CIRCUIT_HALF_OPEN
				? Min(Max(s->open_ms, 1) * 2, (int64) max_ms)
				: Min((int64) Max(base_ms, 1), (int64) max_ms);
			s->circuit = EP_CIRCUIT_OPEN;
			s->open_until = now + s->open_ms * 1000;
			s->probe_at = 0;
			*open_ms = (long) s->open_ms;
			change = EP_CIRCUIT_OPEN;
		}
	}
	SpinLockRelease(&s->mutex);
	return change;
}

/* Whether the circuit lets no claim through now. */
bool
ep_breaker_blocked(int slot)
{
	RateSlot   *s;
	TimestampTz now = GetCurrentTimestamp();
	bool		blocked;

	if (slot < 0 || rate == NULL)
		return false;
	s = &rate->slots[slot];
	SpinLockAcquire(&s->mutex);
	blocked = (s->circuit == EP_CIRCUIT_OPEN && now < s->open_until) ||
		(s->circuit == EP_CIRCUIT_HALF_OPEN && s->probe_at != 0);
	SpinLockRelease(&s->mutex);
	return blocked;
}

/* Current rate (sends in the last full second), throttled time, pause. */
void
ep_rate_stats(const char *name, double *current_rate, double *throttled_s,
			  TimestampTz *paused_until, int *circuit, TimestampTz *open_until)
{
	int			i;
	int64		prev = GetCurrentTimestamp() / USECS_PER_SEC - 1;

	*current_rate = 0;
	*throttled_s = 0;
	*paused_until = 0;
	*circuit = EP_CIRCUIT_CLOSED;
	*open_until = 0;
	if (rate == NULL)
		return;
	for (i = 0; i < rate->nslots; i++)
	{
		RateSlot   *s = &rate->slots[i];

		if (!s->used || strncmp(s->name, name, SLOT_NAME_LEN) != 0)
			continue;
		SpinLockAcquire(&s->mutex);
		if (s->bucket_sec[prev % RATE_WINDOW] == prev)
			*current_rate = (double) s->bucket_count[prev % RATE_WINDOW];
		*throttled_s = s->throttled_us / 1000000.0;
		*paused_until = s->paused_until;
		*circuit = s->circuit;
		*open_until = s->open_until;
		SpinLockRelease(&s->mutex);
		break;
	}
}
