/*
 * Thread caches: global initialisation, the registry of caches, thread
 * set-up and exit, and fork.
 *
 * Who calls in: the owner at depth 1 from a slow path (set-up), the pthread
 * key destructor of an exiting thread, pthread_atfork handlers, and the
 * statistics reader (registry walk). Never a nested context: set-up takes a
 * lock and calls mmap.
 *
 * Registry: a singly linked list of every cache ever made, through
 * next_all, pushed under registry_lock and never unlinked, so a reader may
 * walk it without the lock (next_all is written before the cache is
 * published and never again). Caches are never unmapped; an exited
 * thread's cache is drained and reused by the next new thread, so the
 * registry is as long as the most threads ever alive at once.
 *
 *   state:  FREE --(thread set-up)--> LIVE --(key destructor)--> FREE
 *                                       \--(fork child, other threads)--> FREE
 *
 * A cache costs sizeof(struct sm_cache) rounded to pages (docs/MEMORY.md),
 * plus what it holds.
 *
 * Thread exit: the key destructor runs at depth 0 on the exiting thread and
 * raises it. It marks the thread DEAD and then points it at the sentinel,
 * so that any later call on the thread (a later destructor, glibc's
 * teardown, a signal handler) uses no cache and no stock; moves its nested
 * stock (TLS) onto the cache's private buckets; then hands the cache to the
 * refill thread, which returns everything to jemalloc and frees the cache
 * for reuse (or does that itself when there is no refill thread).
 *
 * fork: prepare takes registry_lock (ours is registered after jemalloc's,
 * so it runs before jemalloc takes its own locks: registry_lock is always
 * taken before any jemalloc lock). In the child, the forking thread keeps
 * its cache; the other threads do not exist there, and each may have
 * been half way through a multi-step update of its private buckets (a pop
 * or a splice: count and slots written one after another), so their
 * caches cannot be trusted: the child resets them to empty and FREE for
 * reuse and leaks the objects they held, as jemalloc does with the tcaches
 * of those threads. Lock-less lists whose every update is one atomic step
 * on the head (the deferred list) are whole in the child and are kept. So
 * are the depot and the spare magazines, whose take-one is two steps (take
 * all, give the rest back): a thread caught between them in the parent
 * leaves the list empty in the child, a bounded leak (at most a class's
 * depot limit, or its spares), never a corrupt list.
 */
#include <pthread.h>
#include <signal.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "internal.h"
#include "lockless.h"

/* What a thread without a cache points at: the slow paths recognise it.
 * Marks 0: every malloc and free misses. Its buckets' slots[-1] is the NULL
 * below, which free reads for its double-free check; nothing writes it. */
static void *const empty_guard[1];
const struct sm_cache _sm_cache_empty = {
	.priv = (struct sm_bucket *)_sm_cache_empty.parked,
	.parked = { [0 ... SM_NUM_CLASSES - 1] = { .slots = (void **)&empty_guard[1] } },
};

_Atomic int _sm_initialized; /* 0 not yet, 1 ready, -1 failed */
static pthread_mutex_t registry_lock = PTHREAD_MUTEX_INITIALIZER;
static _Atomic(struct sm_cache *) registry;
static pthread_key_t exit_key;
static uint32_t large_arena_seq; /* under registry_lock */

struct sm_cache *_sm_registry_first(void)
{
	return atomic_load_explicit(&registry, memory_order_acquire);
}

static void thread_exit(void *arg);
static void fork_prepare(void);
static void fork_parent(void);
static void fork_child(void);

/* Global set-up, once, on the first slow path of any thread (not in a
 * constructor: malloc runs before constructors do). Depth 1. */
static bool init_once(void)
{
	_sm_options_init();
	_sm_stats_at_exit_prepare();
	if (!_sm_backend_init())
		return false;
	if (pthread_key_create(&exit_key, thread_exit) != 0)
		return false;
	/* After jemalloc's own registration (its init ran inside
	 * _sm_backend_init), so that our prepare runs first. */
	pthread_atfork(fork_prepare, fork_parent, fork_child);
	if (_sm_options.refill_thread == 1)
		_sm_refiller_want();
	return true;
}

bool _sm_init(void)
{
	int state = atomic_load_explicit(&_sm_initialized, memory_order_acquire);
	if (sm_likely(state != 0))
		return state > 0;
	pthread_mutex_lock(&registry_lock);
	state = atomic_load_explicit(&_sm_initialized, memory_order_relaxed);
	if (state == 0) {
		state = init_once() ? 1 : -1;
		atomic_store_explicit(&_sm_initialized, state, memory_order_release);
	}
	pthread_mutex_unlock(&registry_lock);
	return state > 0;
}

