/*-------------------------------------------------------------------------
 *
 * hostpq.c
 *	  The engine's database from evpiped (enginedb.h): one libpq
 *	  connection, each statement of enginesql.c prepared once per
 *	  connection, its typed C parameters sent as text, its rows copied out
 *	  of the PGresult. Transactions are BEGIN/COMMIT; memory allocated
 *	  during one is freed at its end, as SPI's is in the server.
 *
 *	  The session runs the engine's statements as the in-server worker
 *	  does: asynchronous commits (a durable commit turns synchronous_commit
 *	  on for its transaction), no JIT, generic plans, index scans and
 *	  nested loops only.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <stdio.h>
#include <time.h>

#include "catalog/pg_type_d.h"
#include "lib/stringinfo.h"
#include "libpq-fe.h"
#include "utils/memutils.h"

#include "engine.h"
#include "enginedb.h"
#include "hostpq.h"

static PGconn *conn = NULL;
static bool prepared[EP_SQL_COUNT];
static bool in_tx = false;
static MemoryContext tx_cxt = NULL;

/* session settings: see the file's comment */
static const char session_sql[] =
	"SET synchronous_commit = off; SET jit = off;"
	" SET plan_cache_mode = force_generic_plan;"
	" SET enable_hashjoin = off; SET enable_mergejoin = off;"
	" SET enable_seqscan = off; SET enable_bitmapscan = off;"
	" LISTEN evpipe_wake; LISTEN evpipe_destinations";

/* The connection (NULL when there is none). */
PGconn *
ep_pq_conn(void)
{
	return conn;
}

/* Whether the connection is up. */
bool
ep_pq_connected(void)
{
	return conn != NULL && PQstatus(conn) == CONNECTION_OK;
}

/* Close the connection, if any. */
void
ep_pq_close(void)
{
	if (conn)
		PQfinish(conn);
	conn = NULL;
	in_tx = false;
	memset(prepared, 0, sizeof(prepared));
}

/*
 * Check a connection string without connecting; NULL if it parses, else
 * libpq's reason (malloc'd).
 */
char *
ep_pq_check_conninfo(const char *conninfo)
{
	char	   *err = NULL;
	PQconninfoOption *opts;

	if (conninfo == NULL || conninfo[0] == '\0')
		return NULL;
	opts = PQconninfoParse(conninfo, &err);
	if (opts == NULL)
		return err ? err : strdup("out of memory");
	PQconninfoFree(opts);
	return NULL;
}

/* Run a statement of the host itself, outside the engine's table. */
static PGresult *
run_simple(const char *sql, ExecStatusType want, char *err, size_t errlen)
{
	PGresult   *res = PQexec(conn, sql);

	if (PQresultStatus(res) != want)
	{
		snprintf(err, errlen, "%s", PQerrorMessage(conn));
		if (errlen > 0 && err[0] != '\0' && err[strlen(err) - 1] == '\n')
			err[strlen(err) - 1] = '\0';
		PQclear(res);
		return NULL;
	}
	return res;
}

/*
 * Connect (conninfo, or libpq's environment when empty) and set the
 * session up. Returns EP_PQ_OK, EP_PQ_DOWN (try again later: *err says
 * why) or EP_PQ_MISCONFIGURED (the database or role cannot serve: *err
 * says what to fix).
 */
