/*
 * Unit tests of evpiped's stand-in for the server runtime (src/daemonrt.c):
 * memory contexts, lists, ereport and PG_TRY, the clock.
 */
#include "postgres.h"

#include <time.h>

#include "nodes/pg_list.h"
#include "utils/memutils.h"
#include "utils/timestamp.h"

#include "daemonrt.h"
#include "unit.h"

/* Throw an ERROR with a code and a formatted message. */
static void
throw_it(int n)
{
	ereport(ERROR,
			(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
			 errmsg("bad value %d", n),
			 errdetail("detail %s", "here")));
}

int
main(void)
{
	MemoryContext a;
	MemoryContext child;
	MemoryContext old;
	char	   *s;
	char	   *r;
	List	   *l = NIL;
	int			i;
	bool		ordered = true;
	volatile bool caught = false;
	ErrorData  *volatile edata = NULL;
	TimestampTz now;
	int64		unix_now;

	ep_rt_init();
	a = AllocSetContextCreate(TopMemoryContext, "a", ALLOCSET_DEFAULT_SIZES);
	child = AllocSetContextCreate(a, "child", ALLOCSET_DEFAULT_SIZES);
	old = MemoryContextSwitchTo(a);
	s = pstrdup("hello");
	CHECK(strcmp(s, "hello") == 0, "pstrdup copies");
	CHECK(a->mem_allocated == 6, "the context counts what it handed out");
	r = repalloc(s, 100);
	CHECK(strcmp(r, "hello") == 0, "repalloc keeps the content");
	CHECK(ep_rt_chunk_context(r) == a, "repalloc stays in the chunk's context");
	pfree(r);
	CHECK(a->mem_allocated == 0, "pfree gives the chunk back");
	s = psprintf("%d-%s", 42, "x");
	CHECK(strcmp(s, "42-x") == 0, "psprintf formats");
	CHECK(strcmp(pnstrdup("abcdef", 3), "abc") == 0, "pnstrdup cuts");
	CHECK(((char *) MemoryContextAllocZero(child, 16))[15] == 0, "AllocZero zeroes");
	MemoryContextReset(a);
	CHECK(a->mem_allocated == 0 && a->firstchild == NULL, "a reset frees the chunks and deletes the children");

	for (i = 0; i < 100; i++)
		l = lappend(l, (void *) (intptr_t) i);
	CHECK(list_length(l) == 100, "lappend grows a list past its first cells");
	for (i = 0; i < 100; i++)
		if ((intptr_t) list_nth(l, i) != i)
			ordered = false;
	CHECK(ordered, "a list keeps its order");
	MemoryContextSwitchTo(old);
	MemoryContextDelete(a);
	CHECK(TopMemoryContext->firstchild != NULL, "deleting a context leaves its siblings");

	PG_TRY();
	{
		throw_it(7);
	}
	PG_CATCH();
	{
		caught = true;
		edata = CopyErrorData();
		FlushErrorState();
	}
	PG_END_TRY();
	CHECK(caught, "ereport(ERROR) jumps to PG_CATCH");
	CHECK(edata && strcmp(edata->message, "bad value 7") == 0, "the message is kept");
	CHECK(edata && strcmp(edata->detail, "detail here") == 0, "the detail is kept");
	CHECK(edata && edata->sqlerrcode == ERRCODE_INVALID_PARAMETER_VALUE, "the SQLSTATE is kept");
	ereport(LOG, (errmsg("a log line from the unit test")));
	CHECK(true, "ereport(LOG) returns");
	caught = false;
	PG_TRY();
	{
		PG_TRY();
		{
			throw_it(1);
		}
		PG_FINALLY();
		{
			caught = true;
		}
		PG_END_TRY();
	}
	PG_CATCH();
	{
		FlushErrorState();
	}
	PG_END_TRY();
	CHECK(caught, "PG_FINALLY runs and rethrows to the outer handler");

	now = GetCurrentTimestamp();
	unix_now = now / USECS_PER_SEC + (POSTGRES_EPOCH_JDATE - UNIX_EPOCH_JDATE) * SECS_PER_DAY;
	CHECK(llabs(unix_now - (int64) time(NULL)) <= 1, "the clock counts from 2000-01-01 like the server's");
	return unit_done();
}
