/*-------------------------------------------------------------------------
 *
 * httputil.c
 *	  HTTP helpers with no PostgreSQL dependency (fuzzable standalone).
 *
 *-------------------------------------------------------------------------
 */
#include <ctype.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <curl/curl.h>

#include "httputil.h"

/*
 * Parse a Retry-After value: delta-seconds or an HTTP-date. Returns the
 * delay in milliseconds (0 for a date in the past), capped at one day, or
 * -1 if the value is not valid.
 */
long
ep_parse_retry_after(const char *value, long now_epoch_s)
{
	const char *p = value;
	char		buf[128];
	size_t		len;
	time_t		t;
	time_t		now = (time_t) now_epoch_s;
	long		secs = 0;

	if (value == NULL)
		return -1;
	while (*p == ' ' || *p == '\t')
		p++;
	len = strlen(p);
	while (len > 0 && (p[len - 1] == ' ' || p[len - 1] == '\t' ||
					   p[len - 1] == '\r' || p[len - 1] == '\n'))
		len--;
	if (len == 0 || len >= sizeof(buf))
		return -1;
	memcpy(buf, p, len);
	buf[len] = '\0';

	if (isdigit((unsigned char) buf[0]))
	{
		size_t		i;

		for (i = 0; i < len; i++)
		{
			if (!isdigit((unsigned char) buf[i]))
				break;
			if (secs < EP_RETRY_AFTER_MAX_S)
				secs = secs * 10 + (buf[i] - '0');
		}
		if (i == len)
		{
			if (secs > EP_RETRY_AFTER_MAX_S)
				secs = EP_RETRY_AFTER_MAX_S;
			return secs * 1000;
		}
		/* not all digits: fall through to the date parser */
	}
	/* HTTP-date: IMF-fixdate, RFC 850 or asctime; curl knows all three */
	if (!isalpha((unsigned char) buf[0]))
		return -1;
	t = curl_getdate(buf, &now);
	if (t == (time_t) -1)
		return -1;
	if (t <= now)
		return 0;
	if ((long long) t - (long long) now > EP_RETRY_AFTER_MAX_S)
		return (long) EP_RETRY_AFTER_MAX_S * 1000;
	return (long) (t - now) * 1000;
}

/* Whether an HTTP status is worth retrying: 408, 429 and 5xx. */
int
ep_http_status_transient(long status)
{
	return status == 408 || status == 429 || (status >= 500 && status <= 599);
}
