/*-------------------------------------------------------------------------
 *
 * http.c
 *	  The http destination kind: POST the canonical envelope as JSON with an
 *	  Idempotency-Key and the Standard Webhooks headers.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <time.h>

#include "common/base64.h"
#include "common/hmac.h"
#include "common/sha2.h"

#include "delivery.h"

/*
 * Standard Webhooks signature: v1,<base64 of HMAC-SHA256(secret,
 * "<id>.<timestamp>.<body>")>. Returns false if the hash fails.
 */
static bool
webhook_signature(const char *secret, int secret_len, const char *id,
				  const char *ts, const char *body, size_t body_len,
				  char *out, int outlen)
{
	pg_hmac_ctx *ctx = pg_hmac_create(PG_SHA256);
	uint8		mac[PG_SHA256_DIGEST_LENGTH];
	int			n;
	bool		ok;

	if (ctx == NULL)
		return false;
	ok = pg_hmac_init(ctx, (const uint8 *) secret, secret_len) == 0 &&
		pg_hmac_update(ctx, (const uint8 *) id, strlen(id)) == 0 &&
		pg_hmac_update(ctx, (const uint8 *) ".", 1) == 0 &&
		pg_hmac_update(ctx, (const uint8 *) ts, strlen(ts)) == 0 &&
		pg_hmac_update(ctx, (const uint8 *) ".", 1) == 0 &&
		pg_hmac_update(ctx, (const uint8 *) body, body_len) == 0 &&
		pg_hmac_final(ctx, mac, sizeof(mac)) == 0;
	pg_hmac_free(ctx);
	if (!ok || outlen < 4 + pg_b64_enc_len(sizeof(mac)) + 1)
		return false;
	memcpy(out, "v1,", 3);
	n = pg_b64_encode((const char *) mac, sizeof(mac), out + 3, outlen - 4);
	if (n < 0)
		return false;
	out[3 + n] = '\0';
	return true;
}

/* Build the webhook POST for one item. */
static bool
http_build(DeliveryRequest *r, char *error, size_t errlen)
{
	DestConfig *d = r->dest;
	DeliveryItem *item = &r->items[0];
	char		ts[32];
	ListCell   *lc;
	bool		ok = true;

	r->body = item->body;
	r->body_len = strlen(item->body);
	snprintf(ts, sizeof(ts), "%ld", (long) time(NULL));

	ok = ok && ep_curl_header(r, "Content-Type: application/json");
	ok = ok && ep_curl_header(r, "Expect:");	/* no 100-continue round trip */
	ok = ok && ep_curl_header(r, "Idempotency-Key: %s", item->event_id);
	ok = ok && ep_curl_header(r, "webhook-id: %s", item->event_id);
	ok = ok && ep_curl_header(r, "webhook-timestamp: %s", ts);
	if (d->secret)
	{
		char		sig[128];

		if (!webhook_signature(d->secret, d->secret_len, item->event_id, ts,
							   r->body, r->body_len, sig, sizeof(sig)))
		{
			snprintf(error, errlen, "could not compute the webhook signature");
			return false;
		}
		ok = ok && ep_curl_header(r, "webhook-signature: %s", sig);
	}
	if (item->traceparent)
		ok = ok && ep_curl_header(r, "traceparent: %s", item->traceparent);
	foreach(lc, d->headers)
		ok = ok && ep_curl_header(r, "%s", (char *) lfirst(lc));
	if (!ok || curl_easy_setopt(r->easy, CURLOPT_URL, d->url) != CURLE_OK)
	{
		snprintf(error, errlen, "could not set up the request");
		return false;
	}
	return true;
}

/* 2xx is success; 408, 429 and 5xx are transient; the rest permanent. */
static void
http_classify(DeliveryRequest *r, long status)
{
	ItemResult *res = &r->results[0];

	if (status >= 200 && status <= 299)
		ep_result_set(res, true, false, (int) status, NULL);
	else if (status >= 300 && status <= 399)
		ep_result_set(res, false, true, (int) status,
					  "HTTP %ld: redirect not followed (set follow_redirects to follow)",
					  status);
	else if (ep_http_status_transient(status))
		ep_result_set(res, false, false, (int) status, "HTTP %ld", status);
	else
		ep_result_set(res, false, true, (int) status, "HTTP %ld", status);
}

const DeliveryKind http_kind = {
	.name = "http",
	.max_batch = 1,
	.max_batch_bytes = 0,
	.build = http_build,
	.classify = http_classify,
};
