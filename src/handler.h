/*-------------------------------------------------------------------------
 *
 * handler.h
 *	  Function destinations' handlers, run in the server (handler.c).
 *
 *-------------------------------------------------------------------------
 */
#ifndef EVPIPE_HANDLER_H
#define EVPIPE_HANDLER_H

#include "postgres.h"

#include "utils/jsonb.h"

extern char *evpipe_handler_deliver(const char *dest, Jsonb *event, bool *permanent);

#endif							/* EVPIPE_HANDLER_H */
