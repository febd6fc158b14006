/* docs/MEMORY.md, "One jemalloc arena per size class": resident memory of N
 * jemalloc arenas (arenas.create, default hooks), one 64-byte object each,
 * in a program that links jemalloc and nothing of sigmalloc.
 *
 *   gcc -O2 -o /tmp/arena-cost docs/measure/arena-cost.c -ljemalloc
 *   for n in 1 8 28; do /tmp/arena-cost $n; done
 */
#include <jemalloc/jemalloc.h>
#include <stdio.h>
#include <stdlib.h>

static long rss_kib(void)
{
	long pages = 0, resident = 0;
	FILE *f = fopen("/proc/self/statm", "r");
	if (!f || fscanf(f, "%ld %ld", &pages, &resident) != 2)
		resident = 0;
	if (f)
		fclose(f);
	return resident * 4;
}

int main(int argc, char **argv)
{
	int n = argc > 1 ? atoi(argv[1]) : 28;
	void *first = mallocx(64, 0);
	long before = rss_kib();
	for (int i = 0; i < n; i++) {
		unsigned ind;
		size_t len = sizeof ind;
		if (mallctl("arenas.create", &ind, &len, NULL, 0) != 0)
			return 1;
		if (!mallocx(64, MALLOCX_ARENA(ind) | MALLOCX_TCACHE_NONE))
			return 1;
	}
	long grown = rss_kib() - before;
	printf("%d arenas: +%ld KiB resident (%ld KiB each)\n", n, grown, n ? grown / n : 0);
	dallocx(first, 0);
	return 0;
}
