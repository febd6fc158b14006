/* docs/measure: where the near copy of sigmalloc's hit paths is
 * (preload/near.c): the one-page anonymous executable mapping of the
 * process, found in /proc/self/maps. NULL without the copy (another
 * allocator, SIGMALLOC_NEAR=0, or a program the copy does not serve). */
#ifndef SM_MEASURE_NEAR_PAGE_H
#define SM_MEASURE_NEAR_PAGE_H

#include <stdio.h>

static const unsigned char *find_near_page(void)
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

#endif
