/*
 * Lock-less singly linked lists (struct sm_node): of free objects (the
 * reserves, the deferred list), of magazines (the inbox, outbox, depot and
 * spares: magazine.c) and of caches (the refill thread's request list).
 *
 * Concurrency matrix (after include/linux/llist.h): which operations may run
 * at the same time on one list, from any threads or signal contexts.
 *
 *                     | list_push | list_push_chain | list_take_all
 *   list_push         |   yes     |      yes        |     yes
 *   list_push_chain   |   yes     |      yes        |     yes
 *   list_take_all     |   yes     |      yes        |     yes
 *
 * Everything may race with everything because no operation reads a node
 * that it does not own: a push writes its own node's `next` and then
 * compare-and-swaps the head it just read (if the head changed, it retries;
 * it never dereferences the old head, so an ABA change of the head is
 * harmless). Taking is one exchange of the head with NULL: the taker then
 * owns the whole chain. There is deliberately no "pop one" with CAS, which
 * would read head->next of a node that a concurrent taker may already have
 * handed out and reused (the ABA hazard).
 *
 * All operations are lock-free, call nothing, and are async-signal-safe.
 * The `__list_*` variants operate on private (owner-only) lists.
 */
#ifndef SM_LOCKLESS_H
#define SM_LOCKLESS_H

#include "types.h"

/* Push a chain first .. last (last->next is overwritten). Release: the
 * nodes' contents are visible to the taker. */
static inline void list_push_chain(_Atomic(struct sm_node *) *list, struct sm_node *first,
                                   struct sm_node *last)
{
	struct sm_node *head = atomic_load_explicit(list, memory_order_relaxed);
	do {
		last->next = head;
	} while (!atomic_compare_exchange_weak_explicit(list, &head, first,
	                                                memory_order_release,
	                                                memory_order_relaxed));
}

/* Push one node. */
static inline void list_push(_Atomic(struct sm_node *) *list, struct sm_node *node)
{
	list_push_chain(list, node, node);
}

/* Take the whole list. Acquire: pairs with the pushers' release. The load
 * first keeps an empty list from costing a locked instruction. */
static inline struct sm_node *list_take_all(_Atomic(struct sm_node *) *list)
{
	if (atomic_load_explicit(list, memory_order_relaxed) == NULL)
		return NULL;
	return atomic_exchange_explicit(list, NULL, memory_order_acquire);
}

/* Last node of a non-empty chain, and its length through *count. */
static inline struct sm_node *chain_last(struct sm_node *first, uint32_t *count)
{
	uint32_t n = 1;
	while (first->next) {
		first = first->next;
		n++;
	}
	*count = n;
	return first;
}

/* Pushes back what list_take_one met on the list when it gave the rest
 * back (nodes pushed in between by a deeper handler or another thread).
 * Out of line: rare, and it keeps the nested path's code short (every
 * cache line of code is a miss in a signal handler). */
static __attribute__((noinline, cold)) void list_push_raced(_Atomic(struct sm_node *) *list,
                                                             struct sm_node *raced)
{
	uint32_t n;
	list_push_chain(list, raced, chain_last(raced, &n));
}

/* Takes one node from an atomic list: take all, keep the first, give the
 * rest back. Giving back by exchange can meet nodes pushed in between
 * (by a deeper handler or another thread); those are pushed again. */
static inline struct sm_node *list_take_one(_Atomic(struct sm_node *) *list,
                                            _Atomic int32_t *count)
{
	struct sm_node *first = list_take_all(list);
	if (!first)
		return NULL;
	struct sm_node *rest = first->next;
	if (rest) {
		struct sm_node *raced = atomic_exchange_explicit(list, rest, memory_order_acq_rel);
		if (__builtin_expect(raced != NULL, 0))
			list_push_raced(list, raced);
	}
	if (count) /* NULL: the caller keeps its own count */
		atomic_fetch_sub_explicit(count, 1, memory_order_relaxed);
	return first;
}


#endif /* SM_LOCKLESS_H */
