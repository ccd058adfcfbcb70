/*-------------------------------------------------------------------------
 *
 * function.c
 *	  The function destination kind: each claimed row is handed to its
 *	  handler in the database during the claim (the host runs it: handler.c
 *	  inside the server, evpipe._deliver_function from evpiped), and its
 *	  outcome commits with the claim, together with the handler's writes.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "engine.h"
#include "enginedb.h"

/* Deliver one row to its handler and settle it. */
static void
deliver_row(DestConfig *d, DeliveryItem *item)
{
	ItemResult	res;
	bool		permanent = false;
	char	   *error = ep_db_deliver_function(d->name, item->body, d->timeout_ms, &permanent);

	if (error == NULL)
		ep_result_set(&res, true, false, 0, NULL);
	else
		ep_result_set(&res, false, permanent, 0, "%s", error);
	ep_settle_item(d, item, &res, NULL, -1);
}

const DeliveryKind function_kind = {
	.name = "function",
	.in_database = true,
	.deliver = deliver_row,
};
