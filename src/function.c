/*-------------------------------------------------------------------------
 *
 * function.c
 *	  The function destination kind: the worker calls a SQL function with
 *	  the event, in its own subtransaction of the claim's transaction, as
 *	  the destination's owner, with timeout_ms as statement_timeout.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/xact.h"
#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "miscadmin.h"
#include "utils/builtins.h"
#include "utils/elog.h"
#include "utils/guc.h"
#include "utils/lsyscache.h"
#include "utils/regproc.h"
#include "utils/resowner.h"

#include "engine.h"
#include "evpipe.h"

/*
 * Call a function destination's handler for one row, in a subtransaction,
 * as the destination's owner, with timeout_ms as statement_timeout.
 */
static void
call_function(DestConfig *d, DeliveryItem *item)
{
	MemoryContext oldcxt = CurrentMemoryContext;
	ResourceOwner oldowner = CurrentResourceOwner;
	ItemResult	res;
	Oid			save_userid;
	int			save_sec;

	GetUserIdAndSecContext(&save_userid, &save_sec);
	BeginInternalSubTransaction(NULL);
	MemoryContextSwitchTo(oldcxt);
	PG_TRY();
	{
		Oid			argtypes[1] = {JSONBOID};
		Datum		args[1];
		char		timeout[32];
		Oid			fn;
		char	   *call;

		snprintf(timeout, sizeof(timeout), "%d", d->timeout_ms);
		(void) set_config_option("statement_timeout", timeout, PGC_SUSET,
								 PGC_S_SESSION, GUC_ACTION_LOCAL, true, 0, false);
		fn = DatumGetObjectId(DirectFunctionCall1(regprocedurein,
												  CStringGetDatum(d->function)));
		call = psprintf("SELECT %s.%s($1)",
						quote_identifier(get_namespace_name(get_func_namespace(fn))),
						quote_identifier(get_func_name(fn)));
		args[0] = DirectFunctionCall1(jsonb_in, CStringGetDatum(item->body));
		SetUserIdAndSecContext(d->owner, save_sec | SECURITY_LOCAL_USERID_CHANGE);
		if (SPI_execute_with_args(call, 1, argtypes, args, NULL, false, 1) < 0)
			elog(ERROR, "evpipe: calling the handler failed");
		SetUserIdAndSecContext(save_userid, save_sec);
		ReleaseCurrentSubTransaction();
		MemoryContextSwitchTo(oldcxt);
		CurrentResourceOwner = oldowner;
		ep_result_set(&res, true, false, 0, NULL);
	}
	PG_CATCH();
	{
		ErrorData  *edata;
		int			cls;

		MemoryContextSwitchTo(oldcxt);
		edata = CopyErrorData();
		FlushErrorState();
		RollbackAndReleaseCurrentSubTransaction();
		MemoryContextSwitchTo(oldcxt);
		CurrentResourceOwner = oldowner;
		SetUserIdAndSecContext(save_userid, save_sec);
		cls = ERRCODE_TO_CATEGORY(edata->sqlerrcode);
		ep_result_set(&res, false,
					  cls == ERRCODE_DATA_EXCEPTION ||
					  cls == ERRCODE_INTEGRITY_CONSTRAINT_VIOLATION,
					  0, "%s: %s", unpack_sql_state(edata->sqlerrcode),
					  edata->message ? edata->message : "error");
		FreeErrorData(edata);
	}
	PG_END_TRY();
	ep_settle_item(d, item, &res, NULL, -1);
}

const DeliveryKind function_kind = {
	.name = "function",
	.in_database = true,
	.deliver = call_function,
};
