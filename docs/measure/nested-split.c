/* docs/PERFORMANCE.md, "What changed": which path a SIGPROF handler's
 * malloc + free takes inside sigmalloc, and what each costs. Links the
 * static core (sm_* names) so that the handler can look at the thread's
 * depth and stock before it calls in: "fast" (depth 0 and a hit), "slow-*"
 * (depth 0, the bucket at a watermark), "nested" (the signal interrupted
 * the churn's allocator call), with the nested malloc and free also timed
 * apart. The churn fills every block (memset), which evicts what the
 * handler would find warm; TOUCH (second argument) reads, untimed, the
 * stock's line (1) or also the first block in it (2) before a nested
 * malloc, to see which miss the time goes to. The nested mallocs are also
 * filed by whether the class's stock had a full slot when the handler
 * started ("nm with slot", "nm no slot").
 *
 *   gcc -O2 -Isrc -Iinclude -o /tmp/nested-split docs/measure/nested-split.c \
 *       build/src/libsigmalloc-core.a -ljemalloc -lpthread
 *   /tmp/nested-split 3 [TOUCH]
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

#include "clock.h"
#include "sigprof.h"
#include "internal.h"
#include "sigmalloc.h"

static uint64_t splitmix(uint64_t *s)
{
	uint64_t z = (*s += 0x9e3779b97f4a7c15ull);
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
	return z ^ (z >> 31);
}

#define CAP 400000
enum { P_FAST, P_NESTED, P_SLOW_ALLOC, P_SLOW_FREE, P_NESTED_MALLOC, P_NESTED_FREE, P_NM_SLOT, P_NM_NOSLOT, P_N };
static const char *names[P_N] = { "fast",     "nested",        "slow-alloc",
                                  "slow-free", "nested malloc", "nested free", "nm with slot", "nm no slot" };
static uint32_t samples[P_N][CAP];
static uint32_t counts[P_N];
static uint64_t rng = 0x1234567;
static int touch;

static void record(int path, uint64_t ns)
{
	if (counts[path] < CAP)
		samples[path][counts[path]++] = (uint32_t)ns;
}

static void handler(int sig)
{
	(void)sig;
	int saved = errno;
	uint32_t size = 16 + (uint32_t)(splitmix(&rng) % 241);
	uint32_t cls = class_of_size(size);
	int path = P_FAST;
	int had_slot = 0;
	if (_sm_thread.depth) {
		had_slot = (_sm_thread.stock[cls].state & 0xffff) != 0;
		path = P_NESTED;
		struct sm_stock *s = &_sm_thread.stock[cls];
		if (touch && s->slot[0]) {
			volatile uintptr_t sink = (uintptr_t)s->slot[0];
			if (touch >= 2)
				sink = *(volatile uintptr_t *)s->slot[0];
			(void)sink;
		}
	} else {
		struct sm_bucket *b = &_sm_thread.buckets[cls];
		if (bucket_count(b) <= b->low_mark)
			path = P_SLOW_ALLOC;
		else if (bucket_count(b) >= b->high_mark)
			path = P_SLOW_FREE;
	}
	for (int i = 0; i < 4; i++)
		(void)now_ns();
	uint64_t t0 = now_ns();
	unsigned char *p = sm_malloc(size);
	uint64_t t1 = now_ns(), t2 = t1, t3 = t1;
	if (p) {
		p[0] = p[size - 1] = 0xa5;
		t2 = now_ns();
		sm_free(p);
		t3 = now_ns();
	}
	record(path, (t1 - t0) + (t3 - t2));
	if (path == P_NESTED) {
		record(P_NESTED_MALLOC, t1 - t0);
		record(P_NESTED_FREE, t3 - t2);
		record(had_slot ? P_NM_SLOT : P_NM_NOSLOT, t1 - t0);
	}
	errno = saved;
}

int main(int argc, char **argv)
{
	int seconds = argc > 1 ? atoi(argv[1]) : 3;
	touch = argc > 2 ? atoi(argv[2]) : 0;
	enum { SLOTS = 4096 };
	static void *live[SLOTS];
	static uint16_t sizes[SLOTS];
	uint64_t s = 77, bad = 0;
	for (uint32_t i = 0; i < SLOTS; i++) {
		uint32_t z = 16 + (uint32_t)(splitmix(&s) % 1025);
		live[i] = sm_malloc(z);
		memset(live[i], 0x5a, z);
		sizes[i] = (uint16_t)z;
	}
	timer_t timer = sigprof_start(handler, 100);
	uint64_t end = now_ns() + (uint64_t)seconds * 1000000000u;
	while (now_ns() < end)
		for (int k = 0; k < 10000; k++) {
			uint64_t r = splitmix(&s);
			uint32_t i = (uint32_t)r & (SLOTS - 1), z = 16 + (uint32_t)((r >> 20) % 1025);
			unsigned char *old = live[i];
			if (old[0] != 0x5a || old[sizes[i] - 1] != 0x5a)
				bad++;
			sm_free(old);
			unsigned char *p = sm_malloc(z);
			memset(p, 0x5a, z);
			live[i] = p;
			sizes[i] = (uint16_t)z;
		}
	sigprof_stop(timer);
	for (int k = 0; k < P_N; k++)
		sigprof_report(names[k], samples[k], counts[k], "\n");
	printf("blocks changed under the churn: %llu\n", (unsigned long long)bad);
	return bad != 0;
}
