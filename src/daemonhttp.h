/*-------------------------------------------------------------------------
 *
 * daemonhttp.h
 *	  evpiped's /metrics and /healthz endpoint (daemonhttp.c).
 *
 *-------------------------------------------------------------------------
 */
#ifndef EVPIPE_DAEMONHTTP_H
#define EVPIPE_DAEMONHTTP_H

#include "postgres.h"

#include <poll.h>

#include "lib/stringinfo.h"

/* What the endpoint answers with. */
typedef struct EpHttpHandlers
{
	void		(*metrics) (StringInfo out);
	bool		(*healthy) (void);
} EpHttpHandlers;

extern bool ep_http_listen(const char *addr, char *err, size_t errlen);
extern int	ep_http_pollfds(struct pollfd *fds, int max);
extern void ep_http_handle(const struct pollfd *fds, int n, const EpHttpHandlers *h);

#endif							/* EVPIPE_DAEMONHTTP_H */
