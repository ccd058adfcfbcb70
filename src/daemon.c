/*-------------------------------------------------------------------------
 *
 * daemon.c
 *	  evpiped: the delivery engine (engine.c and the files it names) as a
 *	  program outside the server, over libpq (hostpq.c). Any number of
 *	  them, on any hosts, share one outbox with the in-server workers:
 *	  leases with SKIP LOCKED, each holder's advisory lock showing it is
 *	  alive, rate limits on a schedule in the database.
 *
 *	  The loop is the in-server worker's: a pass of the engine, then a
 *	  wait (poll) on curl's sockets, the connection (notifications on
 *	  evpipe_wake and evpipe_destinations) and the metrics endpoint, bounded
 *	  by the tick, so nothing depends on a notification arriving.
 *
 *	  States: connecting -> connected -> (lost) -> connecting ...; one log
 *	  line per change, reconnects with exponential backoff and jitter;
 *	  requests in flight carry on meanwhile. A misconfiguration (flags,
 *	  DSN, database without evpipe, role without evpipe_worker) exits 1
 *	  with one line saying what to fix (2 for usage errors). SIGTERM stops
 *	  claiming, gives what is in flight back, exits 0. SIGHUP re-reads the
 *	  server's evpipe.* settings and the destinations.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <curl/curl.h>
#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#include "common/pg_prng.h"
#include "lib/stringinfo.h"
#include "miscadmin.h"
#include "utils/memutils.h"
#include "utils/timestamp.h"

#include "cli.h"
#include "daemonhttp.h"
#include "daemonrt.h"
#include "engine.h"
#include "enginedb.h"
#include "evpipe.h"
#include "logquote.h"
#include "hostpq.h"
#include "metrics.h"
#include "migrate.h"
#include "netpolicy.h"
#include "ratelimit.h"

#define EVPIPED_VERSION "0.6.0"
#define BACKOFF_MIN_MS 250
#define BACKOFF_MAX_MS 30000
#define DEST_RELOAD_US (30 * USECS_PER_SEC)
#define MAX_POLL (EP_MAX_SOCKETS + 32)

/* The engine's settings, as the server's GUCs name them (evpipe.c there). */
int			evpipe_max_in_flight = 64;
int			evpipe_batch_size = 100;
int			evpipe_lease_ms = 60000;
int			evpipe_tick_ms = 1000;
int			evpipe_max_destinations = 256;
bool		evpipe_log_deliveries = false;
bool		evpipe_outcome_events = false;
char	   *evpipe_destination_networks = NULL;

/* A setting read from the server at connect and on SIGHUP. */
typedef struct DaemonSetting
{
	const char *name;
	int		   *ivar;			/* an integer setting, or */
	bool	   *bvar;			/* a boolean one */
	int			min;
	int			max;
	bool		ms;				/* a duration in milliseconds */
	bool		from_flag;		/* given on the command line: kept */
} DaemonSetting;

static DaemonSetting settings[] = {
	{"evpipe.max_in_flight", &evpipe_max_in_flight, NULL, 1, 1024},
	{"evpipe.batch_size", &evpipe_batch_size, NULL, 1, 10000},
	{"evpipe.lease_ms", &evpipe_lease_ms, NULL, 1000, 24 * 3600 * 1000, true},
	{"evpipe.tick_ms", &evpipe_tick_ms, NULL, 10, 600000, true},
	{"evpipe.log_deliveries", NULL, &evpipe_log_deliveries},
	{"evpipe.outcome_events", NULL, &evpipe_outcome_events},
};

/* A unit of a duration setting, in milliseconds. */
typedef struct DurationUnit
{
	const char *name;
	int64		ms;
} DurationUnit;

static const DurationUnit duration_units[] = {
	{"", 1}, {"ms", 1}, {"s", 1000}, {"min", 60000}, {"h", 3600000}, {"d", 86400000}};

/*
 * A setting's text as an integer: for durations, a number of milliseconds
 * with an optional unit ("5000", "5s", "1min"). False if it does not parse.
 */
