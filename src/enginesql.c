/*-------------------------------------------------------------------------
 *
 * enginesql.c
 *	  The SQL of every statement the delivery engine runs, one text for
 *	  every host, with its parameters' types (see enginedb.h).
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "catalog/pg_type_d.h"

#include "enginedb.h"

/*
 * The claim: per destination (the arrays $1 names, $2 limits, $3 lease
 * lengths, $4 FIFO group paths, $6 FIFO flags, $7 probe flags), up to its
 * limit of due rows, oldest first, leased to $5. A lease moves
 * next_attempt_at to its end, so leased rows leave the due range of the
 * claim index. The circuit breaker's probe (half open, limit 1) is the
 * newest due row instead: claims go oldest first, so when a burst to a
 * target that fails each event's first attempts opens the circuit, the
 * oldest rows are untried ones that would fail for that reason alone,
 * while the newest due row is one that failed before and came due again
 * (a FIFO destination's probe stays the oldest: its order is the
 * contract). Each branch reads the claim index in one direction; the
 * other is skipped by its one-time filter. The two %s: the ordered
 * variant's condition. Columns: id, event_id, destination,
 * attempts, body, payload, event_type, source, correlation_id,
 * traceparent, timestamp, group, created_at (microseconds since the Unix
 * epoch), last_status, last_error.
 */
static const char claim_sql[] =
	"WITH c AS ("
	" SELECT x.id, d.lease_ms, d.grp FROM ROWS FROM (pg_catalog.unnest($1), pg_catalog.unnest($2),"
	"  pg_catalog.unnest($3), pg_catalog.unnest($4), pg_catalog.unnest($6), pg_catalog.unnest($7))"
	"  AS d(name, lim, lease_ms, grp, fifo, probe)"
	" CROSS JOIN LATERAL ("
	/* (a member of a UNION may not lock: each branch is a subquery) */
	"  SELECT * FROM (SELECT o.id FROM evpipe.outbox o"
	"  WHERE (NOT d.probe OR d.fifo)"
	"   AND o.destination = d.name AND o.next_attempt_at <= pg_catalog.now()%s"
	/* FIFO: one batch in flight for the destination, oldest first */
	"   AND (NOT d.fifo OR (pg_catalog.pg_try_advisory_xact_lock("
	"     pg_catalog.hashtext('evpipe.fifo:' || d.name))"
	/* a lease moved next_attempt_at to its end: an index range */
	"    AND NOT EXISTS (SELECT 1 FROM evpipe.outbox l WHERE l.destination = d.name"
	"     AND l.next_attempt_at > pg_catalog.now()"
	"     AND l.leased_by IS NOT NULL AND l.lease_until > pg_catalog.now())))"
	"  ORDER BY o.next_attempt_at, o.id LIMIT d.lim FOR UPDATE SKIP LOCKED) a"
	"  UNION ALL"
	"  SELECT * FROM (SELECT o.id FROM evpipe.outbox o"
	"  WHERE d.probe AND NOT d.fifo"
	"   AND o.destination = d.name AND o.next_attempt_at <= pg_catalog.now()%s"
	"  ORDER BY o.next_attempt_at DESC, o.id DESC LIMIT d.lim FOR UPDATE SKIP LOCKED) b) x),"
	" u AS ("
	" UPDATE evpipe.outbox o SET attempts = o.attempts + 1, leased_by = $5,"
	"  lease_until = pg_catalog.now() + c.lease_ms * interval '1 millisecond',"
	"  next_attempt_at = pg_catalog.now() + c.lease_ms * interval '1 millisecond',"
	"  first_attempt_at = COALESCE(o.first_attempt_at, pg_catalog.now()),"
	"  last_attempt_at = pg_catalog.now()"
	" FROM c WHERE o.id = c.id"
	" RETURNING o.id, o.event_id, o.destination, o.attempts, c.grp, o.created_at,"
	"  o.last_status, o.last_error)"
	" SELECT u.id, u.event_id, u.destination, u.attempts,"
	"  (CASE WHEN dst.config ? 'enrich' THEN pg_catalog.jsonb_set(e.event, '{payload}',"
	"   (e.event -> 'payload') || (dst.config -> 'enrich')) ELSE e.event END)::text,"
	"  (CASE WHEN dst.config ? 'enrich' THEN (e.event -> 'payload') || (dst.config -> 'enrich')"
	"   ELSE e.event -> 'payload' END)::text,"
	"  e.event_type, e.source, e.correlation_id, e.traceparent, e.event ->> 'timestamp',"
	"  CASE WHEN u.grp = '' THEN NULL ELSE"
	"   COALESCE(e.event #>> pg_catalog.string_to_array(u.grp, '.'), e.source) END,"
	"  (EXTRACT(epoch FROM u.created_at) * 1000000)::int8, u.last_status, u.last_error"
	" FROM u JOIN evpipe.events e ON e.event_id = u.event_id"
	" JOIN evpipe.destinations dst ON dst.name = u.destination"
	" ORDER BY u.destination, u.id";

