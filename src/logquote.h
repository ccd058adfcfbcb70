/*-------------------------------------------------------------------------
 *
 * logquote.h
 *	  Values for the key="value" fields of evpipe's log lines (logquote.c),
 *	  shared by both hosts.
 *
 *-------------------------------------------------------------------------
 */
#ifndef EVPIPE_LOGQUOTE_H
#define EVPIPE_LOGQUOTE_H

#include "postgres.h"

extern char *ep_log_quote(const char *s);

#endif							/* EVPIPE_LOGQUOTE_H */
