/*-------------------------------------------------------------------------
 *
 * engine.h
 *	  The delivery engine: a worker's state and the functions its files
 *	  share. The flow: claim.c leases due outbox rows, transport.c sends
 *	  them (the kinds in http.c, sqs.c, graphql.c; function.c delivers in
 *	  the database), outcome.c settles and records what happened;
 *	  destination.c caches the destinations, engine.c runs the loop.
 *
 *-------------------------------------------------------------------------
 */
#ifndef EVPIPE_ENGINE_H
#define EVPIPE_ENGINE_H

#include "postgres.h"

#include <signal.h>

#include <curl/curl.h>

#include "lib/ilist.h"
#include "nodes/pg_list.h"
#include "storage/latch.h"
#include "utils/resowner.h"
#include "utils/timestamp.h"

#include "delivery.h"

/* sockets curl may ask us to watch, per worker */
#define EP_MAX_SOCKETS 1024

/* A socket curl asked to watch, and what the wait set waits for on it. */
typedef struct SockEntry
{
	curl_socket_t fd;
	int			what;			/* CURL_POLL_IN / OUT / INOUT */
	int			pos;			/* position in the wait set */
	int			set_what;		/* what the wait set waits for */
} SockEntry;

/* A finished attempt, waiting to be recorded. */
typedef struct Outcome
{
	int64		outbox_id;
	int			attempts;
	OutcomeKind kind;
	int			status;
	char	   *error;
	char	   *excerpt;
	TimestampTz next_at;
	char	   *event_id;
	char	   *dest;
} Outcome;

/* A delivery worker's state (one per process). */
typedef struct EpWorker
{
	int			index;
	int32		lease_holder;	/* leased_by of this worker's claims: its pid */
	MemoryContext loop_cxt;
	MemoryContext tx_caller_cxt;	/* current when the transaction began */
	MemoryContext dest_cxt;
	MemoryContext outcome_cxt;
	bool		dests_valid;
	Oid			dest_relid;
	Oid			outbox_relid;
	bool		ordering;		/* outbox.ordering_key exists (0.2.0) */
	bool		shared_rate;	/* evpipe.rate_schedule exists (0.3.0) */
	int			ndests;
	DestConfig *dests;
	int			next_dest;		/* round-robin start for claims */
	CURLM	   *multi;
	dlist_head	active;			/* requests in curl */
	dlist_head	scheduled;		/* requests waiting for their rate slot */
	int			nactive;		/* rows in flight or scheduled */
	TimestampTz next_retry;		/* earliest retry this worker scheduled */
	List	   *outcomes;		/* Outcome *, in outcome_cxt */
	SockEntry  *socks;
	int			nsocks;
	bool		socks_changed;	/* sockets added or removed since the set was built */
	WaitEventSet *set;			/* see wait_set() in engine.c */
	TimestampTz curl_deadline;	/* when curl wants a timeout call; 0: none */
	bool		ext_ready;
	bool		maintainer;		/* runs lease release and expiry */
	bool		pending_wake;	/* new rows may be there: look */
	TimestampTz next_tick;		/* claim at the latest then */
	TimestampTz failed_until;	/* after a failed pass: no statement before */
	TimestampTz last_claim;
	TimestampTz linger_until;	/* wait briefly, unannounced, until then */
	TimestampTz last_expiry;	/* last max_age_ms sweep (worker 0) */
	TimestampTz last_release;	/* last stale-lease release (worker 0) */
	ResourceOwner owner;		/* for resources used between transactions */
	uint64		delivered_total;
} EpWorker;

extern EpWorker ep_worker;
extern volatile sig_atomic_t ep_got_sigterm;

/* engine.c: the loop, for either host */
extern void ep_engine_start(int index, int32 lease_holder, bool maintainer);
extern void ep_engine_pass(void);
extern void ep_engine_failed(void);
extern long ep_engine_timeout(bool *linger);
extern void ep_engine_stop(void);

/*
 * Supplied by the host (hostspi.c with hostbgw.c in the server; hostpq.c
 * with daemon.c in evpiped): short transactions (a durable commit waits
 * for the WAL flush), and a hint that more work waits than this worker
 * takes.
 */
extern void ep_begin_tx(const char *activity);
extern void ep_commit_tx(void);
extern void ep_commit_tx_durable(void);
extern void ep_host_more_work(void);

/* destination.c */
extern void ep_load_destinations(void);
extern void ep_destinations_changed(Oid relid);

/* claim.c */
extern void ep_claim_and_start(void);
extern int	ep_dest_capacity(DestConfig *d, int free_slots);
extern void ep_release_stale_leases(void);
extern bool ep_take_lease_lock(void);
extern void ep_release_forgotten_leases(void);

/* transport.c */
extern void ep_transport_init(void);
extern void ep_start_request(DestConfig *d, const DeliveryKind *kind,
							 DeliveryRequest *r, TimestampTz start_at);
extern long ep_launch_due(void);
extern void ep_collect_finished(void);
extern void ep_transport_drive(const int *ready);
extern DeliveryRequest *ep_new_request(DestConfig *d, int nitems);
extern void ep_copy_item(DeliveryRequest *r, DeliveryItem *src);
extern void ep_item_copy(DeliveryItem *dst, const DeliveryItem *src);
extern void ep_request_free(DeliveryRequest *r);

/* outcome.c */
extern void ep_add_outcome(int64 id, int attempts, OutcomeKind kind, int status,
						   const char *error, const char *excerpt, long delay_ms,
						   const char *event_id, const char *dest);
extern void ep_settle_item(DestConfig *d, DeliveryItem *item, ItemResult *res,
						   const char *excerpt, long retry_after_ms);
extern void ep_ordered_row_final(DestConfig *d, OutcomeKind kind);
extern void ep_record_outcomes_in_tx(void);
extern void ep_record_outcomes(void);
extern void ep_release_in_flight(void);
extern uint64 ep_expire_held_rows(void);
extern int64 ep_expiry_interval_us(void);

#endif							/* EVPIPE_ENGINE_H */
