/* docs/PERFORMANCE.md, "Session 14": what a handler pays for its k-th
 * allocation of one class in one signal, when the signal interrupted
 * malloc (the nested path). The first SM_STOCK_SLOTS of them come from
 * the stock's slots (types.h), the next from its `more` list, which reads
 * the object it hands out, in the library's out-of-line code. The churn is handler-paths.c's,
 * flag raised around its free + malloc; a 100 us timer sends SIGPROF; the
 * handler mallocs K blocks of 64 B (each timed, TSC cycles between fenced
 * rdtscp, the empty pair's cost included), then frees them (untimed).
 * Only the samples of interrupted calls ("in") are reported.
 *
 *   gcc -O2 -Wl,-z,lazy -o /tmp/handler-several docs/measure/handler-several.c -ldl
 *   LD_PRELOAD=$PWD/build/preload/libsigmalloc.so taskset -c 1 /tmp/handler-several 4 2
 */
#define _GNU_SOURCE
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#include "churn.h"
#include "clock.h"
#include "sigprof.h"

#define MAX_K 8
#define CAP 100000
static uint32_t samples[MAX_K][CAP];
static uint32_t n_in;
static int k_blocks = 4;
static volatile int inside;

static void handler(int sig)
{
	(void)sig;
	int saved = errno;
	int was_inside = inside;
	void *p[MAX_K];
	uint32_t t[MAX_K];
	for (int i = 0; i < k_blocks; i++) {
		uint64_t a0 = tsc_cycles();
		p[i] = malloc(64);
		uint64_t a1 = tsc_cycles();
		escape(p[i]);
		t[i] = (uint32_t)(a1 - a0);
	}
	for (int i = k_blocks; i-- > 0;)
		free(p[i]);
	if (was_inside && n_in < CAP) {
		for (int i = 0; i < k_blocks; i++)
			samples[i][n_in] = t[i];
		n_in++;
	}
	errno = saved;
}

int main(int argc, char **argv)
{
	k_blocks = argc > 1 ? atoi(argv[1]) : 4;
	int seconds = argc > 2 ? atoi(argv[2]) : 2;
	if (k_blocks < 1 || k_blocks > MAX_K)
		return 2;
	uint64_t bad = churn_under_sigprof(handler, seconds, &inside);
	for (int i = 0; i < k_blocks; i++) {
		char name[24];
		snprintf(name, sizeof name, "in_malloc_%d", i + 1);
		sigprof_report(name, samples[i], n_in, "\n");
	}
	printf("blocks changed under the churn: %llu\n", (unsigned long long)bad);
	return bad != 0;
}
