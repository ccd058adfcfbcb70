/*-------------------------------------------------------------------------
 *
 * httputil.h
 *	  HTTP helpers with no PostgreSQL dependency (fuzzable standalone).
 *
 *-------------------------------------------------------------------------
 */
#ifndef EVPIPE_HTTPUTIL_H
#define EVPIPE_HTTPUTIL_H

#define EP_RETRY_AFTER_MAX_S 86400L

extern long ep_parse_retry_after(const char *value, long now_epoch_s);
extern int	ep_http_status_transient(long status);

#endif							/* EVPIPE_HTTPUTIL_H */