static bool
parse_setting(const DaemonSetting *st, const char *v, int64 *out)
{
	char	   *end;
	long long	n = strtoll(v, &end, 10);
	int			i;

	if (end == v)
		return false;
	while (*end == ' ')
		end++;
	if (!st->ms)
	{
		*out = n;
		return *end == '\0';
	}
	for (i = 0; i < (int) lengthof(duration_units); i++)
		if (strcmp(end, duration_units[i].name) == 0)
		{
			*out = (int64) n * duration_units[i].ms;
			return true;
		}
	return false;
}

/* The command line. */
typedef struct DaemonOptions
{
	const char *dsn;
	const char *metrics_addr;
	const char *networks;		/* --destination-networks, or NULL */
	bool		verbose;
} DaemonOptions;

static DaemonOptions opts;
static volatile sig_atomic_t got_sighup = false;
static TimestampTz last_pass = 0;

/* SIGTERM, SIGINT: stop. */
static void
on_sigterm(int sig)
{
	ep_got_sigterm = true;
}

/* SIGHUP: reload. */
static void
on_sighup(int sig)
{
	got_sighup = true;
}

/* Usage, on stdout. */
static void
usage(void)
{
	printf("evpiped delivers evpipe's outbox from outside the database server.\n\n"
		   "Usage:\n"
		   "  evpiped run [OPTION]...\n"
		   "  evpiped migrate [--dsn CONNINFO] [--to VERSION] [--dry-run]\n"
		   "  evpiped --help | --version\n\n"
		   "Options for run:\n"
		   "  --dsn CONNINFO              database to deliver for (a libpq connection string or\n"
		   "                              URI); without it libpq's environment (PGHOST, PGDATABASE,\n"
		   "                              PGUSER, PGSSLMODE, ...) and defaults apply\n"
		   "  --metrics-addr HOST:PORT    serve GET /metrics and GET /healthz there\n"
		   "  --destination-networks CIDRS\n"
		   "                              networks destinations may connect to (comma-separated\n"
		   "                              CIDRs); default: the server's evpipe.destination_networks\n"
		   "  --max-in-flight N           rows in flight at once (default: the server's\n"
		   "                              evpipe.max_in_flight, 64)\n"
		   "  --verbose                   log DEBUG lines too\n\n"
		   "The login role needs membership in evpipe_worker; the database needs evpipe 0.3.0 or later.\n\n"
		   "migrate installs evpipe without C (the managed install, for Amazon RDS, Aurora and other\n"
		   "servers that load no extension of ours) into the database, or upgrades it to this evpiped's\n"
		   "version (or --to VERSION), each step in one transaction; --dry-run only tells the steps.\n"
		   "It needs the database owner with CREATEROLE (or the evpipe roles created beforehand).\n\n"
		   "SIGTERM stops (in-flight rows are given back); SIGHUP re-reads the server's evpipe.* settings.\n");
}

/* Exit on a usage error, with one line. */
static void
usage_error(const char *fmt, const char *arg)
{
	fprintf(stderr, "evpiped: ");
	fprintf(stderr, fmt, arg);
	fprintf(stderr, " (see evpiped --help)\n");
	exit(2);
}

/* Exit on a misconfiguration, with one line. */
static void
config_error(const char *msg)
{
	fprintf(stderr, "evpiped: %s\n", msg);
	exit(1);
}

/* The options of "run". */
enum
{
	OPT_DSN,
	OPT_METRICS_ADDR,
	OPT_NETWORKS,
	OPT_MAX_IN_FLIGHT,
	OPT_VERBOSE
};
static const EpCliOption run_options[] = {
	[OPT_DSN] = {"--dsn", true},
	[OPT_METRICS_ADDR] = {"--metrics-addr", true},
	[OPT_NETWORKS] = {"--destination-networks", true},
	[OPT_MAX_IN_FLIGHT] = {"--max-in-flight", true},
	[OPT_VERBOSE] = {"--verbose", false},
	{NULL, false}
};

