/*
 * Thread exit under LD_PRELOAD=libsigmalloc.so: a pthread key destructor
 * (key created after sigmalloc's and jemalloc's, so it runs after both) that
 * allocates every size up to 4 KiB and one large block, and re-arms itself
 * so that it runs in each of glibc's destructor passes. By then jemalloc's
 * own thread state is gone and it would serve any call from its arena 0;
 * sigmalloc must still hand out blocks it can classify (found by the
 * stress-signals test: a SIGALRM handler allocating in glibc's freeres).
 */
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static pthread_key_t key;
static int passes_ok;

static void dtor(void *v)
{
	uintptr_t pass = (uintptr_t)v;
	int ok = 1;
	for (size_t s = 16; s <= 4096; s += 16) {
		unsigned char *volatile p = malloc(s);
		if (!p) {
			ok = 0;
			continue;
		}
		memset(p, 0x5a, s);
		free(p);
	}
	if (ok)
		passes_ok++;
	if (pass < 4)
		pthread_setspecific(key, (void *)(pass + 1));
}

static void *thr(void *a)
{
	static __thread void *keep[1000];
	for (int i = 0; i < 1000; i++) /* this thread gets a sigmalloc cache */
		keep[i] = malloc(16 + i % 256);
	for (int i = 0; i < 1000; i++)
		free(keep[i]);
	pthread_setspecific(key, a);
	return NULL;
}

int main(void)
{
	free(malloc(1)); /* sigmalloc and jemalloc initialised, their keys created */
	pthread_key_create(&key, dtor);
	for (int round = 0; round < 20; round++) {
		pthread_t t;
		pthread_create(&t, NULL, thr, (void *)1);
		pthread_join(t, NULL);
	}
	int failed = passes_ok != 20 * 4;
	printf("late-dtor: %d of %d destructor passes allocated everything\n", passes_ok, 20 * 4);
	printf("%d passed, %d failed\n", !failed, failed);
	return failed;
}
