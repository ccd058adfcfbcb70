/*-------------------------------------------------------------------------
 *
 * engine.c
 *	  The delivery engine's loop, for either host (hostbgw.c: a background
 *	  worker in the server; daemon.c: evpiped). The host runs a pass inside
 *	  its error handler, then waits as long as ep_engine_timeout() says,
 *	  watching curl's sockets and its own wake-ups. Each pass claims due
 *	  rows (claim.c) when a claim is due, has outcomes recorded
 *	  (outcome.c), and, on the maintainer, releases the leases of holders
 *	  that are gone and dead-letters held rows past max_age_ms.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "utils/memutils.h"
#include "utils/timestamp.h"

#include "engine.h"
#include "evpipe.h"
#include "ratelimit.h"

/* after new work, how long a worker looks again without being woken */
#define LINGER_MS 2

/* the worker's state; SIGTERM's flag */
EpWorker	ep_worker;
volatile sig_atomic_t ep_got_sigterm = false;

/* Set up the engine's state for one worker of a host. */
void
ep_engine_start(int index, int32 lease_holder, bool maintainer)
{
	memset(&ep_worker, 0, sizeof(ep_worker));
	ep_worker.index = index;
	ep_worker.lease_holder = lease_holder;
	ep_worker.maintainer = maintainer;
	ep_worker.pending_wake = true;
	dlist_init(&ep_worker.active);
	dlist_init(&ep_worker.scheduled);
	ep_worker.loop_cxt = AllocSetContextCreate(TopMemoryContext, "evpipe worker loop",
											   ALLOCSET_DEFAULT_SIZES);
	ep_worker.outcome_cxt = AllocSetContextCreate(TopMemoryContext, "evpipe outcomes",
												  ALLOCSET_DEFAULT_SIZES);
	ep_transport_init();
}

/*
 * Whether a claim is worth a transaction now: some destination whose last
 * claim was full has a quarter of its slots free and is not paused, and
 * no full shared rate schedule holds it back. *look_at (if given): the
 * earliest time one that is held back may look again (0: none).
 */
static bool
backlog_claimable(TimestampTz *look_at)
{
	int			free_slots = evpipe_max_in_flight - ep_worker.nactive;
	TimestampTz now = GetCurrentTimestamp();
	int			i;

	if (look_at)
		*look_at = 0;
	if (!ep_worker.dests_valid)
		return true;
	for (i = 0; i < ep_worker.ndests; i++)
	{
		DestConfig *d = &ep_worker.dests[i];
		int			cap = ep_dest_capacity(d, free_slots);

		if (d->backlog && cap > 0 && cap >= Max(1, d->max_in_flight / 4) &&
			ep_rate_paused_ms(d->slot) == 0 && !ep_breaker_blocked(d->slot))
		{
			if (now >= d->look_at)
				return true;
			/* a shared schedule is full until then */
			if (look_at && (*look_at == 0 || d->look_at < *look_at))
				*look_at = d->look_at;
		}
	}
	return false;
}

/*
 * One pass, inside the host's error handler: claim when due (a wake-up,
 * the tick, a retry coming due, a backlog with room), else record what
 * finished; the maintainer's periodic statements.
 */
void
ep_engine_pass(void)
{
	TimestampTz now = GetCurrentTimestamp();
	bool		due;

	/* a pass failed: no statement (claim or outcomes) until the pause ends */
	if (now < ep_worker.failed_until)
		return;

	/* a wake-up means new rows, for any destination */
	if (ep_worker.pending_wake)
	{
		int			i;

		ep_worker.linger_until = TimestampTzPlusMilliseconds(now, LINGER_MS);
		for (i = 0; i < ep_worker.ndests; i++)
			ep_worker.dests[i].backlog = true;
		ep_worker.pending_wake = false;
	}
	due = now >= ep_worker.next_tick || !ep_worker.dests_valid ||
		(ep_worker.next_retry != 0 && now >= ep_worker.next_retry) ||
		backlog_claimable(NULL);
	if (due)
	{
		if (ep_worker.next_retry != 0 && now >= ep_worker.next_retry)
			ep_worker.next_retry = 0;
		if (now >= ep_worker.next_tick)
			ep_worker.next_tick = TimestampTzPlusMilliseconds(now, evpipe_tick_ms);
		ep_claim_and_start();
	}
	else if (ep_worker.outcomes != NIL)
		ep_record_outcomes();
	if (!ep_worker.maintainer)
		return;
	/* leases of holders that are gone: every 10 s */
	if (now - ep_worker.last_release > 10 * USECS_PER_SEC)
	{
		ep_worker.last_release = now;
		ep_begin_tx("evpipe: releasing leases of processes that are gone");
		ep_release_stale_leases();
		ep_commit_tx();
	}
	/* max_age_ms: every minute, or sooner for short ones */
	if (now - ep_worker.last_expiry > ep_expiry_interval_us())
	{
		ep_worker.last_expiry = now;
		(void) ep_expire_held_rows();
	}
}

/* After the host recovered from an error in a pass: reload, wait a while. */
void
ep_engine_failed(void)
{
	ep_worker.dests_valid = false;
	ep_worker.next_tick = TimestampTzPlusMilliseconds(GetCurrentTimestamp(),
													  Max(evpipe_tick_ms, 1000));
	ep_worker.failed_until = ep_worker.next_tick;
}

/*
 * Launch the requests whose rate slot came; how long the host may wait
 * before the next pass (0: at once). *linger: the wait is a short look
 * soon after new work, not a sleep (producers need not wake the worker).
 */
long
ep_engine_timeout(bool *linger)
{
	long		next_launch = ep_launch_due();
	TimestampTz now = GetCurrentTimestamp();
	bool		failed = now < ep_worker.failed_until;
	long		timeout;

	*linger = false;
	if (failed)
	{
		/* after a failed pass: only curl and the scheduled launches */
		timeout = (long) ((ep_worker.failed_until - now + 999) / 1000);
	}
	else
	{
		TimestampTz look_at;

		if (ep_worker.pending_wake || backlog_claimable(&look_at))
			return 0;
		timeout = (long) ((ep_worker.next_tick - now) / 1000);
		if (look_at != 0 && (look_at - now + 999) / 1000 < timeout)
			timeout = (long) ((look_at - now + 999) / 1000);
		if (ep_worker.next_retry != 0 && (ep_worker.next_retry - now) / 1000 < timeout)
			timeout = (long) ((ep_worker.next_retry - now) / 1000);
		if (ep_worker.outcomes != NIL && timeout > 5)
			timeout = 5;
	}
	if (next_launch >= 0 && next_launch < timeout)
		timeout = next_launch;
	if (ep_worker.curl_deadline != 0)
	{
		long		curl_ms = (long) ((ep_worker.curl_deadline - now + 999) / 1000);

		if (curl_ms < timeout)
			timeout = curl_ms;
	}
	if (!failed && timeout > 0 && now < ep_worker.linger_until)
	{
		timeout = Min(timeout, (long) ((ep_worker.linger_until - now + 999) / 1000));
		*linger = true;
	}
	return Max(timeout, 0);
}

/* The host is stopping: give in-flight rows back (errors are logged). */
void
ep_engine_stop(void)
{
	ep_release_in_flight();
}
