/*
 * The fast path: every allocation entry point, and the reentrancy protocol.
 *
 * Who calls in: any thread, any signal handler, at any nesting, before or
 * after initialisation, before or after the thread's cache exists, and after
 * the thread's cache was handed back at exit.
 *
 * Reentrancy protocol (DESIGN.md; docs/SIGNAL-SAFETY.md has the argument):
 *
 *   depth is a plain per-thread counter in initial-exec TLS. Every entry
 *   point does `d = depth++`, then a compiler signal fence, and looks at d:
 *
 *   d == 0  the caller is the owner: it may touch its cache's private buckets
 *           (struct sm_bucket) and call jemalloc (backend.c). Nothing else
 *           on this thread can be inside the allocator, because a signal
 *           handler that interrupts this window sees depth > 0.
 *   d > 0   nested: a signal handler interrupted an allocator call on this
 *           thread (at any depth). It must not touch the private buckets (the
 *           owner may be half way through a pop) nor call jemalloc (the
 *           owner may hold its locks). It uses the thread's nested stock
 *           in TLS (tlslist.h: shared with this thread's handlers only)
 *           and, when that is empty, the bucket's atomic lists
 *           (lockless.h): an allocation takes one object, else returns NULL
 *           with errno = ENOMEM; a free pushes onto the stock and cannot
 *           fail.
 *
 *   Leaving restores depth after a second fence. Handlers nest strictly
 *   (LIFO), so a handler has restored depth before the code it interrupted
 *   resumes, and the non-atomic ++ and -- cannot lose an update.
 *   No atomic read-modify-write and no syscall is on the d == 0 hit path.
 *
 * A bucket (one size class of one thread):
 *
 *   private:  slots[0 .. count-1], top last (LIFO)       owner, depth 1 only
 *             (the bucket in the owner's TLS while it lives, in the
 *             cache when not; the slot array in the cache's mapping)
 *             malloc pops while count > low_mark, free pushes while
 *             count < high_mark (< capacity); crossing either mark goes
 *             to refill.c.
 *   TLS:      stock    nested frees, topped up by the owner (this thread only)
 *   atomic:   reserve  for nested mallocs once the stock is empty
 *             inbox    refills from the refill thread   (magazines:
 *             outbox   trimmed batches for the refill    arrays of
 *                      thread                            pointers)
 *
 * Under LD_PRELOAD the main program's own calls reach a copy of the hit
 * paths of sm_malloc and sm_free mapped near its code (preload/near.c),
 * which sends every case but the d == 0 hit and a nested call's stock slot
 * to the library's own functions. Both take the class's hit paths from one
 * source, src/hit_paths.h.
 *
 * Objects carry no header: free() computes the class from the address
 * (backend.c lays every class out in its own 64 GiB slot). The hit paths
 * neither read nor write the object: a bucket holds pointers (types.h).
 * Objects are written only where a list through them is needed: the
 * nested stock's `more`, the reserves and the deferred list. Batches that
 * cross between threads (inbox, outbox, depot) are magazines, arrays of
 * pointers (magazine.c).
 *
 * Instruction count of a hit (x86-64, gcc 12 -O2, counting the ret; see
 * `objdump -d build/preload/libsigmalloc.so` at malloc and free, and
 * docs/PERFORMANCE.md): malloc 25, free 30 (gdb's 57 per pair adds the
 * two PLT jumps); no call, no locked instruction.
 * Of those, 3 are the depth window, 3 of free's the alignment check of the
 * pointer (class_pointer_misaligned), 2 its double-free check (the top
 * slot), 1 the GOT load of the TLS offset (a
 * shared library's initial-exec TLS). The statistics counter costs no
 * instruction of its own: it rides in the count's word (sm_bucket.tally),
 * and a hit is one add. The bucket, the class table and the copy of
 * _sm_base are read from the thread's TLS block (one page with the depth
 * counter and the nested stock; types.h): the depth and the class table
 * %fs-relative from the one GOT load, the bucket through the TLS page's
 * buckets pointer (hit_paths.h). The class index is size_t so that the
 * bucket address is computed once.
 */
#include <string.h>

#include "internal.h"
#include "sigmalloc.h"

/* The thread's state. Its buckets pointer starts at the sentinel's, whose
 * marks are 0, so that a new thread's first malloc and free miss into the
 * slow path, which sets the thread up: the fast path has no init check.
 * The cache pointer starts at the sentinel too, which the slow path
 * recognises. */
