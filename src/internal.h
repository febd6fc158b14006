/*
 * sigmalloc internal declarations, grouped by the file that owns them.
 * Everything here is hidden: only include/sigmalloc.h is exported.
 */
#ifndef SM_INTERNAL_H
#define SM_INTERNAL_H

#include <errno.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "types.h"

#define sm_likely(x) __builtin_expect(!!(x), 1)
#define sm_unlikely(x) __builtin_expect(!!(x), 0)
#define sm_noinline __attribute__((noinline))
#define sm_cold __attribute__((cold))
/* Not inlined, and nothing about it (such as that it never returns) known
 * to its callers. clang has no noipa and gets the nearest, noinline: only
 * the sanitizer builds use clang, and there the hit path's shape does not
 * matter. */
#if defined(__clang__)
#define sm_noipa __attribute__((noinline))
#else
#define sm_noipa __attribute__((noipa))
#endif
#define sm_always_inline inline __attribute__((always_inline))
#define sm_hidden __attribute__((visibility("hidden")))
#define sm_tls __attribute__((tls_model("initial-exec")))

/* The compiler barrier that delimits a depth window: a signal handler runs
 * on this thread, so ordering against it needs no CPU fence. */
#define sm_signal_fence() atomic_signal_fence(memory_order_seq_cst)

/* Statistics switch (STYLE.md 11): a constant, so that `if` costs nothing. */
#ifndef SM_CONFIG_STATS
#define SM_CONFIG_STATS 1
#endif
static const bool sm_config_stats = SM_CONFIG_STATS;

/* Assertions that cost nothing unless SM_DEBUG is set. */
#ifdef SM_DEBUG
#define sm_assert(x) ((x) ? (void)0 : _sm_assert_fail(#x, __FILE__, __LINE__))
#else
#define sm_assert(x) ((void)0)
#endif

/* AddressSanitizer: objects sitting in a cache are poisoned (issue 4). */
#if !defined(__SANITIZE_ADDRESS__) && defined(__has_feature)
#if __has_feature(address_sanitizer)
#define __SANITIZE_ADDRESS__ 1
#endif
#endif
#if defined(__SANITIZE_ADDRESS__)
#include <sanitizer/asan_interface.h>
#define SM_ASAN 1
/* A class object's whole usable size, from its address: not always the
 * class of the bucket it sits in (backend.c, hubs). */
#define sm_poison(p) ASAN_POISON_MEMORY_REGION((p), _sm_class_size[slot_of(p)])
#define sm_unpoison(p) ASAN_UNPOISON_MEMORY_REGION((p), _sm_class_size[slot_of(p)])
#else
#define SM_ASAN 0
#define sm_poison(p) ((void)(p))
#define sm_unpoison(p) ((void)(p))
#endif

// "alloc.c": the fast path and the entry points.
extern __thread struct sm_thread _sm_thread sm_tls sm_hidden;

// "sizeclass.c"
extern const uint32_t _sm_class_size[SM_NUM_CLASSES] sm_hidden;
/* The smallest power-of-four class at least as large (sizeclass.c). */
extern const uint8_t _sm_class_hub[SM_NUM_CLASSES] sm_hidden;
/* The class of a size <= SM_MAX_SMALL: the thread's copy of the table
 * (struct sm_thread), initialised from SM_CLASS_OF_UNITS below. */
static inline uint32_t class_of_size(size_t size)
{
	return _sm_thread.class_of_units[(size + 15) >> 4];
}
/* Index: size in 16-byte units, rounded up; size 0 is class 0. jemalloc
 * 5.3's small classes (sizeclass.c). */
#define SM_CLASS_OF_UNITS {                                                   \
	[0 ... 1] = 0,     [2] = 1,           [3] = 2,           [4] = 3,           \
	[5] = 4,           [6] = 5,           [7] = 6,           [8] = 7,           \
	[9 ... 10] = 8,    [11 ... 12] = 9,   [13 ... 14] = 10,  [15 ... 16] = 11,  \
	[17 ... 20] = 12,  [21 ... 24] = 13,  [25 ... 28] = 14,  [29 ... 32] = 15,  \
	[33 ... 40] = 16,  [41 ... 48] = 17,  [49 ... 56] = 18,  [57 ... 64] = 19,  \
	[65 ... 80] = 20,  [81 ... 96] = 21,  [97 ... 112] = 22, [113 ... 128] = 23, \
	[129 ... 160] = 24, [161 ... 192] = 25, [193 ... 224] = 26, [225 ... 256] = 27, \
}
/* Per class, the alignment of its objects less one: jemalloc places them
 * at multiples of the class size from a page-aligned slab, so each is
 * aligned to the largest power of two that divides the size. free() tests
 * a class pointer against it (a pointer into an object, not its start, is
 * one sigmalloc never handed out); kept in the thread's TLS page like the
 * class table. tests/test-api.c checks it against _sm_class_size. */
