/*
 * signal-torture: signal handlers that allocate while their thread is inside
 * malloc (suite `signal`, run under LD_PRELOAD=libsigmalloc.so).
 *
 * Four worker threads churn malloc / calloc / realloc / posix_memalign / free
 * over a table of live blocks, filling every block with a pattern derived
 * from a per-block seed (itself mixed with the block's address) and checking
 * it before each free or realloc (and calloc zeroing, posix_memalign
 * alignment, realloc keeping the old contents). Sizes are 1 B..4 KiB, spread
 * log-uniformly over the size classes, with 3% of 8 KiB..256 KiB.
 *
 * Signals:
 *   SIGPROF  a per-thread CPU-time timer per worker (CLOCK_THREAD_CPUTIME_ID,
 *            SIGEV_THREAD_ID to that worker), every 250 us of its CPU time
 *            (4 kHz while it runs).
 *   SIGALRM  one process timer (CLOCK_MONOTONIC, SIGEV_SIGNAL) at 1 kHz. The
 *            main and watchdog threads block both signals, so it lands on a
 *            worker.
 * Both handlers allocate 2..4 blocks of 16 B..4 KiB (1 in 4 by calloc), fill
 * them, check them, and free them in a random order. Nesting: the SIGPROF
 * handler's sa_mask leaves SIGALRM out, so SIGALRM interrupts it; the SIGALRM
 * handler's sa_mask leaves SIGPROF out too (our choice), so SIGPROF can also
 * interrupt the SIGALRM handler and both orders occur: at most worker call ->
 * handler -> handler, i.e. allocator depth 3. Every other signal is blocked
 * in the handlers except the synchronous fault signals (SIGSEGV, SIGBUS,
 * SIGILL, SIGFPE, SIGTRAP, SIGABRT), so that a crash is reported as one. Both
 * use SA_RESTART and save/restore errno. Handlers touch only lock-free
 * atomics and their own stack, and report with write(2), never stdio.
 *
 * A NULL from a handler's allocation must come with errno == ENOMEM; the test
 * counts them and fails if there is any (sigmalloc's nested reserve must
 * serve them all).
 *
 * Workers start cold: signals are unblocked before a worker's first malloc,
 * so handlers land in a thread's very first allocation, and ask for
 * classes the thread has not used yet (sigmalloc's process-wide nested
 * reserve must serve them). SIGMALLOC_TEST_WARM=1 adds a warm-up instead:
 * each worker first mallocs and frees one block of every size up to 4 KiB
 * with its signals still blocked.
 *
 * Duration: argv[1] seconds, else $SIGMALLOC_TEST_SECONDS, else 10. CPU-time
 * timers fire at most once per kernel tick (HZ) per CPU, so the real SIGPROF
 * rate is far below 4 kHz per worker (~250..500/s in all on 2 CPUs at
 * HZ=250); if the minimum of 1000 is not reached at the end, the run goes on
 * for up to 10 s more before it counts as a failure.
 * Watchdog: a thread sleeping with clock_nanosleep (SIGALRM is taken) that
 * reports "signal-torture: HANG detected" and _exit(1)s when a worker made no
 * progress for 5 s, or the whole run exceeds duration + 30 s.
 * Shutdown: delete the timers, then tell the workers to stop, join them,
 * then report.
 *
 * Exit 0 only if: no corruption (a failed check aborts at once), no handler
 * NULL, no bad errno, no NULL from a worker's allocation, at least 1000
 * SIGPROF deliveries and at least one per worker, at least one SIGALRM, and,
 * when sm_stats is found with dlsym (i.e. under libsigmalloc.so), some
 * allocation served nested (nested_allocs > 0).
 *
 * Without sigmalloc (glibc, jemalloc, ...) the test is expected to hang
 * (watchdog, exit 1) or crash.
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <math.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include "sigmalloc.h" /* struct sm_stats only; sm_stats itself via dlsym */

#ifndef sigev_notify_thread_id
#define sigev_notify_thread_id _sigev_un._tid
#endif

#define NWORKERS 4
#define SLOTS 256
#define PROF_INTERVAL_NS 250000L   /* 4 kHz of thread CPU time */
#define ALRM_INTERVAL_NS 1000000L  /* 1 kHz */
#define STALL_NS (5LL * 1000000000LL)
#define GRACE_NS (30LL * 1000000000LL)
#define WATCH_TICK_NS 100000000L
#define LARGE_PERCENT 3 /* of worker allocations: 8 KiB .. 256 KiB */
#define MIN_SIGPROF 1000u
#define EXTEND_NS (10LL * 1000000000LL)
#define MAX_LEVELS 4

/* ------------------------------------------------------------------------
 * Messages with write(2) only (used by handlers, workers and the watchdog)
 * ---------------------------------------------------------------------- */

struct msg {
	char buf[1024];
	size_t n;
};

