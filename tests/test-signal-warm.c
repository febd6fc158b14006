/*
 * preload/signal_warm.c, under LD_PRELOAD: a handler installed with
 * sigaction or signal is entered through one of sigmalloc's stubs (the
 * kernel's disposition, read with the raw rt_sigaction call, is in
 * libsigmalloc.so), while every query returns the program's own pointer;
 * the handler runs with its signal, siginfo and context; so do handlers
 * installed with bsd_signal, ssignal, sysv_signal, __sysv_signal and
 * sigset, which do not call sigaction through the PLT; one handler on
 * two signals shares a stub; a stub's own address given back installs its
 * handler; a failed call (SIGKILL) takes no stub; SA_RESETHAND
 * still resets; once the stubs are all taken, handlers are installed as
 * they are and still work. With SIGMALLOC_SIGNAL_WARM=0 (argument "off")
 * the kernel has the program's pointers.
 *
 *   test-signal-warm [on|off]
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "testhelper.h"

/* Declared by <signal.h> only before POSIX 2008, which _GNU_SOURCE asks for;
 * glibc still exports it. */
extern sighandler_t bsd_signal(int sig, sighandler_t handler);
/* sigset is obsolete, and what is tested here. */
#pragma GCC diagnostic ignored "-Wdeprecated-declarations"


/* The kernel's disposition of sig (handler, and flags if wanted),
 * bypassing glibc and sigmalloc. */
static void *kernel_action(int sig, unsigned long *flags)
{
	struct {
		void *handler;
		unsigned long flags;
		void *restorer;
		uint64_t mask;
	} k;
	REQUIRE(syscall(SYS_rt_sigaction, sig, NULL, &k, 8) == 0);
	if (flags)
		*flags = k.flags;
	return k.handler;
}

static void *kernel_handler(int sig)
{
	return kernel_action(sig, NULL);
}

/* A function's address as data. */
#define FN(f) ((void *)(uintptr_t)(f))

static bool in_sigmalloc(void *p)
{
	Dl_info info;
	return dladdr(p, &info) && info.dli_fname && strstr(info.dli_fname, "libsigmalloc");
}

static volatile int got_sig, got_info_signo, got_uc, one_arg_hits;
static void three_args(int sig, siginfo_t *si, void *uc)
{
	got_sig = sig;
	got_info_signo = si ? si->si_signo : -1;
	got_uc = uc != NULL;
	free(malloc(100)); /* the point of it all */
}
static void one_arg(int sig)
{
	(void)sig;
	one_arg_hits++;
}

/* 70 distinct handlers, more than the stubs. */
#define N_MANY 70
static volatile int many_hits[N_MANY];
#define H(i) static void many_##i(int s) { (void)s; many_hits[i]++; }
#define H10(t) H(t##0) H(t##1) H(t##2) H(t##3) H(t##4) H(t##5) H(t##6) H(t##7) H(t##8) H(t##9)
H10() H10(1) H10(2) H10(3) H10(4) H10(5) H10(6)
#define R(i) many_##i,
#define R10(t) R(t##0) R(t##1) R(t##2) R(t##3) R(t##4) R(t##5) R(t##6) R(t##7) R(t##8) R(t##9)
static void (*const many[N_MANY])(int) = { R10() R10(1) R10(2) R10(3) R10(4) R10(5) R10(6) };