#define SM_CLASS_ALIGN_MASK { \
	15, 31, 15, 63, 15, 31, 15, 127, 31, 63, 31, 255, 63, 127, \
	63, 511, 127, 255, 127, 1023, 255, 511, 255, 2047, 511, 1023, 511, 4095, \
}
/* Smallest class >= size whose size is a multiple of align (align <= 4096);
 * SM_NUM_CLASSES if none. */
uint32_t _sm_class_aligned(size_t size, size_t align) sm_hidden;
/* Kernel watermarks for a class (memalloc.c prefill_mem_cache). */
void _sm_class_watermarks(uint32_t cls, uint32_t *low, uint32_t *high, uint32_t *batch,
                          uint32_t *cap) sm_hidden;
uint32_t _sm_class_slots(uint32_t cls) sm_hidden;

// "backend.c": jemalloc, the only file that calls it.
/* A class draws its objects from its hub (_sm_class_hub) until that has
 * wasted SIGMALLOC_ARENA_AFTER bytes, then from an arena of its own
 * (backend.c). So a bucket may hold
 * objects of a larger class than its own: anything that needs an object's
 * size takes it from the object's address (slot_of), never from the
 * bucket. */
extern uintptr_t _sm_base sm_hidden;  /* SM_BASE_UNSET until init */
static inline uintptr_t slot_of(const void *p) { return ((uintptr_t)p - _sm_base) >> SM_SLOT_SHIFT; }
extern uint32_t _sm_large_slots sm_hidden;
static inline bool slot_is_large(uintptr_t slot)
{
	return slot - SM_LARGE_FIRST_SLOT < _sm_large_slots;
}
bool _sm_backend_init(void) sm_hidden;
/* `tc` everywhere: the caller's explicit jemalloc tcache, or SM_TCACHE_NONE.
 * Frees (never allocations) may also name SM_TCACHE_THREAD, the calling
 * thread's automatic jemalloc tcache: jemalloc's fast free path, for blocks
 * this thread will not ask for again soon (backend.c, free_flags). */
#define SM_TCACHE_NONE (-1)
#define SM_TCACHE_THREAD (-2)
int _sm_backend_tcache_create(void) sm_hidden;
void _sm_backend_tcache_flush(int tc) sm_hidden;
/* Allocates up to n objects of class cls into out[], writing nothing into
 * them; returns how many. */
uint32_t _sm_backend_alloc_array(uint32_t cls, uint32_t n, void **out, int tc) sm_hidden;
/* Allocates up to n objects of class cls as a chain; returns its length. */
uint32_t _sm_backend_alloc_batch(uint32_t cls, uint32_t n, struct sm_node **first,
                                 struct sm_node **last, int tc) sm_hidden;
uint32_t _sm_backend_free_chain(struct sm_node *first, int tc) sm_hidden;
void _sm_backend_free_array(void *const *objs, uint32_t n, int tc) sm_hidden;
void *_sm_backend_alloc_large(size_t size, size_t align, bool zero, uint32_t arena,
                              int tc) sm_hidden;
void _sm_backend_free_large(void *p, int tc) sm_hidden;
/* sigmalloc's own records (magazines), from jemalloc's automatic arena. */
void *_sm_backend_alloc_record(size_t size) sm_hidden;
void _sm_backend_free_record(void *p) sm_hidden;
size_t _sm_backend_usable_large(void *p) sm_hidden;
/* sigmalloc's map of large blocks' usable sizes, by the page a block starts
 * in (backend.c). A load of a live block's word is safe anywhere, a signal
 * handler included; 0: not known, ask jemalloc (_sm_backend_usable_large). */
extern size_t *_sm_large_sizes sm_hidden;
extern uintptr_t _sm_large_sizes_base sm_hidden;
#define SM_LARGE_WORD_OFFSET ((size_t)1023) /* a word's bits for the block's offset in its page */
/* The word of the page p starts in (the map must exist). */
static inline size_t *large_size_word(const void *p)
{
	return &_sm_large_sizes[((uintptr_t)p - _sm_large_sizes_base) >> 12];
}
/* Whether p starts a live large block (the map says so, or there is none);
 * *usable: its usable size by the map, 0 without one. */
