/*
 * test-stress: threads x scale x iterations of allocation churn with blocks
 * handed between threads (issue 4, item 3; after mimalloc's test/test-stress.c).
 *
 *   test-stress [THREADS] [SCALE] [ITER]          defaults: 4 50 10
 *
 * Each round (ITER of them) creates THREADS threads and joins them, so every
 * round runs thread start-up and thread exit (sigmalloc hands a dead
 * thread's cache back). Thread t of a round makes 100 * SCALE * (t % 8 + 1)
 * allocations from a deterministic PRNG seeded with (t, round), mostly
 * 8 B .. 256 B, retained ones up to 10 KiB, 1% a hundred times larger and
 * 0.1% a thousand times (up to 1 MiB); one in eight is a calloc, one in
 * eight an aligned allocation (posix_memalign, or aligned_alloc with the
 * size rounded up to the alignment; alignment 8 .. 4096); 10% of the steps
 * realloc a live block. Every block is filled with its cookie:
 * word i = (words - i) ^ COOKIE ^ address, checked in full before every
 * free and realloc (realloc also checks that the old contents moved), with
 * calloc zeroing, alignment and malloc_usable_size >= request checked at
 * allocation. 25% of the steps
 * exchange a live block with a random slot of a shared transfer array
 * (atomic exchange), so blocks are freed by threads, and rounds, other than
 * the ones that allocated them; between rounds the main thread frees half of
 * the transfer array, and all of it at the end.
 *
 * It calls plain malloc/free, so it tests whichever allocator is loaded:
 * run with LD_PRELOAD=libsigmalloc.so (suite `stress`), or without, against
 * glibc, to check the test itself.
 *
 * Environment:
 *   SIGMALLOC_STRESS_LONG=1      soak run: ITER defaults to 1000 (an ITER
 *                                argument still wins) and the resident size
 *                                is printed every 25 rounds
 *   SIGMALLOC_STRESS_SECONDS=N   soak by time: rounds go on until N seconds
 *                                have passed (ITER is then a minimum)
 *   SIGMALLOC_STRESS_SIGNALS=1   a process timer (CLOCK_MONOTONIC, 2 kHz)
 *                                sends SIGALRM to the workers, whose handler
 *                                allocates, checks, swaps with the transfer
 *                                array and frees; workers keep SIGALRM
 *                                unblocked through thread exit. Only for an
 *                                async-signal-safe malloc (not glibc's): a
 *                                nested NULL must come with ENOMEM.
 *   SIGMALLOC_STRESS_REQUIRE_PRELOAD=1  fail unless sm_malloc is found in the
 *                                process (i.e. libsigmalloc.so is loaded)
 *
 * Exit: 0 when every check held; a failed check prints one line and aborts.
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <malloc.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "../rss.h"
#include "sigmalloc.h" /* struct sm_stats only: found with dlsym when preloaded */

static int THREADS = 4;
static int SCALE = 50;
static int ITER = 10;

#define TRANSFERS 1000
static _Atomic(uintptr_t *) transfer[TRANSFERS];

static const uintptr_t COOKIE = 0xbf58476d1ce4e5b9UL;
#define MAX_WORDS ((size_t)1 << 20) /* 8 MiB: larger is not one of ours */

static _Atomic uint64_t n_allocs, n_reallocs, n_transfers, n_signals, n_signal_nulls;

/* ------------------------------------------------------------------------
 * Failure reports: write(2) only, so that signal handlers may use them.
 * ---------------------------------------------------------------------- */

static void put_str(char *buf, size_t *n, size_t cap, const char *s)
{
	while (*s && *n < cap)
		buf[(*n)++] = *s++;
}

static void put_hex(char *buf, size_t *n, size_t cap, uintptr_t v)
{
	char tmp[16];
	size_t k = 0;
	do {
		tmp[k++] = "0123456789abcdef"[v & 15];
		v >>= 4;
	} while (v);
	put_str(buf, n, cap, "0x");
	while (k && *n < cap)
		buf[(*n)++] = tmp[--k];
}

