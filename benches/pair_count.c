/*
 * Instruction counting driver (docs/PERFORMANCE.md): N malloc(64)/free
 * pairs, nothing else. Run it under valgrind --tool=callgrind for two
 * values of N, with LD_PRELOAD of the allocator to measure:
 *   instructions per pair = (Ir(N2) - Ir(N1)) / (N2 - N1)
 * which cancels start-up, the first refill and exit.
 * Usage: pair_count N [size]
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

static inline void escape(void *p)
{
	__asm__ volatile("" : : "r"(p) : "memory");
}

int main(int argc, char **argv)
{
	if (argc < 2) {
		fprintf(stderr, "usage: %s N [size]\n", argv[0]);
		return 2;
	}
	unsigned long n = strtoul(argv[1], NULL, 10);
	size_t size = argc > 2 ? strtoul(argv[2], NULL, 10) : 64;
	for (unsigned long i = 0; i < n; i++) {
		char *p = malloc(size);
		escape(p);
		p[0] = (char)i;
		free(p);
	}
	return 0;
}
