/*-------------------------------------------------------------------------
 *
 * handler.c
 *	  evpipe._deliver_function(destination, event): runs a function
 *	  destination's handler with one event, for whichever host delivers
 *	  (an in-server worker through SPI, evpiped through libpq). SECURITY
 *	  DEFINER in SQL, callable by evpipe_worker only; the handler, its
 *	  owner and its timeout come from evpipe.destinations, never from the
 *	  caller. The handler runs in a subtransaction of the caller's
 *	  transaction as the destination's owner, limited to timeout_ms by a
 *	  timer of its own, and whatever settings it changes are undone when it
 *	  returns; its error becomes the answer, not the caller's.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/htup_details.h"
#include "access/xact.h"
#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "funcapi.h"
#include "miscadmin.h"
#include "storage/latch.h"
#include "utils/builtins.h"
#include "utils/guc.h"
#include "utils/jsonb.h"
#include "utils/lsyscache.h"
#include "utils/regproc.h"
#include "utils/resowner.h"
#include "utils/timeout.h"

#include "handler.h"

PG_FUNCTION_INFO_V1(evpipe_deliver_function);

/* A function destination's handler, as evpipe.destinations holds it. */
typedef struct HandlerDef
{
	char	   *function;		/* regprocedure text */
	Oid			owner;
	int			timeout_ms;
} HandlerDef;

/* Look the destination up; false if it is not a function destination. */
static bool
handler_lookup(const char *dest, HandlerDef *h)
{
	Oid			types[1] = {TEXTOID};
	Datum		args[1] = {CStringGetTextDatum(dest)};
	MemoryContext cxt = CurrentMemoryContext;
	bool		found = false;

	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "evpipe: SPI_connect failed");
	if (SPI_execute_with_args("SELECT d.config ->> 'function',"
							  " COALESCE((SELECT r.oid FROM pg_catalog.pg_roles r WHERE r.rolname = d.owner), 0),"
							  " COALESCE((d.config ->> 'timeout_ms')::int, 10000)"
							  " FROM evpipe.destinations d WHERE d.name = $1 AND d.kind = 'function'",
							  1, types, args, NULL, true, 1) != SPI_OK_SELECT)
		elog(ERROR, "evpipe: reading the destination failed");
	if (SPI_processed == 1)
	{
		HeapTuple	tup = SPI_tuptable->vals[0];
		TupleDesc	desc = SPI_tuptable->tupdesc;
		char	   *fn = SPI_getvalue(tup, desc, 1);
		char	   *owner = SPI_getvalue(tup, desc, 2);
		char	   *timeout = SPI_getvalue(tup, desc, 3);

		if (fn != NULL && owner != NULL && timeout != NULL)
		{
			h->function = MemoryContextStrdup(cxt, fn);
			h->owner = (Oid) strtoul(owner, NULL, 10);
			h->timeout_ms = atoi(timeout);
			found = OidIsValid(h->owner);
		}
	}
	SPI_finish();
	return found;
}

/*
 * The handler's own timer (timeout_ms): a statement_timeout set while a
 * statement runs arms nothing, so the handler is given a timeout of its own,
 * which cancels it as a statement timeout would; its error says which.
 */
static TimeoutId handler_timeout = MAX_TIMEOUTS;
static volatile sig_atomic_t handler_timed_out = false;

/* The timer went off: cancel the running handler (from the signal handler). */
static void
handler_timeout_fired(void)
{
	handler_timed_out = true;
	QueryCancelPending = true;
	InterruptPending = true;
	SetLatch(MyLatch);
}

/* Arm the handler's timer, registering it on first use in this process. */
static void
handler_timer_start(int ms)
{
	if (handler_timeout == MAX_TIMEOUTS)
		handler_timeout = RegisterTimeout(USER_TIMEOUT, handler_timeout_fired);
	handler_timed_out = false;
	if (ms > 0)
		enable_timeout_after(handler_timeout, ms);
}

/* Disarm it. */
static void
handler_timer_stop(void)
{
	if (handler_timeout != MAX_TIMEOUTS)
		disable_timeout(handler_timeout, false);
}

/*
 * Call the handler in a subtransaction as its owner. Returns NULL on
 * success, else the error ("SQLSTATE: message"); *permanent when its
 * class says retrying cannot help (data exception, integrity violation).
 */
