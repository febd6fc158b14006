/*
 * The nested stock (src/tlslist.h) under nesting on one thread, against the
 * static core (suite `unit`, so that the sanitizer builds run it too).
 *
 * The stock is shared by a thread and its own signal handlers with
 * one-instruction operations; what could go wrong is an interleaving: a
 * handler that lands between two instructions of a slot claim, a give-back
 * or a push of the code it interrupted. To hit those windows at random,
 * the main thread raises its depth (so that every one of its allocations
 * takes the nested path, as a handler's would) and loops nested malloc and
 * free of a few sizes, while a 20 us timer sends SIGALRM, whose handler
 * makes nested allocations and frees of its own, holds up to four blocks
 * across invocations, and is itself interrupted by SIGPROF from a second
 * timer (depth 3). Every so often the main thread drops to depth 0 and runs
 * owner slow paths (stock_rebalance tops stocks up and takes excess back)
 * with the timers still running.
 *
 * Checked: every block carries a stamp (owner and sequence number) over its
 * first 16 bytes, written after allocation and checked before free, so a
 * block handed to two holders at once shows up as a stamp changed under one
 * of them; a NULL comes with errno == ENOMEM; and enough signals landed
 * while the main thread was inside a nested malloc or free that the windows
 * were exercised (at least 1000).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include "internal.h"
#include "sigmalloc.h"
#include "signal-timer.h"
#include "testhelper.h"

struct stamp {
	uint64_t owner; /* 1 main, 2 SIGALRM handler, 3 SIGPROF handler */
	uint64_t seq;
};

static volatile sig_atomic_t in_call;    /* main thread inside a nested malloc/free */
static volatile uint64_t landed_in_call; /* signals that found in_call set */
static volatile uint64_t stamp_errors, errno_errors, handler_nulls, handler_allocs;
static uint64_t seq_alrm, seq_prof;

static const size_t sizes[] = { 24, 48, 64, 100, 200, 256, 600, 3000 };
#define NSIZES (sizeof sizes / sizeof sizes[0])

static void stamp(void *p, uint64_t owner, uint64_t seq)
{
	struct stamp s = { owner, seq };
	memcpy(p, &s, sizeof s);
}

static void check(void *p, uint64_t owner, uint64_t seq)
{
	struct stamp s;
	memcpy(&s, p, sizeof s);
	if (s.owner != owner || s.seq != seq)
		stamp_errors = stamp_errors + 1;
}

struct held {
	void *p;
	uint64_t seq;
};

/* One handler's work: free the block in one of its slots (if any), then
 * allocate a new one there; the blocks survive across invocations. */
static void handler_step(struct held *slots, uint64_t owner, uint64_t *seq, uint64_t r)
{
	if (in_call)
		landed_in_call = landed_in_call + 1;
	struct held *h = &slots[r % 4];
	if (h->p) {
		check(h->p, owner, h->seq);
		sm_free(h->p);
		h->p = NULL;
	}
	int saved = errno;
	errno = 0;
	void *p = sm_malloc(sizes[(r >> 8) % NSIZES]);
	if (!p) {
		handler_nulls = handler_nulls + 1;
		if (errno != ENOMEM)
			errno_errors = errno_errors + 1;
	} else {
		handler_allocs = handler_allocs + 1;
		h->p = p;
		h->seq = ++*seq;
		stamp(p, owner, h->seq);
	}
	errno = saved;
}

static struct held alrm_slots[4], prof_slots[4];
static uint64_t rng_alrm = 1, rng_prof = 7;

static void on_alrm(int sig)
{
	(void)sig;
	handler_step(alrm_slots, 2, &seq_alrm, xorshift64(&rng_alrm));
}

static void on_prof(int sig)
{
	(void)sig;
	handler_step(prof_slots, 3, &seq_prof, xorshift64(&rng_prof));
}

static void *touch_and_exit(void *arg)
{
	(void)arg;
	sm_free(sm_malloc(100));
	return NULL;
}

static double now_s(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

int main(int argc, char **argv)
{
	double seconds = argc > 1 ? atof(argv[1]) : 2.0;
	BANNER("nested stock: nested malloc/free interrupted by nested malloc/free");
	/* A second thread, joined at once, makes the process multi-threaded
	 * (process-wide reserves for every hub, refill thread). */
	pthread_t thread;
	pthread_create(&thread, NULL, touch_and_exit, NULL);
	pthread_join(thread, NULL);
	for (size_t i = 0; i < NSIZES; i++)
		sm_free(sm_malloc(sizes[i]));

	struct sigaction sa;
	memset(&sa, 0, sizeof sa);
	sa.sa_flags = SA_RESTART;
	sigemptyset(&sa.sa_mask); /* SIGPROF may interrupt the SIGALRM handler */
	sa.sa_handler = on_alrm;
	sigaction(SIGALRM, &sa, NULL);
	sigaddset(&sa.sa_mask, SIGALRM); /* not the other way round */
	sa.sa_handler = on_prof;
	sigaction(SIGPROF, &sa, NULL);
	timer_t ta = thread_timer_start(SIGALRM, 20000), tp = thread_timer_start(SIGPROF, 53000);

	struct held mine[8] = { { 0 } };
	uint64_t seq = 0, rng = 99, nulls = 0, allocs = 0, rounds = 0;
	double end = now_s() + seconds;
	while (now_s() < end) {
		_sm_thread.depth++; /* from here on, every call is nested */
		for (int k = 0; k < 4096; k++) {
			uint64_t r = xorshift64(&rng);
			struct held *h = &mine[r % 8];
			if (h->p) {
				check(h->p, 1, h->seq);
				in_call = 1;
				sm_free(h->p);
				in_call = 0;
				h->p = NULL;
			}
			errno = 0;
			in_call = 1;
			void *p = sm_malloc(sizes[(r >> 8) % NSIZES]);
			in_call = 0;
			if (!p) {
				nulls++;
				if (errno != ENOMEM)
					errno_errors = errno_errors + 1;
				continue;
			}
			allocs++;
			h->p = p;
			h->seq = ++seq;
			stamp(p, 1, h->seq);
		}
		_sm_thread.depth--;
		/* Owner slow paths (rebalance, restock) with the timers running. */
		for (int k = 0; k < 256; k++)
			sm_free(sm_malloc(sizes[k % NSIZES] + (size_t)(k % 3) * 700));
		rounds++;
	}
	timer_delete(ta);
	timer_delete(tp);
	signal(SIGALRM, SIG_IGN);
	signal(SIGPROF, SIG_IGN);
	for (int i = 0; i < 8; i++)
		if (mine[i].p) {
			check(mine[i].p, 1, mine[i].seq);
			sm_free(mine[i].p);
		}
	for (int i = 0; i < 4; i++) {
		sm_free(alrm_slots[i].p);
		sm_free(prof_slots[i].p);
	}
	fprintf(stderr,
	        "rounds %llu; main nested allocations %llu (NULL %llu); handler allocations %llu "
	        "(NULL %llu); signals inside a nested call %llu\n",
	        (unsigned long long)rounds, (unsigned long long)allocs, (unsigned long long)nulls,
	        (unsigned long long)handler_allocs, (unsigned long long)handler_nulls,
	        (unsigned long long)landed_in_call);
	CHECK("no block was handed to two holders (stamps intact)", stamp_errors == 0);
	CHECK("every NULL came with errno == ENOMEM", errno_errors == 0);
	CHECK("nested allocations were served", allocs > 0 && handler_allocs > 0);
	CHECK("at least 1000 signals landed inside a nested malloc or free", landed_in_call >= 1000);
	return print_test_summary();
}
