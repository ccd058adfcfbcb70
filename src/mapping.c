/*-------------------------------------------------------------------------
 *
 * mapping.c
 *	  JSON-path segments (one implementation for the validator's error
 *	  paths and ingest's) and the rules of mapped sources: which member is
 *	  the eventId, the timestamp or payload, and when an id member is an id.
 *
 *	  No PostgreSQL dependency and no allocation: callers pass buffers.
 *
 *-------------------------------------------------------------------------
 */
#include <stdint.h>
#include <string.h>

#include "mapping.h"

#define IS_ALPHA(c) (((c) >= 'A' && (c) <= 'Z') || ((c) >= 'a' && (c) <= 'z'))
#define IS_DIGIT(c) ((c) >= '0' && (c) <= '9')
#define IS_CONT(c) ((((unsigned char) (c)) & 0xC0) == 0x80)

/* Not the locale's isalpha(): a Latin-1 locale would let bytes >= 0x80 in. */
bool
ep_path_plain_name(const char *name)
{
	const char *s = name;

	if (!(IS_ALPHA(*s) || *s == '_'))
		return false;
	for (; *s; s++)
		if (!(IS_ALPHA(*s) || IS_DIGIT(*s) || *s == '_'))
			return false;
	return true;
}

bool
ep_json_excerpt(char *out, size_t outlen, const char *s, size_t len,
				size_t max)
{
	static const char hex[] = "0123456789abcdef";
	size_t		end = len;
	size_t		o = 0;
	size_t		i;
	bool		cut = false;

	if (outlen == 0)
		return len == 0;
	if (end > max)
	{
		end = max;
		while (end > 0 && IS_CONT(s[end]))
			end--;
		cut = true;
	}
	for (i = 0; i < end; i++)
	{
		unsigned char c = (unsigned char) s[i];
		size_t		need = (c < 0x20 || c == 0x7f) ? 6 :
			(c == '"' || c == '\\') ? 2 : 1;

		/* room for this byte's text, a later "..." and the terminator */
		if (o + need + 4 > outlen)
		{
			/*
			 * Do not end inside a UTF-8 sequence: drop the bytes already
			 * written of the character s[i] belongs to (each >= 0x80, so
			 * one output byte each).
			 */
			while (i > 0 && IS_CONT(s[i]) && ((unsigned char) s[i - 1] & 0x80))
			{
				i--;
				o--;
			}
			cut = true;
			break;
		}
		if (need == 6)
		{
			memcpy(out + o, "\\u00", 4);
			out[o + 4] = hex[c >> 4];
			out[o + 5] = hex[c & 15];
		}
		else if (need == 2)
		{
			out[o] = '\\';
			out[o + 1] = (char) c;
		}
		else
			out[o] = (char) c;
		o += need;
	}
	if (cut && o + 4 <= outlen)
	{
		memcpy(out + o, "...", 3);
		o += 3;
	}
	out[o] = '\0';
	return !cut;
}

bool
ep_path_member(char *out, size_t outlen, const char *name, size_t max)
{
	size_t		len = strlen(name);
	bool		exact;

	if (ep_path_plain_name(name) && len + 2 <= outlen)
	{
		out[0] = '.';
		memcpy(out + 1, name, len + 1);
		return true;
	}
	if (outlen < 8)				/* not even ["..."] */
	{
		if (outlen > 0)
			out[0] = '\0';
		return false;
	}
	out[0] = '[';
	out[1] = '"';
	/* at most outlen - 5 bytes of text, then "] and the terminator */
	exact = ep_json_excerpt(out + 2, outlen - 4, name, len, max);
	len = 2 + strlen(out + 2);
	out[len] = '"';
	out[len + 1] = ']';
	out[len + 2] = '\0';
	return exact;
}

bool
ep_mapped_path(char *out, size_t outlen, const char *field)
{
	if (outlen < 2)
	{
		if (outlen > 0)
			out[0] = '\0';
		return false;
	}
	out[0] = '$';
	return ep_path_member(out + 1, outlen - 1, field, EP_MAPPED_NAME_MAX);
}

