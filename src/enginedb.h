/*-------------------------------------------------------------------------
 *
 * enginedb.h
 *	  The delivery engine's database, as its host supplies it. The engine
 *	  (claim.c, outcome.c, destination.c) names a statement from the table
 *	  in enginesql.c, one SQL text for every host, and passes typed C
 *	  values; the host runs it (SPI inside the server: hostspi.c) and
 *	  answers with rows of text, copied out of the host's own buffers, so
 *	  a statement run while the engine reads the rows of another (a
 *	  function destination's handler) cannot overwrite them.
 *
 *-------------------------------------------------------------------------
 */
#ifndef EVPIPE_ENGINEDB_H
#define EVPIPE_ENGINEDB_H

#include "postgres.h"

#include "utils/timestamp.h"

/* the class of the advisory lock each lease holder holds (see EP_SQL_RELEASE) */
#define EP_LEASE_LOCK_CLASS 1702260841

/* rows EP_SQL_EXPIRE leases at most per run */
#define EP_EXPIRE_BATCH 1000

/* The statements the engine runs. */
typedef enum EpStmt
{
	EP_SQL_CLAIM,				/* lease due rows per destination */
	EP_SQL_CLAIM_ORDERED,		/* the same, heads of ordering keys only */
	EP_SQL_OUTCOMES,			/* record finished attempts */
	EP_SQL_OUTCOMES_ORDERED,	/* the same, dead letters keep their key */
	EP_SQL_EMIT_OUTCOME,		/* ingest one outcome event */
	EP_SQL_EXPIRE,				/* lease rows past max_age_ms */
	EP_SQL_RELEASE,				/* release leases of processes that are gone */
	EP_SQL_DESTINATIONS,		/* every destination, its config as text */
	EP_SQL_HOLD_LEASE,			/* take the lease holder's advisory lock */
	EP_SQL_RELEASE_MINE,		/* release own leases not in flight */
	EP_SQL_RATE_LOCK,			/* lock and read shared rate schedules */
	EP_SQL_RATE_SET,			/* store them */
	EP_SQL_HAS_RATE_SCHEDULE,	/* whether the schema has them (0.3.0) */
	EP_SQL_DELIVER_FUNCTION,	/* run a function destination's handler */
	EP_SQL_GAUGES,				/* per destination: pending, in flight, age */
	EP_SQL_RETENTION,			/* one retention batch (managed install) */
	EP_SQL_COUNT
} EpStmt;

/* A parameter's type: a scalar or a one-dimensional array. */
typedef enum EpParamType
{
	EP_TEXT,
	EP_INT4,
	EP_BOOL,
	EP_TEXT_ARRAY,
	EP_INT4_ARRAY,
	EP_INT8_ARRAY,
	EP_BOOL_ARRAY,
	EP_TIMESTAMPTZ_ARRAY
} EpParamType;

/*
 * A parameter's value. Scalars: v points at one char * / int32 / bool.
 * Arrays: n elements of char * / int32 / int64 / bool / TimestampTz.
 * isnull (n flags, or one for a scalar) may be NULL: nothing is null.
 */
typedef struct EpParam
{
	const void *v;
	int			n;
	const bool *isnull;
} EpParam;

/* A statement's SQL and how to run it. */
typedef struct EpStmtDef
{
	const char *name;			/* for messages */
	int			nparams;
	const EpParamType *types;
	bool		index_scans_only;	/* plan it with index scans and nested loops only */
	bool		read_only;
	bool		latest_snapshot;	/* see what committed just now (configuration) */
} EpStmtDef;

/* A statement's answer: rows of text cells (NULL for SQL null). */
typedef struct EpRows
{
	uint64		processed;		/* rows returned, or touched without RETURNING */
	int			ncols;
	char	  **cells;			/* processed * ncols */
} EpRows;

/* enginesql.c */
extern const EpStmtDef ep_stmts[EP_SQL_COUNT];
extern const char *ep_stmt_sql(EpStmt stmt);
extern Oid	ep_param_oid(EpParamType t);

/* supplied by the host */
extern EpRows *ep_db_exec(EpStmt stmt, const EpParam *params);
extern bool ep_db_has_ordering(void);
/*
 * Run a function destination's handler with one event: NULL, or its error.
 * timeout_ms is the destination's, for a host whose server cannot time the
 * handler itself (a managed install; the extension's handler.c does).
 */
extern char *ep_db_deliver_function(const char *dest, const char *event,
									int timeout_ms, bool *permanent);

/* A row's cell: text, or NULL. */
static inline const char *
ep_cell(const EpRows *rows, uint64 row, int col)
{
	return rows->cells[row * rows->ncols + col];
}

/* A cell as an integer; dflt when NULL. */
static inline int64
ep_cell_int(const EpRows *rows, uint64 row, int col, int64 dflt)
{
	const char *c = ep_cell(rows, row, col);

	return c ? strtoll(c, NULL, 10) : dflt;
}

#endif							/* EVPIPE_ENGINEDB_H */
