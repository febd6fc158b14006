/*
 * The refill thread: sigmalloc's irq_work (memalloc.c, bpf_mem_refill).
 *
 * One thread per process, named "sigmalloc-refill", every blockable signal
 * blocked, started on first need by an owner's slow path (never in a
 * constructor): when a second thread gets a cache, when a signal handler
 * takes from a nested reserve, or at init with SIGMALLOC_REFILL_THREAD=on.
 * A single-threaded program whose handlers never allocate never gets one
 * (its owner refills synchronously, which costs it nothing it can avoid).
 *
 * Who calls in:
 *   _sm_refiller_request   owner slow path: atomic ops and at most one
 *                          futex syscall. Never blocks.
 *   _sm_refiller_request_nested
 *                          nested context (signal handler): atomic ops,
 *                          and a futex wake only if the thread is in its
 *                          long (one second) sleep: a wake costs a handler
 *                          microseconds on a PTI machine, so handlers
 *                          leave the thread to find their requests on its
 *                          next tick. While handlers have asked for
 *                          anything within the last second, the thread
 *                          ticks every SM_TICK_MS, so a handler wakes it
 *                          at most once per quiet second. The owner's
 *                          next slow path restocks its own reserves first
 *                          (refill.c).
 *   _sm_refiller_maybe_start, _sm_refiller_adopt
 *                          owner at depth 1 / exiting thread.
 *   fork handlers          the forking thread (cache.c).
 *
 * Requests. An owner asks for work by setting a class bit in one of its
 * cache's masks (refill_want, trim_want, reserve_want), then queueing the
 * cache on the request list (an intrusive lock-less list; `queued` makes
 * sure a cache is on it at most once) and waking the thread if it sleeps.
 * The owner's low_mark is disarmed after a refill request, so there is one
 * request per crossing of the low watermark, and the futex syscall is off
 * the fast path entirely.
 *
 *   owner (depth 1)             refill thread (work_lock held)
 *   count <= low  --request-->  depot or jemalloc -> magazine -> push inbox
 *   count == 0: take inbox  <-----------------------'
 *   count at cap: magazine -> push depot (for another thread), or
 *                 push outbox --request--> take outbox -> jemalloc
 *   handler took reserve   --request-->  jemalloc -> push reserve
 *   thread exit: cache DEAD --queue-->   flush everything -> FREE
 *
 * The thread touches other caches only through their atomic lists, except
 * for DEAD caches, whose owner has switched to the sentinel and exited the
 * allocator for good: those are wholly the thread's until it marks them
 * FREE.
 *
 * Idle trimming. The thread ticks every SM_TICK_MS while any cache may hold
 * idle memory. An owner records the tick on each slow path; a cache quiet
 * for SIGMALLOC_IDLE_MS gets its inbox and outbox returned to jemalloc here,
 * and when the owner next runs it trims its private buckets to the low
 * watermarks itself (refill.c), so nothing ever races a private bucket.
 *
 * fork. work_lock is held across every step that calls jemalloc, and
 * fork_prepare takes it (after the registry lock, before jemalloc's own
 * prepare), so the thread is quiescent and holds no jemalloc lock when the
 * process forks. The child has no refill thread: its state is reset and
 * the thread restarts on the child's first need.
 */
#include <fcntl.h>
#include <linux/futex.h>
#include <pthread.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include "internal.h"
#include "lockless.h"

#define SM_TICK_MS 100u

enum { REFILLER_IDLE, REFILLER_STARTING, REFILLER_RUNNING, REFILLER_FAILED };

static _Atomic uint32_t refiller_state;     //! enum above
static _Atomic uint32_t refiller_wanted;    //! a need arose; start on next slow path
static _Atomic(struct sm_node *) requests;  //! caches with work, via request_link
/* The futex word: the thread stores SLEEP_TICK or SLEEP_LONG before its
 * last look for work and waits on that value; a waker exchanges it to 0. */
enum { AWAKE = 0, SLEEP_TICK = 1, SLEEP_LONG = 2 };
static _Atomic uint32_t sleeping;
static _Atomic uint32_t nested_asked;       //! a handler asked since the thread last looked
static pthread_mutex_t work_lock = PTHREAD_MUTEX_INITIALIZER;
static int refiller_tc = SM_TCACHE_NONE;    //! the thread's explicit jemalloc tcache
_Atomic uint64_t _sm_tick;                  //! coarse clock, written by the thread

static inline struct sm_cache *cache_of_link(struct sm_node *link)
{
	return (struct sm_cache *)((char *)link - offsetof(struct sm_cache, request_link));
}