static char *
handler_call(HandlerDef *h, Jsonb *event, bool *permanent)
{
	MemoryContext oldcxt = CurrentMemoryContext;
	ResourceOwner oldowner = CurrentResourceOwner;
	Oid			save_userid;
	int			save_sec;
	char	   *volatile error = NULL;

	*permanent = false;
	GetUserIdAndSecContext(&save_userid, &save_sec);
	BeginInternalSubTransaction(NULL);
	MemoryContextSwitchTo(oldcxt);
	PG_TRY();
	{
		Oid			argtypes[1] = {JSONBOID};
		Datum		args[1] = {JsonbPGetDatum(event)};
		Oid			fn;
		char	   *call;
		int			guc_level;

		/*
		 * Every setting the handler changes, even with a plain SET, is undone
		 * when it returns (as the end of a transaction would): the worker's
		 * own statements must not run with a handler's search_path, which
		 * could put the handler owner's operators before pg_catalog's.
		 */
		guc_level = NewGUCNestLevel();

		/*
		 * The session's search_path, not the SECURITY DEFINER entry point's
		 * (pg_catalog, pg_temp): a handler names its tables as it would in
		 * the in-server worker.
		 */
		(void) set_config_option("search_path", GetConfigOptionResetString("search_path"),
								 PGC_USERSET, PGC_S_SESSION, GUC_ACTION_SAVE, true, 0, false);
		fn = DatumGetObjectId(DirectFunctionCall1(regprocedurein,
												  CStringGetDatum(h->function)));
		call = psprintf("SELECT %s.%s($1)",
						quote_identifier(get_namespace_name(get_func_namespace(fn))),
						quote_identifier(get_func_name(fn)));
		SetUserIdAndSecContext(h->owner, save_sec | SECURITY_LOCAL_USERID_CHANGE);
		if (SPI_connect() != SPI_OK_CONNECT)
			elog(ERROR, "evpipe: SPI_connect failed");
		handler_timer_start(h->timeout_ms);
		if (SPI_execute_with_args(call, 1, argtypes, args, NULL, false, 1) < 0)
			elog(ERROR, "evpipe: calling the handler failed");
		handler_timer_stop();
		if (handler_timed_out)
		{
			/* it went off as the handler returned: nothing left to cancel */
			QueryCancelPending = false;
			handler_timed_out = false;
		}
		SPI_finish();
		SetUserIdAndSecContext(save_userid, save_sec);
		AtEOXact_GUC(false, guc_level);
		ReleaseCurrentSubTransaction();
		MemoryContextSwitchTo(oldcxt);
		CurrentResourceOwner = oldowner;
	}
	PG_CATCH();
	{
		ErrorData  *edata;
		int			cls;

		handler_timer_stop();
		MemoryContextSwitchTo(oldcxt);
		edata = CopyErrorData();
		FlushErrorState();
		RollbackAndReleaseCurrentSubTransaction();
		MemoryContextSwitchTo(oldcxt);
		CurrentResourceOwner = oldowner;
		SetUserIdAndSecContext(save_userid, save_sec);
		cls = ERRCODE_TO_CATEGORY(edata->sqlerrcode);
		*permanent = cls == ERRCODE_DATA_EXCEPTION ||
			cls == ERRCODE_INTEGRITY_CONSTRAINT_VIOLATION;
		if (handler_timed_out && edata->sqlerrcode == ERRCODE_QUERY_CANCELED)
			error = psprintf("57014: the handler ran longer than timeout_ms (%d ms)", h->timeout_ms);
		else
			error = psprintf("%s: %s", unpack_sql_state(edata->sqlerrcode),
							 edata->message ? edata->message : "error");
		handler_timed_out = false;
		FreeErrorData(edata);
	}
	PG_END_TRY();
	return error;
}

/*
 * Deliver one event to a function destination: NULL when the handler
 * returned, else its error (*permanent: retrying cannot help; so is a
 * destination that is not a function destination, or whose owner is gone).
 */
char *
evpipe_handler_deliver(const char *dest, Jsonb *event, bool *permanent)
{
	HandlerDef	h;

	if (!handler_lookup(dest, &h))
	{
		*permanent = true;
		return psprintf("destination \"%s\" is not a function destination, or its owner role is gone",
						dest);
	}
	return handler_call(&h, event, permanent);
}

/*
 * SQL: evpipe._deliver_function(destination text, event jsonb,
 *   OUT ok boolean, OUT permanent boolean, OUT error text)
 */
Datum
evpipe_deliver_function(PG_FUNCTION_ARGS)
{
	TupleDesc	tupdesc;
	Datum		values[3];
	bool		nulls[3] = {false, false, false};
	char	   *error;
	bool		permanent;

	if (PG_ARGISNULL(0) || PG_ARGISNULL(1))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("destination and event must not be null")));
	if (get_call_result_type(fcinfo, NULL, &tupdesc) != TYPEFUNC_COMPOSITE)
		elog(ERROR, "evpipe: _deliver_function must return a record");
	error = evpipe_handler_deliver(text_to_cstring(PG_GETARG_TEXT_PP(0)),
								   PG_GETARG_JSONB_P(1), &permanent);
	values[0] = BoolGetDatum(error == NULL);
	values[1] = BoolGetDatum(permanent);
	if (error)
		values[2] = CStringGetTextDatum(error);
	else
		nulls[2] = true;
	PG_RETURN_DATUM(HeapTupleGetDatum(heap_form_tuple(tupdesc, values, nulls)));
}
