/*
 * The slow paths: refill and trim of a bucket, the nested (signal) paths,
 * large objects, and the deferred-free list.
 *
 * Who calls in, and what each may touch:
 *
 *   _sm_alloc_slow, _sm_free_slow     the owner at depth 1, from the fast
 *   _sm_large_*, _sm_trim_thread      path: private buckets, atomic lists, jemalloc,
 *                                     the registry lock (thread set-up).
 *                                     They leave depth at 0 (alloc/free slow)
 *                                     or to the caller (large, trim).
 *   _sm_nested_alloc, _sm_nested_free a signal handler, depth >= 2: the
 *                                     thread's stock (tlslist.h), then atomic
 *                                     lists (lockless.h). No lock, no
 *                                     jemalloc, no libc call but memcpy-free
 *                                     pointer work. They decrement depth.
 *   _sm_deferred_push                 any context: one lock-free push.
 *
 * Refill (bucket empty, at depth 1), in order of cost:
 *   1. inbox: a batch the refill thread delivered (magazines: memcpy);
 *   2. depot: a batch another thread trimmed (a magazine: memcpy);
 *   3. jemalloc: `batch` objects through this thread's jemalloc tcache
 *      (a "synchronous miss"). The owner is provably not inside jemalloc:
 *      every way into jemalloc passes the depth counter.
 * Trim (bucket at high_mark, at depth 1): slow start first, as tcmalloc does
 * with its free lists: high_mark grows by `batch` up to the class cap, so a
 * thread that keeps more objects live caches more; once at the cap, the top
 * `batch` objects leave as a magazine, to the depot for another thread,
 * else to the outbox for the refill thread to free, else (no magazine, or
 * the outbox is full) straight back to jemalloc.
 *
 * Nested stock: each class this thread has used keeps about
 * _sm_options.reserve objects in the thread's TLS for its signal handlers
 * (struct sm_thread, tlslist.h). Nested frees push there, nested mallocs
 * take from there; a nested malloc that takes from the stock, or a free that
 * goes beyond its slots, sets the class's bit in stock_want, and the
 * owner's next slow path tops the stock up from its private bucket or takes
 * the excess back (stock_rebalance). What a nested free cannot put in the
 * stock (its `more` list is bounded: stock_more_max) goes on the deferred
 * list, which any owner slow path and the refill thread return to jemalloc,
 * so handlers' frees never pile up in a TLS list that only its owner can
 * drain. Only when the stock is empty
 * does a nested malloc go further: the stocks of up to SM_NESTED_CLIMB
 * larger classes (free finds the class by address, so any class that fits
 * serves), the cache's atomic `reserve` (restocked by the refill thread on
 * request, for an owner that runs no slow path), then the process-wide
 * reserve.
 */
#include <string.h>
#include <time.h>

#include "internal.h"
#include "lockless.h"
#include "nested_stock.h"
#include "tlslist.h"

/* Nested allocations may be served from this many larger classes. */
#define SM_NESTED_CLIMB 4u

/* Frees that could not be done where they happened (nested frees of large
 * objects, frees on a thread without a cache): drained at depth 1 by any
 * owner slow path, and by the refill thread. */
_Atomic(struct sm_node *) _sm_deferred_head;
#define deferred _sm_deferred_head

static inline struct sm_cache *cache_empty(void)
{
	return (struct sm_cache *)&_sm_cache_empty;
}

/* ------------------------------------------------------------------------
 * Private list helpers (owner only)
 * ---------------------------------------------------------------------- */

/* ASan builds: objects in a bucket are poisoned (issue 4); the n objects
 * of objs[] have just joined one. Nothing in other builds. */
static void poison_slots(void **objs, uint32_t n)
{
	if (!SM_ASAN)
		return;
	for (uint32_t i = 0; i < n; i++)
		sm_poison(objs[i]);
}

/* Reverses objs[0 .. n-1]: jemalloc hands out a fresh slab's objects in
 * ascending order, and the first of them should be popped first. */
void _sm_slots_reverse(void **objs, uint32_t n)
{
	for (uint32_t i = 0, j = n - 1; i < j; i++, j--) {
		void *tmp = objs[i];
		objs[i] = objs[j];
		objs[j] = tmp;
	}
}

/* Pushes the n objects of the NULL-terminated chain `first` into the
 * bucket of cls so that the chain's first object ends on top: the order in
 * which a chain lists its objects is the order in which malloc returns
 * them, as it was when buckets were lists. (A chain from jemalloc is in
 * ascending address order, and a program that walks what it allocated in
 * order, as CPython's collector does, then walks memory upwards, which the
 * hardware prefetchers follow best: docs/PERFORMANCE.md.) What the slots
 * cannot hold (capacity: types.h) goes back to jemalloc, so no caller has
 * to bound what it pushes for the bucket's sake. n must be the chain's
 * length (every caller counted it). Owner at depth 1, or whoever has made
 * a cache that is not LIVE theirs. */
void _sm_bucket_splice(struct sm_cache *c, uint32_t cls, struct sm_node *first, uint32_t n)
{
	struct sm_bucket *b = &c->priv[cls];
	uint32_t count = bucket_count(b);
	uint32_t room = b->capacity - count;
	uint32_t pushed = n < room ? n : room;
	for (uint32_t i = 0; i < pushed; i++) {
		struct sm_node *next = first->next;
		b->slots[count + pushed - 1 - i] = first;
		sm_poison(first);
		first = next;
	}
	bucket_count_add(b, (int32_t)pushed);
	if (sm_unlikely(first != NULL)) /* n > room */
		c->slow[cls].objects_trimmed += _sm_backend_free_chain(first, c->tcache);
}

/* Takes up to n objects off the top of a bucket as a chain first .. last
 * (for the lists that are chains: the stock and the reserve), writing
 * each object's link. */
