/* fork() while a signal handler allocates on the forking thread. fork runs
 * the atfork prepare handlers (sigmalloc's, then jemalloc's, which lock
 * every jemalloc mutex), the fork system call, and the parent's or child's
 * handlers, which unlock them. A handler that lands in between and reaches
 * jemalloc (a large block: jemalloc at once, at depth 0) waits on a lock
 * its own thread holds. A timer sends SIGPROF to the main thread every
 * 50 us while it forks 300 times; the handler allocates and frees a 64 KiB
 * block and 200 blocks of 16 B (past the bucket's batch: refills and
 * trims). A hang is caught by alarm(): the test is killed by SIGALRM and
 * fails. Each child allocates too, and exits 0. */
#define _GNU_SOURCE
#include <signal.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "signal-timer.h"
#include "testhelper.h"

enum { FORKS = 300 };

static atomic_long handled;

static void handler(int sig)
{
	(void)sig;
	char *big = malloc(64 * 1024);
	if (big)
		big[4096] = 1;
	static void *v[200];
	for (int i = 0; i < 200; i++)
		v[i] = malloc(16);
	for (int i = 0; i < 200; i++)
		free(v[i]);
	free(big);
	atomic_fetch_add_explicit(&handled, 1, memory_order_relaxed);
}

int main(void)
{
	alarm(60);
	struct sigaction sa;
	memset(&sa, 0, sizeof sa);
	sa.sa_handler = handler;
	sa.sa_flags = SA_RESTART;
	sigaction(SIGPROF, &sa, NULL);
	free(malloc(1)); /* sigmalloc and jemalloc set up before the first fork */
	timer_t timer = thread_timer_start(SIGPROF, 50 * 1000);

	int bad_children = 0;
	for (int i = 0; i < FORKS; i++) {
		pid_t pid = fork();
		if (pid < 0) {
			bad_children++;
			continue;
		}
		if (pid == 0) {
			void *p = malloc(100);
			void *q = malloc(100 * 1000);
			free(p);
			free(q);
			_exit(p && q ? 0 : 1);
		}
		int st;
		while (waitpid(pid, &st, 0) < 0)
			; /* EINTR: SIGPROF */
		bad_children += !(WIFEXITED(st) && WEXITSTATUS(st) == 0);
	}
	timer_delete(timer);
	signal(SIGPROF, SIG_IGN);
	fprintf(stderr, "%d forks, %ld handlers ran\n", FORKS, (long)atomic_load(&handled));
	CHECK("every child exits 0", bad_children == 0);
	CHECK("handlers ran during the forks", atomic_load(&handled) > FORKS);
	return print_test_summary();
}
