/*
 * Class pools: the first _sm_pool_bytes of every class slot, which
 * sigmalloc carves into objects itself before the class asks jemalloc.
 *
 * Why: every jemalloc arena costs every fork() a copy-on-write fault per
 * page of its mutexes, in the parent and in the child (jemalloc's prefork
 * and postfork handlers lock, unlock and re-initialise them all; about 19
 * faults per arena, docs/MEMORY.md), and about 90 KiB of bookkeeping. A
 * small program (a shell, make, a short tool) uses a few dozen objects of
 * most classes; served from pools, it creates no class arena at all, and
 * forks as a jemalloc program with one more arena (the large one) does.
 *
 *   slot c:  | colour | pool: objects of class c | ... | colour | jemalloc's extents |
 *            ^ slot start                             ^ + _sm_pool_bytes (the span)
 *   (colour: _sm_slot_colour(c), internal.h)
 *
 * Who calls in: backend.c only, on the paths that call jemalloc (the owner
 * at depth 1, the refill thread, thread exit, fork), never a nested
 * (signal) context. pool_lock is a plain mutex: it is held for a few list
 * operations and at most one mprotect (by a trim, for a pass over
 * every pool and its madvise calls: under 1 ms at the default size,
 * docs/MEMORY.md), never across a call into jemalloc or any other lock,
 * and fork holds it (cache.c takes it last).
 *
 * Invariants:
 *   - an object is a pool object exactly when its offset in its class slot
 *     is below _sm_pool_bytes (_sm_pool_holds), which is fixed at init;
 *   - jemalloc never sees a pool object: backend.c's two free functions
 *     route pool objects here, and jemalloc's class ranges start after the
 *     pool (backend.c, _sm_backend_init);
 *   - a freed pool object waits on its pool's free list for the next
 *     refill of its class, which takes it before new ones are carved and
 *     before jemalloc. So a class holds at most its pool's capacity unused
 *     (28 classes, 3.5 MiB at the default 128 KiB, all of it only if every
 *     class once used its whole pool and then freed it all;
 *     docs/MEMORY.md), until malloc_trim (_sm_pool_trim) or the refill
 *     thread, after the decay time without a free (_sm_pool_trim_idle),
 *     gives back every page that holds only free objects;
 *   - nothing is kept in a waiting object: its page may be discarded;
 *   - carved only moves down in a trim, by the objects at the top
 *     of the pool that are all on the free list.
 *   - pool objects are ordinary class objects everywhere else: same size,
 *     alignment (a pool starts a whole number of pages into its slot, and
 *     objects lie at multiples of the class size from it, as jemalloc's lie
 *     from a page-aligned slab), and malloc_usable_size.
 */
#include <pthread.h>
#include <stdatomic.h>
#include <string.h>
#include <sys/mman.h>

#include "internal.h"

uintptr_t _sm_pool_bytes;     /* the span each slot keeps for its pool */
static uintptr_t pool_capacity; /* what one pool carves: the span less the colouring
                                   (_sm_slot_colour, internal.h) */

struct pool {
	uintptr_t start;       //! slot start; written once at init
	uintptr_t carved;      //! bytes of the pool handed out so far (the carve mark)
	bool mapped;           //! the pool's pages are PROT_READ | PROT_WRITE
	/* Freed pool objects, LIFO: an array of pointers, as a bucket is, so
	 * that neither a free nor a refill reads or writes an object (a list
	 * linked through them made every refill a chain of cache misses, one
	 * object after another). Room for every object the pool can carve:
	 * more on it is a second free of one of them (pool_overflow). */
	void **free;
	uint32_t nfree;
	uint32_t room;         //! pool_capacity / the class size
	uint64_t *marks;       //! room bits, clear but inside trim_locked
	bool freed_into;       //! a free came since the last trim: only such a pool
	                       //! can have a new free page (a refill frees none)
	/* Whether the pool may have an object: written under pool_lock, read
	 * without it, so that a class past its pool (every refill of a busy
	 * program) does not take the lock. A stale false leaves a freed pool
	 * object on the list until a later refill; a stale true costs one
	 * lock. */
	_Atomic bool may_have;
};

static struct pool pools[SM_NUM_CLASSES];
static pthread_mutex_t pool_lock = PTHREAD_MUTEX_INITIALIZER;
/* Frees into the pools: the refill thread's idle trim (_sm_pool_trim_idle)
 * runs once none came for the decay time. Both are written under
 * pool_lock and read by the refill thread without it: the flag says a
 * free came since the last trim (a stale true costs one lock, a stale
 * false delays the trim to a later tick), the count tells the refill
 * thread whether any came since its last look. */
