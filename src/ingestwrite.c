/*-------------------------------------------------------------------------
 *
 * ingestwrite.c
 *	  The writes of ingest: an event with its outbox rows in one statement,
 *	  the lookups of an event id that is taken (the stored envelope, the
 *	  destinations recorded), and the answer for a duplicate or a conflict.
 *	  Also the plans it keeps and the array parameters it builds, which
 *	  ingestbatch.c uses too.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "miscadmin.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/jsonb.h"

#include "evpipe.h"
#include "ingest.h"
#include "metrics.h"

static SPIPlanPtr insert_plan = NULL;
static SPIPlanPtr insert_ordered_plan = NULL;
static SPIPlanPtr existing_plan = NULL;
static SPIPlanPtr existing_dests_plan = NULL;

/* Prepare and keep a plan. */
SPIPlanPtr
ep_ingest_keep_plan(const char *sql, int nargs, Oid *types)
{
	SPIPlanPtr	p = SPI_prepare(sql, nargs, types);

	if (p == NULL)
		elog(ERROR, "evpipe: SPI_prepare failed: %s",
			 SPI_result_code_string(SPI_result));
	if (SPI_keepplan(p) != 0)
		elog(ERROR, "evpipe: SPI_keepplan failed");
	return p;
}

/* A text[] datum from a list of C strings. */
Datum
ep_ingest_text_array(List *items)
{
	Datum	   *elems = palloc(sizeof(Datum) * Max(list_length(items), 1));
	ListCell   *lc;
	int			n = 0;

	foreach(lc, items)
		elems[n++] = CStringGetTextDatum(lfirst(lc));
	return PointerGetDatum(construct_array(elems, n, TEXTOID, -1, false,
										   TYPALIGN_INT));
}

/* A text[] datum from a list of C strings, NULL elements for NULL ones. */
Datum
ep_ingest_nullable_text_array(List *items)
{
	int			n = list_length(items);
	Datum	   *elems = palloc(sizeof(Datum) * Max(n, 1));
	bool	   *isnull = palloc(sizeof(bool) * Max(n, 1));
	int			dims[1] = {n};
	int			lbs[1] = {1};
	ListCell   *lc;
	int			i = 0;

	foreach(lc, items)
	{
		isnull[i] = (lfirst(lc) == NULL);
		elems[i] = isnull[i] ? (Datum) 0 : CStringGetTextDatum(lfirst(lc));
		i++;
	}
	return PointerGetDatum(construct_md_array(elems, isnull, 1, dims, lbs,
											  TEXTOID, -1, false, TYPALIGN_INT));
}

/* A text datum for a C string, or a null (marked in nulls[i]) for NULL. */
static Datum
text_or_null(const char *s, char *nulls, int i)
{
	if (s == NULL)
	{
		nulls[i] = 'n';
		return (Datum) 0;
	}
	return CStringGetTextDatum(s);
}

/*
 * Insert the event and its outbox rows in one statement; returns true if
 * the event was new. dests is never empty, so the statement inserts outbox
 * rows exactly when the event row was new. The statement is kept lean (no
 * second CTE, sort or aggregate): executor start-up is a visible part of a
 * one-event call. A cross join can only be a nested loop, and the event side
 * has one row, so the outbox rows are inserted (and numbered) in route order.
 */
bool
ep_ingest_insert_event(EpEvent *ev, List *dests, Oid caller)
{
	Datum		values[12];
	char		nulls[13];
	int			rc;
	List	   *keys = ep_ingest_ordering_keys(ev->envelope, dests);
	SPIPlanPtr	plan;

	if (keys != NIL && insert_ordered_plan == NULL)
	{
		Oid			types[12] = {TEXTOID, TEXTOID, INT4OID, TEXTOID,
			TIMESTAMPTZOID, TEXTOID, TEXTOID, TEXTOID, JSONBOID, NAMEOID,
		TEXTARRAYOID, TEXTARRAYOID};

		/* an ordered destination: each row carries its key */
		insert_ordered_plan = ep_ingest_keep_plan(
												  "WITH e AS ("
												  " INSERT INTO evpipe.events AS ev (event_id, event_type, schema_version, source,"
												  "  event_time, correlation_id, priority, traceparent, event, ingested_by)"
												  " VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)"
												  " ON CONFLICT (event_id) DO NOTHING RETURNING ev.event_id)"
												  " INSERT INTO evpipe.outbox (event_id, destination, ordering_key)"
												  " SELECT e.event_id, d.d, d.k FROM e,"
												  "  ROWS FROM (pg_catalog.unnest($11), pg_catalog.unnest($12)) AS d(d, k)",
												  12, types);
	}
	if (keys == NIL && insert_plan == NULL)
	{
		Oid			types[11] = {TEXTOID, TEXTOID, INT4OID, TEXTOID,
			TIMESTAMPTZOID, TEXTOID, TEXTOID, TEXTOID, JSONBOID, NAMEOID,
		TEXTARRAYOID};

		insert_plan = ep_ingest_keep_plan(
										  "WITH e AS ("
										  " INSERT INTO evpipe.events AS ev (event_id, event_type, schema_version, source,"
										  "  event_time, correlation_id, priority, traceparent, event, ingested_by)"
										  " VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)"
										  " ON CONFLICT (event_id) DO NOTHING RETURNING ev.event_id)"
										  " INSERT INTO evpipe.outbox (event_id, destination)"
										  " SELECT e.event_id, d.d FROM e, pg_catalog.unnest($11) AS d(d)",
										  11, types);
	}
	memset(nulls, ' ', sizeof(nulls));
	nulls[12] = '\0';
	values[0] = CStringGetTextDatum(ev->event_id);
	values[1] = CStringGetTextDatum(ev->event_type);
	values[2] = Int32GetDatum(ev->type->version);
	values[3] = CStringGetTextDatum(ev->source);
	values[4] = TimestampTzGetDatum(ev->ts);
	values[5] = text_or_null(ev->correlation_id, nulls, 5);
	values[6] = text_or_null(ev->priority, nulls, 6);
	values[7] = text_or_null(ev->traceparent ? ev->traceparent : ep_ingest_new_traceparent(),
							 nulls, 7);
	values[8] = JsonbPGetDatum(ev->envelope);
	values[9] = DirectFunctionCall1(namein,
									CStringGetDatum(GetUserNameFromId(caller, false)));
	values[10] = ep_ingest_text_array(dests);
	values[11] = keys != NIL ? ep_ingest_nullable_text_array(keys) : (Datum) 0;
	plan = keys != NIL ? insert_ordered_plan : insert_plan;

	Assert(dests != NIL);
	rc = SPI_execute_plan(plan, values, nulls, false, 0);
	if (rc != SPI_OK_INSERT)
		elog(ERROR, "evpipe: inserting the event failed: %s",
			 SPI_result_code_string(rc));
	if (SPI_processed != 0 && SPI_processed != (uint64) list_length(dests))
		elog(ERROR, "evpipe: inserting the event wrote " UINT64_FORMAT " of %d outbox rows",
			 SPI_processed, list_length(dests));
	return SPI_processed > 0;
}

