/*-------------------------------------------------------------------------
 *
 * ingestbatch.c
 *	  evpipe.ingest_batch(): a JSON array of events in one call, all or
 *	  nothing. Each event is checked and routed like evpipe.ingest; the new
 *	  ones and their outbox rows are written with one statement, and taken
 *	  ids are looked up as duplicates or conflicts.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/xact.h"
#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "miscadmin.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/hsearch.h"
#include "utils/jsonb.h"
#include "utils/memutils.h"
#include "utils/resowner.h"

#include "evpipe.h"
#include "ingest.h"
#include "metrics.h"

PG_FUNCTION_INFO_V1(evpipe_ingest_batch);

/* One event of a batch, kept after its validation. */
typedef struct BatchEvent
{
	char	   *event_id;
	char	   *event_type;
	int			version;
	char	   *source;
	TimestampTz ts;
	char	   *correlation_id;
	char	   *priority;
	char	   *traceparent;
	Jsonb	   *envelope;
	List	   *dests;			/* rule order; NIL: nothing to insert */
	int			first;			/* earlier event with the same id, or -1 */
	const char *status;			/* "accepted" or "duplicate" once known */
} BatchEvent;

typedef struct BatchIdEntry
{
	char		event_id[EVPIPE_MAX_EVENT_ID_LEN + 1];	/* hash key */
	int			index;
} BatchIdEntry;

/* A copy of a jsonb in the current memory context. */
static Jsonb *
jsonb_copy(Jsonb *j)
{
	Jsonb	   *c = palloc(VARSIZE(j));

	memcpy(c, j, VARSIZE(j));
	return c;
}

/* Compare with jsonb's equality (member order does not matter). */
static bool
jsonb_same(Jsonb *a, Jsonb *b)
{
	return DatumGetBool(DirectFunctionCall2(jsonb_eq, JsonbPGetDatum(a),
											JsonbPGetDatum(b)));
}

/* 23505 for an event of a batch whose id names other content. */
static void
pg_attribute_noreturn()
batch_conflict(int index, const char *event_id, const char *other)
{
	ep_metric_add(EP_MK_REJECT, "unique", NULL, 0, 1);
	ereport(ERROR,
			(errcode(ERRCODE_UNIQUE_VIOLATION),
			 errmsg("event \"%s\" already exists with different content", event_id),
			 errdetail("Path $[%d].eventId, rule \"unique\": %s.", index, other),
			 errhint("Use a new eventId for a new event; the batch wrote nothing.")));
}

/* Order list cells of C strings bytewise (for list_sort). */
static int
cmp_name_cells(const ListCell *a, const ListCell *b)
{
	return strcmp(lfirst(a), lfirst(b));
}

/* Destinations sorted by name, as ingest answers for a duplicate. */
static List *
sorted_names(List *names)
{
	List	   *copy = list_copy(names);

	list_sort(copy, cmp_name_cells);
	return copy;
}

/* A hash table of event ids (BatchIdEntry) in the current memory context. */
static HTAB *
id_table(const char *name, long size)
{
	HASHCTL		ctl;

	memset(&ctl, 0, sizeof(ctl));
	ctl.keysize = EVPIPE_MAX_EVENT_ID_LEN + 1;
	ctl.entrysize = sizeof(BatchIdEntry);
	ctl.hcxt = CurrentMemoryContext;
	return hash_create(name, Max(size, 16), &ctl,
					   HASH_ELEM | HASH_STRINGS | HASH_CONTEXT);
}

/* Whether an event of a batch still waits to be written (or found). */
#define BATCH_OPEN(e) ((e)->first < 0 && (e)->status == NULL)

/*
 * Write the open events of a batch that have destinations, with their outbox
 * rows, in one statement. With on_conflict, ids taken meanwhile are skipped
 * and the written ones are marked accepted; without, a taken id fails the
 * statement with 23505. Returns the number written.
 */
