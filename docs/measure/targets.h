/* docs/measure: where the probes that warm sigmalloc's lines find them.
 * Both return NULL under another allocator. */
#ifndef SM_MEASURE_TARGETS_H
#define SM_MEASURE_TARGETS_H

#define _GNU_SOURCE
#include <dlfcn.h>
#include <stdio.h>

/* The near copy of sigmalloc's hit paths (preload/near.c): the one-page
 * anonymous executable mapping of the process, found in /proc/self/maps.
 * NULL without the copy (SIGMALLOC_NEAR=0, or a program it does not serve). */

static inline const unsigned char *find_near_page(void)
{
	FILE *f = fopen("/proc/self/maps", "r");
	char line[512];
	const unsigned char *found = NULL;
	while (f && fgets(line, sizeof line, f)) {
		unsigned long lo, hi, ino;
		char perm[8];
		int end = 0;
		if (sscanf(line, "%lx-%lx %7s %*s %*s %lu%n", &lo, &hi, perm, &ino, &end) < 4)
			continue;
		while (line[end] == ' ')
			end++;
		if (perm[2] == 'x' && ino == 0 && hi - lo == 4096 && line[end] == '\n')
			found = (const unsigned char *)lo;
	}
	if (f)
		fclose(f);
	return found;
}

/* The calling thread's TLS block of libsigmalloc.so (its struct sm_thread). */
static inline const unsigned char *find_sigmalloc_tls(void)
{
	void *lib = dlopen("libsigmalloc.so", RTLD_NOLOAD | RTLD_LAZY), *tls = NULL;
	if (lib && dlinfo(lib, RTLD_DI_TLS_DATA, &tls) == 0)
		return tls;
	return NULL;
}

#endif