__thread struct sm_thread _sm_thread sm_tls __attribute__((aligned(4096))) = {
	.cache = (struct sm_cache *)&_sm_cache_empty,
	.buckets = (struct sm_bucket *)_sm_cache_empty.parked,
	.base = SM_BASE_UNSET,
	.class_of_units = SM_CLASS_OF_UNITS,
	.class_align_mask = SM_CLASS_ALIGN_MASK,
};
/* Aligned to its size rounded up to a power of two: never across a page. */
_Static_assert(sizeof(struct sm_thread) <= 4096, "the thread state fits in one page");


/* ------------------------------------------------------------------------
 * Depth window
 * ---------------------------------------------------------------------- */

/* depth_enter(t): src/hit_paths.h, instantiated below. */
static sm_always_inline void depth_leave(struct sm_thread *t)
{
	sm_signal_fence();
	t->depth--;
}

/* The fatal reports of the hit path. noipa: gcc must not learn that they do
 * not return, so that a call in tail position stays a jump and the hit path
 * sets up no stack frame for it (a call to a noreturn function is kept a
 * call, which needs the stack aligned: two instructions on every free). */
sm_noipa sm_cold void _sm_double_free(void *p)
{
	_sm_fatal("sigmalloc: free(): double free of %p\n", p);
}

static sm_noipa sm_cold void bad_pointer(const char *fn, void *p)
{
	_sm_fatal("sigmalloc: %s(): invalid pointer %p (never allocated by sigmalloc)\n", fn, p);
}

/* A pointer into the large range that does not start a live large block:
 * freed already, inside one, or never handed out (backend.c's map). */
static sm_noinline sm_cold void bad_large_pointer(const char *fn, void *p)
{
	_sm_fatal("sigmalloc: %s(): invalid pointer %p (not a live large block: freed already, "
	          "inside one, or never allocated)\n", fn, p);
}

/* Aborts unless p starts a live large block; returns its usable size by
 * the map (0: no map, ask jemalloc). One load of the map's word. */
static inline size_t check_large_pointer(const char *fn, void *p)
{
	size_t usable;
	if (sm_unlikely(!_sm_backend_large_live(p, &usable)))
		bad_large_pointer(fn, p);
	return usable;
}

/* ------------------------------------------------------------------------
 * Small objects: the fast path
 * ---------------------------------------------------------------------- */

/* alloc_class(cls, align) and free_class(p, cls): src/hit_paths.h, shared
 * with the near copy (preload/near.c). The thread state through the GOT's
 * TLS offset; the fallbacks are refill.c's and the reports above. */
#define HIT_PREFIX
#define HIT_THREAD struct sm_thread
#define HIT_SELF() (&_sm_thread)
#define HIT_NESTED_ALLOC(cls, align) _sm_nested_alloc((uint32_t)(cls), (align))
#define HIT_NESTED_FREE(p, cls) _sm_nested_free((p), (uint32_t)(cls))
#define HIT_ALLOC_SLOW(cls) _sm_alloc_slow((uint32_t)(cls))
#define HIT_FREE_SLOW(p, cls) _sm_free_slow((p), (uint32_t)(cls))
#define HIT_DOUBLE_FREE(p) _sm_double_free(p)
#define HIT_POISON(p) sm_poison(p)
#define HIT_UNPOISON(p) sm_unpoison(p)
#include "hit_paths.h"

/* ------------------------------------------------------------------------
 * Large objects and everything that is not a class pointer
 * ---------------------------------------------------------------------- */

static sm_noinline void *alloc_large(size_t size, size_t align, bool zero)
{
	struct sm_thread *t = &_sm_thread;
	void *p = NULL;
	if (depth_enter(t) == 0)
		p = _sm_large_alloc(size, align, zero);
	depth_leave(t);
	/* Nested: jemalloc may be mid-operation under us; no large reserve. */
	if (!p)
		errno = ENOMEM;
	return p;
}

/* A pointer into a class object's slot that is not at an object's start
 * (misaligned for its class: internal.h, SM_CLASS_ALIGN_MASK) was never
 * handed out: it would be pushed into a bucket and handed out overlapping
 * a live object. Catches every offset that is not a multiple of the class's
 * alignment (any offset into a power-of-two class, +8 into any class); an
 * offset by a multiple of it (+16 into a 48-byte object) is not seen. */
static sm_always_inline bool class_pointer_misaligned(void *p, uintptr_t slot)
{
	return sm_unlikely(((uintptr_t)p & _sm_thread.class_align_mask[slot]) != 0);
}

static sm_always_inline void check_class_pointer(const char *fn, void *p, uintptr_t slot)
{
	if (class_pointer_misaligned(p, slot))
		bad_pointer(fn, p);
}

/* free() of NULL, of a large object, of a foreign pointer, or of a class
 * object on a thread whose copy of _sm_base is not set yet (its first free
 * of one: the TLS image holds SM_BASE_UNSET, which puts every pointer out
 * of the class range). The caller's slot is not trusted: it was computed
 * from the copy, which a signal handler may have set since (its own first
 * free), so the copy would now match while the slot is still the one of
 * SM_BASE_UNSET. Always recomputed from the global base. */
