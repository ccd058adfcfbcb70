/*-------------------------------------------------------------------------
 *
 * transport.c
 *	  Requests over libcurl's multi interface: a sliding window of up to
 *	  evpipe.max_in_flight transfers per worker, started at their rate-limit
 *	  times, each answer classified by its kind and settled (outcome.c).
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <curl/curl.h>

#include "mb/pg_wchar.h"
#include "utils/memutils.h"
#include "utils/resowner.h"
#include "utils/timestamp.h"

#include "engine.h"
#include "evpipe.h"
#include "netpolicy.h"
#include "ratelimit.h"

#define SETOPT(e, opt, val) \
	do { if (curl_easy_setopt((e), (opt), (val)) != CURLE_OK) ok = false; } while (0)

static void launch_request(DeliveryRequest *r);
static int	sock_cb(CURL *easy, curl_socket_t fd, int what, void *userp, void *socketp);
static int	timer_cb(CURLM *multi, long timeout_ms, void *userp);
/* Set up libcurl's multi handle and the socket table (once per worker). */
void
ep_transport_init(void)
{
	ep_worker.socks = MemoryContextAlloc(TopMemoryContext, sizeof(SockEntry) * EP_MAX_SOCKETS);
	if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK)
		ereport(FATAL, (errmsg("evpipe: could not initialise libcurl")));
	ep_worker.multi = curl_multi_init();
	if (ep_worker.multi == NULL ||
		curl_multi_setopt(ep_worker.multi, CURLMOPT_SOCKETFUNCTION, sock_cb) != CURLM_OK ||
		curl_multi_setopt(ep_worker.multi, CURLMOPT_TIMERFUNCTION, timer_cb) != CURLM_OK ||
		curl_multi_setopt(ep_worker.multi, CURLMOPT_MAXCONNECTS, (long) evpipe_max_in_flight * 2) != CURLM_OK)
		ereport(FATAL, (errmsg("evpipe: could not initialise a curl multi handle")));
}

/* curl socket callback: track which sockets to wait on. No palloc here. */
static int
sock_cb(CURL *easy, curl_socket_t fd, int what, void *userp, void *socketp)
{
	int			i;

	for (i = 0; i < ep_worker.nsocks; i++)
		if (ep_worker.socks[i].fd == fd)
			break;
	if (what == CURL_POLL_REMOVE)
	{
		if (i < ep_worker.nsocks)
		{
			ep_worker.socks[i] = ep_worker.socks[--ep_worker.nsocks];
			ep_worker.socks_changed = true;
		}
		return 0;
	}
	if (i == ep_worker.nsocks)
	{
		if (ep_worker.nsocks >= EP_MAX_SOCKETS)
			return -1;
		ep_worker.nsocks++;
		ep_worker.socks_changed = true;
	}
	else if (ep_worker.socks[i].fd != fd)
		ep_worker.socks_changed = true;
	ep_worker.socks[i].fd = fd;
	ep_worker.socks[i].what = what;
	return 0;
}

/* curl timer callback: when curl next needs a call without socket activity. */
static int
timer_cb(CURLM *multi, long timeout_ms, void *userp)
{
	ep_worker.curl_deadline = timeout_ms < 0 ? 0 :
		TimestampTzPlusMilliseconds(GetCurrentTimestamp(), timeout_ms);
	return 0;
}

/* Keep the first bytes of the answer. No palloc here. */
static size_t
write_cb(char *ptr, size_t size, size_t nmemb, void *userdata)
{
	DeliveryRequest *r = userdata;
	size_t		n = size * nmemb;
	size_t		room = EP_RESPONSE_MAX - r->response_len;

	if (n > room)
	{
		r->response_truncated = true;
		memcpy(r->response + r->response_len, ptr, room);
		r->response_len += room;
	}
	else
	{
		memcpy(r->response + r->response_len, ptr, n);
		r->response_len += n;
	}
	r->response[r->response_len] = '\0';
	return size * nmemb;
}

