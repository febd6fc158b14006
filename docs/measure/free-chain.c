/* docs/PERFORMANCE.md, "Session 9": what a malloc(64)/free pair costs when
 * free finds its bucket from the pointer, as sigmalloc's does, against two
 * ways of taking that load off the chain from one call to the next, and
 * against a hit path without the depth window. Each variant is a pair of
 * noinline functions over sigmalloc's bucket (a stack of pointers with a
 * tally word: types.h), its TLS state in this executable, the pair loop
 * that of benches/workloads.c (wl_pairs: a byte written into the block).
 *   7  sigmalloc's: free computes the class from p (base, shift, range
 *      test, the class's alignment mask), depth window, double-free check
 *   8  as 7, but free predicts the class malloc popped last (a TLS word
 *      malloc writes) and checks it against p's: the bucket's address no
 *      longer waits for p, only the branch does
 *   9  as 7 without the depth window, one store of a constant into TLS in
 *      its place (what a restartable-sequence hit path would store: the
 *      address of its critical section's descriptor)
 *  10  8 and 9 together
 *  11  9 as sigmalloc would do it with rseq: a load and test of the depth
 *      word (a handler may have interrupted a slow path), the store through
 *      a per-thread pointer to rseq->rseq_cs, which a thread without rseq
 *      has NULL (tested: its calls take the depth window out of line)
 *   6  as 7, but free is handed the class (no p -> class step at all;
 *      docs/measure/bucket-layouts.c 6)
 *  12  session 11: split counters (docs/measure/split-counters.patch): the
 *      bucket counts pops (written by malloc only) and pushes (by free
 *      only), its count their difference, so that no word goes from a
 *      malloc to the next free and back; free predicts the class as in 8
 *  13  split counters, free computes the class from p as in 7
 *  14  split counters, free handed the class as in 6
 * Prints ns and TSC ticks per pair. Pin it; variant 0 runs every variant
 * in this one process, 8 rounds (this guest's launches run the same code at
 * one of two speeds, about 7 or 13 ticks per pair: compare within a launch):
 *   gcc -O2 -o /tmp/free-chain docs/measure/free-chain.c
 *   taskset -c 1 /tmp/free-chain 0 10000000
 *   for v in 7 8 9 10 11 6 12 13 14; do taskset -c 1 /tmp/free-chain $v 50000000; done
 * (variant 0 runs 7, 8, 6, 12, 13 and 14)
 */
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>

#define NCLS 28
#define SHIFT 20 /* 1 MiB per class here; sigmalloc's is 64 GiB: same code */
#define NI __attribute__((noinline))
#define F() __asm__ volatile("" ::: "memory")
#define unlikely(x) __builtin_expect(!!(x), 0)

struct bucket {
	void **slots;
	uint64_t tally;
	uint32_t low, high;
} __attribute__((aligned(64)));

struct thread {
	struct bucket *buckets;
	uint32_t depth;
	uint32_t last; /* 8, 10: the class malloc popped last */
	const void *cs; /* 9, 10: stands for rseq->rseq_cs */
	const void **rs; /* 11: &rseq->rseq_cs, here &cs */
	uintptr_t base;
	uint8_t class_of_units[257];
	uint16_t align_mask[NCLS];
	struct bucket bucket[NCLS];
};
static __thread struct thread T __attribute__((aligned(4096)));
static const char cs_desc[32] __attribute__((aligned(32)));

NI void die(void) { abort(); }

struct sbucket {
	void **slots;
	uint64_t pops;   /* malloc hits: written by malloc only */
	uint64_t pushes; /* free hits: written by free only */
	uint32_t low, high;
} __attribute__((aligned(64)));
static struct sbucket SB[NCLS];
static __thread struct sbucket *sbp;
static inline void *spop(size_t cls)
{
	struct sbucket *b = sbp + cls;
	uint64_t pops = b->pops;
	size_t n = (uint32_t)(b->pushes - pops);
	if (unlikely(n <= b->low))
		die();
	b->pops = pops + 1;
	return b->slots[n - 1];
}
static inline void spush(size_t cls, void *p)
{
	struct sbucket *b = sbp + cls;
	uint64_t pushes = b->pushes;
	size_t n = (uint32_t)(pushes - b->pops);
	if (unlikely(b->slots[(ptrdiff_t)n - 1] == p))
		die();
	if (unlikely(n >= b->high))
		die();
	b->slots[n] = p;
	b->pushes = pushes + 1;
}


static inline uint32_t enter(struct thread *t)
{
	uint32_t d = t->depth;
	t->depth = d + 1;
	F();
	return d;
}
static inline void leave(struct thread *t)
{
	F();
	t->depth = 0;
}

