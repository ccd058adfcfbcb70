/*-------------------------------------------------------------------------
 *
 * graphql.c
 *	  The graphql destination kind: POST {"query", "variables"} per event.
 *
 *	  Variables built from the event:
 *	    input      the payload (with enrich merged) plus "eventId" and
 *	               "timestamp"
 *	    eventId, eventType, source, timestamp   the envelope's members
 *	    event      the whole canonical envelope
 *	  A GraphQL server ignores variables its document does not declare.
 *	  A 2xx answer with a non-empty "errors" array is a failure.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "pg_jsonc.h"

#include "delivery.h"
#include "respparse.h"

/* Parse JSON text we produced ourselves (an object); NULL on failure. */
static struct json_object *
parse_object(const char *text)
{
	struct json_tokener *tok = json_tokener_new_ex(1024);
	struct json_object *o;

	if (tok == NULL)
		return NULL;
	o = json_tokener_parse_ex(tok, text, (int) strlen(text));
	if (json_tokener_get_error(tok) != json_tokener_success ||
		!json_object_is_type(o, json_type_object))
	{
		json_object_put(o);
		o = NULL;
	}
	json_tokener_free(tok);
	return o;
}

/* Build the POST for one event. */
static bool
graphql_build(DeliveryRequest *r, char *error, size_t errlen)
{
	DestConfig *d = r->dest;
	DeliveryItem *item = &r->items[0];
	struct json_object *body = json_object_new_object();
	struct json_object *vars = json_object_new_object();
	struct json_object *input = parse_object(item->payload);
	struct json_object *event = parse_object(item->body);
	const char *text;
	ListCell   *lc;
	bool		ok;

	ok = body && vars && input && event &&
		json_object_object_add(input, "eventId", json_object_new_string(item->event_id)) == 0 &&
		json_object_object_add(input, "timestamp", json_object_new_string(item->timestamp ? item->timestamp : "")) == 0 &&
		json_object_object_add(vars, "input", input) == 0;
	if (ok)
		input = NULL;			/* owned by vars now */
	ok = ok &&
		json_object_object_add(vars, "eventId", json_object_new_string(item->event_id)) == 0 &&
		json_object_object_add(vars, "eventType", json_object_new_string(item->event_type)) == 0 &&
		json_object_object_add(vars, "source", json_object_new_string(item->source)) == 0 &&
		json_object_object_add(vars, "timestamp", json_object_new_string(item->timestamp ? item->timestamp : "")) == 0 &&
		json_object_object_add(vars, "event", event) == 0;
	if (ok)
		event = NULL;
	ok = ok &&
		json_object_object_add(body, "query", json_object_new_string(d->query)) == 0 &&
		json_object_object_add(body, "variables", vars) == 0;
	if (ok)
		vars = NULL;
	text = ok ? json_object_to_json_string_ext(body, JSON_C_TO_STRING_PLAIN) : NULL;
	if (text)
	{
		r->body = pstrdup(text);
		r->body_len = strlen(r->body);
	}
	json_object_put(input);
	json_object_put(event);
	json_object_put(vars);
	json_object_put(body);
	if (text == NULL)
	{
		snprintf(error, errlen, "could not build the GraphQL request");
		return false;
	}

	ok = ep_curl_header(r, "Expect:") &&	/* no 100-continue round trip */
		ep_curl_header(r, "Content-Type: application/json") &&
		ep_curl_header(r, "Accept: application/json") &&
		ep_curl_header(r, "Idempotency-Key: %s", item->event_id);
	if (ok && item->traceparent)
		ok = ep_curl_header(r, "traceparent: %s", item->traceparent);
	foreach(lc, d->headers)
		ok = ok && ep_curl_header(r, "%s", (char *) lfirst(lc));
	if (!ok || curl_easy_setopt(r->easy, CURLOPT_URL, d->url) != CURLE_OK)
	{
		snprintf(error, errlen, "could not set up the GraphQL request");
		return false;
	}
	return true;
}

/* errors[] decides on 2xx; the status decides otherwise. */
static void
graphql_classify(DeliveryRequest *r, long status)
{
	ItemResult *res = &r->results[0];
	char		msg[400];
	int			g = ep_graphql_result(r->response, r->response_len, msg, sizeof(msg));

	if (status >= 200 && status <= 299)
	{
		if (g == EP_GQL_OK)
			ep_result_set(res, true, false, (int) status, NULL);
		else if (g == EP_GQL_INVALID)
			ep_result_set(res, false, false, (int) status, "GraphQL: the answer is not a JSON object");
		else
			ep_result_set(res, false, g == EP_GQL_PERMANENT, (int) status,
						  "GraphQL: %s", msg);
	}
	else
		ep_result_set(res, false, !ep_http_status_transient(status), (int) status,
					  "HTTP %ld%s%s", status, g > 0 ? ": " : "", g > 0 ? msg : "");
}

const DeliveryKind graphql_kind = {
	.name = "graphql",
	.max_batch = 1,
	.max_batch_bytes = 0,
	.build = graphql_build,
	.classify = graphql_classify,
};
