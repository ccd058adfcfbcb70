/*-------------------------------------------------------------------------
 *
 * hostpq.h
 *	  evpiped's connection to the database (hostpq.c), beyond enginedb.h.
 *
 *-------------------------------------------------------------------------
 */
#ifndef EVPIPE_HOSTPQ_H
#define EVPIPE_HOSTPQ_H

#include "postgres.h"

#include "libpq-fe.h"

typedef enum EpPqStatus
{
	EP_PQ_OK,
	EP_PQ_DOWN,					/* no connection now: try again later */
	EP_PQ_MISCONFIGURED			/* the database or role cannot serve */
} EpPqStatus;

extern char *ep_pq_check_conninfo(const char *conninfo);
extern EpPqStatus ep_pq_connect(const char *conninfo, char *err, size_t errlen);
extern void ep_pq_close(void);
extern bool ep_pq_connected(void);
extern bool ep_pq_host_retention(void);
extern PGconn *ep_pq_conn(void);
extern bool ep_pq_consume(bool read, bool *wake, bool *dests);
extern void ep_pq_abort(void);

#endif							/* EVPIPE_HOSTPQ_H */
