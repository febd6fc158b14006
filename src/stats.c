/*
 * Statistics: per-class counters kept per thread, summed on demand.
 *
 * Who calls in: sm_stats / sm_stats_print from any thread at depth 0 (they
 * read jemalloc's totals), and the exit hook. The counters are written by
 * their owners without atomics (fast path: one increment on a line it
 * already holds) or with relaxed atomics (nested paths, refill thread);
 * this file reads each once, racily: a 64-bit aligned load is never torn
 * on the targets we build for, and a sum over running threads is a
 * snapshot in any case.
 */
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <unistd.h>

#include "internal.h"
#include "sigmalloc.h"

_Static_assert(SM_STATS_CLASSES == SM_NUM_CLASSES, "public and internal class counts");

#define RD(x) __atomic_load_n(&(x), __ATOMIC_RELAXED)

void sm_stats(struct sm_stats *out)
{
	*out = (struct sm_stats){ 0 };
	for (uint32_t cls = 0; cls < SM_NUM_CLASSES; cls++)
		out->classes[cls].size = _sm_class_size[cls];
	/* A LIVE cache's priv is its owner's TLS (types.h): walk under the
	 * registry lock, with this thread's signals held back, so that a
	 * handler whose malloc sets this thread up (which takes the lock)
	 * cannot land while we hold it. They stay held back to the end: this
	 * runs at depth 0, so a handler's malloc here would be the owner's and
	 * could wait on the pool lock or jemalloc's, which the reads below take
	 * (a review's probe, a handler allocating while the thread loops on
	 * mallinfo2, hung in 5 of 5 runs before on jemalloc's and in 2 of 3 on
	 * the pool's). */
	sigset_t all, old;
	sigfillset(&all);
	pthread_sigmask(SIG_BLOCK, &all, &old);
	_sm_registry_lock();
	for (struct sm_cache *c = _sm_registry_first(); c; c = c->next_all) {
		uint32_t state = atomic_load_explicit(&c->state, memory_order_relaxed);
		if (state == SM_CACHE_LIVE)
			out->threads_live++;
		else
			out->threads_cached++;
		for (uint32_t cls = 0; cls < SM_NUM_CLASSES; cls++) {
			struct sm_class_stats *o = &out->classes[cls];
			const struct sm_bucket *b = &c->priv[cls];
			const struct sm_bucket_slow *s = &c->slow[cls];
			const struct sm_bucket_shared *sh = &c->shared[cls];
			const uint64_t tally = RD(b->tally);
			o->cache_allocs += bucket_hits(tally);
			o->sync_misses += RD(s->sync_misses);
			o->objects_refilled += RD(s->objects_refilled) +
				atomic_load_explicit(&sh->async_objects_refilled, memory_order_relaxed);
			o->objects_trimmed += RD(s->objects_trimmed) +
				atomic_load_explicit(&sh->async_objects_trimmed, memory_order_relaxed);
			o->async_refills += atomic_load_explicit(&sh->async_refills, memory_order_relaxed);
			o->async_trims += atomic_load_explicit(&sh->async_trims, memory_order_relaxed);
			o->nested_allocs += atomic_load_explicit(&sh->nested_allocs, memory_order_relaxed);
			o->nested_nulls += atomic_load_explicit(&sh->nested_nulls, memory_order_relaxed);
			o->nested_frees += atomic_load_explicit(&sh->nested_frees, memory_order_relaxed);
			int64_t held = (int64_t)(tally & SM_TALLY_COUNT_MAX) +
				atomic_load_explicit(&sh->stock_held, memory_order_relaxed) +
				atomic_load_explicit(&sh->reserve_count, memory_order_relaxed) +
				atomic_load_explicit(&sh->inbox_count, memory_order_relaxed) +
				atomic_load_explicit(&sh->outbox_count, memory_order_relaxed);
			if (held > 0) {
				o->cached_objects += (uint64_t)held;
				if (state != SM_CACHE_LIVE)
					out->unowned_cached_bytes += (uint64_t)held * o->size;
			}
		}
		if (c == _sm_thread.cache) /* the caller's own: what is not folded yet */
			for (uint32_t cls = 0; cls < SM_NUM_CLASSES; cls++) {
				out->classes[cls].nested_allocs += RD(_sm_thread.stock[cls].nested_allocs);
				out->classes[cls].nested_frees += RD(_sm_thread.stock[cls].nested_frees);
			}
		out->large_allocs += RD(c->large_allocs);
		out->large_frees += RD(c->large_frees);
	}
	_sm_registry_unlock();
	for (uint32_t cls = 0; cls < SM_NUM_CLASSES; cls++) {
		struct sm_class_stats *o = &out->classes[cls];
		uint64_t allocs, nulls;
		int32_t held;
		_sm_global_reserve_stats(cls, &allocs, &nulls, &held);
		o->nested_allocs += allocs;
		o->nested_nulls += nulls;
		if (held > 0)
			o->cached_objects += (uint64_t)held;
		held = _sm_depot_held(cls);
		if (held > 0)
			o->cached_objects += (uint64_t)held;
		o->cached_bytes = o->cached_objects * o->size;
		out->cached_bytes += o->cached_bytes;
	}
	_sm_pool_totals(&out->pool_bytes, &out->pool_free_bytes);
	if (atomic_load_explicit(&_sm_initialized, memory_order_acquire) > 0) {
		_sm_backend_read_u64("stats.allocated", &out->jemalloc_allocated);
		_sm_backend_read_u64("stats.resident", &out->jemalloc_resident);
	}
	pthread_sigmask(SIG_SETMASK, &old, NULL);
}


