# evpipe: PGXS build
EXTENSION = evpipe
MODULE_big = evpipe
OBJS = src/evpipe.o src/ingest.o src/jsonschema.o src/mapping.o src/jsonutil.o src/ratelimit.o src/engine.o src/hostbgw.o src/destination.o src/claim.o src/transport.o src/outcome.o src/function.o src/handler.o src/enginesql.o src/hostspi.o src/http.o src/httputil.o src/sqs.o src/graphql.o src/respparse.o src/metrics.o src/metricsql.o src/retention.o src/netpolicy.o
DATA = sql/evpipe--0.1.0.sql sql/evpipe--0.2.0.sql sql/evpipe--0.1.0--0.2.0.sql
PGFILEDESC = "evpipe - event pipeline inside PostgreSQL"

REGRESS = setup envelope schema dedup routing sources admin roles batch badinput operations netpolicy deliveries
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

# every object depends on every header (PGXS tracks no header dependencies)
$(OBJS): $(wildcard $(srcdir)/src/*.h)
