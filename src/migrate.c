/*-------------------------------------------------------------------------
 *
 * migrate.c
 *	  `evpiped migrate`: install evpipe's managed schema into a database,
 *	  or upgrade it to this evpiped's version, one step per transaction,
 *	  each recorded in evpipe.migrations. A second run changes nothing.
 *	  Needs no superuser: a database owner with CREATEROLE (or with the
 *	  three evpipe roles created beforehand) is enough. It refuses, with
 *	  nothing changed, a database that has the C extension, a schema it did
 *	  not install, a schema newer than itself and a role that lacks what
 *	  the step needs.
 *
 *	  Plain libpq: it runs before anything of the delivery engine.
 *
 *-------------------------------------------------------------------------
 */
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>

#include "libpq-fe.h"

#include "cli.h"
#include "migrate.h"

/* The command line of migrate. */
typedef struct MigrateOptions
{
	const char *dsn;
	const char *to;
	bool		dry_run;
} MigrateOptions;

/* What the database has now. */
typedef struct DbState
{
	char		extversion[64];	/* the C extension's version, or "" */
	bool		has_schema;
	bool		has_table;		/* evpipe.migrations */
	bool		owns_schema;	/* current_user is (a member of) its owner */
	char		schema_owner[128];
	bool		can_create;		/* CREATE on the database */
	bool		can_create_roles;
	int			missing_roles;	/* of the three evpipe roles */
	char		user[128];
	char		database[128];
	bool		can_read;		/* may read evpipe.migrations */
	char		version[64];	/* the managed install's, or "" */
} DbState;

/* "a.b.c" as one comparable number; -1 if it is not one. */
static long
version_key(const char *v)
{
	int			a,
				b,
				c;
	char		rest;

	if (v == NULL || sscanf(v, "%d.%d.%d%c", &a, &b, &c, &rest) != 3)
		return -1;
	return (long) a * 1000000 + (long) b * 1000 + c;
}

/* The newest version this evpiped installs. */
static const char *
latest_version(void)
{
	const char *v = NULL;

	for (const EpMigration *m = ep_migrations; m->to != NULL; m++)
		if (v == NULL || version_key(m->to) > version_key(v))
			v = m->to;
	return v;
}

/* The fresh-install step of a version, or NULL. */
static const EpMigration *
full_step(const char *to)
{
	for (const EpMigration *m = ep_migrations; m->to != NULL; m++)
		if (m->from == NULL && strcmp(m->to, to) == 0)
			return m;
	return NULL;
}

/* The upgrade step from a version, or NULL. */
static const EpMigration *
upgrade_step(const char *from)
{
	for (const EpMigration *m = ep_migrations; m->to != NULL; m++)
		if (m->from != NULL && strcmp(m->from, from) == 0)
			return m;
	return NULL;
}

/* Stop with one line on stderr: nothing was changed. */
static void refuse(PGconn *conn, const char *fmt, ...) __attribute__((format(printf, 2, 3), noreturn));

static void
refuse(PGconn *conn, const char *fmt, ...)
{
	va_list		ap;

	fprintf(stderr, "evpiped migrate: ");
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fprintf(stderr, "\n");
	if (conn)
		PQfinish(conn);
	exit(1);
}

/* Exit on a usage error. */
static void
usage_error(const char *fmt, const char *arg)
{
	fprintf(stderr, "evpiped migrate: ");
	fprintf(stderr, fmt, arg);
	fprintf(stderr, " (see evpiped --help)\n");
	exit(2);
}

/* The first line of a libpq error message. */
static const char *
first_line(const char *msg, char *buf, size_t len)
{
	size_t		n = strcspn(msg, "\n");

	if (n >= len)
		n = len - 1;
	memcpy(buf, msg, n);
	buf[n] = '\0';
	return buf;
}

/* A result's error: message, and detail when there is one, on one line. */
static const char *
result_error(PGresult *res, PGconn *conn, char *buf, size_t len)
{
	const char *msg = res ? PQresultErrorField(res, PG_DIAG_MESSAGE_PRIMARY) : NULL;
	const char *detail = res ? PQresultErrorField(res, PG_DIAG_MESSAGE_DETAIL) : NULL;
	char		line[512];

	if (msg == NULL)
		return first_line(PQerrorMessage(conn), buf, len);
	if (detail)
		snprintf(buf, len, "%s (%s)", msg, first_line(detail, line, sizeof(line)));
	else
		snprintf(buf, len, "%s", msg);
	return buf;
}

/* Run a statement that must succeed; NULL (and *why) if it failed. */
static PGresult *
run(PGconn *conn, const char *sql, ExecStatusType want, char *why, size_t whylen)
{
	PGresult   *res = PQexec(conn, sql);

	if (res == NULL || PQresultStatus(res) != want)
	{
		result_error(res, conn, why, whylen);
		PQclear(res);
		return NULL;
	}
	return res;
}

