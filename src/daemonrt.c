/*-------------------------------------------------------------------------
 *
 * daemonrt.c
 *	  The part of the server's runtime the delivery engine uses, for
 *	  evpiped, a program outside the server: memory contexts (palloc and
 *	  friends), ereport/elog with PG_TRY, lists, the clock, spinlocks
 *	  without contention. The engine's files compile unchanged against the
 *	  server's headers and link against this instead of the server.
 *
 *	  Memory contexts keep each chunk on a list of their own, so a reset
 *	  frees everything the context handed out, its children included.
 *	  ereport below ERROR writes a log line on stderr in the server's
 *	  format; ERROR jumps to the innermost PG_TRY, or ends the program
 *	  when there is none; FATAL ends it.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <stdio.h>
#include <stdlib.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#include "common/pg_prng.h"
#include "lib/stringinfo.h"
#include "mb/pg_wchar.h"
#include "miscadmin.h"
#include "nodes/memnodes.h"
#include "nodes/pg_list.h"
#include "storage/shmem.h"
#include "storage/spin.h"
#include "utils/memutils.h"
#include "utils/resowner.h"
#include "utils/timestamp.h"

#include "daemonrt.h"

/*
 * A chunk's header: its neighbours in its context, its size, and last (as
 * the server's GetMemoryChunkContext() expects) its context.
 */
typedef struct RtChunk
{
	struct RtChunk *prev;
	struct RtChunk *next;
	Size		size;
	struct RtContext *cxt;
} RtChunk;

/* A context: the server's header, and the chunks it handed out. */
typedef struct RtContext
{
	MemoryContextData hdr;
	RtChunk    *chunks;
} RtContext;

#define CHUNK_HDR MAXALIGN(sizeof(RtChunk))

static RtContext top_context;
MemoryContext TopMemoryContext = NULL;
MemoryContext CurrentMemoryContext = NULL;
MemoryContext ErrorContext = NULL;
ResourceOwner CurrentResourceOwner = NULL;

volatile sig_atomic_t InterruptPending = false;
sigjmp_buf *PG_exception_stack = NULL;
ErrorContextCallback *error_context_stack = NULL;
int			MyProcPid;

/* Allocation failed: nothing sensible is left to do. */
static void
rt_out_of_memory(Size size)
{
	fprintf(stderr, "evpiped: out of memory (%zu bytes)\n", (size_t) size);
	exit(70);
}

/* Set the runtime up: the top context, the pid, the random generator. */
void
ep_rt_init(void)
{
	struct timeval tv;

	memset(&top_context, 0, sizeof(top_context));
	top_context.hdr.type = T_AllocSetContext;
	top_context.hdr.name = "TopMemoryContext";
	TopMemoryContext = &top_context.hdr;
	CurrentMemoryContext = TopMemoryContext;
	ErrorContext = AllocSetContextCreate(TopMemoryContext, "ErrorContext",
										 ALLOCSET_DEFAULT_SIZES);
	MyProcPid = getpid();
	gettimeofday(&tv, NULL);
	pg_prng_seed(&pg_global_prng_state,
				 ((uint64) tv.tv_sec << 20) ^ tv.tv_usec ^ ((uint64) MyProcPid << 40));
}

/* A new context under parent (the sizes are hints the server uses). */
MemoryContext
AllocSetContextCreateInternal(MemoryContext parent, const char *name,
							  Size minContextSize, Size initBlockSize,
							  Size maxBlockSize)
{
	RtContext  *c = calloc(1, sizeof(RtContext));

	if (c == NULL)
		rt_out_of_memory(sizeof(RtContext));
	c->hdr.type = T_AllocSetContext;
	c->hdr.name = name;
	c->hdr.parent = parent;
	if (parent)
	{
		c->hdr.nextchild = parent->firstchild;
		if (parent->firstchild)
			parent->firstchild->prevchild = &c->hdr;
		parent->firstchild = &c->hdr;
	}
	return &c->hdr;
}

/* Free every chunk of a context (not its children). */
static void
rt_free_chunks(RtContext *c)
{
	RtChunk    *ch = c->chunks;

	while (ch)
	{
		RtChunk    *next = ch->next;

		free(ch);
		ch = next;
	}
	c->chunks = NULL;
	c->hdr.mem_allocated = 0;
}

/* Delete a context, its children and its chunks. */
void
MemoryContextDelete(MemoryContext context)
{
	RtContext  *c = (RtContext *) context;
	MemoryContext parent = context->parent;

	while (context->firstchild)
		MemoryContextDelete(context->firstchild);
	rt_free_chunks(c);
	if (parent)
	{
		if (context->prevchild)
			context->prevchild->nextchild = context->nextchild;
		else
			parent->firstchild = context->nextchild;
		if (context->nextchild)
			context->nextchild->prevchild = context->prevchild;
	}
	if (CurrentMemoryContext == context)
		CurrentMemoryContext = parent ? parent : TopMemoryContext;
	if (context != TopMemoryContext)
		free(c);
}

