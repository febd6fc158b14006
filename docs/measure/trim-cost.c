/* docs/MEMORY.md, "Class pools": what malloc_trim costs and gives back
 * when every class's pool was used up and is then freed, in a shuffled
 * order (so that the pools' free lists are far from sorted), all but one
 * block in every KEEP (0: none kept). Prints the trim's time and the
 * resident size before and after it.
 *
 *   gcc -O2 -Idocs/measure -o /tmp/trim-cost docs/measure/trim-cost.c
 *   for l in /usr/lib/x86_64-linux-gnu/libjemalloc.so.2 $PWD/build/preload/libsigmalloc.so; do
 *     LD_PRELOAD=$l /tmp/trim-cost 0; LD_PRELOAD=$l /tmp/trim-cost 64; done
 */
#include <malloc.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "clock.h"

static long rss_kib(void)
{
	FILE *f = fopen("/proc/self/statm", "r");
	long pages = 0, res = 0;
	if (f) {
		if (fscanf(f, "%ld %ld", &pages, &res) != 2)
			res = 0;
		fclose(f);
	}
	return res * 4;
}

int main(int argc, char **argv)
{
	const unsigned keep = argc > 1 ? (unsigned)strtoul(argv[1], NULL, 0) : 0;
	/* sigmalloc's 28 classes, up to 4 KiB; 160 KiB of each, more than
	 * a pool's 128 KiB. */
	static const size_t sizes[] = { 16,   32,   48,   64,   80,   96,   112,  128,  160,  192,
	                                224,  256,  320,  384,  448,  512,  640,  768,  896,  1024,
	                                1280, 1536, 1792, 2048, 2560, 3072, 3584, 4096 };
	enum { CLASSES = sizeof sizes / sizeof sizes[0], SPAN = 160 * 1024 };
	size_t n = 0;
	for (int c = 0; c < CLASSES; c++)
		n += SPAN / sizes[c];
	void **v = malloc(n * sizeof *v);
	if (!v)
		return 1;
	size_t k = 0;
	for (int c = 0; c < CLASSES; c++)
		for (size_t i = 0; i < SPAN / sizes[c]; i++) {
			v[k] = malloc(sizes[c]);
			memset(v[k], 1, sizes[c]);
			k++;
		}
	uint32_t seed = 12345;
	for (size_t i = n - 1; i > 0; i--) { /* Fisher-Yates */
		seed ^= seed << 13, seed ^= seed >> 17, seed ^= seed << 5;
		size_t j = seed % (i + 1);
		void *t = v[i];
		v[i] = v[j];
		v[j] = t;
	}
	size_t kept = 0;
	for (size_t i = 0; i < n; i++) {
		if (keep && i % keep == 0) {
			kept++;
			continue;
		}
		free(v[i]);
	}
	long before = rss_kib();
	uint64_t t0 = now_ns();
	malloc_trim(0);
	uint64_t t1 = now_ns();
	long after = rss_kib();
	printf("%zu blocks, %zu kept; malloc_trim %.2f ms; resident %ld KiB before, %ld after\n", n,
	       kept, (double)(t1 - t0) / 1e6, before, after);
	return 0;
}
