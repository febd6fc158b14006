/*
 * fuzz-api: a libFuzzer harness for the sm_ API (issue 4, item 2).
 *
 * Built only by clang with AddressSanitizer (tests/fuzz/meson.build); it
 * links the static core, whose sm_* names ASan does not intercept, so ASan
 * watches every byte the harness touches and sigmalloc's own poisoning of
 * cached objects reports a use after free.
 *
 * Input layout
 *   byte 0        flags: bit 0  run a second thread
 *                        bit 1  arm a per-thread interval timer (SIG_TIMER)
 *                        bits 2-4  timer period, 25 us << n
 *                        bits 5-7  where the rest is split between threads
 *   bytes 1..     stream A (the calling thread) then stream B (the second
 *                 thread), each a sequence of operations: one opcode byte
 *                 (enum op, modulo OP_COUNT) and its operand bytes. A stream
 *                 that runs dry reads zeros, so every input is valid.
 *
 * Each thread keeps a table of NSLOT live blocks. Every block is filled
 * over its whole usable size with a pattern unique to (block tag, offset)
 * and verified before it is freed, reallocated or handed over, so an
 * overlap, a lost write or a bad realloc copy shows as a mismatch. Checks:
 * alignment (16 for malloc, the requested one for the aligned family),
 * malloc_usable_size >= requested, calloc zeroing, glibc's error results
 * (EINVAL, ENOMEM on overflow), and that an allocation may fail only in a
 * nested context, and then with errno == ENOMEM.
 *
 * The nested (signal-handler) path is driven three ways:
 *   OP_NEST       raises this thread's depth counter (_sm_thread.depth, as
 *                 tests/test-api.c does), runs the next few operations, which
 *                 sigmalloc must serve as if it had interrupted itself, and
 *                 restores it; OP_RAISE inside such a window runs a real
 *                 signal handler at depth > 0.
 *   OP_RAISE      raise(SIG_SYNC): a handler allocates and frees from its
 *                 own table, driven by the next bytes of the stream.
 *   OP_KICK, timer  pthread_kill of the other thread, and a CLOCK_MONOTONIC
 *                 timer aimed at each thread (SIGEV_THREAD_ID), land
 *                 handlers at arbitrary points, inside sigmalloc included.
 *                 These make runs nondeterministic; SM_FUZZ_NO_TIMER=1 turns
 *                 the timer off to reproduce a crash deterministically.
 * Two blocks tables per thread belong to the handlers (one per signal, and
 * a signal is blocked during its own handler), so no table is shared
 * between a handler and the code it interrupts. Blocks move between the
 * threads through NXFER mutex-protected transfer slots.
 *
 * Nothing outlives an input: each thread frees its tables at the end of its
 * stream (signals disarmed first), the calling thread frees the transfer
 * slots after joining the second thread.
 *
 * Real-time signals are used, not SIGUSR1/2: libFuzzer installs its own
 * SIGUSR1/SIGUSR2 handlers (-handle_usr1, -handle_usr2).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "sigmalloc.h"
#include "types.h"

/* The thread's nesting depth (src/alloc.c); hidden, linkable from the
 * static core. */
extern __thread struct sm_thread _sm_thread;

#ifndef sigev_notify_thread_id
#define sigev_notify_thread_id _sigev_un._tid
#endif

#define NSLOT 64        /* blocks per thread */
#define HSLOT 16        /* blocks per signal handler per thread */
#define NXFER 8         /* transfer slots between the threads */
#define BURST_MAX 256
#define MAX_SIZE 70000  /* largest ordinary request */
#define MAX_NEST 4      /* OP_NEST inside OP_NEST, at most this deep */

#define SIG_SYNC (SIGRTMIN + 1)  /* raise() and pthread_kill() */
#define SIG_TIMER (SIGRTMIN + 2) /* the interval timer */

/* jemalloc's small classes, which are sigmalloc's (16 B .. 4 KiB). */
static const uint16_t class_size[] = {
	16,   32,   48,   64,   80,   96,   112,  128,  160,  192,  224,  256,  320,  384,
	448,  512,  640,  768,  896,  1024, 1280, 1536, 1792, 2048, 2560, 3072, 3584, 4096,
};
#define NCLASS (sizeof class_size / sizeof class_size[0])

