/*
 * Preloaded after the ASan runtime (test/run sanitize) so that PostgreSQL 15
 * starts at all with libasan in LD_PRELOAD.
 *
 * Why: libasan is initialised lazily by the first malloc. A preloaded library
 * runs its constructors after those of the program's own libraries, and here
 * the first malloc comes from libgpg-error's constructor (PostgreSQL links it
 * through libgcrypt), inside bindtextdomain(), which holds glibc's gettext
 * lock (_nl_state_lock) for writing. ASan's initialisation looks up the
 * optional symbol "swift_demangle" with dlsym() and clears the failure with
 * dlerror(); dlerror() translates its message through gettext, which takes
 * the same lock for reading in the same thread. The lock is not recursive:
 * its state is corrupted and the next bindtextdomain() (PostgreSQL's own, in
 * set_pglocale_pgservice) waits forever -- "postgres -V" hangs, so does initdb.
 *
 * Defining the symbol makes dlsym() succeed, so dlerror() has nothing to
 * translate. ASan calls it only to demangle Swift names ("_T..."), which
 * never occur here; returning NULL means "not demangled".
 */
#include <stddef.h>

extern char *swift_demangle(const char *mangled, size_t len, char *out,
							size_t *out_len, unsigned int flags);

char *
swift_demangle(const char *mangled, size_t len, char *out, size_t *out_len,
			   unsigned int flags)
{
	return NULL;
}
