/* docs/PERFORMANCE.md, "Refill cost": allocate N blocks of SIZE bytes
 * (touching each), then free them all, ROUNDS times; prints ns per block for
 * each half, averaged over the rounds after the first. A wave far above any
 * per-thread cache: every block passes through the backend both ways.
 *
 *   gcc -O2 -o /tmp/wave docs/measure/wave.c
 *   for l in "" /usr/lib/x86_64-linux-gnu/libjemalloc.so.2 $PWD/build/preload/libsigmalloc.so; do
 *     LD_PRELOAD=$l /tmp/wave 200000 64 20; done
 */
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#include "clock.h"


int main(int argc, char **argv)
{
	size_t n = argc > 1 ? strtoul(argv[1], NULL, 0) : 200000;
	size_t size = argc > 2 ? strtoul(argv[2], NULL, 0) : 64;
	int rounds = argc > 3 ? atoi(argv[3]) : 20;
	void **v = malloc(n * sizeof *v);
	if (!v || rounds < 2)
		return 1;
	double alloc_ns = 0, free_ns = 0;
	for (int r = 0; r < rounds; r++) {
		uint64_t t0 = now_ns();
		for (size_t i = 0; i < n; i++) {
			v[i] = malloc(size);
			*(volatile char *)v[i] = 1;
		}
		uint64_t t1 = now_ns();
		for (size_t i = 0; i < n; i++)
			free(v[i]);
		uint64_t t2 = now_ns();
		if (r > 0) {
			alloc_ns += (double)(t1 - t0);
			free_ns += (double)(t2 - t1);
		}
	}
	printf("alloc %.1f ns/block, free %.1f ns/block\n", alloc_ns / (rounds - 1) / n,
	       free_ns / (rounds - 1) / n);
	free(v);
	return 0;
}