/* A cache's mapping: the struct, then every class's slot array end to end,
 * each after a guard slot that nothing writes (types.h, struct sm_bucket).
 * Pages of the arrays are touched as buckets grow, from the bottom: a class
 * that holds few objects costs one page or part of one (docs/MEMORY.md). */
static size_t cache_struct_size(void)
{
	return (sizeof(struct sm_cache) + 4095) & ~(size_t)4095;
}

/* The slots a class takes in the mapping: its guard, then its array. */
static size_t class_slot_span(uint32_t cls)
{
	return 1 + _sm_class_slots(cls);
}

static size_t cache_map_size(void)
{
	size_t slots = 0;
	for (uint32_t cls = 0; cls < SM_NUM_CLASSES; cls++)
		slots += class_slot_span(cls);
	return cache_struct_size() + ((slots * sizeof(void *) + 4095) & ~(size_t)4095);
}

/* Sets the watermarks of every bucket, and its slots: a claimed DEAD
 * cache's buckets keep what they hold (the arrays do not move). */
static void cache_set_marks(struct sm_cache *c)
{
	void **slots = c->slot_store;
	for (uint32_t cls = 0; cls < SM_NUM_CLASSES; cls++) {
		struct sm_bucket *b = &c->priv[cls];
		struct sm_bucket_slow *s = &c->slow[cls];
		uint32_t low, high, batch, cap;
		_sm_class_watermarks(cls, &low, &high, &batch, &cap);
		b->slots = slots + 1; /* slots[-1]: the guard, always NULL */
		b->capacity = _sm_class_slots(cls);
		slots += class_slot_span(cls);
		/* Without a refill thread, refill when empty (issue 3 arms it). */
		b->low_mark = 0; /* armed by the first refill once the thread runs */
		b->high_mark = high;
		b->batch = batch;
		s->low_default = low;
		s->high_default = high;
		s->high_cap = cap;
		/* Slow start of refills (refill.c): about 2 KiB of objects. */
		uint32_t first = 2048 / _sm_class_size[cls];
		first = first < 1 ? 1 : first;
		s->refill_first = first < batch ? first : batch;
		s->refill_next = s->refill_first;
	}
}

/* Takes a FREE cache from the registry; else claims a DEAD one with its
 * contents (what an exited thread cached serves the new one, and no
 * jemalloc call is made at all: thread churn costs no flush); else maps a
 * new one. Claiming is a CAS against the refill thread's DEAD -> FLUSHING. */