static uint64
batch_insert(BatchEvent *evs, int n, Oid caller, bool on_conflict)
{
	static SPIPlanPtr plans[2][2] = {{NULL, NULL}, {NULL, NULL}};	/* [ordered][on_conflict] */
	Datum	   *ids = palloc(sizeof(Datum) * n);
	Datum	   *types = palloc(sizeof(Datum) * n);
	Datum	   *versions = palloc(sizeof(Datum) * n);
	Datum	   *sources = palloc(sizeof(Datum) * n);
	Datum	   *times = palloc(sizeof(Datum) * n);
	Datum	   *corr = palloc(sizeof(Datum) * n);
	bool	   *corr_null = palloc(sizeof(bool) * n);
	Datum	   *prio = palloc(sizeof(Datum) * n);
	bool	   *prio_null = palloc(sizeof(bool) * n);
	Datum	   *trace = palloc(sizeof(Datum) * n);
	Datum	   *events = palloc(sizeof(Datum) * n);
	List	   *out_ids = NIL;
	List	   *out_dests = NIL;
	List	   *out_keys = NIL;
	bool		ordered = false;
	Datum		values[13];
	int			dims[1];
	int			lbs[1] = {1};
	int			m = 0;
	int			i;
	uint64		r;
	HTAB	   *written;
	int			rc;
	static const char *const no_jit[] = {"jit"};

	for (i = 0; i < n; i++)
	{
		BatchEvent *e = &evs[i];
		ListCell   *lc;

		if (!BATCH_OPEN(e) || e->dests == NIL)
			continue;
		ids[m] = CStringGetTextDatum(e->event_id);
		types[m] = CStringGetTextDatum(e->event_type);
		versions[m] = Int32GetDatum(e->version);
		sources[m] = CStringGetTextDatum(e->source);
		times[m] = TimestampTzGetDatum(e->ts);
		corr_null[m] = (e->correlation_id == NULL);
		corr[m] = corr_null[m] ? (Datum) 0 : CStringGetTextDatum(e->correlation_id);
		prio_null[m] = (e->priority == NULL);
		prio[m] = prio_null[m] ? (Datum) 0 : CStringGetTextDatum(e->priority);
		trace[m] = CStringGetTextDatum(e->traceparent);
		events[m] = JsonbPGetDatum(e->envelope);
		m++;
		foreach(lc, e->dests)
		{
			char	   *k = ep_ingest_config.norders > 0 ? ep_ingest_ordering_key(e->envelope, lfirst(lc)) : NULL;

			out_ids = lappend(out_ids, e->event_id);
			out_dests = lappend(out_dests, lfirst(lc));
			out_keys = lappend(out_keys, k);
			ordered |= (k != NULL);
		}
	}
	if (m == 0)
		return 0;

	if (plans[ordered][on_conflict] == NULL)
	{
		Oid			argtypes[13] = {TEXTARRAYOID, TEXTARRAYOID, INT4ARRAYOID,
			TEXTARRAYOID, TIMESTAMPTZARRAYOID, TEXTARRAYOID, TEXTARRAYOID,
		TEXTARRAYOID, JSONBARRAYOID, NAMEOID, TEXTARRAYOID, TEXTARRAYOID, TEXTARRAYOID};

		plans[ordered][on_conflict] = ep_ingest_keep_plan(
									   psprintf("WITH e AS ("
												" INSERT INTO evpipe.events AS ev (event_id, event_type, schema_version, source,"
												"  event_time, correlation_id, priority, traceparent, event, ingested_by)"
												" SELECT v.*, $10 FROM ROWS FROM (pg_catalog.unnest($1), pg_catalog.unnest($2),"
												"  pg_catalog.unnest($3), pg_catalog.unnest($4), pg_catalog.unnest($5),"
												"  pg_catalog.unnest($6), pg_catalog.unnest($7), pg_catalog.unnest($8),"
												"  pg_catalog.unnest($9)) AS v"
												" %s RETURNING ev.event_id),"
												" o AS ("
												" INSERT INTO evpipe.outbox (event_id, destination%s)"
												" SELECT d.event_id, d.destination%s"
												" FROM ROWS FROM (pg_catalog.unnest($11), pg_catalog.unnest($12)%s)"
												"  WITH ORDINALITY AS d(event_id, destination%s, n)"
												" %s ORDER BY d.n"
												" RETURNING 1)"
												" SELECT e.event_id FROM e",
												on_conflict ? "ON CONFLICT (event_id) DO NOTHING" : "",
												ordered ? ", ordering_key" : "",
												ordered ? ", d.k" : "",
												ordered ? ", pg_catalog.unnest($13)" : "",
												ordered ? ", k" : "",
												on_conflict ? "WHERE d.event_id IN (SELECT e.event_id FROM e)" : ""),
												ordered ? 13 : 12, argtypes);
	}
	dims[0] = m;
	values[0] = PointerGetDatum(construct_array(ids, m, TEXTOID, -1, false, TYPALIGN_INT));
	values[1] = PointerGetDatum(construct_array(types, m, TEXTOID, -1, false, TYPALIGN_INT));
	values[2] = PointerGetDatum(construct_array(versions, m, INT4OID, 4, true, TYPALIGN_INT));
	values[3] = PointerGetDatum(construct_array(sources, m, TEXTOID, -1, false, TYPALIGN_INT));
	values[4] = PointerGetDatum(construct_array(times, m, TIMESTAMPTZOID, 8,
												FLOAT8PASSBYVAL, TYPALIGN_DOUBLE));
	values[5] = PointerGetDatum(construct_md_array(corr, corr_null, 1, dims, lbs,
												   TEXTOID, -1, false, TYPALIGN_INT));
	values[6] = PointerGetDatum(construct_md_array(prio, prio_null, 1, dims, lbs,
												   TEXTOID, -1, false, TYPALIGN_INT));
	values[7] = PointerGetDatum(construct_array(trace, m, TEXTOID, -1, false, TYPALIGN_INT));
	values[8] = PointerGetDatum(construct_array(events, m, JSONBOID, -1, false, TYPALIGN_INT));
	values[9] = DirectFunctionCall1(namein,
									CStringGetDatum(GetUserNameFromId(caller, false)));
	values[10] = ep_ingest_text_array(out_ids);
	values[11] = ep_ingest_text_array(out_dests);
	values[12] = ordered ? ep_ingest_nullable_text_array(out_keys) : (Datum) 0;

	/* no JIT: compiling the statement costs more than running it */
	rc = evpipe_execute_plan_with_off(plans[ordered][on_conflict], values, NULL,
									  no_jit, lengthof(no_jit));
	if (rc != SPI_OK_SELECT)
		elog(ERROR, "evpipe: inserting the batch failed");

	/* mark what was written */
	written = id_table("evpipe batch written", SPI_processed);
	for (r = 0; r < SPI_processed; r++)
		(void) hash_search(written,
						   SPI_getvalue(SPI_tuptable->vals[r], SPI_tuptable->tupdesc, 1),
						   HASH_ENTER, NULL);
	for (i = 0; i < n; i++)
		if (BATCH_OPEN(&evs[i]) && evs[i].dests != NIL &&
			hash_search(written, evs[i].event_id, HASH_FIND, NULL) != NULL)
			evs[i].status = "accepted";
	return SPI_processed;
}

