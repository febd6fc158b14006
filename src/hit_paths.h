/*
 * The hit paths of one size class, malloc's and free's, written once for
 * the two places they run:
 *
 *   src/alloc.c      the library's sm_malloc and sm_free (and everything
 *                    else that allocates a class object), the thread state
 *                    reached through the GOT's initial-exec TLS offset;
 *   preload/near.c   the near copy of sm_malloc and sm_free that the main
 *                    program's calls reach, the thread state reached
 *                    %fs-relative from an immediate patched in at start-up.
 *
 * Each file includes this header once, after defining:
 *
 *   HIT_PREFIX                 prefix of the functions defined here
 *   HIT_THREAD                 the thread state's type (struct sm_thread,
 *                              or the same in the __seg_fs address space)
 *   HIT_SELF()                 a HIT_THREAD * to this thread's state
 *   HIT_NESTED_ALLOC(cls, align), HIT_NESTED_FREE(p, cls)
 *                              d != 0 (nested): called with depth raised,
 *                              they restore it (alloc.c's reentrancy
 *                              protocol); the allocation returns the object
 *                              or NULL with errno set
 *   HIT_ALLOC_SLOW(cls), HIT_FREE_SLOW(p, cls)
 *                              d == 0 at a watermark: refill.c's slow
 *                              paths, which leave depth at 0
 *   HIT_DOUBLE_FREE(p)         the report of p found on the bucket's top,
 *                              made with depth held: it aborts
 *   HIT_POISON(p), HIT_UNPOISON(p)
 *                              AddressSanitizer's marks (no-ops elsewhere)
 *
 * and gets HIT_PREFIX##alloc_class(cls, align), HIT_PREFIX##free_class(p,
 * cls) and the window's entry they use, HIT_PREFIX##depth_enter(t). Both are always inlined: the fallbacks
 * are tail calls, and the d == 0 hit is the handful of instructions that
 * alloc.c's header counts (no call, no locked instruction, the object
 * neither read nor written). Invariants they rely on: the bucket's count
 * stays below capacity (types.h), slots[-1] is a NULL guard in every
 * bucket, the sentinel's included, and a thread without a cache has the
 * sentinel's buckets, whose marks are 0, so that every call misses into
 * the slow path, which sets the thread up.
 */
#ifndef SM_HIT_PATHS_H
#define SM_HIT_PATHS_H
#define SM_HIT_CAT2(a, b) a##b
#define SM_HIT_CAT(a, b) SM_HIT_CAT2(a, b)
#endif

#define HIT(name) SM_HIT_CAT(HIT_PREFIX, name)

/* Enters the depth window (alloc.c's reentrancy protocol): returns the
 * depth found, which the caller's d == 0 or d != 0 case follows. */
static sm_always_inline uint32_t HIT(depth_enter)(HIT_THREAD *t)
{
	uint32_t d = t->depth;
	t->depth = d + 1;
	sm_signal_fence();
	return d;
}

/* Allocates one object of class cls; align (0 for plain malloc) only limits
 * which neighbouring classes a nested allocation may fall back to. */
static sm_always_inline void *HIT(alloc_class)(size_t cls, size_t align)
{
	HIT_THREAD *t = HIT_SELF();
	if (sm_unlikely(HIT(depth_enter)(t) != 0))
		return HIT_NESTED_ALLOC(cls, align);
	/* The bucket through the pointer kept in the TLS page (sm_thread.buckets):
	 * one load, then plain addressing, although the buckets are in the TLS
	 * too. The tally carries the dependency from one call to the next, and
	 * two builds that addressed them from %fs (as %fs:off(index), or from
	 * the thread pointer at %fs:0) took 4.62-4.71 against 4.33-4.39 ns per
	 * pair/64 on an AMD Zen 5 core (sigmalloc-bench, 10-12 launches each,
	 * interleaved, medians; docs/PERFORMANCE.md); through the pointer,
	 * 4.37-4.40. */
	struct sm_bucket *b = t->buckets + cls;
	uint64_t tally = b->tally;
	size_t count = tally & SM_TALLY_COUNT_MAX;
	if (sm_unlikely(count <= b->low_mark))
		return HIT_ALLOC_SLOW(cls); /* leaves depth at 0 */
	b->tally = tally + (sm_config_stats ? SM_TALLY_HIT : (uint64_t)-1);
	void *p = b->slots[count - 1];
	HIT_UNPOISON(p);
	sm_signal_fence();
	t->depth = 0;
	return p;
}

static sm_always_inline void HIT(free_class)(void *p, size_t cls)
{
	HIT_THREAD *t = HIT_SELF();
	if (sm_unlikely(HIT(depth_enter)(t) != 0)) {
		HIT_NESTED_FREE(p, cls);
		return;
	}
	struct sm_bucket *b = t->buckets + cls;
	uint64_t tally = b->tally;
	size_t count = tally & SM_TALLY_COUNT_MAX;
	/* p on top of the bucket is free already: the second free of p with
	 * no malloc of its class in between. Before the mark test, so that it
	 * also covers a free that goes on to the slow path, ahead of anything
	 * there that could move the top (slots[-1] is a NULL guard in every
	 * bucket, the sentinel's included: types.h). */
	if (sm_unlikely(b->slots[(ptrdiff_t)count - 1] == p)) {
		HIT_DOUBLE_FREE(p); /* a jump with depth held: it aborts */
		return;
	}
	if (sm_unlikely(count >= b->high_mark)) {
		HIT_FREE_SLOW(p, cls); /* leaves depth at 0 */
		return;
	}
	b->slots[count] = p; /* count < high_mark < capacity (types.h) */
	b->tally = tally + 1;
	HIT_POISON(p);
	sm_signal_fence();
	t->depth = 0;
}

#undef HIT