EpPqStatus
ep_pq_connect(const char *conninfo, char *err, size_t errlen)
{
	/*
	 * Keywords before dbname are defaults the connection string (or the
	 * environment) may override; libpq's own "fallback" names the session.
	 */
	const char *keys[] = {"keepalives_idle", "keepalives_interval", "keepalives_count",
		"tcp_user_timeout", "connect_timeout", "dbname", "fallback_application_name",
	"client_encoding", NULL};
	const char *vals[] = {"10", "5", "3", "30000", "10",
		conninfo && conninfo[0] ? conninfo : NULL, "evpiped", "UTF8", NULL};
	PGresult   *res;
	bool		ok;

	ep_pq_close();
	/* a NULL value (no conninfo) leaves that keyword to the environment */
	conn = PQconnectdbParams(keys, vals, 1);
	if (conn == NULL || PQstatus(conn) != CONNECTION_OK)
	{
		snprintf(err, errlen, "%s", conn ? PQerrorMessage(conn) : "out of memory");
		if (errlen > 0 && err[0] != '\0' && err[strlen(err) - 1] == '\n')
			err[strlen(err) - 1] = '\0';
		ep_pq_close();
		return EP_PQ_DOWN;
	}

	/* the database must have evpipe, the role must be a worker */
	res = run_simple("SELECT pg_catalog.to_regclass('evpipe.outbox') IS NOT NULL,"
					 " EXISTS (SELECT 1 FROM pg_catalog.pg_roles WHERE rolname = 'evpipe_worker'),"
					 " (SELECT rolsuper FROM pg_catalog.pg_roles WHERE rolname = current_user)"
					 "  OR pg_catalog.pg_has_role(current_user, (SELECT oid FROM pg_catalog.pg_roles"
					 "   WHERE rolname = 'evpipe_worker'), 'USAGE') IS TRUE,"
					 " current_user, pg_catalog.current_database()",
					 PGRES_TUPLES_OK, err, errlen);
	if (res == NULL)
	{
		ep_pq_close();
		return EP_PQ_DOWN;
	}
	if (strcmp(PQgetvalue(res, 0, 0), "t") != 0)
		snprintf(err, errlen, "database \"%s\" has no evpipe: run CREATE EXTENSION evpipe there, or point --dsn at the right database",
				 PQgetvalue(res, 0, 4));
	else if (strcmp(PQgetvalue(res, 0, 1), "t") != 0)
		snprintf(err, errlen, "database \"%s\" has an evpipe older than 0.3.0 (no role evpipe_worker): run ALTER EXTENSION evpipe UPDATE",
				 PQgetvalue(res, 0, 4));
	else if (strcmp(PQgetvalue(res, 0, 2), "t") != 0)
		snprintf(err, errlen, "role \"%s\" is not a member of evpipe_worker: run GRANT evpipe_worker TO \"%s\"",
				 PQgetvalue(res, 0, 3), PQgetvalue(res, 0, 3));
	ok = strcmp(PQgetvalue(res, 0, 0), "t") == 0 && strcmp(PQgetvalue(res, 0, 1), "t") == 0 &&
		strcmp(PQgetvalue(res, 0, 2), "t") == 0;
	PQclear(res);
	if (!ok)
	{
		ep_pq_close();
		return EP_PQ_MISCONFIGURED;
	}
	res = run_simple(session_sql, PGRES_COMMAND_OK, err, errlen);
	if (res == NULL)
	{
		ep_pq_close();
		return EP_PQ_DOWN;
	}
	PQclear(res);
	return EP_PQ_OK;
}

/*
 * Read what the server sent while we waited: notifications set *wake (new
 * rows) and *dests (destinations changed). False if the connection broke.
 */
bool
ep_pq_consume(bool *wake, bool *dests)
{
	PGnotify   *n;

	if (conn == NULL || !PQconsumeInput(conn))
		return false;
	while ((n = PQnotifies(conn)) != NULL)
	{
		if (strcmp(n->relname, "evpipe_wake") == 0)
			*wake = true;
		else if (strcmp(n->relname, "evpipe_destinations") == 0)
			*dests = true;
		PQfreemem(n);
	}
	return PQstatus(conn) == CONNECTION_OK;
}

/* Throw a libpq failure as an ERROR, with its SQLSTATE when there is one. */
static void
throw_result(PGresult *res, const char *what)
{
	const char *state = res ? PQresultErrorField(res, PG_DIAG_SQLSTATE) : NULL;
	const char *msg = res ? PQresultErrorField(res, PG_DIAG_MESSAGE_PRIMARY) : NULL;
	char	   *text = pstrdup(msg ? msg : PQerrorMessage(conn));
	int			code = ERRCODE_CONNECTION_FAILURE;

	if (state && strlen(state) == 5)
		code = MAKE_SQLSTATE(state[0], state[1], state[2], state[3], state[4]);
	if (text[0] && text[strlen(text) - 1] == '\n')
		text[strlen(text) - 1] = '\0';
	if (res)
		PQclear(res);
	ereport(ERROR,
			(errcode(code),
			 errmsg("evpipe: the %s statement failed: %s", what, text)));
}

/* Run a host statement that returns nothing, or throw. */
static void
exec_command(const char *sql, const char *what)
{
	PGresult   *res;

	if (conn == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_CONNECTION_DOES_NOT_EXIST),
				 errmsg("evpipe: no connection to the database")));
	res = PQexec(conn, sql);
	if (PQresultStatus(res) != PGRES_COMMAND_OK)
		throw_result(res, what);
	PQclear(res);
}

