/*-------------------------------------------------------------------------
 *
 * logquote.c
 *	  Values for the key="value" fields of evpipe's log lines.
 *
 * An error text comes from a target, a handler or libcurl and may hold
 * double quotes, backslashes and line breaks; written as is, it ends its
 * field early or splits the record over lines, and a log parser reads
 * fields that are not there. Both hosts (the server's workers and
 * evpiped) quote the same way.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "lib/stringinfo.h"

#include "logquote.h"

/*
 * A text made fit to stand between the double quotes of a log field
 * (palloc'd): '"' and '\' escaped with a backslash, line breaks and tabs
 * as \n, \r and \t, other control characters as \xNN. NULL is "".
 */
char *
ep_log_quote(const char *s)
{
	StringInfoData buf;

	initStringInfo(&buf);
	for (; s && *s; s++)
	{
		unsigned char c = (unsigned char) *s;

		switch (c)
		{
			case '"':
			case '\\':
				appendStringInfoChar(&buf, '\\');
				appendStringInfoChar(&buf, (char) c);
				break;
			case '\n':
				appendStringInfoString(&buf, "\\n");
				break;
			case '\r':
				appendStringInfoString(&buf, "\\r");
				break;
			case '\t':
				appendStringInfoString(&buf, "\\t");
				break;
			default:
				if (c < 0x20 || c == 0x7f)
					appendStringInfo(&buf, "\\x%02x", c);
				else
					appendStringInfoChar(&buf, (char) c);
		}
	}
	return buf.data;
}