/* Keep the Retry-After and Content-Type headers. No palloc here. */
static size_t
header_cb(char *buf, size_t size, size_t nitems, void *userdata)
{
	DeliveryRequest *r = userdata;
	size_t		n = size * nitems;
	char	   *dst = NULL;
	size_t		dstlen = 0;
	size_t		skip = 0;

	if (n > 12 && pg_strncasecmp(buf, "retry-after:", 12) == 0)
	{
		dst = r->retry_after;
		dstlen = sizeof(r->retry_after);
		skip = 12;
	}
	else if (n > 13 && pg_strncasecmp(buf, "content-type:", 13) == 0)
	{
		dst = r->content_type;
		dstlen = sizeof(r->content_type);
		skip = 13;
	}
	if (dst)
	{
		size_t		len = n - skip;

		while (len > 0 && (buf[skip] == ' ' || buf[skip] == '\t'))
			skip++, len--;
		while (len > 0 && (buf[skip + len - 1] == '\r' ||
						   buf[skip + len - 1] == '\n' ||
						   buf[skip + len - 1] == ' '))
			len--;
		if (len >= dstlen)
			len = dstlen - 1;
		memcpy(dst, buf + skip, len);
		dst[len] = '\0';
	}
	return n;
}

/* Append a header to a request; false if curl could not. */
bool
ep_curl_header(DeliveryRequest *r, const char *fmt,...)
{
	char		buf[2048];
	va_list		ap;
	struct curl_slist *l;

	va_start(ap, fmt);
	vsnprintf(buf, sizeof(buf), fmt, ap);
	va_end(ap);
	l = curl_slist_append(r->headers, buf);
	if (l == NULL)
		return false;
	r->headers = l;
	return true;
}

/* Free a request and its curl handle. */
void
ep_request_free(DeliveryRequest *r)
{
	if (r->easy)
	{
		/* removing a handle that was never added fails harmlessly */
		if (ep_worker.multi)
			(void) curl_multi_remove_handle(ep_worker.multi, r->easy);
		curl_easy_cleanup(r->easy);
	}
	if (r->headers)
		curl_slist_free_all(r->headers);
	MemoryContextDelete(r->cxt);
}

/* Run a kind's build() with the worker's resource owner in place. */
static bool
build_request(const DeliveryKind *kind, DeliveryRequest *r, char *error,
			  size_t errlen)
{
	ResourceOwner save = CurrentResourceOwner;
	MemoryContext old = MemoryContextSwitchTo(r->cxt);	/* the body lives as
														 * long as the request */
	bool		ok;

	if (CurrentResourceOwner == NULL)
		CurrentResourceOwner = ep_worker.owner;
	ok = kind->build(r, error, errlen);
	CurrentResourceOwner = save;
	MemoryContextSwitchTo(old);
	return ok;
}

/*
 * Start an HTTP request for claimed items. On failure to build or start,
 * the items get outcomes at once.
 */
