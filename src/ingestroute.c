/*-------------------------------------------------------------------------
 *
 * ingestroute.c
 *	  Routing: which rules match an event (and why, for route_explain), its
 *	  destinations in rule order, and its ordering key for each ordered
 *	  destination.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "utils/jsonb.h"

#include "evpipe.h"
#include "ingest.h"

/* Whether a route matches an event; *why explains the decision. */
bool
ep_ingest_route_matches(EpRouteEntry *r, EpEvent *ev, char **why)
{
	if (!r->enabled)
	{
		*why = "rule is disabled";
		return false;
	}
	if (r->is_prefix)
	{
		if (strncmp(ev->event_type, r->pattern, r->prefix_len) != 0)
		{
			*why = psprintf("event type %s does not start with %.*s",
							ev->event_type, r->prefix_len, r->pattern);
			return false;
		}
	}
	else if (strcmp(ev->event_type, r->pattern) != 0)
	{
		*why = psprintf("event type %s is not %s", ev->event_type, r->pattern);
		return false;
	}
	if (r->source && strcmp(r->source, ev->source) != 0)
	{
		*why = psprintf("source %s is not %s", ev->source, r->source);
		return false;
	}
	if (r->priority && (ev->priority == NULL || strcmp(r->priority, ev->priority) != 0))
	{
		*why = ev->priority ? psprintf("priority %s is not %s", ev->priority, r->priority)
			: psprintf("event has no priority, rule needs %s", r->priority);
		return false;
	}
	*why = psprintf("event type %s %s %s%s%s%s%s",
					ev->event_type, r->is_prefix ? "matches prefix" : "is",
					r->pattern,
					r->source ? ", source is " : "", r->source ? r->source : "",
					r->priority ? ", priority is " : "",
					r->priority ? r->priority : "");
	return true;
}

/* Destinations of an event in rule order, without repeats. */
List *
ep_ingest_route_event(EpEvent *ev)
{
	List	   *dests = NIL;
	int			i;

	for (i = 0; i < ep_ingest_config.nroutes; i++)
	{
		EpRouteEntry *r = &ep_ingest_config.routes[i];
		char	   *why;
		ListCell   *lc;
		bool		seen = false;

		if (!ep_ingest_route_matches(r, ev, &why))
			continue;
		foreach(lc, dests)
			if (strcmp(lfirst(lc), r->destination) == 0)
				seen = true;
		if (!seen)
			dests = lappend(dests, r->destination);
	}
	return dests;
}

/* Order destination entries by name, bytewise (as the load sorts them). */
static int
cmp_orders(const void *a, const void *b)
{
	return strcmp(((const EpOrderEntry *) a)->destination,
				  ((const EpOrderEntry *) b)->destination);
}

/*
 * The ordering key of an event for a destination: the value at the
 * destination's ordering_key path (a string as it is, other values as JSON
 * text), "" when the member is absent or null (the default group), or NULL
 * when the destination is not ordered.
 */
char *
ep_ingest_ordering_key(Jsonb *envelope, const char *destination)
{
	EpOrderEntry key;
	EpOrderEntry *o;
	JsonbContainer *c = &envelope->root;
	JsonbValue *v = NULL;
	char	   *path;
	char	   *seg;
	char	   *save = NULL;

	if (ep_ingest_config.norders == 0)
		return NULL;
	key.destination = (char *) destination;
	o = bsearch(&key, ep_ingest_config.orders, ep_ingest_config.norders, sizeof(EpOrderEntry), cmp_orders);
	if (o == NULL)
		return NULL;
	path = pstrdup(o->path);
	for (seg = strtok_r(path, ".", &save); seg; seg = strtok_r(NULL, ".", &save))
	{
		if (c == NULL || !JsonContainerIsObject(c))
			return pstrdup("");
		v = evpipe_jsonb_get(c, seg);
		if (v == NULL)
			return pstrdup("");
		c = v->type == jbvBinary ? v->val.binary.data : NULL;
	}
	if (v == NULL || v->type == jbvNull)
		return pstrdup("");
	if (v->type == jbvString)
		return pnstrdup(v->val.string.val, v->val.string.len);
	if (v->type == jbvBinary)
		return JsonbToCString(NULL, v->val.binary.data, v->val.binary.len);
	return JsonbToCString(NULL, &JsonbValueToJsonb(v)->root, 0);
}

/* The ordering keys of an event for its destinations; NIL if none is ordered. */
List *
ep_ingest_ordering_keys(Jsonb *envelope, List *dests)
{
	List	   *keys = NIL;
	bool		any = false;
	ListCell   *lc;

	if (ep_ingest_config.norders == 0)
		return NIL;
	foreach(lc, dests)
	{
		char	   *k = ep_ingest_ordering_key(envelope, lfirst(lc));

		any |= (k != NULL);
		keys = lappend(keys, k);
	}
	return any ? keys : NIL;
}
