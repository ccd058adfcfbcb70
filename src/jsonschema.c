/*-------------------------------------------------------------------------
 *
 * jsonschema.c
 *	  A JSON Schema (draft 2020-12 subset) validator on json-c.
 *
 *	  Schemas are compiled once into a tree of nodes (refs resolved, regular
 *	  expressions compiled, keyword values type-checked) and then validated
 *	  against many instances. Unsupported keywords are refused at compile
 *	  time. No PostgreSQL dependency: malloc/free only, never aborts.
 *
 *-------------------------------------------------------------------------
 */
#include <ctype.h>
#include <math.h>
#include <regex.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <json-c/json.h>

#include "jsonschema.h"
#include "mapping.h"

#define T_NULL		0x01
#define T_BOOLEAN	0x02
#define T_OBJECT	0x04
#define T_ARRAY		0x08
#define T_NUMBER	0x10
#define T_STRING	0x20
#define T_INTEGER	0x40

#define FMT_NONE	0
#define FMT_UUID	1
#define FMT_DATETIME 2
#define FMT_EMAIL	3

#define MAX_PATTERN_LEN 1024

typedef struct Node Node;

typedef struct Prop
{
	char	   *name;
	Node	   *schema;
} Prop;

struct Node
{
	int			boolean;		/* -1: not a boolean schema; 0 false; 1 true */
	int			types;			/* 0: any */
	Node	   *ref;
	struct json_object *enum_vals;	/* own reference, or NULL */
	struct json_object *const_val;
	int			has_const;
	int			has_min, has_max, has_xmin, has_xmax, has_mult;
	double		min, max, xmin, xmax, mult;
	long		min_len, max_len;	/* -1: none */
	regex_t    *pattern;
	char	   *pattern_src;
	int			format;
	long		min_items, max_items;	/* -1: none */
	int			unique;
	Node	   *items;
	char	  **required;
	int			nrequired;
	Prop	   *props;
	int			nprops;
	int			addl;			/* -1: absent; 0 false; 1 true (or schema) */
	Node	   *addl_schema;
	Node	   *next_alloc;		/* every node, for freeing */
};

typedef struct Def
{
	char	   *name;
	Node	   *node;
} Def;

struct EpSchema
{
	Node	   *root;
	Node	   *nodes;			/* list of all nodes */
	Def		   *defs;
	int			ndefs;
};

typedef struct Compiler
{
	EpSchema   *s;
	EpSchemaError *err;
	int			max_depth;
	char		path[EP_ERR_PATH_LEN];
	size_t		pathlen;
	int			failed;
} Compiler;

#if defined(__GNUC__)
#define EP_PRINTF(f, a) __attribute__((format(printf, f, a)))
#else
#define EP_PRINTF(f, a)
#endif

typedef struct Validator
{
	EpSchemaError *err;
	int			max_depth;
	char		path[EP_ERR_PATH_LEN];
	size_t		pathlen;
} Validator;

/*------------------------------------------------------------------------
 * Small helpers
 *------------------------------------------------------------------------
 */

/* Copy at most n-1 bytes, always terminated. */
static void
copy_str(char *dst, size_t n, const char *src)
{
	size_t		len = strlen(src);

	if (len >= n)
		len = n - 1;
	memcpy(dst, src, len);
	dst[len] = '\0';
}

/*
 * Append a segment to a path buffer; returns the old length for path_pop.
 * A segment is appended whole or not at all: where it does not fit, the path
 * ends with "..." (room for it is always kept) and nothing more is appended
 * below it, so a long path is cut between segments, never inside one.
 */
static size_t
path_push(char *path, size_t *pathlen, const char *seg)
{
	size_t		old = *pathlen;
	size_t		len = strlen(seg);

	if (old >= 3 && memcmp(path + old - 3, "...", 3) == 0)
		return old;				/* already cut */
	if (old + len + 3 >= EP_ERR_PATH_LEN)
	{
		seg = "...";
		len = 3;
	}
	memcpy(path + old, seg, len);
	*pathlen = old + len;
	path[*pathlen] = '\0';
	return old;
}

static void
path_pop(char *path, size_t *pathlen, size_t old)
{
	*pathlen = old;
	path[old] = '\0';
}

/* A short text of an instance value for messages. */
static void
value_text(char *out, size_t n, struct json_object *v)
{
	const char *s;

	if (json_object_is_type(v, json_type_string))
	{
		size_t		len;

		if (n < 4)
		{
			out[0] = '\0';
			return;
		}
		out[0] = '"';
		ep_json_excerpt(out + 1, n - 2, json_object_get_string(v),
						(size_t) json_object_get_string_len(v), 40);
		len = strlen(out);
		out[len] = '"';
		out[len + 1] = '\0';
		return;
	}
	s = json_object_to_json_string_ext(v, JSON_C_TO_STRING_PLAIN);
	if (s == NULL)
		s = "?";
	ep_json_excerpt(out, n, s, strlen(s), 40);
}

static const char *
type_name(struct json_object *v)
{
	switch (json_object_get_type(v))
	{
		case json_type_null:
			return "null";
		case json_type_boolean:
			return "boolean";
		case json_type_double:
		case json_type_int:
			return "number";
		case json_type_object:
			return "object";
		case json_type_array:
			return "array";
		case json_type_string:
			return "string";
	}
	return "unknown";
}

/* Whether a json-c number is an integer (1.0 counts). */
static int
is_integer(struct json_object *v)
{
	double		d;

	if (json_object_is_type(v, json_type_int))
		return 1;
	if (!json_object_is_type(v, json_type_double))
		return 0;
	d = json_object_get_double(v);
	return isfinite(d) && floor(d) == d;
}

static int
is_number(struct json_object *v)
{
	return json_object_is_type(v, json_type_int) ||
		json_object_is_type(v, json_type_double);
}

/* Type bits an instance satisfies. */
static int
instance_types(struct json_object *v)
{
	switch (json_object_get_type(v))
	{
		case json_type_null:
			return T_NULL;
		case json_type_boolean:
			return T_BOOLEAN;
		case json_type_object:
			return T_OBJECT;
		case json_type_array:
			return T_ARRAY;
		case json_type_string:
			return T_STRING;
		case json_type_int:
		case json_type_double:
			return T_NUMBER | (is_integer(v) ? T_INTEGER : 0);
	}
	return 0;
}

/* Number of Unicode characters in UTF-8 text. */
static long
utf8_chars(const char *s, size_t len)
{
	long		n = 0;
	size_t		i;

	for (i = 0; i < len; i++)
		if (((unsigned char) s[i] & 0xC0) != 0x80)
			n++;
	return n;
}