int main(int argc, char **argv)
{
	bool on = !(argc > 1 && strcmp(argv[1], "off") == 0);
	free(malloc(1));

	/* Failed calls (SIGKILL) take no stub: the count at the end holds. */
	for (int i = 0; i < N_MANY; i++) {
		struct sigaction k;
		memset(&k, 0, sizeof k);
		k.sa_handler = many[i];
		errno = 0;
		REQUIRE(sigaction(SIGKILL, &k, NULL) == -1 && errno == EINVAL);
	}

	/* sigaction, SA_SIGINFO: the kernel has a stub, the program its own. */
	struct sigaction sa, old;
	memset(&sa, 0, sizeof sa);
	sa.sa_sigaction = three_args;
	sa.sa_flags = SA_SIGINFO;
	sigemptyset(&sa.sa_mask);
	REQUIRE(sigaction(SIGUSR1, &sa, &old) == 0);
	REQUIRE(old.sa_handler == SIG_DFL);
	void *k1 = kernel_handler(SIGUSR1);
	if (on)
		REQUIRE(k1 != FN(three_args) && in_sigmalloc(k1));
	else
		REQUIRE(k1 == FN(three_args));
	REQUIRE(sigaction(SIGUSR1, NULL, &old) == 0);
	REQUIRE(old.sa_sigaction == three_args && (old.sa_flags & SA_SIGINFO));
	REQUIRE(raise(SIGUSR1) == 0);
	REQUIRE(got_sig == SIGUSR1 && got_info_signo == SIGUSR1 && got_uc);

	/* A stub's address given back (as sigset or sysv_signal return it)
	 * installs the handler it enters, and reads back as that handler. */
	struct sigaction back = sa;
	back.sa_sigaction = (void (*)(int, siginfo_t *, void *))(uintptr_t)k1;
	REQUIRE(sigaction(SIGUSR1, &back, NULL) == 0);
	REQUIRE(kernel_handler(SIGUSR1) == k1);
	REQUIRE(sigaction(SIGUSR1, NULL, &old) == 0 && old.sa_sigaction == three_args);

	/* The same handler on another signal: the same stub. */
	REQUIRE(sigaction(SIGRTMIN, &sa, NULL) == 0);
	REQUIRE(kernel_handler(SIGRTMIN) == k1);

	/* A one-argument handler on the same signal, the old action read back. */
	struct sigaction next = sa;
	next.sa_handler = one_arg;
	next.sa_flags = 0;
	REQUIRE(sigaction(SIGRTMIN, &next, &old) == 0);
	REQUIRE(old.sa_sigaction == three_args);
	REQUIRE(sigaction(SIGRTMIN, NULL, &old) == 0 && old.sa_handler == one_arg);
	REQUIRE(raise(SIGRTMIN) == 0 && one_arg_hits == 1);

	/* signal(): a one-argument handler, returned as it was given. */
	REQUIRE(signal(SIGUSR2, one_arg) == SIG_DFL);
	REQUIRE(on ? in_sigmalloc(kernel_handler(SIGUSR2)) : kernel_handler(SIGUSR2) == FN(one_arg));
	REQUIRE(raise(SIGUSR2) == 0 && one_arg_hits == 2);
	REQUIRE(signal(SIGUSR2, SIG_IGN) == one_arg);
	REQUIRE(kernel_handler(SIGUSR2) == FN(SIG_IGN));
	REQUIRE(signal(SIGUSR2, SIG_DFL) == SIG_IGN);

	/* glibc's other ways to install a handler, which do not call sigaction
	 * through the PLT: wrapped the same, one_arg's stub shared. sysv_signal
	 * is one-shot; sigset's SIG_HOLD blocks the signal. */
	static const struct {
		const char *name;
		sighandler_t (*fn)(int, sighandler_t);
		bool one_shot;
	} like[] = {
		{ "bsd_signal", bsd_signal, false },
		{ "ssignal", ssignal, false },
		{ "sysv_signal", sysv_signal, true },
		{ "__sysv_signal", __sysv_signal, true },
		{ "sigset", sigset, false },
	};
	for (size_t i = 0; i < sizeof like / sizeof like[0]; i++) {
		int hits = one_arg_hits;
		if (like[i].fn(SIGUSR2, one_arg) != SIG_DFL) {
			fprintf(stderr, "FAIL %s: old handler\n", like[i].name);
			return 1;
		}
		unsigned long flags;
		void *k = kernel_action(SIGUSR2, &flags);
		if (on ? !in_sigmalloc(k) : k != FN(one_arg)) {
			fprintf(stderr, "FAIL %s: the kernel has %p\n", like[i].name, k);
			return 1;
		}
		/* glibc's flags, as without sigmalloc: one-shot and unmasked for
		 * System V, restarting for BSD */
		if (like[i].one_shot)
			REQUIRE((flags & (SA_RESETHAND | SA_NODEFER)) == (SA_RESETHAND | SA_NODEFER) &&
			        !(flags & SA_RESTART));
		else if (like[i].fn != sigset)
			REQUIRE(flags & SA_RESTART);
		REQUIRE(raise(SIGUSR2) == 0 && one_arg_hits == hits + 1);
		sighandler_t want = like[i].one_shot ? SIG_DFL : one_arg;
		if (!like[i].one_shot) {
			REQUIRE(like[i].fn(SIGUSR2, one_arg) == one_arg); /* installed again */
			REQUIRE(kernel_handler(SIGUSR2) == k);
		}
		if (like[i].fn == sigset) {
			REQUIRE(sigset(SIGUSR2, SIG_HOLD) == one_arg);
			want = SIG_HOLD;
		}
		if (like[i].fn(SIGUSR2, SIG_DFL) != want) {
			fprintf(stderr, "FAIL %s: the handler read back\n", like[i].name);
			return 1;
		}
	}
	/* sigset on a blocked signal: the handler goes in wrapped, SIG_HOLD
	 * comes back, and the signal is unblocked. */
	sigset_t block, now;
	sigemptyset(&block);
	sigaddset(&block, SIGUSR2);
	REQUIRE(sigprocmask(SIG_BLOCK, &block, NULL) == 0);
	REQUIRE(sigset(SIGUSR2, one_arg) == SIG_HOLD);
	REQUIRE(on ? in_sigmalloc(kernel_handler(SIGUSR2)) : kernel_handler(SIGUSR2) == FN(one_arg));
	REQUIRE(sigprocmask(SIG_BLOCK, NULL, &now) == 0 && !sigismember(&now, SIGUSR2));
	REQUIRE(sigset(SIGUSR2, SIG_DFL) == one_arg);

	/* SA_RESETHAND: back to SIG_DFL after one delivery. */
	sa.sa_flags = SA_SIGINFO | SA_RESETHAND;
	REQUIRE(sigaction(SIGUSR1, &sa, NULL) == 0);
	got_sig = 0;
	REQUIRE(raise(SIGUSR1) == 0 && got_sig == SIGUSR1);
	REQUIRE(sigaction(SIGUSR1, NULL, &old) == 0 && old.sa_handler == SIG_DFL);

	/* More handlers than stubs: each still runs and reads back. */
	int unwrapped = 0;
	for (int i = 0; i < N_MANY; i++) {
		struct sigaction m;
		memset(&m, 0, sizeof m);
		m.sa_handler = many[i];
		REQUIRE(sigaction(SIGRTMIN + 1, &m, NULL) == 0);
		REQUIRE(sigaction(SIGRTMIN + 1, NULL, &old) == 0 && old.sa_handler == many[i]);
		unwrapped += kernel_handler(SIGRTMIN + 1) == FN(many[i]);
		REQUIRE(raise(SIGRTMIN + 1) == 0 && many_hits[i] == 1);
	}
	/* 64 stubs, two taken above (three_args, one_arg) */
	REQUIRE(unwrapped == (on ? N_MANY - 62 : N_MANY));
	/* a handler with a stub already gets it again */
	struct sigaction again;
	memset(&again, 0, sizeof again);
	again.sa_handler = many[0];
	REQUIRE(sigaction(SIGRTMIN + 2, &again, NULL) == 0);
	REQUIRE(on ? in_sigmalloc(kernel_handler(SIGRTMIN + 2))
	           : kernel_handler(SIGRTMIN + 2) == FN(many[0]));
	printf("signal warming %s: %d of %d handlers installed as they are\n", on ? "on" : "off",
	       unwrapped, N_MANY);
	return 0;
}