/* Copy a result field, "" when NULL. */
static void
field(PGresult *res, int col, char *dst, size_t len)
{
	if (PQgetisnull(res, 0, col))
		dst[0] = '\0';
	else
		snprintf(dst, len, "%s", PQgetvalue(res, 0, col));
}

/* Read what the database has: extension, schema, privileges, version. */
static void
read_state(PGconn *conn, DbState *st)
{
	char		why[1024];
	char		b[8];
	PGresult   *res;

	res = run(conn,
			  "SELECT (SELECT extversion FROM pg_catalog.pg_extension WHERE extname = 'evpipe'),"
			  " n.oid IS NOT NULL,"
			  " EXISTS (SELECT FROM pg_catalog.pg_class c WHERE c.relnamespace = n.oid AND c.relname = 'migrations'),"
			  " n.oid IS NOT NULL AND pg_catalog.pg_has_role(current_user, n.nspowner, 'USAGE'),"
			  " pg_catalog.pg_get_userbyid(n.nspowner),"
			  " pg_catalog.has_database_privilege(pg_catalog.current_database(), 'CREATE'),"
			  " (SELECT rolsuper OR rolcreaterole FROM pg_catalog.pg_roles WHERE rolname = current_user),"
			  " 3 - (SELECT count(*) FROM pg_catalog.pg_roles"
			  "  WHERE rolname IN ('evpipe_producer', 'evpipe_admin', 'evpipe_worker'))::int,"
			  " current_user, pg_catalog.current_database(),"
			  " pg_catalog.has_schema_privilege(n.oid, 'USAGE') AND (SELECT pg_catalog.has_table_privilege(c.oid, 'SELECT')"
			  "  FROM pg_catalog.pg_class c WHERE c.relnamespace = n.oid AND c.relname = 'migrations')"
			  " FROM (SELECT 1) one LEFT JOIN pg_catalog.pg_namespace n ON n.nspname = 'evpipe'",
			  PGRES_TUPLES_OK, why, sizeof(why));
	if (res == NULL)
		refuse(conn, "reading the database's state failed: %s", why);
	field(res, 0, st->extversion, sizeof(st->extversion));
	st->has_schema = strcmp(PQgetvalue(res, 0, 1), "t") == 0;
	st->has_table = strcmp(PQgetvalue(res, 0, 2), "t") == 0;
	st->owns_schema = strcmp(PQgetvalue(res, 0, 3), "t") == 0;
	field(res, 4, st->schema_owner, sizeof(st->schema_owner));
	st->can_create = strcmp(PQgetvalue(res, 0, 5), "t") == 0;
	st->can_create_roles = strcmp(PQgetvalue(res, 0, 6), "t") == 0;
	field(res, 7, b, sizeof(b));
	st->missing_roles = atoi(b);
	field(res, 8, st->user, sizeof(st->user));
	field(res, 9, st->database, sizeof(st->database));

	st->can_read = strcmp(PQgetvalue(res, 0, 10), "t") == 0;
	PQclear(res);

	st->version[0] = '\0';
	if (st->has_table && !st->can_read && !st->owns_schema)
		refuse(conn, "role \"%s\" does not own schema evpipe (its owner is \"%s\"): run migrate as that role; nothing changed",
			   st->user, st->schema_owner);
	if (st->has_table)
	{
		res = run(conn, "SELECT version FROM evpipe.migrations", PGRES_TUPLES_OK, why, sizeof(why));
		if (res == NULL)
			refuse(conn, "reading evpipe.migrations failed: %s", why);
		for (int i = 0; i < PQntuples(res); i++)
		{
			const char *v = PQgetvalue(res, i, 0);

			if (st->version[0] == '\0' || version_key(v) > version_key(st->version))
				snprintf(st->version, sizeof(st->version), "%s", v);
		}
		PQclear(res);
	}
}

/* Seconds since t0. */
static double
elapsed(struct timeval *t0)
{
	struct timeval t;

	gettimeofday(&t, NULL);
	return (t.tv_sec - t0->tv_sec) + (t.tv_usec - t0->tv_usec) / 1e6;
}

/*
 * Apply one step in one transaction: under the migrate lock, re-read the
 * version (another migrate may have been first), run the script, record it.
 * false if it was already applied.
 */