/*------------------------------------------------------------------------
 * Equality and hashing
 *------------------------------------------------------------------------
 */

/* Deep equality; see jsonschema.h. */
bool
ep_json_equal(struct json_object *a, struct json_object *b)
{
	enum json_type ta;
	enum json_type tb;

	if (a == NULL || b == NULL)
		return a == b ||
			(a == NULL && json_object_is_type(b, json_type_null)) ||
			(b == NULL && json_object_is_type(a, json_type_null));
	ta = json_object_get_type(a);
	tb = json_object_get_type(b);
	if (is_number(a) && is_number(b))
	{
		if (ta == json_type_int && tb == json_type_int)
		{
			/* uint64 above INT64_MAX reads back as INT64_MAX; compare text */
			return json_object_get_int64(a) == json_object_get_int64(b) &&
				json_object_get_uint64(a) == json_object_get_uint64(b);
		}
		return json_object_get_double(a) == json_object_get_double(b);
	}
	if (ta != tb)
		return false;
	switch (ta)
	{
		case json_type_null:
			return true;
		case json_type_boolean:
			return json_object_get_boolean(a) == json_object_get_boolean(b);
		case json_type_string:
			return json_object_get_string_len(a) == json_object_get_string_len(b) &&
				memcmp(json_object_get_string(a), json_object_get_string(b),
					   (size_t) json_object_get_string_len(a)) == 0;
		case json_type_array:
			{
				size_t		n = json_object_array_length(a);
				size_t		i;

				if (n != json_object_array_length(b))
					return false;
				for (i = 0; i < n; i++)
					if (!ep_json_equal(json_object_array_get_idx(a, i),
									   json_object_array_get_idx(b, i)))
						return false;
				return true;
			}
		case json_type_object:
			{
				struct json_object_iterator it;
				struct json_object_iterator end;

				if (json_object_object_length(a) != json_object_object_length(b))
					return false;
				it = json_object_iter_begin(a);
				end = json_object_iter_end(a);
				for (; !json_object_iter_equal(&it, &end); json_object_iter_next(&it))
				{
					struct json_object *bv;

					if (!json_object_object_get_ex(b, json_object_iter_peek_name(&it), &bv))
						return false;
					if (!ep_json_equal(json_object_iter_peek_value(&it), bv))
						return false;
				}
				return true;
			}
		default:
			return false;
	}
}

static uint64_t
mix(uint64_t h)
{
	h ^= h >> 33;
	h *= 0xff51afd7ed558ccdULL;
	h ^= h >> 33;
	h *= 0xc4ceb9fe1a85ec53ULL;
	h ^= h >> 33;
	return h;
}

static uint64_t
bytes_hash(const char *s, size_t len)
{
	uint64_t	h = 1469598103934665603ULL;
	size_t		i;

	for (i = 0; i < len; i++)
	{
		h ^= (unsigned char) s[i];
		h *= 1099511628211ULL;
	}
	return h;
}

/* A hash consistent with ep_json_equal (equal values hash alike). */
static uint64_t
json_hash(struct json_object *v)
{
	switch (json_object_get_type(v))
	{
		case json_type_null:
			return 0x9e3779b97f4a7c15ULL;
		case json_type_boolean:
			return json_object_get_boolean(v) ? 3 : 5;
		case json_type_int:
		case json_type_double:
			{
				double		d = json_object_get_double(v);
				uint64_t	bits;

				if (d == 0)
					d = 0;		/* -0 == 0 */
				memcpy(&bits, &d, sizeof(bits));
				return mix(bits ^ 7);
			}
		case json_type_string:
			return mix(bytes_hash(json_object_get_string(v),
								  (size_t) json_object_get_string_len(v)) ^ 11);
		case json_type_array:
			{
				uint64_t	h = 13;
				size_t		i;
				size_t		n = json_object_array_length(v);

				for (i = 0; i < n; i++)
					h = mix(h * 31 + json_hash(json_object_array_get_idx(v, i)));
				return h;
			}
		case json_type_object:
			{
				uint64_t	h = 17;
				struct json_object_iterator it = json_object_iter_begin(v);
				struct json_object_iterator end = json_object_iter_end(v);

				for (; !json_object_iter_equal(&it, &end); json_object_iter_next(&it))
				{
					const char *k = json_object_iter_peek_name(&it);

					h += mix(bytes_hash(k, strlen(k)) ^
							 json_hash(json_object_iter_peek_value(&it)));
				}
				return mix(h);
			}
	}
	return 0;
}

/*------------------------------------------------------------------------
 * Formats
 *------------------------------------------------------------------------
 */

static int
digits(const char *s, int n)
{
	int			v = 0;
	int			i;

	for (i = 0; i < n; i++)
	{
		if (!isdigit((unsigned char) s[i]))
			return -1;
		v = v * 10 + (s[i] - '0');
	}
	return v;
}

/* RFC 3339 date-time. */
static bool
valid_datetime(const char *s, size_t len)
{
	static const int mdays[] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
	int			y, mo, d, h, mi, sec, dim;
	size_t		i;

	if (len < 20)
		return false;
	y = digits(s, 4);
	mo = digits(s + 5, 2);
	d = digits(s + 8, 2);
	h = digits(s + 11, 2);
	mi = digits(s + 14, 2);
	sec = digits(s + 17, 2);
	if (y < 0 || mo < 1 || mo > 12 || d < 1 || h < 0 || h > 23 || mi < 0 ||
		mi > 59 || sec < 0 || sec > 60)
		return false;
	if (s[4] != '-' || s[7] != '-' || (s[10] != 'T' && s[10] != 't') ||
		s[13] != ':' || s[16] != ':')
		return false;
	dim = mdays[mo - 1];
	if (mo == 2 && ((y % 4 == 0 && y % 100 != 0) || y % 400 == 0))
		dim = 29;
	if (d > dim)
		return false;
	i = 19;
	if (i < len && s[i] == '.')
	{
		i++;
		if (i >= len || !isdigit((unsigned char) s[i]))
			return false;
		while (i < len && isdigit((unsigned char) s[i]))
			i++;
	}
	if (i < len && (s[i] == 'Z' || s[i] == 'z'))
		return i + 1 == len;
	if (i + 6 == len && (s[i] == '+' || s[i] == '-') && s[i + 3] == ':')
	{
		int			oh = digits(s + i + 1, 2);
		int			om = digits(s + i + 4, 2);

		return oh >= 0 && oh <= 23 && om >= 0 && om <= 59;
	}
	return false;
}

