/*
 * Magazines: how a batch of one class's objects crosses between threads,
 * as an array of pointers (after Bonwick's magazines and jemalloc's
 * cache_bin). Every list that carries whole batches from one thread to
 * another holds magazines: the depot (depot.c), and each cache's inbox
 * and outbox (types.h, struct sm_bucket_shared).
 *
 * Why not a chain through the objects: the thread that takes a batch then
 * reads each object's link, one load after the other, and each is a line
 * the thread that freed the object last wrote, so each is a transfer from
 * that thread's CPU. On a producer/consumer pair that walk was 90 % of the
 * producer's slow path (docs/PERFORMANCE.md, "Batches cross between threads
 * as magazines"). A magazine is copied with memcpy: its 48 pointers are six
 * lines, none of whose loads waits for another (not measured apart), and no
 * object is read or written between the free that put it in a bucket and
 * the malloc that hands it out.
 *
 * Who calls in: owners at depth 1 and the refill thread; both may call
 * jemalloc, where a new magazine comes from. Never a nested context.
 *
 * A magazine of class c holds up to c's batch (sizeclass.c) objects. Its
 * own memory is a record from jemalloc's automatic arena (backend.c; for 48
 * pointers, 400 B in jemalloc's 448 B size), kept on a per-class list of
 * spares when empty, at most SM_MAGAZINE_SPARES of them; the rest go back
 * to jemalloc. Lists of magazines link through `link`, with the lock-less
 * operations of lockless.h: whoever takes a magazine off a list owns it.
 * `tc`, where a function takes one, is the caller's jemalloc tcache for
 * the objects a magazine carries; the magazine itself never goes through a
 * tcache.
 */
#include <string.h>

#include "internal.h"
#include "lockless.h"

#define SM_MAGAZINE_SPARES 32

static struct {
	_Atomic(struct sm_node *) list;
	_Atomic int32_t count; //! approximate
} spares[SM_NUM_CLASSES];

uint32_t _sm_magazine_capacity(uint32_t cls)
{
	uint32_t low, high, batch, cap;
	_sm_class_watermarks(cls, &low, &high, &batch, &cap);
	return batch;
}

struct sm_magazine *_sm_magazine_new(uint32_t cls)
{
	struct sm_node *node = list_take_one(&spares[cls].list, &spares[cls].count);
	if (node)
		return (struct sm_magazine *)node;
	struct sm_magazine *m = _sm_backend_alloc_record(
		sizeof(struct sm_magazine) + _sm_magazine_capacity(cls) * sizeof(void *));
	if (!m)
		return NULL;
	m->cls = cls;
	m->n = 0;
	return m;
}

struct sm_magazine *_sm_magazine_fill(uint32_t cls, void *const *objs, uint32_t n)
{
	sm_assert(n <= _sm_magazine_capacity(cls));
	struct sm_magazine *m = _sm_magazine_new(cls);
	if (!m)
		return NULL;
	memcpy(m->objs, objs, n * sizeof(void *));
	m->n = n;
	return m;
}

void _sm_magazine_retire(struct sm_magazine *m)
{
	uint32_t cls = m->cls;
	m->n = 0;
	if (atomic_load_explicit(&spares[cls].count, memory_order_relaxed) < SM_MAGAZINE_SPARES) {
		atomic_fetch_add_explicit(&spares[cls].count, 1, memory_order_relaxed);
		list_push(&spares[cls].list, &m->link);
		return;
	}
	_sm_backend_free_record(m);
}

uint32_t _sm_magazines_release(struct sm_node *chain, int tc)
{
	uint32_t objects = 0;
	while (chain) {
		struct sm_magazine *m = (struct sm_magazine *)chain;
		chain = chain->next;
		_sm_backend_free_array(m->objs, m->n, tc);
		objects += m->n;
		_sm_magazine_retire(m);
	}
	return objects;
}

uint32_t _sm_magazine_list_release(_Atomic(struct sm_node *) *list, _Atomic int32_t *count,
                                   int tc)
{
	struct sm_node *chain = list_take_all(list);
	if (!chain)
		return 0;
	uint32_t n = _sm_magazines_release(chain, tc);
	atomic_fetch_sub_explicit(count, (int32_t)n, memory_order_relaxed);
	return n;
}

uint32_t _sm_magazines_count(struct sm_node *chain, struct sm_node **last)
{
	uint32_t objects = 0;
	for (; chain; chain = chain->next) {
		objects += ((struct sm_magazine *)chain)->n;
		*last = chain;
	}
	return objects;
}

void _sm_magazine_release_spares(uint32_t cls)
{
	struct sm_node *chain = list_take_all(&spares[cls].list);
	while (chain) {
		void *record = chain;
		chain = chain->next;
		atomic_fetch_sub_explicit(&spares[cls].count, 1, memory_order_relaxed);
		_sm_backend_free_record(record);
	}
}
