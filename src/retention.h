/*-------------------------------------------------------------------------
 *
 * retention.h
 *	  Removing old events and delivered rows in small, short transactions.
 *
 *-------------------------------------------------------------------------
 */
#ifndef EVPIPE_RETENTION_H
#define EVPIPE_RETENTION_H

#include "postgres.h"

#include <signal.h>

#include "utils/timestamp.h"

/* Rows removed per transaction, at most. */
#define EP_RETENTION_BATCH 1000

extern bool ep_retention_due(TimestampTz now);
extern void ep_retention_run(volatile sig_atomic_t *stop);

#endif							/* EVPIPE_RETENTION_H */
