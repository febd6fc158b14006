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
 *   slot c:  | pool: objects of class c, carved here | jemalloc's extents |
 *            ^ slot start                           ^ + _sm_pool_bytes
 *
 * Who calls in: backend.c only, on the paths that call jemalloc (the owner
 * at depth 1, the refill thread, thread exit, fork), never a nested
 * (signal) context. pool_lock is a plain mutex: it is held for a few list
 * operations and at most one mprotect, never across a call into jemalloc
 * or any other lock, and fork holds it (cache.c takes it last).
 *
 * Invariants:
 *   - an object is a pool object exactly when its offset in its class slot
 *     is below _sm_pool_bytes (_sm_pool_holds), which is fixed at init;
 *   - jemalloc never sees a pool object: backend.c's two free functions
 *     route pool objects here, and jemalloc's class ranges start after the
 *     pool (backend.c, _sm_backend_init);
 *   - pool memory is never returned to the system: a freed pool object
 *     waits on its pool's free list for the next refill of its class, which
 *     takes it before new ones are carved and before jemalloc. So a class
 *     holds at most _sm_pool_bytes it does not use (28 classes, 3.5 MiB at
 *     the default 128 KiB, all of it only if every class once used its
 *     whole pool and then freed it all; docs/MEMORY.md).
 *   - pool objects are ordinary class objects everywhere else: same size,
 *     alignment (the slot start is aligned to the slot size, and objects lie
 *     at multiples of the class size from it, as jemalloc's lie from a
 *     page-aligned slab), and malloc_usable_size.
 */
#include <pthread.h>
#include <stdatomic.h>
#include <sys/mman.h>

#include "internal.h"

uintptr_t _sm_pool_bytes;

struct pool {
	uintptr_t start;       //! slot start; written once at init
	uintptr_t carved;      //! bytes of the pool handed out so far (never shrinks)
	bool mapped;           //! the pool's pages are PROT_READ | PROT_WRITE
	struct sm_node *free;  //! freed pool objects, LIFO, linked through them
	uint32_t nfree;
	/* Whether the pool may have an object: written under pool_lock, read
	 * without it, so that a class past its pool (every refill of a busy
	 * program) does not take the lock. A stale false leaves a freed pool
	 * object on the list until a later refill; a stale true costs one
	 * lock. */
	_Atomic bool may_have;
};

static struct pool pools[SM_NUM_CLASSES];
static pthread_mutex_t pool_lock = PTHREAD_MUTEX_INITIALIZER;

void _sm_pool_init(uintptr_t base, uintptr_t bytes)
{
	_sm_pool_bytes = bytes;
	for (uint32_t cls = 0; cls < SM_NUM_CLASSES; cls++) {
		pools[cls].start = base + (uintptr_t)cls * SM_SLOT_SIZE;
		atomic_store_explicit(&pools[cls].may_have, bytes >= _sm_class_size[cls],
		                      memory_order_relaxed);
	}
}

static void update_hint(struct pool *p, uintptr_t size)
{
	atomic_store_explicit(&p->may_have, p->free || p->carved + size <= _sm_pool_bytes,
	                      memory_order_relaxed);
}

/* Up to n objects of class cls: freed ones first, then new ones carved
 * from the pool (ascending addresses). Returns how many: fewer than n once
 * the pool is used up, and the caller asks jemalloc for the rest. Nothing
 * is written into a carved object; a reused one carried the list link. */
uint32_t _sm_pool_alloc(uint32_t cls, uint32_t n, void **out)
{
	struct pool *p = &pools[cls];
	if (!atomic_load_explicit(&p->may_have, memory_order_relaxed))
		return 0;
	const uintptr_t size = _sm_class_size[cls];
	uint32_t got = 0;
	pthread_mutex_lock(&pool_lock);
	while (got < n && p->free) {
		struct sm_node *node = p->free;
		sm_unpoison(node);
		p->free = node->next;
		p->nfree--;
		out[got++] = node;
	}
	if (got < n && p->carved + size <= _sm_pool_bytes) {
		if (!p->mapped) {
			/* The whole pool at once: one mprotect, one mapping. The
			 * reservation is MAP_NORESERVE, so this charges no commit
			 * and touches no page. */
			p->mapped = mprotect((void *)p->start, _sm_pool_bytes,
			                     PROT_READ | PROT_WRITE) == 0;
			if (!p->mapped)
				p->carved = _sm_pool_bytes; /* no pool: jemalloc serves cls */
		}
		if (p->mapped && !p->carved) /* a new class: its handlers get a */
			_sm_global_reserve_want(cls); /* process-wide reserve, as with an arena */
		while (p->mapped && got < n && p->carved + size <= _sm_pool_bytes) {
			out[got++] = (void *)(p->start + p->carved);
			p->carved += size;
		}
	}
	update_hint(p, size);
	pthread_mutex_unlock(&pool_lock);
	return got;
}

/* Takes back n pool objects of class cls (each _sm_pool_holds). They may
 * be poisoned (ASan builds): each is unpoisoned to write its link and
 * poisoned again. */
void _sm_pool_free(uint32_t cls, void *const *objs, uint32_t n)
{
	struct pool *p = &pools[cls];
	pthread_mutex_lock(&pool_lock);
	for (uint32_t i = 0; i < n; i++) {
		struct sm_node *node = objs[i];
		sm_unpoison(node);
		node->next = p->free;
		sm_poison(node);
		p->free = node;
	}
	p->nfree += n;
	update_hint(p, _sm_class_size[cls]);
	pthread_mutex_unlock(&pool_lock);
}

void _sm_pool_usage(uint32_t cls, uint64_t *carved, uint64_t *free_objects)
{
	pthread_mutex_lock(&pool_lock);
	*carved = pools[cls].carved;
	*free_objects = pools[cls].nfree;
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