bool _sm_backend_large_live(const void *p, size_t *usable) sm_hidden;
/* The large range's bump point (tests). */
uintptr_t _sm_backend_large_carved(void) sm_hidden;
/* A nested free of large block p: no longer live (its free is deferred). */
void _sm_backend_large_forget(void *p) sm_hidden;
/* jemalloc's usable size of a request above 4 KiB without an alignment:
 * its classes there are four to a doubling (SC_LG_NGROUP 2, a constant of
 * its source), 2^k + i x 2^(k-2), i = 1..4, so a size rounds up to a
 * multiple of 2^(lg - 2) with 2^lg <= size - 1 < 2^(lg+1). Arithmetic where
 * nallocx took 11 % of the samples of realloc/+64 (docs/PERFORMANCE.md);
 * tests/test-api.c checks it against nallocx for every class up to 64 MiB. */
static inline size_t large_usable_of(size_t size)
{
	unsigned lg = 63u - (unsigned)__builtin_clzl(size - 1);
	size_t delta = (size_t)1 << (lg - 2);
	return (size + delta - 1) & ~(delta - 1);
}
/* Whether `size` bytes are in the jemalloc size class whose usable size is
 * `usable` (0: not known, never). */
static inline bool large_class_holds(size_t usable, size_t size)
{
	return size > SM_MAX_SMALL && large_usable_of(size) == usable; /* >= size */
}
bool _sm_backend_same_large_class(void *p, size_t size) sm_hidden;
void *_sm_backend_realloc_large(void *p, size_t size, uint32_t arena, int tc) sm_hidden;
void _sm_backend_purge(int tc) sm_hidden;
uint32_t _sm_backend_large_arena(uint32_t seq) sm_hidden;
void _sm_backend_fork_prepare(void) sm_hidden;
void _sm_backend_fork_parent(void) sm_hidden;
void _sm_backend_fork_child(void) sm_hidden;
bool _sm_backend_read_u64(const char *name, uint64_t *out) sm_hidden;

// "cache.c": thread caches, their registry, thread exit and fork.
extern const struct sm_cache _sm_cache_empty sm_hidden;
void _sm_registry_lock(void) sm_hidden;   /* the statistics reader's walk */
void _sm_registry_unlock(void) sm_hidden;
/* Sets up the calling thread at depth 1; NULL if it cannot have a cache. */
struct sm_cache *_sm_thread_setup(void) sm_hidden;
void _sm_cache_flush(struct sm_cache *c, int tc) sm_hidden;
bool _sm_init(void) sm_hidden;
extern _Atomic int _sm_initialized sm_hidden;
/* Iterates the registry (read-only, lock-free: next_all is written once). */
struct sm_cache *_sm_registry_first(void) sm_hidden;

// "alloc.c": the report of a double free caught on a bucket's top (also
// reached from preload/near.c's copy of the hit path, with depth held).
void _sm_double_free(void *p) sm_hidden;

// "refill.c": the slow paths, at depth 1.
void *_sm_alloc_slow(uint32_t cls) sm_hidden;
void _sm_free_slow(void *p, uint32_t cls) sm_hidden;
void *_sm_nested_alloc(uint32_t cls, size_t align) sm_hidden __attribute__((hot));
void _sm_nested_free(void *p, uint32_t cls) sm_hidden __attribute__((hot));
/* Folds the nested statistics of t's TLS into its cache c (owner). */
void _sm_nested_stats_fold(struct sm_thread *t, struct sm_cache *c) sm_hidden;
/* Thread exit, state already DEAD: the stock onto c's private buckets. */
void _sm_stock_hand_over(struct sm_thread *t, struct sm_cache *c) sm_hidden;
void _sm_deferred_push(void *p) sm_hidden;
void *_sm_large_alloc(size_t size, size_t align, bool zero) sm_hidden;
void _sm_large_free(void *p) sm_hidden;
void *_sm_large_realloc(void *p, size_t size) sm_hidden;
void _sm_trim_thread(void) sm_hidden;
void _sm_deferred_drain(int tc) sm_hidden;
void _sm_reserve_restock(struct sm_cache *c, bool owner, int tc) sm_hidden;
extern _Atomic(struct sm_node *) _sm_deferred_head sm_hidden;
void _sm_global_reserve_want(uint32_t cls) sm_hidden;
void _sm_global_reserve_want_all(void) sm_hidden;
void _sm_global_reserve_restock(int tc) sm_hidden;
bool _sm_global_reserve_wanted(void) sm_hidden;
void _sm_global_reserve_stats(uint32_t cls, uint64_t *allocs, uint64_t *nulls,
                              int32_t *held) sm_hidden;
