/* docs/measure: the monotonic clock in nanoseconds, shared by the
 * measurement programs here (async-signal-safe: clock_gettime), and the
 * TSC between fences for the probes that count cycles (x86-64 only). */
#ifndef SM_MEASURE_CLOCK_H
#define SM_MEASURE_CLOCK_H

#include <stdint.h>
#include <time.h>

static inline uint64_t now_ns(void)
{
	struct timespec t;
	clock_gettime(CLOCK_MONOTONIC, &t);
	return (uint64_t)t.tv_sec * 1000000000u + (uint64_t)t.tv_nsec;
}

#if defined(__x86_64__)
#include <x86intrin.h>

/* The TSC, with lfence on either side so that it orders with the code it
 * brackets (this guest's TSC counts in steps of 26 at 2.6 GHz). */
static inline uint64_t tsc_cycles(void)
{
	unsigned aux;
	_mm_lfence();
	uint64_t t = __rdtscp(&aux);
	_mm_lfence();
	return t;
}
#endif

#endif
