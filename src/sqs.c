/*-------------------------------------------------------------------------
 *
 * sqs.c
 *	  The sqs destination kind: SendMessageBatch over the SQS JSON protocol,
 *	  signed with AWS SigV4 by libcurl (CURLOPT_AWS_SIGV4).
 *
 *	  Entries carry the canonical envelope as the body, eventType, source,
 *	  eventId and correlationId as message attributes, and AWSTraceHeader
 *	  (from traceparent) as a system attribute. FIFO queues get
 *	  MessageDeduplicationId = eventId and MessageGroupId from
 *	  message_group_field (default: the source). Secrets never reach an
 *	  error text.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "pg_jsonc.h"

#include <stdlib.h>

#include "delivery.h"
#include "respparse.h"

/* Add {"DataType": "String", "StringValue": v} under name; false on OOM. */
static bool
add_string_attr(struct json_object *attrs, const char *name, const char *v)
{
	struct json_object *a;

	if (v == NULL)
		return true;
	a = json_object_new_object();
	if (a == NULL)
		return false;
	if (json_object_object_add(a, "DataType", json_object_new_string("String")) != 0 ||
		json_object_object_add(a, "StringValue", json_object_new_string(v)) != 0 ||
		json_object_object_add(attrs, name, a) != 0)
	{
		json_object_put(a);
		return false;
	}
	return true;
}

/* One batch entry for an item; NULL on OOM. */
static struct json_object *
entry(DeliveryRequest *r, int i)
{
	DeliveryItem *item = &r->items[i];
	struct json_object *e = json_object_new_object();
	struct json_object *attrs = json_object_new_object();
	char		id[16];
	bool		ok;

	if (e == NULL || attrs == NULL)
	{
		json_object_put(e);
		json_object_put(attrs);
		return NULL;
	}
	snprintf(id, sizeof(id), "%d", i);
	ok = json_object_object_add(e, "Id", json_object_new_string(id)) == 0 &&
		json_object_object_add(e, "MessageBody", json_object_new_string(item->body)) == 0 &&
		add_string_attr(attrs, "eventType", item->event_type) &&
		add_string_attr(attrs, "source", item->source) &&
		add_string_attr(attrs, "eventId", item->event_id) &&
		add_string_attr(attrs, "correlationId", item->correlation_id);
	if (!ok || json_object_object_add(e, "MessageAttributes", attrs) != 0)
	{
		json_object_put(attrs);
		json_object_put(e);
		return NULL;
	}
	if (item->traceparent)
	{
		char		xray[128];

		if (ep_xray_from_traceparent(item->traceparent, xray, sizeof(xray)) == 0)
		{
			struct json_object *sys = json_object_new_object();

			if (sys == NULL || !add_string_attr(sys, "AWSTraceHeader", xray) ||
				json_object_object_add(e, "MessageSystemAttributes", sys) != 0)
			{
				json_object_put(sys);
				json_object_put(e);
				return NULL;
			}
		}
	}
	if (r->dest->fifo)
	{
		const char *group = item->group ? item->group : item->source;

		if (json_object_object_add(e, "MessageDeduplicationId",
								   json_object_new_string(item->event_id)) != 0 ||
			json_object_object_add(e, "MessageGroupId",
								   json_object_new_string(group)) != 0)
		{
			json_object_put(e);
			return NULL;
		}
	}
	return e;
}

