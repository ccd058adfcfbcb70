/*-------------------------------------------------------------------------
 *
 * hostspi.c
 *	  The engine's database inside the server (enginedb.h): each statement
 *	  of enginesql.c prepared once as a generic plan and kept, run with SPI
 *	  in the worker's open transaction, its typed C parameters turned into
 *	  Datums, its rows copied out as text before anything else runs.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/xact.h"
#include "access/xlog.h"
#include "catalog/namespace.h"
#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "pgstat.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/jsonb.h"
#include "utils/lsyscache.h"
#include "utils/snapmgr.h"

#include "engine.h"
#include "enginedb.h"
#include "evpipe.h"
#include "handler.h"

/* Start a short transaction with SPI and a snapshot. */
void
ep_begin_tx(const char *activity)
{
	ep_worker.tx_caller_cxt = CurrentMemoryContext;
	SetCurrentStatementStartTimestamp();
	StartTransactionCommand();
	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "evpipe: SPI_connect failed");
	PushActiveSnapshot(GetTransactionSnapshot());
	pgstat_report_activity(STATE_RUNNING, activity);
}

/* Commit the short transaction. */
void
ep_commit_tx(void)
{
	SPI_finish();
	PopActiveSnapshot();
	CommitTransactionCommand();
	/* the commit leaves TopMemoryContext current: go back to the loop's */
	MemoryContextSwitchTo(ep_worker.tx_caller_cxt);
	pgstat_report_stat(false);
	pgstat_report_activity(STATE_IDLE, NULL);
}

/*
 * Commit, and wait until the WAL is flushed up to the commit (the worker
 * commits asynchronously otherwise).
 */
void
ep_commit_tx_durable(void)
{
	ep_commit_tx();
	XLogFlush(XactLastCommitEnd);
}

/* A parameter as a Datum (arrays built here); *isnull for a null scalar. */
static Datum
param_datum(EpParamType t, const EpParam *p, bool *isnull)
{
	Datum	   *elems;
	int			dims[1] = {p->n};
	int			lbs[1] = {1};
	int			i;
	bool	   *nulls;
	Oid			elem;
	int16		typlen;
	bool		byval;
	char		align;

	*isnull = false;
	switch (t)
	{
		case EP_TEXT:
			*isnull = (p->isnull && p->isnull[0]) || *(char *const *) p->v == NULL;
			return *isnull ? (Datum) 0 : CStringGetTextDatum(*(char *const *) p->v);
		case EP_INT4:
			*isnull = p->isnull && p->isnull[0];
			return Int32GetDatum(*(const int32 *) p->v);
		case EP_BOOL:
			*isnull = p->isnull && p->isnull[0];
			return BoolGetDatum(*(const bool *) p->v);
		default:
			break;
	}
	elems = palloc(sizeof(Datum) * Max(p->n, 1));
	nulls = palloc(sizeof(bool) * Max(p->n, 1));
	for (i = 0; i < p->n; i++)
	{
		nulls[i] = (p->isnull && p->isnull[i]) ||
			(t == EP_TEXT_ARRAY && ((char *const *) p->v)[i] == NULL);
		if (nulls[i])
		{
			elems[i] = (Datum) 0;
			continue;
		}
		switch (t)
		{
			case EP_TEXT_ARRAY:
				elems[i] = CStringGetTextDatum(((char *const *) p->v)[i]);
				break;
			case EP_INT4_ARRAY:
				elems[i] = Int32GetDatum(((const int32 *) p->v)[i]);
				break;
			case EP_INT8_ARRAY:
				elems[i] = Int64GetDatum(((const int64 *) p->v)[i]);
				break;
			case EP_BOOL_ARRAY:
				elems[i] = BoolGetDatum(((const bool *) p->v)[i]);
				break;
			case EP_TIMESTAMPTZ_ARRAY:
				elems[i] = TimestampTzGetDatum(((const TimestampTz *) p->v)[i]);
				break;
			default:
				elog(ERROR, "evpipe: not an array parameter type");
		}
	}
	elem = get_element_type(ep_param_oid(t));
	get_typlenbyvalalign(elem, &typlen, &byval, &align);
	return PointerGetDatum(construct_md_array(elems, nulls, 1, dims, lbs,
											  elem, typlen, byval, align));
}

