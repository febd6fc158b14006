/* docs/PERFORMANCE.md, "Session 14": what is cold in a nested malloc and
 * free. The churn is handler-paths.c's (4096 blocks of 16..1040 B, free +
 * malloc, first and last byte checked), with its flag raised around the
 * free + malloc; a 100 us timer sends this thread SIGPROF. The handler
 * times malloc of 16..256 B and its free, in TSC cycles between fenced
 * rdtscp (the empty pair's own cost, "empty", included), and files each
 * sample "in" (the signal interrupted the churn's free + malloc: under
 * sigmalloc, the nested path) or "out".
 *
 * WARM (first argument) is read, untimed, before the malloc:
 *   none    nothing
 *   page    one line of the near copy's page past its code (offset 3072):
 *           the page's translation, not the code's lines
 *   code    the first 1 KiB of the near copy's page, which holds all of
 *           its code (preload/near.c; objdump -h: section sm_near_text)
 *   tls     every line of libsigmalloc.so's TLS block (dlinfo): the
 *           thread's state, its buckets and its stocks
 *   both    code, then tls
 *
 *   gcc -O2 -Wl,-z,lazy -o /tmp/handler-nested-warm docs/measure/handler-nested-warm.c -ldl
 *   for i in 1 2 3 4 5 6; do for w in none page code tls both; do \
 *       LD_PRELOAD=$PWD/build/preload/libsigmalloc.so taskset -c 1 \
 *       /tmp/handler-nested-warm $w 2; done; done
 *
 * It runs under any allocator (code and tls then read nothing).
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

#define TLS_BYTES 3072 /* readelf -sW libsigmalloc.so: _sm_thread's size */
#define CAP 200000
static uint32_t in_malloc[CAP], in_free[CAP], out_malloc[CAP], out_free[CAP], empty[CAP];
static uint32_t n_in, n_out, n_empty;
static volatile int inside;
static uint64_t rng = 0x1234567;
static int warm_page, warm_code, warm_tls;
static const volatile unsigned char *near_page, *tls_page;

static void handler(int sig)
{
	(void)sig;
	int saved = errno;
	int was_inside = inside;
	uint32_t size = 16 + (uint32_t)(splitmix(&rng) % 241);
	if (warm_page && near_page)
		(void)near_page[3072];
	if (warm_code && near_page)
		for (int i = 0; i < 1024; i += 64)
			(void)near_page[i];
	if (warm_tls && tls_page)
		for (int i = 0; i < TLS_BYTES; i += 64)
			(void)tls_page[i];
	uint64_t e0 = tsc_cycles(), e1 = tsc_cycles();
	uint64_t a0 = tsc_cycles();
	unsigned char *p = malloc(size);
	uint64_t a1 = tsc_cycles();
	escape(p);
	if (p)
		p[0] = p[size - 1] = 0xa5;
	uint64_t f0 = tsc_cycles();
	free(p);
	uint64_t f1 = tsc_cycles();
	if (n_empty < CAP)
		empty[n_empty++] = (uint32_t)(e1 - e0);
	if (was_inside && n_in < CAP) {
		in_malloc[n_in] = (uint32_t)(a1 - a0);
		in_free[n_in++] = (uint32_t)(f1 - f0);
	} else if (!was_inside && n_out < CAP) {
		out_malloc[n_out] = (uint32_t)(a1 - a0);
		out_free[n_out++] = (uint32_t)(f1 - f0);
	}
	errno = saved;
}

int main(int argc, char **argv)
{
	const char *w = argc > 1 ? argv[1] : "none";
	int seconds = argc > 2 ? atoi(argv[2]) : 2;
	warm_page = !strcmp(w, "page");
	warm_code = !strcmp(w, "code") || !strcmp(w, "both");
	warm_tls = !strcmp(w, "tls") || !strcmp(w, "both");
	near_page = find_near_page();
	tls_page = find_sigmalloc_tls();
	printf("warm=%s near page %p, sigmalloc TLS %p\n", w, (void *)near_page, (void *)tls_page);

	uint64_t bad = churn_under_sigprof(handler, seconds, &inside);
	sigprof_report("empty", empty, n_empty, "\n");
	sigprof_report("in_malloc", in_malloc, n_in, "\n");
	sigprof_report("in_free", in_free, n_in, "\n");
	sigprof_report("out_malloc", out_malloc, n_out, "\n");
	sigprof_report("out_free", out_free, n_out, "\n");
	printf("blocks changed under the churn: %llu\n", (unsigned long long)bad);
	return bad != 0;
}