static void m_str(struct msg *m, const char *s)
{
	while (*s && m->n < sizeof m->buf)
		m->buf[m->n++] = *s++;
}

static void m_u64(struct msg *m, uint64_t v)
{
	char tmp[24];
	int i = 0;
	do {
		tmp[i++] = (char)('0' + v % 10);
		v /= 10;
	} while (v);
	while (i > 0 && m->n < sizeof m->buf)
		m->buf[m->n++] = tmp[--i];
}

static void m_hex(struct msg *m, uint64_t v)
{
	char tmp[16];
	int i = 0;
	do {
		tmp[i++] = "0123456789abcdef"[v & 15];
		v >>= 4;
	} while (v);
	m_str(m, "0x");
	while (i > 0 && m->n < sizeof m->buf)
		m->buf[m->n++] = tmp[--i];
}

static void m_out(struct msg *m)
{
	size_t off = 0;
	while (off < m->n) {
		ssize_t w = write(STDERR_FILENO, m->buf + off, m->n - off);
		if (w < 0 && errno == EINTR)
			continue;
		if (w <= 0)
			break;
		off += (size_t)w;
	}
	m->n = 0;
}

/* ------------------------------------------------------------------------
 * Random numbers and block patterns
 * ---------------------------------------------------------------------- */

static inline uint64_t mix64(uint64_t x)
{
	x ^= x >> 30;
	x *= 0xbf58476d1ce4e5b9ull;
	x ^= x >> 27;
	x *= 0x94d049bb133111ebull;
	x ^= x >> 31;
	return x;
}

static inline uint64_t rnd(uint64_t *s)
{
	*s += 0x9e3779b97f4a7c15ull; /* splitmix64 */
	return mix64(*s);
}

static inline uint64_t pat_word(uint64_t seed, size_t i)
{
	return (seed + i) * 0x9e3779b97f4a7c15ull;
}

static void fill(void *p, size_t n, uint64_t seed)
{
	unsigned char *c = p;
	size_t words = n / 8;
	for (size_t i = 0; i < words; i++) {
		uint64_t v = pat_word(seed, i);
		memcpy(c + 8 * i, &v, 8);
	}
	uint64_t v = pat_word(seed, words);
	for (size_t j = 0; j < n % 8; j++)
		c[8 * words + j] = (unsigned char)(v >> (8 * j));
}

static inline unsigned char pat_byte(uint64_t seed, size_t off)
{
	return (unsigned char)(pat_word(seed, off / 8) >> (8 * (off % 8)));
}

/* First offset < n where p differs from its pattern, or SIZE_MAX. */
static size_t check(const void *p, size_t n, uint64_t seed)
{
	const unsigned char *c = p;
	size_t words = n / 8;
	for (size_t i = 0; i < words; i++) {
		uint64_t v;
		memcpy(&v, c + 8 * i, 8);
		if (v != pat_word(seed, i)) {
			/* Bounded: another thread may be writing the block. */
			for (size_t off = 8 * i; off < 8 * i + 8; off++)
				if (c[off] != pat_byte(seed, off))
					return off;
			return 8 * i;
		}
	}
	for (size_t off = 8 * words; off < n; off++)
		if (c[off] != pat_byte(seed, off))
			return off;
	return SIZE_MAX;
}

static size_t check_zero(const void *p, size_t n)
{
	const unsigned char *c = p;
	for (size_t off = 0; off < n; off++)
		if (c[off])
			return off;
	return SIZE_MAX;
}

/* ------------------------------------------------------------------------
 * Shared state
 * ---------------------------------------------------------------------- */

enum where {
	W_START, W_IDLE, W_MALLOC, W_CALLOC, W_REALLOC, W_MEMALIGN, W_FREE,
	W_CHECK, W_CLEANUP, W_EXIT,
};
static const char *const where_name[] = {
	"start-up (timer set-up)", "test code", "malloc", "calloc", "realloc",
	"posix_memalign", "free", "content check", "final frees",
	"thread exit (returned; waiting for join or in TSD destructors)",
};

static bool in_allocator(int w)
{
	return w >= W_MALLOC && w <= W_FREE;
}

struct worker {
	int index;
	pid_t tid;
	pthread_t thread;
	timer_t timer;
	_Atomic bool timer_ok;
	_Atomic bool joined;
	_Atomic uint64_t ops;               /* progress: worker operations */
	_Atomic int where;                  /* what the worker itself is doing */
	_Atomic int hdepth;                 /* handler nesting on this thread */
	_Atomic int hwhere[MAX_LEVELS];     /* what each handler level is doing */
	_Atomic int hsig[MAX_LEVELS];
	/* handler counters */
	_Atomic uint64_t prof, alrm, h_allocs, h_nulls, h_bad_errno, h_in_alloc, h_seq;
	/* worker counters (read after join) */
	uint64_t w_nulls, w_allocs;
} __attribute__((aligned(64)));

