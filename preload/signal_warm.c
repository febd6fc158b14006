/*
 * Signal entry warming: handlers that the program installs with sigaction,
 * signal or glibc's other installers (below) are entered through a stub of sigmalloc's that prefetches the
 * lines a malloc and free in the handler will touch (the near copy's code,
 * the library's hit paths, the thread's state), then jumps to the handler.
 *
 * Why: a signal arrives after the kernel (and, in a guest, the host) ran
 * its own code on this core, and a handler's first malloc finds
 * sigmalloc's code and the thread's state cold: that, not the work of the
 * hit path, is the p99 of the signal benchmark (docs/PERFORMANCE.md,
 * "Session 14" and "Session 15"). The prefetches are issued before the
 * handler's first instruction and complete while it runs.
 *
 * How, without a table that two sigaction calls could race on: each stub
 * has one word, the handler it enters, written once (0 -> handler, by
 * compare-and-swap) and never changed, so a stub stands for exactly one
 * handler and the kernel's disposition says everything: which handler,
 * with which flags and mask. Installing handler h takes the stub whose
 * word is h, or claims a free one; a query (the old action) maps a stub
 * back to its handler, so the program sees its own pointers. When all
 * WARM_STUBS are taken, a new handler is installed as it is. Each stub
 * passes its three arguments on untouched (the kernel passes signal,
 * siginfo and context in the first three argument registers with or
 * without SA_SIGINFO, and a one-argument handler ignores the other two)
 * and its call is a tail call, so a backtrace from the handler shows no
 * extra frame.
 *
 * Signal safety: sigaction, signal and sigset may be called from a
 * handler (signal-safety(7)). The interposers take no lock and allocate
 * nothing: a scan of WARM_STUBS words, at most one compare-and-swap, the
 * next interposer's or glibc's call, found with dlsym in this library's
 * constructor. Before it ran, sigaction calls glibc's directly, but the
 * signal-like ones call dlsym, which takes the loader's lock: a handler
 * calling signal during early start-up, while its thread is inside the
 * loader, could deadlock there. The stubs read
 * the thread's TLS block and two words written before main (near.c).
 *
 * Interposed: sigaction, and signal, bsd_signal, ssignal, sysv_signal,
 * __sysv_signal and sigset (glibc's versions of these call its internal
 * __sigaction, not sigaction). What is not wrapped: handlers installed by
 * the rt_sigaction system call directly (Go's runtime, for one), or by
 * the obsolete sigvec; SIGMALLOC_SIGNAL_WARM=0 wraps nothing. What it
 * costs: docs/PERFORMANCE.md, "Session 15".
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <signal.h>
#include <stdint.h>

#include "internal.h"
#include "sigmalloc.h"

/* glibc's sigaction, under its other exported name. */
extern int __sigaction(int sig, const struct sigaction *act, struct sigaction *old);

typedef void (*handler_fn)(int, siginfo_t *, void *);

/* The near copy's code (preload/near.c), written before main; 0 without. */
const char *_sm_near_code sm_hidden;
size_t _sm_near_len sm_hidden;

#define WARM_STUBS 64
static handler_fn stub_target[WARM_STUBS]; /* each written once, never changed */

static sm_always_inline void prefetch_range(const void *p, size_t len, int write)
{
	for (size_t i = 0; i < len; i += 64) {
		if (write)
			__builtin_prefetch((const char *)p + i, 1, 3);
		else
			__builtin_prefetch((const char *)p + i, 0, 3);
	}
}

/* The lines a handler's malloc and free read first. */
static sm_always_inline void warm_lines(void)
{
	const char *code = __atomic_load_n(&_sm_near_code, __ATOMIC_RELAXED);
	if (code)
		prefetch_range(code, __atomic_load_n(&_sm_near_len, __ATOMIC_RELAXED), 0);
	prefetch_range((const void *)sm_malloc, 128, 0); /* calls from shared libraries */
	prefetch_range((const void *)sm_free, 128, 0);
	prefetch_range(&_sm_thread, sizeof _sm_thread, 1);
}

#define STUB(n, k)                                                                  \
	static void warm_stub_##n##k(int sig, siginfo_t *si, void *uc)              \
	{                                                                           \
		warm_lines();                                                       \
		__atomic_load_n(&stub_target[(n) * 8 + (k)], __ATOMIC_ACQUIRE)(sig, si, uc); \
	}
#define STUB_ROW(n) STUB(n, 0) STUB(n, 1) STUB(n, 2) STUB(n, 3) \
                    STUB(n, 4) STUB(n, 5) STUB(n, 6) STUB(n, 7)
STUB_ROW(0) STUB_ROW(1) STUB_ROW(2) STUB_ROW(3) STUB_ROW(4) STUB_ROW(5) STUB_ROW(6) STUB_ROW(7)
#define STUB_REF(n, k) warm_stub_##n##k,
#define STUB_REF_ROW(n) STUB_REF(n, 0) STUB_REF(n, 1) STUB_REF(n, 2) STUB_REF(n, 3) \
                        STUB_REF(n, 4) STUB_REF(n, 5) STUB_REF(n, 6) STUB_REF(n, 7)
static const handler_fn stub[WARM_STUBS] = {
	STUB_REF_ROW(0) STUB_REF_ROW(1) STUB_REF_ROW(2) STUB_REF_ROW(3)
	STUB_REF_ROW(4) STUB_REF_ROW(5) STUB_REF_ROW(6) STUB_REF_ROW(7)
};

/* SIG_DFL, SIG_IGN, SIG_ERR, SIG_HOLD and the like are not handlers. */
static bool is_handler(handler_fn h)
{
	return (uintptr_t)h >= 4096 && (uintptr_t)h != (uintptr_t)SIG_ERR;
}