/* The stored envelope of an event id, or NULL. */
Jsonb *
ep_ingest_existing_event(const char *event_id)
{
	Datum		values[1];
	bool		isnull;
	Datum		d;
	int			rc;

	if (existing_plan == NULL)
	{
		Oid			types[1] = {TEXTOID};

		existing_plan = ep_ingest_keep_plan("SELECT event FROM evpipe.events WHERE event_id = $1",
											1, types);
	}
	values[0] = CStringGetTextDatum(event_id);
	rc = SPI_execute_plan(existing_plan, values, NULL, false, 1);
	if (rc != SPI_OK_SELECT)
		elog(ERROR, "evpipe: looking up event failed: %s",
			 SPI_result_code_string(rc));
	if (SPI_processed == 0)
		return NULL;
	d = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull);
	return DatumGetJsonbP(d);
}

/* Destinations recorded for an event that was ingested before. */
static List *
existing_destinations(const char *event_id)
{
	Datum		values[1];
	List	   *dests = NIL;
	uint64		i;
	int			rc;

	if (existing_dests_plan == NULL)
	{
		Oid			types[1] = {TEXTOID};

		existing_dests_plan = ep_ingest_keep_plan(
												  "SELECT destination FROM evpipe.outbox WHERE event_id = $1"
												  " UNION SELECT destination FROM evpipe.delivered WHERE event_id = $1"
												  " UNION SELECT destination FROM evpipe.dead_letters WHERE event_id = $1"
												  " ORDER BY 1", 1, types);
	}
	values[0] = CStringGetTextDatum(event_id);
	rc = SPI_execute_plan(existing_dests_plan, values, NULL, true, 0);
	if (rc != SPI_OK_SELECT)
		elog(ERROR, "evpipe: looking up destinations failed");
	for (i = 0; i < SPI_processed; i++)
		dests = lappend(dests, SPI_getvalue(SPI_tuptable->vals[i],
											SPI_tuptable->tupdesc, 1));
	return dests;
}

/* Answer of ingest. */
Jsonb *
ep_ingest_result(const char *event_id, const char *status, List *dests)
{
	JsonbParseState *ps = NULL;
	JsonbValue *res;

	pushJsonbValue(&ps, WJB_BEGIN_OBJECT, NULL);
	ep_ingest_push_str(&ps, "eventId", event_id);
	ep_ingest_push_str(&ps, "status", status);
	ep_ingest_push_str_array(&ps, "destinations", dests);
	res = pushJsonbValue(&ps, WJB_END_OBJECT, NULL);
	return JsonbValueToJsonb(res);
}

/*
 * Handle an event id that exists already: the same content is a duplicate
 * (nothing written, nothing raised); other content is a conflict (23505).
 */
Jsonb *
ep_ingest_handle_existing(EpEvent *ev, Jsonb *stored)
{
	if (!DatumGetBool(DirectFunctionCall2(jsonb_eq, JsonbPGetDatum(stored),
										  JsonbPGetDatum(ev->envelope))))
	{
		ep_metric_add(EP_MK_REJECT, "unique", NULL, 0, 1);
		if (evpipe_log_rejections)
			ereport(LOG,
					(errmsg("evpipe event=ingest_rejected sqlstate=23505 event_id=%s source=%s reason=\"event id reused with other content\"",
							ev->event_id, ev->source),
					 errhidestmt(true)));
		ereport(ERROR,
				(errcode(ERRCODE_UNIQUE_VIOLATION),
				 errmsg("event \"%s\" already exists with different content",
						ev->event_id),
				 errdetail("Path $.eventId, rule \"unique\": an eventId identifies one event, and a retry must send the same content."),
				 errhint("Use a new eventId for a new event.")));
	}
	ep_metric_add(EP_MK_INGEST, ev->event_type, NULL, EP_M_DUPLICATE, 1);
	return ep_ingest_result(ev->event_id, "duplicate",
							existing_destinations(ev->event_id));
}
