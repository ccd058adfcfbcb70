/* libFuzzer: any bytes as an SQS or GraphQL answer, or a traceparent. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "respparse.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	EpEntryResult r[10];
	char		code[64];
	char		msg[256];
	char		xray[128];
	char	   *s = malloc(size + 1);

	if (s == NULL)
		return 0;
	memcpy(s, data, size);
	s[size] = '\0';
	ep_sqs_parse_batch(s, size, 10, r);
	ep_sqs_error(size % 600, s, size, code, sizeof(code), msg, sizeof(msg));
	ep_graphql_result(s, size, msg, sizeof(msg));
	ep_xray_from_traceparent(s, xray, sizeof(xray));
	free(s);
	return 0;
}