/* Free what a context handed out, and delete its children. */
void
MemoryContextReset(MemoryContext context)
{
	while (context->firstchild)
		MemoryContextDelete(context->firstchild);
	rt_free_chunks((RtContext *) context);
}

/* Allocate in a context. */
void *
MemoryContextAllocExtended(MemoryContext context, Size size, int flags)
{
	RtContext  *c = (RtContext *) context;
	RtChunk    *ch = malloc(CHUNK_HDR + size);

	if (ch == NULL)
	{
		if (flags & MCXT_ALLOC_NO_OOM)
			return NULL;
		rt_out_of_memory(size);
	}
	ch->cxt = c;
	ch->size = size;
	ch->prev = NULL;
	ch->next = c->chunks;
	if (c->chunks)
		c->chunks->prev = ch;
	c->chunks = ch;
	c->hdr.mem_allocated += size;
	if (flags & MCXT_ALLOC_ZERO)
		memset((char *) ch + CHUNK_HDR, 0, size);
	return (char *) ch + CHUNK_HDR;
}

void *
MemoryContextAlloc(MemoryContext context, Size size)
{
	return MemoryContextAllocExtended(context, size, 0);
}

void *
MemoryContextAllocZero(MemoryContext context, Size size)
{
	return MemoryContextAllocExtended(context, size, MCXT_ALLOC_ZERO);
}

char *
MemoryContextStrdup(MemoryContext context, const char *string)
{
	Size		len = strlen(string) + 1;
	char	   *s = MemoryContextAlloc(context, len);

	memcpy(s, string, len);
	return s;
}

void *
palloc(Size size)
{
	return MemoryContextAllocExtended(CurrentMemoryContext, size, 0);
}

void *
palloc0(Size size)
{
	return MemoryContextAllocExtended(CurrentMemoryContext, size, MCXT_ALLOC_ZERO);
}

void *
palloc_extended(Size size, int flags)
{
	return MemoryContextAllocExtended(CurrentMemoryContext, size, flags);
}

/* Give a chunk back to its context. */
void
pfree(void *pointer)
{
	RtChunk    *ch = (RtChunk *) ((char *) pointer - CHUNK_HDR);
	RtContext  *c = ch->cxt;

	if (ch->prev)
		ch->prev->next = ch->next;
	else
		c->chunks = ch->next;
	if (ch->next)
		ch->next->prev = ch->prev;
	c->hdr.mem_allocated -= ch->size;
	free(ch);
}

/* Resize a chunk in its own context. */
void *
repalloc(void *pointer, Size size)
{
	RtChunk    *ch = (RtChunk *) ((char *) pointer - CHUNK_HDR);
	void	   *p = MemoryContextAlloc(&ch->cxt->hdr, size);

	memcpy(p, pointer, Min(size, ch->size));
	pfree(pointer);
	return p;
}

char *
pstrdup(const char *in)
{
	return MemoryContextStrdup(CurrentMemoryContext, in);
}

char *
pnstrdup(const char *in, Size len)
{
	char	   *out;

	len = strnlen(in, len);
	out = palloc(len + 1);
	memcpy(out, in, len);
	out[len] = '\0';
	return out;
}

/* declared by common/fe_memutils.h, which server code does not include */
extern void *pg_malloc(size_t size);
extern void *pg_malloc0(size_t size);
extern void *pg_malloc_extended(size_t size, int flags);
extern void *pg_realloc(void *ptr, size_t size);
extern char *pg_strdup(const char *in);
extern void pg_free(void *ptr);

/*
 * The frontend allocation functions of libpgcommon, defined here so that
 * its own palloc (which knows no contexts) is never linked in.
 */
void *
pg_malloc(size_t size)
{
	return pg_malloc_extended(size, 0);
}

void *
pg_malloc0(size_t size)
{
	return pg_malloc_extended(size, MCXT_ALLOC_ZERO);
}

void *
pg_malloc_extended(size_t size, int flags)
{
	void	   *p = malloc(size ? size : 1);

	if (p == NULL)
	{
		if (flags & MCXT_ALLOC_NO_OOM)
			return NULL;
		rt_out_of_memory(size);
	}
	if (flags & MCXT_ALLOC_ZERO)
		memset(p, 0, size);
	return p;
}

void *
pg_realloc(void *ptr, size_t size)
{
	void	   *p = realloc(ptr, size ? size : 1);

	if (p == NULL)
		rt_out_of_memory(size);
	return p;
}