bool _sm_refiller_running(void)
{
	return atomic_load_explicit(&refiller_state, memory_order_relaxed) == REFILLER_RUNNING;
}

void _sm_refiller_want(void)
{
	if (_sm_options.refill_thread != 0)
		atomic_store_explicit(&refiller_wanted, 1, memory_order_relaxed);
}

static void futex_wake(_Atomic uint32_t *word)
{
	int saved = errno;
	syscall(SYS_futex, word, FUTEX_WAKE_PRIVATE, 1, NULL, NULL, 0);
	errno = saved;
}

void _sm_refiller_kick(void)
{
	/* seq_cst pairs with the thread's store to `sleeping` before its last
	 * look for work: either it sees our work or we see it asleep. */
	atomic_thread_fence(memory_order_seq_cst);
	if (atomic_load_explicit(&sleeping, memory_order_relaxed) &&
	    atomic_exchange_explicit(&sleeping, 0, memory_order_relaxed))
		futex_wake(&sleeping);
}

/* Puts c on the request list, at most once (`queued`); wakes nobody. Any
 * context: one exchange and a lock-less push. */
static void enqueue_cache(struct sm_cache *c)
{
	if (atomic_exchange_explicit(&c->queued, 1, memory_order_seq_cst) == 0)
		list_push(&requests, &c->request_link);
}

/* Queues c and wakes the thread if it sleeps. */
static void queue_cache(struct sm_cache *c)
{
	enqueue_cache(c);
	_sm_refiller_kick();
}

/* Sets bit cls in *mask and queues c; false when no thread runs yet (then
 * it is wanted, and it queues every cache with a bit set when it starts). */
static bool mark_and_enqueue(struct sm_cache *c, _Atomic uint32_t *mask, uint32_t cls)
{
	atomic_fetch_or_explicit(mask, 1u << cls, memory_order_relaxed);
	if (!_sm_refiller_running()) {
		_sm_refiller_want();
		return false;
	}
	enqueue_cache(c);
	return true;
}

void _sm_refiller_request(struct sm_cache *c, _Atomic uint32_t *mask, uint32_t cls)
{
	if (mark_and_enqueue(c, mask, cls))
		_sm_refiller_kick();
}

/* A signal handler took from a reserve. The thread ticks while handlers
 * ask, so it finds their requests on its own; only from its long sleep is
 * it woken (seq_cst: pairs with the thread's store of SLEEP_LONG before
 * its last look for work, like _sm_refiller_kick). */
void _sm_refiller_note_nested(void)
{
	if (!atomic_load_explicit(&nested_asked, memory_order_relaxed))
		atomic_store_explicit(&nested_asked, 1, memory_order_relaxed);
	atomic_thread_fence(memory_order_seq_cst);
	uint32_t long_sleep = SLEEP_LONG;
	if (atomic_load_explicit(&sleeping, memory_order_relaxed) == SLEEP_LONG &&
	    atomic_compare_exchange_strong_explicit(&sleeping, &long_sleep, AWAKE,
	                                            memory_order_relaxed, memory_order_relaxed))
		futex_wake(&sleeping);
}

void _sm_refiller_request_nested(struct sm_cache *c, _Atomic uint32_t *mask, uint32_t cls)
{
	if (mark_and_enqueue(c, mask, cls))
		_sm_refiller_note_nested();
}

/* ------------------------------------------------------------------------
 * The work, always under work_lock
 * ---------------------------------------------------------------------- */

static void serve_refills(struct sm_cache *c)
{
	uint32_t want = atomic_exchange_explicit(&c->refill_want, 0, memory_order_acquire);
	while (want) {
		uint32_t cls = (uint32_t)__builtin_ctz(want);
		want &= want - 1;
		struct sm_bucket_shared *sh = &c->shared[cls];
		uint32_t low, high, batch, cap; /* not the owner's field: its own to write */
		_sm_class_watermarks(cls, &low, &high, &batch, &cap);
		if (atomic_load_explicit(&sh->inbox_count, memory_order_relaxed) >= (int32_t)batch)
			continue; /* the last delivery is still there */
		/* Another thread's trimmed batch, else a new one from jemalloc,
		 * straight into a magazine's array: the objects are not touched
		 * here (magazine.c). */
		struct sm_magazine *m = _sm_depot_get(cls);
		uint32_t from_jemalloc = 0; /* objects_refilled: only what jemalloc gave */
		if (!m) {
			m = _sm_magazine_new(cls);
			if (!m)
				continue;
			m->n = _sm_backend_alloc_array(cls, batch, m->objs, refiller_tc);
			if (!m->n) {
				_sm_magazine_retire(m);
				continue;
			}
			_sm_slots_reverse(m->objs, m->n); /* the lowest address handed out first */
			from_jemalloc = m->n;
		}
		uint32_t n = m->n;
		atomic_fetch_add_explicit(&sh->inbox_count, (int32_t)n, memory_order_relaxed);
		list_push(&sh->inbox, &m->link);
		atomic_fetch_add_explicit(&sh->async_refills, 1, memory_order_relaxed);
		atomic_fetch_add_explicit(&sh->async_objects_refilled, from_jemalloc,
		                          memory_order_relaxed);
	}
}

