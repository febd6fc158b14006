/*
 * Allocation workloads for the sigmalloc benchmarks; see workloads.h.
 *
 * Built with -fno-builtin-{malloc,calloc,realloc,free}: every call below
 * is a real call into whichever allocator the process runs with.
 */
#define _GNU_SOURCE
#include "workloads.h"

#include <errno.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <sys/syscall.h>

/* Makes p (and the memory it points to) visible to the outside world, so
 * that no malloc/free pair can be optimised away. */
static inline void escape(void *p)
{
	__asm__ volatile("" : : "r"(p) : "memory");
}

static inline void cpu_relax(void)
{
#if defined(__x86_64__) || defined(__i386__)
	__builtin_ia32_pause();
#else
	__asm__ volatile("" ::: "memory");
#endif
}

/* Spin a little, then give the core away: on a 2-core machine shared with
 * other work a pure spin can burn whole time slices while the other side
 * of the ring is not running. */
static inline void backoff(unsigned *spins)
{
	if (++*spins < 256) {
		cpu_relax();
	} else {
		*spins = 0;
		sched_yield();
	}
}

static void die(const char *msg)
{
	/* write(2), not stdio: may run after heap corruption. */
	ssize_t r = write(2, msg, strlen(msg));
	(void)r;
	_exit(2);
}

/* ------------------------------------------------------------------------
 * Pairs, calloc, batches
 * ---------------------------------------------------------------------- */

uint64_t wl_pairs(size_t size, uint64_t n)
{
	uint64_t sum = 0;
	for (uint64_t i = 0; i < n; i++) {
		char *p = malloc(size);
		escape(p);
		p[0] = (char)i;
		sum += (uintptr_t)p >> 4;
		free(p);
	}
	return sum;
}

uint64_t wl_calloc_pairs(size_t size, uint64_t n)
{
	uint64_t sum = 0;
	for (uint64_t i = 0; i < n; i++) {
		char *p = calloc(1, size);
		escape(p);
		sum += (uint64_t)p[size - 1];
		free(p);
	}
	return sum;
}

uint64_t wl_batch_lifo(void **slots, size_t count, size_t size)
{
	for (size_t i = 0; i < count; i++) {
		char *p = malloc(size);
		escape(p);
		p[0] = (char)i;
		slots[i] = p;
	}
	for (size_t i = count; i-- > 0;)
		free(slots[i]);
	return count;
}

uint64_t wl_batch_fifo(void **slots, size_t count, size_t size)
{
	for (size_t i = 0; i < count; i++) {
		char *p = malloc(size);
		escape(p);
		p[0] = (char)i;
		slots[i] = p;
	}
	for (size_t i = 0; i < count; i++)
		free(slots[i]);
	return count;
}

/* ------------------------------------------------------------------------
 * Churn
 * ---------------------------------------------------------------------- */

static inline uint64_t splitmix(uint64_t *s)
{
	uint64_t z = (*s += 0x9e3779b97f4a7c15ull);
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
	return z ^ (z >> 31);
}

static inline uint32_t churn_size(uint64_t r)
{
	return WL_CHURN_MIN + (uint32_t)(r % (WL_CHURN_MAX - WL_CHURN_MIN + 1));
}

static inline void tag_block(unsigned char *p, uint32_t size, uint8_t tag, int check)
{
	p[0] = tag;
	if (check)
		p[size - 1] = tag;
}

int wl_churn_init(struct wl_churn *c, uint32_t slots, uint64_t seed, int check)
{
	memset(c, 0, sizeof *c);
	if (slots == 0 || (slots & (slots - 1)) || slots > (1u << 20))
		return -1;
	c->slots = slots;
	c->plan_len = 1u << 16;
	c->check = (uint8_t)(check != 0);
	c->tag = (uint8_t)(0x5a ^ seed);
	c->live = malloc(sizeof(void *) * slots);
	c->size = malloc(sizeof(uint16_t) * slots);
	c->plan = malloc(sizeof(uint32_t) * c->plan_len);
	if (!c->live || !c->size || !c->plan)
		return -1;
	uint64_t s = seed * 0x2545f4914f6cdd1dull + 1;
	for (uint32_t i = 0; i < c->plan_len; i++) {
		uint32_t slot = (uint32_t)(splitmix(&s) & (slots - 1));
		c->plan[i] = slot << 11 | churn_size(splitmix(&s));
	}
	for (uint32_t i = 0; i < slots; i++) {
		uint32_t sz = churn_size(splitmix(&s));
		unsigned char *p = malloc(sz);
		if (!p)
			return -1;
		tag_block(p, sz, c->tag, c->check);
		c->live[i] = p;
		c->size[i] = (uint16_t)sz;
	}
	return 0;
}

