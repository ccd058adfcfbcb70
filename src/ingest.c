/*-------------------------------------------------------------------------
 *
 * ingest.c
 *	  evpipe.ingest(): validate, normalise, dedupe and route one event, and
 *	  write it with its outbox rows in the caller's transaction.
 *	  evpipe.route_explain(): the same decisions, explained, writing nothing.
 *
 *	  This file holds these SQL entry points and the bookkeeping of a call
 *	  (its arguments, the switch to the extension owner, the answer copied
 *	  out of SPI memory, PostgREST's status). The steps are in
 *	  ingestconfig.c (the configuration, cached per backend),
 *	  ingestenvelope.c (checks and normalisation), ingestroute.c (routing)
 *	  and ingestwrite.c (the writes); evpipe.ingest_batch() is in
 *	  ingestbatch.c. ingest.h declares what they share.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "pg_jsonc.h"

#include "catalog/namespace.h"
#include "catalog/pg_proc.h"
#include "executor/spi.h"
#include "fmgr.h"
#include "miscadmin.h"
#include "utils/builtins.h"
#include "utils/guc.h"
#include "utils/jsonb.h"
#include "utils/syscache.h"

#include "evpipe.h"
#include "ingest.h"
#include "jsonschema.h"
#include "metrics.h"

PG_FUNCTION_INFO_V1(evpipe_ingest);
PG_FUNCTION_INFO_V1(evpipe_route_explain);

/* The owner of a function: ingest runs its writes as the extension owner. */
static Oid
function_owner(Oid fn_oid)
{
	static Oid	cached_fn = InvalidOid;
	static Oid	cached_owner = InvalidOid;
	HeapTuple	tup;

	if (fn_oid == cached_fn)
		return cached_owner;
	tup = SearchSysCache1(PROCOID, ObjectIdGetDatum(fn_oid));
	if (!HeapTupleIsValid(tup))
		elog(ERROR, "cache lookup failed for function %u", fn_oid);
	cached_owner = ((Form_pg_proc) GETSTRUCT(tup))->proowner;
	cached_fn = fn_oid;
	ReleaseSysCache(tup);
	return cached_owner;
}

/* Mark the answer 202 Accepted when called through PostgREST. */
void
ep_ingest_set_postgrest_status(void)
{
	const char *method = GetConfigOption("request.method", true, false);

	if (method != NULL && method[0] != '\0')
		(void) set_config_option("response.status", "202", PGC_USERSET,
								 PGC_S_SESSION, GUC_ACTION_LOCAL, true, 0,
								 false);
}

/*
 * The arguments of ingest-like calls: a jsonb that must not be null (named
 * `what` in the error) and an optional source.
 */
Jsonb *
ep_ingest_call_args(FunctionCallInfo fcinfo, const char *what, char **source_arg)
{
	/* what an earlier call that failed left here points at freed memory */
	ep_ingest_current_event_id = NULL;
	ep_ingest_current_source = NULL;
	ep_ingest_current_batch_index = -1;
	if (PG_ARGISNULL(0))
		ep_ingest_reject(ERRCODE_NULL_VALUE_NOT_ALLOWED, "$", "type", NULL, NULL,
						 "%s must not be null", what);
	*source_arg = PG_ARGISNULL(1) ? NULL : text_to_cstring(PG_GETARG_TEXT_PP(1));
	return PG_GETARG_JSONB_P(0);
}

/*
 * Make every name the call's SQL and lookups use resolve in pg_catalog
 * alone, whatever the caller's search_path (no schema of the caller's, no
 * temporary objects). This is what a SET search_path clause on the function
 * did (up to 0.5.0), without its cost per call: a GUC nest level and the
 * path parsed and looked up again on entry and on exit, 7% of a one-event
 * ingest. The entry is popped by ep_ingest_end_call, or by the abort of the
 * (sub)transaction it was pushed in. The plans the call keeps were made
 * under this path, so they are not planned again.
 */
