/* A tiny TAP-like harness: ok/not ok lines, then "N passed, M failed". */
#ifndef EVPIPE_UNIT_H
#define EVPIPE_UNIT_H
#include <stdio.h>

static int unit_passed, unit_failed, unit_n;

#define CHECK(cond, desc) \
	do { \
		unit_n++; \
		if (cond) { unit_passed++; printf("ok %d - %s\n", unit_n, desc); } \
		else { unit_failed++; printf("not ok %d - %s (%s:%d)\n", unit_n, desc, __FILE__, __LINE__); } \
	} while (0)

static int
unit_done(void)
{
	printf("%d passed, %d failed\n", unit_passed, unit_failed);
	return unit_failed ? 1 : 0;
}
#endif