static uint32_t bucket_take(struct sm_bucket *b, uint32_t n,
                            struct sm_node **first, struct sm_node **last)
{
	uint32_t count = bucket_count(b);
	uint32_t got = n < count ? n : count;
	struct sm_node *head = NULL, *tail = NULL;
	for (uint32_t i = 0; i < got; i++) {
		struct sm_node *node = b->slots[count - 1 - i];
		sm_unpoison(node);
		chain_append(&head, &tail, node);
	}
	bucket_count_add(b, -(int32_t)got);
	*first = head;
	*last = tail;
	return got;
}

/* Copies a magazine's objects onto the top of the bucket of cls, in their
 * order (objs[n - 1] ends on top), and retires the magazine. What the slots
 * cannot hold goes back to jemalloc, the bottom of the magazine first. Owner
 * at depth 1. */
static void bucket_take_magazine(struct sm_cache *c, uint32_t cls, struct sm_magazine *m)
{
	struct sm_bucket *b = &c->priv[cls];
	uint32_t count = bucket_count(b);
	uint32_t room = b->capacity - count;
	uint32_t keep = m->n < room ? m->n : room;
	uint32_t over = m->n - keep;
	if (sm_unlikely(over)) {
		_sm_backend_free_array(m->objs, over, c->tcache);
		c->slow[cls].objects_trimmed += over;
	}
	memcpy(b->slots + count, m->objs + over, keep * sizeof(void *));
	poison_slots(b->slots + count, keep);
	bucket_count_add(b, (int32_t)keep);
	_sm_magazine_retire(m);
}

/* Moves the inbox of cls (magazines the refill thread delivered) into the
 * bucket. */
static void bucket_take_inbox(struct sm_cache *c, uint32_t cls)
{
	struct sm_bucket_shared *sh = &c->shared[cls];
	struct sm_node *chain = list_take_all(&sh->inbox);
	while (chain) {
		struct sm_magazine *m = (struct sm_magazine *)chain;
		chain = chain->next;
		atomic_fetch_sub_explicit(&sh->inbox_count, (int32_t)m->n, memory_order_relaxed);
		bucket_take_magazine(c, cls, m);
	}
}

/* ------------------------------------------------------------------------
 * Housekeeping done on every slow path: cheap when there is nothing to do
 * (two relaxed loads).
 * ---------------------------------------------------------------------- */

void _sm_deferred_push(void *p)
{
	list_push(&deferred, p);
}

void _sm_deferred_drain(int tc)
{
	struct sm_node *node = list_take_all(&deferred);
	while (node) {
		struct sm_node *next = node->next;
		uintptr_t slot = slot_of(node);
		if (slot < SM_NUM_CLASSES) {
			node->next = NULL;
			_sm_backend_free_chain(node, tc);
		} else {
			_sm_backend_free_large(node, tc);
		}
		node = next;
	}
}

/* Tops up the reserves whose bit is set in reserve_want. The owner may
 * take from its private bucket; the refill thread (owner == false) only
 * from jemalloc. */
void _sm_reserve_restock(struct sm_cache *c, bool owner, int tc)
{
	uint32_t want = atomic_exchange_explicit(&c->reserve_want, 0, memory_order_relaxed);
	while (want) {
		uint32_t cls = (uint32_t)__builtin_ctz(want);
		want &= want - 1;
		struct sm_bucket_shared *sh = &c->shared[cls];
		int32_t have = atomic_load_explicit(&sh->reserve_count, memory_order_relaxed);
		if (have < 0)
			have = 0;
		if ((uint32_t)have >= _sm_options.reserve)
			continue;
		uint32_t need = _sm_options.reserve - (uint32_t)have;
		struct sm_node *first, *last;
		uint32_t got;
		struct sm_bucket *b = &c->priv[cls];
		bool from_list = owner && bucket_count(b) > need;
		if (from_list)
			got = bucket_take(b, need, &first, &last);
		else
			got = _sm_backend_alloc_batch(cls, need, &first, &last, tc);
		if (!got)
			continue;
		if (!from_list && owner)
			c->slow[cls].objects_refilled += got;
		else if (!from_list)
			atomic_fetch_add_explicit(&sh->async_objects_refilled, got,
			                          memory_order_relaxed);
		atomic_fetch_add_explicit(&sh->reserve_count, (int32_t)got, memory_order_relaxed);
		list_push_chain(&sh->reserve, first, last);
	}
}

/* A cache that was quiet for the idle interval: back to the watermarks the
 * kernel would keep (the refill thread has taken its atomic lists). */
static void trim_after_idle(struct sm_cache *c)
{
	for (uint32_t cls = 0; cls < SM_NUM_CLASSES; cls++) {
		_sm_bucket_trim_to(c, cls, c->slow[cls].low_default);
		c->priv[cls].high_mark = c->slow[cls].high_default;
		c->slow[cls].refill_next = c->slow[cls].refill_first;
	}
}

/* ------------------------------------------------------------------------
 * The nested stock, owner side (depth 1). The stock is shared with this
 * thread's signal handlers, so every change is a tlslist.h operation.
 * ---------------------------------------------------------------------- */

static inline uint32_t stock_slots_full(struct sm_stock *s)
{
	return tls_slots_count(tls_state_load(&s->state));
}

/* Objects in the stock of a class (approximate: statistics). */
static inline int32_t stock_held(struct sm_stock *s)
{
	return (int32_t)stock_slots_full(s) + s->more_count;
}

/* Adds n objects to the stock of cls, the first `slots` of them into slots:
 * from the private bucket while it holds more than n, else from jemalloc. */