uint64_t wl_churn_run(struct wl_churn *c, uint64_t n)
{
	uint32_t pos = c->pos, pmask = c->plan_len - 1;
	const uint32_t *plan = c->plan;
	void **live = c->live;
	uint16_t *size = c->size;
	uint8_t tag = c->tag;
	for (uint64_t i = 0; i < n; i++) {
		uint32_t e = plan[pos++ & pmask];
		uint32_t slot = e >> 11, sz = e & 0x7ff;
		unsigned char *old = live[slot];
		if (c->check) {
			uint32_t osz = size[slot];
			if (old[0] != tag || old[osz - 1] != tag)
				c->corrupt++;
		}
		free(old);
		unsigned char *p = malloc(sz);
		if (!p)
			die("workloads: malloc returned NULL in the churn\n");
		escape(p);
		tag_block(p, sz, tag, c->check);
		live[slot] = p;
		size[slot] = (uint16_t)sz;
	}
	c->pos = pos;
	return n;
}

void wl_churn_fini(struct wl_churn *c)
{
	if (c->live)
		for (uint32_t i = 0; i < c->slots; i++)
			free(c->live[i]);
	free(c->live);
	free(c->size);
	free(c->plan);
	c->live = NULL;
	c->size = NULL;
	c->plan = NULL;
}

/* ------------------------------------------------------------------------
 * Producer / consumer through an SPSC ring
 * ---------------------------------------------------------------------- */

struct wl_ring {
	_Alignas(64) _Atomic uint64_t head; /* written by the producer */
	_Alignas(64) _Atomic uint64_t tail; /* written by the consumer */
	_Alignas(64) _Atomic int stop;
	uint32_t mask;
	void **buf;
	pthread_t thread;
};

static void *consumer_main(void *arg)
{
	struct wl_ring *r = arg;
	uint64_t tail = atomic_load_explicit(&r->tail, memory_order_relaxed);
	unsigned spins = 0;
	for (;;) {
		uint64_t head = atomic_load_explicit(&r->head, memory_order_acquire);
		if (head == tail) {
			if (atomic_load_explicit(&r->stop, memory_order_acquire))
				break;
			backoff(&spins);
			continue;
		}
		spins = 0;
		while (tail != head) {
			free(r->buf[tail & r->mask]);
			tail++;
		}
		atomic_store_explicit(&r->tail, tail, memory_order_release);
	}
	return NULL;
}

struct wl_ring *wl_prodcons_start(uint32_t capacity)
{
	if (capacity == 0 || (capacity & (capacity - 1)))
		return NULL;
	struct wl_ring *r;
	if (posix_memalign((void **)&r, 64, sizeof *r) != 0)
		return NULL;
	memset(r, 0, sizeof *r);
	r->mask = capacity - 1;
	r->buf = calloc(capacity, sizeof(void *));
	if (!r->buf || pthread_create(&r->thread, NULL, consumer_main, r) != 0) {
		free(r->buf);
		free(r);
		return NULL;
	}
	return r;
}

uint64_t wl_prodcons_run(struct wl_ring *r, size_t size, uint64_t n)
{
	uint64_t head = atomic_load_explicit(&r->head, memory_order_relaxed);
	uint64_t tail = atomic_load_explicit(&r->tail, memory_order_acquire);
	uint64_t cap = (uint64_t)r->mask + 1;
	unsigned spins = 0;
	for (uint64_t i = 0; i < n; i++) {
		char *p = malloc(size);
		if (!p)
			die("workloads: malloc returned NULL in the producer\n");
		escape(p);
		p[0] = (char)i;
		while (head - tail == cap) {
			backoff(&spins);
			tail = atomic_load_explicit(&r->tail, memory_order_acquire);
		}
		r->buf[head & r->mask] = p;
		head++;
		/* Publish every 16 blocks (and at the end): fewer cache-line
		 * transfers, as a real queue with batching would do. */
		if ((head & 15) == 0)
			atomic_store_explicit(&r->head, head, memory_order_release);
	}
	atomic_store_explicit(&r->head, head, memory_order_release);
	while (atomic_load_explicit(&r->tail, memory_order_acquire) != head)
		backoff(&spins);
	return n;
}