/* ------------------------------------------------------------------------
 * Failure reports: async-signal-safe (handlers check too), then abort(),
 * which libFuzzer turns into a crash report with the input saved.
 * ---------------------------------------------------------------------- */

static void put_str(char *buf, size_t *n, size_t cap, const char *s)
{
	while (*s && *n < cap)
		buf[(*n)++] = *s++;
}

static void put_hex(char *buf, size_t *n, size_t cap, uintptr_t v)
{
	char tmp[2 + 16];
	size_t k = 0;
	do {
		tmp[k++] = "0123456789abcdef"[v & 15];
		v >>= 4;
	} while (v);
	put_str(buf, n, cap, "0x");
	while (k && *n < cap)
		buf[(*n)++] = tmp[--k];
}

static _Noreturn void fail(const char *what, const char *detail, uintptr_t a, uintptr_t b)
{
	char buf[512];
	size_t n = 0;
	put_str(buf, &n, sizeof buf, "fuzz-api: FAILED: ");
	put_str(buf, &n, sizeof buf, what);
	put_str(buf, &n, sizeof buf, ": ");
	put_str(buf, &n, sizeof buf, detail);
	put_str(buf, &n, sizeof buf, " (");
	put_hex(buf, &n, sizeof buf, a);
	put_str(buf, &n, sizeof buf, ", ");
	put_hex(buf, &n, sizeof buf, b);
	put_str(buf, &n, sizeof buf, ") depth=");
	put_hex(buf, &n, sizeof buf, _sm_thread.depth);
	put_str(buf, &n, sizeof buf, "\n");
	if (write(2, buf, n) < 0) {
		/* nothing more to say */
	}
	abort();
}

/* ------------------------------------------------------------------------
 * Counters, printed at exit as evidence of what the run exercised
 * ---------------------------------------------------------------------- */

static _Atomic uint64_t n_inputs, n_ops, n_nested_ops, n_nested_null, n_handlers,
	n_handler_nested, n_transfers, n_two_threads;

static void count(_Atomic uint64_t *c)
{
	atomic_fetch_add_explicit(c, 1, memory_order_relaxed);
}

static void print_counters(void)
{
	fprintf(stderr,
	        "fuzz-api: inputs %llu (two threads %llu), ops %llu, nested ops %llu "
	        "(NULL/ENOMEM %llu), handlers %llu (at depth > 0: %llu), transfers %llu\n",
	        (unsigned long long)n_inputs, (unsigned long long)n_two_threads,
	        (unsigned long long)n_ops, (unsigned long long)n_nested_ops,
	        (unsigned long long)n_nested_null, (unsigned long long)n_handlers,
	        (unsigned long long)n_handler_nested, (unsigned long long)n_transfers);
}

/* ------------------------------------------------------------------------
 * Blocks and their contents
 * ---------------------------------------------------------------------- */

enum kind {
	K_PLAIN,   /* malloc, calloc, realloc: free_sized(p, req) is allowed */
	K_ALIGNED, /* aligned_alloc: free_aligned_sized(p, align, req) is allowed */
	K_OTHER,   /* posix_memalign, memalign, valloc, pvalloc: free() only */
};

struct block {
	uint8_t *p;      /* NULL: the slot is empty */
	size_t req;      /* requested size */
	size_t len;      /* usable size: the bytes filled with the pattern */
	size_t align;    /* alignment requested (16 for plain) */
	uint32_t tag;    /* the pattern's seed, unique per block */
	uint8_t kind;
};

/* The pattern loops are the hot spot; their compares tell libFuzzer
 * nothing, so they carry no coverage instrumentation. */
#define NO_COVERAGE __attribute__((no_sanitize("coverage"), noinline))

static inline uint64_t pat_word(uint32_t tag, size_t i)
{
	return ((uint64_t)tag << 32 | (uint32_t)i) ^ 0x5bd1e9955bd1e995ull;
}

NO_COVERAGE static void fill(void *p, size_t n, uint32_t tag)
{
	uint8_t *b = p;
	size_t w = n / 8;
	for (size_t i = 0; i < w; i++) {
		uint64_t v = pat_word(tag, i);
		memcpy(b + 8 * i, &v, 8);
	}
	if (n % 8) {
		uint64_t v = pat_word(tag, w);
		memcpy(b + 8 * w, &v, n % 8);
	}
}

