/* libFuzzer: any bytes as a Retry-After header value. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "httputil.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char	   *s = malloc(size + 1);
	long		ms;

	if (s == NULL)
		return 0;
	memcpy(s, data, size);
	s[size] = '\0';
	ms = ep_parse_retry_after(s, 1700000000L);
	if (ms < -1 || ms > EP_RETRY_AFTER_MAX_S * 1000)
		abort();
	free(s);
	return 0;
}
