/* docs/measure: the monotonic clock in nanoseconds, shared by the
 * measurement programs here (async-signal-safe: clock_gettime). */
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

#endif
