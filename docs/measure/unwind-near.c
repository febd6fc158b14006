/* README.md, "The near copy": what a DWARF unwinder makes of a signal that
 * lands in the near copy (preload/near.c). A loop of malloc(64) + free runs
 * under a SIGPROF timer; the handler takes the first sample whose
 * interrupted PC is in the copy's page, unwinds from there with glibc's
 * backtrace() (libgcc's unwinder) and prints the frames. The copy is an
 * anonymous page with no unwind info, so the trace ends at its PC: the
 * loop and main are missing. With SIGMALLOC_NEAR=0 the program's calls go
 * to libsigmalloc.so, whose .eh_frame the unwinder finds, and the handler
 * reports the first sample in the library instead, with the whole stack.
 *
 *   gcc -O2 -rdynamic -Wl,-z,lazy -o /tmp/unwind-near docs/measure/unwind-near.c -ldl
 *   LD_PRELOAD=$PWD/build/preload/libsigmalloc.so /tmp/unwind-near
 *   LD_PRELOAD=$PWD/build/preload/libsigmalloc.so SIGMALLOC_NEAR=0 /tmp/unwind-near
 */
#define _GNU_SOURCE
#include <execinfo.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>
#include <ucontext.h>

#include "targets.h"

static uintptr_t lo, hi; /* the PCs a sample must land in */
static void *frames[64];
static int n_frames;
static uintptr_t sample_pc;
static volatile sig_atomic_t taken;

static void handler(int sig, siginfo_t *si, void *ucv)
{
	(void)sig, (void)si;
	uintptr_t pc = (uintptr_t)((ucontext_t *)ucv)->uc_mcontext.gregs[REG_RIP];
	if (taken || pc < lo || pc >= hi)
		return;
	sample_pc = pc;
	n_frames = backtrace(frames, 64);
	taken = 1;
}

__attribute__((noinline)) static void allocating_loop(void)
{
	while (!taken) {
		void *p = malloc(64);
		__asm__ volatile("" : : "r"(p) : "memory");
		free(p);
	}
}

int main(void)
{
	const unsigned char *near = find_near_page();
	Dl_info lib;
	if (near) {
		lo = (uintptr_t)near, hi = lo + 4096;
	} else if (dladdr(dlsym(RTLD_DEFAULT, "malloc"), &lib) && lib.dli_fbase) {
		lo = (uintptr_t)lib.dli_fbase, hi = lo + (64u << 20); /* the library's image */
	} else {
		fprintf(stderr, "no near copy and no malloc library found\n");
		return 1;
	}
	backtrace(frames, 1); /* loads libgcc_s before the first signal */
	struct sigaction sa;
	memset(&sa, 0, sizeof sa);
	sa.sa_sigaction = handler;
	sa.sa_flags = SA_SIGINFO | SA_RESTART;
	sigaction(SIGPROF, &sa, NULL);
	struct itimerval it = {{0, 100}, {0, 100}};
	setitimer(ITIMER_PROF, &it, NULL);
	allocating_loop();
	signal(SIGPROF, SIG_IGN);
	printf("sample at %#lx, in the %s; backtrace() found %d frames:\n", (unsigned long)sample_pc,
	       near ? "near copy" : "malloc library", n_frames);
	fflush(stdout);
	backtrace_symbols_fd(frames, n_frames, 1);
	return 0;
}
