/* sm_stats (here through mallinfo2) runs at depth 0 and takes locks that
 * the owner's slow paths take too (the pool's, jemalloc's): a signal
 * handler that allocates while this thread is inside it must not land
 * there. Another thread sends SIGUSR1 to the main thread every 200 us; the
 * handler allocates and frees 4000 blocks of 16 B, far past the bucket,
 * so that it refills and trims through the backend. With the signals
 * unblocked during the reads (before the fix), this hung in 5 of 5 runs
 * (jemalloc's locks) and 2 of 3 (the pool's), with SIGMALLOC_REFILL_THREAD=0.
 * A hang is caught by alarm(): the test is killed by SIGALRM and fails.
 * (After a probe by a review of the class pools.) */
#define _GNU_SOURCE
#include <malloc.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

#include "testhelper.h"

static pthread_t main_thread;
static atomic_long handled;
static atomic_bool stop;

static void handler(int sig)
{
	(void)sig;
	static void *v[4000];
	for (int i = 0; i < 4000; i++)
		v[i] = malloc(16);
	for (int i = 0; i < 4000; i++)
		free(v[i]);
	atomic_fetch_add(&handled, 1);
}

static void *sender(void *arg)
{
	(void)arg;
	while (!atomic_load(&stop)) {
		pthread_kill(main_thread, SIGUSR1);
		struct timespec ts = { 0, 200000 };
		nanosleep(&ts, NULL);
	}
	return NULL;
}

int main(void)
{
	main_thread = pthread_self();
	struct sigaction sa = { 0 };
	sa.sa_handler = handler;
	sigemptyset(&sa.sa_mask);
	sigaction(SIGUSR1, &sa, NULL);
	free(malloc(16));
	alarm(60);
	pthread_t t;
	pthread_create(&t, NULL, sender, NULL);
	size_t sum = 0;
	struct timespec t0, now;
	clock_gettime(CLOCK_MONOTONIC, &t0);
	long calls = 0;
	do {
		for (int i = 0; i < 1000; i++, calls++)
			sum += mallinfo2().uordblks;
		clock_gettime(CLOCK_MONOTONIC, &now);
	} while (now.tv_sec - t0.tv_sec < 3 || atomic_load(&handled) < 100);
	atomic_store(&stop, true);
	pthread_join(t, NULL);
	fprintf(stderr, "%ld mallinfo2 calls, %ld handlers ran (sum %zu)\n", calls,
	        atomic_load(&handled), sum);
	CHECK("handlers ran while the thread read the statistics", atomic_load(&handled) >= 100);
	return print_test_summary();
}