/* Parse the command line of "run". */
static void
parse_run_options(int argc, char **argv)
{
	for (int i = 2; i < argc; i++)
	{
		const char *val;
		char	   *end;
		long		n;

		switch (ep_cli_option(argc, argv, &i, run_options, &val, "evpiped"))
		{
			case OPT_DSN:
				opts.dsn = val;
				break;
			case OPT_METRICS_ADDR:
				opts.metrics_addr = val;
				break;
			case OPT_NETWORKS:
				opts.networks = val;
				break;
			case OPT_MAX_IN_FLIGHT:
				n = strtol(val, &end, 10);
				if (*end != '\0' || n < 1 || n > 1024)
					usage_error("--max-in-flight must be an integer from 1 to 1024, not \"%s\"", val);
				evpipe_max_in_flight = (int) n;
				settings[0].from_flag = true;
				break;
			case OPT_VERBOSE:
				opts.verbose = true;
				break;
		}
	}
}

/*
 * Install a destination networks list; false (and *err) if it does not
 * parse. The list it replaces is freed: the open-socket callback reads the
 * installed one only while curl connects, in this same thread.
 */
static bool
install_networks(const char *list, char *err, size_t errlen)
{
	static EpNetPolicy *installed = NULL;
	EpNetPolicy *policy = ep_netpolicy_parse(list ? list : "", err, errlen);

	if (policy == NULL)
		return false;
	ep_netpolicy_install(policy);
	free(installed);
	installed = policy;
	return true;
}

/* Read the server's evpipe.* settings (those not given as flags). */
static void
load_server_settings(void)
{
	PGconn	   *conn = ep_pq_conn();
	int			i;

	for (i = 0; i < (int) lengthof(settings); i++)
	{
		const char *params[1] = {settings[i].name};
		PGresult   *res;
		const char *v;

		if (settings[i].from_flag)
			continue;
		/*
		 * pg_settings gives a duration in its base unit (milliseconds here)
		 * when the server defines the setting; a placeholder (a server that
		 * does not load the library) is the text as written, units and all.
		 */
		res = PQexecParams(conn, "SELECT COALESCE((SELECT setting FROM pg_catalog.pg_settings WHERE name = $1),"
						   " pg_catalog.current_setting($1, true))", 1, NULL,
						   params, NULL, NULL, 0);
		if (PQresultStatus(res) == PGRES_TUPLES_OK && PQntuples(res) == 1 &&
			!PQgetisnull(res, 0, 0))
		{
			int64		n;

			v = PQgetvalue(res, 0, 0);
			if (settings[i].ivar)
			{
				if (parse_setting(&settings[i], v, &n) && n >= settings[i].min && n <= settings[i].max)
					*settings[i].ivar = (int) n;
				else
					ereport(WARNING,
							(errmsg("evpipe event=settings_ignored setting=%s value=\"%s\" reason=\"not a value from %d to %d%s\"",
									settings[i].name, v, settings[i].min, settings[i].max,
									settings[i].ms ? " ms" : "")));
			}
			else
				*settings[i].bvar = strcmp(v, "on") == 0 || strcmp(v, "true") == 0;
		}
		PQclear(res);
	}
	if (opts.networks == NULL)
	{
		const char *params[1] = {"evpipe.destination_networks"};
		PGresult   *res = PQexecParams(conn, "SELECT pg_catalog.current_setting($1, true)", 1,
									   NULL, params, NULL, NULL, 0);
		char		err[256];

		if (PQresultStatus(res) == PGRES_TUPLES_OK && PQntuples(res) == 1 &&
			!PQgetisnull(res, 0, 0) && !install_networks(PQgetvalue(res, 0, 0), err, sizeof(err)))
			ereport(WARNING,
					(errmsg("evpipe event=settings_ignored setting=evpipe.destination_networks error=\"%s\"",
							ep_log_quote(err))));
		PQclear(res);
	}
}