/*
 * Open events of a batch whose id is taken: the same content is a duplicate,
 * answered with its recorded destinations; other content is a conflict
 * (23505) that fails the whole batch. An unroutable event whose id is free
 * is refused. With after_write, an id that is free now was taken and given
 * up meanwhile (40001); before writing it is left open.
 */
static void
batch_existing(BatchEvent *evs, int n, bool after_write)
{
	Datum	   *ids = palloc(sizeof(Datum) * n);
	List	  **dests;
	HTAB	   *stored;
	HTAB	   *rows;
	Datum		values[1];
	int			m = 0;
	int			i;
	uint64		r;
	static SPIPlanPtr events_plan = NULL;
	static SPIPlanPtr dests_plan = NULL;

	for (i = 0; i < n; i++)
		if (BATCH_OPEN(&evs[i]))
			ids[m++] = CStringGetTextDatum(evs[i].event_id);
	if (m == 0)
		return;

	if (events_plan == NULL)
	{
		Oid			t[1] = {TEXTARRAYOID};

		events_plan = ep_ingest_keep_plan("SELECT event_id, event FROM evpipe.events"
										  " WHERE event_id = ANY ($1)", 1, t);
		dests_plan = ep_ingest_keep_plan("SELECT event_id, destination FROM evpipe.outbox WHERE event_id = ANY ($1)"
										 " UNION SELECT event_id, destination FROM evpipe.delivered WHERE event_id = ANY ($1)"
										 " UNION SELECT event_id, destination FROM evpipe.dead_letters WHERE event_id = ANY ($1)",
										 1, t);
	}
	values[0] = PointerGetDatum(construct_array(ids, m, TEXTOID, -1, false, TYPALIGN_INT));

	/* not read-only: a fresh snapshot sees what other sessions committed */
	if (SPI_execute_plan(events_plan, values, NULL, false, 0) != SPI_OK_SELECT)
		elog(ERROR, "evpipe: looking up events failed");
	if (SPI_processed == 0 && !after_write)
	{
		/* nothing taken: only unroutable events need an answer */
		for (i = 0; i < n; i++)
			if (BATCH_OPEN(&evs[i]) && evs[i].dests == NIL)
				break;
		if (i == n)
			return;
	}

	/* id -> stored event */
	rows = id_table("evpipe batch rows", SPI_processed);
	for (r = 0; r < SPI_processed; r++)
	{
		BatchIdEntry *ent = hash_search(rows,
										SPI_getvalue(SPI_tuptable->vals[r],
													 SPI_tuptable->tupdesc, 1),
										HASH_ENTER, NULL);

		ent->index = (int) r;
	}

	for (i = 0; i < n; i++)
	{
		BatchEvent *e = &evs[i];
		BatchIdEntry *ent;
		bool		isnull;

		if (!BATCH_OPEN(e))
			continue;
		ent = hash_search(rows, e->event_id, HASH_FIND, NULL);
		if (ent == NULL)
		{
			if (e->dests == NIL)
			{
				char		extra[300];

				ep_ingest_current_batch_index = i;
				snprintf(extra, sizeof(extra), "event type %s, source %s, priority %s",
						 e->event_type, e->source, e->priority ? e->priority : "(none)");
				ep_ingest_reject(ERRCODE_INVALID_PARAMETER_VALUE, "$.eventType", "route", extra,
								 "An evpipe_admin adds routes with evpipe.add_route(); evpipe.route_explain() shows the rules.",
								 "no route matches event type \"%s\"", e->event_type);
			}
			if (after_write)
				ereport(ERROR,
						(errcode(ERRCODE_T_R_SERIALIZATION_FAILURE),
						 errmsg("event \"%s\" was changed concurrently", e->event_id),
						 errhint("Retry the call.")));
			continue;
		}
		if (!jsonb_same(DatumGetJsonbP(SPI_getbinval(SPI_tuptable->vals[ent->index],
													 SPI_tuptable->tupdesc, 2,
													 &isnull)),
						e->envelope))
			batch_conflict(i, e->event_id,
						   "an eventId identifies one event, and a retry must send the same content");
		e->status = "duplicate";
	}

	/* the destinations recorded for the duplicates */
	if (SPI_execute_plan(dests_plan, values, NULL, false, 0) != SPI_OK_SELECT)
		elog(ERROR, "evpipe: looking up destinations failed");
	stored = id_table("evpipe batch stored", m);
	dests = palloc0(sizeof(List *) * m);
	for (r = 0; r < SPI_processed; r++)
	{
		HeapTuple	tup = SPI_tuptable->vals[r];
		bool		found;
		BatchIdEntry *ent = hash_search(stored,
										SPI_getvalue(tup, SPI_tuptable->tupdesc, 1),
										HASH_ENTER, &found);

		if (!found)
			ent->index = hash_get_num_entries(stored) - 1;
		dests[ent->index] = lappend(dests[ent->index],
									SPI_getvalue(tup, SPI_tuptable->tupdesc, 2));
	}
	for (i = 0; i < n; i++)
	{
		BatchEvent *e = &evs[i];
		BatchIdEntry *ent;

		if (e->first >= 0 || e->status == NULL || strcmp(e->status, "duplicate") != 0)
			continue;
		ent = hash_search(stored, e->event_id, HASH_FIND, NULL);
		e->dests = ent ? sorted_names(dests[ent->index]) : NIL;
	}
}

