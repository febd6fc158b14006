/*
 * Structures shared by one thread and its own signal handlers only: the
 * nested stock (types.h, struct sm_stock). No other thread ever reads or
 * writes them.
 *
 * Why not the lock-less lists of lockless.h: those must be atomic against
 * other CPUs, so every push and take is a locked instruction, and their
 * heads share cache lines with what the refill thread writes. And a list
 * of free objects linked through the objects makes a nested malloc read
 * the object it hands out, which a signal handler finds cold: in a SIGPROF
 * handler that interrupted malloc (docs/PERFORMANCE.md, "Signal handler"),
 * that one read was most of a nested malloc's time (p50 110 ns, and 25 ns
 * once the block was touched beforehand). So the stock keeps its first
 * objects as pointers in TLS (the slots), and only what does not fit there
 * on a list (`more`).
 *
 * Each step that must be atomic is one instruction that is not locked: a
 * signal is delivered between two instructions, never inside one, so one
 * instruction is atomic against every context of its own thread, which is
 * all that can reach these structures.
 *
 * Concurrency (contexts of one thread: the owner and handlers nested in
 * it, each running to completion before the code it interrupted resumes):
 * every operation here may interrupt, and be interrupted by, every other.
 * Another thread: never. The refill thread does not touch them; at thread
 * exit the owner moves them to its cache's shared lists (refill.c).
 *
 * Slots: a state word holds, per slot j, a FULL bit (j) and a CLAIMED bit
 * (16 + j); a slot is free (neither), full (FULL) or claimed (CLAIMED) by
 * exactly one context that is part way through taking or filling it. A
 * context claims with one compare-and-swap of the whole word (free -> claimed
 * to fill, full -> claimed to take), then reads or writes slot j, which no
 * other context touches while it is claimed, then releases with one xor
 * (claimed -> full, or claimed -> free). A compare-and-swap that succeeds
 * saw the word exactly as it is, so it cannot act on a stale state (no
 * ABA): if other contexts changed the word and changed it back, the slot is
 * still in the state it was read in, and unclaimed. A context that finds no
 * slot to use (all claimed or full or empty) uses `more`, or its caller's
 * next resort; a deeper handler never waits for the context it interrupted.
 *
 * The list `more` is an intrusive list with push, take-all and take-one.
 * Nothing reads through a head it does not own: a push writes its own
 * node's link and commits with one compare-and-swap; taking all commits
 * with one compare-and-swap of the head to NULL, after which the chain is
 * private; taking one takes all, keeps the first node, and gives the rest
 * back with a compare-and-swap from NULL, joining first whatever a deeper
 * handler pushed in between (tls_give_back_raced, out of line).
 *
 * Counters (tls_add32, tls_add64) are one add to memory: a deeper handler's
 * update is never lost. A count and its list are two steps, so a count can
 * be off while an update is interrupted; counts are hints and statistics,
 * and nothing relies on them for correctness.
 *
 * The compare-and-swap is `cmpxchg` without `lock` on x86-64; other targets
 * use the atomic builtins (seq_cst, between signal fences), correct
 * everywhere but locked. Every primitive is also a compiler barrier: the
 * protocol needs `slot[j]` read or written strictly between the claim and
 * the release (the asm's "memory" clobber; the fences in the fallbacks).
 */
#ifndef SM_TLSLIST_H
#define SM_TLSLIST_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include "types.h"

static inline struct sm_node *tls_load(struct sm_node *const *head)
{
	return __atomic_load_n(head, __ATOMIC_RELAXED);
}

/* *head = desired if *head == expected, in one instruction. */
static inline bool tls_cas(struct sm_node **head, struct sm_node *expected,
                           struct sm_node *desired)
{
#if defined(__x86_64__)
	bool ok;
	__asm__ __volatile__("cmpxchgq %3, %1"
	                     : "=@ccz"(ok), "+m"(*head), "+a"(expected)
	                     : "r"(desired)
	                     : "memory");
	return ok;
#else
	atomic_signal_fence(memory_order_seq_cst);
	bool ok = __atomic_compare_exchange_n(head, &expected, desired, false, __ATOMIC_SEQ_CST,
	                                      __ATOMIC_SEQ_CST);
	atomic_signal_fence(memory_order_seq_cst);
	return ok;
#endif
}

/* *word = desired if *word == *expected, in one instruction; else *expected
 * is what *word holds. */
static inline bool tls_cas32(uint32_t *word, uint32_t *expected, uint32_t desired)
{
#if defined(__x86_64__)
	bool ok;
	__asm__ __volatile__("cmpxchgl %3, %1"
	                     : "=@ccz"(ok), "+m"(*word), "+a"(*expected)
	                     : "r"(desired)
	                     : "memory");
	return ok;
#else
	atomic_signal_fence(memory_order_seq_cst);
	bool ok = __atomic_compare_exchange_n(word, expected, desired, false, __ATOMIC_SEQ_CST,
	                                      __ATOMIC_SEQ_CST);
	atomic_signal_fence(memory_order_seq_cst);
	return ok;
#endif
}

/* *p op= v in one instruction on x86-64 (insn with operand constraint
 * cons); elsewhere the atomic builtin, seq_cst between signal fences. */
#if defined(__x86_64__)
#define TLS_RMW(p, v, insn, cons, builtin) \
	__asm__ __volatile__(insn " %1, %0" : "+m"(*(p)) : cons(v) : "memory")