/* 8-4-4-4-12 hex digits. */
static bool
valid_uuid(const char *s, size_t len)
{
	size_t		i;

	if (len != 36)
		return false;
	for (i = 0; i < len; i++)
	{
		if (i == 8 || i == 13 || i == 18 || i == 23)
		{
			if (s[i] != '-')
				return false;
		}
		else if (!isxdigit((unsigned char) s[i]))
			return false;
	}
	return true;
}

/* Pragmatic e-mail address: local@label.label */
static bool
valid_email(const char *s, size_t len)
{
	const char *at = memchr(s, '@', len);
	size_t		local;
	size_t		i;
	size_t		label = 0;
	int			dots = 0;

	if (at == NULL || len > 254)
		return false;
	local = (size_t) (at - s);
	if (local == 0 || local > 64 || memchr(at + 1, '@', len - local - 1))
		return false;
	for (i = 0; i < local; i++)
	{
		unsigned char c = (unsigned char) s[i];

		if (!(isalnum(c) || strchr("!#$%&'*+/=?^_`{|}~.-", c)) || c == 0)
			return false;
	}
	if (s[0] == '.' || s[local - 1] == '.')
		return false;
	for (i = local + 1; i <= len; i++)
	{
		if (i == len || s[i] == '.')
		{
			if (label == 0 || label > 63 || s[i - label] == '-' || s[i - 1] == '-')
				return false;
			if (i < len)
				dots++;
			label = 0;
		}
		else if (isalnum((unsigned char) s[i]) || s[i] == '-')
			label++;
		else
			return false;
	}
	return dots >= 1;
}

/* See jsonschema.h. */
bool
ep_format_valid(const char *format, const char *s, size_t len)
{
	if (format == NULL || s == NULL)
		return false;
	if (strcmp(format, "uuid") == 0)
		return valid_uuid(s, len);
	if (strcmp(format, "date-time") == 0)
		return valid_datetime(s, len);
	if (strcmp(format, "email") == 0)
		return valid_email(s, len);
	return false;
}

/*------------------------------------------------------------------------
 * Compilation
 *------------------------------------------------------------------------
 */

static void cfail(Compiler *c, const char *rule, const char *fmt,...) EP_PRINTF(3, 4);

static void
cfail(Compiler *c, const char *rule, const char *fmt,...)
{
	va_list		ap;

	if (c->failed)
		return;
	c->failed = 1;
	copy_str(c->err->path, sizeof(c->err->path), c->path);
	copy_str(c->err->rule, sizeof(c->err->rule), rule);
	va_start(ap, fmt);
	vsnprintf(c->err->message, sizeof(c->err->message), fmt, ap);
	va_end(ap);
}

static Node *
new_node(Compiler *c)
{
	Node	   *n = calloc(1, sizeof(Node));

	if (n == NULL)
	{
		cfail(c, "schema", "out of memory");
		return NULL;
	}
	n->boolean = -1;
	n->min_len = n->max_len = -1;
	n->min_items = n->max_items = -1;
	n->addl = -1;
	n->next_alloc = c->s->nodes;
	c->s->nodes = n;
	return n;
}

static char *
dup_str(Compiler *c, const char *s)
{
	char	   *d = strdup(s);

	if (d == NULL)
		cfail(c, "schema", "out of memory");
	return d;
}

/* Read a non-negative integer keyword value. */
static long
nonneg_int(Compiler *c, struct json_object *v, const char *kw)
{
	double		d;

	if (!is_number(v) || !is_integer(v) || (d = json_object_get_double(v)) < 0 ||
		d > 2147483647.0)
	{
		cfail(c, kw, "\"%s\" must be a non-negative integer", kw);
		return -1;
	}
	return (long) d;
}

static double
number_kw(Compiler *c, struct json_object *v, const char *kw)
{
	double		d;

	if (!is_number(v) || !isfinite(d = json_object_get_double(v)))
	{
		cfail(c, kw, "\"%s\" must be a number", kw);
		return 0;
	}
	return d;
}

static int
type_bit(const char *name)
{
	static const struct
	{
		const char *name;
		int			bit;
	}			types[] = {
		{"null", T_NULL}, {"boolean", T_BOOLEAN}, {"object", T_OBJECT},
		{"array", T_ARRAY}, {"number", T_NUMBER}, {"string", T_STRING},
		{"integer", T_INTEGER}};
	size_t		i;

	for (i = 0; i < sizeof(types) / sizeof(types[0]); i++)
		if (strcmp(types[i].name, name) == 0)
			return types[i].bit;
	return 0;
}

/* Append a char to a growing buffer; 0 when it does not fit. */
static int
put(char *out, size_t outlen, size_t *o, const char *s)
{
	size_t		len = strlen(s);

	if (*o + len + 1 > outlen)
		return 0;
	memcpy(out + *o, s, len);
	*o += len;
	out[*o] = '\0';
	return 1;
}

/*
 * Translate an ECMA-style pattern to POSIX ERE: \d \w \s (and \D \W \S
 * outside brackets) become classes; an escaped punctuation character
 * stays escaped outside brackets and becomes literal inside them. Returns
 * 0 with a reason for what cannot be translated.
 */
static int
translate_pattern(const char *src, char *out, size_t outlen, const char **why)
{
	size_t		o = 0;
	int			in_bracket = 0;
	size_t		i;

	out[0] = '\0';
	for (i = 0; src[i]; i++)
	{
		char		c = src[i];
		char		lit[3] = {0, 0, 0};

		if (c == '\\')
		{
			char		e = src[++i];
			const char *rep = NULL;

			if (e == '\0')
			{
				*why = "pattern ends with a backslash";
				return 0;
			}
			switch (e)
			{
				case 'd':
					rep = in_bracket ? "0-9" : "[0-9]";
					break;
				case 'w':
					rep = in_bracket ? "A-Za-z0-9_" : "[A-Za-z0-9_]";
					break;
				case 's':
					rep = in_bracket ? "[:space:]" : "[[:space:]]";
					break;
				case 'D':
				case 'W':
				case 'S':
					if (in_bracket)
					{
						*why = "\\D, \\W and \\S are not supported inside [...]";
						return 0;
					}
					rep = e == 'D' ? "[^0-9]" : e == 'W' ? "[^A-Za-z0-9_]" : "[^[:space:]]";
					break;
				case 'n':
					rep = "\n";
					break;
				case 't':
					rep = "\t";
					break;
				case 'r':
					rep = "\r";
					break;
				default:
					if (isalnum((unsigned char) e))
					{
						*why = "unsupported escape in pattern";
						return 0;
					}
					if (in_bracket)
						lit[0] = e;
					else
					{
						lit[0] = '\\';
						lit[1] = e;
					}
					rep = lit;
			}
			if (!put(out, outlen, &o, rep))
			{
				*why = "pattern is too long";
				return 0;
			}
			continue;
		}
		if (in_bracket)
		{
			if (c == ']' && !(i > 0 && (src[i - 1] == '[' ||
										(src[i - 1] == '^' && i > 1 && src[i - 2] == '['))))
				in_bracket = 0;
		}
		else if (c == '[')
			in_bracket = 1;
		lit[0] = c;
		if (!put(out, outlen, &o, lit))
		{
			*why = "pattern is too long";
			return 0;
		}
	}
	return 1;
}