static sm_noinline void free_other(void *p)
{
	if (!p)
		return;
	struct sm_thread *t = &_sm_thread;
	uintptr_t base = __atomic_load_n(&_sm_base, __ATOMIC_ACQUIRE);
	if (t->base != base)
		t->base = base; /* idempotent: a handler may do the same */
	uintptr_t slot = slot_of(p);
	if (slot < SM_NUM_CLASSES) {
		check_class_pointer("free", p, slot);
		free_class(p, slot);
		return;
	}
	if (sm_unlikely(!slot_is_large(slot)))
		bad_pointer("free", p);
	(void)check_large_pointer("free", p);
	if (depth_enter(t) == 0) {
		_sm_large_free(p);
	} else {
		_sm_backend_large_forget(p);
		_sm_deferred_push(p); /* freed by the next owner slow path */
	}
	depth_leave(t);
}

/* ------------------------------------------------------------------------
 * The API
 * ---------------------------------------------------------------------- */

__attribute__((hot, aligned(64))) void *sm_malloc(size_t size)
{
	if (sm_likely(size <= SM_MAX_SMALL))
		return alloc_class(class_of_size(size), 0);
	return alloc_large(size, 0, false);
}

__attribute__((hot, aligned(64))) void sm_free(void *p)
{
	uintptr_t slot = ((uintptr_t)p - _sm_thread.base) >> SM_SLOT_SHIFT;
	if (sm_likely(slot < SM_NUM_CLASSES)) {
		if (class_pointer_misaligned(p, slot)) {
			bad_pointer("free", p); /* a jump: it aborts */
			return;
		}
		free_class(p, slot);
	} else {
		free_other(p);
	}
}

/* The size is only a hint: the address says everything. */
void sm_free_sized(void *p, size_t size)
{
	(void)size;
	sm_free(p);
}

void sm_free_aligned_sized(void *p, size_t alignment, size_t size)
{
	(void)alignment, (void)size;
	sm_free(p);
}

void *sm_calloc(size_t count, size_t size)
{
	size_t total;
	if (sm_unlikely(__builtin_mul_overflow(count, size, &total))) {
		errno = ENOMEM;
		return NULL;
	}
	if (sm_likely(total <= SM_MAX_SMALL)) {
		void *p = alloc_class(class_of_size(total), 0);
		if (p)
			memset(p, 0, total);
		return p;
	}
	/* jemalloc knows which of its pages are fresh and skips zeroing them. */
	return alloc_large(total, 0, true);
}

/* Power-of-two align > 16 (smaller ones need nothing beyond malloc). */
static void *alloc_aligned(size_t align, size_t size)
{
	if (align <= 16)
		return sm_malloc(size);
	uint32_t cls = _sm_class_aligned(size, align);
	if (cls < SM_NUM_CLASSES)
		return alloc_class(cls, align);
	return alloc_large(size, align, false);
}

static inline bool is_pow2(size_t x)
{
	return x && !(x & (x - 1));
}

int sm_posix_memalign(void **out, size_t alignment, size_t size)
{
	if (!is_pow2(alignment) || alignment % sizeof(void *) != 0)
		return EINVAL;
	int saved = errno;
	void *p = alloc_aligned(alignment, size);
	errno = saved; /* posix_memalign reports through its result only */
	if (!p)
		return ENOMEM;
	*out = p;
	return 0;
}

/* C17: the alignment must be valid (a power of two); NULL/EINVAL if not,
 * as glibc 2.38 and later do. */
void *sm_aligned_alloc(size_t alignment, size_t size)
{
	if (!is_pow2(alignment)) {
		errno = EINVAL;
		return NULL;
	}
	return alloc_aligned(alignment, size);
}

/* glibc's memalign: an alignment that is not a power of two is rounded up
 * to the next one; one above SIZE_MAX / 2 + 1 is EINVAL. */
void *sm_memalign(size_t alignment, size_t size)
{
	if (alignment > SIZE_MAX / 2 + 1) {
		errno = EINVAL;
		return NULL;
	}
	if (!is_pow2(alignment)) {
		size_t a = 16;
		while (a < alignment)
			a <<= 1;
		alignment = a;
	}
	return alloc_aligned(alignment, size);
}

void *sm_valloc(size_t size)
{
	return alloc_aligned(SM_PAGE, size);
}

void *sm_pvalloc(size_t size)
{
	size_t rounded = (size + SM_PAGE - 1) & ~(size_t)(SM_PAGE - 1);
	if (rounded < size) {
		errno = ENOMEM;
		return NULL;
	}
	return alloc_aligned(SM_PAGE, rounded ? rounded : SM_PAGE);
}

