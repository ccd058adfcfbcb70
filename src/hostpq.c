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
#include "logquote.h"

static PGconn *conn = NULL;
static bool prepared[EP_SQL_COUNT];
static bool in_tx = false;
static bool host_retention = false;	/* retention is this host's job */
static bool managed_install = false;	/* no C extension: the managed install */
static MemoryContext tx_cxt = NULL;

/* session settings: see the file's comment */
static const char session_sql[] =
	"SET synchronous_commit = off; SET jit = off;"
	" SET plan_cache_mode = force_generic_plan;"
	" SET enable_hashjoin = off; SET enable_mergejoin = off;"
	" SET enable_seqscan = off; SET enable_bitmapscan = off;"
	" LISTEN evpipe_wake; LISTEN evpipe_destinations";

/*
 * Copy a libpq message into err as one line: its newlines and tabs (libpq
 * adds hints on lines of their own) become single spaces.
 */
static void
copy_message(char *err, size_t errlen, const char *msg)
{
	size_t		n = 0;
	bool		space = false;

	if (errlen == 0)
		return;
	for (; *msg && n + 1 < errlen; msg++)
	{
		if (*msg == '\n' || *msg == '\t' || *msg == '\r' || *msg == ' ')
		{
			space = n > 0;
			continue;
		}
		if (space && n + 2 < errlen)
			err[n++] = ' ';
		space = false;
		err[n++] = *msg;
	}
	err[n] = '\0';
}

/*
 * libpq's default prints what the server says outside a statement (the
 * FATAL of a shutdown) raw on stderr: log it as one of our lines instead.
 */
static void
notice_receiver(void *arg, const PGresult *res)
{
	const char *severity = PQresultErrorField(res, PG_DIAG_SEVERITY_NONLOCALIZED);
	const char *msg = PQresultErrorField(res, PG_DIAG_MESSAGE_PRIMARY);
	char		text[1024];

	(void) arg;
	copy_message(text, sizeof(text), msg ? msg : PQresultErrorMessage(res));
	ereport(LOG,
			(errmsg("evpipe event=server_message severity=%s message=\"%s\"",
					severity ? severity : "NOTICE", ep_log_quote(text))));
}

/*
 * Whether a failed connection attempt failed on the connection options
 * themselves (a value libpq rejects before it looks for a server): trying
 * again cannot help. A failure that reached a server or a name lookup
 * starts "connection to server ..." or "could not translate ...".
 */
static bool
options_rejected(PGconn *c)
{
	static const char *const prefixes[] = {
		"invalid ",				/* "invalid integer value ... for connection
								 * option", "invalid port number", "invalid
								 * sslmode value", ... */
		"could not match ",		/* hosts, hostaddrs and ports that do not pair */
		"unrecognized ",
		NULL
	};
	const char *msg = PQerrorMessage(c);
	int			i;

	for (i = 0; prefixes[i]; i++)
		if (strncmp(msg, prefixes[i], strlen(prefixes[i])) == 0)
			return true;
	return false;
}

/* The connection (NULL when there is none). */
PGconn *
ep_pq_conn(void)
{
	return conn;
}

/*
 * Whether retention is the daemons' job: a managed install (no extension,
 * so no in-server worker) whose schema has evpipe._retention_batch (0.4.0).
 */
bool
ep_pq_host_retention(void)
{
	return host_retention;
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
		copy_message(err, errlen, PQerrorMessage(conn));
		PQclear(res);
		return NULL;
	}
	return res;
}

