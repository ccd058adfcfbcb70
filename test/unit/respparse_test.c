/* Unit tests of SQS/GraphQL answer parsing and Retry-After parsing. */
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "httputil.h"
#include "respparse.h"
#include "unit.h"

#define S(x) x, strlen(x)

int
main(void)
{
	EpEntryResult r[10];
	char		code[64];
	char		msg[256];
	char		xray[128];
	long		now = 1700000000L;
	int			t;

	CHECK(ep_sqs_parse_batch(S("{\"Successful\":[{\"Id\":\"0\"},{\"Id\":\"2\"}],\"Failed\":[{\"Id\":\"1\",\"SenderFault\":true,\"Code\":\"InvalidParameterValue\",\"Message\":\"bad\"}]}"), 4, r) == 0 &&
		  r[0].state == EP_ENTRY_OK && r[2].state == EP_ENTRY_OK && r[1].state == EP_ENTRY_FAILED &&
		  r[1].sender_fault == 1 && strcmp(r[1].code, "InvalidParameterValue") == 0 && r[3].state == EP_ENTRY_MISSING,
		  "SQS batch: successful, failed (sender fault) and missing entries");
	CHECK(ep_sqs_parse_batch(S("{\"Failed\":[{\"Id\":\"0\",\"SenderFault\":false,\"Code\":\"InternalError\"}]}"), 1, r) == 0 &&
		  r[0].state == EP_ENTRY_FAILED && r[0].sender_fault == 0, "SQS batch: server fault is transient");
	CHECK(ep_sqs_parse_batch(S("{\"Successful\":[{\"Id\":\"99\"},{\"Id\":\"-1\"},{\"Id\":5},{}]}"), 2, r) == 0 &&
		  r[0].state == EP_ENTRY_MISSING && r[1].state == EP_ENTRY_MISSING, "SQS batch: out-of-range and malformed ids ignored");
	CHECK(ep_sqs_parse_batch(S("not json"), 2, r) == -1, "SQS batch: garbage refused");
	CHECK(ep_sqs_parse_batch(S("[1,2]"), 2, r) == -1, "SQS batch: non-object refused");
	CHECK(ep_sqs_parse_batch(S("{\"Successful\":[{\"Id\":\"0\""), 1, r) == -1, "SQS batch: truncated refused");
	t = ep_sqs_error(400, S("{\"__type\":\"com.amazonaws.sqs#ThrottlingException\",\"message\":\"slow down\"}"), code, sizeof(code), msg, sizeof(msg));
	CHECK(t == 1 && strcmp(code, "ThrottlingException") == 0 && strcmp(msg, "slow down") == 0, "SQS error: throttling is transient");
	t = ep_sqs_error(403, S("{\"__type\":\"com.amazon.coral.service#SignatureDoesNotMatch\",\"message\":\"sig\"}"), code, sizeof(code), msg, sizeof(msg));
	CHECK(t == 0 && strcmp(code, "SignatureDoesNotMatch") == 0, "SQS error: bad signature is permanent");
	t = ep_sqs_error(503, S("<html>"), code, sizeof(code), msg, sizeof(msg));
	CHECK(t == 1 && strcmp(code, "HTTP503") == 0, "SQS error: 5xx without JSON is transient");
	t = ep_sqs_error(400, S("{\"__type\":\"com.amazonaws.sqs#QueueDoesNotExist\",\"Message\":\"no queue\"}"), code, sizeof(code), msg, sizeof(msg));
	CHECK(t == 0 && strcmp(msg, "no queue") == 0, "SQS error: missing queue is permanent, Message read");
	CHECK(ep_graphql_result(S("{\"data\":{\"x\":{\"ok\":true}}}"), msg, sizeof(msg)) == EP_GQL_OK, "GraphQL: data without errors is success");
	CHECK(ep_graphql_result(S("{\"errors\":[],\"data\":{}}"), msg, sizeof(msg)) == EP_GQL_OK, "GraphQL: empty errors is success");
	t = ep_graphql_result(S("{\"errors\":[{\"message\":\"brand missing\",\"extensions\":{\"code\":\"BAD_USER_INPUT\"}}],\"data\":null}"), msg, sizeof(msg));
	CHECK(t == EP_GQL_PERMANENT && strstr(msg, "brand missing") && strstr(msg, "BAD_USER_INPUT"), "GraphQL: bad input is permanent with message and code");
	t = ep_graphql_result(S("{\"errors\":[{\"message\":\"boom\",\"extensions\":{\"code\":\"INTERNAL_SERVER_ERROR\"}}]}"), msg, sizeof(msg));
	CHECK(t == EP_GQL_TRANSIENT, "GraphQL: unknown code is transient");
	t = ep_graphql_result(S("{\"errors\":[{\"message\":\"no code\"}]}"), msg, sizeof(msg));
	CHECK(t == EP_GQL_TRANSIENT && strstr(msg, "no code"), "GraphQL: no code is transient");
	CHECK(ep_graphql_result(S("oops"), msg, sizeof(msg)) == EP_GQL_INVALID, "GraphQL: garbage is invalid");
	{
		/* many errors: the message stays bounded */
		char	   *big = malloc(200000);
		int			k;

		strcpy(big, "{\"errors\":[");
		for (k = 0; k < 2000; k++)
			strcat(big, k ? ",{\"message\":\"mmmmmmmmmmmmmmmm\",\"extensions\":{\"code\":\"X\"}}" : "{\"message\":\"first\"}");
		strcat(big, "]}");
		t = ep_graphql_result(big, strlen(big), msg, sizeof(msg));
		CHECK(t == EP_GQL_TRANSIENT && strlen(msg) < sizeof(msg), "GraphQL: 2000 errors, bounded message");
		free(big);
	}
	CHECK(ep_xray_from_traceparent("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", xray, sizeof(xray)) == 0 &&
		  strcmp(xray, "Root=1-4bf92f35-77b34da6a3ce929d0e0e4736;Parent=00f067aa0ba902b7;Sampled=1") == 0,
		  "X-Ray header from traceparent");
	CHECK(ep_xray_from_traceparent("00-xyz", xray, sizeof(xray)) == -1, "X-Ray: bad traceparent refused");
	CHECK(ep_parse_retry_after("5", now) == 5000, "Retry-After seconds");
	CHECK(ep_parse_retry_after(" 0 ", now) == 0, "Retry-After zero with spaces");
	CHECK(ep_parse_retry_after("99999999999999999999", now) == 86400000L, "Retry-After capped at a day");
	CHECK(ep_parse_retry_after("Tue, 14 Nov 2023 22:13:40 GMT", now) == 20000, "Retry-After HTTP date (IMF-fixdate)");
	CHECK(ep_parse_retry_after("Tuesday, 14-Nov-23 22:13:40 GMT", now) == 20000, "Retry-After RFC 850 date");
	CHECK(ep_parse_retry_after("Sun, 06 Nov 1994 08:49:37 GMT", now) == 0, "Retry-After date in the past is 0");
	CHECK(ep_parse_retry_after("soon", now) == -1, "Retry-After garbage refused");
	CHECK(ep_parse_retry_after("-5", now) == -1, "Retry-After negative refused");
	CHECK(ep_parse_retry_after("", now) == -1 && ep_parse_retry_after(NULL, now) == -1, "Retry-After empty refused");
	CHECK(ep_http_status_transient(503) && ep_http_status_transient(429) && ep_http_status_transient(408) &&
		  !ep_http_status_transient(400) && !ep_http_status_transient(410), "transient statuses: 408, 429, 5xx");
	(void) time;
	return unit_done();
}