/* First offset in [0, n) that does not hold tag's pattern, or SIZE_MAX. */
NO_COVERAGE static size_t mismatch(const void *p, size_t n, uint32_t tag)
{
	const uint8_t *b = p;
	size_t w = n / 8;
	for (size_t i = 0; i < w; i++) {
		uint64_t v = pat_word(tag, i), got;
		memcpy(&got, b + 8 * i, 8);
		if (got != v)
			return 8 * i;
	}
	if (n % 8) {
		uint64_t v = pat_word(tag, w);
		if (memcmp(b + 8 * w, &v, n % 8) != 0)
			return 8 * w;
	}
	return SIZE_MAX;
}

static void verify(const struct block *b, size_t n, const char *when)
{
	size_t off = mismatch(b->p, n, b->tag);
	if (off != SIZE_MAX)
		fail(when, "block contents changed (block, offset)", (uintptr_t)b->p, off);
}

static inline bool nested_now(void)
{
	return _sm_thread.depth > 0;
}

/* An allocation came back NULL: legal only nested, and then with ENOMEM. */
static bool check_null(void *p, int err, const char *what, size_t size)
{
	if (p)
		return true;
	if (!nested_now())
		fail(what, "NULL at depth 0 (size, errno)", size, (uintptr_t)err);
	if (err != ENOMEM)
		fail(what, "nested NULL without ENOMEM (size, errno)", size, (uintptr_t)err);
	count(&n_nested_null);
	return false;
}

/* Checks a new block and fills it; *b describes it afterwards. */
static void adopt(struct block *b, void *p, size_t req, size_t align, uint8_t kind,
                  uint32_t tag, bool zeroed, const char *what)
{
	if ((uintptr_t)p % align != 0)
		fail(what, "misaligned (pointer, alignment)", (uintptr_t)p, align);
	size_t u = sm_malloc_usable_size(p);
	if (u < req)
		fail(what, "usable size < requested (usable, requested)", u, req);
	if (zeroed) {
		for (size_t i = 0; i < req; i++)
			if (((uint8_t *)p)[i] != 0)
				fail(what, "calloc memory not zero (pointer, offset)", (uintptr_t)p, i);
	}
	fill(p, u, tag);
	b->p = p;
	b->req = req;
	b->len = u;
	b->align = align;
	b->tag = tag;
	b->kind = kind;
}

/* Verifies and frees; `how` picks free, free_sized or free_aligned_sized. */
static void release(struct block *b, unsigned how)
{
	if (!b->p)
		return;
	verify(b, b->len, "free");
	if (how % 3 == 1 && b->kind == K_PLAIN)
		sm_free_sized(b->p, b->req);
	else if (how % 3 == 2 && b->kind == K_ALIGNED)
		sm_free_aligned_sized(b->p, b->align, b->req);
	else
		sm_free(b->p);
	b->p = NULL;
}

/* ------------------------------------------------------------------------
 * Operand decoding
 * ---------------------------------------------------------------------- */

struct stream {
	const uint8_t *p;
	size_t n;
};

static uint8_t get8(struct stream *s)
{
	if (!s->n)
		return 0;
	s->n--;
	return *s->p++;
}

static uint32_t get16(struct stream *s)
{
	uint32_t v = get8(s);
	return v | (uint32_t)get8(s) << 8;
}

/* Sizes 0 .. MAX_SIZE, mostly at and around the class boundaries. */
static size_t gen_size(struct stream *s)
{
	uint8_t m = get8(s);
	switch (m & 7) {
	case 0:
	case 1:
	case 2: { /* a class size, or one to two bytes either side */
		size_t c = class_size[get8(s) % NCLASS];
		int d = (int)(m >> 3) % 5 - 2;
		return (size_t)((int)c + d);
	}
	case 3:
		return m >> 3; /* 0 .. 31 */
	case 4:
		return get16(s) % (SM_MAX_SMALL + 1);
	case 5:
		return (get16(s) | (uint32_t)get8(s) << 16) % (MAX_SIZE + 1);
	case 6:
		return SM_MAX_SMALL - 16 + (m >> 3); /* 4080 .. 4111: the top class edge */
	default: { /* powers of two and page multiples, +-1 */
		size_t v = (size_t)1 << ((m >> 3) % 17);
		if (v > MAX_SIZE)
			v = MAX_SIZE;
		switch (get8(s) % 3) {
		case 0: return v - 1;
		case 1: return v;
		default: return v + 1;
		}
	}
	}
}

