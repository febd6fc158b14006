/*
 * The refill thread must not keep a process alive: a thread forks; the
 * child starts and joins a thread (which starts the child's refill thread),
 * then its last application thread leaves with pthread_exit. glibc ends a
 * process when its last thread exits, with status 0; under sigmalloc the
 * refill thread notices it is alone and exits too (found by CPython's
 * test_threading, test_3_join_in_forked_from_thread). The meson timeout
 * catches the hang.
 */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>

static void *touch(void *a)
{
	for (int i = 0; i < 1000; i++)
		free(malloc(16 + (size_t)i % 500));
	return a;
}

static void *worker(void *a)
{
	(void)a;
	pid_t pid = fork();
	if (pid > 0) {
		int st = 0;
		waitpid(pid, &st, 0);
		int ok = WIFEXITED(st) && WEXITSTATUS(st) == 0;
		printf("fork-exit: child %s %d\n", WIFEXITED(st) ? "exited with" : "killed by",
		       WIFEXITED(st) ? WEXITSTATUS(st) : WTERMSIG(st));
		printf("%d passed, %d failed\n", ok, !ok);
		exit(ok ? 0 : 1);
	}
	pthread_t t;
	pthread_create(&t, NULL, touch, NULL);
	pthread_join(t, NULL);
	touch(NULL);
	pthread_exit(NULL);
}

int main(void)
{
	pthread_t w;
	free(malloc(1000));
	pthread_create(&w, NULL, worker, NULL);
	pthread_join(w, NULL);
	return 1; /* not reached: the worker exits */
}