/* Start a short transaction; its allocations end with it. */
void
ep_begin_tx(const char *activity)
{
	if (tx_cxt == NULL)
		tx_cxt = AllocSetContextCreate(TopMemoryContext, "evpiped transaction",
									   ALLOCSET_DEFAULT_SIZES);
	ep_worker.tx_caller_cxt = CurrentMemoryContext;
	exec_command("BEGIN", "begin");
	in_tx = true;
	MemoryContextSwitchTo(tx_cxt);
}

/* The end of a transaction, committed or not. */
static void
end_tx(void)
{
	in_tx = false;
	MemoryContextSwitchTo(ep_worker.tx_caller_cxt);
	MemoryContextReset(tx_cxt);
}

/* Commit the short transaction. */
void
ep_commit_tx(void)
{
	exec_command("COMMIT", "commit");
	end_tx();
}

/* Commit, waiting for the WAL flush (the session commits asynchronously). */
void
ep_commit_tx_durable(void)
{
	exec_command("SET LOCAL synchronous_commit = on; COMMIT", "commit");
	end_tx();
}

/* After an error: roll the open transaction back, if the connection lets us. */
void
ep_pq_abort(void)
{
	if (in_tx)
	{
		if (ep_pq_connected())
		{
			PGresult   *res = PQexec(conn, "ROLLBACK");

			PQclear(res);
		}
		end_tx();
	}
}

/* Append a timestamp (microseconds since 2000-01-01) as text. */
static void
append_timestamp(StringInfo buf, TimestampTz ts)
{
	int64		unix_us = ts + (int64) (POSTGRES_EPOCH_JDATE - UNIX_EPOCH_JDATE) * SECS_PER_DAY * USECS_PER_SEC;
	int64		secs = unix_us / USECS_PER_SEC;
	int64		frac = unix_us % USECS_PER_SEC;
	time_t		t;
	struct tm	tm;

	if (frac < 0)
	{
		frac += USECS_PER_SEC;
		secs--;
	}
	t = (time_t) secs;
	gmtime_r(&t, &tm);
	appendStringInfo(buf, "%04d-%02d-%02d %02d:%02d:%02d.%06d+00",
					 tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday,
					 tm.tm_hour, tm.tm_min, tm.tm_sec, (int) frac);
}

/* Append a string as a double-quoted array element. */
static void
append_quoted(StringInfo buf, const char *s)
{
	appendStringInfoChar(buf, '"');
	for (; *s; s++)
	{
		if (*s == '"' || *s == '\\')
			appendStringInfoChar(buf, '\\');
		appendStringInfoChar(buf, *s);
	}
	appendStringInfoChar(buf, '"');
}

/* A parameter as text (NULL for SQL null). */
static char *
param_text(EpParamType t, const EpParam *p)
{
	StringInfoData buf;
	int			i;

	switch (t)
	{
		case EP_TEXT:
			if ((p->isnull && p->isnull[0]) || *(char *const *) p->v == NULL)
				return NULL;
			return *(char *const *) p->v;
		case EP_INT4:
			if (p->isnull && p->isnull[0])
				return NULL;
			return psprintf("%d", *(const int32 *) p->v);
		case EP_BOOL:
			if (p->isnull && p->isnull[0])
				return NULL;
			return *(const bool *) p->v ? "t" : "f";
		default:
			break;
	}
	initStringInfo(&buf);
	appendStringInfoChar(&buf, '{');
	for (i = 0; i < p->n; i++)
	{
		if (i > 0)
			appendStringInfoChar(&buf, ',');
		if ((p->isnull && p->isnull[i]) ||
			(t == EP_TEXT_ARRAY && ((char *const *) p->v)[i] == NULL))
		{
			appendStringInfoString(&buf, "NULL");
			continue;
		}
		switch (t)
		{
			case EP_TEXT_ARRAY:
				append_quoted(&buf, ((char *const *) p->v)[i]);
				break;
			case EP_INT4_ARRAY:
				appendStringInfo(&buf, "%d", ((const int32 *) p->v)[i]);
				break;
			case EP_INT8_ARRAY:
				appendStringInfo(&buf, INT64_FORMAT, ((const int64 *) p->v)[i]);
				break;
			case EP_BOOL_ARRAY:
				appendStringInfoChar(&buf, ((const bool *) p->v)[i] ? 't' : 'f');
				break;
			case EP_TIMESTAMPTZ_ARRAY:
				appendStringInfoChar(&buf, '"');
				append_timestamp(&buf, ((const TimestampTz *) p->v)[i]);
				appendStringInfoChar(&buf, '"');
				break;
			default:
				elog(ERROR, "evpipe: not an array parameter type");
		}
	}
	appendStringInfoChar(&buf, '}');
	return buf.data;
}

