/*-------------------------------------------------------------------------
 *
 * ingest.h
 *	  Ingest (evpipe.ingest, evpipe.route_explain, evpipe.ingest_batch):
 *	  the types and functions its files share. The flow, one step a file:
 *	  ingestconfig.c caches the configuration, ingestenvelope.c checks and
 *	  normalises an event, ingestroute.c decides its destinations,
 *	  ingestwrite.c writes it with its outbox rows; ingest.c holds the SQL
 *	  entry points and the bookkeeping of a call, ingestbatch.c
 *	  evpipe.ingest_batch().
 *
 *-------------------------------------------------------------------------
 */
#ifndef EVPIPE_INGEST_H
#define EVPIPE_INGEST_H

#include "postgres.h"

#include "executor/spi.h"
#include "fmgr.h"
#include "nodes/pg_list.h"
#include "utils/jsonb.h"
#include "utils/timestamp.h"

#include "jsonschema.h"

/* Cached configuration */
typedef struct EpTypeEntry
{
	char	   *name;
	int			version;
	bool		enabled;
	Jsonb	   *schema;
	EpSchema   *compiled;		/* malloc'd by jsonschema.c, built lazily */
} EpTypeEntry;

typedef struct EpSourceEntry
{
	char	   *source;
	double		limit_per_sec;	/* 0: no ingest limit */
	int			limit_burst;
	int			limit_slot;
	char	   *event_type;		/* NULL: no mapping, only role bindings */
	char	   *id_field;
	char	   *ts_field;
	int			nroles;
	char	  **roles;
} EpSourceEntry;

typedef struct EpRouteEntry
{
	int			id;
	char	   *pattern;
	bool		is_prefix;
	int			prefix_len;
	char	   *destination;
	char	   *source;			/* NULL: any */
	char	   *priority;		/* NULL: any */
	bool		enabled;
} EpRouteEntry;

/* A destination that delivers each ordering key in order. */
typedef struct EpOrderEntry
{
	char	   *destination;
	char	   *path;			/* dotted path into the envelope */
} EpOrderEntry;

#define N_CONFIG_RELS 6

/* The configuration of a backend (ingestconfig.c) */
typedef struct EpIngestConfig
{
	MemoryContext cxt;
	bool		valid;
	int			ntypes;
	EpTypeEntry *types;
	int			nsources;
	EpSourceEntry *sources;
	int			nroutes;
	EpRouteEntry *routes;
	bool		ordering;		/* the schema has outbox.ordering_key (0.2.0) */
	int			norders;
	EpOrderEntry *orders;		/* sorted by destination */
	Oid			relids[N_CONFIG_RELS];
} EpIngestConfig;

extern EpIngestConfig ep_ingest_config;

/* A validated, normalised event */
typedef struct EpEvent
{
	Jsonb	   *envelope;		/* canonical envelope, as stored and sent */
	char	   *event_id;
	char	   *event_type;
	char	   *source;
	TimestampTz ts;
	char	   *correlation_id;
	char	   *priority;
	char	   *traceparent;
	EpTypeEntry *type;
	EpSourceEntry *src;
	const char *id_path;		/* where eventId came from, for messages */
	const char *ts_path;
	const char *payload_path;
} EpEvent;

/* What ingest and route_explain share while they run. */
typedef struct IngestCall
{
	Oid			caller;			/* the calling role */
	Oid			save_userid;
	int			save_sec;
	MemoryContext caller_cxt;	/* where the answer must live */
	int			guc_level;		/* PostgreSQL 17+: the search_path's GUC level */
	EpEvent		ev;
	List	   *dests;
} IngestCall;

/* The event id being ingested, for rejection logs (ingestenvelope.c). */
extern const char *ep_ingest_current_event_id;
extern const char *ep_ingest_current_source;

/* The position of the event in evpipe.ingest_batch's array, or -1. */
extern int	ep_ingest_current_batch_index;

/* ingestconfig.c */
struct json_object;
extern void ep_ingest_config_ensure(void);
extern EpTypeEntry *ep_ingest_find_type(const char *name);
extern EpSourceEntry *ep_ingest_find_source(const char *name);
extern struct json_object *ep_ingest_schema_to_jsonc(Jsonb *schema, int *too_deep);
extern EpSchema *ep_ingest_type_schema(EpTypeEntry *t);

/* ingestenvelope.c */
extern void ep_ingest_reject(int sqlstate, const char *path, const char *rule,
							 const char *extra, const char *hint,
							 const char *fmt,...) pg_attribute_noreturn();
extern void ep_ingest_push_str(JsonbParseState **ps, const char *key,
							   const char *val);
extern void ep_ingest_push_key(JsonbParseState **ps, const char *key);
extern void ep_ingest_push_bool(JsonbParseState **ps, const char *key, bool b);
extern void ep_ingest_push_int(JsonbParseState **ps, const char *key, int i);
extern void ep_ingest_push_str_array(JsonbParseState **ps, const char *key,
									 List *items);
extern char *ep_ingest_new_traceparent(void);
extern void ep_ingest_prepare_event(Jsonb *raw, const char *source_arg,
									Oid caller, EpEvent *ev);

/* ingestroute.c */
extern bool ep_ingest_route_matches(EpRouteEntry *r, EpEvent *ev, char **why);
extern List *ep_ingest_route_event(EpEvent *ev);
extern char *ep_ingest_ordering_key(Jsonb *envelope, const char *destination);
extern List *ep_ingest_ordering_keys(Jsonb *envelope, List *dests);

/* ingestwrite.c */
extern SPIPlanPtr ep_ingest_keep_plan(const char *sql, int nargs, Oid *types);
extern Datum ep_ingest_text_array(List *items);
extern Datum ep_ingest_nullable_text_array(List *items);
extern bool ep_ingest_insert_event(EpEvent *ev, List *dests, Oid caller);
extern Jsonb *ep_ingest_existing_event(const char *event_id);
extern Jsonb *ep_ingest_result(const char *event_id, const char *status,
							   List *dests);
extern Jsonb *ep_ingest_handle_existing(EpEvent *ev, Jsonb *stored);

/* ingest.c */
extern void ep_ingest_set_postgrest_status(void);
extern Jsonb *ep_ingest_call_args(FunctionCallInfo fcinfo, const char *what,
								  char **source_arg);
extern void ep_ingest_enter_call(FunctionCallInfo fcinfo, IngestCall *call);
extern Jsonb *ep_ingest_end_call(IngestCall *call, Jsonb *result);

#endif							/* EVPIPE_INGEST_H */