EpMappedMember
ep_mapped_member(const char *name, size_t len, const char *id_field,
				 const char *ts_field)
{
	if (len == strlen(id_field) && memcmp(name, id_field, len) == 0)
		return EP_MAPPED_ID;
	if (len == strlen(ts_field) && memcmp(name, ts_field, len) == 0)
		return EP_MAPPED_TIMESTAMP;
	return EP_MAPPED_PAYLOAD;
}

/*
 * A JSON number as an integer id: -?(0|[1-9][0-9]*)(.[0-9]+)?([eE][+-]?[0-9]+)?
 * whose scale (digits after the point less the exponent) is not positive,
 * which is when PostgreSQL's numeric prints it without a point.
 */
static long
number_id(const char *s, size_t len, char *out, size_t outlen)
{
	const char *p = s;
	const char *end = s + len;
	const char *int_start;
	const char *int_end;
	const char *frac_start = NULL;
	const char *frac_end = NULL;
	bool		neg = false;
	bool		exp_neg = false;
	long long	exp = 0;
	long long	zeros;
	size_t		nfrac = 0;
	size_t		nsig;
	size_t		total;
	size_t		o = 0;
	const char *q;

	if (p < end && *p == '-')
	{
		neg = true;
		p++;
	}
	int_start = p;
	if (p < end && *p == '0')
		p++;
	else if (p < end && *p >= '1' && *p <= '9')
		while (p < end && IS_DIGIT(*p))
			p++;
	else
		return EP_MAPPED_ID_TYPE;
	int_end = p;
	if (p < end && *p == '.')
	{
		frac_start = ++p;
		while (p < end && IS_DIGIT(*p))
			p++;
		frac_end = p;
		nfrac = (size_t) (frac_end - frac_start);
		if (nfrac == 0)
			return EP_MAPPED_ID_TYPE;
	}
	if (p < end && (*p == 'e' || *p == 'E'))
	{
		const char *exp_start;

		p++;
		if (p < end && (*p == '+' || *p == '-'))
			exp_neg = (*p++ == '-');
		exp_start = p;
		while (p < end && IS_DIGIT(*p))
		{
			if (exp < 1000000000LL)	/* saturate: far beyond any buffer */
				exp = exp * 10 + (*p - '0');
			p++;
		}
		if (p == exp_start)
			return EP_MAPPED_ID_TYPE;
		if (exp_neg)
			exp = -exp;
	}
	if (p != end)
		return EP_MAPPED_ID_TYPE;

	/* digits after the point once the exponent is applied */
	if ((long long) nfrac > exp)
		return EP_MAPPED_ID_TYPE;
	zeros = exp - (long long) nfrac;

	/* significant digits: integer then fraction digits, leading zeros off */
	q = int_start;
	while (q < int_end && *q == '0')
		q++;
	nsig = (size_t) (int_end - q);
	if (nsig == 0 && frac_start)
	{
		q = frac_start;
		while (q < frac_end && *q == '0')
			q++;
		nsig = (size_t) (frac_end - q);
	}
	else
		nsig += nfrac;
	if (nsig == 0)
	{
		/* zero, whatever its sign and exponent */
		if (outlen < 2)
			return EP_MAPPED_ID_LONG;
		out[0] = '0';
		out[1] = '\0';
		return 1;
	}
	if (zeros > (long long) outlen)
		return EP_MAPPED_ID_LONG;
	total = (neg ? 1 : 0) + nsig + (size_t) zeros;
	if (total + 1 > outlen)
		return EP_MAPPED_ID_LONG;
	if (neg)
		out[o++] = '-';
	/* q points at the first significant digit, in the integer or fraction */
	for (; nsig > 0; q++)
	{
		if (*q == '.')
			continue;
		out[o++] = *q;
		nsig--;
	}
	memset(out + o, '0', (size_t) zeros);
	o += (size_t) zeros;
	out[o] = '\0';
	return (long) o;
}

long
ep_mapped_id(EpJsonKind kind, const char *text, size_t len, char *out,
			 size_t outlen)
{
	switch (kind)
	{
		case EP_JSON_STRING:
			if (len >= outlen || len > (size_t) INT32_MAX)
				return EP_MAPPED_ID_LONG;
			memcpy(out, text, len);
			out[len] = '\0';
			return (long) len;
		case EP_JSON_NUMBER:
			return number_id(text, len, out, outlen);
		default:
			return EP_MAPPED_ID_TYPE;
	}
}