void sm_stats_print(int fd)
{
	struct sm_stats st;
	sm_stats(&st);
	char line[256];
	size_t n;
	n = _sm_format(line, sizeof line,
	               "sigmalloc statistics: %llu live thread caches, %llu waiting for reuse\n",
	               (unsigned long long)st.threads_live, (unsigned long long)st.threads_cached);
	_sm_write_all(fd, line, n);
	n = _sm_format(line, sizeof line, "%6s %12s %10s %10s %10s %10s %10s %9s %7s %9s %10s\n",
	               "class", "cache_hits", "sync_miss", "refill_as", "trim_as", "refilled",
	               "trimmed", "nest_allc", "nest_0", "nest_free", "cached_B");
	_sm_write_all(fd, line, n);
	for (uint32_t cls = 0; cls < SM_NUM_CLASSES; cls++) {
		const struct sm_class_stats *o = &st.classes[cls];
		if (!o->cache_allocs && !o->sync_misses && !o->nested_allocs && !o->nested_frees &&
		    !o->cached_objects)
			continue;
		n = _sm_format(line, sizeof line,
		               "%6zu %12llu %10llu %10llu %10llu %10llu %10llu %9llu %7llu %9llu %10llu\n",
		               o->size, (unsigned long long)o->cache_allocs,
		               (unsigned long long)o->sync_misses, (unsigned long long)o->async_refills,
		               (unsigned long long)o->async_trims, (unsigned long long)o->objects_refilled,
		               (unsigned long long)o->objects_trimmed,
		               (unsigned long long)o->nested_allocs, (unsigned long long)o->nested_nulls,
		               (unsigned long long)o->nested_frees, (unsigned long long)o->cached_bytes);
		_sm_write_all(fd, line, n);
	}
	n = _sm_format(line, sizeof line, "pools: %llu B carved, %llu B of it free in the pools\n",
	               (unsigned long long)st.pool_bytes, (unsigned long long)st.pool_free_bytes);
	_sm_write_all(fd, line, n);
	n = _sm_format(line, sizeof line,
	               "large: %llu allocations, %llu frees; cached %llu B; jemalloc allocated %llu B, "
	               "resident %llu B\n",
	               (unsigned long long)st.large_allocs, (unsigned long long)st.large_frees,
	               (unsigned long long)st.cached_bytes, (unsigned long long)st.jemalloc_allocated,
	               (unsigned long long)st.jemalloc_resident);
	_sm_write_all(fd, line, n);
}

/* Where the table at exit goes: a duplicate of stderr made at start-up,
 * because many programs close stderr before they exit (coreutils and xz
 * do, through gnulib's close_stdout), and a table written to fd 2 then
 * would vanish. */
static int stats_fd = -1;

void _sm_stats_at_exit_prepare(void)
{
	if (_sm_options.stats_at_exit)
		stats_fd = fcntl(STDERR_FILENO, F_DUPFD_CLOEXEC, 3);
}

/* SIGMALLOC_STATS=1: the table at exit. A destructor, not atexit(): atexit
 * may allocate, and registering needs no call at all this way. */
__attribute__((destructor)) static void stats_at_exit(void)
{
	if (_sm_options.stats_at_exit && atomic_load(&_sm_initialized) > 0)
		sm_stats_print(stats_fd >= 0 ? stats_fd : STDERR_FILENO);
}