static struct worker workers[NWORKERS];
static struct worker stray; /* a signal on a non-worker thread (should not happen) */
static _Thread_local struct worker *self;
static atomic_uint null_reports;

static atomic_bool stop_workers;
static bool cold_start = true; /* SIGMALLOC_TEST_WARM=1: warm-up first */
static atomic_bool watchdog_quit;
static atomic_int workers_ready;
static atomic_int setup_failed;
static _Atomic int phase; /* for the watchdog's report */
static const char *const phase_name[] = {
	"starting", "running", "deleting timers", "joining workers", "reporting",
};
static int64_t t_start, t_deadline;

static int64_t now_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

/* ------------------------------------------------------------------------
 * Failure reports (async-signal-safe), then abort
 * ---------------------------------------------------------------------- */

static void corrupt(const char *ctx, int widx, const char *what, const void *p, size_t size,
                    size_t off, unsigned expect, unsigned got, uint64_t seed)
{
	struct msg m = { .n = 0 };
	m_str(&m, "signal-torture: CORRUPTION in ");
	m_str(&m, ctx);
	m_str(&m, " (worker ");
	m_u64(&m, (uint64_t)widx);
	m_str(&m, "): ");
	m_str(&m, what);
	m_str(&m, ": block ");
	m_hex(&m, (uintptr_t)p);
	m_str(&m, " size ");
	m_u64(&m, size);
	if (off != SIZE_MAX) {
		m_str(&m, " offset ");
		m_u64(&m, off);
		m_str(&m, " (address ");
		m_hex(&m, (uintptr_t)p + off);
		m_str(&m, ") expected byte ");
		m_hex(&m, expect);
		m_str(&m, " found ");
		m_hex(&m, got);
	}
	m_str(&m, " seed ");
	m_hex(&m, seed);
	m_str(&m, "\n");
	m_out(&m);
	abort();
}

static void verify(const char *ctx, int widx, const char *what, const void *p, size_t size,
                   uint64_t seed)
{
	size_t off = check(p, size, seed);
	if (off != SIZE_MAX)
		corrupt(ctx, widx, what, p, size, off, pat_byte(seed, off),
		        ((const unsigned char *)p)[off], seed);
}

/* ------------------------------------------------------------------------
 * The signal handler (SIGPROF and SIGALRM)
 * ---------------------------------------------------------------------- */

enum { H_NONE, H_MALLOC, H_CALLOC, H_FREE, H_CHECK };
static const char *const hwhere_name[] = { "its own code", "malloc", "calloc", "free",
	                                   "content check" };