static inline void *pop(struct thread *t, size_t cls)
{
	struct bucket *b = t->buckets + cls;
	uint64_t tally = b->tally;
	size_t n = tally & 0xffff;
	if (unlikely(n <= b->low))
		die();
	b->tally = tally + (uint64_t)-1;
	return b->slots[n - 1];
}
static inline void push(struct thread *t, size_t cls, void *p)
{
	struct bucket *b = t->buckets + cls;
	uint64_t tally = b->tally;
	size_t n = tally & 0xffff;
	if (unlikely(b->slots[(ptrdiff_t)n - 1] == p))
		die();
	if (unlikely(n >= b->high))
		die();
	b->slots[n] = p;
	b->tally = tally + 1;
}
static inline size_t class_of(struct thread *t, size_t size)
{
	return t->class_of_units[(size + 15) >> 4];
}
static inline uintptr_t slot_of(struct thread *t, void *p)
{
	uintptr_t slot = ((uintptr_t)p - t->base) >> SHIFT;
	if (unlikely(slot >= NCLS))
		die();
	if (unlikely((uintptr_t)p & t->align_mask[slot]))
		die();
	return slot;
}

/* 7: sigmalloc's */
NI void *m7(size_t size)
{
	struct thread *t = &T;
	size_t cls = class_of(t, size);
	if (unlikely(enter(t)))
		die();
	void *p = pop(t, cls);
	leave(t);
	return p;
}
NI void f7(void *p)
{
	struct thread *t = &T;
	uintptr_t slot = slot_of(t, p);
	if (unlikely(enter(t)))
		die();
	push(t, slot, p);
	leave(t);
}

/* 8: free predicts the class */
NI void *m8(size_t size)
{
	struct thread *t = &T;
	size_t cls = class_of(t, size);
	t->last = (uint32_t)cls;
	if (unlikely(enter(t)))
		die();
	void *p = pop(t, cls);
	leave(t);
	return p;
}
NI void f8(void *p)
{
	struct thread *t = &T;
	size_t guess = t->last;
	__asm__("" : "+r"(guess)); /* addresses below use guess, not slot */
	uintptr_t slot = slot_of(t, p);
	if (unlikely(slot != guess)) {
		f7(p);
		return;
	}
	if (unlikely(enter(t)))
		die();
	push(t, guess, p);
	leave(t);
}

/* 9: no depth window, one constant store */
NI void *m9(size_t size)
{
	struct thread *t = &T;
	size_t cls = class_of(t, size);
	t->cs = cs_desc;
	F();
	return pop(t, cls);
}
NI void f9(void *p)
{
	struct thread *t = &T;
	uintptr_t slot = slot_of(t, p);
	t->cs = cs_desc;
	F();
	push(t, slot, p);
}

/* 10: 8 and 9 */
NI void *m10(size_t size)
{
	struct thread *t = &T;
	size_t cls = class_of(t, size);
	t->last = (uint32_t)cls;
	t->cs = cs_desc;
	F();
	return pop(t, cls);
}
NI void f10(void *p)
{
	struct thread *t = &T;
	size_t guess = t->last;
	__asm__("" : "+r"(guess));
	uintptr_t slot = slot_of(t, p);
	if (unlikely(slot != guess)) {
		f9(p);
		return;
	}
	t->cs = cs_desc;
	F();
	push(t, guess, p);
}

/* 11: 9 with the depth test and the rseq pointer */
NI void *m11(size_t size)
{
	struct thread *t = &T;
	size_t cls = class_of(t, size);
	if (unlikely(t->depth))
		die();
	const void **rs = t->rs;
	if (unlikely(!rs))
		die();
	*rs = cs_desc;
	F();
	return pop(t, cls);
}
NI void f11(void *p)
{
	struct thread *t = &T;
	uintptr_t slot = slot_of(t, p);
	if (unlikely(t->depth))
		die();
	const void **rs = t->rs;
	if (unlikely(!rs))
		die();
	*rs = cs_desc;
	F();
	push(t, slot, p);
}

/* 6: free is handed the class */
NI void f6(void *p, size_t cls)
{
	struct thread *t = &T;
	if (unlikely(enter(t)))
		die();
	push(t, cls, p);
	leave(t);
}


