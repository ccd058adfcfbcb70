/*-------------------------------------------------------------------------
 *
 * metrics.c
 *	  Counters in shared memory (they survive worker restarts; in evpiped,
 *	  in its own memory), rendered with gauges computed at scrape time in
 *	  the Prometheus text exposition format (for evpipe.metrics() in
 *	  metricsql.c, and evpiped's /metrics).
 *
 *	  Slots live in an open-addressing table keyed by (kind, label a, label
 *	  b). A slot is claimed once under a spinlock and never freed; counters
 *	  are atomics, so the hot paths take no lock.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "lib/stringinfo.h"
#include "port/atomics.h"
#include "storage/shmem.h"
#include "storage/spin.h"

#include "enginedb.h"
#include "evpipe.h"
#include "metrics.h"
#include "ratelimit.h"

#define METRIC_SLOTS 4096
#define LABEL_LEN 136
#define NBUCKETS 12

/* latency bucket upper bounds, in seconds */
static const double bucket_le[NBUCKETS] = {
	0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 5, 30};

typedef struct MetricSlot
{
	pg_atomic_uint32 state;		/* 0 empty, 1 being filled, 2 ready */
	char		kind;
	char		a[LABEL_LEN];
	char		b[LABEL_LEN];
	pg_atomic_uint64 c[EP_M_NCOUNTERS];
	pg_atomic_uint64 bucket[NBUCKETS];
	pg_atomic_uint64 lat_count;
	pg_atomic_uint64 lat_sum_us;
} MetricSlot;

typedef struct MetricsShared
{
	slock_t		mutex;
	MetricSlot	slots[METRIC_SLOTS];
} MetricsShared;

static MetricsShared *metrics = NULL;

Size
ep_metrics_shmem_size(void)
{
	return sizeof(MetricsShared);
}

void
ep_metrics_shmem_init(void *base, bool found)
{
	metrics = (MetricsShared *) base;
	if (!found)
	{
		int			i;
		int			k;

		SpinLockInit(&metrics->mutex);
		for (i = 0; i < METRIC_SLOTS; i++)
		{
			MetricSlot *s = &metrics->slots[i];

			pg_atomic_init_u32(&s->state, 0);
			for (k = 0; k < EP_M_NCOUNTERS; k++)
				pg_atomic_init_u64(&s->c[k], 0);
			for (k = 0; k < NBUCKETS; k++)
				pg_atomic_init_u64(&s->bucket[k], 0);
			pg_atomic_init_u64(&s->lat_count, 0);
			pg_atomic_init_u64(&s->lat_sum_us, 0);
		}
	}
}

static uint32
key_hash(char kind, const char *a, const char *b)
{
	uint32		h = 2166136261u ^ (uint8) kind;

	for (; *a; a++)
		h = (h ^ (uint8) *a) * 16777619u;
	h = (h ^ 0xff) * 16777619u;
	for (; *b; b++)
		h = (h ^ (uint8) *b) * 16777619u;
	return h;
}

/* The slot of a key, created on first use; NULL if the table is full. */
static MetricSlot *
slot_for(char kind, const char *a, const char *b)
{
	uint32		h;
	int			i;

	if (metrics == NULL)
		return NULL;
	if (a == NULL)
		a = "";
	if (b == NULL)
		b = "";
	h = key_hash(kind, a, b);
	for (i = 0; i < METRIC_SLOTS; i++)
	{
		MetricSlot *s = &metrics->slots[(h + i) % METRIC_SLOTS];
		uint32		st = pg_atomic_read_u32(&s->state);

		if (st == 0)
		{
			/* claim it under the lock, unless someone else just did */
			SpinLockAcquire(&metrics->mutex);
			if (pg_atomic_read_u32(&s->state) == 0)
			{
				s->kind = kind;
				strlcpy(s->a, a, LABEL_LEN);
				strlcpy(s->b, b, LABEL_LEN);
				pg_write_barrier();
				pg_atomic_write_u32(&s->state, 2);
				SpinLockRelease(&metrics->mutex);
				return s;
			}
			SpinLockRelease(&metrics->mutex);
			st = pg_atomic_read_u32(&s->state);
		}
		if (st == 2)
		{
			pg_read_barrier();
			if (s->kind == kind && strncmp(s->a, a, LABEL_LEN - 1) == 0 &&
				strncmp(s->b, b, LABEL_LEN - 1) == 0)
				return s;
		}
	}
	return NULL;
}

