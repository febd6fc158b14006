/*
 * sigmalloc: an async-signal-safe malloc over jemalloc.
 *
 * This header holds only the exported API. Every function here may be
 * called from a signal handler, including one that interrupted any of them
 * on the same thread; an allocation that cannot be served without an unsafe
 * step returns NULL with errno == ENOMEM (see docs/SIGNAL-SAFETY.md for the
 * exceptions, which are named there).
 *
 * Loaded with LD_PRELOAD, libsigmalloc.so also defines malloc, free and the
 * rest of the C and C++ allocation entry points as these functions.
 */
#ifndef SIGMALLOC_H
#define SIGMALLOC_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#if defined(__GNUC__)
#define SM_API __attribute__((visibility("default")))
#define SM_MALLOC_ATTR __attribute__((malloc, warn_unused_result))
#define SM_ALLOC_SIZE(...) __attribute__((alloc_size(__VA_ARGS__)))
#else
#define SM_API
#define SM_MALLOC_ATTR
#define SM_ALLOC_SIZE(...)
#endif

#define SIGMALLOC_VERSION_MAJOR 0
#define SIGMALLOC_VERSION_MINOR 1

/* The C allocation API, with glibc's semantics (docs/API.md). */
SM_API void *sm_malloc(size_t size) SM_MALLOC_ATTR SM_ALLOC_SIZE(1);
SM_API void sm_free(void *ptr);
SM_API void *sm_calloc(size_t count, size_t size) SM_MALLOC_ATTR SM_ALLOC_SIZE(1, 2);
SM_API void *sm_realloc(void *ptr, size_t size) SM_ALLOC_SIZE(2);
SM_API void *sm_reallocarray(void *ptr, size_t count, size_t size) SM_ALLOC_SIZE(2, 3);
SM_API int sm_posix_memalign(void **out, size_t alignment, size_t size);
SM_API void *sm_aligned_alloc(size_t alignment, size_t size) SM_MALLOC_ATTR SM_ALLOC_SIZE(2);
SM_API void *sm_memalign(size_t alignment, size_t size) SM_MALLOC_ATTR SM_ALLOC_SIZE(2);
SM_API void *sm_valloc(size_t size) SM_MALLOC_ATTR SM_ALLOC_SIZE(1);
SM_API void *sm_pvalloc(size_t size) SM_MALLOC_ATTR;
SM_API size_t sm_malloc_usable_size(void *ptr);
SM_API void sm_free_sized(void *ptr, size_t size);
SM_API void sm_free_aligned_sized(void *ptr, size_t alignment, size_t size);

/* Returns cached memory: this thread's cache to jemalloc, and jemalloc's
 * unused dirty pages to the system. Returns 1 (memory may have been
 * released), as glibc's malloc_trim does. Not async-signal-safe: from a
 * signal handler that interrupted an allocation it does nothing and
 * returns 0. */
SM_API int sm_malloc_trim(size_t pad);

/* Statistics, summed over every thread cache that exists (live threads and
 * caches waiting for reuse). Counters only grow; a snapshot taken while other
 * threads run is approximate (each counter is read once, without a lock). */
#define SM_STATS_CLASSES 28
struct sm_class_stats {
	size_t size;              /* object size of this class, in bytes */
	uint64_t cache_allocs;    /* allocations served from a thread cache, without
	                             a call into jemalloc */
	uint64_t sync_misses;     /* allocations that refilled from jemalloc themselves */
	uint64_t async_refills;   /* batches the refill thread delivered */
	uint64_t async_trims;     /* batches the refill thread returned to jemalloc */
	uint64_t objects_refilled;/* objects brought from the backend into caches (sync and
	                             async): the class's pool, then jemalloc */
	uint64_t objects_trimmed; /* objects returned from caches to the backend (sync and async) */
	uint64_t nested_allocs;   /* allocations made from a nested (signal) context */
	uint64_t nested_nulls;    /* of those, how many returned NULL */
	uint64_t nested_frees;    /* frees made from a nested context */
	uint64_t cached_objects;  /* objects sitting in caches now (approximate) */
	uint64_t cached_bytes;    /* cached_objects * size */
};
struct sm_stats {
	struct sm_class_stats classes[SM_STATS_CLASSES];
	uint64_t large_allocs;    /* allocations above the top class, from jemalloc */
	uint64_t large_frees;
	uint64_t threads_live;    /* thread caches owned by a running thread */
	uint64_t threads_cached;  /* thread caches waiting for reuse */
	uint64_t cached_bytes;    /* total of classes[].cached_bytes */
	uint64_t unowned_cached_bytes; /* of those, held by caches of exited threads */
	uint64_t jemalloc_allocated; /* jemalloc's stats.allocated, 0 if unknown */
	uint64_t jemalloc_resident;  /* jemalloc's stats.resident, 0 if unknown */
	uint64_t pool_bytes;      /* bytes carved from the class pools (served without jemalloc) */
	uint64_t pool_free_bytes; /* of those, freed back to the pools and waiting for reuse */
};
/* Fills *out. Not async-signal-safe (it reads jemalloc's statistics). */
SM_API void sm_stats(struct sm_stats *out);
/* Writes the per-class table of sm_stats to file descriptor fd with write(2). */
SM_API void sm_stats_print(int fd);

#ifdef __cplusplus
}
#endif

#endif /* SIGMALLOC_H */