void _sm_bucket_trim_to(struct sm_cache *c, uint32_t cls, uint32_t keep) sm_hidden;
/* Reverses objs[0 .. n-1] (jemalloc's ascending order: lowest on top). */
void _sm_slots_reverse(void **objs, uint32_t n) sm_hidden;
/* Pushes a NULL-terminated chain of n objects into a cache's bucket of cls;
 * what does not fit goes back to jemalloc (refill.c). */
void _sm_bucket_splice(struct sm_cache *c, uint32_t cls, struct sm_node *first,
                       uint32_t n) sm_hidden;

// "magazine.c": batches between threads as arrays of pointers. Owners at
// depth 1 and the refill thread; tc as for the backend.
uint32_t _sm_magazine_capacity(uint32_t cls) sm_hidden; /* the class's batch */
/* An empty magazine of cls (a spare, else from jemalloc); NULL if none. */
struct sm_magazine *_sm_magazine_new(uint32_t cls) sm_hidden;
/* A new magazine holding a copy of objs[0 .. n-1] (n <= capacity). */
struct sm_magazine *_sm_magazine_fill(uint32_t cls, void *const *objs,
                                      uint32_t n) sm_hidden;
/* An emptied magazine back to the spares (or to jemalloc). */
void _sm_magazine_retire(struct sm_magazine *m) sm_hidden;
/* A chain of magazines: their objects to jemalloc, the magazines retired;
 * returns how many objects. */
uint32_t _sm_magazines_release(struct sm_node *chain, int tc) sm_hidden;
/* The same for a whole atomic list of magazines (inbox, outbox, depot),
 * whose count of objects it lowers by as many. */
uint32_t _sm_magazine_list_release(_Atomic(struct sm_node *) *list, _Atomic int32_t *count,
                                   int tc) sm_hidden;
/* The objects in a non-empty chain of magazines, and its last link. */
uint32_t _sm_magazines_count(struct sm_node *chain, struct sm_node **last) sm_hidden;
void _sm_magazine_release_spares(uint32_t cls) sm_hidden;

// "depot.c": whole batches passed between threads, as magazines.
/* Puts a copy of objs[0 .. n-1] (n: the class's batch) in the depot; false
 * (nothing taken) when it is full or n is not a batch. */
bool _sm_depot_put(uint32_t cls, void *const *objs, uint32_t n) sm_hidden;
struct sm_magazine *_sm_depot_get(uint32_t cls) sm_hidden;
int32_t _sm_depot_held(uint32_t cls) sm_hidden;
void _sm_depot_release_idle(uint64_t now, uint64_t idle_ticks, int tc) sm_hidden;
void _sm_depot_release_all(int tc) sm_hidden;

// "refiller.c": the background refill thread.
extern _Atomic uint64_t _sm_tick sm_hidden;
bool _sm_refiller_running(void) sm_hidden;
bool _sm_refiller_wanted(void) sm_hidden;
void _sm_refiller_want(void) sm_hidden;
void _sm_refiller_start_slow(void) sm_hidden sm_noinline sm_cold;
/* Sets bit cls in *mask (a mask of cache c), queues c and wakes the thread;
 * owner or exiting thread, not nested. */
void _sm_refiller_request(struct sm_cache *c, _Atomic uint32_t *mask, uint32_t cls) sm_hidden;
/* The same from a nested context: served on the thread's next tick; a futex
 * wake only when the thread is in its one-second sleep (refiller.c). */
void _sm_refiller_request_nested(struct sm_cache *c, _Atomic uint32_t *mask, uint32_t cls) sm_hidden;
void _sm_refiller_note_nested(void) sm_hidden;
bool _sm_refiller_adopt(struct sm_cache *c) sm_hidden;
void _sm_refiller_kick(void) sm_hidden; /* wakes the thread if it sleeps; not nested */
/* Returns once whatever the thread was doing when called (a deferred-list
 * drain, a restock) has finished: takes and drops its work lock. Not
 * nested; for tests that look at jemalloc's counters. */
void _sm_refiller_barrier(void) sm_hidden;
void _sm_refiller_fork_prepare(void) sm_hidden;
void _sm_refiller_fork_parent(void) sm_hidden;
void _sm_refiller_fork_child(struct sm_cache *mine) sm_hidden;

/* Page colouring of the class slots. Every slot starts at a multiple of
 * 64 GiB, so without it page k of every class (its pool's, its jemalloc
 * range's) has the same low bits of its virtual page number as page k of
 * every other class, and with a random class per operation their
 * translations compete for the same sets (inferred: the guest has no
 * counters; set-associative TLBs index by those bits). Class c's pool, and
 * its jemalloc range after the pool's span, start c * 9 pages in (at most
 * 243 of 256 pages): 1-thread churn 10.5 -> 7.1 ns, tcmalloc 7.35 (6
 * interleaved pinned launches; docs/PERFORMANCE.md). Whole pages, so that
 * a power-of-two class stays aligned to its size. */