void
ep_start_request(DestConfig *d, const DeliveryKind *kind, DeliveryRequest *r,
				 TimestampTz start_at)
{
	char		error[512];
	bool		ok = true;
	int			i;

	r->easy = curl_easy_init();
	if (r->easy == NULL)
	{
		for (i = 0; i < r->nitems; i++)
		{
			ItemResult	res;

			ep_result_set(&res, false, false, 0, "could not create a curl handle");
			ep_settle_item(d, &r->items[i], &res, NULL, 0);
		}
		ep_request_free(r);
		return;
	}
	r->response = MemoryContextAlloc(r->cxt, EP_RESPONSE_MAX + 1);
	r->response[0] = '\0';
	error[0] = '\0';

	/* build() may hash (pg_hmac), which needs a resource owner */
	if (!build_request(kind, r, error, sizeof(error)))
	{
		for (i = 0; i < r->nitems; i++)
		{
			ItemResult	res;

			ep_result_set(&res, false, true, 0, "%s", error);
			ep_settle_item(d, &r->items[i], &res, NULL, 0);
		}
		ep_request_free(r);
		return;
	}
	/* (no "Expect:" here: curl 7.88's SigV4 signs it and then drops it) */
	ok = ok && ep_curl_header(r, "User-Agent: evpipe/0.2.0");
	SETOPT(r->easy, CURLOPT_POST, 1L);
	SETOPT(r->easy, CURLOPT_POSTFIELDS, r->body);
	SETOPT(r->easy, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t) r->body_len);
	SETOPT(r->easy, CURLOPT_HTTPHEADER, r->headers);
	SETOPT(r->easy, CURLOPT_TIMEOUT_MS, (long) d->timeout_ms);
	SETOPT(r->easy, CURLOPT_CONNECTTIMEOUT_MS, (long) Min(d->timeout_ms, 10000));
	SETOPT(r->easy, CURLOPT_NOSIGNAL, 1L);
	SETOPT(r->easy, CURLOPT_WRITEFUNCTION, write_cb);
	SETOPT(r->easy, CURLOPT_WRITEDATA, r);
	SETOPT(r->easy, CURLOPT_HEADERFUNCTION, header_cb);
	SETOPT(r->easy, CURLOPT_HEADERDATA, r);
	SETOPT(r->easy, CURLOPT_ERRORBUFFER, r->errbuf);
	SETOPT(r->easy, CURLOPT_PRIVATE, r);
	SETOPT(r->easy, CURLOPT_PROTOCOLS_STR, "http,https");
	SETOPT(r->easy, CURLOPT_FOLLOWLOCATION, d->follow_redirects ? 1L : 0L);
	SETOPT(r->easy, CURLOPT_REDIR_PROTOCOLS_STR, "http,https");
	SETOPT(r->easy, CURLOPT_MAXREDIRS, 5L);
	SETOPT(r->easy, CURLOPT_SSL_VERIFYPEER, d->tls_verify ? 1L : 0L);
	SETOPT(r->easy, CURLOPT_SSL_VERIFYHOST, d->tls_verify ? 2L : 0L);
	SETOPT(r->easy, CURLOPT_TCP_KEEPALIVE, 1L);
	SETOPT(r->easy, CURLOPT_TCP_NODELAY, 1L);
	/* every address curl connects to (redirects, proxies) meets the policy */
	SETOPT(r->easy, CURLOPT_OPENSOCKETFUNCTION, ep_netpolicy_opensocket);
	SETOPT(r->easy, CURLOPT_OPENSOCKETDATA, &r->netguard);
	SETOPT(r->easy, CURLOPT_FRESH_CONNECT, ep_netpolicy_fresh_connect());
	SETOPT(r->easy, CURLOPT_MAXLIFETIME_CONN, ep_netpolicy_max_lifetime());
	r->errbuf[0] = '\0';
	if (!ok)
	{
		for (i = 0; i < r->nitems; i++)
		{
			ItemResult	res;

			ep_result_set(&res, false, false, 0, "could not configure the request");
			ep_settle_item(d, &r->items[i], &res, NULL, 0);
		}
		ep_request_free(r);
		return;
	}
	ep_worker.nactive += r->nitems;
	d->in_flight += r->nitems;
	if (start_at > GetCurrentTimestamp())
	{
		r->start_at = start_at;
		dlist_push_tail(&ep_worker.scheduled, &r->node);
		return;
	}
	launch_request(r);
}

/* Hand a prepared request to curl. */
static void
launch_request(DeliveryRequest *r)
{
	CURLMcode	mrc;
	int			i;

	r->started = GetCurrentTimestamp();
	mrc = curl_multi_add_handle(ep_worker.multi, r->easy);
	if (mrc != CURLM_OK)
	{
		ep_worker.nactive -= r->nitems;
		if (r->dest)
			r->dest->in_flight -= r->nitems;
		for (i = 0; i < r->nitems; i++)
		{
			ItemResult	res;

			ep_result_set(&res, false, false, 0, "could not start the request: %s",
						  curl_multi_strerror(mrc));
			ep_settle_item(r->dest, &r->items[i], &res, NULL, 0);
		}
		ep_request_free(r);
		return;
	}
	dlist_push_tail(&ep_worker.active, &r->node);
}

