/*
 * libsigmalloc.so: the C entry points a program may reach, as aliases of
 * the sm_ API. This file is #included at the end of src/alloc.c when
 * SM_OVERRIDE is defined, so that `malloc` is the very code of sm_malloc
 * (an alias needs its target in the same translation unit); it holds no
 * logic beyond glibc's extras that have no sm_ twin.
 *
 * Exported through preload/sigmalloc.map: these names, the C++ operators
 * (override_new.cpp) and sm_*; nothing else.
 */
#include <malloc.h>
#include <unistd.h>

#if defined(__clang__)
#define SM_ALIAS(fn) __attribute__((alias(#fn), used, visibility("default")))
#else /* copy(): the alias gets the target's malloc/alloc_size attributes */
#define SM_ALIAS(fn) __attribute__((alias(#fn), copy(fn), used, visibility("default")))
#endif

void *malloc(size_t size) SM_ALIAS(sm_malloc);
void free(void *p) SM_ALIAS(sm_free);
void *calloc(size_t count, size_t size) SM_ALIAS(sm_calloc);
void *realloc(void *p, size_t size) SM_ALIAS(sm_realloc);
void *reallocarray(void *p, size_t count, size_t size) SM_ALIAS(sm_reallocarray);
int posix_memalign(void **out, size_t alignment, size_t size) SM_ALIAS(sm_posix_memalign);
void *aligned_alloc(size_t alignment, size_t size) SM_ALIAS(sm_aligned_alloc);
void *memalign(size_t alignment, size_t size) SM_ALIAS(sm_memalign);
void *valloc(size_t size) SM_ALIAS(sm_valloc);
void *pvalloc(size_t size) SM_ALIAS(sm_pvalloc);
size_t malloc_usable_size(void *p) SM_ALIAS(sm_malloc_usable_size);
void free_sized(void *p, size_t size) SM_ALIAS(sm_free_sized);
void free_aligned_sized(void *p, size_t alignment, size_t size) SM_ALIAS(sm_free_aligned_sized);
int malloc_trim(size_t pad) SM_ALIAS(sm_malloc_trim);
void cfree(void *p) SM_ALIAS(sm_free);

/* glibc's own names for the same functions, which a few programs (and
 * some interposers) call directly. */
void *__libc_malloc(size_t size) SM_ALIAS(sm_malloc);
void __libc_free(void *p) SM_ALIAS(sm_free);
void *__libc_calloc(size_t count, size_t size) SM_ALIAS(sm_calloc);
void *__libc_realloc(void *p, size_t size) SM_ALIAS(sm_realloc);
void *__libc_memalign(size_t alignment, size_t size) SM_ALIAS(sm_memalign);
void *__libc_valloc(size_t size) SM_ALIAS(sm_valloc);
void *__libc_pvalloc(size_t size) SM_ALIAS(sm_pvalloc);

/* mallopt: glibc's tunables do not apply; accepted and ignored (returns 1,
 * glibc's success), so that programs tuning glibc keep working. */
__attribute__((visibility("default"))) int mallopt(int param, int value)
{
	(void)param, (void)value;
	return 1;
}

static struct mallinfo2 mallinfo2_from_stats(void)
{
	struct sm_stats st;
	sm_stats(&st);
	struct mallinfo2 mi = { 0 };
	/* The class pools' carved bytes are sigmalloc's own, outside jemalloc's
	 * counts: handed out (or cached) unless they wait on a pool's list. */
	size_t handed = st.jemalloc_allocated + st.pool_bytes - st.pool_free_bytes;
	mi.arena = st.jemalloc_resident + st.pool_bytes; /* bytes obtained from the system */
	mi.uordblks = handed - (st.cached_bytes < handed ? st.cached_bytes : handed);
	mi.fordblks = st.cached_bytes + st.pool_free_bytes; /* free: in caches and pools */
	mi.fsmblks = mi.fordblks;
	mi.keepcost = 0;
	return mi;
}

__attribute__((visibility("default"))) struct mallinfo2 mallinfo2(void)
{
	return mallinfo2_from_stats();
}

/* The deprecated int version; values saturate at INT_MAX. */
__attribute__((visibility("default"))) struct mallinfo mallinfo(void)
{
	struct mallinfo2 m2 = mallinfo2_from_stats();
	struct mallinfo mi = { 0 };
#define SM_SAT(x) ((x) > 0x7fffffff ? 0x7fffffff : (int)(x))
	mi.arena = SM_SAT(m2.arena);
	mi.uordblks = SM_SAT(m2.uordblks);
	mi.fordblks = SM_SAT(m2.fordblks);
	mi.fsmblks = SM_SAT(m2.fsmblks);
#undef SM_SAT
	return mi;
}

__attribute__((visibility("default"))) void malloc_stats(void)
{
	sm_stats_print(STDERR_FILENO);
}
