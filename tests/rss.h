/* Resident size of this process, from /proc/self/statm (tests, and the
 * docs/measure probes that include it). */
#ifndef SM_TESTS_RSS_H
#define SM_TESTS_RSS_H

#include <stdio.h>
#include <unistd.h>

static inline long rss_kib(void)
{
	FILE *f = fopen("/proc/self/statm", "r");
	long pages = 0, resident = 0;
	if (f) {
		if (fscanf(f, "%ld %ld", &pages, &resident) != 2)
			resident = 0;
		fclose(f);
	}
	return resident * (sysconf(_SC_PAGESIZE) / 1024);
}

#endif