void wl_prodcons_stop(struct wl_ring *r)
{
	if (!r)
		return;
	atomic_store_explicit(&r->stop, 1, memory_order_release);
	pthread_join(r->thread, NULL);
	free(r->buf);
	free(r);
}

/* ------------------------------------------------------------------------
 * realloc growth
 * ---------------------------------------------------------------------- */

uint64_t wl_realloc_growth(size_t max_size, unsigned num, unsigned den)
{
	size_t size = 16;
	char *p = malloc(size);
	if (!p)
		die("workloads: malloc returned NULL\n");
	p[0] = 1;
	uint64_t calls = 0;
	while (size < max_size) {
		size_t next = den ? ((size * num / den) + 15) & ~(size_t)15 : size + num;
		if (next > max_size)
			next = max_size;
		char *q = realloc(p, next);
		if (!q)
			die("workloads: realloc returned NULL\n");
		escape(q);
		q[next - 1] = (char)calls;
		p = q;
		size = next;
		calls++;
	}
	free(p);
	return calls;
}

/* ------------------------------------------------------------------------
 * SIGPROF handler latency
 * ---------------------------------------------------------------------- */

#define SIG_CAP (1u << 20)
static uint32_t sig_samples[SIG_CAP]; /* ns per handler malloc+free */
static uint32_t sig_empty[SIG_CAP];   /* ns of an empty timing, same handler */
static uint32_t sig_pool_samples[SIG_CAP]; /* ns per pool pop + push */
static volatile uint32_t sig_pool_n;
/* The floor: a stack of preallocated blocks that the handler pops and
 * pushes, as an agent's own pool would (no allocator call at all). */
#define SIG_POOL 64
static void *sig_pool[SIG_POOL];
static uint32_t sig_pool_top;
static uint32_t sig_turn;
static volatile uint32_t sig_n;
static volatile uint64_t sig_nulls;
static uint64_t sig_rng = 0x1234567;
static timer_t sig_timer;
static int sig_timer_live;

static inline uint64_t now_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static inline void record(uint32_t *arr, volatile uint32_t *count, uint64_t d)
{
	uint32_t n = *count;
	if (n < SIG_CAP) {
		arr[n] = d > UINT32_MAX ? UINT32_MAX : (uint32_t)d;
		*count = n + 1;
	}
}

/* Waits until the handler's own stores so far are done. Each timed window
 * starts after one: a clock read (the vDSO's) waits for earlier stores
 * that miss, so without it the free's window included the stores into
 * the block just allocated, which are not timed (docs/PERFORMANCE.md,
 * "Session 16": a pair of clock reads right after them had p99 80-320 ns,
 * against 20-30 at p50). */
static inline void drain_stores(void)
{
	__atomic_thread_fence(__ATOMIC_SEQ_CST);
}

/* Every other signal times the allocator, the others the pool floor, so
 * that both run first thing in the handler, with the same cold caches and
 * TLB (this machine's kernel entry and exit flush the TLB: PTI, no PCID). */
static void prof_handler(int sig)
{
	(void)sig;
	int saved = errno;
	/* A small block, 16..256 B, as a profiler's sample record would be. */
	uint32_t size = 16 + (uint32_t)(splitmix(&sig_rng) % 241);
	unsigned char *p;
	uint64_t t0, t1, t2, t3;
	/* Timed: the allocation and the free; not timed: our writes into the
	 * block (not allocator work). */
	drain_stores();
	if (sig_turn++ & 1) {
		t0 = now_ns();
		p = sig_pool_top ? sig_pool[--sig_pool_top] : NULL;
		t1 = now_ns();
		p[0] = 0xa5;
		p[size - 1] = 0xa5;
		drain_stores();
		t2 = now_ns();
		sig_pool[sig_pool_top++] = p;
		t3 = now_ns();
		record(sig_pool_samples, &sig_pool_n, (t1 - t0) + (t3 - t2));
	} else {
		/* Baseline: the same four clock reads around nothing. */
		uint64_t e0 = now_ns();
		uint64_t e1 = now_ns();
		uint64_t e2 = now_ns();
		uint64_t e3 = now_ns();
		t0 = now_ns();
		p = malloc(size);
		t1 = now_ns();
		t2 = t3 = t1;
		if (p) {
			escape(p);
			p[0] = 0xa5; /* never the churn's tag: an overlap shows up */
			p[size - 1] = 0xa5;
			drain_stores();
			t2 = now_ns();
			free(p);
			t3 = now_ns();
		} else {
			sig_nulls = sig_nulls + 1;
		}
		uint32_t n = sig_n;
		if (n < SIG_CAP)
			sig_empty[n] = (uint32_t)((e1 - e0) + (e3 - e2));
		record(sig_samples, &sig_n, (t1 - t0) + (t3 - t2));
	}
	errno = saved;
}

