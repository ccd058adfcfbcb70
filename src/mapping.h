/*-------------------------------------------------------------------------
 *
 * mapping.h
 *	  JSON-path segments and the rules of mapped sources (sources that
 *	  cannot send the envelope). No PostgreSQL dependency, so they can be
 *	  unit-tested and fuzzed alone; src/ingestenvelope.c and
 *	  src/jsonschema.c both use them.
 *
 *-------------------------------------------------------------------------
 */
#ifndef EVPIPE_MAPPING_H
#define EVPIPE_MAPPING_H

#include <stdbool.h>
#include <stddef.h>

/*------------------------------------------------------------------------
 * JSON paths
 *
 * A path is "$" followed by segments: [3] for an array element, .name for
 * a member whose name is [A-Za-z_][A-Za-z0-9_]*, and ["name"] for any
 * other member, the name written as the contents of a JSON string ("\"",
 * "\\" and "\u00XX" for control characters; other bytes as they are). A
 * name longer than the limit is shortened on a UTF-8 boundary and ends in
 * "..." inside the quotes; the functions say when they shortened.
 *------------------------------------------------------------------------
 */

/* Bytes of an odd member name kept in a validator path. */
#define EP_PATH_NAME_MAX 48
/* Bytes of a mapped source's member name kept in its path. */
#define EP_MAPPED_NAME_MAX 128

/* Whether a member name can be written as .name (ASCII, not empty). */
extern bool ep_path_plain_name(const char *name);

/*
 * Write s[0..len) as the contents of a JSON string, at most `max` bytes of
 * it, into out (outlen bytes, always NUL-terminated when outlen > 0). When
 * it does not all fit, it is cut on a UTF-8 boundary and "..." is added;
 * returns whether all of s was written.
 */
extern bool ep_json_excerpt(char *out, size_t outlen, const char *s,
							size_t len, size_t max);

/*
 * Write the path segment of member `name`: .name or ["name"] (an odd name
 * shortened to `max` bytes). Returns whether the segment names the member
 * exactly; false also when outlen is too small for any segment (under 8
 * bytes: out is then empty).
 */
extern bool ep_path_member(char *out, size_t outlen, const char *name,
						   size_t max);

/*------------------------------------------------------------------------
 * Mapped sources: eventId and timestamp come from two configured members,
 * every other member becomes the payload.
 *------------------------------------------------------------------------
 */

/* The path of a mapped source's member: "$" and its segment. */
extern bool ep_mapped_path(char *out, size_t outlen, const char *field);

typedef enum EpMappedMember
{
	EP_MAPPED_PAYLOAD = 0,		/* goes to the payload */
	EP_MAPPED_ID,				/* the eventId member */
	EP_MAPPED_TIMESTAMP			/* the timestamp member */
} EpMappedMember;

/* Where member name[0..len) of a raw event goes. */
extern EpMappedMember ep_mapped_member(const char *name, size_t len,
									   const char *id_field,
									   const char *ts_field);

/* The JSON type of the eventId member, as far as the rule cares. */
typedef enum EpJsonKind
{
	EP_JSON_OTHER = 0,			/* null, boolean, object, array */
	EP_JSON_NUMBER,
	EP_JSON_STRING
} EpJsonKind;

#define EP_MAPPED_ID_TYPE (-1)	/* neither a string nor an integer */
#define EP_MAPPED_ID_LONG (-2)	/* does not fit in out */

/*
 * The eventId of a mapped event from its id member. A string is taken as
 * it is (text[0..len), copied). A number (text: its JSON number text,
 * e.g. numeric_out's) is an id only when it is an integer the way
 * PostgreSQL's numeric keeps it — no digits after the point once the
 * exponent is applied, so 42, -7, 1e2 and 1.5e1 are ids ("42", "-7", "100",
 * "15") and 1.0, 1.50e1 and 1e-1 are not — written canonically (no "+", no
 * leading zeros, "0" for any zero). Returns the length written to out
 * (NUL-terminated), EP_MAPPED_ID_TYPE or EP_MAPPED_ID_LONG. A number
 * without an exponent never gets longer, so outlen = len + 1 suffices.
 */
extern long ep_mapped_id(EpJsonKind kind, const char *text, size_t len,
						 char *out, size_t outlen);

#endif							/* EVPIPE_MAPPING_H */