static void stock_fill(struct sm_thread *t, struct sm_cache *c, uint32_t cls, uint32_t slots,
                       uint32_t n)
{
	struct sm_bucket *b = &c->priv[cls];
	struct sm_node *first, *last;
	uint32_t got;
	if (bucket_count(b) > n) {
		got = bucket_take(b, n, &first, &last);
	} else {
		got = _sm_backend_alloc_batch(cls, n, &first, &last, c->tcache);
		c->slow[cls].objects_refilled += got;
	}
	struct sm_stock *s = &t->stock[cls];
	/* A handler may fill slots meanwhile: what finds none goes on more. */
	for (; got && slots; got--, slots--) {
		struct sm_node *next = first->next;
		if (!tls_slots_put(&s->state, s->slot, first))
			break;
		first = next;
	}
	if (!got)
		return;
	tls_push_chain(&s->more, first, last);
	tls_add32(&s->more_count, (int32_t)got);
}

/* The classes in stock_want back to the reserve: `more` above its share
 * goes onto the private bucket (the next trim returns it if that is too
 * much), then slots and `more` below their share are topped up. */
static sm_noinline void stock_rebalance(struct sm_thread *t, struct sm_cache *c)
{
	uint32_t want = __atomic_load_n(&t->stock_want, __ATOMIC_RELAXED);
	tls_andnot32(&t->stock_want, want); /* keeps bits a handler sets meanwhile */
	while (want) {
		uint32_t cls = (uint32_t)__builtin_ctz(want);
		want &= want - 1;
		struct sm_stock *s = &t->stock[cls];
		if (s->more_count > t->stock_more) {
			struct sm_node *chain = tls_take_all(&s->more);
			if (chain) {
				uint32_t n;
				chain_last(chain, &n);
				tls_add32(&s->more_count, -(int32_t)n);
				/* At most stock_more_max objects; if they would take the
				 * private bucket over its high mark, they go straight to
				 * jemalloc, as a trim would send them. */
				struct sm_bucket *b = &c->priv[cls];
				if (bucket_count(b) + n <= b->high_mark) {
					_sm_bucket_splice(c, cls, chain, n);
				} else {
					_sm_backend_free_chain(chain, c->tcache);
					c->slow[cls].objects_trimmed += n;
				}
			}
		}
		uint32_t full = stock_slots_full(s);
		uint32_t slots = t->stock_slots > full ? t->stock_slots - full : 0;
		uint32_t more = t->stock_more > s->more_count ? (uint32_t)(t->stock_more - s->more_count) : 0;
		if (slots + more)
			stock_fill(t, c, cls, slots, slots + more);
		atomic_store_explicit(&c->shared[cls].stock_held, stock_held(s), memory_order_relaxed);
	}
}

/* Moves the nested statistics counted in TLS into the cache, where
 * sm_stats reads them (it cannot read another thread's TLS). Each TLS
 * counter loses exactly what was read, in one instruction, so a handler's
 * increment in between is kept for the next fold. */
static void fold_counter(uint64_t *tls, _Atomic uint64_t *cache)
{
	uint64_t v = __atomic_load_n(tls, __ATOMIC_RELAXED);
	if (!v)
		return;
	tls_add64(tls, -v);
	atomic_store_explicit(cache, atomic_load_explicit(cache, memory_order_relaxed) + v,
	                      memory_order_relaxed);
}

void _sm_nested_stats_fold(struct sm_thread *t, struct sm_cache *c)
{
	uint32_t dirty = __atomic_load_n(&t->stats_dirty, __ATOMIC_RELAXED);
	tls_andnot32(&t->stats_dirty, dirty);
	while (dirty) {
		uint32_t cls = (uint32_t)__builtin_ctz(dirty);
		dirty &= dirty - 1;
		struct sm_bucket_shared *sh = &c->shared[cls];
		fold_counter(&t->stock[cls].nested_allocs, &sh->nested_allocs);
		fold_counter(&t->stock[cls].nested_frees, &sh->nested_frees);
		atomic_store_explicit(&sh->stock_held, stock_held(&t->stock[cls]), memory_order_relaxed);
	}
}

/* Everything in the stock of a class, as a chain (NULL if empty) of *n
 * objects ending at *last: `more` and every full slot, in one walk. Owner
 * at depth 1; a handler may still take from what is left meanwhile
 * (tlslist.h). */
static struct sm_node *stock_take_everything(struct sm_stock *s, uint32_t *n,
                                             struct sm_node **last)
{
	struct sm_node *chain = tls_take_all(&s->more), *p;
	*n = 0;
	*last = NULL;
	if (chain) {
		*last = chain_last(chain, n);
		tls_add32(&s->more_count, -(int32_t)*n);
	}
	while ((p = tls_slots_take(&s->state, s->slot)) != NULL) {
		if (!*last)
			*last = p;
		p->next = chain;
		chain = p;
		++*n;
	}
	return chain;
}

/* Thread exit, after the thread stopped putting into its stock (state
 * DEAD: its handlers' frees go to the deferred list from now on): every
 * stock goes onto the cache's private buckets, which the refill thread's
 * flush returns to jemalloc, or a thread that claims the cache uses and
 * trims as its own. (Not onto the cache's reserve: nothing trims that.)
 * The owner is still at depth 1 here, so the private buckets are its own.
 * The statistics are folded last: a handler that takes a slot before the
 * stock is emptied counts it in TLS, and after that finds no slot. */
void _sm_stock_hand_over(struct sm_thread *t, struct sm_cache *c)
{
	for (uint32_t cls = 0; cls < SM_NUM_CLASSES; cls++) {
		uint32_t n;
		struct sm_node *last;
		struct sm_node *chain = stock_take_everything(&t->stock[cls], &n, &last);
		atomic_store_explicit(&c->shared[cls].stock_held, 0, memory_order_relaxed);
		if (chain)
			_sm_bucket_splice(c, cls, chain, n);
	}
	tls_or32(&t->stats_dirty, (1u << SM_NUM_CLASSES) - 1);
	_sm_nested_stats_fold(t, c);
}