/*
 * Estimate how large a POSIX ERE grows when its counted repetitions are
 * expanded (glibc copies the repeated subtree): nested {n,m} multiply.
 * Returns 1 if the pattern is too expensive to compile.
 */
static int
pattern_too_complex(const char *ere)
{
#define MAX_GROUPS 64
#define MAX_PATTERN_SIZE 5000.0
#define MAX_QUANTIFIERS 64
	double		sum[MAX_GROUPS + 1];
	double		last = 0;		/* size of the last atom */
	int			level = 0;
	size_t		i = 0;
	int			quantifiers = 0;
	int			after_quantifier = 0;	/* stacked ones compile exponentially */

	sum[0] = 0;
	while (ere[i])
	{
		char		c = ere[i];

		if (c == '(')
		{
			if (++level > MAX_GROUPS)
				return 1;
			sum[level] = 0;
			last = 0;
			i++;
			continue;
		}
		if (c == ')' && level > 0)
		{
			last = sum[level] > 1 ? sum[level] : 1;
			level--;
			sum[level] += last;
			i++;
		}
		else if (c == '*' || c == '+' || c == '?')
		{
			if (after_quantifier || ++quantifiers > MAX_QUANTIFIERS)
				return 1;
			after_quantifier = 2;
			sum[level] += last;	/* roughly doubles the atom */
			last *= 2;
			i++;
		}
		else if (c == '{')
		{
			double		n = 0;
			double		m = -1;

			if (after_quantifier || ++quantifiers > MAX_QUANTIFIERS)
				return 1;
			after_quantifier = 2;

			i++;
			while (isdigit((unsigned char) ere[i]) && n <= 100000)
				n = n * 10 + (ere[i++] - '0');
			if (ere[i] == ',')
			{
				i++;
				if (isdigit((unsigned char) ere[i]))
				{
					m = 0;
					while (isdigit((unsigned char) ere[i]) && m <= 100000)
						m = m * 10 + (ere[i++] - '0');
				}
				else
					m = n + 1;
			}
			if (ere[i] == '}')
				i++;
			if (m < n)
				m = n;
			if (m > 1000)
				return 1;
			sum[level] += last * (m - 1);
			last *= m;
		}
		else
		{
			if (c == '\\' && ere[i + 1])
				i += 2;
			else if (c == '[')
			{
				/* a bracket expression is one atom */
				i++;
				if (ere[i] == '^')
					i++;
				if (ere[i] == ']')
					i++;
				while (ere[i] && ere[i] != ']')
				{
					if (ere[i] == '[' && (ere[i + 1] == ':' || ere[i + 1] == '.' || ere[i + 1] == '='))
					{
						char		close = ere[i + 1];

						i += 2;
						while (ere[i] && !(ere[i] == close && ere[i + 1] == ']'))
							i++;
						if (ere[i])
							i += 2;
					}
					else
						i++;
				}
				if (ere[i])
					i++;
			}
			else
				i++;
			last = 1;
			sum[level] += 1;
		}
		if (sum[level] > MAX_PATTERN_SIZE || last > MAX_PATTERN_SIZE)
			return 1;
		if (after_quantifier > 0)
			after_quantifier--;
	}
	return 0;
}

static Node *compile_node(Compiler *c, struct json_object *v, int depth);

/* Find a def by its JSON-pointer-escaped name. */
static Node *
find_def(EpSchema *s, const char *escaped)
{
	char		name[512];
	size_t		o = 0;
	int			i;

	for (; *escaped && o + 1 < sizeof(name); escaped++)
	{
		if (escaped[0] == '~' && escaped[1] == '0')
		{
			name[o++] = '~';
			escaped++;
		}
		else if (escaped[0] == '~' && escaped[1] == '1')
		{
			name[o++] = '/';
			escaped++;
		}
		else
			name[o++] = *escaped;
	}
	name[o] = '\0';
	for (i = 0; i < s->ndefs; i++)
		if (strcmp(s->defs[i].name, name) == 0)
			return s->defs[i].node;
	return NULL;
}

