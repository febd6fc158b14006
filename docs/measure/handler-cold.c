/* docs/PERFORMANCE.md, "Signal handler": where a handler's allocation time
 * goes. A 100 us CLOCK_MONOTONIC timer sends SIGPROF to a thread that
 * churns 4096 blocks of 16..1040 B; the handler times malloc + free of
 * 16..256 B with four clock_gettime reads, and files the sample under
 * "inside" when the signal interrupted a malloc or free of the churn (a flag
 * the churn sets around them: the nested path), else "outside" (depth 0).
 *
 * MODE (second argument) touches something first, untimed, to see which
 * cold pages and lines the time is spent on:
 *   0  nothing
 *   1  free(NULL): the allocator's code page, its GOT and PLT
 *   2  malloc_usable_size of a block: also the class-size table
 *   3  malloc + free of a block 600 B larger: TLS, cache, another class
 *   4  malloc + free of the same size: everything (the hot floor)
 *
 *   gcc -O2 -o /tmp/handler-cold docs/measure/handler-cold.c
 *   for i in $(seq 15); do LD_PRELOAD=$PWD/build/preload/libsigmalloc.so \
 *     /tmp/handler-cold 2 0; done
 * Per-launch numbers vary (address layout); compare medians over launches.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <malloc.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <time.h>

#include "clock.h"
#include "sigprof.h"
#include <unistd.h>

#define CAP 200000
static uint32_t inside_ns[CAP], outside_ns[CAP];
static volatile uint32_t n_inside, n_outside;
static volatile int in_allocator;
static int mode;
static void *probe_block;
static uint64_t rng = 12345;

static uint64_t xorshift(uint64_t *s)
{
	*s ^= *s << 13;
	*s ^= *s >> 7;
	*s ^= *s << 17;
	return *s;
}


static void handler(int sig)
{
	(void)sig;
	int saved = errno;
	int inside = in_allocator;
	uint32_t size = 16 + (uint32_t)(xorshift(&rng) % 241);
	if (mode == 1) {
		free(NULL);
	} else if (mode == 2) {
		(void)malloc_usable_size(probe_block);
	} else if (mode >= 3) {
		void *q = malloc(mode == 3 ? size + 600 : size);
		free(q);
	}
	uint64_t t0 = now_ns();
	char *p = malloc(size);
	uint64_t t1 = now_ns();
	if (p)
		p[0] = 1;
	uint64_t t2 = now_ns();
	free(p);
	uint64_t t3 = now_ns();
	uint32_t d = (uint32_t)((t1 - t0) + (t3 - t2));
	if (inside && n_inside < CAP)
		inside_ns[n_inside++] = d;
	else if (!inside && n_outside < CAP)
		outside_ns[n_outside++] = d;
	errno = saved;
}

int main(int argc, char **argv)
{
	int seconds = argc > 1 ? atoi(argv[1]) : 2;
	mode = argc > 2 ? atoi(argv[2]) : 0;
	probe_block = malloc(100);
	timer_t timer = sigprof_start(handler, 100);
	static void *blocks[4096];
	for (int i = 0; i < 4096; i++)
		blocks[i] = malloc(16);
	uint64_t end = now_ns() + (uint64_t)seconds * 1000000000u, s = 999;
	while (now_ns() < end)
		for (int k = 0; k < 10000; k++) {
			uint64_t r = xorshift(&s);
			int i = (int)(r % 4096);
			size_t size = 16 + (r >> 20) % 1025;
			in_allocator = 1;
			free(blocks[i]);
			blocks[i] = malloc(size);
			in_allocator = 0;
		}
	sigprof_stop(timer);
	sigprof_report("inside", inside_ns, n_inside, "  ");
	sigprof_report("outside", outside_ns, n_outside, "  ");
	printf("\n");
	return 0;
}