/* A fresh lease holder id: negative, so that it is never a server pid. */
static int32
new_holder(void)
{
	return -(int32) (pg_prng_uint32(&pg_global_prng_state) % 2147483646) - 1;
}

/*
 * After connecting: the server's settings, this daemon's lease holder
 * lock (a new id if another session holds it), its own leases that it no
 * longer has in flight, a fresh look at everything. The leases of holders
 * that are gone wait for the periodic check, a full period from now: after
 * a server restart the other daemons need a moment to reconnect and take
 * their locks again, and releasing their rows before that would send what
 * they still have in flight a second time.
 */
static void
after_connect(void)
{
	int			tries;

	load_server_settings();
	for (tries = 0; tries < 5; tries++)
	{
		bool		got;

		ep_begin_tx("evpiped: taking the lease holder lock");
		got = ep_take_lease_lock();
		if (got)
			ep_release_forgotten_leases();
		ep_commit_tx();
		if (got)
			break;
		ep_worker.lease_holder = new_holder();
	}
	ep_worker.dests_valid = false;
	ep_worker.pending_wake = true;
	ep_worker.last_release = GetCurrentTimestamp();
}

/*
 * Retention on a managed install, where no in-server worker runs it: a round
 * of at most RETENTION_BATCHES batches or RETENTION_BUDGET_MS, each batch
 * its own transaction (evpipe._retention_batch, which lets one host at a
 * time remove); soon again while old rows are left, else a period later.
 */
#define RETENTION_PERIOD_US (5 * USECS_PER_SEC)
#define RETENTION_BACKLOG_US (250 * 1000)
#define RETENTION_BATCHES 10
#define RETENTION_BUDGET_MS 250

static void
retention_round(void)
{
	static TimestampTz next_round = 0;
	static char cursor[64] = "";
	TimestampTz now = GetCurrentTimestamp();
	TimestampTz start = now;
	int64		delivered = 0;
	int64		events = 0;
	bool		more = false;

	if (!ep_pq_host_retention() || now < next_round)
		return;
	for (int i = 0; i < RETENTION_BATCHES; i++)
	{
		bool		isnull = cursor[0] == '\0';
		const char *arg = cursor;
		EpParam		p = {&arg, 1, &isnull};
		EpRows	   *rows;

		ep_begin_tx("evpiped: retention");
		rows = ep_db_exec(EP_SQL_RETENTION, &p);
		ep_commit_tx();
		if (rows->processed != 1)
			break;
		delivered += ep_cell_int(rows, 0, 0, 0);
		events += ep_cell_int(rows, 0, 1, 0);
		strlcpy(cursor, ep_cell(rows, 0, 2) ? ep_cell(rows, 0, 2) : "", sizeof(cursor));
		more = ep_cell(rows, 0, 3) && strcmp(ep_cell(rows, 0, 3), "t") == 0;
		if (!more || GetCurrentTimestamp() - start > RETENTION_BUDGET_MS * 1000)
			break;
	}
	if (delivered > 0)
		ereport(LOG, (errmsg("evpipe event=delivered_removed rows=" INT64_FORMAT, delivered)));
	if (events > 0)
		ereport(LOG, (errmsg("evpipe event=events_removed rows=" INT64_FORMAT, events)));
	next_round = GetCurrentTimestamp() + (more ? RETENTION_BACKLOG_US : RETENTION_PERIOD_US);
}

/* A full claim left rows behind: this process looks again at once. */
void
ep_host_more_work(void)
{
}