char *
pg_strdup(const char *in)
{
	char	   *s = strdup(in);

	if (s == NULL)
		rt_out_of_memory(strlen(in));
	return s;
}

void
pg_free(void *ptr)
{
	free(ptr);
}

/* Lists: what the engine uses of the server's list.c. */
List *
lappend(List *list, void *datum)
{
	if (list == NIL)
	{
		list = palloc(offsetof(List, initial_elements) + 4 * sizeof(ListCell));
		list->type = T_List;
		list->length = 0;
		list->max_length = 4;
		list->elements = list->initial_elements;
	}
	else if (list->length >= list->max_length)
	{
		int			newmax = list->max_length * 2;
		ListCell   *cells = MemoryContextAlloc(ep_rt_chunk_context(list),
											   newmax * sizeof(ListCell));

		memcpy(cells, list->elements, list->length * sizeof(ListCell));
		if (list->elements != list->initial_elements)
			pfree(list->elements);
		list->elements = cells;
		list->max_length = newmax;
	}
	list->elements[list->length++].ptr_value = datum;
	return list;
}

/* The context a chunk belongs to (for lists grown later). */
MemoryContext
ep_rt_chunk_context(void *pointer)
{
	return &((RtChunk *) ((char *) pointer - CHUNK_HDR))->cxt->hdr;
}

/* The clock, as the server counts it (microseconds since 2000-01-01). */
TimestampTz
GetCurrentTimestamp(void)
{
	struct timeval tp;

	gettimeofday(&tp, NULL);
	return (TimestampTz) (tp.tv_sec - ((POSTGRES_EPOCH_JDATE - UNIX_EPOCH_JDATE) * SECS_PER_DAY)) *
		USECS_PER_SEC + tp.tv_usec;
}

/* No interrupts to process: evpiped's signal handlers set its own flags. */
void
ProcessInterrupts(void)
{
	InterruptPending = false;
}

/* Spinlocks in one process are never contended; spin anyway. */
int
s_lock(volatile slock_t *lock, const char *file, int line, const char *func)
{
	while (TAS_SPIN(lock))
		;
	return 0;
}

Size
add_size(Size s1, Size s2)
{
	Size		result = s1 + s2;

	if (result < s1)
		rt_out_of_memory(result);
	return result;
}

Size
mul_size(Size s1, Size s2)
{
	Size		result;

	if (s1 == 0 || s2 == 0)
		return 0;
	result = s1 * s2;
	if (result / s2 != s1)
		rt_out_of_memory(result);
	return result;
}

/* The daemon's connections use UTF-8, so text is checked as UTF-8. */
bool
pg_verifymbstr(const char *mbstr, int len, bool noError)
{
	bool		ok = pg_encoding_verifymbstr(PG_UTF8, mbstr, len) == len;

	if (!ok && !noError)
		ereport(ERROR,
				(errcode(ERRCODE_CHARACTER_NOT_IN_REPERTOIRE),
				 errmsg("invalid byte sequence for encoding \"UTF8\"")));
	return ok;
}

/*
 * ereport and elog.
 */

#define ERRORDATA_STACK_SIZE 5

static ErrorData errordata[ERRORDATA_STACK_SIZE];
static int	errordata_depth = -1;
static bool rt_log_verbose = false;

/* Whether DEBUG messages are written. */
void
ep_rt_set_verbose(bool verbose)
{
	rt_log_verbose = verbose;
}

/* The level's name, as the server writes it. */
static const char *
level_name(int elevel)
{
	if (elevel <= DEBUG1)
		return "DEBUG";
	switch (elevel)
	{
		case LOG:
		case LOG_SERVER_ONLY:
			return "LOG";
		case INFO:
			return "INFO";
		case NOTICE:
			return "NOTICE";
		case WARNING:
			return "WARNING";
		case ERROR:
			return "ERROR";
		case FATAL:
			return "FATAL";
		default:
			return "PANIC";
	}
}

bool
errstart(int elevel, const char *domain)
{
	ErrorData  *e;

	if (elevel < LOG && !rt_log_verbose)
		return false;
	if (errordata_depth + 1 >= ERRORDATA_STACK_SIZE)
	{
		fprintf(stderr, "evpiped: error stack overflow\n");
		exit(70);
	}
	e = &errordata[++errordata_depth];
	memset(e, 0, sizeof(*e));
	e->elevel = elevel;
	e->sqlerrcode = elevel >= ERROR ? ERRCODE_INTERNAL_ERROR : ERRCODE_SUCCESSFUL_COMPLETION;
	e->assoc_context = ErrorContext;
	return true;
}

bool
errstart_cold(int elevel, const char *domain)
{
	return errstart(elevel, domain);
}

