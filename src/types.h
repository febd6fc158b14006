/*
 * sigmalloc internal types.
 *
 * Glossary
 *   class      one of SM_NUM_CLASSES object sizes, 16 B .. 4 KiB (jemalloc's
 *              own small classes, so that one of our objects is exactly one
 *              jemalloc object).
 *   slot       the 64 GiB range of address space that holds every object of
 *              one class: slot = (p - _sm_base) >> SM_SLOT_SHIFT. Slots at and
 *              above SM_LARGE_FIRST_SLOT hold large (jemalloc) objects.
 *   node       a free object seen as a list link: its first word is `next`.
 *              No object carries a header; a node exists only while free.
 *   bucket     one class of one thread cache: a private bucket (owner only)
 *              plus atomic lists (reserve, inbox, outbox) that others may use.
 *   stock      per class, the objects kept in TLS for this thread's signal
 *              handlers (what they freed, topped up to the reserve by the
 *              owner): shared with nobody but the thread's own handlers
 *              (tlslist.h).
 *   owner      the thread a cache belongs to, running at depth 1.
 *   depth      per-thread nesting counter: 0 outside the allocator, 1 for the
 *              owner inside it, >1 for a signal handler that interrupted it.
 *   nested     any call that starts at depth > 0 (DESIGN.md, "reentrancy").
 *   sentinel   the static empty cache every thread starts with, so that the
 *              fast path needs no initialisation check.
 *   refill thread  the background thread that fills and trims buckets.
 */
#ifndef SM_TYPES_H
#define SM_TYPES_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* ------------------------------------------------------------------------
 * Address layout: one reservation, slot i at _sm_base + i * 2^SM_SLOT_SHIFT.
 *
 *   slot 0 .. 27        classes 16 B .. 4 KiB: each its pool (pool.c), then
 *                       one jemalloc arena, both page-coloured (internal.h)
 *   slot 28 .. 31       unused (guard)
 *   slot 32 .. 32+L-1   large objects, SM_LARGE_ARENAS jemalloc arenas
 *                       sharing one bump range
 *
 * 64 GiB per class is 4 G objects of 16 B; reserving address space costs one
 * VMA and no memory (PROT_NONE, MAP_NORESERVE; docs/MEMORY.md).
 * ---------------------------------------------------------------------- */
#define SM_NUM_CLASSES 28
#define SM_MAX_SMALL 4096u
#ifndef SM_SLOT_SHIFT /* ThreadSanitizer builds use 32: its shadow leaves no room for 2 TiB */
#define SM_SLOT_SHIFT 36
#endif
#define SM_SLOT_SIZE ((uintptr_t)1 << SM_SLOT_SHIFT)
#define SM_PAGE 4096u /* jemalloc's LG_PAGE as Debian builds it */
#define SM_LARGE_FIRST_SLOT 32u
#define SM_LARGE_SLOTS_MAX 64u      /* 4 TiB for large objects, at most */
#define SM_LARGE_SLOTS_MIN 1u       /* 64 GiB at least, else init fails */
#define SM_LARGE_ARENAS 2u          /* each arena costs fork() time: docs/MEMORY.md */
/* Before initialisation every pointer classifies as foreign: base sits at
 * a non-canonical address, so (p - base) >> 36 is at least 2^27 for every
 * user-space p. */
#define SM_BASE_UNSET ((uintptr_t)1 << 63)

/* A free object as a list link. */
struct sm_node {
	struct sm_node *next;
};

/* A batch of one class's objects on its way between threads, as an array
 * of pointers (magazine.c): the depot, a cache's inbox and outbox hold
 * these, linked through `link`; the objects themselves are not written. */
struct sm_magazine {
	struct sm_node link;  //! next magazine on whatever list holds it
	uint32_t cls;         //! the class it carries (its capacity: the class's batch)
	uint32_t n;           //! objects in objs[]
	void *objs[];         //! objs[n - 1] is the one to hand out first
};

/* Appends node to the private chain head .. tail (both NULL when empty). */
static inline void chain_append(struct sm_node **head, struct sm_node **tail,
                                struct sm_node *node)
{
	node->next = NULL;
	if (*tail)
		(*tail)->next = node;
	else
		*head = node;
	*tail = node;
}

