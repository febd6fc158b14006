/* docs/PERFORMANCE.md, "Session 15": what the warming stub
 * (preload/signal_warm.c) adds to a signal that does not allocate. The
 * program raises SIGUSR1 N times at itself; the handler only counts; it
 * prints ns per signal (raise, delivery, handler, sigreturn). Compare
 * SIGMALLOC_SIGNAL_WARM=0 with the default, interleaved:
 *
 *   gcc -O2 -o /tmp/signal-entry-cost docs/measure/signal-entry-cost.c
 *   for i in $(seq 9); do for w in 1 0; do \
 *       LD_PRELOAD=$PWD/build/preload/libsigmalloc.so SIGMALLOC_SIGNAL_WARM=$w \
 *       taskset -c 1 /tmp/signal-entry-cost; done; done
 */
#define _GNU_SOURCE
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "clock.h"

static volatile unsigned long hits;
static void handler(int sig)
{
	(void)sig;
	hits = hits + 1;
}

int main(void)
{
	struct sigaction sa;
	memset(&sa, 0, sizeof sa);
	sa.sa_handler = handler;
	sigaction(SIGUSR1, &sa, NULL);
	enum { N = 200000 };
	for (int i = 0; i < N / 10; i++) /* warm-up */
		raise(SIGUSR1);
	uint64_t t0 = now_ns();
	for (int i = 0; i < N; i++)
		raise(SIGUSR1);
	uint64_t t1 = now_ns();
	printf("%s %.1f ns per signal\n", getenv("SIGMALLOC_SIGNAL_WARM") ? getenv("SIGMALLOC_SIGNAL_WARM") : "-",
	       (double)(t1 - t0) / N);
	return hits == N + N / 10 ? 0 : 1;
}