/* A power of two 8 .. 8192. */
static size_t gen_align(struct stream *s)
{
	return (size_t)8 << (get8(s) % 11);
}

/* ------------------------------------------------------------------------
 * Signal handlers: each has its own table per thread
 * ---------------------------------------------------------------------- */

struct hstate {
	struct block tab[HSLOT];
	uint64_t rng;
	const uint8_t *script; /* operand bytes from OP_RAISE, else the PRNG */
	size_t script_n;
	uint32_t tagc;
	uint32_t id;
};

static __thread struct hstate h_sync, h_timer;
static __thread volatile sig_atomic_t armed;

static uint8_t hbyte(struct hstate *h)
{
	if (h->script_n) {
		h->script_n--;
		return *h->script++;
	}
	uint64_t x = h->rng; /* xorshift64* */
	x ^= x >> 12;
	x ^= x << 25;
	x ^= x >> 27;
	h->rng = x;
	return (uint8_t)((x * 0x2545F4914F6CDD1Dull) >> 56);
}

static void handler_op(struct hstate *h)
{
	uint8_t b = hbyte(h);
	struct block *slot = &h->tab[b % HSLOT];
	uint32_t tag = h->id << 24 | (h->tagc++ & 0xffffff);
	if (slot->p) {
		if (b & 0x80) {
			release(slot, hbyte(h));
			return;
		}
		/* realloc within the small classes; nested, it may refuse. */
		size_t size = class_size[hbyte(h) % NCLASS] - (hbyte(h) & 7);
		verify(slot, slot->len, "handler realloc");
		errno = 0;
		void *q = sm_realloc(slot->p, size);
		if (!check_null(q, errno, "handler realloc", size)) {
			verify(slot, slot->len, "handler realloc failed, old block");
			return;
		}
		size_t keep = slot->req < size ? slot->req : size;
		slot->p = q;
		verify(slot, keep, "handler realloc copy");
		adopt(slot, q, size, 16, K_PLAIN, tag, false, "handler realloc");
		return;
	}
	uint8_t c = hbyte(h);
	size_t size = class_size[c % NCLASS] + (hbyte(h) % 3) - 1;
	if ((c & 0xe0) == 0xe0)
		size = 5000 + (size_t)hbyte(h) * 64; /* large: nested, NULL/ENOMEM */
	void *p;
	size_t align = 16;
	uint8_t kind = K_PLAIN;
	errno = 0;
	switch ((b >> 4) & 3) {
	case 0:
		p = sm_malloc(size);
		break;
	case 1:
		p = sm_calloc(1, size);
		break;
	case 2:
		align = (size_t)16 << (hbyte(h) % 8); /* 16 .. 2048 */
		p = sm_aligned_alloc(align, size);
		kind = K_ALIGNED;
		break;
	default: {
		align = (size_t)8 << (hbyte(h) % 10);
		int saved = errno;
		int rc = sm_posix_memalign(&p, align, size);
		if (errno != saved)
			fail("handler posix_memalign", "changed errno (old, new)", saved, errno);
		if (rc) {
			p = NULL;
			errno = rc;
		}
		kind = K_OTHER;
		break;
	}
	}
	if (!check_null(p, errno, "handler allocation", size))
		return;
	adopt(slot, p, size, align < 16 ? 16 : align, kind, tag, ((b >> 4) & 3) == 1,
	      "handler allocation");
}

static void on_signal(int sig)
{
	int saved = errno;
	if (armed) {
		struct hstate *h = sig == SIG_TIMER ? &h_timer : &h_sync;
		count(&n_handlers);
		if (nested_now())
			count(&n_handler_nested);
		int k = 1 + hbyte(h) % 4;
		for (int i = 0; i < k; i++)
			handler_op(h);
	}
	errno = saved;
}

