/* docs/measure: the malloc-free pair loop that pair-loop.c and call-cost.c
 * time: malloc(size), write its first byte, free, n times. The pointer is
 * kept live (the asm and the sum) so that the compiler cannot drop the
 * pair. Defines `linkage double name(size_t size, long n)`, returning ns per
 * pair, over the allocator's entry points alloc and release. */
#ifndef SM_MEASURE_PAIR_LOOP_H
#define SM_MEASURE_PAIR_LOOP_H

#include <stddef.h>
#include <stdint.h>

#include "clock.h"

#define DEFINE_PAIR_LOOP(linkage, name, alloc, release)                            \
	linkage double name(size_t size, long n)                                   \
	{                                                                          \
		uintptr_t sum = 0;                                                 \
		uint64_t t0 = now_ns();                                            \
		for (long i = 0; i < n; i++) {                                     \
			char *p = alloc(size);                                     \
			__asm__ volatile("" : : "r"(p) : "memory");                \
			p[0] = (char)i;                                            \
			sum += (uintptr_t)p >> 4;                                  \
			release(p);                                                \
		}                                                                  \
		return (double)(now_ns() - t0) / (double)n + (double)(sum & 1) * 1e-12; \
	}

#endif
