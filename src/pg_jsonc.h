/*-------------------------------------------------------------------------
 *
 * pg_jsonc.h
 *	  Include json-c next to PostgreSQL headers. PostgreSQL declares a SQL
 *	  function named json_object, json-c a type of that name: hide the
 *	  former. Include this right after postgres.h.
 *
 *-------------------------------------------------------------------------
 */
#ifndef EVPIPE_PG_JSONC_H
#define EVPIPE_PG_JSONC_H

#define json_object pg_builtin_json_object
#include "utils/fmgrprotos.h"
#undef json_object
#include <json-c/json.h>

#endif							/* EVPIPE_PG_JSONC_H */