static bool
apply_step(PGconn *conn, const EpMigration *m, const DbState *st)
{
	char		why[1024];
	char		sql[256];
	PGresult   *res;
	struct timeval t0;

	gettimeofday(&t0, NULL);
	if ((res = run(conn, "BEGIN", PGRES_COMMAND_OK, why, sizeof(why))) == NULL)
		refuse(conn, "%s", why);
	PQclear(res);
	res = run(conn, "SET LOCAL client_min_messages = warning;"
			  " SELECT pg_catalog.pg_advisory_xact_lock(pg_catalog.hashtext('evpiped migrate'))",
			  PGRES_TUPLES_OK, why, sizeof(why));
	if (res == NULL)
		refuse(conn, "taking the migrate lock failed: %s; nothing changed", why);
	PQclear(res);
	/* another migrate may have applied it while this one waited */
	res = run(conn, "SELECT pg_catalog.to_regclass('evpipe.migrations') IS NOT NULL"
			  " AND (SELECT 1 FROM pg_catalog.pg_namespace WHERE nspname = 'evpipe') IS NOT NULL",
			  PGRES_TUPLES_OK, why, sizeof(why));
	if (res == NULL)
		refuse(conn, "%s", why);
	if (strcmp(PQgetvalue(res, 0, 0), "t") == 0)
	{
		const char *params[1] = {m->to};
		PGresult   *done;

		PQclear(res);
		done = PQexecParams(conn, "SELECT 1 FROM evpipe.migrations WHERE version = $1",
							1, NULL, params, NULL, NULL, 0);
		if (done == NULL || PQresultStatus(done) != PGRES_TUPLES_OK)
			refuse(conn, "reading evpipe.migrations failed: %s", result_error(done, conn, why, sizeof(why)));
		if (PQntuples(done) > 0)
		{
			PQclear(done);
			res = PQexec(conn, "ROLLBACK");
			PQclear(res);
			printf("evpiped migrate: database \"%s\": %s was applied meanwhile by another migrate\n",
				   st->database, m->to);
			return false;
		}
		PQclear(done);
	}
	else
		PQclear(res);

	res = PQexec(conn, m->sql);
	if (res == NULL || PQresultStatus(res) != PGRES_COMMAND_OK)
	{
		result_error(res, conn, why, sizeof(why));
		PQclear(res);
		res = PQexec(conn, "ROLLBACK");
		PQclear(res);
		if (m->from)
			refuse(conn, "upgrading %s -> %s failed: %s; this step changed nothing", m->from, m->to, why);
		refuse(conn, "installing %s failed: %s; nothing changed", m->to, why);
	}
	PQclear(res);
	snprintf(sql, sizeof(sql),
			 "INSERT INTO evpipe.migrations (version, step) VALUES ('%s', '%s')",
			 m->to, m->from ? "upgrade" : "install");
	if ((res = run(conn, sql, PGRES_COMMAND_OK, why, sizeof(why))) == NULL)
		refuse(conn, "recording %s failed: %s", m->to, why);
	PQclear(res);
	if ((res = run(conn, "COMMIT", PGRES_COMMAND_OK, why, sizeof(why))) == NULL)
		refuse(conn, "committing %s failed: %s", m->to, why);
	PQclear(res);
	if (m->from)
		printf("evpiped migrate: database \"%s\": upgraded evpipe %s -> %s (%.2f s)\n",
			   st->database, m->from, m->to, elapsed(&t0));
	else
		printf("evpiped migrate: database \"%s\": installed evpipe %s (%.2f s)\n",
			   st->database, m->to, elapsed(&t0));
	fflush(stdout);
	return true;
}

/* The options of "migrate". */
enum
{
	OPT_DSN,
	OPT_TO,
	OPT_DRY_RUN
};
static const EpCliOption migrate_options[] = {
	[OPT_DSN] = {"--dsn", true},
	[OPT_TO] = {"--to", true},
	[OPT_DRY_RUN] = {"--dry-run", false},
	{NULL, false}
};

/* Parse the command line of "migrate". */
static void
parse_options(int argc, char **argv, MigrateOptions *o)
{
	for (int i = 2; i < argc; i++)
	{
		const char *val;

		switch (ep_cli_option(argc, argv, &i, migrate_options, &val, "evpiped migrate"))
		{
			case OPT_DSN:
				o->dsn = val;
				break;
			case OPT_TO:
				o->to = val;
				break;
			case OPT_DRY_RUN:
				o->dry_run = true;
				break;
		}
	}
}