/* malloc_trim: the calling thread's stock goes back to jemalloc too (its
 * next slow path stocks it again if handlers allocate). Owner, depth 1. */
static void stock_flush(struct sm_thread *t, struct sm_cache *c)
{
	for (uint32_t cls = 0; cls < SM_NUM_CLASSES; cls++) {
		uint32_t n;
		struct sm_node *last;
		struct sm_node *chain = stock_take_everything(&t->stock[cls], &n, &last);
		if (chain)
			c->slow[cls].objects_trimmed += _sm_backend_free_chain(chain, c->tcache);
		atomic_store_explicit(&c->shared[cls].stock_held, 0, memory_order_relaxed);
	}
	tls_andnot32(&t->stock_want, ~c->used_mask);
	if (t->stocking)
		tls_or32(&t->stock_want, c->used_mask);
}

/* Some handler in this process allocated. Until then no thread keeps a
 * stock (a program whose handlers never allocate pays nothing for them:
 * xz -T2, 3 threads, about 0.5 MiB); the first nested allocations are
 * served from what handlers freed and the process-wide reserve, and from
 * then on every owner stocks the classes it uses at its next slow path. */
static _Atomic uint32_t nested_seen;

static sm_noinline void stock_start(struct sm_thread *t, struct sm_cache *c)
{
	uint32_t r = _sm_options.reserve;
	t->stock_slots = r < SM_STOCK_SLOTS ? r : SM_STOCK_SLOTS;
	t->stock_more = (int32_t)(r - t->stock_slots);
	t->stocking = 1;
	tls_or32(&t->stock_want, c->used_mask);
}

static inline void housekeeping(struct sm_cache *c)
{
	struct sm_thread *t = &_sm_thread;
	if (sm_unlikely(!t->stocking) &&
	    sm_unlikely(atomic_load_explicit(&nested_seen, memory_order_relaxed) != 0))
		stock_start(t, c);
	if (sm_unlikely(t->stock_want != 0))
		stock_rebalance(t, c);
	if (sm_unlikely(t->stats_dirty != 0))
		_sm_nested_stats_fold(t, c);
	if (sm_unlikely(atomic_load_explicit(&deferred, memory_order_relaxed) != NULL))
		_sm_deferred_drain(c->tcache);
	if (sm_unlikely(atomic_load_explicit(&c->reserve_want, memory_order_relaxed) != 0))
		_sm_reserve_restock(c, true, c->tcache);
	if (sm_unlikely(_sm_global_reserve_wanted()))
		_sm_global_reserve_restock(c->tcache);
	uint64_t now = atomic_load_explicit(&_sm_tick, memory_order_relaxed);
	uint64_t last = atomic_load_explicit(&c->last_tick, memory_order_relaxed);
	if (sm_unlikely(now != last)) {
		if (now - last >= _sm_options.idle_ms / 100u + 1u ||
		    atomic_load_explicit(&c->idle_reclaimed, memory_order_relaxed)) {
			trim_after_idle(c);
			atomic_store_explicit(&c->idle_reclaimed, 0, memory_order_relaxed);
		}
		atomic_store_explicit(&c->last_tick, now, memory_order_relaxed);
	}
}

/* The top of every owner slow path: nothing touched yet, so the refill
 * thread may be started here (its creation allocates, at depth 0). */
static inline void maybe_start_refiller(void)
{
	if (sm_unlikely(_sm_refiller_wanted()))
		_sm_refiller_start_slow();
}

/* ------------------------------------------------------------------------
 * Threads without a cache: a thread whose cache was handed back at exit
 * (later pthread key destructors), or any thread if set-up failed. Straight
 * to jemalloc, without its tcache once the thread is exiting.
 * ---------------------------------------------------------------------- */

static struct sm_node *global_take(uint32_t cls);
static bool global_give(struct sm_node *node);

/*
 * A thread on which jemalloc no longer honours our arenas (its thread state
 * was torn down at exit: backend.c, misplaced) takes from the process-wide
 * reserve, which the refill thread restocks. This is depth 1, not a signal
 * handler, so it may wait for the restock: up to about a second, in 50 us
 * naps, then NULL/ENOMEM. Only allocations late in a thread's exit (later
 * key destructors, glibc's freeres, their signal handlers) come here.
 */
static sm_noinline void *alloc_proxied(uint32_t cls)
{
	if (_sm_refiller_wanted() || !_sm_refiller_running()) {
		_sm_refiller_want();
		if (_sm_refiller_wanted())
			_sm_refiller_start_slow();
	}
	for (int tries = 0; tries < 20000; tries++) {
		struct sm_node *node = global_take(cls);
		if (node) {
			_sm_refiller_kick(); /* not a handler: it may wake the thread */
			return node;
		}
		if (!_sm_refiller_running())
			return NULL;
		_sm_global_reserve_want(cls);
		_sm_refiller_kick();
		struct timespec nap = { 0, 50000 };
		nanosleep(&nap, NULL);
	}
	return NULL;
}

static void *alloc_uncached(struct sm_thread *t, uint32_t cls)
{
	if (_sm_base == SM_BASE_UNSET)
		return NULL;
	struct sm_node *first, *last;
	if (!_sm_backend_alloc_batch(cls, 1, &first, &last, SM_TCACHE_NONE))
		return t->no_jemalloc ? alloc_proxied(cls) : NULL;
	return first;
}

/* A thread past jemalloc's teardown allocates from the process-wide
 * reserve (alloc_proxied), which only the refill thread restocks: a hub
 * object it frees goes back there while the hub is short of its target,
 * so that its next allocation finds one without waiting for a restock
 * (tests/test-late-dtor.c: each destructor pass allocates every size to
 * 4 KiB). Anything else goes back to jemalloc, which frees by address. */
