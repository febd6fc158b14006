/* docs/measure: the churn that the signal-handler probes run on the
 * signalled thread (handler-paths.c, handler-first-call.c,
 * handler-nested-warm.c, handler-several.c), the same as the
 * signal benchmark's (benches/workloads.c): 4096 blocks of 16..1040 B,
 * each step frees a random block after checking the tag in its first and
 * last byte and mallocs a block of a random size in its place, tagged. */
#ifndef SM_MEASURE_CHURN_H
#define SM_MEASURE_CHURN_H

#include <stdint.h>
#include <stdlib.h>

#include "clock.h"
#include "sigprof.h"

static inline uint64_t splitmix(uint64_t *s)
{
	uint64_t z = (*s += 0x9e3779b97f4a7c15ull);
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
	return z ^ (z >> 31);
}

/* Keeps p (and what it points to) live for the compiler. */
static inline void escape(void *p)
{
	__asm__ volatile("" : : "g"(p) : "memory");
}

enum { CHURN_SLOTS = 4096, CHURN_PLAN = 1 << 16 };
struct churn {
	void *live[CHURN_SLOTS];
	uint16_t sizes[CHURN_SLOTS];
	uint32_t plan[CHURN_PLAN]; /* slot << 11 | size, precomputed */
	uint32_t pos;
};

/* Allocates and tags the working set (before the timer starts). */
static inline void churn_init(struct churn *c)
{
	uint64_t s = 7 * 0x2545f4914f6cdd1dull + 1;
	for (uint32_t i = 0; i < CHURN_PLAN; i++)
		c->plan[i] = (uint32_t)(splitmix(&s) & (CHURN_SLOTS - 1)) << 11 |
		             (16 + (uint32_t)(splitmix(&s) % 1025));
	for (uint32_t i = 0; i < CHURN_SLOTS; i++) {
		uint32_t z = 16 + (uint32_t)(splitmix(&s) % 1025);
		unsigned char *p = malloc(z);
		p[0] = p[z - 1] = 0x5a;
		c->live[i] = p;
		c->sizes[i] = (uint16_t)z;
	}
	c->pos = 0;
}

/* Churns for `seconds`; returns how many blocks were found with a changed
 * tag (a corrupted heap). inside, if not NULL, is 1 while the step is in
 * free + malloc and 0 otherwise, for a handler to tell which it
 * interrupted. Always inlined, so that a NULL inside costs no test. */
static inline __attribute__((always_inline)) uint64_t churn_run(struct churn *c, int seconds,
                                                               volatile int *inside)
{
	uint64_t bad = 0, end = now_ns() + (uint64_t)seconds * 1000000000u;
	while (now_ns() < end)
		for (int k = 0; k < 10000; k++) {
			uint32_t e = c->plan[c->pos++ & (CHURN_PLAN - 1)], slot = e >> 11, z = e & 0x7ff;
			unsigned char *old = c->live[slot];
			if (old[0] != 0x5a || old[c->sizes[slot] - 1] != 0x5a)
				bad++;
			if (inside)
				*inside = 1;
			free(old);
			unsigned char *p = malloc(z);
			if (inside)
				*inside = 0;
			escape(p);
			p[0] = p[z - 1] = 0x5a;
			c->live[slot] = p;
			c->sizes[slot] = (uint16_t)z;
		}
	return bad;
}

/* The probes' run: churns for `seconds` while a 100 us timer sends this
 * thread SIGPROF, caught by handler; returns churn_run's count. */
static inline __attribute__((always_inline)) uint64_t churn_under_sigprof(void (*handler)(int),
                                                                         int seconds,
                                                                         volatile int *inside)
{
	static struct churn c;
	churn_init(&c);
	timer_t timer = sigprof_start(handler, 100);
	uint64_t bad = churn_run(&c, seconds, inside);
	sigprof_stop(timer);
	return bad;
}

#endif