/*
 * Write a batch. The common case, all ids new, goes in with a plain INSERT
 * in a subtransaction. If an id is taken (a retried batch, or another
 * session meanwhile: 23505), that is rolled back, the taken ids are looked
 * up (duplicates or conflicts), and the rest goes in with ON CONFLICT DO
 * NOTHING (speculative insertion, slower), after which the ids skipped are
 * looked up again.
 */
static void
batch_write(BatchEvent *evs, int n, Oid caller)
{
	MemoryContext cxt = CurrentMemoryContext;
	ResourceOwner owner = CurrentResourceOwner;
	volatile bool taken = false;
	int			i;

	/* an unroutable event is a duplicate of a stored one, or refused */
	for (i = 0; i < n; i++)
		if (BATCH_OPEN(&evs[i]) && evs[i].dests == NIL)
		{
			batch_existing(evs, n, false);
			break;
		}

	BeginInternalSubTransaction(NULL);
	MemoryContextSwitchTo(cxt);
	PG_TRY();
	{
		(void) batch_insert(evs, n, caller, false);
		ReleaseCurrentSubTransaction();
		MemoryContextSwitchTo(cxt);
		CurrentResourceOwner = owner;
	}
	PG_CATCH();
	{
		ErrorData  *edata;

		MemoryContextSwitchTo(cxt);
		edata = CopyErrorData();
		if (edata->sqlerrcode != ERRCODE_UNIQUE_VIOLATION)
			PG_RE_THROW();
		FlushErrorState();
		RollbackAndReleaseCurrentSubTransaction();
		MemoryContextSwitchTo(cxt);
		CurrentResourceOwner = owner;
		FreeErrorData(edata);
		taken = true;
	}
	PG_END_TRY();

	if (taken)
	{
		for (i = 0; i < n; i++)
			if (evs[i].status != NULL && strcmp(evs[i].status, "accepted") == 0)
				evs[i].status = NULL;
		batch_existing(evs, n, false);
		(void) batch_insert(evs, n, caller, true);
		batch_existing(evs, n, true);
	}
}