/* Compile the keywords of one schema object into n. */
static void
compile_keywords(Compiler *c, Node *n, struct json_object *v, int depth)
{
	static const char *const annotations[] = {
		"$schema", "$id", "$comment", "title", "description", "default",
		"examples", "deprecated", "readOnly", "writeOnly", "$anchor", NULL};
	struct json_object_iterator it = json_object_iter_begin(v);
	struct json_object_iterator end = json_object_iter_end(v);

	for (; !c->failed && !json_object_iter_equal(&it, &end); json_object_iter_next(&it))
	{
		const char *kw = json_object_iter_peek_name(&it);
		struct json_object *val = json_object_iter_peek_value(&it);
		char		seg[EP_ERR_PATH_LEN];
		size_t		old;
		int			k;
		int			known = 0;

		for (k = 0; annotations[k]; k++)
			if (strcmp(kw, annotations[k]) == 0)
				known = 1;
		if (known)
			continue;
		ep_path_member(seg, sizeof(seg), kw, EP_PATH_NAME_MAX);
		old = path_push(c->path, &c->pathlen, seg);

		if (strcmp(kw, "$defs") == 0 || strcmp(kw, "definitions") == 0)
		{
			if (depth != 0)
				cfail(c, "$defs", "\"%s\" is supported only at the root of a schema", kw);
			/* compiled up front by ep_schema_compile */
		}
		else if (strcmp(kw, "$ref") == 0)
		{
			const char *ref = json_object_get_string(val);

			if (!json_object_is_type(val, json_type_string))
				cfail(c, "$ref", "\"$ref\" must be a string");
			else if (strncmp(ref, "#/$defs/", 8) == 0)
				n->ref = find_def(c->s, ref + 8);
			else if (strncmp(ref, "#/definitions/", 14) == 0)
				n->ref = find_def(c->s, ref + 14);
			else
				cfail(c, "$ref", "only references of the form #/$defs/name are supported");
			if (!c->failed && n->ref == NULL)
			{
				char		q[64];

				ep_json_excerpt(q, sizeof(q), ref, strlen(ref), 48);
				cfail(c, "$ref", "\"%s\" refers to no definition", q);
			}
		}
		else if (strcmp(kw, "type") == 0)
		{
			if (json_object_is_type(val, json_type_string))
			{
				n->types = type_bit(json_object_get_string(val));
				if (n->types == 0)
					cfail(c, "type", "unknown type name");
			}
			else if (json_object_is_type(val, json_type_array) &&
					 json_object_array_length(val) > 0)
			{
				size_t		i;

				for (i = 0; i < json_object_array_length(val) && !c->failed; i++)
				{
					struct json_object *t = json_object_array_get_idx(val, i);
					int			bit = json_object_is_type(t, json_type_string) ?
						type_bit(json_object_get_string(t)) : 0;

					if (bit == 0)
						cfail(c, "type", "unknown type name in \"type\"");
					else if (n->types & bit)
						cfail(c, "type", "\"type\" lists a type twice");
					n->types |= bit;
				}
			}
			else
				cfail(c, "type", "\"type\" must be a type name or a non-empty array of them");
		}
		else if (strcmp(kw, "enum") == 0)
		{
			if (!json_object_is_type(val, json_type_array) ||
				json_object_array_length(val) == 0)
				cfail(c, "enum", "\"enum\" must be a non-empty array");
			else
				n->enum_vals = json_object_get(val);
		}
		else if (strcmp(kw, "const") == 0)
		{
			n->const_val = json_object_get(val);
			n->has_const = 1;
		}
		else if (strcmp(kw, "minimum") == 0)
		{
			n->min = number_kw(c, val, kw);
			n->has_min = 1;
		}
		else if (strcmp(kw, "maximum") == 0)
		{
			n->max = number_kw(c, val, kw);
			n->has_max = 1;
		}
		else if (strcmp(kw, "exclusiveMinimum") == 0)
		{
			n->xmin = number_kw(c, val, kw);
			n->has_xmin = 1;
		}
		else if (strcmp(kw, "exclusiveMaximum") == 0)
		{
			n->xmax = number_kw(c, val, kw);
			n->has_xmax = 1;
		}
		else if (strcmp(kw, "multipleOf") == 0)
		{
			n->mult = number_kw(c, val, kw);
			n->has_mult = 1;
			if (!c->failed && n->mult <= 0)
				cfail(c, kw, "\"multipleOf\" must be greater than 0");
		}
		else if (strcmp(kw, "minLength") == 0)
			n->min_len = nonneg_int(c, val, kw);
		else if (strcmp(kw, "maxLength") == 0)
			n->max_len = nonneg_int(c, val, kw);
		else if (strcmp(kw, "minItems") == 0)
			n->min_items = nonneg_int(c, val, kw);
		else if (strcmp(kw, "maxItems") == 0)
			n->max_items = nonneg_int(c, val, kw);
		else if (strcmp(kw, "uniqueItems") == 0)
		{
			if (!json_object_is_type(val, json_type_boolean))
				cfail(c, kw, "\"uniqueItems\" must be a boolean");
			else
				n->unique = json_object_get_boolean(val);
		}
		else if (strcmp(kw, "pattern") == 0)
		{
			const char *src = json_object_get_string(val);
			char		ere[MAX_PATTERN_LEN * 4];
			const char *why = NULL;

			if (!json_object_is_type(val, json_type_string))
				cfail(c, kw, "\"pattern\" must be a string");
			else if (json_object_get_string_len(val) > MAX_PATTERN_LEN ||
					 memchr(src, '\0', (size_t) json_object_get_string_len(val)))
				cfail(c, kw, "\"pattern\" is too long or contains a NUL");
			else if (!translate_pattern(src, ere, sizeof(ere), &why))
				cfail(c, kw, "%s", why);
			else if (pattern_too_complex(ere))
				cfail(c, kw, "\"pattern\" is too complex (repetitions expand too far)");
			else
			{
				n->pattern = calloc(1, sizeof(regex_t));
				n->pattern_src = dup_str(c, src);
				if (n->pattern == NULL || n->pattern_src == NULL)
					cfail(c, kw, "out of memory");
				else if (regcomp(n->pattern, ere, REG_EXTENDED | REG_NOSUB) != 0)
				{
					free(n->pattern);
					n->pattern = NULL;
					cfail(c, kw, "\"pattern\" is not a valid regular expression");
				}
			}
		}
		else if (strcmp(kw, "format") == 0)
		{
			const char *f = json_object_get_string(val);

			if (!json_object_is_type(val, json_type_string))
				cfail(c, kw, "\"format\" must be a string");
			else if (strcmp(f, "uuid") == 0)
				n->format = FMT_UUID;
			else if (strcmp(f, "date-time") == 0)
				n->format = FMT_DATETIME;
			else if (strcmp(f, "email") == 0)
				n->format = FMT_EMAIL;
			else
				cfail(c, kw, "unsupported format (supported: uuid, date-time, email)");
		}
		else if (strcmp(kw, "items") == 0)
		{
			if (json_object_is_type(val, json_type_array))
				cfail(c, kw, "\"items\" must be a single schema (the array form is not supported)");
			else
				n->items = compile_node(c, val, depth + 1);
		}
		else if (strcmp(kw, "required") == 0)
		{
			size_t		i;
			size_t		len;

			if (!json_object_is_type(val, json_type_array))
			{
				cfail(c, kw, "\"required\" must be an array of strings");
				goto next;
			}
			len = json_object_array_length(val);
			n->required = calloc(len + 1, sizeof(char *));
			if (n->required == NULL)
			{
				cfail(c, kw, "out of memory");
				goto next;
			}
			for (i = 0; i < len && !c->failed; i++)
			{
				struct json_object *r = json_object_array_get_idx(val, i);
				int			j;

				if (!json_object_is_type(r, json_type_string))
				{
					cfail(c, kw, "\"required\" must be an array of strings");
					break;
				}
				for (j = 0; j < n->nrequired; j++)
					if (strcmp(n->required[j], json_object_get_string(r)) == 0)
						cfail(c, kw, "\"required\" lists a name twice");
				n->required[n->nrequired] = dup_str(c, json_object_get_string(r));
				if (n->required[n->nrequired])
					n->nrequired++;
			}
		}
		else if (strcmp(kw, "properties") == 0)
		{
			struct json_object_iterator pit;
			struct json_object_iterator pend;
			int			count;

			if (!json_object_is_type(val, json_type_object))
			{
				cfail(c, kw, "\"properties\" must be an object of schemas");
				goto next;
			}
			count = json_object_object_length(val);
			n->props = calloc((size_t) count + 1, sizeof(Prop));
			if (n->props == NULL)
			{
				cfail(c, kw, "out of memory");
				goto next;
			}
			pit = json_object_iter_begin(val);
			pend = json_object_iter_end(val);
			for (; !c->failed && !json_object_iter_equal(&pit, &pend); json_object_iter_next(&pit))
			{
				char		pseg[EP_ERR_PATH_LEN];
				size_t		pold;
				Prop	   *p = &n->props[n->nprops];

				ep_path_member(pseg, sizeof(pseg), json_object_iter_peek_name(&pit),
							   EP_PATH_NAME_MAX);
				pold = path_push(c->path, &c->pathlen, pseg);
				p->name = dup_str(c, json_object_iter_peek_name(&pit));
				p->schema = compile_node(c, json_object_iter_peek_value(&pit), depth + 1);
				if (p->name)
					n->nprops++;
				path_pop(c->path, &c->pathlen, pold);
			}
		}
		else if (strcmp(kw, "additionalProperties") == 0)
		{
			if (json_object_is_type(val, json_type_boolean))
				n->addl = json_object_get_boolean(val) ? 1 : 0;
			else
			{
				n->addl = 1;
				n->addl_schema = compile_node(c, val, depth + 1);
			}
		}
		else
		{
			char		q[64];

			ep_json_excerpt(q, sizeof(q), kw, strlen(kw), 40);
			cfail(c, "schema", "unsupported keyword \"%s\"", q);
		}
next:
		path_pop(c->path, &c->pathlen, old);
	}
}

