/* docs/PERFORMANCE.md, "What changed": the signal benchmark's workload
 * (benches/workloads.c, signal/sigprof_100us) with each sample filed by
 * the path it took. A thread churns 4096 blocks of 16..1040 B (tagging the
 * first and last byte, checking them before each free); a 100 us
 * CLOCK_MONOTONIC timer sends it SIGPROF; the handler times malloc + free
 * of 16..256 B with four clock_gettime reads (after four untimed ones, as
 * the benchmark does). A sample is "inside" when the signal interrupted
 * the churn's free+malloc (the churn raises a flag around them: sigmalloc
 * then takes its nested path), else "outside". Runs under any allocator.
 *
 *   gcc -O2 -o /tmp/handler-paths docs/measure/handler-paths.c
 *   for i in 1 2 3 4; do LD_PRELOAD=$PWD/build/preload/libsigmalloc.so /tmp/handler-paths 3; done
 */
#define _GNU_SOURCE
#include <errno.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include "churn.h"
#include "clock.h"
#include "sigprof.h"

#define CAP 400000
static uint32_t inside[CAP], outside[CAP], all[CAP];
static uint32_t n_inside, n_outside, n_all;
static volatile int in_allocator;
static uint64_t rng = 0x1234567;

static void handler(int sig)
{
	(void)sig;
	int saved = errno;
	int was_inside = in_allocator;
	uint32_t size = 16 + (uint32_t)(splitmix(&rng) % 241);
	for (int i = 0; i < 4; i++)
		(void)now_ns(); /* the benchmark's baseline reads */
	uint64_t t0 = now_ns();
	unsigned char *p = malloc(size);
	uint64_t t1 = now_ns(), t2 = t1, t3 = t1;
	if (p) {
		escape(p);
		p[0] = 0xa5;
		p[size - 1] = 0xa5;
		t2 = now_ns();
		free(p);
		t3 = now_ns();
	}
	uint32_t d = (uint32_t)((t1 - t0) + (t3 - t2));
	if (was_inside && n_inside < CAP)
		inside[n_inside++] = d;
	else if (!was_inside && n_outside < CAP)
		outside[n_outside++] = d;
	if (n_all < CAP)
		all[n_all++] = d;
	errno = saved;
}

int main(int argc, char **argv)
{
	int seconds = argc > 1 ? atoi(argv[1]) : 3;
	uint64_t bad = churn_under_sigprof(handler, seconds, &in_allocator);
	sigprof_report("inside", inside, n_inside, "\n");
	sigprof_report("outside", outside, n_outside, "\n");
	sigprof_report("all", all, n_all, "\n");
	printf("blocks changed under the churn: %llu\n", (unsigned long long)bad);
	return bad != 0;
}
