/*
 * Unit tests of the quoting of log field values (src/logquote.c), linked
 * with evpiped's runtime (src/daemonrt.c) for palloc.
 */
#include "postgres.h"

#include <string.h>

#include "daemonrt.h"
#include "logquote.h"
#include "unit.h"

/* Whether quoting `in` gives `want`. */
static bool
quotes_to(const char *in, const char *want)
{
	char	   *got = ep_log_quote(in);
	bool		same = strcmp(got, want) == 0;

	if (!same)
		printf("# quoting gave [%s], expected [%s]\n", got, want);
	pfree(got);
	return same;
}

int
main(void)
{
	ep_rt_init();
	CHECK(quotes_to("HTTP 503", "HTTP 503"), "plain text is unchanged");
	CHECK(quotes_to(NULL, ""), "NULL is the empty text");
	CHECK(quotes_to("", ""), "the empty text stays empty");
	CHECK(quotes_to("22023: bad \"balance\"", "22023: bad \\\"balance\\\""), "double quotes are escaped");
	CHECK(quotes_to("C:\\tmp", "C:\\\\tmp"), "a backslash is escaped");
	CHECK(quotes_to("one\ntwo\r\nthree\tfour", "one\\ntwo\\r\\nthree\\tfour"),
		  "line breaks and tabs become \\n, \\r, \\t: one record, one line");
	CHECK(quotes_to("bell\x07 del\x7f esc\x1b", "bell\\x07 del\\x7f esc\\x1b"),
		  "other control characters become \\xNN");
	CHECK(quotes_to("caf\xc3\xa9 \xe2\x82\xac", "caf\xc3\xa9 \xe2\x82\xac"), "UTF-8 is kept as it is");
	return unit_done();
}