/* Compile one schema (an object or a boolean). */
static Node *
compile_node(Compiler *c, struct json_object *v, int depth)
{
	Node	   *n;

	if (c->failed)
		return NULL;
	if (depth > c->max_depth)
	{
		cfail(c, "depth", "schema nests deeper than %d levels", c->max_depth);
		return NULL;
	}
	n = new_node(c);
	if (n == NULL)
		return NULL;
	if (json_object_is_type(v, json_type_boolean))
	{
		n->boolean = json_object_get_boolean(v) ? 1 : 0;
		return n;
	}
	if (!json_object_is_type(v, json_type_object))
	{
		cfail(c, "schema", "a schema must be an object or a boolean");
		return n;
	}
	compile_keywords(c, n, v, depth);
	return n;
}

/* Free a schema and everything it owns. */
void
ep_schema_free(EpSchema *s)
{
	Node	   *n;
	int			i;

	if (s == NULL)
		return;
	n = s->nodes;
	while (n)
	{
		Node	   *next = n->next_alloc;

		if (n->enum_vals)
			json_object_put(n->enum_vals);
		if (n->const_val)
			json_object_put(n->const_val);
		if (n->pattern)
		{
			regfree(n->pattern);
			free(n->pattern);
		}
		free(n->pattern_src);
		for (i = 0; i < n->nrequired; i++)
			free(n->required[i]);
		free(n->required);
		for (i = 0; i < n->nprops; i++)
			free(n->props[i].name);
		free(n->props);
		free(n);
		n = next;
	}
	for (i = 0; i < s->ndefs; i++)
		free(s->defs[i].name);
	free(s->defs);
	free(s);
}

/* See jsonschema.h. */
EpSchema *
ep_schema_compile(struct json_object *schema, int max_depth, EpSchemaError *err)
{
	Compiler	c;
	EpSchema   *s;
	struct json_object *defs = NULL;
	int			i;

	memset(err, 0, sizeof(*err));
	memset(&c, 0, sizeof(c));
	s = calloc(1, sizeof(EpSchema));
	if (s == NULL)
	{
		copy_str(err->path, sizeof(err->path), "$");
		copy_str(err->rule, sizeof(err->rule), "schema");
		copy_str(err->message, sizeof(err->message), "out of memory");
		return NULL;
	}
	c.s = s;
	c.err = err;
	c.max_depth = max_depth;
	path_push(c.path, &c.pathlen, "$");

	/* definitions first, so references resolve to them */
	if (json_object_is_type(schema, json_type_object) &&
		(json_object_object_get_ex(schema, "$defs", &defs) ||
		 json_object_object_get_ex(schema, "definitions", &defs)))
	{
		const char *kw = json_object_object_get_ex(schema, "$defs", NULL) ? "$defs" : "definitions";
		struct json_object_iterator it;
		struct json_object_iterator end;
		int			count;

		if (json_object_object_get_ex(schema, "$defs", NULL) &&
			json_object_object_get_ex(schema, "definitions", NULL))
			cfail(&c, "$defs", "use either \"$defs\" or \"definitions\", not both");
		else if (!json_object_is_type(defs, json_type_object))
			cfail(&c, "$defs", "\"%s\" must be an object of schemas", kw);
		else
		{
			count = json_object_object_length(defs);
			s->defs = calloc((size_t) count + 1, sizeof(Def));
			if (s->defs == NULL)
				cfail(&c, "$defs", "out of memory");
			it = json_object_iter_begin(defs);
			end = json_object_iter_end(defs);
			for (; !c.failed && !json_object_iter_equal(&it, &end); json_object_iter_next(&it))
			{
				Def		   *d = &s->defs[s->ndefs];

				d->name = dup_str(&c, json_object_iter_peek_name(&it));
				d->node = new_node(&c);
				if (d->name && d->node)
					s->ndefs++;
			}
			/* now fill them in (they may refer to each other) */
			i = 0;
			it = json_object_iter_begin(defs);
			for (; !c.failed && !json_object_iter_equal(&it, &end); json_object_iter_next(&it), i++)
			{
				struct json_object *dv = json_object_iter_peek_value(&it);
				char		seg[EP_ERR_PATH_LEN];
				size_t		old;
				Node	   *n = s->defs[i].node;

				ep_path_member(seg, sizeof(seg), kw, EP_PATH_NAME_MAX);
				old = path_push(c.path, &c.pathlen, seg);
				ep_path_member(seg, sizeof(seg), s->defs[i].name, EP_PATH_NAME_MAX);
				path_push(c.path, &c.pathlen, seg);
				if (json_object_is_type(dv, json_type_boolean))
					n->boolean = json_object_get_boolean(dv) ? 1 : 0;
				else if (!json_object_is_type(dv, json_type_object))
					cfail(&c, "schema", "a schema must be an object or a boolean");
				else
					compile_keywords(&c, n, dv, 1);
				path_pop(c.path, &c.pathlen, old);
			}
		}
	}
	if (!c.failed)
		s->root = compile_node(&c, schema, 0);

	/* $ref chains that never descend into the instance would loop */
	if (!c.failed)
	{
		Node	   *n;

		for (n = s->nodes; n && !c.failed; n = n->next_alloc)
		{
			Node	   *r = n->ref;
			int			steps = 0;

			while (r && steps <= s->ndefs)
			{
				r = r->ref;
				steps++;
			}
			if (r != NULL)
				cfail(&c, "$ref", "\"$ref\" definitions refer to each other in a cycle");
		}
	}
	if (c.failed)
	{
		ep_schema_free(s);
		return NULL;
	}
	return s;
}