/* The owner-private half of a bucket: a stack of pointers to free objects,
 * slots[0 .. count-1] with the most recently freed last (LIFO), as
 * jemalloc's cache_bin. malloc reads a slot and free writes one; neither
 * reads or writes the object, so a pop never waits for a line the object
 * left in L2 or further (a list link would have to be read first), and the
 * one word carried from call to call is the tally. 32 bytes, two to a
 * cache line. The slots are mapped with the cache (cache.c: every class's
 * array, end to end, after the struct) and stay where they are when the
 * bucket moves between TLS and the cache.
 * While a thread owns the cache, its buckets live in that thread's TLS
 * (sm_thread.bucket, reached through sm_thread.buckets), so that a signal
 * handler's allocation touches the TLS page and not the cache's as well;
 * while no thread owns it, in the cache (sm_cache.parked).
 * Protected by: the owner's depth window (depth == 1); nothing else writes
 * these fields while the owner lives, except the fork child, which resets
 * them (cache.c); the statistics reader reads tally racily, under the
 * registry lock (stats.c).
 * slots[-1] is a guard that is always NULL, so that free may compare the
 * pointer it is given with slots[count - 1] even when count is 0 (alloc.c,
 * the double-free check). The sentinel's buckets point just past a NULL of
 * their own (cache.c); a mapped cache's buckets get theirs at set-up
 * (cache_set_marks), before the thread's first call can reach them.
 * Invariant: count <= capacity, and high_mark < capacity, so that the fast
 * path's push (taken while count < high_mark) always has a slot; every
 * slow-path push checks capacity itself (refill.c: _sm_bucket_splice,
 * free_slow_body; the synchronous refill fills an empty bucket). */
struct sm_bucket {
	void **slots;           //! the stack; in the sentinel, just its NULL guard
	uint64_t tally;         //! owner only: bits 0..15 the count of objects in slots,
	                        //! bits 16..63 fast-path allocations (statistics). A hit
	                        //! is one add of SM_TALLY_HIT: the count goes down by one
	                        //! and, a hit's count being at least 1, the carry out of
	                        //! bit 15 counts it, so statistics cost no second store
	uint32_t low_mark;      //! malloc leaves the fast path when count <= low_mark
	uint32_t high_mark;     //! free leaves the fast path when count >= high_mark
	uint32_t batch;         //! objects per refill and per trim
	uint32_t capacity;      //! length of slots (sizeclass.c, _sm_class_slots)
};
_Static_assert(sizeof(struct sm_bucket) == 32, "two buckets per cache line");
#define SM_TALLY_COUNT_BITS 16
#define SM_TALLY_COUNT_MAX ((1u << SM_TALLY_COUNT_BITS) - 1) /* counts stay below: refill.c */
#define SM_TALLY_HIT (((uint64_t)1 << SM_TALLY_COUNT_BITS) - 1)
static inline uint32_t bucket_count(const struct sm_bucket *b)
{
	return (uint32_t)(b->tally & SM_TALLY_COUNT_MAX);
}
static inline uint64_t bucket_hits(uint64_t tally)
{
	return tally >> SM_TALLY_COUNT_BITS;
}
/* count += delta; the count must stay within 0 .. SM_TALLY_COUNT_MAX. */
static inline void bucket_count_add(struct sm_bucket *b, int32_t delta)
{
	b->tally += (uint64_t)(int64_t)delta;
}

/* Slow-path bookkeeping of a bucket; owner only, except that the stats
 * reader reads the counters without a lock (each is one aligned word). */
struct sm_bucket_slow {
	uint32_t low_default;   //! the kernel's low watermark: refill request below it
	uint32_t high_default;  //! the kernel watermark the bucket starts from
	uint32_t high_cap;      //! slow start grows high_mark up to this
	uint32_t refill_next;   //! objects the next synchronous refill asks for: from
	                        //! refill_first, doubling up to batch (refill.c)
	uint32_t refill_first;  //! about 2 KiB of objects, at most batch
	uint64_t sync_misses;   //! refills done by the owner itself
	uint64_t objects_refilled;
	uint64_t objects_trimmed;
};

