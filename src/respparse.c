/*-------------------------------------------------------------------------
 *
 * respparse.c
 *	  Parsing of SQS and GraphQL answers with json-c, and trace header
 *	  conversion. Never trusts the answer: any shape is handled.
 *
 *-------------------------------------------------------------------------
 */
#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <json-c/json.h>

#include "respparse.h"

#define MAX_ANSWER_DEPTH 32

/* Parse JSON text of a known length; NULL if it is not JSON. */
static struct json_object *
parse(const char *json, size_t len)
{
	struct json_tokener *tok;
	struct json_object *obj;

	if (json == NULL || len == 0 || len > 16 * 1024 * 1024)
		return NULL;
	tok = json_tokener_new_ex(MAX_ANSWER_DEPTH);
	if (tok == NULL)
		return NULL;
	obj = json_tokener_parse_ex(tok, json, (int) len);
	if (json_tokener_get_error(tok) != json_tokener_success)
	{
		if (obj)
			json_object_put(obj);
		obj = NULL;
	}
	json_tokener_free(tok);
	return obj;
}

/* Copy a string member (or "") into a buffer, control characters blanked. */
static void
member_str(struct json_object *o, const char *key, char *out, size_t outlen)
{
	struct json_object *v;
	const char *s = "";
	size_t		i;

	if (outlen == 0)
		return;
	if (json_object_is_type(o, json_type_object) &&
		json_object_object_get_ex(o, key, &v) &&
		json_object_is_type(v, json_type_string))
		s = json_object_get_string(v);
	snprintf(out, outlen, "%s", s);
	for (i = 0; out[i]; i++)
		if ((unsigned char) out[i] < 0x20)
			out[i] = ' ';
}

/* See respparse.h. */
int
ep_sqs_parse_batch(const char *json, size_t len, int n, EpEntryResult *out)
{
	struct json_object *root = parse(json, len);
	struct json_object *list;
	size_t		i;
	int			k;

	for (k = 0; k < n; k++)
		memset(&out[k], 0, sizeof(out[k]));
	if (root == NULL)
		return -1;
	if (!json_object_is_type(root, json_type_object))
	{
		json_object_put(root);
		return -1;
	}
	if (json_object_object_get_ex(root, "Successful", &list) &&
		json_object_is_type(list, json_type_array))
	{
		for (i = 0; i < json_object_array_length(list); i++)
		{
			char		id[16];
			char	   *end;
			long		idx;

			member_str(json_object_array_get_idx(list, i), "Id", id, sizeof(id));
			idx = strtol(id, &end, 10);
			if (id[0] && *end == '\0' && idx >= 0 && idx < n)
				out[idx].state = EP_ENTRY_OK;
		}
	}
	if (json_object_object_get_ex(root, "Failed", &list) &&
		json_object_is_type(list, json_type_array))
	{
		for (i = 0; i < json_object_array_length(list); i++)
		{
			struct json_object *e = json_object_array_get_idx(list, i);
			struct json_object *sf;
			char		id[16];
			char	   *end;
			long		idx;

			member_str(e, "Id", id, sizeof(id));
			idx = strtol(id, &end, 10);
			if (!(id[0] && *end == '\0' && idx >= 0 && idx < n))
				continue;
			out[idx].state = EP_ENTRY_FAILED;
			out[idx].sender_fault =
				json_object_object_get_ex(e, "SenderFault", &sf) &&
				json_object_is_type(sf, json_type_boolean) &&
				json_object_get_boolean(sf);
			member_str(e, "Code", out[idx].code, sizeof(out[idx].code));
			member_str(e, "Message", out[idx].message, sizeof(out[idx].message));
		}
	}
	json_object_put(root);
	return 0;
}