static struct sm_cache *cache_acquire(void)
{
	struct sm_cache *c, *dead = NULL;
	pthread_mutex_lock(&registry_lock);
	for (c = _sm_registry_first(); c; c = c->next_all) {
		/* Acquire: pairs with the release that made it FREE, after the
		 * flush that emptied it (another thread's writes). */
		uint32_t state = atomic_load_explicit(&c->state, memory_order_acquire);
		if (state == SM_CACHE_FREE)
			break;
		if (state == SM_CACHE_DEAD && !dead)
			dead = c;
	}
	if (!c && dead) {
		uint32_t expected = SM_CACHE_DEAD;
		if (atomic_compare_exchange_strong(&dead->state, &expected, SM_CACHE_LIVE))
			c = dead;
	}
	if (!c) {
		void *m = mmap(NULL, cache_map_size(), PROT_READ | PROT_WRITE,
		               MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
		if (m != MAP_FAILED) {
			c = m;
			c->priv = c->parked;
			c->slot_store = (void **)((char *)m + cache_struct_size());
			c->tcache = SM_TCACHE_NONE;
			c->next_all = _sm_registry_first();
			atomic_store_explicit(&registry, c, memory_order_release);
		}
	}
	if (c) {
		atomic_store_explicit(&c->state, SM_CACHE_LIVE, memory_order_seq_cst);
		/* Its private buckets (an exited thread's, or empty) move into this
		 * thread's TLS, where the fast path finds them. */
		struct sm_thread *t = &_sm_thread;
		memcpy(t->bucket, c->parked, sizeof t->bucket);
		memset(c->parked, 0, sizeof c->parked);
		c->priv = t->bucket;
		t->buckets = t->bucket;
		c->large_arena = _sm_backend_large_arena(large_arena_seq++);
		if (c->tcache == SM_TCACHE_NONE) /* a new cache, or one forgotten by fork */
			c->tcache = _sm_backend_tcache_create();
		atomic_store_explicit(&c->last_tick, atomic_load(&_sm_tick), memory_order_relaxed);
		atomic_store_explicit(&c->idle_reclaimed, 0, memory_order_relaxed);
		/* A second thread: from now on a refill thread pays its way. */
		if (large_arena_seq > 1)
			_sm_refiller_want();
	}
	if (c && large_arena_seq == 2) {
		/* The process became multi-threaded: from here on any thread's
		 * handlers may interrupt its first malloc, before it has a cache or
		 * has used a class. Stock the process-wide nested reserve of every
		 * class now, under the lock, so that no other thread finishes its
		 * set-up before it is full (this creates every class arena:
		 * docs/MEMORY.md). */
		_sm_global_reserve_want_all();
		_sm_global_reserve_restock(c->tcache);
	}
	pthread_mutex_unlock(&registry_lock);
	if (c)
		cache_set_marks(c);
	return c;
}

struct sm_cache *_sm_thread_setup(void)
{
	struct sm_thread *t = &_sm_thread;
	if (t->state == SM_THREAD_DEAD)
		return NULL;
	/* Set-up runs once per thread with its signals held back: a handler
	 * that would land here (this thread's first malloc, possibly waiting
	 * for the registry lock while another thread stocks the nested
	 * reserves) runs right after, when there is a cache and a reserve.
	 * Two syscalls per thread. */
	sigset_t all, old;
	sigfillset(&all);
	pthread_sigmask(SIG_BLOCK, &all, &old);
	struct sm_cache *c = _sm_init() ? cache_acquire() : NULL;
	if (c) {
		/* The nested stock lives in this thread's TLS, which starts empty
		 * even when the cache is an exited thread's: the first use of
		 * each class stocks it (refill.c). */
		c->used_mask = 0;
		/* No stock is kept until handlers allocate (refill.c). */
		t->stocking = 0;
		t->stock_slots = 0;
		t->stock_more = 0;
		t->cache = c;
		sm_signal_fence(); /* a handler that sees LIVE sees the cache */
		t->state = SM_THREAD_LIVE;
		/* Signals are let through, and pthread_setspecific may call
		 * calloc (for keys past the first 32), at depth 0: the cache is
		 * complete and this slow path has not touched any bucket yet.
		 * A handler that became pending while set-up held signals back
		 * runs right here, as an owner with a cache of its own. At depth
		 * 1 it would be a nested call with an empty stock, served only by
		 * the process-wide reserve, which threads starting together can
		 * drain (tests/test-signal's cold start: a handler's malloc of a
		 * 4 KiB-hub block returned NULL in one CI run in about ten, and
		 * in 7 of 12 runs with SIGMALLOC_RESERVE=1). */
		sm_signal_fence();
		t->depth = 0;
		pthread_sigmask(SIG_SETMASK, &old, NULL);
		pthread_setspecific(exit_key, c);
		t->depth = 1;
		sm_signal_fence();
		return c;
	}
	pthread_sigmask(SIG_SETMASK, &old, NULL);
	return c;
}

/* Returns every object a cache holds to jemalloc. Caller: the owner at
 * depth 1, or whoever has made the cache theirs (it is not LIVE). */
void _sm_cache_flush(struct sm_cache *c, int tc)
{
	for (uint32_t cls = 0; cls < SM_NUM_CLASSES; cls++) {
		struct sm_bucket *b = &c->priv[cls];
		struct sm_bucket_shared *sh = &c->shared[cls];
		uint32_t n = bucket_count(b);
		if (n) {
			_sm_backend_free_array(b->slots, n, tc);
			bucket_count_add(b, -(int32_t)n);
			c->slow[cls].objects_trimmed += n;
		}
		b->high_mark = c->slow[cls].high_default;
		/* The reserve is a chain of objects, the inbox and outbox lists
		 * of magazines (types.h). */
		struct sm_node *reserve = list_take_all(&sh->reserve);
		if (reserve) {
			uint32_t n = _sm_backend_free_chain(reserve, tc);
			atomic_fetch_sub_explicit(&sh->reserve_count, (int32_t)n, memory_order_relaxed);
			c->slow[cls].objects_trimmed += n;
		}
		c->slow[cls].objects_trimmed +=
			_sm_magazine_list_release(&sh->inbox, &sh->inbox_count, tc) +
			_sm_magazine_list_release(&sh->outbox, &sh->outbox_count, tc);
	}
	c->used_mask = 0;
	atomic_store_explicit(&c->reserve_want, 0, memory_order_relaxed);
}

/* The registry walk of the statistics reader (stats.c) holds the lock, so
 * that it never follows a LIVE cache's priv into TLS that is gone. */
void _sm_registry_lock(void)
{
	pthread_mutex_lock(&registry_lock);
}

void _sm_registry_unlock(void)
{
	pthread_mutex_unlock(&registry_lock);
}

/* Thread exit: the private buckets go from the TLS back into the cache, and
 * the fast path's buckets pointer goes to the sentinel's (every later call
 * misses). */
static void buckets_park(struct sm_thread *t, struct sm_cache *c)
{
	pthread_mutex_lock(&registry_lock);
	memcpy(c->parked, t->bucket, sizeof c->parked);
	c->priv = c->parked;
	pthread_mutex_unlock(&registry_lock);
	t->buckets = (struct sm_bucket *)_sm_cache_empty.parked;
}

static void thread_exit(void *arg)
{
	struct sm_cache *c = arg;
	struct sm_thread *t = &_sm_thread;
	t->depth++;
	sm_signal_fence();
	if (t->cache == c) {
		/* From here on this thread, and its handlers, use no cache and no
		 * stock: DEAD first (a handler that sees LIVE still finds the
		 * cache), then the stock goes onto the cache's private buckets. */
		t->state = SM_THREAD_DEAD;
		sm_signal_fence();
		t->cache = (struct sm_cache *)&_sm_cache_empty;
		sm_signal_fence();
		buckets_park(t, c);
		_sm_stock_hand_over(t, c);
		/* The refill thread returns it all to jemalloc; without one, this
		 * thread does, bypassing its jemalloc tcache that is going away. */
		if (!_sm_refiller_adopt(c)) {
			_sm_deferred_drain(c->tcache);
			_sm_cache_flush(c, c->tcache);
			_sm_backend_tcache_flush(c->tcache);
			atomic_store_explicit(&c->state, SM_CACHE_FREE, memory_order_release);
		}
	}
	sm_signal_fence();
	t->depth--;
}

/* fork: from the first prepare handler to the last parent or child one,
 * the forking thread holds every allocator lock, sigmalloc's (below) and
 * jemalloc's (its handlers run after our prepare and before our parent and
 * child handlers: init_once registers ours after jemalloc's). A signal
 * handler of this thread that allocated in that window could reach one of
 * them (a refill from a pool, a large block from jemalloc) and wait on its
 * own thread forever: tests/test-fork-signal.c hung in 3 of 3 runs. So
 * the window runs with every signal blocked; the child inherits the
 * blocked mask and fork_child restores it. Two sigprocmask calls per fork
 * (docs/SIGNAL-SAFETY.md). Per thread: two threads may fork at once (the
 * second waits on the registry lock with its signals blocked). */
static __thread sigset_t fork_saved_mask sm_tls; /* initial-exec: no __tls_get_addr */

static void fork_prepare(void)
{
	sigset_t all;
	sigfillset(&all);
	pthread_sigmask(SIG_BLOCK, &all, &fork_saved_mask);
	pthread_mutex_lock(&registry_lock);
	_sm_refiller_fork_prepare();
	_sm_backend_fork_prepare();
	_sm_pool_fork_prepare(); /* last: its holder takes no other lock */
}

static void fork_parent(void)
{
	_sm_pool_fork_parent();
	_sm_backend_fork_parent();
	_sm_refiller_fork_parent();
	pthread_mutex_unlock(&registry_lock);
	pthread_sigmask(SIG_SETMASK, &fork_saved_mask, NULL);
}

/* Resets a cache whose owner does not exist in this process. */
static void cache_forget(struct sm_cache *c)
{
	struct sm_cache *next = c->next_all;
	void **slot_store = c->slot_store;
	memset(c, 0, sizeof *c);
	c->next_all = next;
	c->slot_store = slot_store;
	c->priv = c->parked;
	/* Its jemalloc tcache may have been mid-operation: never use it again. */
	c->tcache = SM_TCACHE_NONE;
	atomic_store_explicit(&c->state, SM_CACHE_FREE, memory_order_relaxed);
}

static void fork_child(void)
{
	pthread_mutex_init(&registry_lock, NULL);
	_sm_backend_fork_child();
	_sm_pool_fork_child();
	struct sm_cache *mine = _sm_thread.cache;
	if (mine == &_sm_cache_empty)
		mine = NULL;
	for (struct sm_cache *c = _sm_registry_first(); c; c = c->next_all)
		if (c != mine)
			cache_forget(c);
	/* The deferred list is kept: it only ever sees pushes and take-alls,
	 * and each is one atomic step on the head (lockless.h), so a thread
	 * that vanished in the middle of either left the list whole (its node
	 * on it or not) and the child returns what is there to jemalloc. */
	_sm_refiller_fork_child(mine);
	if (mine) /* its low marks were armed for a thread that is gone */
		for (uint32_t cls = 0; cls < SM_NUM_CLASSES; cls++)
			mine->priv[cls].low_mark = 0;
	pthread_sigmask(SIG_SETMASK, &fork_saved_mask, NULL); /* last: all is whole again */
}