/* The half of a bucket that other threads touch. Every field is atomic.
 *
 *   list     pushed by                      taken (exchange-all) by
 *   reserve  owner slow path, refill thread nested alloc (after the stock),
 *            (on request)                   refill thread (dead)
 *   inbox    refill thread                  owner slow path, refill thread
 *                                           (idle, dead)
 *   outbox   owner slow path (trim)         refill thread
 *
 * The reserve is a chain of objects (a nested malloc takes one); the inbox
 * and outbox are lists of magazines (struct sm_magazine: whole batches),
 * and their counts are of objects.
 *
 * Nobody pops a single node with compare-and-swap: that is the ABA hazard.
 * Taking is always exchange(list, NULL), and giving back is a push.
 * What a thread's handlers use first is not here but in its TLS (the
 * stock, struct sm_thread): these lines are written by the refill thread,
 * and a handler that touched them would wait for them to come back from
 * its CPU (docs/PERFORMANCE.md, "Signal handler"). */
struct sm_bucket_shared {
	_Atomic(struct sm_node *) reserve;
	_Atomic(struct sm_node *) inbox;  //! magazines: refill thread delivers, owner takes
	_Atomic(struct sm_node *) outbox; //! magazines: owner pushes trimmed batches; refill
	                                  //! thread frees them
	_Atomic int32_t reserve_count;   //! approximate length of reserve
	_Atomic int32_t inbox_count;     //! approximate: objects in the inbox's magazines
	_Atomic int32_t outbox_count;    //! approximate: objects in the outbox's magazines
	_Atomic int32_t stock_held;      //! the owner's last report of its stock's length (stats)
	_Atomic uint64_t nested_allocs;  //! statistics: folded from the owner's TLS by the owner
	_Atomic uint64_t nested_nulls;   //! relaxed load + store by nested paths
	_Atomic uint64_t nested_frees;   //! folded from the owner's TLS by the owner
	_Atomic uint64_t async_refills;  //! batches delivered to inbox (refill thread)
	_Atomic uint64_t async_trims;    //! outbox batches returned (refill thread)
	_Atomic uint64_t async_objects_refilled;
	_Atomic uint64_t async_objects_trimmed;
} __attribute__((aligned(64)));

enum sm_cache_state {
	SM_CACHE_FREE = 0,  /* in the registry, no owner, may be reused */
	SM_CACHE_LIVE = 1,  /* owned by a running thread */
	SM_CACHE_DEAD = 2,  /* owner exited; a new thread may claim it as it is,
	                       else the refill thread flushes it */
	SM_CACHE_FLUSHING = 3, /* the refill thread is returning its contents */
};

/* A thread cache. Allocated with mmap, never unmapped: a cache whose owner
 * exits is drained and reused by a later thread (cache.c), so the number of
 * caches is the largest number of threads alive at once. */
struct sm_cache {
	/* The private buckets, never NULL: the owner's TLS (sm_thread.bucket)
	 * while LIVE, else `parked`. Switched under the registry lock, at
	 * set-up and at thread exit (cache.c), so that the statistics reader
	 * never follows it into the TLS of a thread that has gone. */
	struct sm_bucket *priv;
	struct sm_bucket parked[SM_NUM_CLASSES];   //! the private buckets while no thread owns it
	struct sm_bucket_slow slow[SM_NUM_CLASSES];
	struct sm_bucket_shared shared[SM_NUM_CLASSES];
	/* Requests to the refill thread (refiller.c): a bit per class in
	 * each mask, set by the owner or its handlers, taken by exchange. */
	_Atomic uint32_t reserve_want;   //! reserve ran low (nested alloc took one)
	_Atomic uint32_t refill_want;    //! private bucket crossed its low watermark
	_Atomic uint32_t trim_want;      //! outbox holds a trimmed batch
	_Atomic uint32_t queued;         //! on the request list; cleared by refill thread
	struct sm_node request_link;     //! request list link; written before the push
	_Atomic uint32_t state;          //! enum sm_cache_state
	_Atomic uint32_t idle_reclaimed; //! refill thread took its atomic lists while idle
	_Atomic uint64_t last_tick;      //! owner's last slow path, in refill-thread ticks
	uint32_t large_arena;            //! which large arena (0 .. SM_LARGE_ARENAS-1)
	int32_t tcache;                  //! explicit jemalloc tcache of its owner (backend.c)
	uint32_t used_mask;              //! owner: classes this thread has used
	struct sm_cache *next_all;       //! registry list; written once, under lock
	void **slot_store;               //! every bucket's slots, mapped with the cache;
	                                 //! written once, kept by the fork child's reset
	uint64_t large_allocs;           //! statistics, owner only
	uint64_t large_frees;
} __attribute__((aligned(64)));