/* See respparse.h. */
int
ep_sqs_error(long status, const char *json, size_t len, char *code,
			 size_t codelen, char *msg, size_t msglen)
{
	static const char *const transient[] = {
		"ThrottlingException", "RequestThrottled", "Throttling",
		"ServiceUnavailable", "InternalError", "InternalFailure",
		"KmsThrottled", "RequestTimeout", NULL};
	struct json_object *root = parse(json, len);
	char		type[128] = "";
	const char *hash;
	int			i;

	if (codelen)
		code[0] = '\0';
	if (msglen)
		msg[0] = '\0';
	if (root)
	{
		member_str(root, "__type", type, sizeof(type));
		member_str(root, "message", msg, msglen);
		if (msglen && msg[0] == '\0')
			member_str(root, "Message", msg, msglen);
		json_object_put(root);
	}
	hash = strrchr(type, '#');
	snprintf(code, codelen, "%s", hash ? hash + 1 : type);
	if (codelen && code[0] == '\0')
		snprintf(code, codelen, "HTTP%ld", status);
	for (i = 0; transient[i]; i++)
		if (strcmp(code, transient[i]) == 0)
			return 1;
	return status >= 500 || status == 429 || status == 408;
}

/* See respparse.h. */
int
ep_graphql_result(const char *json, size_t len, char *msg, size_t msglen)
{
	static const char *const permanent[] = {
		"GRAPHQL_VALIDATION_FAILED", "GRAPHQL_PARSE_FAILED", "BAD_USER_INPUT",
		"BAD_REQUEST", "FORBIDDEN", "UNAUTHENTICATED",
		"PERSISTED_QUERY_NOT_SUPPORTED", NULL};
	struct json_object *root = parse(json, len);
	struct json_object *errors;
	size_t		i;
	size_t		o = 0;
	int			perm = 0;
	char		codes[160] = "";
	size_t		co = 0;

	if (msglen)
		msg[0] = '\0';
	if (root == NULL || !json_object_is_type(root, json_type_object))
	{
		if (root)
			json_object_put(root);
		return EP_GQL_INVALID;
	}
	if (!json_object_object_get_ex(root, "errors", &errors) ||
		!json_object_is_type(errors, json_type_array) ||
		json_object_array_length(errors) == 0)
	{
		json_object_put(root);
		return EP_GQL_OK;
	}
	for (i = 0; i < json_object_array_length(errors); i++)
	{
		struct json_object *e = json_object_array_get_idx(errors, i);
		struct json_object *ext;
		char		m[200];
		char		c[64] = "";
		int			k;

		member_str(e, "message", m, sizeof(m));
		if (json_object_is_type(e, json_type_object) &&
			json_object_object_get_ex(e, "extensions", &ext))
			member_str(ext, "code", c, sizeof(c));
		if (o + 4 < msglen)
			o += (size_t) snprintf(msg + o, msglen - o, "%s%s", o ? "; " : "", m);
		if (o >= msglen)
			o = msglen ? msglen - 1 : 0;
		if (c[0])
		{
			if (co + 4 < sizeof(codes))
				co += (size_t) snprintf(codes + co, sizeof(codes) - co, "%s%s", co ? ", " : "", c);
			if (co >= sizeof(codes))
				co = sizeof(codes) - 1;
			for (k = 0; permanent[k]; k++)
				if (strcmp(c, permanent[k]) == 0)
					perm = 1;
		}
	}
	if (codes[0] && o + 4 < msglen)
		snprintf(msg + o, msglen - o, " (%s)", codes);
	json_object_put(root);
	return perm ? EP_GQL_PERMANENT : EP_GQL_TRANSIENT;
}

/* See respparse.h. */
int
ep_xray_from_traceparent(const char *tp, char *out, size_t outlen)
{
	size_t		i;
	int			flags;

	if (tp == NULL || strlen(tp) < 55 || tp[2] != '-' || tp[35] != '-' ||
		tp[52] != '-')
		return -1;
	for (i = 0; i < 55; i++)
		if (i != 2 && i != 35 && i != 52 && !isxdigit((unsigned char) tp[i]))
			return -1;
	flags = (int) strtol((char[3]) {tp[53], tp[54], '\0'}, NULL, 16);
	if (snprintf(out, outlen, "Root=1-%.8s-%.24s;Parent=%.16s;Sampled=%d",
				 tp + 3, tp + 11, tp + 36, flags & 1) >= (int) outlen)
		return -1;
	return 0;
}