/* Run one of the engine's statements in the open transaction. */
EpRows *
ep_db_exec(EpStmt stmt, const EpParam *params)
{
	static SPIPlanPtr plans[EP_SQL_COUNT];
	static const char *const index_only[] = {
		"enable_hashjoin", "enable_mergejoin", "enable_seqscan", "enable_bitmapscan"};
	const EpStmtDef *def = &ep_stmts[stmt];
	Datum		values[16];
	char		nulls[16];
	EpRows	   *rows;
	SPITupleTable *tt;
	int			rc;
	int			i;
	uint64		r;

	Assert(def->nparams <= lengthof(values));
	if (plans[stmt] == NULL)
	{
		Oid			types[16];

		for (i = 0; i < def->nparams; i++)
			types[i] = ep_param_oid(def->types[i]);
		/*
		 * One generic plan: the parameters are arrays a statement unnests,
		 * so a custom plan would know nothing more, and planning every
		 * claim cost a fifth of a worker's time at full speed.
		 */
		plans[stmt] = SPI_prepare_cursor(ep_stmt_sql(stmt), def->nparams, types,
										 CURSOR_OPT_GENERIC_PLAN);
		if (plans[stmt] == NULL || SPI_keepplan(plans[stmt]) != 0)
			elog(ERROR, "evpipe: could not prepare the %s statement: %s",
				 def->name, SPI_result_code_string(SPI_result));
	}
	for (i = 0; i < def->nparams; i++)
	{
		bool		isnull;

		values[i] = param_datum(def->types[i], &params[i], &isnull);
		nulls[i] = isnull ? 'n' : ' ';
	}

	if (def->latest_snapshot)
		PushActiveSnapshot(GetLatestSnapshot());
	if (def->index_scans_only)
	{
		/*
		 * Index scans and nested loops only: the planner cannot know how
		 * many rows "LIMIT d.lim" takes and guesses a tenth of what a
		 * destination may hold, which with millions of rows pending made it
		 * hash whole tables on every claim. These statements touch a few
		 * rows by index, whatever is pending.
		 */
		rc = evpipe_execute_plan_with_off(plans[stmt], values, nulls, index_only,
										  lengthof(index_only));
	}
	else
		rc = SPI_execute_plan(plans[stmt], values, nulls, def->read_only, 0);
	if (def->latest_snapshot)
		PopActiveSnapshot();
	if (rc < 0)
		elog(ERROR, "evpipe: the %s statement failed: %s", def->name,
			 SPI_result_code_string(rc));

	/* copy the answer out before anything else can replace SPI_tuptable */
	rows = palloc0(sizeof(EpRows));
	rows->processed = SPI_processed;
	tt = SPI_tuptable;
	if (tt == NULL)
		return rows;
	rows->ncols = tt->tupdesc->natts;
	rows->cells = palloc(sizeof(char *) * Max(rows->processed * rows->ncols, 1));
	for (r = 0; r < rows->processed; r++)
		for (i = 0; i < rows->ncols; i++)
			rows->cells[r * rows->ncols + i] = SPI_getvalue(tt->vals[r], tt->tupdesc, i + 1);
	SPI_freetuptable(tt);
	return rows;
}

/*
 * Whether the installed schema has ordering keys (0.2.0; a database still
 * at 0.1.0 has none). Also notes the relations whose changes make the
 * worker reload its destinations.
 */
bool
ep_db_has_ordering(void)
{
	Oid			nsp = get_namespace_oid("evpipe", false);

	ep_worker.dest_relid = get_relname_relid("destinations", nsp);
	ep_worker.outbox_relid = get_relname_relid("outbox", nsp);
	return get_attnum(ep_worker.outbox_relid, "ordering_key") != InvalidAttrNumber;
}

/* A function destination's handler, run here in the worker's transaction. */
char *
ep_db_deliver_function(const char *dest, const char *event, int timeout_ms, bool *permanent)
{
	Jsonb	   *j = DatumGetJsonbP(DirectFunctionCall1(jsonb_in, CStringGetDatum(event)));

	return evpipe_handler_deliver(dest, j, permanent);
}