/* ordered rows: only the head of its key, the oldest row of the key still in the outbox */
static const char claim_ordered_cond[] =
	" AND (o.ordering_key IS NULL OR NOT EXISTS (SELECT 1 FROM evpipe.outbox p"
	"  WHERE p.destination = o.destination AND p.ordering_key = o.ordering_key"
	"  AND p.id < o.id))";

/*
 * The outcomes: arrays $1 ids, $2 attempts (only rows still leased by $8
 * for the same attempt are touched), $3 outcome, $4 status, $5 error, $6
 * excerpt, $7 next attempt. Delivered rows move to evpipe.delivered, dead
 * ones to evpipe.dead_letters (with a NOTIFY), retries get their time,
 * released rows give their attempt back. Returns the dead letters. The
 * four %s: the ordered variant's ordering_key columns.
 */
static const char outcomes_sql[] =
	"WITH r AS ("
	" SELECT * FROM ROWS FROM (pg_catalog.unnest($1), pg_catalog.unnest($2), pg_catalog.unnest($3),"
	"  pg_catalog.unnest($4), pg_catalog.unnest($5), pg_catalog.unnest($6), pg_catalog.unnest($7))"
	"  AS r(id, attempts, outcome, status, error, excerpt, next_at)),"
	" mine AS ("
	" SELECT o.id, r.outcome, r.status, r.error, r.excerpt, r.next_at"
	" FROM evpipe.outbox o JOIN r ON o.id = r.id AND o.attempts = r.attempts"
	" WHERE o.leased_by = $8 FOR UPDATE OF o),"
	" ok AS ("
	" DELETE FROM evpipe.outbox o USING mine m WHERE o.id = m.id AND m.outcome = 'ok'"
	" RETURNING o.event_id, o.destination, o.attempts, o.created_at, o.first_attempt_at, m.status),"
	" ok_ins AS ("
	" INSERT INTO evpipe.delivered (event_id, destination, attempts, created_at,"
	"  first_attempt_at, last_status)"
	/* an eventId ingested again after event retention: its newest delivery */
	" SELECT * FROM ok ON CONFLICT (event_id, destination) DO UPDATE SET"
	"  attempts = excluded.attempts, created_at = excluded.created_at,"
	"  first_attempt_at = excluded.first_attempt_at, last_status = excluded.last_status,"
	"  delivered_at = pg_catalog.now() RETURNING 1),"
	/* expired: the claim counted an attempt that was not made */
	" dead AS ("
	" DELETE FROM evpipe.outbox o USING mine m WHERE o.id = m.id AND m.outcome IN ('dead', 'expired')"
	" RETURNING o.event_id, o.destination,"
	"  CASE m.outcome WHEN 'expired' THEN o.attempts - 1 ELSE o.attempts END,"
	"  o.created_at, o.first_attempt_at, m.status, m.error, m.excerpt%s),"
	" dead_ins AS ("
	" INSERT INTO evpipe.dead_letters AS x (event_id, event_type, source, destination,"
	"  attempts, created_at, first_attempt_at, last_attempt_at, last_status, last_error,"
	"  response_excerpt, traceparent, event%s)"
	" SELECT d.event_id, e.event_type, e.source, d.destination, d.attempts, d.created_at,"
	"  d.first_attempt_at, pg_catalog.now(), d.status, d.error, d.excerpt, e.traceparent, e.event%s"
	" FROM dead d JOIN evpipe.events e USING (event_id)"
	" ON CONFLICT (event_id, destination) DO UPDATE SET attempts = excluded.attempts,%s"
	"  last_attempt_at = excluded.last_attempt_at, last_status = excluded.last_status,"
	"  last_error = excluded.last_error, response_excerpt = excluded.response_excerpt,"
	"  dead_at = pg_catalog.now()"
	" RETURNING x.event_id, x.event_type, x.destination, x.attempts, x.last_status, x.last_error),"
	" retry AS ("
	" UPDATE evpipe.outbox o SET next_attempt_at = m.next_at, leased_by = NULL,"
	"  lease_until = NULL, last_status = m.status, last_error = m.error,"
	"  response_excerpt = m.excerpt"
	" FROM mine m WHERE o.id = m.id AND m.outcome = 'retry' RETURNING 1),"
	" released AS ("
	" UPDATE evpipe.outbox o SET next_attempt_at = m.next_at, leased_by = NULL,"
	"  lease_until = NULL, attempts = o.attempts - 1"
	" FROM mine m WHERE o.id = m.id AND m.outcome = 'release' RETURNING 1),"
	" notified AS ("
	" SELECT pg_catalog.pg_notify('evpipe_dead_letter', pg_catalog.json_build_object("
	"  'eventId', event_id, 'eventType', event_type, 'destination', destination,"
	"  'attempts', attempts, 'lastStatus', last_status, 'lastError', last_error)::text)"
	" FROM dead_ins)"
	" SELECT d.event_id, d.destination, d.attempts, d.last_status, d.last_error,"
	"  (SELECT pg_catalog.count(*) FROM notified)"
	" FROM dead_ins d";