/* Build the signed SendMessageBatch request. */
static bool
sqs_build(DeliveryRequest *r, char *error, size_t errlen)
{
	DestConfig *d = r->dest;
	const char *akid = d->access_key_id;
	const char *secret = d->secret_access_key;
	const char *token = d->session_token;
	struct json_object *body;
	struct json_object *entries;
	const char *text;
	char		sigv4[96];
	char	   *userpwd;
	char	   *url;
	bool		ok = true;
	int			i;

	if (akid == NULL)
	{
		akid = getenv("AWS_ACCESS_KEY_ID");
		secret = getenv("AWS_SECRET_ACCESS_KEY");
		token = getenv("AWS_SESSION_TOKEN");
	}
	if (akid == NULL || secret == NULL || akid[0] == '\0' || secret[0] == '\0')
	{
		snprintf(error, errlen, "no AWS credentials: set access_key_id and secret_access_key, or AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY in the server's environment");
		return false;
	}

	body = json_object_new_object();
	entries = json_object_new_array();
	if (body == NULL || entries == NULL ||
		json_object_object_add(body, "QueueUrl", json_object_new_string(d->queue_url)) != 0 ||
		json_object_object_add(body, "Entries", entries) != 0)
	{
		json_object_put(body);
		snprintf(error, errlen, "out of memory building the SQS request");
		return false;
	}
	for (i = 0; i < r->nitems && ok; i++)
	{
		struct json_object *e = entry(r, i);

		ok = e != NULL && json_object_array_add(entries, e) == 0;
		if (!ok && e)
			json_object_put(e);
	}
	text = ok ? json_object_to_json_string_ext(body, JSON_C_TO_STRING_PLAIN) : NULL;
	if (text == NULL)
	{
		json_object_put(body);
		snprintf(error, errlen, "out of memory building the SQS request");
		return false;
	}
	r->body = pstrdup(text);
	r->body_len = strlen(r->body);
	json_object_put(body);

	url = d->endpoint_url ? pstrdup(d->endpoint_url)
		: psprintf("https://sqs.%s.amazonaws.com/", d->region);
	snprintf(sigv4, sizeof(sigv4), "aws:amz:%s:sqs", d->region);
	userpwd = psprintf("%s:%s", akid, secret);
	ok = ep_curl_header(r, "Content-Type: application/x-amz-json-1.0") &&
		ep_curl_header(r, "X-Amz-Target: AmazonSQS.SendMessageBatch");
	if (ok && token && token[0])
		ok = ep_curl_header(r, "X-Amz-Security-Token: %s", token);
	if (!ok ||
		curl_easy_setopt(r->easy, CURLOPT_URL, url) != CURLE_OK ||
		curl_easy_setopt(r->easy, CURLOPT_AWS_SIGV4, sigv4) != CURLE_OK ||
		curl_easy_setopt(r->easy, CURLOPT_USERPWD, userpwd) != CURLE_OK)
	{
		snprintf(error, errlen, "could not set up the SQS request");
		return false;
	}
	return true;
}

/* Per-entry results from a 200; otherwise the whole request's error. */
static void
sqs_classify(DeliveryRequest *r, long status)
{
	int			i;

	if (status == 200)
	{
		EpEntryResult *res = palloc0(sizeof(EpEntryResult) * r->nitems);

		if (ep_sqs_parse_batch(r->response, r->response_len, r->nitems, res) != 0)
		{
			for (i = 0; i < r->nitems; i++)
				ep_result_set(&r->results[i], false, false, 200,
							  "SQS: the answer is not valid JSON");
			return;
		}
		for (i = 0; i < r->nitems; i++)
		{
			if (res[i].state == EP_ENTRY_OK)
				ep_result_set(&r->results[i], true, false, 200, NULL);
			else if (res[i].state == EP_ENTRY_FAILED)
				ep_result_set(&r->results[i], false, res[i].sender_fault != 0, 200,
							  "SQS %s: %s", res[i].code, res[i].message);
			else
				ep_result_set(&r->results[i], false, false, 200,
							  "SQS: entry missing from the answer");
		}
		return;
	}
	else
	{
		char		code[64];
		char		msg[256];
		int			transient = ep_sqs_error(status, r->response, r->response_len,
											 code, sizeof(code), msg, sizeof(msg));

		for (i = 0; i < r->nitems; i++)
			ep_result_set(&r->results[i], false, !transient, (int) status,
						  "SQS %s: %s", code, msg);
	}
}

const DeliveryKind sqs_kind = {
	.name = "sqs",
	.max_batch = 10,
	.max_batch_bytes = 250000,
	.build = sqs_build,
	.classify = sqs_classify,
};