/* Launch scheduled requests whose time has come; ms until the next one. */
long
ep_launch_due(void)
{
	dlist_mutable_iter iter;
	TimestampTz now = GetCurrentTimestamp();
	long		next = -1;

	dlist_foreach_modify(iter, &ep_worker.scheduled)
	{
		DeliveryRequest *r = dlist_container(DeliveryRequest, node, iter.cur);

		if (r->start_at <= now)
		{
			dlist_delete(&r->node);
			launch_request(r);
		}
		else
		{
			long		ms = (long) ((r->start_at - now + 999) / 1000);

			if (next < 0 || ms < next)
				next = ms;
		}
	}
	return next;
}

/* A printable excerpt of an answer for the dead-letter table. */
static char *
response_excerpt(DeliveryRequest *r)
{
	size_t		len = Min(r->response_len, EP_EXCERPT_MAX);
	char	   *s;
	size_t		i;

	if (len == 0)
		return NULL;
	/* do not cut a UTF-8 sequence */
	while (len > 0 && len < r->response_len &&
		   ((unsigned char) r->response[len] & 0xC0) == 0x80)
		len--;
	s = pnstrdup(r->response, len);
	for (i = 0; i < len; i++)
		if ((unsigned char) s[i] < 0x20 && s[i] != '\n' && s[i] != '\t')
			s[i] = ' ';
	if (pg_verifymbstr(s, len, true))
		return s;
	return pstrdup("(answer is not valid UTF-8)");
}

/*
 * After the host's wait: tell curl which of its sockets are ready (mask:
 * CURL_CSELECT_IN / OUT, from ready[i] for socks[i]; NULL: none) and
 * whether its timeout came, then handle what finished.
 */
void
ep_transport_drive(const int *ready)
{
	CURLMcode	mrc;
	int			running;
	int			i;
	int			n = ep_worker.nsocks;
	curl_socket_t fds[EP_MAX_SOCKETS];

	/* socket_action can change socks[]: act on a copy */
	for (i = 0; ready && i < n; i++)
		fds[i] = ep_worker.socks[i].fd;
	for (i = 0; ready && i < n; i++)
	{
		if (ready[i] == 0)
			continue;
		mrc = curl_multi_socket_action(ep_worker.multi, fds[i], ready[i], &running);
		if (mrc != CURLM_OK)
			ereport(LOG,
					(errmsg("evpipe: curl_multi_socket_action failed: %s",
							curl_multi_strerror(mrc))));
	}
	if (ep_worker.curl_deadline != 0 && GetCurrentTimestamp() >= ep_worker.curl_deadline)
	{
		ep_worker.curl_deadline = 0;
		mrc = curl_multi_socket_action(ep_worker.multi, CURL_SOCKET_TIMEOUT, 0, &running);
		if (mrc != CURLM_OK)
			ereport(LOG,
					(errmsg("evpipe: curl_multi_socket_action failed: %s",
							curl_multi_strerror(mrc))));
	}
	ep_collect_finished();
}