static const char emit_outcome_sql[] = "SELECT evpipe._emit_outcome($1, $2, $3, $4, $5, $6)";

/* due rows past their destination's max_age_ms ($1 names, $2 ages), leased to $3 */
static const char expire_sql[] =
	"UPDATE evpipe.outbox o SET leased_by = $3,"
	"  lease_until = pg_catalog.now() + interval '1 minute',"
	"  next_attempt_at = pg_catalog.now() + interval '1 minute'"
	" FROM (SELECT x.id FROM ROWS FROM (pg_catalog.unnest($1), pg_catalog.unnest($2))"
	"  AS d(name, max_age_ms)"
	"  CROSS JOIN LATERAL (SELECT o.id FROM evpipe.outbox o"
	"   WHERE o.destination = d.name AND o.next_attempt_at <= pg_catalog.now()"
	"    AND o.created_at < pg_catalog.now() - d.max_age_ms * interval '1 millisecond'"
	"   ORDER BY o.next_attempt_at, o.id LIMIT " CppAsString2(EP_EXPIRE_BATCH)
	"   FOR UPDATE SKIP LOCKED) x) e"
	" WHERE o.id = e.id"
	" RETURNING o.id, o.attempts, o.event_id, o.destination, o.last_status, o.last_error,"
	"  (pg_catalog.date_part('epoch', pg_catalog.now() - o.created_at))::bigint,"
	"  (SELECT ev.event_type FROM evpipe.events ev WHERE ev.event_id = o.event_id)";

/*
 * Leased rows (next_attempt_at at the lease's end) whose holder is gone:
 * every holder (an in-server worker, its pid; an evpiped, a negative id)
 * holds the session advisory lock (EP_LEASE_LOCK_CLASS, holder) while it
 * is connected, and pg_locks shows it to every role.
 */