static void on_signal(int sig, siginfo_t *si, void *uc)
{
	(void)si, (void)uc;
	int saved_errno = errno;
	struct worker *w = self ? self : &stray;
	const char *ctx = sig == SIGPROF ? "SIGPROF handler" : "SIGALRM handler";

	int level = atomic_load_explicit(&w->hdepth, memory_order_relaxed);
	int outer = level == 0 ? atomic_load_explicit(&w->where, memory_order_relaxed)
	                       : (level <= MAX_LEVELS
	                                  ? atomic_load_explicit(&w->hwhere[level - 1],
	                                                         memory_order_relaxed)
	                                  : H_NONE);
	bool interrupted = level == 0 ? in_allocator(outer)
	                              : (outer == H_MALLOC || outer == H_CALLOC || outer == H_FREE);
	int slot = level < MAX_LEVELS ? level : MAX_LEVELS - 1;
	atomic_store_explicit(&w->hsig[slot], sig, memory_order_relaxed);
	atomic_store_explicit(&w->hwhere[slot], H_NONE, memory_order_relaxed);
	atomic_store_explicit(&w->hdepth, level + 1, memory_order_relaxed);

	atomic_fetch_add_explicit(sig == SIGPROF ? &w->prof : &w->alrm, 1, memory_order_relaxed);
	if (interrupted)
		atomic_fetch_add_explicit(&w->h_in_alloc, 1, memory_order_relaxed);

	uint64_t rs = atomic_fetch_add_explicit(&w->h_seq, 1, memory_order_relaxed) ^
	              ((uint64_t)sig << 56) ^ ((uint64_t)w->index << 48) ^ 0x5157ull;
	int nb = 2 + (int)(rnd(&rs) % 3);
	void *p[4];
	size_t sz[4];
	uint64_t seed[4];
	bool zeroed[4];

	for (int i = 0; i < nb; i++) {
		unsigned shift = 4 + (unsigned)(rnd(&rs) % 9);         /* 16 .. 4096 */
		size_t hi = (size_t)1 << shift;
		sz[i] = 16 + (size_t)(rnd(&rs) % (hi - 16 + 1));
		zeroed[i] = rnd(&rs) % 4 == 0;
		atomic_store_explicit(&w->hwhere[slot], zeroed[i] ? H_CALLOC : H_MALLOC,
		                      memory_order_relaxed);
		errno = 0;
		p[i] = zeroed[i] ? calloc(1, sz[i]) : malloc(sz[i]);
		int e = errno;
		atomic_store_explicit(&w->hwhere[slot], H_CHECK, memory_order_relaxed);
		atomic_fetch_add_explicit(&w->h_allocs, 1, memory_order_relaxed);
		if (!p[i]) {
			atomic_fetch_add_explicit(&w->h_nulls, 1, memory_order_relaxed);
			if (e != ENOMEM)
				atomic_fetch_add_explicit(&w->h_bad_errno, 1, memory_order_relaxed);
			/* Say which allocation failed (the first few times). */
			if (e != ENOMEM ||
			    atomic_fetch_add_explicit(&null_reports, 1, memory_order_relaxed) < 10) {
				struct msg m = { .n = 0 };
				m_str(&m, "signal-torture: ");
				m_str(&m, ctx);
				m_str(&m, " (worker ");
				m_u64(&m, (uint64_t)w->index);
				m_str(&m, ", nesting level ");
				m_u64(&m, (uint64_t)level + 1);
				m_str(&m, ", block ");
				m_u64(&m, (uint64_t)i + 1);
				m_str(&m, " of ");
				m_u64(&m, (uint64_t)nb);
				m_str(&m, zeroed[i] ? "): calloc(1, " : "): malloc(");
				m_u64(&m, sz[i]);
				m_str(&m, ") returned NULL, errno ");
				m_u64(&m, (uint64_t)e);
				m_str(&m, e == ENOMEM ? " (ENOMEM)" : " (want ENOMEM)");
				m_str(&m, "; it interrupted ");
				m_str(&m, level == 0 ? where_name[outer] : hwhere_name[outer]);
				m_str(&m, level == 0 ? " in the worker" : " in the outer handler");
				m_str(&m, " after ");
				m_u64(&m, atomic_load_explicit(&w->ops, memory_order_relaxed));
				m_str(&m, " worker ops\n");
				m_out(&m);
			}
			continue;
		}
		if (zeroed[i]) {
			size_t off = check_zero(p[i], sz[i]);
			if (off != SIZE_MAX)
				corrupt(ctx, w->index, "calloc block not zeroed", p[i], sz[i], off, 0,
				        ((unsigned char *)p[i])[off], 0);
		}
		seed[i] = rnd(&rs) ^ (uintptr_t)p[i];
		fill(p[i], sz[i], seed[i]);
	}
	for (int i = 0; i < nb; i++)
		if (p[i])
			verify(ctx, w->index, "handler block pattern (after all allocations)", p[i],
			       sz[i], seed[i]);
	/* Free in a random order. */
	int order[4] = { 0, 1, 2, 3 };
	for (int i = nb - 1; i > 0; i--) {
		int j = (int)(rnd(&rs) % (uint64_t)(i + 1));
		int t = order[i];
		order[i] = order[j];
		order[j] = t;
	}
	for (int k = 0; k < nb; k++) {
		int i = order[k];
		if (!p[i])
			continue;
		atomic_store_explicit(&w->hwhere[slot], H_CHECK, memory_order_relaxed);
		verify(ctx, w->index, "handler block pattern (before free)", p[i], sz[i], seed[i]);
		atomic_store_explicit(&w->hwhere[slot], H_FREE, memory_order_relaxed);
		free(p[i]);
	}
	atomic_store_explicit(&w->hwhere[slot], H_NONE, memory_order_relaxed);
	atomic_store_explicit(&w->hdepth, level, memory_order_relaxed);
	errno = saved_errno;
}

/* ------------------------------------------------------------------------
 * Workers
 * ---------------------------------------------------------------------- */

struct blk {
	void *p;
	size_t size;
	uint64_t seed;
};

static size_t worker_size(uint64_t *rs)
{
	if (rnd(rs) % 100 < LARGE_PERCENT)
		return 8192 + (size_t)(rnd(rs) % (256 * 1024 - 8192 + 1));
	unsigned shift = (unsigned)(rnd(rs) % 13); /* 1 .. 4096 */
	return 1 + (size_t)(rnd(rs) % ((uint64_t)1 << shift));
}

static void set_where(struct worker *w, int where)
{
	atomic_store_explicit(&w->where, where, memory_order_relaxed);
}

static void worker_null(struct worker *w, const char *fn, size_t size)
{
	w->w_nulls++;
	struct msg m = { .n = 0 };
	m_str(&m, "signal-torture: worker ");
	m_u64(&m, (uint64_t)w->index);
	m_str(&m, ": ");
	m_str(&m, fn);
	m_str(&m, "(");
	m_u64(&m, size);
	m_str(&m, ") failed outside any signal handler\n");
	m_out(&m);
}