/* Per-thread state, initial-exec TLS: two words reached from %fs. */
enum sm_thread_state {
	SM_THREAD_NEW = 0,   /* never allocated: the cache is the sentinel */
	SM_THREAD_LIVE = 1,  /* owns a cache */
	SM_THREAD_DEAD = 2,  /* its cache was handed back (pthread key
	                        destructor); later calls use no cache */
};
/* One class of a thread's nested stock: everything a nested malloc or free
 * of the class touches besides the object, in one cache line. Touched by
 * the thread's own contexts only (tlslist.h). A nested malloc takes from a
 * slot (a pointer in TLS: it does not read the object, which a handler
 * finds cold), then from `more` (a list through the objects); a nested
 * free puts into a slot, then onto `more`. */
#define SM_STOCK_SLOTS 4
struct sm_stock {
	uint32_t state;          //! per slot: FULL bit j, CLAIMED bit 16 + j (tlslist.h)
	int32_t more_count;      //! approximate length of more
	struct sm_node *more;    //! what the slots cannot hold
	void *slot[SM_STOCK_SLOTS];
	uint64_t nested_allocs;  //! statistics not yet folded into the cache
	uint64_t nested_frees;
};
_Static_assert(sizeof(struct sm_stock) == 64, "one class of stock per cache line");

/* Everything the fast path and the nested path read besides the object
 * lives here, in one page of initial-exec TLS: a signal handler starts with
 * cold caches and TLB, and every distinct page and line costs it a miss
 * (docs/PERFORMANCE.md, "Signal handler"). Hence the thread's own copies of
 * the class table and of _sm_base, its private buckets and the nested
 * stock.
 *
 * A thread without a cache (new, or DEAD) has `buckets` pointing at the
 * sentinel's, whose marks are 0, so that every malloc and free misses into
 * the slow path, which sets the thread up: the fast path has no init
 * check.
 *
 * The stock (struct sm_stock, one line per class) is touched by this
 * thread's contexts only, with the one-instruction operations of
 * tlslist.h: nested free puts, nested malloc takes, the owner's slow path
 * tops it up to the reserve or takes back what is above it (stock_want
 * asks it to), thread exit hands it to the cache. */
struct sm_thread {
	struct sm_cache *cache;  //! never NULL; the sentinel until set up
	struct sm_bucket *buckets; //! the fast path's buckets: `bucket` below while the
	                         //! thread owns a cache, else the sentinel's (const,
	                         //! all marks 0: every call misses, nothing is written)
	uint32_t depth;          //! nesting depth, see alloc.c
	uint32_t state;          //! enum sm_thread_state
	uint32_t no_jemalloc;    //! jemalloc's own thread state is torn down (backend.c)
	uint32_t stock_want;     //! classes whose stock the owner should rebalance
	uintptr_t base;          //! copy of _sm_base: SM_BASE_UNSET until this thread's
	                         //! first free of a class object (alloc.c, free_other)
	uint32_t stock_slots;    //! slots the owner keeps full: min(reserve, SM_STOCK_SLOTS),
	                         //! once stocking (0 before)
	int32_t stock_more;      //! objects the owner keeps on more: reserve - stock_slots
	uint32_t stocking;       //! the owner keeps stocks: some handler in the process allocated
	uint32_t stats_dirty;    //! nested counters changed since the owner last folded them
	uint8_t class_of_units[257]; //! (size + 15) >> 4 -> class, from the TLS image
	uint16_t class_align_mask[SM_NUM_CLASSES]; //! an object of class c sits at a
	                         //! multiple of class_align_mask[c] + 1 (internal.h)
	struct sm_bucket bucket[SM_NUM_CLASSES] __attribute__((aligned(64))); //! the
	                         //! private buckets of the cache this thread owns
	struct sm_stock stock[SM_NUM_CLASSES] __attribute__((aligned(64)));
};

#endif /* SM_TYPES_H */