static const char release_sql[] =
	"UPDATE evpipe.outbox o SET next_attempt_at = pg_catalog.now(),"
	" leased_by = NULL, lease_until = NULL"
	" FROM (SELECT x.id FROM evpipe.destinations d CROSS JOIN LATERAL ("
	"  SELECT l.id FROM evpipe.outbox l WHERE l.destination = d.name"
	"   AND l.next_attempt_at > pg_catalog.now() AND l.leased_by IS NOT NULL"
	"   AND l.lease_until > pg_catalog.now()"
	"   AND l.leased_by <> ALL (ARRAY(SELECT (CASE WHEN k.objid::int8 >= 2147483648"
	"     THEN k.objid::int8 - 4294967296 ELSE k.objid::int8 END)::int4"
	"    FROM pg_catalog.pg_locks k WHERE k.locktype = 'advisory' AND k.granted"
	"     AND k.classid = " CppAsString2(EP_LEASE_LOCK_CLASS) " AND k.objsubid = 2"
	"     AND k.database = (SELECT oid FROM pg_catalog.pg_database"
	"      WHERE datname = pg_catalog.current_database())))"
	"  FOR UPDATE SKIP LOCKED) x) s"
	" WHERE o.id = s.id";

/*
 * Rows leased to holder $1 but not among its ids in flight $2 (a
 * reconnecting daemon whose last outcomes a server crash lost): released.
 */
static const char release_mine_sql[] =
	"UPDATE evpipe.outbox o SET next_attempt_at = pg_catalog.now(),"
	" leased_by = NULL, lease_until = NULL"
	" FROM (SELECT x.id FROM evpipe.destinations d CROSS JOIN LATERAL ("
	"  SELECT l.id FROM evpipe.outbox l WHERE l.destination = d.name"
	"   AND l.next_attempt_at > pg_catalog.now() AND l.leased_by = $1"
	"   AND l.lease_until > pg_catalog.now() AND l.id <> ALL ($2)"
	"  FOR UPDATE SKIP LOCKED) x) s"
	" WHERE o.id = s.id";

/* a holder's advisory lock ($1 the class, $2 the holder), for the session */
static const char hold_lease_sql[] = "SELECT pg_catalog.pg_try_advisory_lock($1, $2)";

/*
 * Rate limits shared by every host: lock the schedule rows of the
 * destinations $1 (created on first use; locked in name order, so that
 * claims of several rate-limited destinations cannot deadlock) and read
 * their tat and the database's clock, both in microseconds since
 * 2000-01-01.
 */
#define PG_EPOCH_US "946684800000000"
static const char rate_lock_sql[] =
	"INSERT INTO evpipe.rate_schedule AS s (destination, tat)"
	" SELECT n, '2000-01-01 00:00:00+00' FROM pg_catalog.unnest($1) AS n ORDER BY n"
	" ON CONFLICT (destination) DO UPDATE SET tat = s.tat"
	" RETURNING s.destination, (pg_catalog.date_part('epoch', s.tat) * 1000000)::int8 - " PG_EPOCH_US ","
	"  (pg_catalog.date_part('epoch', pg_catalog.clock_timestamp()) * 1000000)::int8 - " PG_EPOCH_US;

/* the schedules' new tat ($1 names, $2 tat) */
static const char rate_set_sql[] =
	"UPDATE evpipe.rate_schedule s SET tat = r.tat"
	" FROM ROWS FROM (pg_catalog.unnest($1), pg_catalog.unnest($2)) AS r(name, tat)"
	" WHERE s.destination = r.name";

/* whether the schema has the shared rate schedule (0.3.0) */
static const char has_rate_schedule_sql[] =
	"SELECT pg_catalog.to_regclass('evpipe.rate_schedule') IS NOT NULL";

/* a function destination's handler, from outside the server */
static const char deliver_function_sql[] =
	"SELECT ok, permanent, error FROM evpipe._deliver_function($1, $2::jsonb)";