/* Add n to a counter. */
void
ep_metric_add(char kind, const char *a, const char *b, int counter, uint64 n)
{
	MetricSlot *s = slot_for(kind, a, b);

	if (s && counter >= 0 && counter < EP_M_NCOUNTERS)
		pg_atomic_fetch_add_u64(&s->c[counter], n);
}

/* Record a delivery latency for (destination, event type). */
void
ep_metric_latency(const char *dest, const char *type, int64 usecs)
{
	MetricSlot *s = slot_for(EP_MK_DELIVERY, dest, type);
	int			i;

	if (s == NULL)
		return;
	if (usecs < 0)
		usecs = 0;
	for (i = 0; i < NBUCKETS; i++)
		if ((double) usecs / 1e6 <= bucket_le[i])
		{
			pg_atomic_fetch_add_u64(&s->bucket[i], 1);
			break;
		}
	pg_atomic_fetch_add_u64(&s->lat_count, 1);
	pg_atomic_fetch_add_u64(&s->lat_sum_us, (uint64) usecs);
}

/* Append a label value, escaped for the exposition format. */
static void
label(StringInfo out, const char *name, const char *v)
{
	appendStringInfo(out, "%s=\"", name);
	for (; *v; v++)
	{
		if (*v == '\\')
			appendStringInfoString(out, "\\\\");
		else if (*v == '"')
			appendStringInfoString(out, "\\\"");
		else if (*v == '\n')
			appendStringInfoString(out, "\\n");
		else
			appendStringInfoChar(out, *v);
	}
	appendStringInfoChar(out, '"');
}