/* 12: split counters, free predicts */
NI void *m12(size_t size)
{
	struct thread *t = &T;
	size_t cls = class_of(t, size);
	t->last = (uint32_t)cls;
	if (unlikely(enter(t)))
		die();
	void *p = spop(cls);
	leave(t);
	return p;
}
NI void f13(void *p);
NI void f12(void *p)
{
	struct thread *t = &T;
	size_t guess = t->last;
	__asm__("" : "+r"(guess));
	uintptr_t slot = slot_of(t, p);
	if (unlikely(slot != guess)) {
		f13(p);
		return;
	}
	if (unlikely(enter(t)))
		die();
	spush(guess, p);
	leave(t);
}
/* 13: split counters, class from p */
NI void *m13(size_t size)
{
	struct thread *t = &T;
	size_t cls = class_of(t, size);
	if (unlikely(enter(t)))
		die();
	void *p = spop(cls);
	leave(t);
	return p;
}
NI void f13(void *p)
{
	struct thread *t = &T;
	uintptr_t slot = slot_of(t, p);
	if (unlikely(enter(t)))
		die();
	spush(slot, p);
	leave(t);
}
/* 14: split counters, free handed the class */
NI void f14(void *p, size_t cls)
{
	struct thread *t = &T;
	if (unlikely(enter(t)))
		die();
	spush(cls, p);
	leave(t);
}

static inline uint64_t rd(void)
{
	unsigned lo, hi;
	__asm__ volatile("rdtsc" : "=a"(lo), "=d"(hi));
	return ((uint64_t)hi << 32) | lo;
}

static void run(int v, long N, size_t size, size_t cls)
{
	uint64_t sum = 0;
	uint64_t t0 = rd();
	struct timespec a, e;
	clock_gettime(CLOCK_MONOTONIC, &a);
	for (long i = 0; i < N; i++) {
		char *p;
		switch (v) {
		case 6:
			p = m7(size);
			break;
		case 8:
			p = m8(size);
			break;
		case 9:
			p = m9(size);
			break;
		case 10:
			p = m10(size);
			break;
		case 11:
			p = m11(size);
			break;
		case 12:
			p = m12(size);
			break;
		case 13:
		case 14:
			p = m13(size);
			break;
		default:
			p = m7(size);
			break;
		}
		__asm__ volatile("" ::"r"(p) : "memory");
		p[0] = (char)i;
		sum += (uintptr_t)p >> 4;
		switch (v) {
		case 6:
			f6(p, cls);
			break;
		case 8:
			f8(p);
			break;
		case 9:
			f9(p);
			break;
		case 10:
			f10(p);
			break;
		case 11:
			f11(p);
			break;
		case 12:
			f12(p);
			break;
		case 13:
			f13(p);
			break;
		case 14:
			f14(p, cls);
			break;
		default:
			f7(p);
			break;
		}
	}
	clock_gettime(CLOCK_MONOTONIC, &e);
	uint64_t t1 = rd();
	printf("v%d %.2f ns %.2f tsc/pair (sum %llu)\n", v,
	       ((e.tv_sec - a.tv_sec) * 1e9 + (e.tv_nsec - a.tv_nsec)) / N,
	       (double)(t1 - t0) / N, (unsigned long long)(sum & 0xff));
}

int main(int argc, char **argv)
{
	int v = argc > 1 ? atoi(argv[1]) : 7;
	long N = argc > 2 ? atol(argv[2]) : 50000000;
	const size_t size = 64, cls = 4, K = 64;
	char *mem = mmap(NULL, (size_t)NCLS << SHIFT, PROT_READ | PROT_WRITE,
	                 MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (mem == MAP_FAILED)
		return 1;
	struct thread *t = &T;
	t->buckets = t->bucket;
	t->rs = &t->cs;
	t->base = (uintptr_t)mem;
	for (size_t u = 0; u <= 256; u++)
		t->class_of_units[u] = (uint8_t)(u <= 4 ? u : 4 + (u - 4) / 16);
	for (size_t c = 0; c < NCLS; c++)
		t->align_mask[c] = 15;
	static void *stk[4097];
	for (size_t i = 0; i < K; i++)
		stk[1 + i] = mem + ((size_t)cls << SHIFT) + 64 * i;
	struct bucket *b = &t->bucket[cls];
	b->slots = stk + 1; /* slots[-1] is a NULL guard, as in sigmalloc */
	b->tally = K;
	b->low = 0;
	b->high = 4000;
	static void *sstk[4097];
	for (size_t i = 0; i < K; i++)
		sstk[1 + i] = stk[1 + i];
	sbp = SB;
	SB[cls].slots = sstk + 1;
	SB[cls].pushes = K;
	SB[cls].pops = 0;
	SB[cls].low = 0;
	SB[cls].high = 4000;
	if (class_of(t, size) != cls)
		return 2;
	if (v != 0) {
		run(v, N, size, cls);
		return 0;
	}
	/* 0: every variant in this one process, in rounds (a launch's layout
	 * and the host's mood move all of them alike) */
	static const int vs[] = {7, 8, 6, 12, 13, 14};
	for (int r = 0; r < 8; r++)
		for (unsigned k = 0; k < sizeof vs / sizeof vs[0]; k++)
			run(vs[k], N, size, cls);
	return 0;
}
