# evpipe: PGXS build
EXTENSION = evpipe
MODULE_big = evpipe
OBJS = src/evpipe.o src/ingest.o src/ingestconfig.o src/ingestenvelope.o src/ingestroute.o src/ingestwrite.o src/ingestbatch.o src/validate.o src/jsonschema.o src/mapping.o src/jsonutil.o src/ratelimit.o src/engine.o src/hostbgw.o src/destination.o src/claim.o src/transport.o src/outcome.o src/function.o src/handler.o src/enginesql.o src/hostspi.o src/http.o src/httputil.o src/sqs.o src/graphql.o src/respparse.o src/metrics.o src/metricsql.o src/retention.o src/notifier.o src/netpolicy.o src/logquote.o
DATA = sql/evpipe--0.1.0.sql sql/evpipe--0.2.0.sql sql/evpipe--0.3.0.sql sql/evpipe--0.1.0--0.2.0.sql sql/evpipe--0.2.0--0.3.0.sql sql/evpipe--0.4.0.sql sql/evpipe--0.3.0--0.4.0.sql sql/evpipe--0.5.0.sql sql/evpipe--0.4.0--0.5.0.sql sql/evpipe--0.6.0.sql sql/evpipe--0.5.0--0.6.0.sql
PGFILEDESC = "evpipe - event pipeline inside PostgreSQL"

REGRESS = setup envelope schema dedup routing sources admin roles worker_role batch badinput operations netpolicy extension_only deliveries
REGRESS_OPTS = --temp-config=test/regress.conf
ISOLATION = concurrent_dedup
ISOLATION_OPTS = --inputdir=test/isolation --temp-config=test/regress.conf

PG_CONFIG ?= pg_config
JSONC_CFLAGS := $(shell pkg-config --cflags json-c)
PG_CPPFLAGS = -I$(srcdir)/src $(JSONC_CFLAGS)
PG_CFLAGS = -Wall -Wextra -Werror -Wno-unused-parameter -Wno-missing-field-initializers -Wno-sign-compare
SHLIB_LINK = -lcurl -ljson-c -lm

PGXS := $(shell $(PG_CONFIG) --pgxs)
include $(PGXS)

# evpiped: the delivery engine's files again, with the daemon's host and
# runtime in place of the server (see src/daemon.c); objects *.evpiped.o
DAEMON_SRCS = src/daemon.c src/daemonrt.c src/daemonhttp.c src/hostpq.c \
	src/engine.c src/claim.c src/destination.c src/transport.c src/outcome.c \
	src/function.c src/enginesql.c src/http.c src/httputil.c src/sqs.c \
	src/graphql.c src/respparse.c src/ratelimit.c src/metrics.c src/netpolicy.c \
	src/migrate.c src/cli.c src/logquote.c managed/migrations.c
DAEMON_OBJS = $(DAEMON_SRCS:.c=.evpiped.o)
DAEMON_LIBS = -L$(pkglibdir) -lpgcommon -lpgport $(libpq) -lcurl -ljson-c -lcrypto -lm
EXTRA_CLEAN = evpiped $(DAEMON_OBJS) managed

# the managed install (evpipe without C, installed by `evpiped migrate`):
# generated from the extension's scripts and the PL/pgSQL twins of its C
# functions; managed/evpipe-managed--*.sql to read, managed/migrations.c
# to embed in evpiped
MANAGED_INPUTS = $(wildcard $(srcdir)/sql/evpipe--*.sql) $(wildcard $(srcdir)/sql/managed/*.sql) $(srcdir)/sql/managed/grants.sql.in $(srcdir)/sql/managed/generate
managed/migrations.c: $(MANAGED_INPUTS)
	sh $(srcdir)/sql/managed/generate managed

all: evpiped

%.evpiped.o: %.c $(wildcard $(srcdir)/src/*.h)
	$(CC) $(CFLAGS) $(PG_CFLAGS) $(CPPFLAGS) -I$(includedir) -c -o $@ $<

evpiped: $(DAEMON_OBJS)
	$(CC) $(CFLAGS) $(PG_CFLAGS) -o $@ $(DAEMON_OBJS) $(LDFLAGS) $(DAEMON_LIBS)

install: install-evpiped
install-evpiped: evpiped
	$(MKDIR_P) '$(DESTDIR)$(bindir)'
	$(INSTALL_PROGRAM) evpiped '$(DESTDIR)$(bindir)/evpiped'

.PHONY: install-evpiped

# every object depends on every header (PGXS tracks no header dependencies)
$(OBJS): $(wildcard $(srcdir)/src/*.h)
