/*-------------------------------------------------------------------------
 *
 * delivery.h
 *	  The delivery worker's view of destinations, requests and outcomes.
 *	  Each destination kind that talks HTTP (http, sqs, graphql) supplies a
 *	  DeliveryKind: how to build one request for up to max_batch outbox rows,
 *	  and how to turn the answer into one outcome per row.
 *
 *-------------------------------------------------------------------------
 */
#ifndef EVPIPE_DELIVERY_H
#define EVPIPE_DELIVERY_H

#include "postgres.h"

#include <curl/curl.h>

#include "lib/ilist.h"
#include "netpolicy.h"
#include "nodes/pg_list.h"
#include "utils/timestamp.h"

#define EP_RESPONSE_MAX 16384	/* bytes of an answer kept for parsing */
#define EP_EXCERPT_MAX 1024		/* bytes of an answer kept in the DLQ */

/* A destination, as the worker caches it (palloc'd in the worker's
 * destination context; rebuilt on configuration change). */
typedef struct DestConfig
{
	char	   *name;
	char	   *kind;			/* "http", "sqs", "graphql", "function" */
	bool		enabled;
	Oid			owner;			/* role that runs function handlers */
	int			max_attempts;
	int			timeout_ms;
	int			backoff_base_ms;
	int			backoff_max_ms;
	int			breaker_threshold;	/* transient failures in a row that open
									 * the circuit; 0: never */
	int			breaker_max_open_ms;
	int			breaker_window_ms;	/* how long failures must last to open it */
	int			max_age_ms;		/* rows ingested longer ago dead-letter */
	int			max_in_flight;	/* per worker */
	double		rate_limit;		/* per second, 0 = none */
	int			rate_burst;
	bool		tls_verify;
	bool		follow_redirects;
	char	   *url;			/* http, graphql */
	char	   *query;			/* graphql document */
	char	   *function;		/* function: regprocedure text */
	List	   *headers;		/* "Name: value" strings */
	char	   *secret;			/* http: webhook signing key (decoded) */
	int			secret_len;
	/* sqs */
	char	   *queue_url;
	char	   *region;
	char	   *endpoint_url;
	char	   *access_key_id;
	char	   *secret_access_key;
	char	   *session_token;
	char	   *message_group_field;
	bool		fifo;
	bool		ordered;		/* ordering_key (or FIFO): one event per key at a time */
	const struct DeliveryKind *ops; /* its kind (NULL: unknown, never claimed) */
	/* runtime, owned by the worker */
	int			slot;			/* shared-memory slot (rate limit, pause) */
	int			in_flight;		/* rows in flight in this worker */
	bool		backlog;		/* its last claim was full: more rows wait */
	TimestampTz look_at;		/* backlog: not before (a full shared schedule) */
} DestConfig;

/* One outbox row being delivered. */
typedef struct DeliveryItem
{
	int64		outbox_id;
	int			attempts;		/* this attempt's number (1 = first) */
	char	   *event_id;
	char	   *event_type;
	char	   *source;
	char	   *correlation_id;
	char	   *traceparent;
	char	   *body;			/* canonical envelope, enrich applied */
	char	   *payload;		/* payload (enrich applied) as JSON text */
	char	   *timestamp;		/* the envelope's timestamp */
	char	   *group;			/* sqs FIFO message group, else NULL */
	TimestampTz created_us;		/* when the outbox row was written */
} DeliveryItem;

typedef enum OutcomeKind
{
	OUTCOME_DELIVERED,
	OUTCOME_RETRY,				/* transient: retry after backoff */
	OUTCOME_DEAD,				/* permanent, or attempts exhausted */
	OUTCOME_RELEASE,			/* not attempted: give the row back */
	OUTCOME_EXPIRED				/* claimed past max_age_ms: dead letter,
								 * this attempt not made nor counted */
} OutcomeKind;

/* What happened to one item; classify() fills these. */
typedef struct ItemResult
{
	bool		ok;
	bool		permanent;		/* failure that retrying cannot fix */
	bool		unreachable;	/* the target could not be reached at all */
	int			status;			/* HTTP status, 0 if none */
	char		error[512];		/* short description, never a secret */
} ItemResult;

/* One HTTP request in flight, for one or more items. */
typedef struct DeliveryRequest
{
	dlist_node	node;
	MemoryContext cxt;
	DestConfig *dest;			/* valid only until the next config reload */
	char	   *dest_name;
	int			nitems;
	DeliveryItem *items;
	ItemResult *results;
	CURL	   *easy;
	struct curl_slist *headers;
	char	   *body;
	size_t		body_len;
	TimestampTz start_at;		/* scheduled start (rate limit) */
	TimestampTz started;
	char		errbuf[CURL_ERROR_SIZE];
	char	   *response;		/* EP_RESPONSE_MAX + 1 bytes, NUL-terminated */
	size_t		response_len;
	bool		response_truncated;
	char		retry_after[64];	/* Retry-After header value */
	char		content_type[128];
	EpNetGuard	netguard;		/* the open-socket policy check (netpolicy.c) */
} DeliveryRequest;

/*
 * A destination kind. Kinds that talk HTTP (http, sqs, graphql) build one
 * request for up to max_batch rows and classify the answer; kinds that
 * deliver in the database (function) deliver each row during the claim.
 */
typedef struct DeliveryKind
{
	const char *name;
	int			max_batch;		/* rows per request */
	size_t		max_batch_bytes;	/* body bytes per request, 0: no limit */
	/*
	 * Build the request: set r->body/body_len, append r->headers, and set
	 * the kind-specific curl options (URL, auth). Runs in r->cxt. Returns
	 * false with *error set (a permanent failure) if it cannot be built.
	 */
	bool		(*build) (DeliveryRequest *r, char *error, size_t errlen);
	/*
	 * Fill r->results[i] for each item from the answer. Called only when
	 * curl completed the exchange (an HTTP status exists).
	 */
	void		(*classify) (DeliveryRequest *r, long status);
	/* in the database: deliver one row now and settle it (engine's outcome.c) */
	bool		in_database;
	void		(*deliver) (DestConfig *d, DeliveryItem *item);
} DeliveryKind;

extern const DeliveryKind http_kind;
extern const DeliveryKind sqs_kind;
extern const DeliveryKind graphql_kind;
extern const DeliveryKind function_kind;

/* Helpers shared by the kinds (outcome.c, transport.c) */
extern bool ep_curl_header(DeliveryRequest *r, const char *fmt,...) pg_attribute_printf(2, 3);
extern void ep_result_set(ItemResult *res, bool ok, bool permanent, int status,
						  const char *fmt,...) pg_attribute_printf(5, 6);

#include "httputil.h"

#endif							/* EVPIPE_DELIVERY_H */