static _Atomic bool pools_untrimmed;
static _Atomic uint64_t pool_frees;

static void update_hint(struct pool *p, uintptr_t size)
{
	atomic_store_explicit(&p->may_have, p->nfree || p->carved + size <= pool_capacity,
	                      memory_order_relaxed);
}

uintptr_t _sm_pool_init(uintptr_t base)
{
	/* Whole pages, at most a quarter of the slot. */
	uintptr_t bytes = ((uintptr_t)_sm_options.pool_bytes + SM_PAGE - 1) & ~(uintptr_t)(SM_PAGE - 1);
	if (bytes > SM_SLOT_SIZE / 4)
		bytes = SM_SLOT_SIZE / 4;
	/* The free arrays and the trim's bitmaps (a pointer and a bit per
	 * object), in one private mapping (MAP_NORESERVE: a page is charged
	 * and touched only when a list grows into it or a trim marks it):
	 * 213 KiB of address space at the default 128 KiB per pool. */
	size_t words = 0; /* 8-byte words: pointers, then bitmap words */
	for (uint32_t cls = 0; cls < SM_NUM_CLASSES; cls++) {
		size_t room = bytes / _sm_class_size[cls];
		words += room + (room + 63) / 64;
	}
	uint64_t *area = NULL;
	if (bytes) {
		void *m = mmap(NULL, words * sizeof(uint64_t), PROT_READ | PROT_WRITE,
		               MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
		if (m == MAP_FAILED)
			bytes = 0; /* no pools: every class uses jemalloc from the start */
		else
			area = m;
	}
	pool_capacity = bytes;
	_sm_pool_bytes = bytes ? bytes + SM_COLOUR_PAGES * SM_PAGE : 0;
	for (uint32_t cls = 0; cls < SM_NUM_CLASSES; cls++) {
		struct pool *p = &pools[cls];
		p->room = (uint32_t)(bytes / _sm_class_size[cls]);
		if (area) {
			p->free = (void **)area;
			p->marks = area + p->room;
			area += p->room + (p->room + 63) / 64;
		}
		p->start = base + (uintptr_t)cls * SM_SLOT_SIZE + _sm_slot_colour(cls);
		update_hint(p, _sm_class_size[cls]);
	}
	return _sm_pool_bytes;
}

/* Up to n objects of class cls: freed ones first, then new ones carved
 * from the pool (ascending addresses). Returns how many: fewer than n once
 * the pool is used up, and the caller asks jemalloc for the rest. Nothing
 * is read or written in any object. */
uint32_t _sm_pool_alloc(uint32_t cls, uint32_t n, void **out)
{
	struct pool *p = &pools[cls];
	if (!atomic_load_explicit(&p->may_have, memory_order_relaxed))
		return 0;
	const uintptr_t size = _sm_class_size[cls];
	uint32_t got = 0;
	pthread_mutex_lock(&pool_lock);
	if (p->nfree) {
		got = n < p->nfree ? n : p->nfree;
		p->nfree -= got;
		memcpy(out, p->free + p->nfree, sizeof(void *) * got);
		/* ASan: they waited poisoned; a refill may write a list link
		 * into one (the chains of the stock and the reserves). */
		for (uint32_t i = 0; SM_ASAN && i < got; i++)
			sm_unpoison(out[i]);
	}
	if (got < n && p->carved + size <= pool_capacity) {
		if (!p->mapped) {
			/* The whole pool at once: one mprotect, one mapping. The
			 * reservation is MAP_NORESERVE, so this charges no commit
			 * and touches no page. */
			p->mapped = mprotect((void *)p->start, pool_capacity,
			                     PROT_READ | PROT_WRITE) == 0;
			if (!p->mapped) { /* no pool: jemalloc serves cls */
				atomic_store_explicit(&p->may_have, false, memory_order_relaxed);
				pthread_mutex_unlock(&pool_lock);
				return got;
			}
		}
		if (!p->carved) /* a new class: its handlers get a */
			_sm_global_reserve_want(cls); /* process-wide reserve, as with an arena */
		while (got < n && p->carved + size <= pool_capacity) {
			out[got++] = (void *)(p->start + p->carved);
			p->carved += size;
		}
	}
	update_hint(p, size);
	pthread_mutex_unlock(&pool_lock);
	return got;
}

static sm_noinline sm_cold void pool_overflow(uint32_t cls, void *p)
{
	_sm_fatal("sigmalloc: free(): double free: the %u-byte pool is handed back more blocks than "
	          "it carved (one of them %p)\n", (unsigned)_sm_class_size[cls], p);
}

static sm_noinline sm_cold void pool_never_carved(uint32_t cls, void *p)
{
	_sm_fatal("sigmalloc: free(): invalid pointer %p: the %u-byte pool never handed it out\n", p,
	          (unsigned)_sm_class_size[cls]);
}

/* Takes back n pool objects of class cls (each _sm_pool_holds). Nothing
 * is read or written in them; in an ASan build they wait poisoned, so that
 * a use after free of one is caught there too. */
void _sm_pool_free(uint32_t cls, void *const *objs, uint32_t n)
{
	struct pool *p = &pools[cls];
	pthread_mutex_lock(&pool_lock);
	if (sm_unlikely(n > p->room - p->nfree)) {
		void *dup = objs[0];
		pthread_mutex_unlock(&pool_lock);
		pool_overflow(cls, dup);
		return;
	}
	for (uint32_t i = 0; i < n; i++) {
		if (sm_unlikely((uintptr_t)objs[i] - p->start >= p->carved)) {
			/* not carved, or uncarved by a trim since: never handed out */
			void *bad = objs[i];
			pthread_mutex_unlock(&pool_lock);
			pool_never_carved(cls, bad);
			return;
		}
	}
	memcpy(p->free + p->nfree, objs, sizeof(void *) * n);
	p->nfree += n;
	p->freed_into = true;
	atomic_store_explicit(&pool_frees, atomic_load_explicit(&pool_frees, memory_order_relaxed) + 1,
	                      memory_order_relaxed);
	atomic_store_explicit(&pools_untrimmed, true, memory_order_relaxed);
	for (uint32_t i = 0; SM_ASAN && i < n; i++)
		sm_poison(objs[i]);
	update_hint(p, _sm_class_size[cls]);
	pthread_mutex_unlock(&pool_lock);
}

/* Gives back the pages of [lo, hi) that lie wholly inside it. */
static void discard_pages(uintptr_t lo, uintptr_t hi)
{
	lo = (lo + SM_PAGE - 1) & ~(uintptr_t)(SM_PAGE - 1);
	hi &= ~(uintptr_t)(SM_PAGE - 1);
	if (hi > lo)
		madvise((void *)lo, hi - lo, MADV_DONTNEED);
}

/* What a trim found wrong in a free list, reported once pool_lock is
 * released (a crash reporter's SIGABRT handler that allocates must not
 * find the lock held by its own thread: on the refill thread it would
 * wait on itself). Which: 0 none, else the message below. */
struct trim_fault {
	void *p;
	uint32_t cls;
	uint32_t which;
};
enum { TRIM_OK, TRIM_DOUBLE_FREE, TRIM_NOT_A_BLOCK };

static sm_noinline sm_cold void trim_report(struct trim_fault f)
{
	if (f.which == TRIM_DOUBLE_FREE)
		_sm_fatal("sigmalloc: free(): double free of %p (found by a trim of the %u-byte pool)\n",
		          f.p, (unsigned)_sm_class_size[f.cls]);
	if (f.which == TRIM_NOT_A_BLOCK)
		_sm_fatal("sigmalloc: free(): invalid pointer %p (inside a block of the %u-byte pool, "
		          "found by a trim)\n", f.p, (unsigned)_sm_class_size[f.cls]);
}

/* malloc_trim: returns to the system every page of a pool that holds only
 * free objects. Each pool's free list is marked in its bitmap (one bit per
 * object the pool can carve: a counting sort by address, no allocation
 * under pool_lock, and a bit found set is a second free of that object);
 * then, from the marks:
 *   - the run of free objects that ends at the carve mark is uncarved (the
 *     mark moves down and those objects leave the list: they are carved
 *     again, in ascending order, before any of their pages is touched), and
 *     its pages up to the old mark are discarded;
 *   - the whole pages inside any other run of free objects are discarded
 *     (MADV_DONTNEED: they read as zeros when the objects are reused, and
 *     nothing is kept in a waiting object);
 *   - the list is rebuilt in descending order, so that the next refills
 *     take the lowest objects first and the free ones gather at the top
 *     for the next trim.
 * Costs a pass over each list and bitmap, and one madvise per run that
 * spans a page (docs/MEMORY.md); malloc_trim and the refill thread's
 * idle trim call it. Only the pools freed into since their last trim are
 * looked at. The bitmaps are all clear outside this function, unless it
 * returns a fault, after which the caller aborts. */
static struct trim_fault trim_locked(void)
{
	atomic_store_explicit(&pools_untrimmed, false, memory_order_relaxed);
	for (uint32_t cls = 0; cls < SM_NUM_CLASSES; cls++) {
		struct pool *p = &pools[cls];
		if (!p->freed_into)
			continue;
		p->freed_into = false;
		const uintptr_t size = _sm_class_size[cls];
		uint64_t *marks = p->marks;
		for (uint32_t i = 0; i < p->nfree; i++) {
			uintptr_t off = (uintptr_t)p->free[i] - p->start;
			uint32_t k = (uint32_t)(off / size);
			/* An offset by a multiple of the class's alignment into a
			 * block passes free()'s check (alloc.c); counted as block k
			 * it would let a live block be discarded or carved again. */
			if (off != (uintptr_t)k * size)
				return (struct trim_fault){p->free[i], cls, TRIM_NOT_A_BLOCK};
			if (marks[k / 64] & (1ull << (k % 64)))
				return (struct trim_fault){p->free[i], cls, TRIM_DOUBLE_FREE};
			marks[k / 64] |= 1ull << (k % 64);
		}
		/* The free run at the carve mark. */
		const uintptr_t old_top = p->start + p->carved;
		uint32_t top = (uint32_t)(p->carved / size); /* objects carved */
		while (top && (marks[(top - 1) / 64] & (1ull << ((top - 1) % 64)))) {
			top--;
			marks[top / 64] &= ~(1ull << (top % 64));
			sm_unpoison((void *)(p->start + (uintptr_t)top * size)); /* carved as they are */
		}
		if (top * size < p->carved) {
			p->carved = (uintptr_t)top * size;
			discard_pages(p->start + p->carved, (old_top + SM_PAGE - 1) & ~(uintptr_t)(SM_PAGE - 1));
		}
		/* The other runs, lowest first; the list, rebuilt descending. */
		uint32_t left = 0;
		for (uint32_t w = 0; w < (top + 63) / 64; w++)
			left += (uint32_t)__builtin_popcountll(marks[w]);
		p->nfree = left;
		uint32_t run = 0, run_len = 0;
		for (uint32_t w = 0; w < (top + 63) / 64; w++) {
			uint64_t bits = marks[w];
			marks[w] = 0;
			while (bits) {
				uint32_t k = w * 64 + (uint32_t)__builtin_ctzll(bits);
				bits &= bits - 1;
				p->free[--left] = (void *)(p->start + (uintptr_t)k * size);
				if (run_len && k == run + run_len) {
					run_len++;
					continue;
				}
				if (run_len)
					discard_pages(p->start + run * size, p->start + (run + run_len) * size);
				run = k;
				run_len = 1;
			}
		}
		if (run_len)
			discard_pages(p->start + run * size, p->start + (run + run_len) * size);
		update_hint(p, size);
	}
	return (struct trim_fault){NULL, 0, TRIM_OK};
}

void _sm_pool_trim(void)
{
	pthread_mutex_lock(&pool_lock);
	struct trim_fault f = trim_locked();
	pthread_mutex_unlock(&pool_lock);
	if (sm_unlikely(f.which != TRIM_OK))
		trim_report(f);
}

/* The refill thread, each tick (at least every second): the pools' free
 * pages go back once no free has come into a pool for decay_ms, as
 * jemalloc's dirty pages do after its decay time (SIGMALLOC_DECAY_MS). Its
 * own state: the count of frees at its last look and when it changed. */
void _sm_pool_trim_idle(uint64_t now_ms, uint64_t decay_ms)
{
	static uint64_t seen_frees, seen_ms;
	uint64_t frees = atomic_load_explicit(&pool_frees, memory_order_relaxed);
	if (frees != seen_frees) {
		seen_frees = frees;
		seen_ms = now_ms;
		return;
	}
	if (!atomic_load_explicit(&pools_untrimmed, memory_order_relaxed) ||
	    now_ms - seen_ms < decay_ms)
		return;
	_sm_pool_trim();
}

void _sm_pool_totals(uint64_t *carved, uint64_t *free_bytes)
{
	*carved = *free_bytes = 0;
	pthread_mutex_lock(&pool_lock);
	for (uint32_t cls = 0; cls < SM_NUM_CLASSES; cls++) {
		*carved += pools[cls].carved;
		*free_bytes += (uint64_t)pools[cls].nfree * _sm_class_size[cls];
	}
	pthread_mutex_unlock(&pool_lock);
}

void _sm_pool_fork_prepare(void)
{
	pthread_mutex_lock(&pool_lock);
}

void _sm_pool_fork_parent(void)
{
	pthread_mutex_unlock(&pool_lock);
}

void _sm_pool_fork_child(void)
{
	pthread_mutex_init(&pool_lock, NULL);
}
