/* docs/PERFORMANCE.md, "Session 13": what the first malloc in a SIGPROF
 * handler costs against a second one right after it, and which untimed
 * touch before it removes the difference. The churn is handler-paths.c's
 * (4096 blocks of 16..1040 B, free + malloc, first and last byte checked);
 * a 100 us timer sends this thread SIGPROF. The handler mallocs a block of
 * 16..256 B (timed: "first"), a second of the same size ("second"), frees
 * both (the first free timed: "free"). Times are TSC cycles between two
 * rdtscp (lfence on either side; this guest's TSC counts in steps of 26 at
 * 2.6 GHz), the empty pair's own cost included ("empty").
 *
 * WARM (first argument) is done, untimed, before the first malloc:
 *   none    nothing
 *   near    read the first line of the near copy's page (preload/near.c),
 *           found in /proc/self/maps as the one-page anonymous r-x mapping
 *   tls     read every line of libsigmalloc.so's TLS page (dlinfo)
 *   other   malloc + free of a block of another class (16 or 200 B)
 *
 *   gcc -O2 -Wl,-z,lazy -o /tmp/handler-first-call docs/measure/handler-first-call.c -ldl
 *   for w in none near tls other; do LD_PRELOAD=$PWD/build/preload/libsigmalloc.so \
 *       taskset -c 1 /tmp/handler-first-call $w 2; done
 *
 * It runs under any allocator (near and tls then read nothing).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "churn.h"
#include "clock.h"
#include "targets.h"
#include "sigprof.h"

enum warm { WARM_NONE, WARM_NEAR, WARM_TLS, WARM_OTHER };
static enum warm warm;
static const volatile unsigned char *near_page, *tls_page;

#define CAP 200000
static uint32_t first[CAP], second[CAP], freed[CAP], empty[CAP];
static uint32_t n;
static uint64_t rng = 0x1234567;

static void handler(int sig)
{
	(void)sig;
	int saved = errno;
	uint32_t size = 16 + (uint32_t)(splitmix(&rng) % 241);
	if (warm == WARM_NEAR && near_page)
		(void)near_page[0];
	else if (warm == WARM_TLS && tls_page)
		for (int i = 0; i < 4096; i += 64)
			(void)tls_page[i];
	else if (warm == WARM_OTHER) {
		void *w = malloc(size > 128 ? 16 : 200);
		escape(w);
		free(w);
	}
	uint64_t e0 = tsc_cycles(), e1 = tsc_cycles();
	uint64_t a0 = tsc_cycles();
	unsigned char *p = malloc(size);
	uint64_t a1 = tsc_cycles();
	escape(p);
	uint64_t b0 = tsc_cycles();
	unsigned char *q = malloc(size);
	uint64_t b1 = tsc_cycles();
	escape(q);
	if (p)
		p[0] = p[size - 1] = 0xa5;
	uint64_t c0 = tsc_cycles();
	free(p);
	uint64_t c1 = tsc_cycles();
	free(q);
	if (n < CAP) {
		empty[n] = (uint32_t)(e1 - e0);
		first[n] = (uint32_t)(a1 - a0);
		second[n] = (uint32_t)(b1 - b0);
		freed[n] = (uint32_t)(c1 - c0);
		n++;
	}
	errno = saved;
}

int main(int argc, char **argv)
{
	const char *w = argc > 1 ? argv[1] : "none";
	int seconds = argc > 2 ? atoi(argv[2]) : 2;
	warm = !strcmp(w, "near") ? WARM_NEAR : !strcmp(w, "tls") ? WARM_TLS
	     : !strcmp(w, "other") ? WARM_OTHER : WARM_NONE;
	near_page = find_near_page();
	tls_page = find_sigmalloc_tls();
	printf("warm=%s near page %p, sigmalloc TLS %p\n", w, (void *)near_page, (void *)tls_page);

	uint64_t bad = churn_under_sigprof(handler, seconds, NULL);
	sigprof_report("empty", empty, n, "\n");
	sigprof_report("first", first, n, "\n");
	sigprof_report("second", second, n, "\n");
	sigprof_report("free", freed, n, "\n");
	printf("blocks changed under the churn: %llu\n", (unsigned long long)bad);
	return bad != 0;
}