/* per destination: rows waiting, rows in flight, the oldest row's age (s) */
static const char gauges_sql[] =
	"SELECT d.name, pg_catalog.count(o.id) FILTER (WHERE o.lease_until IS NULL OR o.lease_until <= pg_catalog.now()),"
	" pg_catalog.count(o.id) FILTER (WHERE o.lease_until > pg_catalog.now()),"
	" COALESCE(EXTRACT(EPOCH FROM pg_catalog.now() - pg_catalog.min(o.created_at)), 0)::float8"
	" FROM evpipe.destinations d LEFT JOIN evpipe.outbox o ON o.destination = d.name"
	" GROUP BY d.name ORDER BY d.name";

/*
 * One batch of retention from the cursor $1 (NULL: from the oldest), for a
 * host that is not the server: a managed install has no worker to run it.
 */
static const char retention_sql[] =
	"SELECT delivered_removed, events_removed, next_after, more"
	" FROM evpipe._retention_batch($1::timestamptz)";

static const char destinations_sql[] =
	"SELECT name, kind, enabled, config::text, "
	"COALESCE((SELECT oid FROM pg_catalog.pg_roles WHERE rolname = owner), 10) "
	"FROM evpipe.destinations ORDER BY name";

static const EpParamType claim_types[] = {EP_TEXT_ARRAY, EP_INT4_ARRAY, EP_INT4_ARRAY, EP_TEXT_ARRAY,
EP_INT4, EP_BOOL_ARRAY, EP_BOOL_ARRAY};
static const EpParamType outcome_types[] = {EP_INT8_ARRAY, EP_INT4_ARRAY, EP_TEXT_ARRAY, EP_INT4_ARRAY,
EP_TEXT_ARRAY, EP_TEXT_ARRAY, EP_TIMESTAMPTZ_ARRAY, EP_INT4};
static const EpParamType emit_types[] = {EP_TEXT, EP_TEXT, EP_BOOL, EP_INT4, EP_INT4, EP_TEXT};
static const EpParamType expire_types[] = {EP_TEXT_ARRAY, EP_INT4_ARRAY, EP_INT4};
static const EpParamType hold_types[] = {EP_INT4, EP_INT4};
static const EpParamType release_mine_types[] = {EP_INT4, EP_INT8_ARRAY};
static const EpParamType rate_lock_types[] = {EP_TEXT_ARRAY};
static const EpParamType rate_set_types[] = {EP_TEXT_ARRAY, EP_TIMESTAMPTZ_ARRAY};
static const EpParamType deliver_types[] = {EP_TEXT, EP_TEXT};
static const EpParamType retention_types[] = {EP_TEXT};

const EpStmtDef ep_stmts[EP_SQL_COUNT] = {
	[EP_SQL_CLAIM] = {"claim", lengthof(claim_types), claim_types, true, false, false},
	[EP_SQL_CLAIM_ORDERED] = {"claim", lengthof(claim_types), claim_types, true, false, false},
	[EP_SQL_OUTCOMES] = {"outcome", lengthof(outcome_types), outcome_types, false, false, false},
	[EP_SQL_OUTCOMES_ORDERED] = {"outcome", lengthof(outcome_types), outcome_types, false, false, false},
	[EP_SQL_EMIT_OUTCOME] = {"outcome event", lengthof(emit_types), emit_types, false, false, false},
	[EP_SQL_EXPIRE] = {"expiry", lengthof(expire_types), expire_types, true, false, false},
	[EP_SQL_RELEASE] = {"lease release", 0, NULL, true, false, false},
	[EP_SQL_DESTINATIONS] = {"destinations", 0, NULL, false, true, true},
	[EP_SQL_HOLD_LEASE] = {"lease lock", lengthof(hold_types), hold_types, false, false, false},
	[EP_SQL_RELEASE_MINE] = {"lease release", lengthof(release_mine_types), release_mine_types, true, false, false},
	[EP_SQL_RATE_LOCK] = {"rate schedule", lengthof(rate_lock_types), rate_lock_types, false, false, false},
	[EP_SQL_RATE_SET] = {"rate schedule", lengthof(rate_set_types), rate_set_types, false, false, false},
	[EP_SQL_HAS_RATE_SCHEDULE] = {"schema", 0, NULL, false, true, true},
	[EP_SQL_DELIVER_FUNCTION] = {"function destination", lengthof(deliver_types), deliver_types, false, false, false},
	[EP_SQL_GAUGES] = {"metrics", 0, NULL, false, true, false},
	[EP_SQL_RETENTION] = {"retention", lengthof(retention_types), retention_types, false, false, false},
};