static _Noreturn void fail(const char *what, uintptr_t a, uintptr_t b)
{
	char buf[256];
	size_t n = 0;
	put_str(buf, &n, sizeof buf, "test-stress: FAILED: ");
	put_str(buf, &n, sizeof buf, what);
	put_str(buf, &n, sizeof buf, " (");
	put_hex(buf, &n, sizeof buf, a);
	put_str(buf, &n, sizeof buf, ", ");
	put_hex(buf, &n, sizeof buf, b);
	put_str(buf, &n, sizeof buf, ")\n");
	if (write(2, buf, n) < 0) {
		/* nothing more to say */
	}
	abort();
}

/* ------------------------------------------------------------------------
 * Deterministic PRNG (splitmix64), one state per thread
 * ---------------------------------------------------------------------- */

typedef uint64_t *random_t;

static uint64_t pick(random_t r)
{
	uint64_t x = (*r += 0x9e3779b97f4a7c15ull);
	x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
	x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
	return x ^ (x >> 31);
}

static bool chance(unsigned perc, random_t r)
{
	return pick(r) % 100 < perc;
}

/* ------------------------------------------------------------------------
 * Blocks with cookies
 * ---------------------------------------------------------------------- */

static void fill_items(uintptr_t *p, size_t items)
{
	for (size_t i = 0; i < items; i++)
		p[i] = (items - i) ^ COOKIE ^ (uintptr_t)p;
}

/* Checks the first `check` words of a block of `items` words written at
 * address `was` (the block's own address, unless realloc moved it). */
static void check_items(const uintptr_t *p, size_t items, size_t check, uintptr_t was)
{
	for (size_t i = 0; i < check; i++)
		if ((p[i] ^ COOKIE ^ was) != items - i)
			fail("memory corruption (block, word)", (uintptr_t)p, i);
}

static size_t items_of(const uintptr_t *p)
{
	size_t items = p[0] ^ COOKIE ^ (uintptr_t)p;
	if (items == 0 || items > MAX_WORDS)
		fail("bad cookie in the first word (block, value)", (uintptr_t)p, p[0]);
	return items;
}

static void free_items(uintptr_t *p)
{
	if (!p)
		return;
	size_t items = items_of(p);
	check_items(p, items, items, (uintptr_t)p);
	free(p);
}

static void check_new(const uintptr_t *p, size_t size, size_t align)
{
	if ((uintptr_t)p % align != 0)
		fail("misaligned block (block, alignment)", (uintptr_t)p, align);
	size_t u = malloc_usable_size((void *)p);
	if (u < size)
		fail("malloc_usable_size below the request (usable, size)", u, size);
}

static uintptr_t *alloc_items(size_t items, random_t r)
{
	if (chance(1, r)) {
		if (chance(10, r))
			items *= 1000; /* 0.1%: up to 1 MiB */
		else
			items *= 100;  /* 1%: up to 100 KiB */
	}
	if (items == 40)
		items++; /* glibc uses that size for thread stacks (as mimalloc) */
	if (items == 0)
		items = 1;
	size_t size = items * sizeof(uintptr_t);
	uintptr_t *p = NULL;
	size_t align = 16;
	bool zero = false;
	uint64_t k = pick(r);
	switch (k % 16) {
	case 0:
	case 1:
		p = calloc(items, sizeof(uintptr_t));
		zero = true;
		break;
	case 2:
		align = (size_t)8 << (k >> 8) % 10;
		if (posix_memalign((void **)&p, align, size) != 0)
			p = NULL;
		break;
	case 3: /* C11 (and ASan) want the size a multiple of the alignment */
		align = (size_t)8 << (k >> 8) % 10;
		size = (size + align - 1) & ~(align - 1);
		items = size / sizeof(uintptr_t);
		p = aligned_alloc(align, size);
		break;
	default:
		p = malloc(size);
		break;
	}
	if (!p)
		fail("allocation failed (size, errno)", size, (uintptr_t)errno);
	check_new(p, size, align < 16 ? 16 : align);
	if (zero)
		for (size_t i = 0; i < items; i++)
			if (p[i] != 0)
				fail("calloc block not zero (block, word)", (uintptr_t)p, i);
	fill_items(p, items);
	atomic_fetch_add_explicit(&n_allocs, 1, memory_order_relaxed);
	return p;
}