static void handlers_install(void)
{
	struct sigaction sa;
	memset(&sa, 0, sizeof sa);
	sa.sa_handler = on_signal;
	sa.sa_flags = SA_RESTART;
	sigemptyset(&sa.sa_mask); /* the two signals may interrupt each other */
	if (sigaction(SIG_SYNC, &sa, NULL) || sigaction(SIG_TIMER, &sa, NULL)) {
		perror("fuzz-api: sigaction");
		abort();
	}
}

/* ------------------------------------------------------------------------
 * Per-thread context
 * ---------------------------------------------------------------------- */

struct xfer {
	pthread_mutex_t lock;
	struct block slot[NXFER];
};
static struct xfer xfer = {.lock = PTHREAD_MUTEX_INITIALIZER};

struct ctx {
	struct block tab[NSLOT];
	struct stream s;
	uint32_t id;     /* 1 or 2 (thread), also in the tags */
	uint32_t tagc;
	int nest;        /* OP_NEST recursion */
	pthread_t peer;  /* the other thread, when has_peer */
	bool has_peer;
	bool timer;      /* arm the interval timer */
	long period_ns;
	uint64_t seed;
};

static uint32_t new_tag(struct ctx *c)
{
	return c->id << 24 | (c->tagc++ & 0xffffff);
}

enum op {
	OP_MALLOC,
	OP_CALLOC,
	OP_REALLOC,
	OP_REALLOCARRAY,
	OP_POSIX_MEMALIGN,
	OP_ALIGNED_ALLOC,
	OP_MEMALIGN,
	OP_VALLOC,
	OP_FREE,
	OP_FREE_SIZED,
	OP_USABLE,
	OP_GIVE,
	OP_TAKE,
	OP_RAISE,
	OP_NEST,
	OP_KICK,
	OP_BURST,
	OP_TRIM,
	OP_YIELD,
	OP_BAD,
	OP_COUNT
};

static void run_op(struct ctx *c);

/* Allocation through one of the entry points into slot b. */
static void op_alloc(struct ctx *c, enum op op)
{
	struct block *b = &c->tab[get8(&c->s) % NSLOT];
	size_t size = gen_size(&c->s);
	release(b, get8(&c->s));
	void *p = NULL;
	size_t align = 16;
	uint8_t kind = K_PLAIN;
	bool zeroed = false;
	const char *what = "malloc";
	errno = 0;
	switch (op) {
	case OP_MALLOC:
		p = sm_malloc(size);
		break;
	case OP_CALLOC: {
		size_t n = 1 + get8(&c->s) % 16;
		size = size / n;
		p = sm_calloc(n, size);
		size *= n;
		zeroed = true;
		what = "calloc";
		break;
	}
	case OP_POSIX_MEMALIGN: {
		align = gen_align(&c->s);
		int saved = errno;
		int rc = sm_posix_memalign(&p, align, size);
		if (errno != saved)
			fail("posix_memalign", "changed errno (old, new)", saved, errno);
		if (rc) {
			p = NULL;
			errno = rc;
		}
		kind = K_OTHER;
		what = "posix_memalign";
		break;
	}
	case OP_ALIGNED_ALLOC:
		align = gen_align(&c->s);
		p = sm_aligned_alloc(align, size);
		kind = K_ALIGNED;
		what = "aligned_alloc";
		break;
	case OP_MEMALIGN:
		align = gen_align(&c->s);
		p = sm_memalign(align, size);
		kind = K_OTHER;
		what = "memalign";
		break;
	default: /* OP_VALLOC */
		align = 4096;
		kind = K_OTHER;
		if (get8(&c->s) & 1) {
			p = sm_valloc(size);
			what = "valloc";
		} else {
			p = sm_pvalloc(size);
			what = "pvalloc";
		}
		break;
	}
	if (!check_null(p, errno, what, size))
		return;
	adopt(b, p, size, align < 16 ? 16 : align, kind, new_tag(c), zeroed, what);
}