/* /metrics: the counters, and the gauges while connected. */
static void
render_metrics(StringInfo out)
{
	bool		connected = ep_pq_connected();
	MemoryContext old = CurrentMemoryContext;

	if (connected)
	{
		PG_TRY();
		{
			ep_begin_tx("evpiped: metrics");
			ep_metrics_render(out, true);
			ep_commit_tx();
		}
		PG_CATCH();
		{
			MemoryContextSwitchTo(old);
			EmitErrorReport();
			FlushErrorState();
			ep_pq_abort();
			resetStringInfo(out);
			ep_metrics_render(out, false);
		}
		PG_END_TRY();
	}
	else
		ep_metrics_render(out, false);
	appendStringInfo(out, "# HELP evpiped_connected 1 while evpiped is connected to the database.\n"
					 "# TYPE evpiped_connected gauge\nevpiped_connected %d\n", connected ? 1 : 0);
	appendStringInfo(out, "# HELP evpiped_in_flight_rows Rows this evpiped is delivering now.\n"
					 "# TYPE evpiped_in_flight_rows gauge\nevpiped_in_flight_rows %d\n",
					 ep_worker.nactive);
}

/* /healthz: connected, and the loop ran in the last tick or 10 s. */
static bool
healthy(void)
{
	return ep_pq_connected() &&
		GetCurrentTimestamp() - last_pass < Max(10 * USECS_PER_SEC,
												(int64) evpipe_tick_ms * 3000);
}

static const EpHttpHandlers http_handlers = {render_metrics, healthy};

/* What notifications mean for the engine: new rows, changed destinations. */
static void
note_notifications(bool wake, bool dests)
{
	if (wake)
		ep_worker.pending_wake = true;
	if (dests)
	{
		ep_worker.dests_valid = false;
		ep_worker.pending_wake = true;
	}
}

/*
 * Wait up to timeout_ms for curl's sockets, the connection and the
 * metrics endpoint; then handle what is ready.
 */
static void
wait_and_drive(long timeout_ms)
{
	struct pollfd fds[MAX_POLL];
	int			ready[EP_MAX_SOCKETS];
	int			ncurl = ep_worker.nsocks;
	int			pq_at = -1;
	int			http_at;
	int			n = 0;
	int			i;
	int			rc;

	for (i = 0; i < ncurl; i++)
	{
		fds[n].fd = ep_worker.socks[i].fd;
		fds[n].events = ((ep_worker.socks[i].what & CURL_POLL_IN) ? POLLIN : 0) |
			((ep_worker.socks[i].what & CURL_POLL_OUT) ? POLLOUT : 0);
		if (fds[n].events == 0)
			fds[n].events = POLLIN;
		fds[n++].revents = 0;
	}
	if (ep_pq_connected() && PQsocket(ep_pq_conn()) >= 0)
	{
		/* notifications read along with the last statements: act at once */
		bool		wake = false;
		bool		dests = false;

		(void) ep_pq_consume(false, &wake, &dests);
		note_notifications(wake, dests);
		if (wake || dests)
			timeout_ms = 0;
		pq_at = n;
		fds[n].fd = PQsocket(ep_pq_conn());
		fds[n].events = POLLIN;
		fds[n++].revents = 0;
	}
	http_at = n;
	n += ep_http_pollfds(fds + n, MAX_POLL - n);

	rc = poll(fds, n, (int) Min(timeout_ms, 60000));
	if (rc < 0 && errno != EINTR)
		ereport(LOG, (errmsg("evpipe: poll failed: %m")));

	memset(ready, 0, sizeof(int) * Max(ncurl, 1));
	for (i = 0; rc > 0 && i < ncurl; i++)
	{
		if (fds[i].revents & (POLLIN | POLLHUP | POLLERR))
			ready[i] |= CURL_CSELECT_IN;
		if (fds[i].revents & POLLOUT)
			ready[i] |= CURL_CSELECT_OUT;
		if (fds[i].revents & POLLERR)
			ready[i] |= CURL_CSELECT_ERR;
	}
	if (pq_at >= 0 && rc > 0 && fds[pq_at].revents != 0)
	{
		bool		wake = false;
		bool		dests = false;

		if (!ep_pq_consume(true, &wake, &dests))
			ep_pq_close();		/* the next pass notices and reconnects */
		note_notifications(wake, dests);
	}
	/* curl's socket list may change while it acts: drive it before http */
	ep_transport_drive(ncurl > 0 ? ready : NULL);
	if (rc > 0)
		ep_http_handle(fds + http_at, n - http_at, &http_handlers);
}