/* Reallocates a block to new_items words; contents must move with it. */
static uintptr_t *realloc_items(uintptr_t *p, size_t new_items)
{
	if (!p)
		return NULL;
	size_t items = items_of(p);
	check_items(p, items, items, (uintptr_t)p);
	uintptr_t was = (uintptr_t)p;
	uintptr_t *q = realloc(p, new_items * sizeof(uintptr_t));
	if (!q)
		fail("realloc failed (size, errno)", new_items * sizeof(uintptr_t), (uintptr_t)errno);
	check_new(q, new_items * sizeof(uintptr_t), 16);
	check_items(q, items, items < new_items ? items : new_items, was);
	fill_items(q, new_items);
	atomic_fetch_add_explicit(&n_reallocs, 1, memory_order_relaxed);
	return q;
}

/* ------------------------------------------------------------------------
 * Signal mode: a handler that allocates on whichever worker it lands
 * ---------------------------------------------------------------------- */

static _Atomic uint64_t signal_seed = 42;

static void on_alarm(int sig)
{
	(void)sig;
	int saved = errno;
	uint64_t r = atomic_fetch_add_explicit(&signal_seed, 0x9e3779b97f4a7c15ull,
	                                       memory_order_relaxed);
	atomic_fetch_add_explicit(&n_signals, 1, memory_order_relaxed);
	uintptr_t *blk[3] = {NULL, NULL, NULL};
	int n = 1 + (int)(pick(&r) % 3);
	for (int i = 0; i < n; i++) {
		size_t items = 1 + pick(&r) % 64;
		errno = 0;
		uintptr_t *p = (pick(&r) & 3) ? malloc(items * sizeof(uintptr_t))
		                              : calloc(items, sizeof(uintptr_t));
		if (!p) { /* nested: the reserve may run dry, but only so */
			if (errno != ENOMEM)
				fail("NULL without ENOMEM in a signal handler (size, errno)",
				     items * sizeof(uintptr_t), (uintptr_t)errno);
			atomic_fetch_add_explicit(&n_signal_nulls, 1, memory_order_relaxed);
			continue;
		}
		fill_items(p, items);
		blk[i] = p;
	}
	if (blk[0] && chance(25, &r)) /* a block of another thread to free here */
		blk[0] = atomic_exchange(&transfer[pick(&r) % TRANSFERS], blk[0]);
	for (int i = 0; i < n; i++)
		free_items(blk[i]);
	errno = saved;
}

/* ------------------------------------------------------------------------
 * The workers
 * ---------------------------------------------------------------------- */

static int round_no;