static void op_realloc(struct ctx *c, bool array)
{
	struct block *b = &c->tab[get8(&c->s) % NSLOT];
	size_t size = gen_size(&c->s);
	uint8_t m = get8(&c->s);
	size_t n = 1, elem = size;
	if (array) {
		n = 1 + m % 8;
		elem = size / n;
		size = n * elem;
	}
	if (b->p)
		verify(b, b->len, "realloc (old block)");
	if (array && (m & 0x80)) { /* count * size overflows: ENOMEM, p intact */
		errno = 0;
		void *q = sm_reallocarray(b->p, SIZE_MAX / 2 + 2, 2);
		if (q || errno != ENOMEM)
			fail("reallocarray", "overflow not NULL/ENOMEM (result, errno)", (uintptr_t)q,
			     (uintptr_t)errno);
		return;
	}
	if (size == 0 && b->p && !array) { /* glibc: realloc(p, 0) frees p, NULL */
		errno = 0;
		void *q = sm_realloc(b->p, 0);
		if (q)
			fail("realloc", "realloc(p, 0) returned non-NULL", (uintptr_t)q, 0);
		b->p = NULL;
		return;
	}
	errno = 0;
	void *q = array ? sm_reallocarray(b->p, n, elem) : sm_realloc(b->p, size);
	if (size == 0 && b->p) { /* reallocarray(p, n, 0): as realloc(p, 0) */
		if (q)
			fail("reallocarray", "size 0 returned non-NULL", (uintptr_t)q, 0);
		b->p = NULL;
		return;
	}
	if (!check_null(q, errno, array ? "reallocarray" : "realloc", size)) {
		if (b->p)
			verify(b, b->len, "failed realloc left the old block");
		return;
	}
	if (b->p) {
		size_t keep = b->req < size ? b->req : size;
		b->p = q;
		verify(b, keep, "realloc copy");
	}
	adopt(b, q, size, 16, K_PLAIN, new_tag(c), false, "realloc");
}

static void op_usable(struct ctx *c)
{
	struct block *b = &c->tab[get8(&c->s) % NSLOT];
	if (!b->p)
		return;
	size_t u = sm_malloc_usable_size(b->p);
	/* Nested, a large object's size is not asked of jemalloc: 0. */
	if (u == 0 && nested_now() && b->len > SM_MAX_SMALL)
		return;
	if (u != b->len)
		fail("malloc_usable_size", "changed (now, at allocation)", u, b->len);
	verify(b, b->len, "usable");
}

/* Hands a block to the other thread; what was in the slot is freed here. */
static void op_give(struct ctx *c)
{
	struct block *b = &c->tab[get8(&c->s) % NSLOT];
	uint8_t x = get8(&c->s);
	if (!b->p)
		return;
	verify(b, b->len, "give");
	pthread_mutex_lock(&xfer.lock);
	struct block old = xfer.slot[x % NXFER];
	xfer.slot[x % NXFER] = *b;
	pthread_mutex_unlock(&xfer.lock);
	b->p = NULL;
	release(&old, x >> 3);
	count(&n_transfers);
}

static void op_take(struct ctx *c)
{
	struct block *b = &c->tab[get8(&c->s) % NSLOT];
	uint8_t x = get8(&c->s);
	pthread_mutex_lock(&xfer.lock);
	struct block got = xfer.slot[x % NXFER];
	xfer.slot[x % NXFER].p = NULL;
	pthread_mutex_unlock(&xfer.lock);
	if (!got.p)
		return;
	release(b, x >> 3);
	*b = got;
	verify(b, b->len, "take");
	/* Rewrite it here, so that the other thread's writes are checked too. */
	b->tag = new_tag(c);
	fill(b->p, b->len, b->tag);
}

/* Allocates n objects of one size and frees them: crosses the low and high
 * watermarks, so refill, trim and slow start run. */
static void op_burst(struct ctx *c)
{
	static __thread struct block blk[BURST_MAX];
	uint8_t m = get8(&c->s);
	size_t size = (m & 1) ? class_size[get8(&c->s) % NCLASS] : gen_size(&c->s);
	if (size > 8192)
		size = 8192;
	size_t n = 1 + get8(&c->s) % BURST_MAX;
	for (size_t i = 0; i < n; i++) {
		blk[i].p = NULL;
		errno = 0;
		void *p = (m & 2) ? sm_calloc(1, size) : sm_malloc(size);
		if (!check_null(p, errno, "burst", size))
			continue;
		adopt(&blk[i], p, size, 16, K_PLAIN, new_tag(c), m & 2, "burst");
	}
	for (size_t i = 0; i < n; i++) /* in order, or in reverse */
		release(&blk[(m & 4) ? n - 1 - i : i], m >> 3);
}