static void *worker_main(void *arg)
{
	struct worker *w = arg;
	self = w;
	w->tid = (pid_t)syscall(SYS_gettid);
	set_where(w, W_START);

	struct sigevent sev;
	memset(&sev, 0, sizeof sev);
	sev.sigev_notify = SIGEV_THREAD_ID;
	sev.sigev_signo = SIGPROF;
	sev.sigev_notify_thread_id = w->tid;
	struct itimerspec its = {
		.it_interval = { 0, PROF_INTERVAL_NS },
		.it_value = { 0, PROF_INTERVAL_NS },
	};
	if (timer_create(CLOCK_THREAD_CPUTIME_ID, &sev, &w->timer) != 0) {
		perror("signal-torture: timer_create(CLOCK_THREAD_CPUTIME_ID, SIGEV_THREAD_ID)");
		atomic_store(&setup_failed, 1);
		return NULL;
	}
	atomic_store(&w->timer_ok, true);
	if (timer_settime(w->timer, 0, &its, NULL) != 0) {
		perror("signal-torture: timer_settime (SIGPROF)");
		atomic_store(&setup_failed, 1);
		return NULL;
	}
	/* Optional warm-up (SIGMALLOC_TEST_WARM=1), signals still blocked: set
	 * up this thread's cache and use every size class up to 4 KiB once. */
	if (!cold_start) {
		for (size_t n = 8; n <= 4096; n += 8) {
			void *q = malloc(n);
			if (!q)
				worker_null(w, "malloc (warm-up)", n);
			free(q);
		}
	}
	sigset_t set;
	sigemptyset(&set);
	sigaddset(&set, SIGPROF);
	sigaddset(&set, SIGALRM);
	pthread_sigmask(SIG_UNBLOCK, &set, NULL);
	atomic_fetch_add(&workers_ready, 1);

	const char *ctx = "worker";
	struct blk slots[SLOTS];
	memset(slots, 0, sizeof slots);
	uint64_t rs = 0x1234567ull * (uint64_t)(w->index + 1) ^ (uint64_t)now_ns();
	uint64_t ops = 0;

	while (!atomic_load_explicit(&stop_workers, memory_order_relaxed)) {
		struct blk *b = &slots[rnd(&rs) % SLOTS];
		uint64_t r = rnd(&rs);
		if (b->p) {
			set_where(w, W_CHECK);
			verify(ctx, w->index, "block pattern", b->p, b->size, b->seed);
			if (r % 4 < 2) {
				set_where(w, W_FREE);
				free(b->p);
				b->p = NULL;
			} else if (r % 4 == 2) {
				size_t n = worker_size(&rs);
				set_where(w, W_REALLOC);
				void *q = realloc(b->p, n);
				set_where(w, W_CHECK);
				w->w_allocs++;
				if (!q) {
					worker_null(w, "realloc", n);
				} else {
					size_t keep = n < b->size ? n : b->size;
					size_t off = check(q, keep, b->seed);
					if (off != SIZE_MAX)
						corrupt(ctx, w->index, "realloc lost contents", q, n, off,
						        pat_byte(b->seed, off), ((unsigned char *)q)[off],
						        b->seed);
					b->p = q;
					b->size = n;
					b->seed = rnd(&rs) ^ (uintptr_t)q;
					fill(q, n, b->seed);
				}
			}
		} else {
			size_t n = worker_size(&rs);
			void *q = NULL;
			unsigned kind = (unsigned)(r % 8);
			if (kind < 5) {
				set_where(w, W_MALLOC);
				q = malloc(n);
				set_where(w, W_CHECK);
				if (!q)
					worker_null(w, "malloc", n);
			} else if (kind == 5) {
				set_where(w, W_CALLOC);
				q = calloc(1, n);
				set_where(w, W_CHECK);
				if (!q) {
					worker_null(w, "calloc", n);
				} else {
					size_t off = check_zero(q, n);
					if (off != SIZE_MAX)
						corrupt(ctx, w->index, "calloc block not zeroed", q, n, off,
						        0, ((unsigned char *)q)[off], 0);
				}
			} else {
				size_t align = (size_t)1 << (3 + (rnd(&rs) % 10)); /* 8 .. 4096 */
				set_where(w, W_MEMALIGN);
				int rc = posix_memalign(&q, align, n);
				set_where(w, W_CHECK);
				if (rc != 0) {
					q = NULL;
					worker_null(w, "posix_memalign", n);
				} else if ((uintptr_t)q & (align - 1)) {
					struct msg m = { .n = 0 };
					m_str(&m, "signal-torture: worker: posix_memalign(");
					m_u64(&m, align);
					m_str(&m, ", ");
					m_u64(&m, n);
					m_str(&m, ") returned misaligned ");
					m_hex(&m, (uintptr_t)q);
					m_str(&m, "\n");
					m_out(&m);
					abort();
				}
			}
			w->w_allocs++;
			if (q) {
				b->p = q;
				b->size = n;
				b->seed = rnd(&rs) ^ (uintptr_t)q;
				fill(q, n, b->seed);
			}
		}
		set_where(w, W_IDLE);
		atomic_store_explicit(&w->ops, ++ops, memory_order_relaxed);
	}

	set_where(w, W_CLEANUP);
	for (int i = 0; i < SLOTS; i++) {
		struct blk *b = &slots[i];
		if (!b->p)
			continue;
		verify(ctx, w->index, "block pattern (final)", b->p, b->size, b->seed);
		free(b->p);
		atomic_store_explicit(&w->ops, ++ops, memory_order_relaxed);
	}
	set_where(w, W_EXIT);
	return NULL;
}