static bool warming(void)
{
	if (atomic_load_explicit(&_sm_initialized, memory_order_acquire) == 0)
		sm_free(sm_malloc(1)); /* global set-up, options included (cache.c) */
	return _sm_options.signal_warm;
}

/* The stub that enters h, claiming one if none does yet; h itself when
 * all are taken. */
static handler_fn unwrap(handler_fn h);
static handler_fn wrap(handler_fn h)
{
	h = unwrap(h); /* a stub handed back (glibc's __sigaction and sigvec return them) */
	for (int i = 0; i < WARM_STUBS; i++) {
		handler_fn seen = __atomic_load_n(&stub_target[i], __ATOMIC_ACQUIRE);
		if (seen == NULL && __atomic_compare_exchange_n(&stub_target[i], &seen, h, false,
		                                                __ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE))
			return stub[i];
		if (seen == h) /* found, or another thread claimed it for h */
			return stub[i];
	}
	return h;
}

/* The handler a stub enters; anything else as it is. */
static handler_fn unwrap(handler_fn h)
{
	for (int i = 0; i < WARM_STUBS; i++)
		if (h == stub[i])
			return __atomic_load_n(&stub_target[i], __ATOMIC_ACQUIRE);
	return h;
}

/* Signals a handler can be set for: the others fail in glibc (EINVAL)
 * and must not take a stub. */
static bool catchable(int sig)
{
	return sig > 0 && sig < NSIG && sig != SIGKILL && sig != SIGSTOP &&
	       (sig < 32 || sig >= SIGRTMIN);
}

/* What to install for a handler h of sig: its stub, or h itself (not a
 * handler, a signal that cannot be caught, warming off, or no stub left). */
static handler_fn to_install(int sig, handler_fn h)
{
	return catchable(sig) && is_handler(h) && warming() ? wrap(h) : h;
}

/* The next sigaction in the lookup order (another interposer's, such as
 * the JVM's libjsig, or glibc's), found once; glibc's until then. */
static int (*next_sigaction)(int, const struct sigaction *, struct sigaction *);

__attribute__((visibility("default"))) int sigaction(int sig, const struct sigaction *act,
                                                     struct sigaction *old)
{
	int (*real)(int, const struct sigaction *, struct sigaction *) =
		__atomic_load_n(&next_sigaction, __ATOMIC_ACQUIRE);
	if (!real)
		real = __sigaction;
	struct sigaction wrapped;
	if (act) {
		wrapped = *act; /* a copy: act is the caller's, and const */
		wrapped.sa_sigaction = to_install(sig, act->sa_sigaction);
		act = &wrapped;
	}
	int ret = real(sig, act, old);
	if (ret == 0 && old)
		old->sa_sigaction = unwrap(old->sa_sigaction);
	return ret;
}

/* glibc's functions that install a handler without calling sigaction
 * through the PLT (they call its internal __sigaction), each interposed
 * the same way: the handler goes in wrapped, the old one comes back
 * unwrapped. signal, bsd_signal and ssignal are one function in glibc
 * (BSD semantics: SA_RESTART unless siginterrupt said otherwise);
 * sysv_signal and __sysv_signal another (one-shot; <signal.h> turns
 * signal into __sysv_signal when __USE_MISC is off, as with -std=c11 and
 * no feature macro); sigset a third (System V: SIG_HOLD blocks). */
typedef sighandler_t (*signal_like_fn)(int, sighandler_t);
#define SIGNAL_LIKE_FUNCTIONS(X) X(signal) X(bsd_signal) X(ssignal) X(sysv_signal) \
	X(__sysv_signal) X(sigset)

/* The next definition of name in the lookup order (glibc's), found once:
 * in this library's constructor, or at the first call if that comes
 * before it, from another library's constructor. */
static signal_like_fn next_signal_like(signal_like_fn *next, const char *name)
{
	signal_like_fn real = __atomic_load_n(next, __ATOMIC_ACQUIRE);
	if (!real) {
		real = (signal_like_fn)dlsym(RTLD_NEXT, name);
		if (real)
			__atomic_store_n(next, real, __ATOMIC_RELEASE);
	}
	return real;
}

/* The casts between the two handler types, through void (*)(void). */
static handler_fn as_handler(sighandler_t h)
{
	return (handler_fn)(void (*)(void))h;
}

static sighandler_t as_sighandler(handler_fn h)
{
	return (sighandler_t)(void (*)(void))h;
}

static sighandler_t through(signal_like_fn *next, const char *name, int sig, sighandler_t h)
{
	signal_like_fn real = next_signal_like(next, name);
	if (!real) {
		errno = ENOSYS;
		return SIG_ERR;
	}
	sighandler_t prev = real(sig, as_sighandler(to_install(sig, as_handler(h))));
	if (prev == SIG_ERR)
		return prev;
	return as_sighandler(unwrap(as_handler(prev)));
}

#define SIGNAL_LIKE(name)                                                              \
	static signal_like_fn next_##name;                                             \
	__attribute__((visibility("default"))) sighandler_t name(int sig, sighandler_t h) \
	{                                                                              \
		return through(&next_##name, #name, sig, h);                           \
	}
SIGNAL_LIKE_FUNCTIONS(SIGNAL_LIKE)

__attribute__((constructor)) static void signal_warm_setup(void)
{
	int (*next)(int, const struct sigaction *, struct sigaction *) =
		(int (*)(int, const struct sigaction *, struct sigaction *))dlsym(RTLD_NEXT, "sigaction");
	__atomic_store_n(&next_sigaction, next ? next : __sigaction, __ATOMIC_RELEASE);
#define FIND_NEXT(name) (void)next_signal_like(&next_##name, #name);
	SIGNAL_LIKE_FUNCTIONS(FIND_NEXT)
#undef FIND_NEXT
}