#define SM_COLOUR_PAGES 256u
static inline uintptr_t _sm_slot_colour(uint32_t cls)
{
	return (uintptr_t)((cls * 9u) % SM_COLOUR_PAGES) * SM_PAGE;
}

// "pool.c": the first bytes of every class slot, carved by sigmalloc itself
// before the class gets a jemalloc arena. Callers: backend.c (and fork).
extern uintptr_t _sm_pool_bytes sm_hidden; /* the span at the start of each class slot that
                                             holds its pool; fixed at init */
/* p, a class object (slot below SM_NUM_CLASSES), was carved from its pool. */
static inline bool _sm_pool_holds(const void *p)
{
	return (((uintptr_t)p - _sm_base) & (SM_SLOT_SIZE - 1)) < _sm_pool_bytes;
}
/* Sets the pools up from SIGMALLOC_POOL; returns the span each slot keeps. */
uintptr_t _sm_pool_init(uintptr_t base) sm_hidden;
uint32_t _sm_pool_alloc(uint32_t cls, uint32_t n, void **out) sm_hidden;
void _sm_pool_free(uint32_t cls, void *const *objs, uint32_t n) sm_hidden;
/* Bytes carved from all pools, and of those the bytes waiting on their lists. */
void _sm_pool_totals(uint64_t *carved, uint64_t *free_bytes) sm_hidden;
/* malloc_trim: gives back the pools' pages that hold only free objects. */
void _sm_pool_trim(void) sm_hidden;
/* The refill thread, each tick: the same once no free came for decay_ms. */
void _sm_pool_trim_idle(uint64_t now_ms, uint64_t decay_ms) sm_hidden;
void _sm_pool_fork_prepare(void) sm_hidden;
void _sm_pool_fork_parent(void) sm_hidden;
void _sm_pool_fork_child(void) sm_hidden;

// "options.c"
struct sm_options {
	uint32_t reserve;      /* nested reserve per used class (SIGMALLOC_RESERVE) */
	uint32_t cap_bytes;    /* slow-start limit of one bucket (SIGMALLOC_BUCKET_MAX) */
	uint32_t idle_ms;      /* quiet time before a cache is trimmed (SIGMALLOC_IDLE_MS) */
	uint32_t decay_ms;     /* jemalloc dirty_decay_ms of our arenas (SIGMALLOC_DECAY_MS) */
	uint32_t arena_after;  /* bytes a class draws from its hub first (SIGMALLOC_ARENA_AFTER) */
	uint32_t pool_bytes;   /* bytes of each class's pool (SIGMALLOC_POOL) */
	uint32_t refill_thread; /* 0 off, 1 on, 2 auto (SIGMALLOC_REFILL_THREAD) */
	bool stats_at_exit;    /* SIGMALLOC_STATS */
	bool verbose;          /* SIGMALLOC_VERBOSE */
	bool near;             /* SIGMALLOC_NEAR: the near copy (preload/near.c) */
	bool signal_warm;      /* SIGMALLOC_SIGNAL_WARM: handlers' entry (preload/signal_warm.c) */
};
extern struct sm_options _sm_options sm_hidden;

// "preload/signal_warm.c": where the near copy's code is, for the stubs
// that prefetch it at a signal handler's entry (0 and 0 without a copy).
extern const char *_sm_near_code sm_hidden;
extern size_t _sm_near_len sm_hidden;
void _sm_options_init(void) sm_hidden;

// "stats.c"
/* SIGMALLOC_STATS: keeps a descriptor for the table at exit (init, depth 1). */
void _sm_stats_at_exit_prepare(void) sm_hidden;

// "message.c": the one error sink; write(2) from a stack buffer.
/* Formats %s %p %zu %u %d %x into a stack buffer (no libc) and writes it. */
void _sm_message(const char *fmt, ...) sm_hidden __attribute__((format(printf, 1, 2)));
_Noreturn void _sm_fatal(const char *fmt, ...) sm_hidden sm_cold
	__attribute__((format(printf, 1, 2)));
_Noreturn void _sm_assert_fail(const char *what, const char *file, int line) sm_hidden sm_cold;
/* Small formatter usable from anywhere: returns bytes written (<= cap-1). */
size_t _sm_format(char *buf, size_t cap, const char *fmt, ...) sm_hidden
	__attribute__((format(printf, 3, 4)));
void _sm_write_all(int fd, const char *buf, size_t len) sm_hidden;


#endif /* SM_INTERNAL_H */