static void serve_trims(struct sm_cache *c)
{
	uint32_t want = atomic_exchange_explicit(&c->trim_want, 0, memory_order_acquire);
	while (want) {
		uint32_t cls = (uint32_t)__builtin_ctz(want);
		want &= want - 1;
		struct sm_bucket_shared *sh = &c->shared[cls];
		uint32_t n = _sm_magazine_list_release(&sh->outbox, &sh->outbox_count, refiller_tc);
		if (!n)
			continue;
		atomic_fetch_add_explicit(&sh->async_trims, 1, memory_order_relaxed);
		atomic_fetch_add_explicit(&sh->async_objects_trimmed, n, memory_order_relaxed);
	}
}

/* A quiet cache: give back what waits in its atomic lists (the reserve
 * stays: it is what its signal handlers rely on). */
static void reclaim_idle(struct sm_cache *c)
{
	for (uint32_t cls = 0; cls < SM_NUM_CLASSES; cls++) {
		struct sm_bucket_shared *sh = &c->shared[cls];
		uint32_t n = _sm_magazine_list_release(&sh->inbox, &sh->inbox_count, refiller_tc) +
		             _sm_magazine_list_release(&sh->outbox, &sh->outbox_count, refiller_tc);
		if (n)
			atomic_fetch_add_explicit(&sh->async_objects_trimmed, n, memory_order_relaxed);
	}
	atomic_store_explicit(&c->idle_reclaimed, 1, memory_order_relaxed);
}

static void serve_cache(struct sm_cache *c)
{
	/* seq_cst with adopt(): either it sees queued == 0 and queues the
	 * cache again, or this load sees DEAD. */
	atomic_store_explicit(&c->queued, 0, memory_order_seq_cst);
	uint32_t dead = SM_CACHE_DEAD;
	if (atomic_compare_exchange_strong(&c->state, &dead, SM_CACHE_FLUSHING)) {
		/* Its owner has exited the allocator for good, and no new thread
		 * claimed it: all of it is ours, including the objects its
		 * explicit jemalloc tcache holds. */
		_sm_cache_flush(c, refiller_tc);
		_sm_backend_tcache_flush(c->tcache);
		atomic_store_explicit(&c->refill_want, 0, memory_order_relaxed);
		atomic_store_explicit(&c->trim_want, 0, memory_order_relaxed);
		atomic_store_explicit(&c->state, SM_CACHE_FREE, memory_order_release);
		return;
	}
	serve_trims(c);
	serve_refills(c);
	_sm_reserve_restock(c, false, refiller_tc);
}

/* One pass over the request list; returns whether there was anything. */
static bool serve_requests(void)
{
	struct sm_node *link = list_take_all(&requests);
	if (!link)
		return false;
	while (link) {
		struct sm_node *next = link->next;
		serve_cache(cache_of_link(link));
		link = next;
	}
	return true;
}

/* Returns whether some cache still may hold idle memory (keep ticking). */
static bool idle_scan(uint64_t now)
{
	uint64_t idle_ticks = _sm_options.idle_ms / SM_TICK_MS;
	if (idle_ticks == 0)
		idle_ticks = 1;
	bool pending = false;
	for (struct sm_cache *c = _sm_registry_first(); c; c = c->next_all) {
		if (atomic_load_explicit(&c->state, memory_order_relaxed) != SM_CACHE_LIVE ||
		    atomic_load_explicit(&c->idle_reclaimed, memory_order_relaxed))
			continue;
		uint64_t last = atomic_load_explicit(&c->last_tick, memory_order_relaxed);
		if (now - last >= idle_ticks)
			reclaim_idle(c);
		else
			pending = true;
	}
	return pending;
}