/* Requests that must fail with the documented error. */
static void op_bad(struct ctx *c)
{
	static const size_t huge[] = {SIZE_MAX, SIZE_MAX - 4095, (size_t)1 << 62,
	                              (size_t)PTRDIFF_MAX + 1};
	uint8_t m = get8(&c->s);
	size_t h = huge[(m >> 3) % 4];
	void *p = NULL;
	int rc = 0;
	errno = 0;
	switch (m & 7) {
	case 0:
		p = sm_malloc(h);
		break;
	case 1:
		p = sm_calloc(h / 2 + 1, 2); /* overflows */
		break;
	case 2:
		p = sm_calloc(2, h);
		break;
	case 3:
		rc = sm_posix_memalign(&p, 64, h);
		if (rc != ENOMEM || p)
			fail("posix_memalign", "huge size not ENOMEM (rc, result)", rc, (uintptr_t)p);
		return;
	case 4: /* alignment not a power of two, or below sizeof(void *) */
		rc = sm_posix_memalign(&p, (m & 8) ? 24 : 4, 64);
		if (rc != EINVAL || p)
			fail("posix_memalign", "bad alignment not EINVAL (rc, result)", rc, (uintptr_t)p);
		return;
	case 5:
		p = sm_aligned_alloc(48, 64);
		if (p || errno != EINVAL)
			fail("aligned_alloc", "bad alignment not NULL/EINVAL (result, errno)",
			     (uintptr_t)p, (uintptr_t)errno);
		return;
	case 6: { /* memalign rounds a bad alignment up to a power of two */
		size_t a = 24 + (m >> 3) * 8;
		p = sm_memalign(a, 100);
		if (!check_null(p, errno, "memalign (rounded)", 100))
			return;
		size_t r = 16;
		while (r < a)
			r <<= 1;
		if ((uintptr_t)p % r)
			fail("memalign", "rounded alignment not honoured (pointer, alignment)",
			     (uintptr_t)p, r);
		sm_free(p);
		return;
	}
	default:
		p = sm_aligned_alloc(64, h);
		break;
	}
	if (p || errno != ENOMEM)
		fail("huge allocation", "not NULL/ENOMEM (result, errno)", (uintptr_t)p,
		     (uintptr_t)errno);
}

static void op_nest(struct ctx *c)
{
	int k = 1 + get8(&c->s) % 8;
	if (c->nest >= MAX_NEST)
		return;
	c->nest++;
	_sm_thread.depth++; /* as if a handler had interrupted sigmalloc */
	for (int i = 0; i < k && c->s.n; i++) {
		count(&n_nested_ops);
		run_op(c);
	}
	_sm_thread.depth--;
	c->nest--;
}

static void op_raise(struct ctx *c)
{
	size_t n = get8(&c->s) % 16;
	if (n > c->s.n)
		n = c->s.n;
	h_sync.script = c->s.p;
	h_sync.script_n = n;
	raise(SIG_SYNC);
	h_sync.script_n = 0;
	c->s.p += n;
	c->s.n -= n;
}

static void run_op(struct ctx *c)
{
	enum op op = (enum op)(get8(&c->s) % OP_COUNT);
	count(&n_ops);
	switch (op) {
	case OP_MALLOC:
	case OP_CALLOC:
	case OP_POSIX_MEMALIGN:
	case OP_ALIGNED_ALLOC:
	case OP_MEMALIGN:
	case OP_VALLOC:
		op_alloc(c, op);
		break;
	case OP_REALLOC:
		op_realloc(c, false);
		break;
	case OP_REALLOCARRAY:
		op_realloc(c, true);
		break;
	case OP_FREE:
	case OP_FREE_SIZED: {
		struct block *b = &c->tab[get8(&c->s) % NSLOT];
		release(b, op == OP_FREE ? 0 : 1 + (get8(&c->s) & 1));
		break;
	}
	case OP_USABLE:
		op_usable(c);
		break;
	case OP_GIVE:
		op_give(c);
		break;
	case OP_TAKE:
		op_take(c);
		break;
	case OP_RAISE:
		op_raise(c);
		break;
	case OP_NEST:
		op_nest(c);
		break;
	case OP_KICK:
		if (c->has_peer)
			pthread_kill(c->peer, SIG_SYNC);
		break;
	case OP_BURST:
		op_burst(c);
		break;
	case OP_TRIM: {
		int r = sm_malloc_trim(0);
		if (r != (nested_now() ? 0 : 1))
			fail("malloc_trim", "result (got, depth)", (uintptr_t)r, _sm_thread.depth);
		break;
	}
	case OP_YIELD:
		sched_yield();
		break;
	default:
		op_bad(c);
		break;
	}
}