static void stress(intptr_t tid)
{
	uint64_t seed = (uint64_t)(tid + 1) * 43 + (uint64_t)round_no * 0x100000001b3ull;
	random_t r = &seed;
	const size_t max_item_shift = 5;                        /* 8 B .. 256 B */
	const size_t max_item_retained_shift = max_item_shift + 2; /* 80 B .. 10 KiB */
	size_t allocs = 100 * (size_t)SCALE * (size_t)(tid % 8 + 1); /* some do more */
	size_t retain = allocs / 2;
	uintptr_t **data = NULL;
	size_t data_size = 0, data_top = 0;
	uintptr_t **retained = calloc(retain ? retain : 1, sizeof(uintptr_t *));
	size_t retain_top = 0;
	if (!retained)
		fail("calloc of the retained array failed", retain, 0);

	while (allocs > 0 || retain > 0) {
		if (retain == 0 || (chance(50, r) && allocs > 0)) {
			/* 50%+: a short-lived block */
			allocs--;
			if (data_top >= data_size) {
				data_size += 100000;
				data = realloc(data, data_size * sizeof(uintptr_t *));
				if (!data)
					fail("realloc of the data array failed", data_size, 0);
			}
			data[data_top++] = alloc_items((size_t)1 << (pick(r) % max_item_shift), r);
		} else {
			/* 25%: a block kept to the end */
			retained[retain_top++] =
				alloc_items((size_t)10 << (pick(r) % max_item_retained_shift), r);
			retain--;
		}
		if (chance(66, r) && data_top > 0) {
			/* 66%: free a previous block */
			size_t idx = pick(r) % data_top;
			free_items(data[idx]);
			data[idx] = NULL;
		}
		if (chance(10, r) && data_top > 0) {
			/* 10%: resize one, from 1 word to 4 KiB, rarely 40 KiB */
			size_t idx = pick(r) % data_top;
			size_t words = 1 + pick(r) % 512;
			if (chance(2, r))
				words *= 10;
			data[idx] = realloc_items(data[idx], words);
		}
		if (chance(25, r) && data_top > 0) {
			/* 25%: exchange a block with the shared transfer array */
			size_t idx = pick(r) % data_top;
			data[idx] = atomic_exchange(&transfer[pick(r) % TRANSFERS], data[idx]);
			atomic_fetch_add_explicit(&n_transfers, 1, memory_order_relaxed);
		}
	}
	/* free everything that is left */
	for (size_t i = 0; i < retain_top; i++)
		free_items(retained[i]);
	for (size_t i = 0; i < data_top; i++)
		free_items(data[i]);
	free(retained);
	free(data);
}

static bool signals_on;

static void *thread_entry(void *arg)
{
	if (signals_on) { /* stays unblocked through thread exit */
		sigset_t s;
		sigemptyset(&s);
		sigaddset(&s, SIGALRM);
		pthread_sigmask(SIG_UNBLOCK, &s, NULL);
	}
	stress((intptr_t)arg);
	return NULL;
}

static void run_os_threads(int nthreads)
{
	pthread_t *threads = calloc((size_t)nthreads, sizeof(pthread_t));
	if (!threads)
		fail("calloc of the thread array failed", (uintptr_t)nthreads, 0);
	for (int i = 0; i < nthreads; i++)
		if (pthread_create(&threads[i], NULL, thread_entry, (void *)(intptr_t)i) != 0)
			fail("pthread_create failed (thread, round)", (uintptr_t)i, (uintptr_t)round_no);
	for (int i = 0; i < nthreads; i++)
		pthread_join(threads[i], NULL);
	free(threads);
}

static bool env_on(const char *name)
{
	const char *v = getenv(name);
	return v && *v && strcmp(v, "0") != 0;
}

static double now(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec + ts.tv_nsec * 1e-9;
}

