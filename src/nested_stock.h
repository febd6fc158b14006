/*
 * The nested paths' common case: a slot of the thread's own stock (TLS
 * only, no locked instruction, no line another thread writes, not a read
 * of the object; tlslist.h). Shared by refill.c (_sm_nested_alloc,
 * _sm_nested_free) and preload/near.c, whose copy of the hit paths must
 * not leave its page for a signal handler's common case: once the main
 * program's calls use the copy, nothing else keeps the library's code warm
 * (docs/PERFORMANCE.md, "Session 12").
 *
 * Called at depth > 0 (nested), depth already raised by the caller. On
 * success they lower depth, as the nested entry points do; on failure they
 * have changed nothing and the caller goes on to the slow path.
 * Everything here is inline and reaches only the thread state it is given
 * (tests/check-near.py checks that near.c's copy stays in its section).
 */
#ifndef SM_NESTED_STOCK_H
#define SM_NESTED_STOCK_H

#include "internal.h"
#include "tlslist.h"

/* Counts one nested event of class cls in the thread's TLS (folded into
 * the cache by the owner: _sm_nested_stats_fold). */
static sm_always_inline void stock_count(struct sm_thread *t, uint64_t *counter, uint32_t cls)
{
	tls_add64(counter, 1);
	tls_or32(&t->stats_dirty, 1u << cls);
}

/* A full slot of class cls's stock, or NULL (none full, or align > 16). */
static sm_always_inline void *nested_alloc_from_stock(struct sm_thread *t, uint32_t cls,
                                                      size_t align)
{
	struct sm_stock *s = &t->stock[cls];
	void *node;
	if (sm_unlikely(align > 16) ||
	    sm_unlikely((node = tls_slots_take(&s->state, s->slot)) == NULL))
		return NULL;
	tls_or32(&t->stock_want, 1u << cls); /* the owner tops it up if short */
	if (sm_config_stats) {
		/* A slot was full, so the thread is (or was until its exit
		 * handed the stock over, which folds last) LIVE. */
		stock_count(t, &s->nested_allocs, cls);
	}
	sm_signal_fence();
	t->depth--;
	return node;
}

/* Puts p into a free slot of class cls's stock; false if the thread is not
 * LIVE or no slot is free. */
static sm_always_inline bool nested_free_to_stock(struct sm_thread *t, void *p, uint32_t cls)
{
	struct sm_stock *s = &t->stock[cls];
	if (sm_unlikely(t->state != SM_THREAD_LIVE) ||
	    sm_unlikely(!tls_slots_put(&s->state, s->slot, p)))
		return false;
	if (sm_config_stats)
		stock_count(t, &s->nested_frees, cls);
	sm_signal_fence();
	t->depth--;
	return true;
}

#endif /* SM_NESTED_STOCK_H */
