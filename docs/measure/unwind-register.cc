/*
 * README.md, "The near copy": why the copy's unwind info is not registered
 * with libgcc. Registering any frame (__register_frame, as a JIT does) turns
 * on libgcc's list of registered objects, which Debian 12's libgcc (GCC 12)
 * searches under one process-wide mutex in every frame lookup; without
 * registrations the lookup is lock-free (_dl_find_object). A SIGPROF
 * handler that calls backtrace() while its thread is in a C++ throw then
 * waits for the mutex that its own thread holds.
 *
 * The program throws through 9 frames 200,000 times under a 50 us
 * ITIMER_PROF whose handler calls backtrace(); with "reg" it first
 * registers one FDE for a 16-byte range of its own data (never executed).
 * A 5 s alarm reports a hang. NOSIG=1 runs without the timer, to time a
 * throw with and without the registration.
 *
 *   g++ -O2 -o /tmp/unwind-register docs/measure/unwind-register.cc
 *   /tmp/unwind-register; /tmp/unwind-register reg
 *   for i in 1 2 3 4 5; do NOSIG=1 taskset -c 1 /tmp/unwind-register; \
 *       NOSIG=1 taskset -c 1 /tmp/unwind-register reg; done
 */
#include <execinfo.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#include <stdexcept>

extern "C" void __register_frame(void *);

static void *frames[64];
static volatile unsigned long samples, throws;

static void on_prof(int) { backtrace(frames, 64); samples = samples + 1; }

static void on_alarm(int)
{
	char b[128];
	int n = snprintf(b, sizeof b, "HUNG after %lu throws, %lu samples\n", throws, samples);
	if (write(2, b, (size_t)n) < 0) {}
	_exit(2);
}

__attribute__((noinline)) static void thrower(int depth)
{
	if (depth == 0)
		throw std::runtime_error("x");
	thrower(depth - 1);
	__asm__ volatile(""); // not a tail call: one frame per level
}

// One CIE (version 1, "zR", code align 1, data align -8, return address
// r16, FDE pointers pc-relative sdata4; CFA = rsp + 8, ra at cfa - 8) and
// one FDE for `target`, then the zero terminator.
alignas(8) static unsigned char eh_frame[64];
static unsigned char target[16];

static void register_one_frame(void)
{
	static const unsigned char cie[24] = {0x14, 0, 0, 0, 0, 0, 0, 0, 1, 'z', 'R', 0,
	                                      1, 0x78, 0x10, 1, 0x1b, 0x0c, 7, 8, 0x90, 1, 0, 0};
	memcpy(eh_frame, cie, sizeof cie);
	unsigned char *fde = eh_frame + sizeof cie;
	uint32_t len = 20, cie_ptr = (uint32_t)(fde + 4 - eh_frame);
	int32_t pc = (int32_t)(target - (fde + 8)), range = sizeof target;
	memcpy(fde, &len, 4);
	memcpy(fde + 4, &cie_ptr, 4);
	memcpy(fde + 8, &pc, 4);
	memcpy(fde + 12, &range, 4); // then augmentation length 0 and DW_CFA_nop padding
	__register_frame(eh_frame);
}

int main(int argc, char **argv)
{
	bool reg = argc > 1 && strcmp(argv[1], "reg") == 0;
	if (reg)
		register_one_frame();
	backtrace(frames, 1); // loads libgcc_s before the first signal
	signal(SIGPROF, on_prof);
	signal(SIGALRM, on_alarm);
	struct itimerval it = {{0, 50}, {0, 50}};
	if (!getenv("NOSIG"))
		setitimer(ITIMER_PROF, &it, NULL);
	alarm(5);
	struct timespec t0, t1;
	clock_gettime(CLOCK_MONOTONIC, &t0);
	for (int i = 0; i < 200000; i++) {
		try {
			thrower(8);
		} catch (const std::exception &) {
			throws = throws + 1;
		}
	}
	clock_gettime(CLOCK_MONOTONIC, &t1);
	double ns = (double)(t1.tv_sec - t0.tv_sec) * 1e9 + (double)(t1.tv_nsec - t0.tv_nsec);
	printf("%s: %lu throws, %lu samples, %.0f ns per throw\n", reg ? "registered" : "none",
	       throws, samples, ns / (double)throws);
	return 0;
}