/* A statement's SQL (the variants composed once, in static buffers). */
const char *
ep_stmt_sql(EpStmt stmt)
{
	static char claim_ordered[sizeof(claim_sql) + 2 * sizeof(claim_ordered_cond)];
	static char claim_plain[sizeof(claim_sql)];
	static char outcomes_ordered[sizeof(outcomes_sql) + 256];
	static char outcomes_plain[sizeof(outcomes_sql)];

	switch (stmt)
	{
		case EP_SQL_CLAIM:
			if (claim_plain[0] == '\0')
				snprintf(claim_plain, sizeof(claim_plain), claim_sql, "", "");
			return claim_plain;
		case EP_SQL_CLAIM_ORDERED:
			if (claim_ordered[0] == '\0')
				snprintf(claim_ordered, sizeof(claim_ordered), claim_sql, claim_ordered_cond,
						 claim_ordered_cond);
			return claim_ordered;
		case EP_SQL_OUTCOMES:
			if (outcomes_plain[0] == '\0')
				snprintf(outcomes_plain, sizeof(outcomes_plain), outcomes_sql, "", "", "", "");
			return outcomes_plain;
		case EP_SQL_OUTCOMES_ORDERED:
			if (outcomes_ordered[0] == '\0')
				snprintf(outcomes_ordered, sizeof(outcomes_ordered), outcomes_sql,
						 ", o.ordering_key", ", ordering_key", ", d.ordering_key",
						 " ordering_key = excluded.ordering_key,");
			return outcomes_ordered;
		case EP_SQL_EMIT_OUTCOME:
			return emit_outcome_sql;
		case EP_SQL_EXPIRE:
			return expire_sql;
		case EP_SQL_RELEASE:
			return release_sql;
		case EP_SQL_DESTINATIONS:
			return destinations_sql;
		case EP_SQL_HOLD_LEASE:
			return hold_lease_sql;
		case EP_SQL_RELEASE_MINE:
			return release_mine_sql;
		case EP_SQL_RATE_LOCK:
			return rate_lock_sql;
		case EP_SQL_RATE_SET:
			return rate_set_sql;
		case EP_SQL_HAS_RATE_SCHEDULE:
			return has_rate_schedule_sql;
		case EP_SQL_DELIVER_FUNCTION:
			return deliver_function_sql;
		case EP_SQL_GAUGES:
			return gauges_sql;
		case EP_SQL_RETENTION:
			return retention_sql;
		case EP_SQL_COUNT:
			break;
	}
	return NULL;
}

/* The Oid of a parameter type. */
Oid
ep_param_oid(EpParamType t)
{
	switch (t)
	{
		case EP_TEXT:
			return TEXTOID;
		case EP_INT4:
			return INT4OID;
		case EP_BOOL:
			return BOOLOID;
		case EP_TEXT_ARRAY:
			return TEXTARRAYOID;
		case EP_INT4_ARRAY:
			return INT4ARRAYOID;
		case EP_INT8_ARRAY:
			return INT8ARRAYOID;
		case EP_BOOL_ARRAY:
			return BOOLARRAYOID;
		case EP_TIMESTAMPTZ_ARRAY:
			return TIMESTAMPTZARRAYOID;
	}
	return InvalidOid;
}
