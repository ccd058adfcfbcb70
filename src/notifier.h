/*-------------------------------------------------------------------------
 *
 * notifier.h
 *	  The notifier background worker: NOTIFY evpipe_wake for evpiped
 *	  (notifier.c).
 *
 *-------------------------------------------------------------------------
 */
#ifndef EVPIPE_NOTIFIER_H
#define EVPIPE_NOTIFIER_H

#include "postgres.h"

extern void evpipe_notifier_register(void);
extern void evpipe_notifier_poke(void);
PGDLLEXPORT extern void evpipe_notifier_main(Datum arg);

#endif							/* EVPIPE_NOTIFIER_H */