/* Connect as libpq's environment and the DSN say; exits on failure. */
static PGconn *
connect_db(const char *dsn)
{
	const char *keys[] = {"dbname", "application_name", NULL};
	const char *vals[] = {dsn ? dsn : "", "evpiped migrate", NULL};
	char		*bad = NULL;
	PQconninfoOption *parsed;
	PGconn	   *conn;
	char		line[512];

	if (dsn && (parsed = PQconninfoParse(dsn, &bad)) == NULL)
	{
		fprintf(stderr, "evpiped migrate: --dsn cannot be parsed: %s\n",
				bad ? first_line(bad, line, sizeof(line)) : "out of memory");
		PQfreemem(bad);
		exit(1);
	}
	if (dsn)
		PQconninfoFree(parsed);
	conn = PQconnectdbParams(keys, vals, 1);
	if (conn == NULL)
		refuse(NULL, "out of memory");
	if (PQstatus(conn) != CONNECTION_OK)
		refuse(conn, "cannot connect: %s", first_line(PQerrorMessage(conn), line, sizeof(line)));
	return conn;
}

int
ep_migrate_main(int argc, char **argv)
{
	MigrateOptions o = {0};
	const char *target;
	const char *latest = latest_version();
	const EpMigration *plan[64];
	int			nplan = 0;
	DbState		st;
	PGconn	   *conn;
	int			applied = 0;

	parse_options(argc, argv, &o);
	target = o.to ? o.to : latest;
	if (version_key(target) < 0 || (full_step(target) == NULL && o.to))
		usage_error("--to: evpiped installs no version \"%s\"", target);

	conn = connect_db(o.dsn);
	if (PQserverVersion(conn) < 150000)
		refuse(conn, "the server is PostgreSQL %d; the managed install needs 15 or later; nothing changed",
			   PQserverVersion(conn) / 10000);
	memset(&st, 0, sizeof(st));
	read_state(conn, &st);

	if (st.extversion[0] != '\0')
		refuse(conn, "database \"%s\" has the evpipe extension %s (in C): the managed install is for servers that load no C; nothing changed (evpiped run delivers for it as it is)",
			   st.database, st.extversion);
	if (st.has_schema && !st.has_table)
		refuse(conn, "database \"%s\" has a schema evpipe that evpiped migrate did not install (no evpipe.migrations); nothing changed",
			   st.database);
	if (st.version[0] != '\0' && version_key(st.version) > version_key(latest))
		refuse(conn, "database \"%s\" has evpipe %s, newer than this evpiped (%s): use evpiped %s or later; nothing changed (no downgrade)",
			   st.database, st.version, latest, st.version);
	if (st.version[0] != '\0' && version_key(target) < version_key(st.version))
		refuse(conn, "database \"%s\" has evpipe %s, newer than --to %s: evpiped migrate does not downgrade; nothing changed",
			   st.database, st.version, target);
	if (st.version[0] != '\0' && strcmp(st.version, target) == 0)
	{
		printf("evpiped migrate: database \"%s\" has evpipe %s (managed): up to date, nothing to do\n",
			   st.database, st.version);
		PQfinish(conn);
		return 0;
	}

	/* the steps, and what they need */
	if (st.version[0] == '\0')
	{
		if (!st.can_create)
			refuse(conn, "role \"%s\" may not create schemas in database \"%s\": run it as the database owner, or GRANT CREATE ON DATABASE \"%s\" TO \"%s\"; nothing changed",
				   st.user, st.database, st.database, st.user);
		if (st.missing_roles > 0 && !st.can_create_roles)
			refuse(conn, "role \"%s\" cannot create the roles evpipe_producer, evpipe_admin and evpipe_worker: give it CREATEROLE, or have them created first (CREATE ROLE ... NOLOGIN); nothing changed",
				   st.user);
		plan[nplan++] = full_step(target);
	}
	else
	{
		const char *v = st.version;

		if (!st.owns_schema)
			refuse(conn, "role \"%s\" does not own schema evpipe (its owner is \"%s\"): run migrate as that role; nothing changed",
				   st.user, st.schema_owner);
		while (strcmp(v, target) != 0)
		{
			const EpMigration *m = upgrade_step(v);

			if (m == NULL || nplan == (int) (sizeof(plan) / sizeof(plan[0])))
				refuse(conn, "evpiped has no upgrade from evpipe %s; nothing changed", v);
			plan[nplan++] = m;
			v = m->to;
		}
	}

	if (o.dry_run)
	{
		for (int i = 0; i < nplan; i++)
			if (plan[i]->from)
				printf("evpiped migrate: database \"%s\": would upgrade evpipe %s -> %s\n",
					   st.database, plan[i]->from, plan[i]->to);
			else
				printf("evpiped migrate: database \"%s\": would install evpipe %s\n",
					   st.database, plan[i]->to);
		PQfinish(conn);
		return 0;
	}
	for (int i = 0; i < nplan; i++)
		applied += apply_step(conn, plan[i], &st) ? 1 : 0;
	printf("evpiped migrate: database \"%s\" has evpipe %s (managed): %d step%s applied\n",
		   st.database, target, applied, applied == 1 ? "" : "s");
	PQfinish(conn);
	return 0;
}