/* Format into the current error's field. */
static char *rt_vformat(const char *fmt, va_list args) pg_attribute_printf(1, 0);

static char *
rt_vformat(const char *fmt, va_list args)
{
	MemoryContext old = MemoryContextSwitchTo(ErrorContext);
	char	   *s;
	size_t		len = 256;

	for (;;)
	{
		va_list		copy;
		size_t		need;

		s = palloc(len);
		va_copy(copy, args);
		need = pvsnprintf(s, len, fmt, copy);
		va_end(copy);
		if (need < len)
			break;
		pfree(s);
		len = need + 1;
	}
	MemoryContextSwitchTo(old);
	return s;
}

#define RT_FIELD(field) \
	do { \
		va_list		args; \
		va_start(args, fmt); \
		errordata[errordata_depth].field = rt_vformat(fmt, args); \
		va_end(args); \
	} while (0)

int
errmsg(const char *fmt,...)
{
	RT_FIELD(message);
	return 0;
}

int
errmsg_internal(const char *fmt,...)
{
	RT_FIELD(message);
	return 0;
}

int
errdetail(const char *fmt,...)
{
	RT_FIELD(detail);
	return 0;
}

int
errdetail_internal(const char *fmt,...)
{
	RT_FIELD(detail);
	return 0;
}

int
errhint(const char *fmt,...)
{
	RT_FIELD(hint);
	return 0;
}

int
errcode(int sqlerrcode)
{
	errordata[errordata_depth].sqlerrcode = sqlerrcode;
	return 0;
}

int
errhidestmt(bool hide_stmt)
{
	return 0;
}

/* Write an error's lines on stderr, as the server's log does. */
static void
rt_emit(ErrorData *e)
{
	struct timeval tv;
	struct tm	tm;
	char		ts[64];

	gettimeofday(&tv, NULL);
	gmtime_r(&tv.tv_sec, &tm);
	strftime(ts, sizeof(ts), "%Y-%m-%d %H:%M:%S", &tm);
	fprintf(stderr, "%s.%03d UTC [%d] %s:  %s\n", ts, (int) (tv.tv_usec / 1000),
			MyProcPid, level_name(e->elevel), e->message ? e->message : "(no message)");
	if (e->detail)
		fprintf(stderr, "%s.%03d UTC [%d] DETAIL:  %s\n", ts, (int) (tv.tv_usec / 1000),
				MyProcPid, e->detail);
	if (e->hint)
		fprintf(stderr, "%s.%03d UTC [%d] HINT:  %s\n", ts, (int) (tv.tv_usec / 1000),
				MyProcPid, e->hint);
	fflush(stderr);
}

void
errfinish(const char *filename, int lineno, const char *funcname)
{
	ErrorData  *e = &errordata[errordata_depth];

	e->filename = filename;
	e->lineno = lineno;
	e->funcname = funcname;
	if (e->elevel >= ERROR)
	{
		if (e->elevel == ERROR && PG_exception_stack != NULL)
			siglongjmp(*PG_exception_stack, 1);
		rt_emit(e);
		exit(1);
	}
	rt_emit(e);
	errordata_depth--;
	if (errordata_depth < 0)
		MemoryContextReset(ErrorContext);
}

void
pg_re_throw(void)
{
	if (PG_exception_stack != NULL)
		siglongjmp(*PG_exception_stack, 1);
	if (errordata_depth >= 0)
		rt_emit(&errordata[errordata_depth]);
	exit(1);
}

/* Write the error being handled. */
void
EmitErrorReport(void)
{
	if (errordata_depth >= 0)
		rt_emit(&errordata[errordata_depth]);
}

/* A copy of the error being handled, in the current context. */
ErrorData *
CopyErrorData(void)
{
	ErrorData  *copy = palloc(sizeof(ErrorData));
	ErrorData  *e = &errordata[Max(errordata_depth, 0)];

	memcpy(copy, e, sizeof(ErrorData));
	copy->message = e->message ? pstrdup(e->message) : NULL;
	copy->detail = e->detail ? pstrdup(e->detail) : NULL;
	copy->hint = e->hint ? pstrdup(e->hint) : NULL;
	return copy;
}

void
FreeErrorData(ErrorData *edata)
{
	if (edata->message)
		pfree(edata->message);
	if (edata->detail)
		pfree(edata->detail);
	if (edata->hint)
		pfree(edata->hint);
	pfree(edata);
}

/* Forget the error being handled. */
void
FlushErrorState(void)
{
	errordata_depth = -1;
	MemoryContextReset(ErrorContext);
}

/* The SQLSTATE of the error being handled (0 if none). */
int
ep_rt_error_code(void)
{
	return errordata_depth >= 0 ? errordata[errordata_depth].sqlerrcode : 0;
}
