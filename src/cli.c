/*-------------------------------------------------------------------------
 *
 * cli.c
 *	  evpiped's command lines: one option at a time, from the command's
 *	  table of options (see cli.h). Plain C, no server runtime.
 *
 *-------------------------------------------------------------------------
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"

/* Exit on a usage error, with one line. */
static void
usage_error(const char *prog, const char *what, const char *arg)
{
	fprintf(stderr, "%s: %s%s (see evpiped --help)\n", prog, what, arg);
	exit(2);
}

/* The option at argv[*i], its value, or an exit with a usage error. */
int
ep_cli_option(int argc, char **argv, int *i, const EpCliOption *opts,
			  const char **val, const char *prog)
{
	const char *a = argv[*i];
	const char *eq = strchr(a, '=');
	char		flag[64];
	int			k;

	*val = NULL;
	if (strncmp(a, "--", 2) != 0)
	{
		fprintf(stderr, "%s: unexpected argument \"%s\" (see evpiped --help)\n", prog, a);
		exit(2);
	}
	if (eq && (size_t) (eq - a) < sizeof(flag))
	{
		memcpy(flag, a, eq - a);
		flag[eq - a] = '\0';
		*val = eq + 1;
	}
	else
		snprintf(flag, sizeof(flag), "%s", a);
	for (k = 0; opts[k].name != NULL; k++)
		if (strcmp(flag, opts[k].name) == 0)
			break;
	if (opts[k].name == NULL || (!opts[k].has_value && *val != NULL))
		usage_error(prog, "unknown option ", flag);
	if (opts[k].has_value && *val == NULL)
	{
		if (*i + 1 >= argc)
		{
			fprintf(stderr, "%s: option %s needs a value (see evpiped --help)\n", prog, flag);
			exit(2);
		}
		*val = argv[++*i];
	}
	return k;
}