/* Whether a version "major.minor[.patch]" is at least major.minor. */
static bool
version_at_least(const char *v, int major, int minor)
{
	int			ma = 0;
	int			mi = 0;

	if (sscanf(v, "%d.%d", &ma, &mi) < 1)
		return false;
	return ma > major || (ma == major && mi >= minor);
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
		bool		rejected = conn != NULL && options_rejected(conn);

		copy_message(err, errlen, conn ? PQerrorMessage(conn) : "out of memory");
		ep_pq_close();
		return rejected ? EP_PQ_MISCONFIGURED : EP_PQ_DOWN;
	}
	PQsetNoticeReceiver(conn, notice_receiver, NULL);

	/*
	 * The database must have evpipe 0.3.0 or later and the role must be a
	 * worker. Read from the catalogs, which need no privilege on the schema
	 * (a role without evpipe_worker has none).
	 */
	res = run_simple("SELECT EXISTS (SELECT 1 FROM pg_catalog.pg_class c"
					 "  JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace"
					 "  WHERE n.nspname = 'evpipe' AND c.relname = 'outbox'),"
					 " (SELECT extversion FROM pg_catalog.pg_extension WHERE extname = 'evpipe'),"
					 " (SELECT rolsuper FROM pg_catalog.pg_roles WHERE rolname = current_user)"
					 "  OR COALESCE(pg_catalog.pg_has_role(current_user, (SELECT oid FROM pg_catalog.pg_roles"
					 "   WHERE rolname = 'evpipe_worker'), 'USAGE'), false),"
					 " current_user, pg_catalog.current_database(),"
					 " EXISTS (SELECT FROM pg_catalog.pg_proc p JOIN pg_catalog.pg_namespace n ON n.oid = p.pronamespace"
					 "  WHERE n.nspname = 'evpipe' AND p.proname = '_retention_batch')",
					 PGRES_TUPLES_OK, err, errlen);
	if (res == NULL)
	{
		ep_pq_close();
		return EP_PQ_DOWN;
	}
	ok = false;
	if (strcmp(PQgetvalue(res, 0, 0), "t") != 0)
		snprintf(err, errlen, "database \"%s\" has no evpipe: run CREATE EXTENSION evpipe (or evpiped migrate) there, or point --dsn at the right database",
				 PQgetvalue(res, 0, 4));
	else if (!PQgetisnull(res, 0, 1) && !version_at_least(PQgetvalue(res, 0, 1), 0, 3))
		snprintf(err, errlen, "database \"%s\" has evpipe %s; evpiped needs 0.3.0 or later: run ALTER EXTENSION evpipe UPDATE there",
				 PQgetvalue(res, 0, 4), PQgetvalue(res, 0, 1));
	else if (strcmp(PQgetvalue(res, 0, 2), "t") != 0)
		snprintf(err, errlen, "role \"%s\" is not a member of evpipe_worker: run GRANT evpipe_worker TO \"%s\"",
				 PQgetvalue(res, 0, 3), PQgetvalue(res, 0, 3));
	else
		ok = true;
	managed_install = PQgetisnull(res, 0, 1);
	host_retention = managed_install && strcmp(PQgetvalue(res, 0, 5), "t") == 0;
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
 * Take the notifications the server sent: *wake (new rows) and *dests
 * (destinations changed). read: the socket is readable, read it first.
 * Without read this still takes the ones libpq has already read along
 * with a statement's answer: those never make the socket readable again.
 * False if the connection broke.
 */
bool
ep_pq_consume(bool read, bool *wake, bool *dests)
{
	PGnotify   *n;

	if (conn == NULL || (read && !PQconsumeInput(conn)))
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
	char		text[1024];
	int			code = ERRCODE_CONNECTION_FAILURE;

	if (state && strlen(state) == 5)
		code = MAKE_SQLSTATE(state[0], state[1], state[2], state[3], state[4]);
	copy_message(text, sizeof(text), msg ? msg : PQerrorMessage(conn));
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
ep_db_deliver_function(const char *dest, const char *event, int timeout_ms, bool *permanent)
{
	EpParam		params[2] = {{&dest, 1}, {&event, 1}};
	EpRows	   *rows;

	/*
	 * A managed install's handler runs in PL/pgSQL, which arms no timer: the
	 * call's statement_timeout is timeout_ms, set for it alone (the
	 * extension's handler.c times the handler itself).
	 */
	if (managed_install && timeout_ms > 0)
	{
		char		sql[96];
		char		msg[256];
		PGresult   *res;

		snprintf(sql, sizeof(sql), "SET LOCAL statement_timeout = %d", timeout_ms);
		if ((res = run_simple(sql, PGRES_COMMAND_OK, msg, sizeof(msg))) == NULL)
			ereport(ERROR,
					(errcode(ERRCODE_CONNECTION_FAILURE),
					 errmsg("evpiped: setting the handler's timeout failed: %s", msg)));
		PQclear(res);
	}
	rows = ep_db_exec(EP_SQL_DELIVER_FUNCTION, params);
	if (managed_install && timeout_ms > 0)
		PQclear(run_simple("SET LOCAL statement_timeout TO DEFAULT", PGRES_COMMAND_OK, NULL, 0));

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