static void
push_catalog_search_path(IngestCall *call)
{
#if PG_VERSION_NUM < 170000
	OverrideSearchPath path;

	memset(&path, 0, sizeof(path));
	path.schemas = NIL;
	path.addCatalog = true;
	path.addTemp = false;
	PushOverrideSearchPath(&path);	/* copies path */
	call->guc_level = 0;
#else
	call->guc_level = NewGUCNestLevel();
	(void) set_config_option("search_path", "pg_catalog, pg_temp", PGC_USERSET,
							 PGC_S_SESSION, GUC_ACTION_SAVE, true, 0, false);
#endif
}

/* Restore the caller's search_path (see push_catalog_search_path). */
static void
pop_catalog_search_path(IngestCall *call)
{
#if PG_VERSION_NUM < 170000
	(void) call;
	PopOverrideSearchPath();
#else
	AtEOXact_GUC(true, call->guc_level);
#endif
}

/*
 * Enter a call: remember the caller, switch to the extension owner and to a
 * search_path of pg_catalog alone for the SPI work, and load the
 * configuration.
 */
void
ep_ingest_enter_call(FunctionCallInfo fcinfo, IngestCall *call)
{
	call->caller = GetUserId();
	call->caller_cxt = CurrentMemoryContext;
	ep_ingest_current_batch_index = -1;
	GetUserIdAndSecContext(&call->save_userid, &call->save_sec);
	SetUserIdAndSecContext(function_owner(fcinfo->flinfo->fn_oid),
						   call->save_sec | SECURITY_LOCAL_USERID_CHANGE |
						   SECURITY_RESTRICTED_OPERATION);
	push_catalog_search_path(call);
	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "evpipe: SPI_connect failed");
	ep_ingest_config_ensure();
}

/*
 * Start an ingest-like call: read the arguments, switch to the extension
 * owner for the SPI work, load the configuration, then validate, normalise
 * and route the event into call->ev and call->dests.
 */
static void
begin_call(FunctionCallInfo fcinfo, IngestCall *call)
{
	Jsonb	   *raw;
	char	   *source_arg;

	raw = ep_ingest_call_args(fcinfo, "event", &source_arg);
	ep_ingest_enter_call(fcinfo, call);
	ep_ingest_prepare_event(raw, source_arg, call->caller, &call->ev);
	call->dests = ep_ingest_route_event(&call->ev);
}

/* Finish the call: copy the answer out of SPI memory, switch back. */
Jsonb *
ep_ingest_end_call(IngestCall *call, Jsonb *result)
{
	MemoryContext old = MemoryContextSwitchTo(call->caller_cxt);

	result = (Jsonb *) PG_DETOAST_DATUM_COPY(JsonbPGetDatum(result));
	MemoryContextSwitchTo(old);
	SPI_finish();
	pop_catalog_search_path(call);
	SetUserIdAndSecContext(call->save_userid, call->save_sec);
	ep_ingest_current_event_id = NULL;
	ep_ingest_current_source = NULL;
	ep_ingest_current_batch_index = -1;
	return result;
}