int wl_sig_arm(unsigned period_us)
{
	sig_n = 0;
	sig_pool_n = 0;
	sig_nulls = 0;
	sig_turn = 0;
	while (sig_pool_top < SIG_POOL) {
		void *p = malloc(256);
		if (!p)
			return -1;
		sig_pool[sig_pool_top++] = p;
	}
	struct sigaction sa;
	memset(&sa, 0, sizeof sa);
	sa.sa_handler = prof_handler;
	sa.sa_flags = SA_RESTART;
	sigemptyset(&sa.sa_mask);
	if (sigaction(SIGPROF, &sa, NULL) != 0)
		return -1;
	struct sigevent sev;
	memset(&sev, 0, sizeof sev);
	sev.sigev_notify = SIGEV_THREAD_ID;
	sev.sigev_signo = SIGPROF;
	sev._sigev_un._tid = (pid_t)syscall(SYS_gettid);
	if (timer_create(CLOCK_MONOTONIC, &sev, &sig_timer) != 0)
		return -1;
	sig_timer_live = 1;
	struct itimerspec its;
	memset(&its, 0, sizeof its);
	its.it_interval.tv_nsec = (long)period_us * 1000;
	its.it_value.tv_nsec = (long)period_us * 1000;
	return timer_settime(sig_timer, 0, &its, NULL);
}

void wl_sig_disarm(void)
{
	if (sig_timer_live) {
		timer_delete(sig_timer);
		sig_timer_live = 0;
	}
	/* A SIGPROF still pending must not kill the process. */
	signal(SIGPROF, SIG_IGN);
	while (sig_pool_top)
		free(sig_pool[--sig_pool_top]);
}

static int cmp_u32(const void *a, const void *b)
{
	uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
	return (x > y) - (x < y);
}

static double quantile(const uint32_t *v, uint32_t n, double q)
{
	if (n == 0)
		return 0;
	uint32_t i = (uint32_t)(q * (double)(n - 1) + 0.5);
	return v[i];
}

void wl_sig_stats(struct wl_sig_stats *out)
{
	uint32_t n = sig_n;
	memset(out, 0, sizeof *out);
	out->samples = n;
	out->nulls = sig_nulls;
	qsort(sig_samples, n, sizeof sig_samples[0], cmp_u32);
	out->p50_ns = quantile(sig_samples, n, 0.50);
	out->p90_ns = quantile(sig_samples, n, 0.90);
	out->p99_ns = quantile(sig_samples, n, 0.99);
	out->p999_ns = quantile(sig_samples, n, 0.999);
	out->max_ns = n ? sig_samples[n - 1] : 0;
	qsort(sig_empty, n, sizeof sig_empty[0], cmp_u32);
	out->empty_p50_ns = quantile(sig_empty, n, 0.50);
	out->empty_p99_ns = quantile(sig_empty, n, 0.99);
	uint32_t pn = sig_pool_n;
	qsort(sig_pool_samples, pn, sizeof sig_pool_samples[0], cmp_u32);
	out->pool_p50_ns = quantile(sig_pool_samples, pn, 0.50);
	out->pool_p99_ns = quantile(sig_pool_samples, pn, 0.99);
	/* The timer's own cost: the median of 1001 empty timings. */
	static uint32_t empty[1001];
	for (int i = 0; i < 1001; i++) {
		uint64_t t0 = now_ns();
		uint64_t t1 = now_ns();
		empty[i] = (uint32_t)(t1 - t0);
	}
	qsort(empty, 1001, sizeof empty[0], cmp_u32);
	out->clock_ns = empty[500];
}