/* Run one of the engine's statements on the connection. */
EpRows *
ep_db_exec(EpStmt stmt, const EpParam *params)
{
	const EpStmtDef *def = &ep_stmts[stmt];
	const char *values[16];
	char		name[32];
	PGresult   *res;
	EpRows	   *rows;
	int			i;
	uint64		r;

	Assert(def->nparams <= lengthof(values));
	if (conn == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_CONNECTION_DOES_NOT_EXIST),
				 errmsg("evpipe: no connection to the database")));
	snprintf(name, sizeof(name), "evpipe_%d", (int) stmt);
	if (!prepared[stmt])
	{
		Oid			types[16];

		for (i = 0; i < def->nparams; i++)
			types[i] = ep_param_oid(def->types[i]);
		res = PQprepare(conn, name, ep_stmt_sql(stmt), def->nparams, types);
		if (PQresultStatus(res) != PGRES_COMMAND_OK)
			throw_result(res, def->name);
		PQclear(res);
		prepared[stmt] = true;
	}
	for (i = 0; i < def->nparams; i++)
		values[i] = param_text(def->types[i], &params[i]);
	res = PQexecPrepared(conn, name, def->nparams, values, NULL, NULL, 0);
	if (PQresultStatus(res) != PGRES_TUPLES_OK && PQresultStatus(res) != PGRES_COMMAND_OK)
		throw_result(res, def->name);

	rows = palloc0(sizeof(EpRows));
	if (PQresultStatus(res) == PGRES_COMMAND_OK)
	{
		const char *n = PQcmdTuples(res);

		rows->processed = n && n[0] ? strtoull(n, NULL, 10) : 0;
		PQclear(res);
		return rows;
	}
	rows->processed = PQntuples(res);
	rows->ncols = PQnfields(res);
	rows->cells = palloc(sizeof(char *) * Max(rows->processed * rows->ncols, 1));
	for (r = 0; r < rows->processed; r++)
		for (i = 0; i < rows->ncols; i++)
			rows->cells[r * rows->ncols + i] =
				PQgetisnull(res, (int) r, i) ? NULL : pstrdup(PQgetvalue(res, (int) r, i));
	PQclear(res);
	return rows;
}

/* Whether the installed schema has ordering keys (0.2.0 and later). */
bool
ep_db_has_ordering(void)
{
	PGresult   *res;
	bool		has;

	if (conn == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_CONNECTION_DOES_NOT_EXIST),
				 errmsg("evpipe: no connection to the database")));
	res = PQexec(conn, "SELECT EXISTS (SELECT 1 FROM pg_catalog.pg_attribute"
				 " WHERE attrelid = 'evpipe.outbox'::pg_catalog.regclass"
				 " AND attname = 'ordering_key' AND NOT attisdropped)");
	if (PQresultStatus(res) != PGRES_TUPLES_OK)
		throw_result(res, "schema");
	has = strcmp(PQgetvalue(res, 0, 0), "t") == 0;
	PQclear(res);
	return has;
}

/* A function destination's handler, through evpipe._deliver_function. */
char *
ep_db_deliver_function(const char *dest, const char *event, bool *permanent)
{
	EpParam		params[2] = {{&dest, 1}, {&event, 1}};
	EpRows	   *rows = ep_db_exec(EP_SQL_DELIVER_FUNCTION, params);

	*permanent = false;
	if (rows->processed != 1)
	{
		*permanent = true;
		return pstrdup("evpipe._deliver_function returned no row");
	}
	if (ep_cell(rows, 0, 0) && strcmp(ep_cell(rows, 0, 0), "t") == 0)
		return NULL;
	*permanent = ep_cell(rows, 0, 1) && strcmp(ep_cell(rows, 0, 1), "t") == 0;
	return pstrdup(ep_cell(rows, 0, 2) ? ep_cell(rows, 0, 2) : "error");
}