int main(int argc, char **argv)
{
	bool soak = env_on("SIGMALLOC_STRESS_LONG");
	if (soak)
		ITER = 1000;
	if (argc >= 2)
		THREADS = atoi(argv[1]);
	if (argc >= 3)
		SCALE = atoi(argv[2]);
	if (argc >= 4)
		ITER = atoi(argv[3]);
	if (THREADS < 1 || SCALE < 1 || ITER < 1) {
		fprintf(stderr, "usage: test-stress [THREADS] [SCALE] [ITER]\n");
		return 2;
	}
	const char *secs_env = getenv("SIGMALLOC_STRESS_SECONDS");
	double secs = secs_env ? atof(secs_env) : 0;
	signals_on = env_on("SIGMALLOC_STRESS_SIGNALS");

	bool sigmalloc = dlsym(RTLD_DEFAULT, "sm_malloc") != NULL;
	if (env_on("SIGMALLOC_STRESS_REQUIRE_PRELOAD") && !sigmalloc) {
		fprintf(stderr, "test-stress: libsigmalloc.so is not loaded (LD_PRELOAD)\n");
		return 1;
	}
	printf("test-stress: %d threads, scale %d, %d rounds%s%s, allocator %s\n", THREADS,
	       SCALE, ITER, secs > 0 ? " (or more, by time)" : "",
	       signals_on ? ", SIGALRM handlers allocating" : "",
	       sigmalloc ? "sigmalloc" : "system");
	fflush(stdout);

	timer_t timer;
	if (signals_on) {
		struct sigaction sa;
		memset(&sa, 0, sizeof sa);
		sa.sa_handler = on_alarm;
		sa.sa_flags = SA_RESTART;
		sigemptyset(&sa.sa_mask);
		sigaction(SIGALRM, &sa, NULL);
		sigset_t s; /* the main thread never takes it; workers unblock it */
		sigemptyset(&s);
		sigaddset(&s, SIGALRM);
		pthread_sigmask(SIG_BLOCK, &s, NULL);
		struct sigevent sev;
		memset(&sev, 0, sizeof sev);
		sev.sigev_notify = SIGEV_SIGNAL;
		sev.sigev_signo = SIGALRM;
		struct itimerspec its = {.it_interval = {0, 500000}, .it_value = {0, 500000}};
		if (timer_create(CLOCK_MONOTONIC, &sev, &timer) != 0 ||
		    timer_settime(timer, 0, &its, NULL) != 0) {
			perror("test-stress: timer");
			return 1;
		}
	}

	uint64_t seed = 12345;
	double start = now();
	long rss_first = 0;
	int n = 0;
	for (;; n++) {
		bool last = n + 1 >= ITER && (secs <= 0 || now() - start >= secs);
		round_no = n;
		run_os_threads(THREADS);
		for (int i = 0; i < TRANSFERS; i++) {
			if (chance(50, &seed) || last) /* half, and all at the end */
				free_items(atomic_exchange(&transfer[i], NULL));
		}
		if (n == 0)
			rss_first = rss_kib();
		if (soak && (n + 1) % 25 == 0) {
			printf("- round %d, %.1f s, rss %ld KiB\n", n + 1, now() - start, rss_kib());
			fflush(stdout);
		}
		if (last)
			break;
	}
	/* Handlers run on workers only, all joined before the final sweep. */
	if (signals_on)
		timer_delete(timer);
	void (*stats)(struct sm_stats *) = NULL;
	void *sym = dlsym(RTLD_DEFAULT, "sm_stats");
	memcpy(&stats, &sym, sizeof stats); /* object to function pointer, as POSIX allows */
	if (stats) { /* what reached sigmalloc's nested (signal) path */
		static struct sm_stats st;
		stats(&st);
		uint64_t na = 0, nn = 0, nf = 0;
		for (int i = 0; i < SM_STATS_CLASSES; i++) {
			na += st.classes[i].nested_allocs;
			nn += st.classes[i].nested_nulls;
			nf += st.classes[i].nested_frees;
		}
		printf("test-stress: sigmalloc nested allocations %llu (NULL %llu), nested frees %llu, "
		       "threads live %llu, cached %llu\n",
		       (unsigned long long)na, (unsigned long long)nn, (unsigned long long)nf,
		       (unsigned long long)st.threads_live, (unsigned long long)st.threads_cached);
	}
	printf("test-stress: ok: %d rounds in %.1f s; %llu allocations, %llu reallocs, "
	       "%llu transfers; signals %llu (NULL/ENOMEM in handlers %llu); "
	       "rss after round 1 %ld KiB, at end %ld KiB\n",
	       n + 1, now() - start, (unsigned long long)n_allocs,
	       (unsigned long long)n_reallocs, (unsigned long long)n_transfers,
	       (unsigned long long)n_signals, (unsigned long long)n_signal_nulls, rss_first,
	       rss_kib());
	return 0;
}
