/*-------------------------------------------------------------------------
 *
 * metricsql.c
 *	  evpipe.metrics(): the metrics (metrics.c) in the Prometheus text
 *	  format, from SQL, with the count of delivery workers running.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "executor/spi.h"
#include "fmgr.h"
#include "lib/stringinfo.h"
#include "utils/builtins.h"

#include "metrics.h"

PG_FUNCTION_INFO_V1(evpipe_metrics);

/* SQL: evpipe.metrics() RETURNS text */
Datum
evpipe_metrics(PG_FUNCTION_ARGS)
{
	StringInfoData out;

	initStringInfo(&out);
	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "evpipe: SPI_connect failed");
	ep_metrics_render(&out, true);
	if (SPI_execute("SELECT count(*) FROM pg_catalog.pg_stat_activity"
					" WHERE backend_type = 'evpipe delivery worker'", true, 0) == SPI_OK_SELECT &&
		SPI_processed == 1)
	{
		appendStringInfoString(&out, "# HELP evpipe_workers_alive Delivery workers running.\n"
							   "# TYPE evpipe_workers_alive gauge\n");
		appendStringInfo(&out, "evpipe_workers_alive %s\n",
						 SPI_getvalue(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1));
	}
	SPI_finish();
	PG_RETURN_TEXT_P(cstring_to_text(out.data));
}