/*------------------------------------------------------------------------
 * Validation
 *------------------------------------------------------------------------
 */

static bool vfail(Validator *v, const char *rule, const char *fmt,...) EP_PRINTF(3, 4);

static bool
vfail(Validator *v, const char *rule, const char *fmt,...)
{
	va_list		ap;

	copy_str(v->err->path, sizeof(v->err->path), v->path);
	copy_str(v->err->rule, sizeof(v->err->rule), rule);
	va_start(ap, fmt);
	vsnprintf(v->err->message, sizeof(v->err->message), fmt, ap);
	va_end(ap);
	return false;
}

static const char *
types_text(int types, char *buf, size_t n)
{
	static const char *const names[] = {"null", "boolean", "object", "array",
	"number", "string", "integer"};
	size_t		o = 0;
	int			i;

	buf[0] = '\0';
	for (i = 0; i < 7; i++)
		if (types & (1 << i))
			o += snprintf(buf + o, n > o ? n - o : 0, "%s%s", o ? " or " : "", names[i]);
	return buf;
}

static int
cmp_u64(const void *a, const void *b)
{
	uint64_t	x = ((const uint64_t *) a)[0];
	uint64_t	y = ((const uint64_t *) b)[0];

	return x < y ? -1 : x > y ? 1 : 0;
}

static bool validate_node(Validator *v, const Node *n, struct json_object *inst, int depth);

/* Numbers: minimum, maximum, exclusive bounds, multipleOf. */
static bool
validate_number(Validator *v, const Node *n, struct json_object *inst)
{
	double		d = json_object_get_double(inst);
	char		val[64];

	value_text(val, sizeof(val), inst);
	if (n->has_min && !(d >= n->min))
		return vfail(v, "minimum", "value %s is less than minimum %.17g", val, n->min);
	if (n->has_max && !(d <= n->max))
		return vfail(v, "maximum", "value %s is greater than maximum %.17g", val, n->max);
	if (n->has_xmin && !(d > n->xmin))
		return vfail(v, "exclusiveMinimum", "value %s is not greater than %.17g", val, n->xmin);
	if (n->has_xmax && !(d < n->xmax))
		return vfail(v, "exclusiveMaximum", "value %s is not less than %.17g", val, n->xmax);
	if (n->has_mult)
	{
		int			ok;

		if (json_object_is_type(inst, json_type_int) && floor(n->mult) == n->mult &&
			n->mult < 9007199254740992.0)
			ok = json_object_get_int64(inst) % (int64_t) n->mult == 0;
		else
		{
			double		q = d / n->mult;

			ok = isfinite(q) && fabs(q - nearbyint(q)) < 1e-9 * (fabs(q) > 1 ? fabs(q) : 1);
		}
		if (!ok)
			return vfail(v, "multipleOf", "value %s is not a multiple of %.17g", val, n->mult);
	}
	return true;
}

/* Strings: length, pattern, format. */
static bool
validate_string(Validator *v, const Node *n, struct json_object *inst)
{
	const char *s = json_object_get_string(inst);
	size_t		len = (size_t) json_object_get_string_len(inst);

	if (n->min_len >= 0 || n->max_len >= 0)
	{
		long		chars = utf8_chars(s, len);

		if (n->min_len >= 0 && chars < n->min_len)
			return vfail(v, "minLength", "string is shorter than %ld characters", n->min_len);
		if (n->max_len >= 0 && chars > n->max_len)
			return vfail(v, "maxLength", "string is longer than %ld characters", n->max_len);
	}
	if (n->pattern)
	{
		regmatch_t	m[1];
		char		q[64];

		m[0].rm_so = 0;
		m[0].rm_eo = (regoff_t) len;
		if (regexec(n->pattern, s, 1, m, REG_STARTEND) != 0)
		{
			ep_json_excerpt(q, sizeof(q), n->pattern_src, strlen(n->pattern_src), 40);
			return vfail(v, "pattern", "string does not match pattern \"%s\"", q);
		}
	}
	if (n->format != FMT_NONE)
	{
		static const char *const names[] = {"", "uuid", "date-time", "email"};

		if (memchr(s, '\0', len) || !ep_format_valid(names[n->format], s, len))
			return vfail(v, "format", "string is not a valid %s", names[n->format]);
	}
	return true;
}

/* Arrays: size, uniqueness, items. */
static bool
validate_array(Validator *v, const Node *n, struct json_object *inst, int depth)
{
	size_t		len = json_object_array_length(inst);
	size_t		i;

	if (n->min_items >= 0 && (long) len < n->min_items)
		return vfail(v, "minItems", "array has fewer than %ld items", n->min_items);
	if (n->max_items >= 0 && (long) len > n->max_items)
		return vfail(v, "maxItems", "array has more than %ld items", n->max_items);
	if (n->unique && len > 1)
	{
		/* hash, sort, and compare only equal hashes: no quadratic blow-up */
		uint64_t   *h = malloc(len * 2 * sizeof(uint64_t));

		if (h == NULL)
			return vfail(v, "uniqueItems", "out of memory");
		for (i = 0; i < len; i++)
		{
			h[2 * i] = json_hash(json_object_array_get_idx(inst, i));
			h[2 * i + 1] = i;
		}
		qsort(h, len, 2 * sizeof(uint64_t), cmp_u64);
		for (i = 0; i + 1 < len; i++)
		{
			size_t		j;

			for (j = i + 1; j < len && h[2 * j] == h[2 * i]; j++)
			{
				size_t		a = (size_t) h[2 * i + 1];
				size_t		b = (size_t) h[2 * j + 1];

				if (ep_json_equal(json_object_array_get_idx(inst, a),
								  json_object_array_get_idx(inst, b)))
				{
					free(h);
					return vfail(v, "uniqueItems", "array items %zu and %zu are equal",
								 a < b ? a : b, a < b ? b : a);
				}
			}
		}
		free(h);
	}
	if (n->items)
	{
		for (i = 0; i < len; i++)
		{
			char		seg[32];
			size_t		old;
			bool		ok;

			snprintf(seg, sizeof(seg), "[%zu]", i);
			old = path_push(v->path, &v->pathlen, seg);
			ok = validate_node(v, n->items, json_object_array_get_idx(inst, i), depth + 1);
			if (!ok)
				return false;
			path_pop(v->path, &v->pathlen, old);
		}
	}
	return true;
}

