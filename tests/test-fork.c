/*
 * fork under load (issue 3), through LD_PRELOAD of libsigmalloc.so: two
 * threads churn malloc/free with content checks while the main thread forks
 * 200 times. Each child allocates and frees 200,000 blocks with content
 * checks, creates a thread that allocates too, and exits 0. A child that
 * deadlocks (a lock held across fork by a thread that does not exist in
 * it) is caught by a per-child timeout.
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "testhelper.h"

#define FORKS 200
#define CHILD_OPS 200000
#define SLOTS 1024

static atomic_bool stop;
static atomic_ulong churn_ops;

struct block {
	unsigned char *p;
	size_t n;
	unsigned char tag;
};

/* Sparse: 17 bytes per block, so the test measures the allocator, not memset. */
static void fill(struct block *b, unsigned char tag)
{
	b->tag = tag;
	for (size_t i = 0; i < b->n; i += 1 + b->n / 16)
		b->p[i] = tag;
	b->p[b->n - 1] = tag;
}

static int check(const struct block *b)
{
	for (size_t i = 0; i < b->n; i += 1 + b->n / 16)
		if (b->p[i] != b->tag)
			return 0;
	return b->p[b->n - 1] == b->tag;
}

/* Replaces random slots: returns 0 on a content mismatch or NULL. */
static int churn(struct block *slots, uint32_t *seed, long ops)
{
	for (long i = 0; i < ops; i++) {
		struct block *b = &slots[xorshift32(seed) % SLOTS];
		if (b->p) {
			if (!check(b))
				return 0;
			free(b->p);
		}
		b->n = 1 + xorshift32(seed) % (xorshift32(seed) % 8 ? 512 : 20000);
		b->p = malloc(b->n);
		if (!b->p)
			return 0;
		fill(b, (unsigned char)xorshift32(seed));
	}
	return 1;
}

static void release(struct block *slots)
{
	for (int i = 0; i < SLOTS; i++)
		free(slots[i].p);
}

static void *churn_thread(void *arg)
{
	uint32_t seed = (uint32_t)(uintptr_t)arg;
	struct block *slots = calloc(SLOTS, sizeof *slots);
	while (!atomic_load(&stop)) {
		if (!churn(slots, &seed, 1000)) {
			fprintf(stderr, "fork-test: corruption in a parent churn thread\n");
			abort();
		}
		atomic_fetch_add(&churn_ops, 1000);
	}
	release(slots);
	free(slots);
	return NULL;
}

static void *child_thread(void *arg)
{
	uint32_t seed = (uint32_t)(uintptr_t)arg | 1;
	struct block *slots = calloc(SLOTS, sizeof *slots);
	int ok = slots && churn(slots, &seed, 20000);
	if (slots) {
		release(slots);
		free(slots);
	}
	return ok ? (void *)1 : NULL;
}

static int child_main(int k)
{
	uint32_t seed = 0x9e3779b9u ^ (uint32_t)k;
	struct block *slots = calloc(SLOTS, sizeof *slots);
	if (!slots || !churn(slots, &seed, CHILD_OPS))
		return 2;
	release(slots);
	free(slots);
	pthread_t t;
	void *ok = NULL;
	if (pthread_create(&t, NULL, child_thread, (void *)(uintptr_t)k) != 0)
		return 3;
	pthread_join(t, &ok);
	return ok ? 0 : 4;
}

int main(void)
{
	int have_sigmalloc = dlsym(RTLD_DEFAULT, "sm_malloc") != NULL;
	pthread_t t[2];
	for (int i = 0; i < 2; i++)
		pthread_create(&t[i], NULL, churn_thread, (void *)(uintptr_t)(12345 + i));
	int failed = 0;
	for (int k = 0; k < FORKS && !failed; k++) {
		pid_t pid = fork();
		if (pid < 0) {
			perror("fork");
			failed = 1;
			break;
		}
		if (pid == 0) {
			alarm(30); /* a deadlocked child dies of SIGALRM */
			exit(child_main(k));
		}
		int status;
		waitpid(pid, &status, 0);
		if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
			fprintf(stderr, "fork-test: child %d %s %d\n", k,
			        WIFEXITED(status) ? "exited with" : "killed by signal",
			        WIFEXITED(status) ? WEXITSTATUS(status) : WTERMSIG(status));
			failed = 1;
		}
	}
	atomic_store(&stop, 1);
	for (int i = 0; i < 2; i++)
		pthread_join(t[i], NULL);
	printf("fork-test: %d forks under load (%lu parent churn ops), sigmalloc %s\n", FORKS,
	       atomic_load(&churn_ops), have_sigmalloc ? "preloaded" : "NOT preloaded");
	printf("%d passed, %d failed\n", failed ? 0 : 1, failed);
	return failed || !have_sigmalloc;
}
