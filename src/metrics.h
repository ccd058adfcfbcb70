/*-------------------------------------------------------------------------
 *
 * metrics.h
 *	  Counters in shared memory for evpipe.metrics().
 *
 *-------------------------------------------------------------------------
 */
#ifndef EVPIPE_METRICS_H
#define EVPIPE_METRICS_H

#include "postgres.h"

#include "lib/stringinfo.h"

/* kinds of slot, and their labels */
#define EP_MK_INGEST 'I'		/* a = event type */
#define EP_MK_REJECT 'R'		/* a = reason */
#define EP_MK_THROTTLE 'T'		/* a = source */
#define EP_MK_DELIVERY 'D'		/* a = destination, b = event type */

/* counters of a slot */
#define EP_M_INGESTED 0
#define EP_M_DUPLICATE 1
#define EP_M_DELIVERED 0
#define EP_M_RETRIED 1
#define EP_M_DEAD 2
#define EP_M_NCOUNTERS 3

extern Size ep_metrics_shmem_size(void);
extern void ep_metrics_shmem_init(void *base, bool found);
extern void ep_metric_add(char kind, const char *a, const char *b, int counter,
						  uint64 n);
extern void ep_metric_latency(const char *dest, const char *type, int64 usecs);
extern void ep_metrics_render(StringInfo out, bool gauges);

#endif							/* EVPIPE_METRICS_H */
