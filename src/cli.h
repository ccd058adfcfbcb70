/*-------------------------------------------------------------------------
 *
 * cli.h
 *	  evpiped's command lines (run, migrate): options written --flag,
 *	  --flag VALUE or --flag=VALUE, from a table of the command's options.
 *
 *-------------------------------------------------------------------------
 */
#ifndef EVPIPE_CLI_H
#define EVPIPE_CLI_H

#include <stdbool.h>

/* One option of a command: its name ("--dsn") and whether it takes a value. */
typedef struct EpCliOption
{
	const char *name;
	bool		has_value;
} EpCliOption;

/*
 * The option at argv[*i] (NULL-named entry ends opts): its index in opts,
 * *i moved past its value, *val its value (NULL for a switch). A word that
 * is no option, an unknown option or a missing value prints one line,
 * prefixed by prog ("evpiped", "evpiped migrate"), and exits 2.
 */
extern int	ep_cli_option(int argc, char **argv, int *i, const EpCliOption *opts,
						  const char **val, const char *prog);

#endif							/* EVPIPE_CLI_H */