static void
header(StringInfo out, const char *name, const char *type, const char *help)
{
	appendStringInfo(out, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

/* One counter family over the slots of one kind. */
static void
counter_family(StringInfo out, const char *name, const char *help, char kind,
			   int counter, const char *la, const char *lb)
{
	int			i;

	header(out, name, "counter", help);
	for (i = 0; i < METRIC_SLOTS; i++)
	{
		MetricSlot *s = &metrics->slots[i];

		if (pg_atomic_read_u32(&s->state) != 2 || s->kind != kind)
			continue;
		appendStringInfo(out, "%s{", name);
		label(out, la, s->a);
		if (lb)
		{
			appendStringInfoChar(out, ',');
			label(out, lb, s->b);
		}
		appendStringInfo(out, "} " UINT64_FORMAT "\n",
						 pg_atomic_read_u64(&s->c[counter]));
	}
}

/*
 * The metrics in the Prometheus text format: this process's counters (in
 * the server, every backend's: they are in shared memory) and, if gauges
 * (an open transaction is needed), gauges from the tables and the rate
 * limiter.
 */
void
ep_metrics_render(StringInfo out, bool gauges)
{
	int			i;
	uint64		r;
	EpRows	   *rows;

	if (metrics != NULL)
	{
		counter_family(out, "evpipe_events_ingested_total", "Events accepted by evpipe.ingest.",
					   EP_MK_INGEST, EP_M_INGESTED, "event_type", NULL);
		counter_family(out, "evpipe_events_duplicate_total", "Ingests of an event that existed already (nothing written).",
					   EP_MK_INGEST, EP_M_DUPLICATE, "event_type", NULL);
		counter_family(out, "evpipe_events_rejected_total", "Ingests refused, by reason (the rule or SQLSTATE).",
					   EP_MK_REJECT, 0, "reason", NULL);
		counter_family(out, "evpipe_ingest_throttled_total", "Ingests refused by a source's limit (PT429).",
					   EP_MK_THROTTLE, 0, "source", NULL);
		counter_family(out, "evpipe_delivered_total", "Deliveries that succeeded.",
					   EP_MK_DELIVERY, EP_M_DELIVERED, "destination", "event_type");
		counter_family(out, "evpipe_retries_total", "Failed attempts scheduled for a retry.",
					   EP_MK_DELIVERY, EP_M_RETRIED, "destination", "event_type");
		counter_family(out, "evpipe_dead_letters_total", "Deliveries moved to the dead-letter table.",
					   EP_MK_DELIVERY, EP_M_DEAD, "destination", "event_type");

		header(out, "evpipe_delivery_latency_seconds", "histogram",
			   "Time from ingest commit to successful delivery.");
		for (i = 0; i < METRIC_SLOTS; i++)
		{
			MetricSlot *s = &metrics->slots[i];
			uint64		cum = 0;
			int			k;

			if (pg_atomic_read_u32(&s->state) != 2 || s->kind != EP_MK_DELIVERY ||
				pg_atomic_read_u64(&s->lat_count) == 0)
				continue;
			for (k = 0; k < NBUCKETS; k++)
			{
				cum += pg_atomic_read_u64(&s->bucket[k]);
				appendStringInfoString(out, "evpipe_delivery_latency_seconds_bucket{");
				label(out, "destination", s->a);
				appendStringInfoChar(out, ',');
				label(out, "event_type", s->b);
				appendStringInfo(out, ",le=\"%g\"} " UINT64_FORMAT "\n", bucket_le[k], cum);
			}
			appendStringInfoString(out, "evpipe_delivery_latency_seconds_bucket{");
			label(out, "destination", s->a);
			appendStringInfoChar(out, ',');
			label(out, "event_type", s->b);
			appendStringInfo(out, ",le=\"+Inf\"} " UINT64_FORMAT "\n",
							 pg_atomic_read_u64(&s->lat_count));
			appendStringInfoString(out, "evpipe_delivery_latency_seconds_sum{");
			label(out, "destination", s->a);
			appendStringInfoChar(out, ',');
			label(out, "event_type", s->b);
			appendStringInfo(out, "} %.6f\n", pg_atomic_read_u64(&s->lat_sum_us) / 1e6);
			appendStringInfoString(out, "evpipe_delivery_latency_seconds_count{");
			label(out, "destination", s->a);
			appendStringInfoChar(out, ',');
			label(out, "event_type", s->b);
			appendStringInfo(out, "} " UINT64_FORMAT "\n", pg_atomic_read_u64(&s->lat_count));
		}
	}

	/* gauges from the tables, at scrape time */
	if (!gauges)
		return;
	rows = ep_db_exec(EP_SQL_GAUGES, NULL);
	{
		StringInfoData pending;
		StringInfoData inflight;
		StringInfoData age;
		StringInfoData waits;
		StringInfoData circuits;

		initStringInfo(&pending);
		initStringInfo(&inflight);
		initStringInfo(&age);
		initStringInfo(&waits);
		initStringInfo(&circuits);
		for (r = 0; r < rows->processed; r++)
		{
			const char *name = ep_cell(rows, r, 0);
			double		rate;
			double		throttled;
			TimestampTz paused;
			int			circuit;
			TimestampTz open_until;

			appendStringInfoString(&pending, "evpipe_pending{");
			label(&pending, "destination", name);
			appendStringInfo(&pending, "} %s\n", ep_cell(rows, r, 1));
			appendStringInfoString(&inflight, "evpipe_in_flight{");
			label(&inflight, "destination", name);
			appendStringInfo(&inflight, "} %s\n", ep_cell(rows, r, 2));
			appendStringInfoString(&age, "evpipe_oldest_pending_age_seconds{");
			label(&age, "destination", name);
			appendStringInfo(&age, "} %s\n", ep_cell(rows, r, 3));
			ep_rate_stats(name, &rate, &throttled, &paused, &circuit, &open_until);
			appendStringInfoString(&waits, "evpipe_rate_limit_wait_seconds_total{");
			label(&waits, "destination", name);
			appendStringInfo(&waits, "} %.6f\n", throttled);
			appendStringInfoString(&circuits, "evpipe_circuit_open{");
			label(&circuits, "destination", name);
			appendStringInfo(&circuits, "} %d\n", circuit == EP_CIRCUIT_CLOSED ? 0 : 1);
		}
		header(out, "evpipe_pending", "gauge", "Outbox rows waiting for delivery (not in flight).");
		appendStringInfoString(out, pending.data);
		header(out, "evpipe_in_flight", "gauge", "Outbox rows leased by a worker.");
		appendStringInfoString(out, inflight.data);
		header(out, "evpipe_oldest_pending_age_seconds", "gauge", "Age of the oldest outbox row.");
		appendStringInfoString(out, age.data);
		header(out, "evpipe_rate_limit_wait_seconds_total", "counter", "Time sends waited for the destination's rate limit.");
		appendStringInfoString(out, waits.data);
		header(out, "evpipe_circuit_open", "gauge", "1 while the destination's circuit breaker holds its rows back (open or probing).");
		appendStringInfoString(out, circuits.data);
	}
}