/* SQL: evpipe.ingest(event jsonb, source text DEFAULT NULL) RETURNS jsonb */
Datum
evpipe_ingest(PG_FUNCTION_ARGS)
{
	IngestCall	call;
	EpEvent    *ev = &call.ev;
	Jsonb	   *result;

	begin_call(fcinfo, &call);

	if (call.dests == NIL)
	{
		Jsonb	   *stored = ep_ingest_existing_event(ev->event_id);

		if (stored != NULL)
			result = ep_ingest_handle_existing(ev, stored);
		else
		{
			char		extra[300];

			snprintf(extra, sizeof(extra), "event type %s, source %s, priority %s",
					 ev->event_type, ev->source,
					 ev->priority ? ev->priority : "(none)");
			ep_ingest_reject(ERRCODE_INVALID_PARAMETER_VALUE, "$.eventType", "route",
							 extra,
							 "An evpipe_admin adds routes with evpipe.add_route(); evpipe.route_explain() shows the rules.",
							 "no route matches event type \"%s\"", ev->event_type);
		}
	}
	else if (ep_ingest_insert_event(ev, call.dests, call.caller))
	{
		ep_metric_add(EP_MK_INGEST, ev->event_type, NULL, EP_M_INGESTED, 1);
		result = ep_ingest_result(ev->event_id, "accepted", call.dests);
		evpipe_request_wake();
		ep_ingest_set_postgrest_status();
	}
	else
	{
		Jsonb	   *stored = ep_ingest_existing_event(ev->event_id);

		if (stored == NULL)
			ereport(ERROR,
					(errcode(ERRCODE_T_R_SERIALIZATION_FAILURE),
					 errmsg("event \"%s\" was changed concurrently", ev->event_id),
					 errhint("Retry the call.")));
		result = ep_ingest_handle_existing(ev, stored);
	}

	PG_RETURN_JSONB_P(ep_ingest_end_call(&call, result));
}

/*
 * SQL: evpipe.route_explain(event jsonb, source text DEFAULT NULL)
 * Validates the event like ingest and lists every rule with whether it
 * matches and why. Writes nothing.
 */
Datum
evpipe_route_explain(PG_FUNCTION_ARGS)
{
	IngestCall	call;
	EpEvent    *ev = &call.ev;
	JsonbParseState *ps = NULL;
	JsonbValue *res;
	int			i;

	begin_call(fcinfo, &call);

	pushJsonbValue(&ps, WJB_BEGIN_OBJECT, NULL);
	ep_ingest_push_str(&ps, "eventId", ev->event_id);
	ep_ingest_push_str(&ps, "eventType", ev->event_type);
	ep_ingest_push_str(&ps, "source", ev->source);
	ep_ingest_push_str(&ps, "priority", ev->priority);
	ep_ingest_push_int(&ps, "schemaVersion", ev->type->version);
	ep_ingest_push_str_array(&ps, "destinations", call.dests);
	ep_ingest_push_key(&ps, "rules");
	pushJsonbValue(&ps, WJB_BEGIN_ARRAY, NULL);
	for (i = 0; i < ep_ingest_config.nroutes; i++)
	{
		EpRouteEntry *r = &ep_ingest_config.routes[i];
		char	   *why;
		bool		m = ep_ingest_route_matches(r, ev, &why);
		int			j;

		/* a destination already added by an earlier rule is not added twice */
		for (j = 0; m && j < i; j++)
		{
			char	   *w;

			if (strcmp(ep_ingest_config.routes[j].destination, r->destination) == 0 &&
				ep_ingest_route_matches(&ep_ingest_config.routes[j], ev, &w))
			{
				why = psprintf("%s; destination already added by rule %d",
							   why, ep_ingest_config.routes[j].id);
				break;
			}
		}
		pushJsonbValue(&ps, WJB_BEGIN_OBJECT, NULL);
		ep_ingest_push_int(&ps, "id", r->id);
		ep_ingest_push_str(&ps, "eventType", r->pattern);
		ep_ingest_push_str(&ps, "source", r->source);
		ep_ingest_push_str(&ps, "priority", r->priority);
		ep_ingest_push_str(&ps, "destination", r->destination);
		ep_ingest_push_bool(&ps, "enabled", r->enabled);
		ep_ingest_push_bool(&ps, "matched", m);
		ep_ingest_push_str(&ps, "reason", why);
		pushJsonbValue(&ps, WJB_END_OBJECT, NULL);
	}
	pushJsonbValue(&ps, WJB_END_ARRAY, NULL);
	res = pushJsonbValue(&ps, WJB_END_OBJECT, NULL);
	PG_RETURN_JSONB_P(ep_ingest_end_call(&call, JsonbValueToJsonb(res)));
}