/* Objects: required, properties, additionalProperties. */
static bool
validate_object(Validator *v, const Node *n, struct json_object *inst, int depth)
{
	int			i;

	for (i = 0; i < n->nrequired; i++)
	{
		if (!json_object_object_get_ex(inst, n->required[i], NULL))
		{
			char		q[64];

			ep_json_excerpt(q, sizeof(q), n->required[i], strlen(n->required[i]), 40);
			return vfail(v, "required", "missing required property \"%s\"", q);
		}
	}
	for (i = 0; i < n->nprops; i++)
	{
		struct json_object *pv;

		if (json_object_object_get_ex(inst, n->props[i].name, &pv))
		{
			char		seg[EP_ERR_PATH_LEN];
			size_t		old;

			ep_path_member(seg, sizeof(seg), n->props[i].name, EP_PATH_NAME_MAX);
			old = path_push(v->path, &v->pathlen, seg);
			if (!validate_node(v, n->props[i].schema, pv, depth + 1))
				return false;
			path_pop(v->path, &v->pathlen, old);
		}
	}
	if (n->addl == 0 || n->addl_schema)
	{
		struct json_object_iterator it = json_object_iter_begin(inst);
		struct json_object_iterator end = json_object_iter_end(inst);

		for (; !json_object_iter_equal(&it, &end); json_object_iter_next(&it))
		{
			const char *name = json_object_iter_peek_name(&it);
			int			declared = 0;
			char		seg[EP_ERR_PATH_LEN];
			size_t		old;

			for (i = 0; i < n->nprops && !declared; i++)
				if (strcmp(n->props[i].name, name) == 0)
					declared = 1;
			if (declared)
				continue;
			ep_path_member(seg, sizeof(seg), name, EP_PATH_NAME_MAX);
			old = path_push(v->path, &v->pathlen, seg);
			if (n->addl == 0)
			{
				char		q[64];

				ep_json_excerpt(q, sizeof(q), name, strlen(name), 40);
				return vfail(v, "additionalProperties", "property \"%s\" is not allowed", q);
			}
			if (!validate_node(v, n->addl_schema, json_object_iter_peek_value(&it), depth + 1))
				return false;
			path_pop(v->path, &v->pathlen, old);
		}
	}
	return true;
}

/* Validate an instance against one node. */
static bool
validate_node(Validator *v, const Node *n, struct json_object *inst, int depth)
{
	int			it;

	if (depth > v->max_depth)
		return vfail(v, "depth", "nesting deeper than %d levels", v->max_depth);
	if (n->boolean == 0)
		return vfail(v, "false", "no value is allowed here");
	if (n->boolean == 1)
		return true;
	if (n->ref && !validate_node(v, n->ref, inst, depth))
		return false;
	it = instance_types(inst);
	if (n->types && !(n->types & it) &&
		!((n->types & T_NUMBER) && (it & T_NUMBER)))
	{
		char		want[96];

		return vfail(v, "type", "expected %s, got %s",
					 types_text(n->types, want, sizeof(want)), type_name(inst));
	}
	if (n->enum_vals)
	{
		size_t		i;
		int			found = 0;

		for (i = 0; i < json_object_array_length(n->enum_vals) && !found; i++)
			if (ep_json_equal(inst, json_object_array_get_idx(n->enum_vals, i)))
				found = 1;
		if (!found)
		{
			char		val[64];

			value_text(val, sizeof(val), inst);
			return vfail(v, "enum", "value %s is not one of the allowed values", val);
		}
	}
	if (n->has_const && !ep_json_equal(inst, n->const_val))
	{
		char		val[64];

		value_text(val, sizeof(val), inst);
		return vfail(v, "const", "value %s is not the required constant", val);
	}
	if ((it & T_NUMBER) && !validate_number(v, n, inst))
		return false;
	if ((it & T_STRING) && !validate_string(v, n, inst))
		return false;
	if ((it & T_ARRAY) && !validate_array(v, n, inst, depth))
		return false;
	if ((it & T_OBJECT) && !validate_object(v, n, inst, depth))
		return false;
	return true;
}

/* Instance nesting depth check, iterative over arrays and objects. */
static int
deeper_than(struct json_object *inst, int limit)
{
	if (limit < 0)
		return 1;
	if (json_object_is_type(inst, json_type_array))
	{
		size_t		i;

		for (i = 0; i < json_object_array_length(inst); i++)
			if (deeper_than(json_object_array_get_idx(inst, i), limit - 1))
				return 1;
	}
	else if (json_object_is_type(inst, json_type_object))
	{
		struct json_object_iterator it = json_object_iter_begin(inst);
		struct json_object_iterator end = json_object_iter_end(inst);

		for (; !json_object_iter_equal(&it, &end); json_object_iter_next(&it))
			if (deeper_than(json_object_iter_peek_value(&it), limit - 1))
				return 1;
	}
	return 0;
}

/* See jsonschema.h. */
bool
ep_schema_validate(const EpSchema *schema, struct json_object *instance,
				   const char *root_path, int max_depth, EpSchemaError *err)
{
	Validator	v;

	memset(err, 0, sizeof(*err));
	memset(&v, 0, sizeof(v));
	v.err = err;
	v.max_depth = max_depth;
	path_push(v.path, &v.pathlen, root_path ? root_path : "$");
	/* bound recursion before walking the instance with the schema */
	if (deeper_than(instance, max_depth))
		return vfail(&v, "depth", "nesting deeper than %d levels", max_depth);
	if (schema == NULL || schema->root == NULL)
		return true;
	return validate_node(&v, schema->root, instance, 0);
}
