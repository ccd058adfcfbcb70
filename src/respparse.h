/*-------------------------------------------------------------------------
 *
 * respparse.h
 *	  Parsing of SQS and GraphQL answers, and trace header conversion. No
 *	  PostgreSQL dependency (unit-tested and fuzzed alone).
 *
 *-------------------------------------------------------------------------
 */
#ifndef EVPIPE_RESPPARSE_H
#define EVPIPE_RESPPARSE_H

#include <stddef.h>

#define EP_ENTRY_MISSING 0
#define EP_ENTRY_OK 1
#define EP_ENTRY_FAILED 2

typedef struct EpEntryResult
{
	int			state;			/* EP_ENTRY_* */
	int			sender_fault;	/* failed because of the request: permanent */
	char		code[64];
	char		message[200];
} EpEntryResult;

/*
 * Parse a SendMessageBatch answer for entries with Ids "0".."n-1".
 * Returns 0, or -1 if the answer is not a JSON object.
 */
extern int	ep_sqs_parse_batch(const char *json, size_t len, int n,
							   EpEntryResult *out);

/*
 * Classify a whole-request SQS error from the status and the JSON body
 * ({"__type": "...#Code", "message": "..."}). Fills code and message;
 * returns 1 if transient (throttling, 5xx), 0 if permanent.
 */
extern int	ep_sqs_error(long status, const char *json, size_t len,
						 char *code, size_t codelen, char *msg, size_t msglen);

#define EP_GQL_INVALID -1		/* not a JSON object */
#define EP_GQL_OK 0
#define EP_GQL_TRANSIENT 1
#define EP_GQL_PERMANENT 2

/*
 * Read a GraphQL answer: a non-empty "errors" array is a failure,
 * permanent if any extensions.code is a validation or bad-input code.
 * Fills msg with "messages (codes)".
 */
extern int	ep_graphql_result(const char *json, size_t len, char *msg,
							  size_t msglen);

/*
 * W3C traceparent to an AWS X-Ray trace header
 * (Root=1-<8 hex>-<24 hex>;Parent=<16 hex>;Sampled=<0|1>). Returns 0, or
 * -1 if the traceparent is not valid.
 */
extern int	ep_xray_from_traceparent(const char *tp, char *out, size_t outlen);

#endif							/* EVPIPE_RESPPARSE_H */