static void free_uncached(struct sm_thread *t, struct sm_node *node)
{
	if (t->no_jemalloc && global_give(node))
		return;
	node->next = NULL;
	_sm_backend_free_chain(node, SM_TCACHE_NONE);
}

/* ------------------------------------------------------------------------
 * Owner slow paths (depth 1)
 * ---------------------------------------------------------------------- */

static void *alloc_slow_body(struct sm_thread *t, uint32_t cls)
{
	maybe_start_refiller();
	struct sm_cache *c = t->cache;
	if (c == cache_empty()) {
		c = _sm_thread_setup();
		if (!c)
			return alloc_uncached(t, cls);
	}
	housekeeping(c);
	struct sm_bucket *b = &c->priv[cls];
	struct sm_bucket_slow *s = &c->slow[cls];
	const uint64_t misses_before = s->sync_misses;
	if (bucket_count(b) > 0) {
		/* Crossed the low watermark: ask the refill thread for a batch,
		 * once (low_mark stays disarmed until the next refill). */
		b->low_mark = 0;
		_sm_refiller_request(c, &c->refill_want, cls);
	} else {
		bucket_take_inbox(c, cls);
		struct sm_magazine *batch;
		if (bucket_count(b) == 0 && (batch = _sm_depot_get(cls)) != NULL) {
			/* A batch another thread trimmed: no jemalloc at all. */
			bucket_take_magazine(c, cls, batch);
		}
		if (bucket_count(b) == 0) {
			/* The refill thread is late or absent: a synchronous miss. The
			 * owner is provably not inside jemalloc (depth was 0).
			 * Straight into the slots: no object is touched. Slow start
			 * all the same: a class's first refills on a thread are
			 * small (about 2 KiB of objects, doubling up to `batch`),
			 * because what a bucket holds is memory no other thread can
			 * use: a thread that uses a class for one object should not
			 * hold 48 of them. xz -T2 touches all 28 classes, most for a
			 * handful of objects. */
			uint32_t want = s->refill_next < b->capacity ? s->refill_next : b->capacity;
			uint32_t n = _sm_backend_alloc_array(cls, want, b->slots, c->tcache);
			if (n == 0)
				return t->no_jemalloc ? alloc_proxied(cls) : NULL;
			_sm_slots_reverse(b->slots, n); /* the lowest address on top */
			poison_slots(b->slots, n);
			bucket_count_add(b, (int32_t)n);
			s->sync_misses++;
			s->objects_refilled += n;
			if (s->refill_next < b->batch)
				s->refill_next = 2 * s->refill_next < b->batch ? 2 * s->refill_next
				                                               : b->batch;
		}
		/* Re-arm the low watermark while a refill thread can answer it;
		 * already below it, ask at once, unless slow start is still
		 * growing the refills (the refill thread delivers whole batches). */
		b->low_mark = 0;
		if (_sm_refiller_running()) {
			if (bucket_count(b) > s->low_default)
				b->low_mark = s->low_default;
			else if (s->refill_next == b->batch)
				_sm_refiller_request(c, &c->refill_want, cls);
		}
		uint32_t bit = 1u << cls;
		if (!(c->used_mask & bit)) {
			/* First use of the class: give its handlers a stock (if
			 * the thread keeps stocks: stock_start). */
			c->used_mask |= bit;
			tls_or32(&t->stock_want, bit);
			stock_rebalance(t, c);
		}
	}
	uint32_t count = bucket_count(b);
	if (!count)
		return NULL; /* the restock took the last ones and jemalloc failed */
	void *node = b->slots[count - 1];
	sm_unpoison(node);
	/* Served from what the thread held (bucket, inbox or depot), without a
	 * call into jemalloc: a cache allocation all the same. */
	if (sm_config_stats && s->sync_misses == misses_before)
		b->tally += SM_TALLY_HIT;
	else
		bucket_count_add(b, -1);
	return node;
}

void *_sm_alloc_slow(uint32_t cls)
{
	struct sm_thread *t = &_sm_thread;
	void *p = alloc_slow_body(t, cls);
	sm_signal_fence();
	t->depth = 0;
	if (!p)
		errno = ENOMEM;
	return p;
}

void _sm_bucket_trim_to(struct sm_cache *c, uint32_t cls, uint32_t keep)
{
	struct sm_bucket *b = &c->priv[cls];
	if (bucket_count(b) <= keep)
		return;
	uint32_t n = bucket_count(b) - keep;
	/* The owner frees more than it keeps: jemalloc's fast free path
	 * (backend.c, free_flags). */
	_sm_backend_free_array(b->slots + keep, n, SM_TCACHE_THREAD);
	bucket_count_add(b, -(int32_t)n);
	c->slow[cls].objects_trimmed += n;
}

