/* docs/MEMORY.md, "Arenas": how many jemalloc arenas exist and what their
 * bookkeeping costs, as threads come and go. The main thread, then THREADS
 * threads one after another (each joined before the next starts), allocate
 * and free one block of every size class (8 B .. 4000 B); after each, the
 * resident size and jemalloc's own figures: stats.metadata, and per arena
 * stats.arenas.<i>.base (its bookkeeping) and .nthreads. Under sigmalloc
 * and under jemalloc alone; mallctl is looked up with dlsym, so the same
 * binary runs under either (libsigmalloc.so links libjemalloc.so).
 *
 *   gcc -O2 -o /tmp/jemalloc-arenas docs/measure/jemalloc-arenas.c -ldl -lpthread
 *   LD_PRELOAD=$PWD/build/preload/libsigmalloc.so /tmp/jemalloc-arenas 4
 *   LD_PRELOAD=/usr/lib/x86_64-linux-gnu/libjemalloc.so.2 /tmp/jemalloc-arenas 4
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#include "../../tests/rss.h"

typedef int (*mallctl_fn)(const char *, void *, size_t *, void *, size_t);
static mallctl_fn ctl;

static size_t read_size(const char *name)
{
	size_t v = 0, len = sizeof v;
	return ctl(name, &v, &len, NULL, 0) == 0 ? v : 0;
}

static unsigned read_unsigned(const char *name)
{
	unsigned v = 0;
	size_t len = sizeof v;
	return ctl(name, &v, &len, NULL, 0) == 0 ? v : 0;
}

static void *every_class(void *arg)
{
	(void)arg;
	static const int sizes[] = { 8,   24,   40,   56,   72,   88,   104,  120,  150,  180,
	                             210, 240,  300,  360,  420,  500,  600,  700,  850,  1000,
	                             1200, 1500, 1700, 2000, 2500, 3000, 3500, 4000 };
	void *p[sizeof sizes / sizeof sizes[0]];
	for (unsigned i = 0; i < sizeof sizes / sizeof sizes[0]; i++)
		p[i] = malloc((size_t)sizes[i]);
	for (unsigned i = 0; i < sizeof sizes / sizeof sizes[0]; i++)
		free(p[i]);
	return NULL;
}

static void report(const char *when)
{
	uint64_t epoch = 1;
	size_t len = sizeof epoch;
	ctl("epoch", &epoch, &len, &epoch, len);
	unsigned narenas = read_unsigned("arenas.narenas"), used = 0;
	size_t base = 0;
	for (unsigned i = 0; i < narenas; i++) {
		char name[64];
		snprintf(name, sizeof name, "stats.arenas.%u.base", i);
		size_t b = read_size(name);
		if (b) {
			used++;
			if (i)
				base += b;
		}
	}
	printf("%-9s rss %5ld KiB; arenas in use %2u of %2u, their bookkeeping (not arena 0) "
	       "%5zu KiB; stats.metadata %6zu KiB\n",
	       when, rss_kib(), used, narenas, base >> 10, read_size("stats.metadata") >> 10);
}

int main(int argc, char **argv)
{
	int threads = argc > 1 ? atoi(argv[1]) : 4;
	ctl = (mallctl_fn)(uintptr_t)dlsym(RTLD_DEFAULT, "mallctl");
	if (!ctl) {
		fprintf(stderr, "no mallctl: run under libsigmalloc.so or libjemalloc.so\n");
		return 1;
	}
	every_class(NULL);
	report("main");
	for (int i = 0; i < threads; i++) {
		pthread_t t;
		pthread_create(&t, NULL, every_class, NULL);
		pthread_join(t, NULL);
		char when[32];
		snprintf(when, sizeof when, "thread %d", i + 2);
		report(when);
	}
	return 0;
}