/* ------------------------------------------------------------------------
 * Watchdog
 * ---------------------------------------------------------------------- */

static void report_worker(struct msg *m, struct worker *w, int64_t stalled_ns)
{
	m_str(m, "  worker ");
	m_u64(m, (uint64_t)w->index);
	m_str(m, " (tid ");
	m_u64(m, (uint64_t)w->tid);
	m_str(m, "): no progress for ");
	m_u64(m, (uint64_t)(stalled_ns / 1000000));
	m_str(m, " ms, ops ");
	m_u64(m, atomic_load(&w->ops));
	m_str(m, ", in ");
	m_str(m, where_name[atomic_load(&w->where)]);
	int depth = atomic_load(&w->hdepth);
	for (int l = 0; l < depth && l < MAX_LEVELS; l++) {
		m_str(m, l == 0 ? ", interrupted by " : ", then ");
		m_str(m, atomic_load(&w->hsig[l]) == SIGPROF ? "SIGPROF" : "SIGALRM");
		m_str(m, " handler in ");
		m_str(m, hwhere_name[atomic_load(&w->hwhere[l])]);
	}
	m_str(m, "; SIGPROF ");
	m_u64(m, atomic_load(&w->prof));
	m_str(m, ", SIGALRM ");
	m_u64(m, atomic_load(&w->alrm));
	m_str(m, "\n");
	m_out(m);
}

static void *watchdog_main(void *arg)
{
	(void)arg;
	uint64_t last_ops[NWORKERS];
	int64_t last_change[NWORKERS];
	for (int i = 0; i < NWORKERS; i++) {
		last_ops[i] = 0;
		last_change[i] = t_start;
	}
	struct timespec next;
	clock_gettime(CLOCK_MONOTONIC, &next);
	while (!atomic_load(&watchdog_quit)) {
		next.tv_nsec += WATCH_TICK_NS;
		if (next.tv_nsec >= 1000000000L) {
			next.tv_nsec -= 1000000000L;
			next.tv_sec++;
		}
		while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &next, NULL) == EINTR)
			;
		if (atomic_load(&watchdog_quit))
			break;
		int64_t now = now_ns();
		bool stuck = false;
		for (int i = 0; i < NWORKERS; i++) {
			uint64_t ops = atomic_load_explicit(&workers[i].ops, memory_order_relaxed);
			if (ops != last_ops[i] || atomic_load(&workers[i].joined)) {
				last_ops[i] = ops;
				last_change[i] = now;
			} else if (now - last_change[i] > STALL_NS) {
				stuck = true;
			}
		}
		bool overtime = now > t_deadline;
		if (!stuck && !overtime)
			continue;
		struct msg m = { .n = 0 };
		m_str(&m, "signal-torture: HANG detected after ");
		m_u64(&m, (uint64_t)((now - t_start) / 1000000));
		m_str(&m, " ms (phase: ");
		m_str(&m, phase_name[atomic_load(&phase)]);
		m_str(&m, overtime ? "; run exceeded duration + 30 s)\n" : ")\n");
		m_out(&m);
		for (int i = 0; i < NWORKERS; i++) {
			if (atomic_load(&workers[i].joined))
				continue;
			if (now - last_change[i] > STALL_NS || overtime)
				report_worker(&m, &workers[i], now - last_change[i]);
		}
		_exit(1);
	}
	return NULL;
}

/* ------------------------------------------------------------------------
 * Main
 * ---------------------------------------------------------------------- */

static uint64_t total_prof(void)
{
	uint64_t n = 0;
	for (int i = 0; i < NWORKERS; i++)
		n += atomic_load_explicit(&workers[i].prof, memory_order_relaxed);
	return n;
}

static double parse_seconds(const char *s, const char *what)
{
	char *end;
	errno = 0;
	double v = strtod(s, &end);
	if (errno || end == s || *end || !(v > 0) || !isfinite(v) || v > 86400) {
		fprintf(stderr, "signal-torture: bad duration in %s: '%s'\n", what, s);
		exit(2);
	}
	return v;
}