static void free_slow_body(struct sm_thread *t, struct sm_node *node, uint32_t cls)
{
	maybe_start_refiller();
	struct sm_cache *c = t->cache;
	if (c == cache_empty()) {
		c = _sm_thread_setup();
		if (!c) {
			free_uncached(t, node);
			return;
		}
	}
	housekeeping(c);
	struct sm_bucket *b = &c->priv[cls];
	if (sm_unlikely(bucket_count(b) >= b->capacity)) /* splices filled it */
		_sm_bucket_trim_to(c, cls, b->capacity - b->batch);
	b->slots[bucket_count(b)] = node;
	bucket_count_add(b, 1);
	sm_poison(node);
	if (bucket_count(b) <= b->high_mark)
		return; /* a fresh cache, or high_mark just grew */
	struct sm_bucket_slow *s = &c->slow[cls];
	if (b->high_mark < s->high_cap) {
		/* Slow start: this thread keeps more of this class live. */
		uint32_t grown = b->high_mark + b->batch;
		b->high_mark = grown < s->high_cap ? grown : s->high_cap;
		return;
	}
	/* Trim the top batch (the objects freed last), as a magazine: no
	 * object is written (magazine.c). count > high_mark > batch. */
	uint32_t n = b->batch;
	uint32_t keep = bucket_count(b) - n;
	void **top = b->slots + keep;
	if (_sm_depot_put(cls, top, n)) {
		bucket_count_add(b, -(int32_t)n);
		return; /* for the next thread that runs empty */
	}
	struct sm_bucket_shared *sh = &c->shared[cls];
	struct sm_magazine *m;
	if (_sm_refiller_running() &&
	    atomic_load_explicit(&sh->outbox_count, memory_order_relaxed) < (int32_t)s->high_cap &&
	    (m = _sm_magazine_fill(cls, top, n)) != NULL) {
		/* Hand the batch to the refill thread: jemalloc's work leaves
		 * this thread. Bounded: a thread that frees faster than the
		 * refill thread returns blocks to jemalloc (a wave of frees)
		 * does the rest itself. Without the bound, the outbox of a test
		 * freeing 100k blocks of 256 B per round grew to 98k blocks
		 * (+25 MB). */
		bucket_count_add(b, -(int32_t)n);
		atomic_fetch_add_explicit(&sh->outbox_count, (int32_t)n, memory_order_relaxed);
		list_push(&sh->outbox, &m->link);
		_sm_refiller_request(c, &c->trim_want, cls);
		return;
	}
	_sm_bucket_trim_to(c, cls, keep);
}

void _sm_free_slow(void *p, uint32_t cls)
{
	struct sm_thread *t = &_sm_thread;
	free_slow_body(t, p, cls);
	sm_signal_fence();
	t->depth = 0;
}

/* ------------------------------------------------------------------------
 * Large objects (depth 1; the caller enters and leaves)
 * ---------------------------------------------------------------------- */

static struct sm_cache *cache_for_large(struct sm_thread *t)
{
	struct sm_cache *c = t->cache;
	if (c == cache_empty())
		c = _sm_thread_setup(); /* NULL: no cache, or no sigmalloc at all */
	if (c)
		housekeeping(c);
	return c;
}

void *_sm_large_alloc(size_t size, size_t align, bool zero)
{
	struct sm_thread *t = &_sm_thread;
	struct sm_cache *c = cache_for_large(t);
	if (_sm_base == SM_BASE_UNSET)
		return NULL;
	uint32_t arena = c ? c->large_arena : _sm_backend_large_arena(0);
	void *p = _sm_backend_alloc_large(size, align, zero, arena, c ? c->tcache : SM_TCACHE_NONE);
	if (c && sm_config_stats)
		c->large_allocs++;
	return p;
}

void _sm_large_free(void *p)
{
	struct sm_thread *t = &_sm_thread;
	struct sm_cache *c = cache_for_large(t);
	_sm_backend_free_large(p, c ? c->tcache : SM_TCACHE_NONE);
	if (c && sm_config_stats)
		c->large_frees++;
}

void *_sm_large_realloc(void *p, size_t size)
{
	/* Still in the block's jemalloc size class: nothing to do, with one
	 * lookup instead of rallocx's whole path (append-style growth crosses
	 * a large size class, 4 per doubling, only every 12-25 %). sm_realloc
	 * has asked the map of large blocks already (a live block always has
	 * its word there); this asks jemalloc only where the map is missing. A
	 * shrink to a smaller class goes to rallocx, which gives the tail back. */
	if (!_sm_large_sizes && _sm_backend_same_large_class(p, size))
		return p;
	struct sm_thread *t = &_sm_thread;
	struct sm_cache *c = cache_for_large(t);
	uint32_t arena = c ? c->large_arena : _sm_backend_large_arena(0);
	return _sm_backend_realloc_large(p, size, arena, c ? c->tcache : SM_TCACHE_NONE);
}

void _sm_trim_thread(void)
{
	struct sm_thread *t = &_sm_thread;
	int tc = t->cache != cache_empty() ? t->cache->tcache : SM_TCACHE_NONE;
	_sm_deferred_drain(tc);
	if (t->cache != cache_empty()) {
		if (t->state == SM_THREAD_LIVE)
			stock_flush(t, t->cache);
		_sm_cache_flush(t->cache, tc);
	}
	_sm_depot_release_all(tc);
	if (_sm_base != SM_BASE_UNSET)
		_sm_backend_purge(tc);
}

/* ------------------------------------------------------------------------
 * Nested paths (depth >= 2): atomic lists only
 * ---------------------------------------------------------------------- */


/* The process-wide nested reserve, after the thread's own stock and the
 * cache's reserves: for the handlers of a thread whose first malloc is the
 * call they interrupted (it has no cache yet), of one that keeps no stock
 * yet (no handler in the process has allocated before), or whose stock ran
 * dry. Kept by hub (sizeclass.c): a request is served from its class's hub
 * or a larger one, so five lists serve the 28 classes. Each hub keeps
 * global_target objects (16 each of 16, 64, 256, 1024 and 4096 B with the
 * default reserve of 4: 85 KiB), stocked when the hub comes into
 * use, for every hub once a second thread starts, restocked by owner slow
 * paths and the refill thread. Several threads may take from it at once:
 * exchange-all is still ABA-free, and a taker that finds a list
 * momentarily empty (another holds it) tries the next hub. The counters are
 * per class; only the hubs' lists hold objects. */
static struct {
	_Atomic(struct sm_node *) list;
	_Atomic int32_t count;
	_Atomic uint64_t nested_allocs, nested_nulls; /* of threads without a cache */
} global_reserve[SM_NUM_CLASSES];
static _Atomic uint32_t global_want; //! bit per hub whose global reserve ran low

