/*
 * Allocation workloads for the sigmalloc benchmarks (issue 5), in plain C.
 *
 * Every workload calls the C library's malloc, free, calloc and realloc and
 * nothing else of the allocator: the benchmark binary is linked against
 * plain libc, so that `LD_PRELOAD=<allocator>.so` decides who answers.
 * workloads.c is compiled with -fno-builtin-malloc (and friends) and every
 * block escapes through an empty asm, so the compiler cannot elide a pair.
 *
 * Unit of work ("op"), which bench_main.cpp divides the time by:
 *   pairs, calloc        one allocation and its free
 *   batch (LIFO, FIFO)   one allocation and its free (n allocations, then n frees)
 *   churn                one free of a random live block plus one allocation
 *   producer/consumer    one block: malloc on the producer, free on the consumer
 *   realloc growth       one realloc call
 *
 * No workload allocates for its own bookkeeping inside a timed call, except
 * where stated (the churn's working set is set up before timing starts).
 */
#ifndef SM_BENCH_WORKLOADS_H
#define SM_BENCH_WORKLOADS_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* n pairs of malloc(size) / free. Returns a checksum (ignore it). */
uint64_t wl_pairs(size_t size, uint64_t n);

/* n pairs of calloc(1, size) / free. */
uint64_t wl_calloc_pairs(size_t size, uint64_t n);

/* One batch: `count` blocks of `size` into slots[], then freed in reverse
 * (LIFO) or in allocation order (FIFO). slots[] is the caller's. */
uint64_t wl_batch_lifo(void **slots, size_t count, size_t size);
uint64_t wl_batch_fifo(void **slots, size_t count, size_t size);

/* Random-size churn over a working set of live blocks.
 * wl_churn_init allocates the working set (sizes 16..1040 B, uniform in
 * 16-byte steps of a fixed pseudo-random sequence seeded by `seed`);
 * wl_churn_run replaces n random blocks (free + malloc of a new random
 * size); wl_churn_fini frees everything. One struct per thread. */
#define WL_CHURN_MIN 16u
#define WL_CHURN_MAX 1040u
struct wl_churn {
	void **live;       /* working set */
	uint16_t *size;    /* size of live[i] */
	uint32_t *plan;    /* precomputed (slot << 11 | size) sequence */
	uint32_t slots;    /* working set size, a power of two */
	uint32_t plan_len; /* a power of two */
	uint32_t pos;      /* next plan entry */
	uint8_t check;     /* verify each block's tag on free (signal bench) */
	uint8_t tag;
	uint64_t corrupt;  /* tag mismatches seen (check mode) */
};
int wl_churn_init(struct wl_churn *c, uint32_t slots, uint64_t seed, int check);
uint64_t wl_churn_run(struct wl_churn *c, uint64_t n);
void wl_churn_fini(struct wl_churn *c);

/* Producer/consumer: a consumer thread frees what the calling (producer)
 * thread allocates, passed through a single-producer single-consumer ring
 * of pointers. start creates the ring and the consumer thread (it spins
 * between runs), run passes n blocks of `size` and returns once the
 * consumer has freed them all, stop joins the thread. */
struct wl_ring;
struct wl_ring *wl_prodcons_start(uint32_t capacity);
uint64_t wl_prodcons_run(struct wl_ring *r, size_t size, uint64_t n);
void wl_prodcons_stop(struct wl_ring *r);

/* realloc growth of one block from 16 B to max_size (64 KiB), each step to
 * size * num / den rounded up to 16 B (num/den = 3/2: vector-like), or by a
 * fixed step (den == 0: size += num, string-append-like); the new tail is
 * written at each step. Returns the number of realloc calls made. */
uint64_t wl_realloc_growth(size_t max_size, unsigned num, unsigned den);

/* SIGPROF handler latency. While a churn runs on the calling thread, a
 * per-thread timer (timer_create, SIGEV_THREAD_ID) sends it SIGPROF every
 * period_us microseconds; the handler times malloc and free of one small
 * block (16..256 B, pseudo-random) with clock_gettime, leaving its own
 * writes into the block out of the timing, and records the nanoseconds into
 * a static array (no allocation for bookkeeping). It also records, per
 * signal, an empty timing (the same number of clock reads around nothing),
 * the floor that clock_gettime puts under every sample. Alternate signals
 * time a pop and push on a static pool of preallocated blocks instead: the
 * floor that cold caches and TLB after signal delivery put under any
 * allocation in a handler.
 * Call arm before timing and disarm after; stats reads the results. */
struct wl_sig_stats {
	uint64_t samples;   /* handler runs recorded */
	uint64_t nulls;     /* malloc returned NULL inside the handler */
	double p50_ns, p90_ns, p99_ns, p999_ns, max_ns;
	double clock_ns;    /* two clock_gettime calls around nothing, outside
	                       the handler (median of 1001) */
	double empty_p50_ns, empty_p99_ns; /* the same clock reads around
	                       nothing, inside the handler, just before each
	                       timed malloc+free */
	double pool_p50_ns, pool_p99_ns; /* the floor: pop + push on a static
	                       stack of preallocated blocks, timed the same way
	                       on alternate signals */
};
int wl_sig_arm(unsigned period_us);
void wl_sig_disarm(void);
void wl_sig_stats(struct wl_sig_stats *out);

#ifdef __cplusplus
}
#endif

#endif