static void install(int sig, int also_unblocked)
{
	struct sigaction sa;
	memset(&sa, 0, sizeof sa);
	sa.sa_sigaction = on_signal;
	sa.sa_flags = SA_SIGINFO | SA_RESTART;
	sigfillset(&sa.sa_mask);
	sigdelset(&sa.sa_mask, also_unblocked);
	int sync_sigs[] = { SIGSEGV, SIGBUS, SIGILL, SIGFPE, SIGTRAP, SIGABRT };
	for (size_t i = 0; i < sizeof sync_sigs / sizeof sync_sigs[0]; i++)
		sigdelset(&sa.sa_mask, sync_sigs[i]);
	if (sigaction(sig, &sa, NULL) != 0) {
		perror("signal-torture: sigaction");
		exit(1);
	}
}

int main(int argc, char **argv)
{
	double seconds = 10;
	const char *env = getenv("SIGMALLOC_TEST_SECONDS");
	if (argc > 1)
		seconds = parse_seconds(argv[1], "argv[1]");
	else if (env && *env)
		seconds = parse_seconds(env, "SIGMALLOC_TEST_SECONDS");

	const char *warm = getenv("SIGMALLOC_TEST_WARM");
	cold_start = !(warm && *warm && strcmp(warm, "0") != 0);

	void (*stats_fn)(struct sm_stats *) = NULL;
	void *sym = dlsym(RTLD_DEFAULT, "sm_stats");
	memcpy(&stats_fn, &sym, sizeof sym);

	printf("signal-torture: %d workers for %.3g s; SIGPROF every %ld us of each worker's CPU "
	       "time, SIGALRM every %ld us; %s; sm_stats %s\n",
	       NWORKERS, seconds, PROF_INTERVAL_NS / 1000, ALRM_INTERVAL_NS / 1000,
	       cold_start ? "cold start (no warm-up)" : "warm-up before signals",
	       stats_fn ? "found (sigmalloc loaded)" : "not found (not sigmalloc)");
	fflush(stdout);

	/* Main and watchdog never take the signals; workers unblock them. */
	sigset_t set;
	sigemptyset(&set);
	sigaddset(&set, SIGPROF);
	sigaddset(&set, SIGALRM);
	pthread_sigmask(SIG_BLOCK, &set, NULL);
	/* SIGALRM may interrupt the SIGPROF handler, and SIGPROF the SIGALRM
	 * handler; each blocks every other asynchronous signal. */
	install(SIGPROF, SIGALRM);
	install(SIGALRM, SIGPROF);

	t_start = now_ns();
	t_deadline = t_start + (int64_t)(seconds * 1e9) + GRACE_NS;
	stray.index = -1;

	pthread_t watchdog;
	if (pthread_create(&watchdog, NULL, watchdog_main, NULL) != 0) {
		fprintf(stderr, "signal-torture: cannot start the watchdog\n");
		return 1;
	}
	for (int i = 0; i < NWORKERS; i++) {
		workers[i].index = i;
		if (pthread_create(&workers[i].thread, NULL, worker_main, &workers[i]) != 0) {
			fprintf(stderr, "signal-torture: cannot start worker %d\n", i);
			_exit(1);
		}
	}
	struct timespec ms = { 0, 1000000 };
	while (atomic_load(&workers_ready) < NWORKERS) {
		if (atomic_load(&setup_failed))
			_exit(1);
		nanosleep(&ms, NULL);
	}

	struct sigevent sev;
	memset(&sev, 0, sizeof sev);
	sev.sigev_notify = SIGEV_SIGNAL;
	sev.sigev_signo = SIGALRM;
	timer_t alarm_timer;
	struct itimerspec its = {
		.it_interval = { 0, ALRM_INTERVAL_NS },
		.it_value = { 0, ALRM_INTERVAL_NS },
	};
	if (timer_create(CLOCK_MONOTONIC, &sev, &alarm_timer) != 0 ||
	    timer_settime(alarm_timer, 0, &its, NULL) != 0) {
		perror("signal-torture: SIGALRM timer");
		_exit(1);
	}
	atomic_store(&phase, 1);

	int64_t end = t_start + (int64_t)(seconds * 1e9);
	struct timespec until = { (time_t)(end / 1000000000LL), (long)(end % 1000000000LL) };
	while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &until, NULL) == EINTR)
		;
	/* CPU-time timers fire at most once per kernel tick per CPU (HZ 250
	 * gives ~250..500 SIGPROF/s here, not 4 kHz x 4). On a loaded machine
	 * run up to 10 s longer to reach the minimum rather than fail. */
	int64_t extra_until = end + EXTEND_NS;
	int extended = 0;
	while (total_prof() < MIN_SIGPROF && now_ns() < extra_until) {
		struct timespec tick = { 0, 100000000L };
		nanosleep(&tick, NULL);
		extended = 1;
	}
	if (extended)
		printf("signal-torture: ran %.1f s longer to reach %u SIGPROF deliveries\n",
		       (double)(now_ns() - end) / 1e9, MIN_SIGPROF);

	/* Stop the timers, then the workers, then report. */
	atomic_store(&phase, 2);
	timer_delete(alarm_timer);
	for (int i = 0; i < NWORKERS; i++)
		if (atomic_load(&workers[i].timer_ok))
			timer_delete(workers[i].timer);
	atomic_store(&phase, 3);
	atomic_store(&stop_workers, true);
	for (int i = 0; i < NWORKERS; i++) {
		pthread_join(workers[i].thread, NULL);
		atomic_store(&workers[i].joined, true);
	}
	atomic_store(&phase, 4);

	uint64_t prof = 0, alrm = 0, allocs = 0, nulls = 0, bad_errno = 0, in_alloc = 0;
	uint64_t ops = 0, w_nulls = 0, w_allocs = 0, min_prof = UINT64_MAX;
	for (int i = 0; i < NWORKERS; i++) {
		struct worker *w = &workers[i];
		uint64_t p = atomic_load(&w->prof);
		prof += p;
		if (p < min_prof)
			min_prof = p;
		alrm += atomic_load(&w->alrm);
		allocs += atomic_load(&w->h_allocs);
		nulls += atomic_load(&w->h_nulls);
		bad_errno += atomic_load(&w->h_bad_errno);
		in_alloc += atomic_load(&w->h_in_alloc);
		ops += atomic_load(&w->ops);
		w_nulls += w->w_nulls;
		w_allocs += w->w_allocs;
	}
	uint64_t stray_calls = atomic_load(&stray.prof) + atomic_load(&stray.alrm);
	prof += atomic_load(&stray.prof);
	alrm += atomic_load(&stray.alrm);
	allocs += atomic_load(&stray.h_allocs);
	nulls += atomic_load(&stray.h_nulls);
	bad_errno += atomic_load(&stray.h_bad_errno);

	uint64_t n_allocs = 0, n_nulls = 0, n_frees = 0;
	if (stats_fn) {
		struct sm_stats st;
		stats_fn(&st);
		for (int c = 0; c < SM_STATS_CLASSES; c++) {
			n_allocs += st.classes[c].nested_allocs;
			n_nulls += st.classes[c].nested_nulls;
			n_frees += st.classes[c].nested_frees;
		}
	}

	char nested[200];
	if (stats_fn)
		snprintf(nested, sizeof nested,
		         "%s (sm_stats: nested_allocs %llu, nested_nulls %llu, nested_frees %llu)",
		         n_allocs ? "yes" : "NO", (unsigned long long)n_allocs,
		         (unsigned long long)n_nulls, (unsigned long long)n_frees);
	else
		snprintf(nested, sizeof nested, "unknown (no sm_stats)");
	printf("signal-torture: handler invocations SIGPROF %llu SIGALRM %llu (%llu inside an "
	       "allocator call); handler allocations %llu, handler NULLs %llu; worker ops %llu "
	       "(allocations %llu, NULLs %llu); nested-served: %s\n",
	       (unsigned long long)prof, (unsigned long long)alrm, (unsigned long long)in_alloc,
	       (unsigned long long)allocs, (unsigned long long)nulls, (unsigned long long)ops,
	       (unsigned long long)w_allocs, (unsigned long long)w_nulls, nested);

	int failed = 0;
#define FAIL_IF(cond, text)                                                  \
	do {                                                                 \
		if (cond) {                                                  \
			fprintf(stderr, "signal-torture: FAIL: %s\n", text); \
			failed = 1;                                          \
		}                                                            \
	} while (0)
	FAIL_IF(nulls != 0, "a signal handler's allocation returned NULL");
	FAIL_IF(bad_errno != 0, "a NULL from a handler's allocation without errno == ENOMEM");
	FAIL_IF(w_nulls != 0, "a worker's allocation returned NULL outside any handler");
	FAIL_IF(prof < MIN_SIGPROF, "fewer than 1000 SIGPROF deliveries: nothing was exercised");
	FAIL_IF(min_prof == 0, "a worker received no SIGPROF (per-thread CPU timer not working)");
	FAIL_IF(alrm == 0, "no SIGALRM delivered");
	FAIL_IF(stray_calls != 0, "a signal ran on a thread that is not a worker");
	FAIL_IF(stats_fn && n_allocs == 0, "sigmalloc served no allocation nested");
	fflush(stdout);

	atomic_store(&watchdog_quit, true);
	pthread_join(watchdog, NULL);
	if (!failed)
		printf("signal-torture: PASS\n");
	return failed;
}