/* The same number of objects for every hub, the 4 KiB one included: it
 * serves the 8 classes from 1280 B up, most of what a handler's requests
 * of up to 4 KiB need, and with 4 of them tests/test-signal's cold start
 * (4 threads whose first malloc is interrupted) ran out: 15 of 32 runs
 * with SIGMALLOC_RESERVE=1 (1 object of 4 KiB), once in about ten CI runs
 * with the default. */
static uint32_t global_target(void)
{
	return _sm_options.reserve * 4;
}

static inline bool class_fits(uint32_t k, size_t align)
{
	return align <= 16 || _sm_class_size[k] % align == 0;
}

/* One object from the stock of class k: a slot, else `more`. A take asks
 * the owner's next slow path to look at the class (stock_rebalance tops it
 * up if it is short): one `or`, cheaper here than counting. A miss does
 * not: a class a handler only climbed through is not worth a stock (the
 * class that missed is marked by nested_take_slow). */
static inline struct sm_node *stock_take(struct sm_thread *t, uint32_t k)
{
	struct sm_stock *s = &t->stock[k];
	struct sm_node *node = tls_slots_take(&s->state, s->slot);
	if (!node) {
		node = tls_take_one(&s->more);
		if (!node)
			return NULL;
		tls_add32(&s->more_count, -1);
	}
	tls_or32(&t->stock_want, 1u << k);
	return node;
}

/* The classes a nested request of class cls may take from, in order: cls,
 * up to SM_NESTED_CLIMB larger ones, and its hub (where nested frees of the
 * hub objects that served cls land: sizeclass.c). Returns the next after
 * k, or SM_NUM_CLASSES when done. */
static inline uint32_t climb_next(uint32_t cls, uint32_t k)
{
	uint32_t hub = _sm_class_hub[cls];
	if (k < cls + SM_NESTED_CLIMB && k + 1 < SM_NUM_CLASSES)
		return k + 1;
	return k < hub ? hub : SM_NUM_CLASSES;
}

/* Everything but the common case: the class's stock was empty (or the
 * request is aligned, or the thread has no cache). Out of line, so that
 * the common case is a few cache lines of code (a handler runs them cold).
 * The stocks of larger classes first (this thread's own, no locked
 * instruction), then the cache's atomic reserves, then the process-wide
 * reserve. A thread that is not LIVE (no cache yet, or exiting) has an
 * empty stock and no cache to speak of: process-wide reserve only. */
static sm_noinline struct sm_node *nested_take_slow(struct sm_thread *t, uint32_t cls,
                                                    size_t align)
{
	struct sm_cache *c = t->cache;
	if (t->state == SM_THREAD_LIVE && c != cache_empty()) {
		tls_or32(&t->stock_want, 1u << cls); /* empty (or no fit): refill it */
		for (uint32_t k = cls; k < SM_NUM_CLASSES; k = climb_next(cls, k)) {
			if (!class_fits(k, align) || (k == cls && align <= 16))
				continue; /* cls itself was tried */
			struct sm_node *node = stock_take(t, k);
			if (node)
				return node;
		}
		for (uint32_t k = cls; k < SM_NUM_CLASSES; k = climb_next(cls, k)) {
			if (!class_fits(k, align))
				continue;
			struct sm_bucket_shared *sh = &c->shared[k];
			struct sm_node *node = list_take_one(&sh->reserve, &sh->reserve_count);
			if (node) { /* restock: the refill thread, or the owner */
				_sm_refiller_request_nested(c, &c->reserve_want, k);
				return node;
			}
		}
		/* Stock and reserve both dry: have the reserve stocked, for an
		 * owner that may run no slow path for a while. */
		_sm_refiller_request_nested(c, &c->reserve_want, cls);
	}
	struct sm_node *node = global_take(cls);
	if (node)
		return node;
	/* Handlers allocate in this process: every class gets a reserve. */
	_sm_global_reserve_want_all();
	_sm_refiller_note_nested();
	_sm_refiller_want();
	return NULL;
}

/* One object for class cls from the process-wide reserve: its hub's, or a
 * larger hub's (a hub is aligned to any alignment cls guarantees, so an
 * aligned request needs no check here); any context. */
static struct sm_node *global_take(uint32_t cls)
{
	for (uint32_t h = _sm_class_hub[cls];; h = _sm_class_hub[h + 1]) {
		struct sm_node *node = list_take_one(&global_reserve[h].list, &global_reserve[h].count);
		if (node) { /* restocked by the next owner slow path or refill tick */
			atomic_fetch_or_explicit(&global_want, 1u << h, memory_order_relaxed);
			_sm_refiller_note_nested();
			return node;
		}
		if (h == SM_NUM_CLASSES - 1)
			return NULL;
	}
}

/* Puts an object back into the process-wide reserve if it is a hub's
 * object (only those serve every class of their hub) and the hub holds
 * less than its target; any context (one push). */
static bool global_give(struct sm_node *node)
{
	uintptr_t h = slot_of(node);
	if (h >= SM_NUM_CLASSES || _sm_class_hub[h] != h ||
	    atomic_load_explicit(&global_reserve[h].count, memory_order_relaxed) >=
	            (int32_t)global_target())
		return false;
	atomic_fetch_add_explicit(&global_reserve[h].count, 1, memory_order_relaxed);
	list_push(&global_reserve[h].list, node);
	return true;
}