/* evpiped run */
static int
run(void)
{
	char		err[1024];
	char	   *bad;
	volatile bool connected = false;
	volatile bool ever_connected = false;
	volatile TimestampTz next_connect = 0;
	volatile TimestampTz last_dest_reload = 0;
	volatile long backoff_ms = 0;
	volatile bool started_logged = false;
	char		last_error[512] = "";
	void	   *rate_mem;
	void	   *metrics_mem;

	ep_rt_set_verbose(opts.verbose);
	bad = ep_pq_check_conninfo(opts.dsn);
	if (bad)
	{
		char		msg[600];

		snprintf(msg, sizeof(msg), "--dsn cannot be parsed: %s", bad);
		PQfreemem(bad);
		if (msg[strlen(msg) - 1] == '\n')
			msg[strlen(msg) - 1] = '\0';
		config_error(msg);
	}
	if (opts.networks && !install_networks(opts.networks, err, sizeof(err)))
	{
		char		msg[600];

		snprintf(msg, sizeof(msg), "--destination-networks: %s", err);
		config_error(msg);
	}
	if (opts.metrics_addr && !ep_http_listen(opts.metrics_addr, err, sizeof(err)))
		config_error(err);

	signal(SIGTERM, on_sigterm);
	signal(SIGINT, on_sigterm);
	signal(SIGHUP, on_sighup);
	signal(SIGPIPE, SIG_IGN);

	/* the state in-server workers share, here this process's own */
	rate_mem = calloc(1, ep_rate_shmem_size());
	metrics_mem = calloc(1, ep_metrics_shmem_size());
	if (rate_mem == NULL || metrics_mem == NULL)
		config_error("out of memory");
	ep_rate_shmem_init(rate_mem, false);
	ep_metrics_shmem_init(metrics_mem, false);

	ep_engine_start(0, new_holder(), true);

	for (;;)
	{
		TimestampTz now;
		long		timeout;
		bool		linger;

		MemoryContextReset(ep_worker.loop_cxt);
		MemoryContextSwitchTo(ep_worker.loop_cxt);
		if (ep_got_sigterm)
			break;
		now = GetCurrentTimestamp();

		if (connected && !ep_pq_connected())
		{
			connected = false;
			ep_pq_close();
			backoff_ms = BACKOFF_MIN_MS;
			next_connect = now + backoff_ms * 1000;
			ereport(LOG,
					(errmsg("evpipe event=disconnected in_flight=%d reason=\"connection lost\"",
							ep_worker.nactive)));
			strlcpy(last_error, "connection lost", sizeof(last_error));
		}
		if (!connected && now >= next_connect)
		{
			EpPqStatus st = ep_pq_connect(opts.dsn, err, sizeof(err));

			if (st == EP_PQ_MISCONFIGURED)
				config_error(err);
			/* after the first attempt's checks: a misconfiguration says only its line */
			if (!started_logged)
			{
				ereport(LOG,
						(errmsg("evpipe event=daemon_start version=%s pid=%d holder=%d metrics_addr=%s",
								EVPIPED_VERSION, MyProcPid, ep_worker.lease_holder,
								opts.metrics_addr ? opts.metrics_addr : "none")));
				started_logged = true;
			}
			if (st == EP_PQ_OK)
			{
				PGconn	   *c = ep_pq_conn();

				PG_TRY();
				{
					after_connect();
					connected = true;
				}
				PG_CATCH();
				{
					EmitErrorReport();
					FlushErrorState();
					ep_pq_abort();
					ep_pq_close();
					strlcpy(err, "setting the session up failed", sizeof(err));
				}
				PG_END_TRY();
				if (connected)
				{
					ereport(LOG,
							(errmsg("evpipe event=connected host=%s port=%s database=%s user=%s holder=%d max_in_flight=%d",
									PQhost(c), PQport(c), PQdb(c), PQuser(c),
									ep_worker.lease_holder, evpipe_max_in_flight)));
					ever_connected = true;
					backoff_ms = 0;
					last_error[0] = '\0';
					last_dest_reload = now;
				}
			}
			if (!connected)
			{
				/* one line per new reason, not per retry */
				if (strcmp(err, last_error) != 0)
				{
					ereport(LOG,
							(errmsg("evpipe event=%s error=\"%s\" retry=backoff",
									ever_connected ? "reconnect_failed" : "connect_failed",
									ep_log_quote(err))));
					strlcpy(last_error, err, sizeof(last_error));
				}
				backoff_ms = Min(Max(backoff_ms * 2, BACKOFF_MIN_MS), BACKOFF_MAX_MS);
				next_connect = now + (int64) (backoff_ms / 2 +
											  pg_prng_uint64_range(&pg_global_prng_state, 0, backoff_ms / 2)) * 1000;
			}
		}

		if (got_sighup && connected)
		{
			got_sighup = false;
			PG_TRY();
			{
				load_server_settings();
			}
			PG_CATCH();
			{
				EmitErrorReport();
				FlushErrorState();
			}
			PG_END_TRY();
			ep_worker.dests_valid = false;
			ep_worker.pending_wake = true;
			ereport(LOG, (errmsg("evpipe event=reloaded max_in_flight=%d tick_ms=%d",
								 evpipe_max_in_flight, evpipe_tick_ms)));
		}

		if (connected)
		{
			/* notifications can be lost (a pooler, a reconnect): look anyway */
			if (now - last_dest_reload > DEST_RELOAD_US)
			{
				last_dest_reload = now;
				ep_worker.dests_valid = false;
			}
			PG_TRY();
			{
				ep_engine_pass();
				last_pass = GetCurrentTimestamp();
				retention_round();
			}
			PG_CATCH();
			{
				MemoryContextSwitchTo(ep_worker.loop_cxt);
				if (ep_pq_connected())
					EmitErrorReport();
				FlushErrorState();
				ep_pq_abort();
				ep_engine_failed();
				MemoryContextSwitchTo(ep_worker.loop_cxt);
			}
			PG_END_TRY();
		}

		if (connected && ep_pq_connected())
			timeout = ep_engine_timeout(&linger);
		else
		{
			long		next_launch = ep_launch_due();

			timeout = (long) Max((next_connect - GetCurrentTimestamp()) / 1000, 0);
			if (next_launch >= 0 && next_launch < timeout)
				timeout = next_launch;
			if (ep_worker.curl_deadline != 0)
				timeout = Min(timeout, (long) Max((ep_worker.curl_deadline - GetCurrentTimestamp() + 999) / 1000, 0));
		}
		wait_and_drive(timeout);
	}

	ereport(LOG,
			(errmsg("evpipe event=daemon_stop pid=%d in_flight=%d delivered=" UINT64_FORMAT,
					MyProcPid, ep_worker.nactive, ep_worker.delivered_total)));
	if (ep_pq_connected())
	{
		PG_TRY();
		{
			ep_engine_stop();
		}
		PG_CATCH();
		{
			EmitErrorReport();
			FlushErrorState();
			ep_pq_abort();
		}
		PG_END_TRY();
	}
	ep_pq_close();
	return 0;
}

int
main(int argc, char **argv)
{
	ep_rt_init();
	if (argc < 2)
	{
		usage();
		return 2;
	}
	if (strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0 ||
		strcmp(argv[1], "help") == 0)
	{
		usage();
		return 0;
	}
	if (strcmp(argv[1], "--version") == 0 || strcmp(argv[1], "-V") == 0)
	{
		printf("evpiped (evpipe) %s\n", EVPIPED_VERSION);
		return 0;
	}
	if (strcmp(argv[1], "migrate") == 0)
		return ep_migrate_main(argc, argv);
	if (strcmp(argv[1], "run") != 0)
		usage_error("unknown command \"%s\"", argv[1]);
	parse_run_options(argc, argv);
	return run();
}
