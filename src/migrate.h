/*-------------------------------------------------------------------------
 *
 * migrate.h
 *	  `evpiped migrate`: the managed install (evpipe in plain SQL and
 *	  PL/pgSQL, for servers that load no C) installed and upgraded over
 *	  libpq. The scripts are generated from the extension's by
 *	  sql/managed/generate and embedded in evpiped (migrations.c).
 *
 *-------------------------------------------------------------------------
 */
#ifndef EVPIPE_MIGRATE_H
#define EVPIPE_MIGRATE_H

#include <stddef.h>

/* One step: a fresh install of `to` (from NULL) or an upgrade from -> to. */
typedef struct EpMigration
{
	const char *from;
	const char *to;
	const char *sql;
} EpMigration;

/* The steps, oldest first, ended by an all-NULL entry (migrations.c). */
extern const EpMigration ep_migrations[];

/* `evpiped migrate [--dsn CONNINFO] [--to VERSION] [--dry-run]`: exit code. */
extern int	ep_migrate_main(int argc, char **argv);

#endif							/* EVPIPE_MIGRATE_H */