void _sm_global_reserve_restock(int tc)
{
	uint32_t want = atomic_exchange_explicit(&global_want, 0, memory_order_relaxed);
	while (want) {
		uint32_t hub = (uint32_t)__builtin_ctz(want);
		want &= want - 1;
		int32_t have = atomic_load_explicit(&global_reserve[hub].count, memory_order_relaxed);
		uint32_t target = global_target();
		if (have < 0)
			have = 0;
		if ((uint32_t)have >= target)
			continue;
		struct sm_node *first, *last;
		uint32_t got = _sm_backend_alloc_batch(hub, target - (uint32_t)have, &first, &last, tc);
		if (!got)
			continue;
		atomic_fetch_add_explicit(&global_reserve[hub].count, (int32_t)got,
		                          memory_order_relaxed);
		list_push_chain(&global_reserve[hub].list, first, last);
	}
}

/* A class came into use (an arena was created): stock the global reserve
 * of its hub on the next owner slow path or refill-thread pass. */
void _sm_global_reserve_want(uint32_t cls)
{
	atomic_fetch_or_explicit(&global_want, 1u << _sm_class_hub[cls], memory_order_relaxed);
}

void _sm_global_reserve_want_all(void)
{
	uint32_t hubs = 0;
	for (uint32_t cls = 0; cls < SM_NUM_CLASSES; cls++)
		hubs |= 1u << _sm_class_hub[cls];
	atomic_fetch_or_explicit(&global_want, hubs, memory_order_relaxed);
}

bool _sm_global_reserve_wanted(void)
{
	return atomic_load_explicit(&global_want, memory_order_relaxed) != 0;
}

void _sm_global_reserve_stats(uint32_t cls, uint64_t *allocs, uint64_t *nulls, int32_t *held)
{
	*allocs = atomic_load_explicit(&global_reserve[cls].nested_allocs, memory_order_relaxed);
	*nulls = atomic_load_explicit(&global_reserve[cls].nested_nulls, memory_order_relaxed);
	*held = atomic_load_explicit(&global_reserve[cls].count, memory_order_relaxed);
}

/* A statistics counter bumped by nested contexts without a thread cache
 * (or for the rare NULL): a relaxed load and store, no locked instruction.
 * A handler that interrupts another between the load and the store loses
 * one count, which statistics can afford; so may threads that share the
 * process-wide counters. The common counters are in TLS (tls_add64). */
static inline void stat_inc(_Atomic uint64_t *counter)
{
	atomic_store_explicit(counter, atomic_load_explicit(counter, memory_order_relaxed) + 1,
	                      memory_order_relaxed);
}

static void nested_count_other(struct sm_thread *t, uint32_t cls, bool null)
{
	if (t->state == SM_THREAD_LIVE && t->cache != cache_empty()) {
		stock_count(t, &t->stock[cls].nested_allocs, cls);
		if (null)
			stat_inc(&t->cache->shared[cls].nested_nulls);
		return;
	}
	stat_inc(&global_reserve[cls].nested_allocs);
	if (null)
		stat_inc(&global_reserve[cls].nested_nulls);
}

/* Every nested malloc but a slot of its own class: `more`, larger classes,
 * the reserves (nested_take_slow). */
static sm_noinline void *nested_alloc_slow(struct sm_thread *t, uint32_t cls, size_t align)
{
	if (sm_unlikely(!atomic_load_explicit(&nested_seen, memory_order_relaxed)))
		atomic_store_explicit(&nested_seen, 1, memory_order_relaxed);
	struct sm_node *node = NULL;
	if (align <= 16)
		node = stock_take(t, cls);
	if (!node)
		node = nested_take_slow(t, cls, align);
	if (sm_config_stats)
		nested_count_other(t, cls, node == NULL);
	sm_signal_fence();
	t->depth--;
	if (!node)
		errno = ENOMEM;
	return node;
}

/* The common case is a slot of the thread's own stock: TLS only, no locked
 * instruction, no line another thread writes, and not a read of the object
 * (tlslist.h). Everything else is out of line. */
void *_sm_nested_alloc(uint32_t cls, size_t align)
{
	struct sm_thread *t = &_sm_thread;
	void *node = nested_alloc_from_stock(t, cls, align); /* nested_stock.h */
	if (sm_likely(node != NULL))
		return node;
	return nested_alloc_slow(t, cls, align);
}

/* The most a stock's `more` list holds: 16 KiB of objects, at least 4 and
 * at most 64 (16 B: 64, 256 B: 64, 1 KiB: 16, 4 KiB: 4), at most about
 * 450 KiB per thread over all classes until its next slow path. */
static inline int32_t stock_more_max(uint32_t cls)
{
	uint32_t n = (16u << 10) / _sm_class_size[cls];
	return (int32_t)(n < 4 ? 4 : n > 64 ? 64 : n);
}

static sm_noinline void nested_free_slow(struct sm_thread *t, void *p, uint32_t cls)
{
	struct sm_stock *s = &t->stock[cls];
	if (t->state == SM_THREAD_LIVE && s->more_count < stock_more_max(cls)) {
		tls_push(&s->more, p);
		tls_add32(&s->more_count, 1);
		if (s->more_count > t->stock_more)
			tls_or32(&t->stock_want, 1u << cls);
	} else {
		/* No stock (not LIVE), or a full one: returned to jemalloc by
		 * the next owner slow path of any thread or the refill thread. */
		_sm_deferred_push(p);
	}
	if (sm_config_stats && t->state == SM_THREAD_LIVE) {
		stock_count(t, &s->nested_frees, cls);
	}
	sm_signal_fence();
	t->depth--;
}

/* Into the thread's stock, where its next nested malloc finds it: a slot,
 * else `more` (out of line); above the owner's share, its next slow path
 * takes the excess back. A thread that is not LIVE has no stock: the
 * deferred list. */
void _sm_nested_free(void *p, uint32_t cls)
{
	struct sm_thread *t = &_sm_thread;
	if (sm_unlikely(!nested_free_to_stock(t, p, cls))) /* nested_stock.h */
		nested_free_slow(t, p, cls);
}
