/*-------------------------------------------------------------------------
 *
 * daemonrt.h
 *	  evpiped's stand-in for the server's runtime (daemonrt.c).
 *
 *-------------------------------------------------------------------------
 */
#ifndef EVPIPE_DAEMONRT_H
#define EVPIPE_DAEMONRT_H

#include "postgres.h"

extern void ep_rt_init(void);
extern void ep_rt_set_verbose(bool verbose);
extern int	ep_rt_error_code(void);
extern MemoryContext ep_rt_chunk_context(void *pointer);

#endif							/* EVPIPE_DAEMONRT_H */