/* Runs one thread's stream, then frees everything the thread holds. */
static void run_stream(struct ctx *c)
{
	sigset_t sigs;
	sigemptyset(&sigs);
	sigaddset(&sigs, SIG_SYNC);
	sigaddset(&sigs, SIG_TIMER);

	memset(&h_sync, 0, sizeof h_sync);
	memset(&h_timer, 0, sizeof h_timer);
	h_sync.rng = c->seed * 2 + 1;
	h_timer.rng = c->seed * 6 + 5;
	h_sync.id = c->id + 4;
	h_timer.id = c->id + 8;

	timer_t timer;
	bool timer_on = false;
	if (c->timer) {
		struct sigevent sev;
		memset(&sev, 0, sizeof sev);
		sev.sigev_notify = SIGEV_THREAD_ID;
		sev.sigev_signo = SIG_TIMER;
		sev.sigev_notify_thread_id = gettid();
		if (timer_create(CLOCK_MONOTONIC, &sev, &timer) == 0) {
			struct itimerspec its = {
				.it_interval = {0, c->period_ns},
				.it_value = {0, c->period_ns},
			};
			timer_settime(timer, 0, &its, NULL);
			timer_on = true;
		}
	}
	armed = 1;

	while (c->s.n)
		run_op(c);

	/* Disarm: no handler touches its table after this. */
	pthread_sigmask(SIG_BLOCK, &sigs, NULL);
	armed = 0;
	if (timer_on)
		timer_delete(timer);
	pthread_sigmask(SIG_UNBLOCK, &sigs, NULL);

	for (size_t i = 0; i < HSLOT; i++) {
		release(&h_sync.tab[i], i);
		release(&h_timer.tab[i], i);
	}
	for (size_t i = 0; i < NSLOT; i++)
		release(&c->tab[i], i);
}

static void *thread_b(void *arg)
{
	run_stream(arg);
	return NULL;
}

static bool no_timer;

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	(void)argc, (void)argv;
	handlers_install();
	const char *e = getenv("SM_FUZZ_NO_TIMER");
	no_timer = e && *e && *e != '0';
	atexit(print_counters);
	return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size == 0)
		return 0;
	count(&n_inputs);
	uint8_t flags = data[0];
	data++, size--;
	bool two = flags & 1;
	size_t na = two ? size * (1 + (flags >> 5)) / 9 : size;

	static struct ctx a, b; /* one input at a time: libFuzzer runs one thread */
	memset(&a, 0, sizeof a);
	memset(&b, 0, sizeof b);
	uint64_t seed = 0x9e3779b97f4a7c15ull ^ size;
	for (size_t i = 0; i < size && i < 32; i++)
		seed = seed * 131 + data[i];
	long period = 25000L << ((flags >> 2) & 7); /* 25 us .. 3.2 ms */

	a.s = (struct stream){data, na};
	a.id = 1;
	a.seed = seed;
	a.timer = (flags & 2) && !no_timer;
	a.period_ns = period;
	b.s = (struct stream){data + na, size - na};
	b.id = 2;
	b.seed = seed ^ 0xabcdef;
	b.timer = a.timer;
	b.period_ns = period;

	pthread_t tb;
	if (two) {
		count(&n_two_threads);
		b.peer = pthread_self();
		b.has_peer = true;
		if (pthread_create(&tb, NULL, thread_b, &b) != 0) {
			perror("fuzz-api: pthread_create");
			abort();
		}
		a.peer = tb;
		a.has_peer = true;
	}
	run_stream(&a);
	if (two)
		pthread_join(tb, NULL);
	for (size_t i = 0; i < NXFER; i++)
		release(&xfer.slot[i], i);
	return 0;
}