#else
#define TLS_RMW(p, v, insn, cons, builtin)                \
	do {                                              \
		atomic_signal_fence(memory_order_seq_cst); \
		builtin((p), (v), __ATOMIC_SEQ_CST);       \
		atomic_signal_fence(memory_order_seq_cst); \
	} while (0)
#endif

static inline void tls_xor32(uint32_t *word, uint32_t bits)
{
	TLS_RMW(word, bits, "xorl", "ir", __atomic_fetch_xor);
}

static inline void tls_add32(int32_t *counter, int32_t delta)
{
	TLS_RMW(counter, delta, "addl", "ir", __atomic_fetch_add);
}

static inline void tls_add64(uint64_t *counter, uint64_t delta)
{
	TLS_RMW(counter, delta, "addq", "er", __atomic_fetch_add);
}

static inline void tls_or32(uint32_t *mask, uint32_t bits)
{
	TLS_RMW(mask, bits, "orl", "ir", __atomic_fetch_or);
}

static inline void tls_andnot32(uint32_t *mask, uint32_t bits)
{
	TLS_RMW(mask, ~bits, "andl", "ir", __atomic_fetch_and);
}

/* Pushes the chain first .. last (last->next is overwritten). */
static inline void tls_push_chain(struct sm_node **head, struct sm_node *first,
                                  struct sm_node *last)
{
	struct sm_node *old;
	do {
		old = tls_load(head);
		last->next = old;
	} while (!tls_cas(head, old, first));
}

static inline void tls_push(struct sm_node **head, struct sm_node *node)
{
	tls_push_chain(head, node, node);
}

static inline struct sm_node *tls_take_all(struct sm_node **head)
{
	struct sm_node *first;
	do {
		first = tls_load(head);
		if (!first)
			return NULL;
	} while (!tls_cas(head, first, NULL));
	return first;
}

/* The give-back of tls_take_one met nodes that a deeper handler pushed
 * while the list was taken: join them in front of `rest` and try again.
 * Rare, and out of line so that the common case stays a few lines of code
 * (a handler runs it cold). */
static __attribute__((noinline, cold)) void tls_give_back_raced(struct sm_node **head,
                                                                struct sm_node *rest)
{
	while (!tls_cas(head, NULL, rest)) {
		struct sm_node *raced = tls_take_all(head);
		if (raced) {
			struct sm_node *last = raced;
			while (last->next)
				last = last->next;
			last->next = rest;
			rest = raced;
		}
	}
}

static inline struct sm_node *tls_take_one(struct sm_node **head)
{
	struct sm_node *first = tls_take_all(head);
	if (!first)
		return NULL;
	struct sm_node *rest = first->next;
	if (rest && __builtin_expect(!tls_cas(head, NULL, rest), 0))
		tls_give_back_raced(head, rest);
	return first;
}

/* ------------------------------------------------------------------------
 * Slots (SM_STOCK_SLOTS pointers and their state word, struct sm_stock)
 * ---------------------------------------------------------------------- */

/* Slot j's FULL bit is bit j, its CLAIMED bit that one shifted left by 16. */
#define TLS_ALL_SLOTS ((1u << SM_STOCK_SLOTS) - 1)
_Static_assert(SM_STOCK_SLOTS <= 16, "FULL and CLAIMED bits share one word");

static inline uint32_t tls_state_load(const uint32_t *state)
{
	return __atomic_load_n(state, __ATOMIC_RELAXED);
}

/* Full slots of a state word (a claimed slot is never also full). */
static inline uint32_t tls_slots_full(uint32_t w)
{
	return w & TLS_ALL_SLOTS;
}

/* How many slots of a state word are full. Not __builtin_popcount, which
 * is a call into libgcc on a plain x86-64 build: a nibble table. */
static inline uint32_t tls_slots_count(uint32_t w)
{
	_Static_assert(SM_STOCK_SLOTS <= 4, "the table counts four slots");
	return (uint32_t)(0x4332322132212110ull >> (tls_slots_full(w) * 4)) & 0xf;
}

/* Takes the object of a full slot; NULL if no slot is full. The claim
 * flips the slot's FULL bit off and its CLAIMED bit on with one xor of the
 * word: a full slot is never also claimed. The lowest full slot, as a bit
 * (full & -full), so that no step shifts by a variable count: this runs
 * cold in a signal handler, and its size in cache lines is its cost
 * (docs/PERFORMANCE.md, "Session 14"). */
static inline void *tls_slots_take(uint32_t *state, void *const *slot)
{
	uint32_t w = tls_state_load(state), bit;
	do {
		uint32_t full = tls_slots_full(w);
		if (!full)
			return NULL;
		bit = full & (0u - full);
	} while (!tls_cas32(state, &w, w ^ (bit | bit << 16)));
	void *p = slot[__builtin_ctz(bit)];
	tls_xor32(state, bit << 16); /* claimed -> free */
	return p;
}

/* Puts p in a free slot; false if none is free. */
static inline bool tls_slots_put(uint32_t *state, void **slot, void *p)
{
	uint32_t w = tls_state_load(state), bit;
	do {
		uint32_t free_slots = ~(w | w >> 16) & TLS_ALL_SLOTS;
		if (!free_slots)
			return false;
		bit = free_slots & (0u - free_slots);
	} while (!tls_cas32(state, &w, w | bit << 16));
	slot[__builtin_ctz(bit)] = p;
	tls_xor32(state, bit | bit << 16); /* claimed -> full */
	return true;
}

#endif /* SM_TLSLIST_H */
