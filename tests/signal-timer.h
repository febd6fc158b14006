/* A CLOCK_MONOTONIC timer that sends sig to the calling thread every
 * period_ns (tests, and the docs/measure probes through sigprof.h); exits
 * on failure. */
#ifndef SM_TESTS_SIGNAL_TIMER_H
#define SM_TESTS_SIGNAL_TIMER_H

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

static inline timer_t thread_timer_start(int sig, long period_ns)
{
	struct sigevent sev;
	memset(&sev, 0, sizeof sev);
	sev.sigev_notify = SIGEV_THREAD_ID;
	sev.sigev_signo = sig;
	sev._sigev_un._tid = (pid_t)syscall(SYS_gettid);
	timer_t timer;
	if (timer_create(CLOCK_MONOTONIC, &sev, &timer) != 0) {
		perror("timer_create");
		exit(1);
	}
	struct itimerspec its = { { 0, period_ns }, { 0, period_ns } };
	timer_settime(timer, 0, &its, NULL);
	return timer;
}

#endif