/* The answer for one event of a batch. */
static void
push_batch_answer(JsonbParseState **ps, BatchEvent *e)
{
	pushJsonbValue(ps, WJB_BEGIN_OBJECT, NULL);
	ep_ingest_push_str(ps, "eventId", e->event_id);
	ep_ingest_push_str(ps, "status", e->status);
	ep_ingest_push_str_array(ps, "destinations", e->dests);
	pushJsonbValue(ps, WJB_END_OBJECT, NULL);
}

/*
 * SQL: evpipe.ingest_batch(events jsonb, source text DEFAULT NULL)
 * RETURNS jsonb
 *
 * Ingest a JSON array of events in one call, all or nothing: each event is
 * checked like evpipe.ingest (paths in errors start at $[i]), then the new
 * ones and their outbox rows are written with one statement. Answers an
 * array with one {eventId, status, destinations} per event, in order.
 */
Datum
evpipe_ingest_batch(PG_FUNCTION_ARGS)
{
	IngestCall	call;
	Jsonb	   *arr;
	char	   *source_arg;
	int			n;
	int			i;
	BatchEvent *evs;
	MemoryContext batch_cxt;
	MemoryContext event_cxt;
	JsonbIterator *it;
	JsonbValue	v;
	JsonbIteratorToken tok;
	HTAB	   *seen;
	JsonbParseState *ps = NULL;
	JsonbValue *res;
	bool		any_accepted = false;

	arr = ep_ingest_call_args(fcinfo, "events", &source_arg);
	if (!JB_ROOT_IS_ARRAY(arr) || JB_ROOT_IS_SCALAR(arr))
		ep_ingest_reject(ERRCODE_SQL_JSON_ARRAY_NOT_FOUND, "$", "type", NULL,
						 "Send the events as a JSON array; evpipe.ingest takes one event.",
						 "events must be a JSON array");
	n = JB_ROOT_COUNT(arr);
	if (n > evpipe_max_batch_events)
	{
		char		extra[96];

		snprintf(extra, sizeof(extra), "%d events, the limit is %d", n,
				 evpipe_max_batch_events);
		ep_ingest_reject(ERRCODE_INVALID_PARAMETER_VALUE, "$", "maxItems", extra,
						 "The limit is evpipe.max_batch_events; split the batch.",
						 "too many events in one batch");
	}

	ep_ingest_enter_call(fcinfo, &call);
	batch_cxt = CurrentMemoryContext;
	event_cxt = AllocSetContextCreate(batch_cxt, "evpipe batch event",
									  ALLOCSET_DEFAULT_SIZES);
	evs = palloc0(sizeof(BatchEvent) * Max(n, 1));
	seen = id_table("evpipe batch ids", n);

	/* check, normalise and route each event; keep what is written */
	i = 0;
	it = JsonbIteratorInit(&arr->root);
	while ((tok = JsonbIteratorNext(&it, &v, true)) != WJB_DONE)
	{
		EpEvent		ev;
		List	   *dests;
		Jsonb	   *raw;
		BatchEvent *e;
		BatchIdEntry *ent;
		bool		found;
		MemoryContext old;

		if (tok != WJB_ELEM)
			continue;
		CHECK_FOR_INTERRUPTS();
		ep_ingest_current_batch_index = i;
		e = &evs[i];
		old = MemoryContextSwitchTo(event_cxt);
		raw = JsonbValueToJsonb(&v);
		ep_ingest_prepare_event(raw, source_arg, call.caller, &ev);
		dests = ep_ingest_route_event(&ev);

		MemoryContextSwitchTo(batch_cxt);
		e->event_id = pstrdup(ev.event_id);
		e->event_type = pstrdup(ev.event_type);
		e->version = ev.type->version;
		e->source = pstrdup(ev.source);
		e->ts = ev.ts;
		e->correlation_id = ev.correlation_id ? pstrdup(ev.correlation_id) : NULL;
		e->priority = ev.priority ? pstrdup(ev.priority) : NULL;
		e->traceparent = ev.traceparent ? pstrdup(ev.traceparent) : ep_ingest_new_traceparent();
		e->envelope = jsonb_copy(ev.envelope);
		e->dests = list_copy(dests);	/* names live in the configuration */
		e->first = -1;

		/* the same id earlier in the batch: a duplicate, or a conflict */
		ent = hash_search(seen, e->event_id, HASH_ENTER, &found);
		if (found)
		{
			if (!jsonb_same(evs[ent->index].envelope, e->envelope))
				batch_conflict(i, e->event_id,
							   psprintf("event $[%d] has this eventId with other content",
										ent->index));
			e->first = ent->index;
		}
		else
			ent->index = i;
		MemoryContextSwitchTo(old);
		MemoryContextReset(event_cxt);
		i++;
	}
	ep_ingest_current_batch_index = -1;
	ep_ingest_current_event_id = NULL;
	ep_ingest_current_source = NULL;

	batch_write(evs, n, call.caller);
	for (i = 0; i < n; i++)
		if (evs[i].status != NULL && strcmp(evs[i].status, "accepted") == 0)
		{
			any_accepted = true;
			ep_metric_add(EP_MK_INGEST, evs[i].event_type, NULL, EP_M_INGESTED, 1);
		}

	/* repeats within the batch answer like their first occurrence */
	pushJsonbValue(&ps, WJB_BEGIN_ARRAY, NULL);
	for (i = 0; i < n; i++)
	{
		BatchEvent *e = &evs[i];

		if (e->first >= 0)
		{
			e->status = "duplicate";
			e->dests = sorted_names(evs[e->first].dests);
		}
		if (strcmp(e->status, "duplicate") == 0)
			ep_metric_add(EP_MK_INGEST, e->event_type, NULL, EP_M_DUPLICATE, 1);
		push_batch_answer(&ps, e);
	}
	res = pushJsonbValue(&ps, WJB_END_ARRAY, NULL);
	if (any_accepted)
	{
		evpipe_request_wake();
		ep_ingest_set_postgrest_status();
	}
	PG_RETURN_JSONB_P(ep_ingest_end_call(&call, JsonbValueToJsonb(res)));
}