/* Moves an object of usable size `old` to a new block of `size` bytes. */
static void *realloc_move(void *p, size_t old, size_t size)
{
	void *q = sm_malloc(size);
	if (!q)
		return NULL; /* p is left untouched, as C requires */
	memcpy(q, p, old < size ? old : size);
	sm_free(p);
	return q;
}

/* The size a small object grows into when realloc must move it: a quarter
 * more than asked (tcmalloc's rule), so that growth by small steps (a
 * string appended to) copies once per 25 %, not at every class boundary;
 * never past the largest class. The headroom is the block's usable size
 * (malloc_usable_size reports it). Only for requests that fit a class
 * (large blocks have jemalloc's size classes; and size + size / 4 must not
 * wrap for a huge request, which has to fail), and not in a nested call,
 * whose reserves are small. */
static inline size_t realloc_grown(size_t size)
{
	if (size > SM_MAX_SMALL || _sm_thread.depth != 0)
		return size;
	size_t grown = size + size / 4;
	return grown > SM_MAX_SMALL ? SM_MAX_SMALL : grown;
}

/*
 * glibc semantics: realloc(NULL, n) is malloc(n); realloc(p, 0) frees p and
 * returns NULL. A small object stays where it is while its class still
 * fits: the new size maps to the same class, or to a smaller class but
 * still fills more than half of this one (so that shrinking a lot gives the
 * memory back, as jemalloc does). Growing out of its class, it moves with
 * headroom (realloc_grown).
 */
void *sm_realloc(void *p, size_t size)
{
	if (!p)
		return sm_malloc(size);
	if (size == 0) {
		sm_free(p);
		return NULL;
	}
	uintptr_t slot = slot_of(p);
	if (slot < SM_NUM_CLASSES) {
		check_class_pointer("realloc", p, slot);
		size_t old = _sm_class_size[slot];
		if (size <= SM_MAX_SMALL) {
			uint32_t cls = class_of_size(size);
			if (cls == slot || (cls < slot && size > old / 2))
				return p;
		}
		return realloc_move(p, old, size > old ? realloc_grown(size) : size);
	}
	if (!slot_is_large(slot))
		bad_pointer("realloc", p);
	/* Still in its jemalloc size class: p stays, from the one load of the
	 * map of large blocks that checked it, at any depth (no jemalloc, no
	 * window). */
	if (large_class_holds(check_large_pointer("realloc", p), size))
		return p;
	struct sm_thread *t = &_sm_thread;
	void *q = NULL;
	if (size <= SM_MAX_SMALL) {
		/* Shrinking below the top class: into a class, by copy. */
		if (depth_enter(t) == 0) {
			depth_leave(t);
			return realloc_move(p, size, size);
		}
	} else if (depth_enter(t) == 0) {
		q = _sm_large_realloc(p, size);
	}
	depth_leave(t);
	if (!q)
		errno = ENOMEM;
	return q;
}

void *sm_reallocarray(void *p, size_t count, size_t size)
{
	size_t total;
	if (__builtin_mul_overflow(count, size, &total)) {
		errno = ENOMEM;
		return NULL;
	}
	return sm_realloc(p, total);
}

/* The class size for our objects. For a large object, sigmalloc's map of
 * large blocks (backend.c), else jemalloc; from a nested context the map
 * only (jemalloc's lookup is not async-signal-safe): 0 if the map could
 * not be reserved. */
size_t sm_malloc_usable_size(void *p)
{
	if (!p)
		return 0;
	uintptr_t slot = slot_of(p);
	if (slot < SM_NUM_CLASSES) {
		check_class_pointer("malloc_usable_size", p, slot);
		return _sm_class_size[slot];
	}
	if (!slot_is_large(slot))
		bad_pointer("malloc_usable_size", p);
	size_t n = check_large_pointer("malloc_usable_size", p);
	if (n)
		return n; /* from the map, at any depth */
	struct sm_thread *t = &_sm_thread;
	if (depth_enter(t) == 0)
		n = _sm_backend_usable_large(p); /* no map: jemalloc, not nested */
	depth_leave(t);
	return n;
}

int sm_malloc_trim(size_t pad)
{
	(void)pad;
	struct sm_thread *t = &_sm_thread;
	int done = 0;
	if (depth_enter(t) == 0) {
		_sm_trim_thread();
		done = 1;
	}
	depth_leave(t);
	return done;
}

#ifdef SM_OVERRIDE
/* libsigmalloc.so: the aliases, in this translation unit so that malloc is
 * sm_malloc itself, not a call to it (STYLE.md 2, as mimalloc's
 * alloc-override.c). */
#include "../preload/override.c"
#endif
