/* docs/MEMORY.md, "fork() is slower with many arenas": the time fork() takes
 * in the parent and the page faults on each side, for a program that has
 * made 10,000 allocations of 1..3000 B (so that most size classes have
 * earned a jemalloc arena of their own). 100 fork / _exit / waitpid cycles;
 * the parent frees and allocates one block between them.
 *
 *   gcc -O2 -o /tmp/fork-faults docs/measure/fork-faults.c
 *   LD_PRELOAD=/usr/lib/x86_64-linux-gnu/libjemalloc.so.2 /tmp/fork-faults
 *   LD_PRELOAD=$PWD/build/preload/libsigmalloc.so /tmp/fork-faults
 * Where the parent's faults are: perf record -e page-faults -c 1 -d, then
 * perf script -F pid,addr,ip,dso (docs/MEMORY.md).
 */
#include <stdio.h>
#include <stdlib.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "clock.h"

int main(void)
{
	static void *v[10000];
	for (int i = 0; i < 10000; i++)
		v[i] = malloc((size_t)(i % 3000 + 1));
	struct rusage before, after, children;
	getrusage(RUSAGE_SELF, &before);
	uint64_t t0 = now_ns(), in_fork = 0;
	for (int k = 0; k < 100; k++) {
		uint64_t s = now_ns();
		pid_t p = fork();
		if (p == 0)
			_exit(0);
		in_fork += now_ns() - s;
		waitpid(p, NULL, 0);
		free(v[k]);
		v[k] = malloc((size_t)k + 1);
	}
	uint64_t t1 = now_ns();
	getrusage(RUSAGE_SELF, &after);
	getrusage(RUSAGE_CHILDREN, &children);
	printf("per cycle %.2f ms, of which fork() in the parent %.2f ms; minor faults: parent "
	       "%.1f per cycle, child %.1f\n",
	       (double)(t1 - t0) / 100 / 1e6, (double)in_fork / 100 / 1e6,
	       (double)(after.ru_minflt - before.ru_minflt) / 100, (double)children.ru_minflt / 100);
	return 0;
}
