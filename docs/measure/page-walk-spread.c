/* docs/PERFORMANCE.md, "Session 16": what a TLB miss costs when the pages
 * are spread over regions far apart, as sigmalloc's class slots are (each
 * class in its own 64 GiB: its own page-directory page, so a page walk
 * finds fewer of its upper levels cached), against the same pages close
 * together, as in jemalloc's heap.
 *
 * REGIONS regions, SPACING_LOG2 apart, each with PAGES pages touched at
 * sigmalloc's page colour (region r starts r * 9 pages in, internal.h);
 * one random cycle through one word of every page (a different line in
 * each), walked by dependent loads. 7,168 pages is more than this core's
 * second-level data TLB holds (3,072 entries on Zen 4), so nearly every
 * hop is a TLB miss and a page walk.
 *
 *   gcc -O2 -o /tmp/page-walk-spread docs/measure/page-walk-spread.c
 *   for i in 1 2 3 4 5 6; do for a in "28 256 36" "28 256 30" "28 256 23" "1 7168 36"; do \
 *       taskset -c 1 /tmp/page-walk-spread $a; done; done
 *
 * Session 16, Zen 4 KVM guest, 6 interleaved launches of each, ns per hop,
 * median (range):
 *   28 regions 64 GiB apart (sigmalloc's layout)   39.2 (33.1-47.9)
 *   28 regions 1 GiB apart                         37.3 (32.9-47.3)
 *   28 regions 8 MiB apart                         29.7 (25.8-34.6)
 *   1 region, the same 7,168 pages contiguous      28.3 (23.3-34.8)
 */
#define _GNU_SOURCE
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <time.h>

static double now(void)
{
	struct timespec t;
	clock_gettime(CLOCK_MONOTONIC, &t);
	return (double)t.tv_sec + (double)t.tv_nsec * 1e-9;
}

int main(int argc, char **argv)
{
	if (argc < 4) {
		fprintf(stderr, "usage: %s REGIONS PAGES SPACING_LOG2\n", argv[0]);
		return 2;
	}
	long regions = atol(argv[1]), pages = atol(argv[2]), shift = atol(argv[3]);
	long n = regions * pages;
	size_t span = ((size_t)regions << shift) + ((size_t)1 << 30);
	char *map = mmap(NULL, span, PROT_READ | PROT_WRITE,
	                 MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
	if (map == MAP_FAILED) {
		perror("mmap");
		return 1;
	}
	/* 1 GiB aligned, as a slot is aligned to its size */
	char *base = (char *)(((uintptr_t)map + ((uintptr_t)1 << 30) - 1) & ~(((uintptr_t)1 << 30) - 1));
	void **page = malloc((size_t)n * sizeof *page);
	long *order = malloc((size_t)n * sizeof *order);
	if (!page || !order)
		return 1;
	for (long r = 0; r < regions; r++)
		for (long i = 0; i < pages; i++) {
			char *p = base + ((size_t)r << shift) + (size_t)((r * 9) % 256) * 4096 +
			          (size_t)i * 4096 + (size_t)((i * 64) % 4096);
			page[r * pages + i] = p;
			order[r * pages + i] = r * pages + i;
		}
	srand(1);
	for (long i = n - 1; i > 0; i--) {
		long j = rand() % (i + 1), t = order[i];
		order[i] = order[j];
		order[j] = t;
	}
	for (long i = 0; i < n; i++)
		*(void **)page[order[i]] = page[order[(i + 1) % n]];
	void **p = page[order[0]];
	for (long i = 0; i < n; i++) /* once round, untimed */
		p = *p;
	const long hops = 20000000;
	double t0 = now();
	for (long i = 0; i < hops; i++)
		p = *p;
	double t1 = now();
	printf("%ld regions, %ld pages, 2^%ld apart: %.2f ns per hop (%p)\n", regions, n, shift,
	       (t1 - t0) * 1e9 / (double)hops, (void *)p);
	return 0;
}