/* Handle every finished transfer. */
void
ep_collect_finished(void)
{
	CURLMsg    *msg;
	int			left;

	while ((msg = curl_multi_info_read(ep_worker.multi, &left)) != NULL)
	{
		DeliveryRequest *r = NULL;
		DestConfig *d;
		long		status = 0;
		long		retry_after_ms = -1;
		char	   *excerpt;
		int			i;

		if (msg->msg != CURLMSG_DONE)
			continue;
		if (curl_easy_getinfo(msg->easy_handle, CURLINFO_PRIVATE, (char **) &r) != CURLE_OK ||
			r == NULL)
			continue;
		dlist_delete(&r->node);
		ep_worker.nactive -= r->nitems;
		d = r->dest;
		if (d)
			d->in_flight -= r->nitems;

		if (msg->data.result == CURLE_OK &&
			curl_easy_getinfo(r->easy, CURLINFO_RESPONSE_CODE, &status) == CURLE_OK &&
			status > 0)
		{
			const DeliveryKind *kind = d ? d->ops : NULL;

			if (r->retry_after[0])
				retry_after_ms = ep_parse_retry_after(r->retry_after,
													  (long) time(NULL));
			if (kind)
				kind->classify(r, status);
			else
				for (i = 0; i < r->nitems; i++)
					ep_result_set(&r->results[i], false, false, (int) status,
								  "destination was changed while in flight");
			if (d && retry_after_ms > 0 && (status == 429 || status == 503))
			{
				if (ep_rate_paused_ms(d->slot) == 0)
					ereport(LOG,
							(errmsg("evpipe event=destination_paused destination=%s status=%ld pause_ms=%ld reason=retry_after",
									d->name, status, retry_after_ms),
							 errhidestmt(true)));
				ep_rate_pause(d->slot, retry_after_ms);
			}
		}
		else
		{
			CURLcode	rc = msg->data.result;

			/* the network policy refused the address: permanent, no evidence */
			bool		refused = (rc == CURLE_COULDNT_CONNECT &&
								   r->netguard.last_refused);
			const char *what = refused ? r->netguard.error :
				r->errbuf[0] ? r->errbuf : curl_easy_strerror(rc);
			bool		permanent = (refused || rc == CURLE_UNSUPPORTED_PROTOCOL ||
									 rc == CURLE_URL_MALFORMAT ||
									 rc == CURLE_TOO_MANY_REDIRECTS);

			/* no answer at all: evidence about the target, not the event */
			bool		unreachable = !refused && (rc == CURLE_COULDNT_CONNECT ||
									   rc == CURLE_COULDNT_RESOLVE_HOST ||
									   rc == CURLE_COULDNT_RESOLVE_PROXY);

			for (i = 0; i < r->nitems; i++)
			{
				ep_result_set(&r->results[i], false, permanent, 0, "%s%s",
							  rc == CURLE_OPERATION_TIMEDOUT ? "timeout: " : "",
							  what);
				r->results[i].unreachable = unreachable;
			}
		}

		excerpt = response_excerpt(r);
		for (i = 0; i < r->nitems; i++)
			ep_settle_item(d, &r->items[i], &r->results[i], excerpt,
						   r->results[i].status == 429 || r->results[i].status == 503 ?
						retry_after_ms : -1);
		ep_request_free(r);
	}
}

/* A new request for a destination, in its own memory context. */
DeliveryRequest *
ep_new_request(DestConfig *d, int nitems)
{
	MemoryContext cxt = AllocSetContextCreate(TopMemoryContext,
											  "evpipe request",
											  ALLOCSET_SMALL_SIZES);
	DeliveryRequest *r = MemoryContextAllocZero(cxt, sizeof(DeliveryRequest));

	r->cxt = cxt;
	r->dest = d;
	r->dest_name = MemoryContextStrdup(cxt, d->name);
	r->items = MemoryContextAllocZero(cxt, sizeof(DeliveryItem) * nitems);
	r->results = MemoryContextAllocZero(cxt, sizeof(ItemResult) * nitems);
	return r;
}

/* Copy an item into a request's context. */
void
ep_copy_item(DeliveryRequest *r, DeliveryItem *src)
{
	MemoryContext old = MemoryContextSwitchTo(r->cxt);

	ep_item_copy(&r->items[r->nitems++], src);
	MemoryContextSwitchTo(old);
}

/* Copy an item, its strings in the current memory context. */
void
ep_item_copy(DeliveryItem *dst, const DeliveryItem *src)
{
	*dst = *src;
#define COPY(f) dst->f = src->f ? pstrdup(src->f) : NULL
	COPY(event_id);
	COPY(body);
	COPY(payload);
	COPY(event_type);
	COPY(source);
	COPY(correlation_id);
	COPY(traceparent);
	COPY(timestamp);
	COPY(group);
#undef COPY
}
