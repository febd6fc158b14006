/* docs/measure: what the signal-handler probes share (handler-cold.c,
 * handler-paths.c, nested-split.c): a SIGPROF handler on this thread driven
 * by a CLOCK_MONOTONIC timer, and the quantiles of a sample array. */
#ifndef SM_MEASURE_SIGPROF_H
#define SM_MEASURE_SIGPROF_H

#define _GNU_SOURCE
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include "../../tests/signal-timer.h"

/* Installs handler for SIGPROF (SA_RESTART) and starts a timer that sends
 * it to the calling thread every period_us; exits on failure. */
static inline timer_t sigprof_start(void (*handler)(int), long period_us)
{
	struct sigaction sa;
	memset(&sa, 0, sizeof sa);
	sa.sa_handler = handler;
	sa.sa_flags = SA_RESTART;
	sigaction(SIGPROF, &sa, NULL);
	return thread_timer_start(SIGPROF, period_us * 1000);
}

/* Stops the timer; a SIGPROF still pending is ignored. */
static inline void sigprof_stop(timer_t timer)
{
	timer_delete(timer);
	signal(SIGPROF, SIG_IGN);
}

static int sigprof_cmp_u32(const void *a, const void *b)
{
	uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
	return (x > y) - (x < y);
}

/* Sorts v and prints "name: n p50 p90 p99 p999" on one line (nothing for
 * an empty array); end is what follows it ("\n" or "  "). */
static inline void sigprof_report(const char *name, uint32_t *v, uint32_t n, const char *end)
{
	if (!n)
		return;
	qsort(v, n, sizeof *v, sigprof_cmp_u32);
	printf("%-14s n=%6u p50=%4u p90=%4u p99=%5u p999=%6u%s", name, n, v[n / 2],
	       v[n * 9 / 10], v[n * 99 / 100], v[n * 999 / 1000], end);
}

#endif