/*
 * Whether every other thread of the process has exited. With glibc alone
 * the process would then have ended (the last thread's exit is exit(0));
 * the refill thread must not keep it alive. A thread that called
 * pthread_exit stays a zombie task until the group ends, so live tasks are
 * counted from /proc/self/task/ANY/stat, state not 'Z' or 'X'. Raw
 * getdents64 and read into stack buffers: this thread must not allocate.
 */
static bool alone(void)
{
	int dir = open("/proc/self/task", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (dir < 0)
		return false;
	char buf[4096];
	int live = 0;
	long n;
	while (live <= 1 && (n = syscall(SYS_getdents64, dir, buf, sizeof buf)) > 0) {
		for (long off = 0; off < n;) {
			struct linux_dirent64 {
				uint64_t ino;
				int64_t off;
				unsigned short reclen;
				unsigned char type;
				char name[];
			} *d = (void *)(buf + off);
			off += d->reclen;
			if (d->name[0] < '0' || d->name[0] > '9')
				continue;
			char path[64], stat[512];
			_sm_format(path, sizeof path, "/proc/self/task/%s/stat", d->name);
			int fd = open(path, O_RDONLY | O_CLOEXEC);
			if (fd < 0)
				continue; /* gone meanwhile */
			ssize_t len = read(fd, stat, sizeof stat - 1);
			close(fd);
			if (len <= 0)
				continue;
			stat[len] = '\0';
			/* "tid (comm) S ...": the state follows the last ')'. */
			char *p = NULL;
			for (char *q = stat; *q; q++)
				if (*q == ')')
					p = q;
			if (p && p[1] == ' ' && p[2] != 'Z' && p[2] != 'X')
				live++;
		}
	}
	close(dir);
	return live == 1;
}

static uint64_t now_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

static void *refiller_main(void *arg)
{
	(void)arg;
	/* This thread never allocates for itself; if anything it calls did,
	 * it would get no cache (DEAD), straight to jemalloc. */
	_sm_thread.state = SM_THREAD_DEAD;
	prctl(PR_SET_NAME, "sigmalloc-refill", 0, 0, 0); /* this thread's comm */
	pthread_mutex_lock(&work_lock);
	refiller_tc = _sm_backend_tcache_create();
	pthread_mutex_unlock(&work_lock);
	/* Requests made before the thread ran (while it was STARTING, callers
	 * only set their mask bits, _sm_refiller_request) are on no list:
	 * queue every cache that has one. The registry only grows, and its
	 * links are written once: safe to walk without the lock. */
	for (struct sm_cache *c = _sm_registry_first(); c; c = c->next_all)
		if (atomic_load_explicit(&c->refill_want, memory_order_relaxed) |
		    atomic_load_explicit(&c->trim_want, memory_order_relaxed) |
		    atomic_load_explicit(&c->reserve_want, memory_order_relaxed))
			enqueue_cache(c);
	uint64_t last_tick_ms = now_ms(), last_alone_ms = last_tick_ms, last_nested_ms = 0;
	bool ticking = true;
	for (;;) {
		pthread_mutex_lock(&work_lock);
		serve_requests();
		if (atomic_load_explicit(&_sm_deferred_head, memory_order_relaxed))
			_sm_deferred_drain(refiller_tc);
		if (_sm_global_reserve_wanted())
			_sm_global_reserve_restock(refiller_tc);
		uint64_t ms = now_ms();
		if (ms - last_tick_ms >= SM_TICK_MS) {
			last_tick_ms = ms;
			uint64_t tick = atomic_fetch_add_explicit(&_sm_tick, 1, memory_order_relaxed) + 1;
			ticking = idle_scan(tick);
			uint64_t idle_ticks = _sm_options.idle_ms / SM_TICK_MS;
			_sm_depot_release_idle(tick, idle_ticks ? idle_ticks : 1, refiller_tc);
			_sm_pool_trim_idle(ms, _sm_options.decay_ms);
		}
		pthread_mutex_unlock(&work_lock);

		/* Waiting a tick while some cache may go idle or handlers asked
		 * within the last second, else a second: a quiet process is not
		 * woken ten times a second for nothing. At most once a second,
		 * after a quiet wait, the thread looks whether it is the last one. */
		uint64_t now = now_ms();
		if (atomic_exchange_explicit(&nested_asked, 0, memory_order_relaxed))
			last_nested_ms = now;
		bool short_wait = ticking || now - last_nested_ms < 1000;
		uint32_t how = short_wait ? SLEEP_TICK : SLEEP_LONG;
		atomic_store_explicit(&sleeping, how, memory_order_seq_cst);
		if (atomic_load_explicit(&requests, memory_order_seq_cst) ||
		    atomic_load_explicit(&_sm_deferred_head, memory_order_relaxed) ||
		    _sm_global_reserve_wanted()) {
			atomic_store_explicit(&sleeping, 0, memory_order_relaxed);
			continue;
		}
		struct timespec tick = { 0, (long)SM_TICK_MS * 1000000L }, second = { 1, 0 };
		long rc = syscall(SYS_futex, &sleeping, FUTEX_WAIT_PRIVATE, how,
		                  short_wait ? &tick : &second, NULL, 0);
		atomic_store_explicit(&sleeping, 0, memory_order_relaxed);
		if (!ticking && rc != 0 && now_ms() - last_alone_ms >= 1000) {
			last_alone_ms = now_ms();
			if (alone())
				break; /* glibc ends the process when this last thread exits */
		}
		ticking = true;
	}
	return NULL;
}

/* Called at the top of an owner slow path (depth 1, no list touched yet). */
void _sm_refiller_start_slow(void)
{
	uint32_t expected = REFILLER_IDLE;
	if (!atomic_compare_exchange_strong(&refiller_state, &expected, REFILLER_STARTING))
		return;
	struct sm_thread *t = &_sm_thread;
	/* pthread_create allocates (its TLS and DTV): let it, at depth 0. */
	sm_signal_fence();
	t->depth = 0;
	sigset_t all, old;
	sigfillset(&all);
	pthread_sigmask(SIG_SETMASK, &all, &old); /* inherited by the new thread */
	pthread_attr_t attr;
	pthread_attr_init(&attr);
	pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
	pthread_attr_setstacksize(&attr, 256 * 1024);
	pthread_t tid;
	int rc = pthread_create(&tid, &attr, refiller_main, NULL);
	pthread_attr_destroy(&attr);
	pthread_sigmask(SIG_SETMASK, &old, NULL);
	t->depth = 1;
	sm_signal_fence();
	atomic_store(&refiller_state, rc == 0 ? REFILLER_RUNNING : REFILLER_FAILED);
	if (rc != 0)
		_sm_message("sigmalloc: cannot start the refill thread (error %d); "
		            "caches refill synchronously\n", rc);
}

bool _sm_refiller_wanted(void)
{
	return atomic_load_explicit(&refiller_wanted, memory_order_relaxed) &&
	       atomic_load_explicit(&refiller_state, memory_order_relaxed) == REFILLER_IDLE;
}

bool _sm_refiller_adopt(struct sm_cache *c)
{
	if (!_sm_refiller_running())
		return false;
	atomic_store_explicit(&c->state, SM_CACHE_DEAD, memory_order_seq_cst);
	queue_cache(c);
	return true;
}

void _sm_refiller_barrier(void)
{
	pthread_mutex_lock(&work_lock);
	pthread_mutex_unlock(&work_lock);
}

void _sm_refiller_fork_prepare(void)
{
	pthread_mutex_lock(&work_lock);
}

void _sm_refiller_fork_parent(void)
{
	pthread_mutex_unlock(&work_lock);
}

/* The child: no refill thread, and no request list (other threads may have
 * been half way through a push). The forking thread's own requests are
 * dropped; its low marks re-arm on its next refill. */
void _sm_refiller_fork_child(struct sm_cache *mine)
{
	pthread_mutex_init(&work_lock, NULL);
	atomic_store(&requests, NULL);
	atomic_store(&sleeping, 0);
	atomic_store(&refiller_wanted, 0);
	atomic_store(&refiller_state, REFILLER_IDLE);
	if (mine) {
		atomic_store(&mine->queued, 0);
		atomic_store(&mine->refill_want, 0);
		atomic_store(&mine->trim_want, 0);
		/* A trimmed batch waiting for the thread goes back to the owner. */
		for (uint32_t cls = 0; cls < SM_NUM_CLASSES; cls++) {
			struct sm_bucket_shared *sh = &mine->shared[cls];
			struct sm_node *chain = list_take_all(&sh->outbox);
			if (chain) {
				struct sm_node *last;
				uint32_t n = _sm_magazines_count(chain, &last);
				/* Onto the inbox, which the owner drains when the
				 * bucket runs empty and idle reclaim covers. */
				atomic_fetch_sub(&sh->outbox_count, (int32_t)n);
				atomic_fetch_add(&sh->inbox_count, (int32_t)n);
				list_push_chain(&sh->inbox, chain, last);
			}
		}
	}
}
