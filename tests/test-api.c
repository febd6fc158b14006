/*
 * API semantics: glibc's contract for every entry point.
 *
 * Built twice: with SM_TEST_CORE against the static core and its sm_ names
 * (suite `unit`, also under ASan/UBSan), and without it against plain libc
 * names, run with libsigmalloc.so preloaded (suite `preload`). The core
 * build also drives the nested (signal-handler) path deterministically by
 * raising the thread's depth counter, as a handler interrupting malloc
 * would find it.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <malloc.h>
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include "testhelper.h"

/* The point of these tests is to call the API with bad arguments. */
#pragma GCC diagnostic ignored "-Wfree-nonheap-object"
#if !defined(__clang__) /* gcc's warnings only */
#pragma GCC diagnostic ignored "-Walloc-size-larger-than="
#pragma GCC diagnostic ignored "-Wuse-after-free"
#endif

#ifdef SM_TEST_CORE
#include "sigmalloc.h"
#include "lockless.h"
#include "internal.h"
#include "types.h"
extern __thread struct sm_thread _sm_thread;
void _sm_refiller_barrier(void); /* refiller.c: waits for the refill thread's work in progress */
void _sm_refiller_fork_prepare(void); /* refiller.c: holds the refill thread's work lock */
void _sm_refiller_fork_parent(void);
void _sm_bucket_splice(struct sm_cache *c, uint32_t cls, struct sm_node *first, uint32_t n);
void _sm_bucket_trim_to(struct sm_cache *c, uint32_t cls, uint32_t keep);           /* refill.c */
struct sm_magazine *_sm_magazine_fill(uint32_t cls, void *const *objs, uint32_t n); /* magazine.c */
uint32_t _sm_magazine_capacity(uint32_t cls);
bool _sm_backend_same_large_class(void *p, size_t size); /* backend.c */
int32_t _sm_depot_held(uint32_t cls);                     /* depot.c */
extern uintptr_t _sm_pool_bytes;                          /* pool.c */
extern uintptr_t _sm_base;                                /* backend.c */
size_t nallocx(size_t size, int flags);                   /* jemalloc */
size_t sallocx(const void *p, int flags);                 /* jemalloc */
extern size_t *_sm_large_sizes;                           /* backend.c */
int mallctl(const char *name, void *oldp, size_t *oldlenp, void *newp, size_t newlen);
extern const uint32_t _sm_class_size[SM_NUM_CLASSES]; /* sizeclass.c */
#define MALLOC sm_malloc
#define FREE sm_free
#define CALLOC sm_calloc
#define REALLOC sm_realloc
#define REALLOCARRAY sm_reallocarray
#define POSIX_MEMALIGN sm_posix_memalign
#define ALIGNED_ALLOC sm_aligned_alloc
#define MEMALIGN sm_memalign
#define VALLOC sm_valloc
#define PVALLOC sm_pvalloc
#define USABLE sm_malloc_usable_size
#define FREE_SIZED sm_free_sized
#define FREE_ALIGNED_SIZED sm_free_aligned_sized
#define MALLOC_TRIM sm_malloc_trim
#else
#define MALLOC malloc
#define FREE free
#define CALLOC calloc
#define REALLOC realloc
#define REALLOCARRAY reallocarray
#define POSIX_MEMALIGN posix_memalign
#define ALIGNED_ALLOC aligned_alloc
#define MEMALIGN memalign
#define VALLOC valloc
#define PVALLOC pvalloc
#define USABLE malloc_usable_size
/* glibc 2.36 declares no free_sized yet: look up the preloaded one. */
#include <dlfcn.h>
static void free_sized_dl(void *p, size_t n)
{
	void (*fn)(void *, size_t);
	*(void **)&fn = dlsym(RTLD_DEFAULT, "free_sized");
	fn ? fn(p, n) : free(p);
}
static void free_aligned_sized_dl(void *p, size_t a, size_t n)
{
	void (*fn)(void *, size_t, size_t);
	*(void **)&fn = dlsym(RTLD_DEFAULT, "free_aligned_sized");
	fn ? fn(p, a, n) : free(p);
}
#define FREE_SIZED free_sized_dl
#define FREE_ALIGNED_SIZED free_aligned_sized_dl
#define MALLOC_TRIM malloc_trim
#endif

#if defined(__SANITIZE_ADDRESS__)
#define UNDER_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define UNDER_ASAN 1
#endif
#endif
#ifndef UNDER_ASAN
#define UNDER_ASAN 0
#endif
#if defined(__SANITIZE_THREAD__)
#define UNDER_TSAN 1
#elif defined(__has_feature)
#if __has_feature(thread_sanitizer)
#define UNDER_TSAN 1
#endif
#endif
#ifndef UNDER_TSAN
#define UNDER_TSAN 0
#endif

static const size_t class_sizes[] = {
	16,   32,   48,   64,   80,   96,   112,  128,  160,  192,  224,  256,  320,  384,
	448,  512,  640,  768,  896,  1024, 1280, 1536, 1792, 2048, 2560, 3072, 3584, 4096,
};
#define NCLASSES (sizeof class_sizes / sizeof class_sizes[0])

/* The hub of a class size: the smallest power of four at least as large
 * (src/sizeclass.c). */
static size_t hub_size(size_t size)
{
	size_t h = 16;
	while (h < size)
		h <<= 2;
	return h;
}

static void fill(void *p, size_t n, unsigned seed)
{
	unsigned char *b = p;
	for (size_t i = 0; i < n; i++)
		b[i] = (unsigned char)(seed + i * 31);
}

static bool check_fill(const void *p, size_t n, unsigned seed)
{
	const unsigned char *b = p;
	for (size_t i = 0; i < n; i++)
		if (b[i] != (unsigned char)(seed + i * 31))
			return false;
	return true;
}

static bool all_zero(const void *p, size_t n)
{
	const unsigned char *b = p;
	for (size_t i = 0; i < n; i++)
		if (b[i])
			return false;
	return true;
}

static bool aligned(const void *p, size_t a)
{
	return ((uintptr_t)p & (a - 1)) == 0;
}

static void test_malloc_free(void)
{
	BANNER("malloc / free");
	void *a = MALLOC(0), *b = MALLOC(0);
	CHECK("malloc(0) is unique", a && b && a != b);
	FREE(a);
	FREE(b);
	FREE(NULL);
	CHECK("free(NULL) does nothing", true);

	void *p = MALLOC(16);
	CHECK("malloc_usable_size(malloc(16)) == 16", p && USABLE(p) == 16);
	FREE(p);
	CHECK("malloc_usable_size(NULL) == 0", USABLE(NULL) == 0);

	/* A class that has no arena of its own yet is served by its hub, the
	 * next power of four (src/sizeclass.c): usable size is the class's
	 * size or the hub's. */
	CHECK_BODY("usable size is the class size, or its hub's, for every class")
	{
		for (size_t i = 0; i < NCLASSES; i++) {
			void *q = MALLOC(class_sizes[i]);
			size_t u = q ? USABLE(q) : 0;
			result = result && q && (u == class_sizes[i] || u == hub_size(class_sizes[i])) &&
			         aligned(q, 16);
			FREE(q);
		}
	}
	CHECK_BODY("a class used enough gets objects of exactly its size")
	{
		/* 48 B draws 64 B objects (16 B wasted each) until it has wasted
		 * SIGMALLOC_ARENA_AFTER (64 KiB): 4096 objects; 8192 are plenty. */
		static void *many[8192];
		for (size_t i = 0; i < 8192; i++)
			many[i] = MALLOC(48);
		size_t last = USABLE(many[8191]);
		for (size_t i = 0; i < 8192; i++)
			FREE(many[i]);
		void *q = MALLOC(48);
		result = last == 48 && q && USABLE(q) == 48;
		FREE(q);
	}
	CHECK_BODY("every size 1..8192 gets at least its size, 16-aligned, writable")
	{
		for (size_t n = 1; n <= 8192; n++) {
			unsigned char *q = MALLOC(n);
			result = result && q && USABLE(q) >= n && aligned(q, 16);
			if (q) {
				q[0] = 1;
				q[n - 1] = 2;
			}
			FREE(q);
		}
	}
	CHECK_BODY("large sizes up to 64 MiB")
	{
		for (size_t n = 4097; n <= (64u << 20); n *= 3) {
			unsigned char *q = MALLOC(n);
			result = result && q && USABLE(q) >= n;
			if (q) {
				fill(q, 4096, 7);
				q[n - 1] = 9;
				result = result && check_fill(q, 4096, 7) && q[n - 1] == 9;
			}
			FREE(q);
		}
	}

	errno = 0;
	CHECK("malloc(SIZE_MAX) is NULL", MALLOC(SIZE_MAX) == NULL);
	CHECK("malloc(SIZE_MAX) sets ENOMEM", errno == ENOMEM);
	errno = 0;
	CHECK("malloc(PTRDIFF_MAX + 1) is NULL/ENOMEM",
	      MALLOC((size_t)PTRDIFF_MAX + 1) == NULL && errno == ENOMEM);

	CHECK_BODY("live objects do not overlap and keep their contents")
	{
		enum { N = 20000 };
		static void *v[N];
		for (unsigned i = 0; i < N; i++) {
			size_t n = 1 + (i * 2654435761u) % 5000;
			v[i] = MALLOC(n);
			if (v[i])
				fill(v[i], n, i);
		}
		for (unsigned i = 0; i < N; i++) {
			size_t n = 1 + (i * 2654435761u) % 5000;
			result = result && v[i] && check_fill(v[i], n, i);
			FREE(v[i]);
		}
	}
}

static void test_calloc(void)
{
	BANNER("calloc / reallocarray");
	CHECK_BODY("calloc returns zeroed memory after the class was dirtied")
	{
		for (size_t i = 0; i < NCLASSES; i++) {
			void *d[200];
			for (int k = 0; k < 200; k++) {
				d[k] = MALLOC(class_sizes[i]);
				memset(d[k], 0xa5, class_sizes[i]);
			}
			for (int k = 0; k < 200; k++)
				FREE(d[k]);
			void *z = CALLOC(1, class_sizes[i]);
			result = result && z && all_zero(z, class_sizes[i]);
			FREE(z);
		}
	}
	CHECK_BODY("large calloc is zeroed, also after reuse")
	{
		for (int round = 0; round < 3; round++) {
			size_t n = (size_t)1 << (13 + round * 4);
			unsigned char *q = MALLOC(n);
			memset(q, 0x5a, n);
			FREE(q);
			unsigned char *z = CALLOC(n, 1);
			result = result && z && all_zero(z, n);
			FREE(z);
		}
	}
	errno = 0;
	CHECK("calloc overflow is NULL/ENOMEM",
	      CALLOC(SIZE_MAX / 2 + 1, 2) == NULL && errno == ENOMEM);
	errno = 0;
	CHECK("calloc(SIZE_MAX, SIZE_MAX) is NULL/ENOMEM",
	      CALLOC(SIZE_MAX, SIZE_MAX) == NULL && errno == ENOMEM);
	void *z0 = CALLOC(0, 0);
	CHECK("calloc(0, 0) is a unique pointer", z0 != NULL);
	FREE(z0);

	char *p = MALLOC(100);
	fill(p, 100, 3);
	errno = 0;
	CHECK("reallocarray overflow is NULL/ENOMEM",
	      REALLOCARRAY(p, SIZE_MAX / 4, 8) == NULL && errno == ENOMEM);
	CHECK("reallocarray overflow leaves the block intact", check_fill(p, 100, 3));
	char *q = REALLOCARRAY(p, 50, 40);
	CHECK("reallocarray grows and keeps contents", q && check_fill(q, 100, 3) && USABLE(q) >= 2000);
	FREE(q);
}

static void test_aligned(void)
{
	BANNER("posix_memalign / aligned_alloc / memalign / valloc / pvalloc");
	void *p = (void *)1;
	CHECK("posix_memalign(0) is EINVAL", POSIX_MEMALIGN(&p, 0, 8) == EINVAL && p == (void *)1);
	CHECK("posix_memalign(4) is EINVAL (not a multiple of sizeof(void *))",
	      POSIX_MEMALIGN(&p, 4, 8) == EINVAL);
	CHECK("posix_memalign(24) is EINVAL (not a power of two)",
	      POSIX_MEMALIGN(&p, 24, 8) == EINVAL);
	CHECK("posix_memalign(SIZE_MAX/2+1, 1) fails",
	      POSIX_MEMALIGN(&p, SIZE_MAX / 2 + 1, 1) != 0);
	CHECK("posix_memalign(64, SIZE_MAX) is ENOMEM", POSIX_MEMALIGN(&p, 64, SIZE_MAX) == ENOMEM);

	CHECK_BODY("posix_memalign honours every alignment 8 B .. 4 MiB for many sizes")
	{
		static const size_t sizes[] = { 0, 1, 8, 16, 24, 100, 255, 640, 1000, 2049,
		                                4096, 4097, 10000, 70000, 300000 };
		for (size_t a = 8; a <= (4u << 20); a <<= 1)
			for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; i++) {
				void *q = NULL;
				int rc = POSIX_MEMALIGN(&q, a, sizes[i]);
				result = result && rc == 0 && q && aligned(q, a) &&
				         USABLE(q) >= sizes[i];
				if (q && sizes[i])
					memset(q, 0x11, sizes[i]);
				FREE(q);
			}
	}
	CHECK_BODY("aligned objects keep their alignment across many allocations")
	{
		void *v[512];
		for (int i = 0; i < 512; i++) {
			v[i] = ALIGNED_ALLOC(256, 300);
			result = result && v[i] && aligned(v[i], 256);
		}
		for (int i = 0; i < 512; i++)
			FREE(v[i]);
	}
	errno = 0;
	CHECK("aligned_alloc(3) is NULL/EINVAL", ALIGNED_ALLOC(3, 16) == NULL && errno == EINVAL);
	void *q = ALIGNED_ALLOC(4096, 10);
	CHECK("aligned_alloc(4096, 10)", q && aligned(q, 4096));
	FREE(q);
	q = MEMALIGN(24, 100);
	CHECK("memalign(24) rounds the alignment up to 32", q && aligned(q, 32));
	FREE(q);
	errno = 0;
	CHECK("memalign(SIZE_MAX) is NULL/EINVAL", MEMALIGN(SIZE_MAX, 1) == NULL && errno == EINVAL);
	q = VALLOC(100);
	CHECK("valloc is page-aligned", q && aligned(q, 4096));
	FREE(q);
	q = PVALLOC(5000);
	CHECK("pvalloc rounds the size to pages", q && aligned(q, 4096) && USABLE(q) >= 8192);
	FREE(q);
	q = PVALLOC(0);
	CHECK("pvalloc(0) is one page", q && aligned(q, 4096) && USABLE(q) >= 4096);
	FREE(q);
	errno = 0;
	CHECK("pvalloc(SIZE_MAX) is NULL/ENOMEM", PVALLOC(SIZE_MAX) == NULL && errno == ENOMEM);
	q = ALIGNED_ALLOC(64, 100);
	FREE_ALIGNED_SIZED(q, 64, 100);
	q = MALLOC(300);
	FREE_SIZED(q, 300);
	CHECK("free_sized and free_aligned_sized", true);
}

static void test_realloc(void)
{
	BANNER("realloc");
	char *p = REALLOC(NULL, 40);
	CHECK("realloc(NULL, n) allocates", p && USABLE(p) >= 40);
	fill(p, 40, 1);
	char *q = REALLOC(p, 48);
	CHECK("realloc within the class keeps the pointer", q == p);
	/* Just over half of the block (a class or hub object: usable size). */
	size_t half = USABLE(q) / 2 + 1;
	q = REALLOC(q, half);
	CHECK("realloc to a smaller class still more than half full keeps the pointer", q == p);
	CHECK("... and the contents", check_fill(q, half < 40 ? half : 40, 1));
	q = REALLOC(q, 1000);
	CHECK("realloc small -> small moves and keeps contents",
	      q && check_fill(q, half < 40 ? half : 40, 1));
	CHECK("a block moved by growth has a quarter of headroom", USABLE(q) >= 1250);
	char *r = REALLOC(q, 1200);
	CHECK("... so the next small growth stays in place", r == q);
	q = r;
	fill(q, 1000, 2);
	q = REALLOC(q, 100000);
	CHECK("realloc small -> large keeps contents", q && check_fill(q, 1000, 2));
	fill(q, 100000, 3);
	r = REALLOC(q, USABLE(q));
	CHECK("realloc of a large block up to its usable size keeps the pointer", r == q);
	q = r;
	char *big1m = MALLOC(1 << 20);
	fill(big1m, 1 << 20, 4);
	big1m = REALLOC(big1m, 600000);
	CHECK("a large block shrunk by less than half gives the tail back",
	      big1m && USABLE(big1m) < (1 << 20) && check_fill(big1m, 600000, 4));
	FREE(big1m);
	q = REALLOC(q, 5000000);
	CHECK("realloc large -> larger keeps contents", q && check_fill(q, 100000, 3));
	q = REALLOC(q, 200);
	CHECK("realloc large -> small keeps contents", q && check_fill(q, 200, 3) && USABLE(q) < 4096);
	errno = 0;
	CHECK("realloc(p, SIZE_MAX) is NULL/ENOMEM", REALLOC(q, SIZE_MAX) == NULL && errno == ENOMEM);
	CHECK("... and leaves the block intact", check_fill(q, 200, 3));
	/* Sizes where size + size / 4 wraps: growth headroom must not turn
	 * them into a small request. */
	errno = 0;
	CHECK("realloc(small, 0.8 * 2^64) is NULL/ENOMEM",
	      REALLOC(q, (size_t)0xCCCCCCCCCCCCCCCDull) == NULL && errno == ENOMEM);
	errno = 0;
	CHECK("realloc(small, 0.8 * 2^64 + 2^28) is NULL/ENOMEM",
	      REALLOC(q, (size_t)0xCCCCCCCCCCCCCCCDull + ((size_t)1 << 28)) == NULL && errno == ENOMEM);
	errno = 0;
	CHECK("reallocarray(small, 2, 0x6666666666666667) is NULL/ENOMEM",
	      REALLOCARRAY(q, 2, (size_t)0x6666666666666667ull) == NULL && errno == ENOMEM);
	CHECK("... and leaves the block intact", check_fill(q, 200, 3));
	char *big = MALLOC(1 << 20);
	errno = 0;
	CHECK("realloc(large, SIZE_MAX) is NULL/ENOMEM",
	      REALLOC(big, SIZE_MAX) == NULL && errno == ENOMEM);
	FREE(big);
	/* glibc: realloc(p, 0) frees p and returns NULL. */
	CHECK("realloc(p, 0) frees and returns NULL", REALLOC(q, 0) == NULL);
	CHECK_BODY("realloc growth 1 B .. 256 KiB step by step keeps contents")
	{
		unsigned char *g = NULL;
		size_t have = 0;
		for (size_t n = 1; n <= 262144; n += 1 + n / 8) {
			g = REALLOC(g, n);
			result = result && g;
			if (!g)
				break;
			for (size_t i = 0; i < have; i++)
				result = result && g[i] == (unsigned char)i;
			for (size_t i = have; i < n; i++)
				g[i] = (unsigned char)i;
			have = n;
		}
		FREE(g);
	}
}

struct handoff {
	void **v;
	int n;
};

static void *alloc_many(void *arg)
{
	struct handoff *h = arg;
	for (int i = 0; i < h->n; i++) {
		h->v[i] = MALLOC(16 + (size_t)(i % 300) * 8);
		fill(h->v[i], 16, (unsigned)i);
	}
	return NULL;
}

static void *free_many(void *arg)
{
	struct handoff *h = arg;
	bool ok = true;
	for (int i = 0; i < h->n; i++) {
		ok = ok && check_fill(h->v[i], 16, (unsigned)i);
		FREE(h->v[i]);
	}
	return ok ? (void *)1 : NULL;
}

static void *churn_and_exit(void *arg)
{
	(void)arg;
	void *v[64];
	for (int i = 0; i < 64; i++)
		v[i] = MALLOC((size_t)(i * 61) % 4096);
	for (int i = 0; i < 64; i++)
		FREE(v[i]);
	return NULL;
}

static void test_threads(void)
{
	BANNER("threads");
	enum { N = 50000 };
	static void *v[N];
	struct handoff h = { v, N };
	pthread_t a, b;
	void *ok = NULL;
	pthread_create(&a, NULL, alloc_many, &h);
	pthread_join(a, NULL);
	pthread_create(&b, NULL, free_many, &h);
	pthread_join(b, &ok);
	CHECK("objects allocated by one thread are freed intact by another", ok == (void *)1);
	CHECK_BODY("1000 short-lived threads")
	{
		for (int i = 0; i < 1000 && result; i++) {
			pthread_t t;
			result = pthread_create(&t, NULL, churn_and_exit, NULL) == 0 &&
			         pthread_join(t, NULL) == 0;
		}
	}
#ifdef SM_TEST_CORE
	struct sm_stats st;
	sm_stats(&st);
	/* An exiting thread's cache is reused once the refill thread has
	 * emptied it; a few more exist while it catches up, never 1000. */
	fprintf(stderr, "thread caches after 1000 threads: %llu\n",
	        (unsigned long long)(st.threads_live + st.threads_cached));
	CHECK("exited threads' caches are reused, not multiplied",
	      st.threads_live + st.threads_cached <= 64);
#endif
}

#ifndef SM_TEST_CORE
/* glibc's introspection calls, answered by sigmalloc's statistics. */
static void test_introspection(void)
{
	BANNER("mallinfo2 / malloc_stats / mallopt");
	void *keep = malloc(1000);
	struct mallinfo2 mi = mallinfo2();
	CHECK("mallinfo2 reports resident and allocated bytes", mi.arena > 0 && mi.uordblks > 0);
	CHECK("mallopt is accepted", mallopt(M_ARENA_MAX, 2) == 1);
	free(keep);
	int fds[2];
	if (pipe(fds) == 0) {
		int saved = dup(2);
		dup2(fds[1], 2);
		malloc_stats();
		dup2(saved, 2);
		close(saved);
		close(fds[1]);
		char buf[256] = "";
		ssize_t n = read(fds[0], buf, sizeof buf - 1);
		buf[n > 0 ? n : 0] = '\0';
		close(fds[0]);
		CHECK("malloc_stats prints sigmalloc's table",
		      strncmp(buf, "sigmalloc statistics:", 21) == 0);
	}
}
#endif

static void test_memory(void)
{
	BANNER("memory");
	if (UNDER_ASAN || UNDER_TSAN) {
		fprintf(stderr, "(resident-size check skipped under a sanitizer: its shadow memory)\n");
		return;
	}
	enum { N = 1000000 };
	void **v = MALLOC(N * sizeof *v);
	memset(v, 0xff, N * sizeof *v); /* resident before the baseline (not 0: gcc would make malloc+memset a calloc) */
	long before = rss_kib();
	for (int i = 0; i < N; i++)
		v[i] = MALLOC(16);
	for (int i = 0; i < N; i++)
		memset(v[i], 0x33, 16);
	long after = rss_kib();
	fprintf(stderr, "1M x 16 B: resident +%ld KiB (limit 17408)\n", after - before);
	CHECK("a million live 16-byte allocations cost at most 17 MiB", after - before <= 17 * 1024);
	for (int i = 0; i < N; i++)
		FREE(v[i]);
	FREE(v);
	CHECK("malloc_trim returns 1", MALLOC_TRIM(0) == 1);

	/* Freed space is reused: 200k blocks of 256 B, then five rounds of
	 * freeing a random half and allocating it again. Refills that carved
	 * only fresh slabs (jemalloc's batch_alloc asked for a slab's worth or
	 * more) grew this by 2.5x (backend.c, batch_alloc_lookup). */
	enum { M = 200000 };
	void **w = MALLOC(M * sizeof *w);
	memset(w, 0xff, M * sizeof *w);
	for (int i = 0; i < M; i++) {
		w[i] = MALLOC(256);
		memset(w[i], 0x44, 256);
	}
	long filled = rss_kib();
	uint64_t rng = 12345;
	for (int round = 0; round < 5; round++) {
		for (int i = 0; i < M; i++) {
			rng = rng * 6364136223846793005ull + 1442695040888963407ull;
			if (rng >> 63) {
				FREE(w[i]);
				w[i] = NULL;
			}
		}
		for (int i = 0; i < M; i++)
			if (!w[i]) {
				w[i] = MALLOC(256);
				memset(w[i], 0x44, 256);
			}
	}
	long churned = rss_kib();
	fprintf(stderr, "200k x 256 B, 5 rounds of free-half/refill: resident %ld -> %ld KiB\n",
	        filled, churned);
	CHECK("freed blocks are reused: resident grows by at most 15 %",
	      churned - filled <= filled * 15 / 100);
	for (int i = 0; i < M; i++)
		FREE(w[i]);
	FREE(w);
}

/* Runs fn in a child; returns its stderr (first line) and wait status. */
static int in_child(void (*fn)(void), char *err, size_t cap)
{
	int fds[2];
	if (pipe(fds))
		return -1;
	pid_t pid = fork();
	if (pid == 0) {
		dup2(fds[1], 2);
		close(fds[0]);
		fn();
		_exit(0);
	}
	close(fds[1]);
	size_t len = 0;
	ssize_t n;
	while (len < cap - 1 && (n = read(fds[0], err + len, cap - 1 - len)) > 0)
		len += (size_t)n;
	err[len] = '\0';
	close(fds[0]);
	int status = 0;
	waitpid(pid, &status, 0);
	return status;
}

static void free_stack_pointer(void)
{
	int local;
	FREE(&local);
}

static void free_static_pointer(void)
{
	static char buf[64];
	FREE(buf + 16);
}

/* Pointers into blocks, not at their start: never handed out either. */
static void free_interior_64(void)
{
	char *p = MALLOC(64);
	FREE(p + 8);
}

static void free_interior_48(void)
{
	char *p = MALLOC(48);
	FREE(p + 1);
}

/* The second free of a block with no malloc of its size in between. */
static void free_twice(void)
{
	char *volatile p = MALLOC(64); /* volatile: gcc may drop a malloc/free pair */
	FREE(p);
	FREE(p);
}

/* Large blocks: sigmalloc's map of them (backend.c) knows which pointers
 * start a live one. */
static void free_twice_large(void)
{
	char *volatile p = MALLOC(100000);
	char *volatile q = MALLOC(100000); /* so that p's memory is not simply reused */
	FREE(p);
	FREE(p);
	FREE(q);
}

static void free_inside_large(void)
{
	char *volatile p = MALLOC(100000);
	FREE(p + 4096);
}

static void free_inside_small_bin(void)
{
	char *volatile p = MALLOC(6000); /* one of jemalloc's small bins, in the large arena */
	FREE(p + 8);
}

static void realloc_freed_large(void)
{
	char *volatile p = MALLOC(20000);
	char *volatile q = MALLOC(20000);
	FREE(p);
	p = REALLOC(p, 20400);
	FREE(q);
}

#ifdef SM_TEST_CORE
/* The same when the second free takes the slow path: the bucket's high
 * mark lowered to its count. */
static void free_twice_slow(void)
{
	char *p = MALLOC(64);
	FREE(p);
	struct sm_bucket *b = &_sm_thread.buckets[3]; /* 64 B */
	b->high_mark = (uint32_t)(b->tally & SM_TALLY_COUNT_MAX);
	FREE(p);
}

/* A 64 B-aligned pointer in the 64 B class's pool span past all it ever
 * carves: the free is taken (the hit path checks class and alignment
 * only), and the trim that hands it to the pool aborts. */
static void free_uncarved_pool(void)
{
	FREE(MALLOC(64));
	if (!_sm_pool_bytes)
		abort();
	FREE((void *)(_sm_base + 3 * SM_SLOT_SIZE + _sm_pool_bytes - 64));
	sm_malloc_trim(0);
}

/* A second free of a pool object that is not on top of the bucket (the
 * hit path's check): caught when malloc_trim marks the pool's free list. */
static void not_pool_blocks(void)
{
	fputs("test: the blocks are not the pool's\n", stderr);
	abort();
}

static void free_twice_pool(void)
{
	sm_malloc_trim(0); /* every cached block back, the pool's to the pool */
	char *a = MALLOC(64), *b = MALLOC(64);
	if (!_sm_pool_holds(a) || !_sm_pool_holds(b))
		not_pool_blocks();
	FREE(a);
	FREE(b);
	FREE(a);
	sm_malloc_trim(0);
}

/* p + 16 into a 48-byte pool block passes free()'s alignment check; the
 * trim that reads the pool's free list finds it inside block p. */
static void free_interior_pool(void)
{
	sm_malloc_trim(0);
	char *a = MALLOC(48);
	if (!_sm_pool_holds(a) || USABLE(a) != 48)
		not_pool_blocks();
	FREE(a + 16);
	sm_malloc_trim(0);
}

/* A free into large address space whose map words never became writable:
 * with RLIMIT_DATA at one page, range_alloc's mprotect of the map fails, the
 * malloc returns NULL, and the extent's addresses stay burnt (backend.c).
 * The free of a pointer in the middle of them must read a word of 0 and
 * abort with the message (with the map reserved PROT_NONE it faulted). Exit
 * codes 3-5: the set-up did not happen, so the check would show nothing. */
static void free_in_failed_large_extent(void)
{
	FREE(MALLOC(100000)); /* the large arena and its first extent exist */
	uintptr_t before = _sm_backend_large_carved();
	struct rlimit one_page = { 4096, 4096 };
	if (setrlimit(RLIMIT_DATA, &one_page) != 0)
		_exit(3);
	errno = 0;
	void *volatile q = MALLOC((size_t)64 << 20);
	if (q || errno != ENOMEM)
		_exit(4);
	uintptr_t after = _sm_backend_large_carved();
	if (after - before < ((uintptr_t)8 << 20))
		_exit(5); /* nothing burnt: no page of the map was left unopened */
	FREE((void *)(((before + after) / 2) & ~(uintptr_t)4095));
}
#endif

static void realloc_interior(void)
{
	char *p = MALLOC(256);
	p = REALLOC(p + 32, 512);
	FREE(p);
}

#ifdef SM_TEST_CORE
static void use_after_free(void)
{
	char *volatile p = sm_malloc(40);
	sm_free(p); /* on this thread's private list: poisoned under ASan */
	p[20] = 1;
}

static void test_asan_poison(void)
{
	BANNER("AddressSanitizer sees cached objects");
	if (!UNDER_ASAN) {
		fprintf(stderr, "(needs an AddressSanitizer build)\n");
		return;
	}
	char err[4096];
	int st = in_child(use_after_free, err, sizeof err);
	CHECK("a write to a freed, cached object is reported by ASan",
	      !(WIFEXITED(st) && WEXITSTATUS(st) == 0) && strstr(err, "use-after-poison") != NULL);
}
#endif

#ifdef SM_TEST_CORE
/* A bucket is an array of `capacity` slots (types.h). The fast path's push
 * relies on high_mark < capacity; the slow paths that push past high_mark
 * (a thread's stock handed over at exit: _sm_bucket_splice; the magazines
 * of an inbox or the depot: bucket_take_magazine) must send what does not
 * fit back to jemalloc, and a slow free that finds the array full must
 * trim before it pushes. Driven here as the owner's slow path would, at
 * depth 1. */
static int compare_pointers(const void *a, const void *b)
{
	uintptr_t x = (uintptr_t)*(void *const *)a, y = (uintptr_t)*(void *const *)b;
	return x < y ? -1 : x > y;
}

static void test_bucket_capacity(void)
{
	BANNER("a bucket never holds more than its slots");
	const uint32_t cls = 3; /* 64 B */
	FREE(MALLOC(64));       /* the thread has its cache */
	struct sm_cache *c = _sm_thread.cache;
	struct sm_bucket *b = &_sm_thread.buckets[cls];
	uint32_t cap = b->capacity;
	CHECK("the bucket has slots beyond its cap", b->slots && cap > b->high_mark);
	uint32_t n = cap + 100;
	void **objs = MALLOC(sizeof(void *) * (n + 1));
	for (uint32_t i = 0; i <= n; i++)
		objs[i] = MALLOC(64);
	struct sm_node *chain = NULL;
	for (uint32_t i = n; i-- > 0;) {
		struct sm_node *node = objs[i];
		node->next = chain;
		chain = node;
	}
	uint32_t before = (uint32_t)(b->tally & SM_TALLY_COUNT_MAX);
	uint64_t trimmed = c->slow[cls].objects_trimmed;
	_sm_thread.depth = 1;
	_sm_bucket_splice(c, cls, chain, n);
	_sm_thread.depth = 0;
	uint32_t after = (uint32_t)(b->tally & SM_TALLY_COUNT_MAX);
	CHECK("a splice larger than the room fills the bucket to capacity", after == cap);
	CHECK("what did not fit went back to jemalloc",
	      c->slow[cls].objects_trimmed - trimmed == n - (cap - before));
	CHECK("the spliced objects are on top, the chain's first topmost",
	      b->slots[cap - 1] == objs[0] && b->slots[before] == objs[cap - before - 1]);
	/* The slow path: the array is full. With the high mark below what
	 * the trim leaves, the free would then hand its top batch on (with the
	 * block just freed): earlier tests may have grown the mark (to 2048 of
	 * 2144 slots in the sanitizer builds), so it is set here. */
	const uint32_t high_mark = b->high_mark;
	b->high_mark = cap - 1;
	FREE(objs[n]);
	b->high_mark = high_mark;
	after = (uint32_t)(b->tally & SM_TALLY_COUNT_MAX);
	CHECK("a free into a full bucket trims first", after < cap && b->slots[after - 1] == objs[n]);
	/* Everything comes back out, once each: n distinct, writable blocks. */
	for (uint32_t i = 0; i < n; i++) {
		objs[i] = MALLOC(64);
		memset(objs[i], (int)i, 64);
	}
	void **sorted = MALLOC(sizeof(void *) * n);
	memcpy(sorted, objs, sizeof(void *) * n);
	qsort(sorted, n, sizeof(void *), compare_pointers);
	int distinct = sorted[0] != NULL;
	for (uint32_t i = 1; i < n; i++)
		distinct &= sorted[i] != sorted[i - 1];
	FREE(sorted);
	CHECK("mallocs after it return distinct blocks", distinct);
	for (uint32_t i = 0; i < n; i++)
		FREE(objs[i]);
	FREE(objs);
}

/* The depot keeps trimmed batches for whichever thread runs empty next;
 * a process with no refill thread never releases it by time, so
 * malloc_trim must. */
static void test_trim_empties_depot(void)
{
	BANNER("malloc_trim empties the depot");
	const uint32_t cls = 3; /* 64 B */
	enum { N = 6000 }; /* more than a bucket holds at its cap (2048) */
	void **v = MALLOC(N * sizeof *v);
	for (int i = 0; i < N; i++)
		v[i] = MALLOC(64);
	for (int i = 0; i < N; i++)
		FREE(v[i]);
	int32_t held = _sm_depot_held(cls);
	CHECK("the frees beyond the bucket's cap went to the depot", held > 0);
	CHECK("malloc_trim returns 1", MALLOC_TRIM(0) == 1);
	CHECK("malloc_trim empties the depot", _sm_depot_held(cls) == 0);
	FREE(v);
}

/* jemalloc's count of 64-byte regions handed out of its slabs, over all
 * arenas: an object in any tcache counts as handed out. */
static uint64_t jemalloc_regions_64(void)
{
	uint64_t epoch = 1;
	size_t len = sizeof epoch;
	mallctl("epoch", &epoch, &len, &epoch, len);
	unsigned nbins = 0;
	len = sizeof nbins;
	mallctl("arenas.nbins", &nbins, &len, NULL, 0);
	for (unsigned i = 0; i < nbins; i++) {
		char name[64];
		size_t size = 0, regs = 0;
		len = sizeof size;
		snprintf(name, sizeof name, "arenas.bin.%u.size", i);
		if (mallctl(name, &size, &len, NULL, 0) != 0 || size != 64)
			continue;
		len = sizeof regs;
		snprintf(name, sizeof name, "stats.arenas.4096.bins.%u.curregs", i);
		if (mallctl(name, &regs, &len, NULL, 0) != 0)
			return 0;
		return regs;
	}
	return 0;
}

/* The owner's trims (a thread that frees more than it keeps) go back to
 * jemalloc through the thread's automatic tcache, jemalloc's fast free path
 * (backend.c, free_flags), and malloc_trim flushes that tcache too.
 * Flushing a tcache lowers curregs by what it held; the refill thread is
 * held out while it is read and only this thread's tcache is flushed. The
 * trim is called directly, as the owner's free would (a free could also
 * hand its batch to the refill thread's outbox, depending on timing). */
static void test_trims_use_thread_tcache(void)
{
	BANNER("trims free through the thread's automatic tcache; malloc_trim flushes it");
	const uint32_t cls = 3; /* 64 B */
	enum { N = 400 };
	void *v[N];
	/* Use up the class's pool (pool.c), so that the blocks come from
	 * jemalloc: pool blocks go back to the pool, never to jemalloc. */
	uint32_t in_pool = (uint32_t)(_sm_pool_bytes / 64) + N;
	void **pooled = MALLOC(sizeof(void *) * in_pool);
	for (uint32_t i = 0; i < in_pool; i++)
		pooled[i] = MALLOC(64);
	for (int round = 0; round < 2; round++) {
		for (int i = 0; i < N; i++)
			v[i] = MALLOC(64);
		for (int i = 0; i < N; i++)
			FREE(v[i]);
		_sm_refiller_barrier();
		struct sm_bucket *b = &_sm_thread.buckets[cls];
		uint64_t held = b->tally & SM_TALLY_COUNT_MAX;
		_sm_thread.depth = 1;
		_sm_bucket_trim_to(_sm_thread.cache, cls, 0);
		_sm_thread.depth = 0;
		if (round == 1)
			CHECK("malloc_trim returns 1", MALLOC_TRIM(0) == 1);
		/* The refill thread may wake on its tick and refill or trim for
		 * another cache, which moves curregs too: hold its work lock
		 * (fork's prepare and parent) across the two reads. */
		_sm_refiller_fork_prepare();
		uint64_t before = jemalloc_regions_64();
		mallctl("thread.tcache.flush", NULL, NULL, NULL, 0);
		uint64_t after = jemalloc_regions_64();
		_sm_refiller_fork_parent();
		fprintf(stderr,
		        "round %d: trimmed %llu; 64 B regions out %llu, after this thread's tcache "
		        "flush %llu\n",
		        round, (unsigned long long)held, (unsigned long long)before,
		        (unsigned long long)after);
		CHECK("the bucket held blocks to trim", held > 0);
		if (round == 0)
			CHECK("the trimmed blocks wait in the thread's automatic tcache", after < before);
		else
			CHECK("malloc_trim left nothing in the thread's automatic tcache", after == before);
	}
	for (uint32_t i = 0; i < in_pool; i++)
		FREE(pooled[i]);
	FREE(pooled);
}

/* realloc of a large block stays in place while the new size is in the
 * block's jemalloc size class, which backend.c computes instead of asking
 * jemalloc: the answer must be jemalloc's for the sizes at and next to
 * every class boundary from 5 KiB to 64 MiB. */
static void test_large_size_classes(void)
{
	BANNER("large size classes: sigmalloc's arithmetic against nallocx");
	bool agree = true;
	unsigned classes = 0;
	size_t below = 4096; /* the class below u */
	for (size_t u = nallocx(4097, 0); u <= ((size_t)64 << 20);
	     below = u, u = nallocx(u + 1, 0)) {
		void *p = MALLOC(u);
		if (!p || USABLE(p) != u) {
			CHECK("a large block of exactly a class size", false);
			FREE(p);
			return;
		}
		const size_t sizes[] = { u, u - 1, below + 1, below, below - 1, u + 1 };
		for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; i++) {
			bool mine = _sm_backend_same_large_class(p, sizes[i]);
			bool theirs = nallocx(sizes[i], 0) == u;
			if (mine != theirs) {
				fprintf(stderr, "  class %zu, size %zu: sigmalloc %d, jemalloc %d\n", u,
				        sizes[i], mine, theirs);
				agree = false;
			}
		}
		FREE(p);
		classes++;
	}
	CHECK("every class from 5 KiB to 64 MiB was tried", classes == 56);
	CHECK("the size-class arithmetic agrees with jemalloc's nallocx", agree);
}

/* malloc_usable_size of a large block comes from sigmalloc's map of large
 * blocks (backend.c), not from jemalloc: it must say what jemalloc says,
 * for every size class, for aligned blocks and after realloc in place
 * and moved, and say it from a nested call too (a handler). */
static void test_large_usable_map(void)
{
	BANNER("large blocks' usable sizes: sigmalloc's map against jemalloc's sallocx");
	bool agree = true, nested_agree = true;
	unsigned tried = 0, n = 0;
	char *blocks[256];
	size_t below = 4096; /* the class below u */
	for (size_t u = nallocx(4097, 0); u <= ((size_t)64 << 20); below = u, u = nallocx(u + 1, 0)) {
		blocks[n++] = MALLOC(u);         /* a class's top */
		blocks[n++] = MALLOC(below + 1); /* ... and its bottom */
	}
	const unsigned by_class = n; /* 2 x 56 classes (test_large_size_classes) */
	const size_t aligns[] = { 32, 4096, 8192, 65536 };
	const size_t asizes[] = { 100, 5000, 100000 };
	for (size_t a = 0; a < 4; a++)
		for (size_t i = 0; i < 3; i++) {
			void *q = NULL;
			blocks[n++] = sm_posix_memalign(&q, aligns[a], asizes[i]) == 0 ? q : NULL;
		}
	blocks[n++] = sm_memalign(16384, 3000);
	blocks[n++] = sm_valloc(9000);
	blocks[n++] = sm_pvalloc(9000);
	blocks[n++] = sm_calloc(3, 7000);
	/* realloc: within a class (kept), to a larger class (in place or moved,
	 * a small bin's 5 KiB to 7 KiB, a large extent's 20 KiB to 300 KiB),
	 * and down to a smaller class in place (1 MiB to 70000 B) */
	char *in_class = MALLOC(20000);
	bool kept = REALLOC(in_class, 20400) == in_class;
	blocks[n++] = in_class;
	blocks[n++] = REALLOC(MALLOC(5000), 7000);
	blocks[n++] = REALLOC(MALLOC(20000), 300000);
	blocks[n++] = REALLOC(MALLOC(1 << 20), 70000);
	const bool mapped = _sm_large_sizes != NULL;
	for (unsigned i = 0; i < n; i++) {
		if (!blocks[i] || (uintptr_t)blocks[i] - _sm_base < (uintptr_t)SM_LARGE_FIRST_SLOT * SM_SLOT_SIZE)
			continue; /* NULL (checked below) or a class object */
		tried++;
		size_t theirs = sallocx(blocks[i], 0);
		if (USABLE(blocks[i]) != theirs) {
			fprintf(stderr, "  %p: sigmalloc %zu, jemalloc %zu\n", (void *)blocks[i],
			        USABLE(blocks[i]), theirs);
			agree = false;
		}
		_sm_thread.depth++; /* as a signal handler would see it */
		size_t nested = sm_malloc_usable_size(blocks[i]);
		_sm_thread.depth--;
		nested_agree &= nested == (mapped ? theirs : 0);
	}
	for (unsigned i = 0; i < n; i++)
		FREE(blocks[i]);
	/* From a handler: a realloc that stays in the block's class keeps it
	 * (one load of the map); one that does not cannot call jemalloc. */
	char *b = MALLOC(20000); /* a 20 KiB class block */
	_sm_thread.depth++;
	char *same = sm_realloc(b, 20400);
	errno = 0;
	char *moved = sm_realloc(b, 300000);
	int moved_errno = errno;
	_sm_thread.depth--;
	FREE(b);
	fprintf(stderr, "%u of %u blocks large and checked (map %s)\n", tried, n,
	        mapped ? "reserved" : "absent");
	CHECK("every large class's top and bottom, aligned, zeroed and reallocated blocks",
	      by_class == 112 && tried == n - 2); /* posix_memalign(32 or 4096, 100): class objects */
	CHECK("realloc within a large block's class keeps it", kept);
	CHECK("malloc_usable_size of a large block is jemalloc's usable size", agree);
	CHECK("... and a nested call answers the same from the map", nested_agree);
	if (mapped)
		CHECK("a nested realloc of a large block within its class returns the block",
		      same == b);
	CHECK("... one out of its class returns NULL with ENOMEM", !moved && moved_errno == ENOMEM);
}

/* An inbox holding more than the bucket's capacity (magazines, as the
 * refill thread and a fork child leave them): the malloc that finds its
 * bucket empty takes them all, fills the bucket to capacity, and gives the
 * rest back to jemalloc. */
static void test_inbox_overflow(void)
{
	BANNER("an inbox larger than the bucket");
	const uint32_t cls = 3; /* 64 B */
	FREE(MALLOC(64));
	struct sm_cache *c = _sm_thread.cache;
	struct sm_bucket *b = &_sm_thread.buckets[cls];
	struct sm_bucket_shared *sh = &c->shared[cls];
	uint32_t cap = b->capacity, batch = _sm_magazine_capacity(cls);
	uint32_t n = (cap / batch + 3) * batch; /* whole magazines, more than fit */
	void **objs = MALLOC(sizeof(void *) * n);
	for (uint32_t i = 0; i < n; i++)
		objs[i] = MALLOC(64);
	/* The refill thread may still be serving a refill request of this
	 * class from the tests before (it pushes a magazine to the inbox):
	 * hold its work lock until the checks are done. */
	_sm_refiller_fork_prepare();
	_sm_thread.depth = 1;
	_sm_bucket_trim_to(c, cls, 0); /* empty: the next malloc takes the inbox */
	uint32_t magazines = 0;
	for (uint32_t i = 0; i < n; i += batch) {
		struct sm_magazine *m = _sm_magazine_fill(cls, objs + i, batch);
		if (!m)
			break;
		atomic_fetch_add(&sh->inbox_count, (int32_t)batch);
		list_push(&sh->inbox, &m->link);
		magazines++;
	}
	_sm_thread.depth = 0;
	CHECK("the magazines were made", magazines == n / batch);
	uint64_t trimmed = c->slow[cls].objects_trimmed;
	void *p = MALLOC(64);
	uint32_t after = (uint32_t)(b->tally & SM_TALLY_COUNT_MAX);
	CHECK("the inbox filled the bucket to capacity (less the block taken)", after == cap - 1);
	/* >=: the refill thread may have delivered a magazine of its own
	 * before the lock was taken. */
	CHECK("what did not fit went back to jemalloc",
	      c->slow[cls].objects_trimmed - trimmed >= n - cap);
	bool ours = false;
	for (uint32_t i = 0; i < n; i++)
		ours |= objs[i] == p;
	CHECK("the block came from the inbox", ours);
	CHECK("the inbox is empty and its count back to zero",
	      atomic_load(&sh->inbox) == NULL && atomic_load(&sh->inbox_count) == 0);
	_sm_refiller_fork_parent();
	FREE(p);
	FREE(objs);
}
#endif

/* The child died of SIGABRT after one line on stderr that starts with prefix. */
static bool one_line_abort(int st, const char *err, const char *prefix)
{
	return WIFSIGNALED(st) && WTERMSIG(st) == SIGABRT &&
	       strncmp(err, prefix, strlen(prefix)) == 0 && strchr(err, '\n') == err + strlen(err) - 1;
}

static void test_bad_free(void)
{
	BANNER("free of a pointer never allocated");
	if (UNDER_ASAN) {
		fprintf(stderr, "(skipped: ASan intercepts the abort)\n");
		return;
	}
	char err[512];
	int st = in_child(free_stack_pointer, err, sizeof err);
	CHECK("free(&local) aborts", WIFSIGNALED(st) && WTERMSIG(st) == SIGABRT);
	CHECK("... with a one-line sigmalloc: message naming the pointer",
	      strncmp(err, "sigmalloc: free(): invalid pointer 0x", 37) == 0 &&
	      strchr(err, '\n') == err + strlen(err) - 1);
	st = in_child(free_static_pointer, err, sizeof err);
	CHECK("free(static buffer) aborts with a sigmalloc: message",
	      WIFSIGNALED(st) && WTERMSIG(st) == SIGABRT && strncmp(err, "sigmalloc:", 10) == 0);
	/* The message names the pointer passed: 8 past a 64-byte block. */
	st = in_child(free_interior_64, err, sizeof err);
	unsigned long long named = 0;
	CHECK("free(p + 8) of a 64-byte block aborts, naming p + 8",
	      WIFSIGNALED(st) && WTERMSIG(st) == SIGABRT &&
	      sscanf(err, "sigmalloc: free(): invalid pointer 0x%llx", &named) == 1 &&
	      named % 64 == 8);
	st = in_child(free_interior_48, err, sizeof err);
	CHECK("free(p + 1) of a 48-byte block aborts with a sigmalloc: message",
	      WIFSIGNALED(st) && WTERMSIG(st) == SIGABRT &&
	      strncmp(err, "sigmalloc: free(): invalid pointer", 34) == 0);
	st = in_child(free_twice, err, sizeof err);
	CHECK("free(p); free(p) aborts with a one-line sigmalloc: double free message",
	      one_line_abort(st, err, "sigmalloc: free(): double free of 0x"));
	static void (*const large_bad[])(void) = { free_twice_large, free_inside_large,
	                                            free_inside_small_bin, realloc_freed_large };
	static const char *const large_what[] = {
		"free(p); free(p) of a 100000-byte block aborts: not a live large block",
		"free(p + 4096) of a 100000-byte block aborts: not a live large block",
		"free(p + 8) of a 6000-byte block aborts: not a live large block",
		"realloc of a freed 20000-byte block aborts: not a live large block",
	};
	for (int i = 0; i < 4; i++) {
		st = in_child(large_bad[i], err, sizeof err);
		CHECK(large_what[i], one_line_abort(st, err, "sigmalloc: ") &&
		                         strstr(err, "(not a live large block"));
	}
#ifdef SM_TEST_CORE
	st = in_child(free_twice_slow, err, sizeof err);
	CHECK("... also when the second free takes the slow path",
	      WIFSIGNALED(st) && WTERMSIG(st) == SIGABRT &&
	      strncmp(err, "sigmalloc: free(): double free of 0x", 36) == 0);
	if (_sm_pool_bytes) {
		st = in_child(free_twice_pool, err, sizeof err);
		CHECK("free(a); free(b); free(a) of pool blocks aborts at the trim: double free",
		      one_line_abort(st, err, "sigmalloc: free(): double free of 0x") &&
		      strstr(err, "found by a trim of the 64-byte pool"));
		st = in_child(free_interior_pool, err, sizeof err);
		CHECK("free(p + 16) of a 48-byte pool block aborts at the trim: invalid pointer",
		      one_line_abort(st, err, "sigmalloc: free(): invalid pointer 0x") &&
		      strstr(err, "inside a block of the 48-byte pool"));
		st = in_child(free_uncarved_pool, err, sizeof err);
		CHECK("a free in a pool's uncarved part aborts by malloc_trim, naming the pointer",
		      one_line_abort(st, err, "sigmalloc: free(): invalid pointer 0x"));
	}
	st = in_child(free_in_failed_large_extent, err, sizeof err);
	if (WIFEXITED(st))
		fprintf(stderr, "(the child exited %d: 3-5 is a set-up that failed)\n", WEXITSTATUS(st));
	CHECK("a free into large address space whose map failed to open (ENOMEM) aborts: not a "
	      "live large block",
	      one_line_abort(st, err, "sigmalloc: free(): invalid pointer 0x") &&
	              strstr(err, "(not a live large block"));
#endif
	st = in_child(realloc_interior, err, sizeof err);
	CHECK("realloc(p + 32) of a 256-byte block aborts with a sigmalloc: message",
	      WIFSIGNALED(st) && WTERMSIG(st) == SIGABRT &&
	      strncmp(err, "sigmalloc: realloc(): invalid pointer", 37) == 0);
#ifdef SM_TEST_CORE
	int masks_right = 1;
	for (uint32_t c = 0; c < SM_NUM_CLASSES; c++) {
		uint32_t size = _sm_class_size[c];
		masks_right &= _sm_thread.class_align_mask[c] == ((size & -size) - 1);
	}
	CHECK("each class's alignment mask is its size's lowest set bit less one", masks_right);
#endif
}

#ifdef SM_TEST_CORE
/* The nested path, driven deterministically: with depth raised, sigmalloc
 * must believe it interrupted itself and serve from the atomic lists only. */
static void test_nested(void)
{
	BANNER("nested (signal-handler) path");
	/* Make sure this thread has used the classes (reserves stocked). */
	for (size_t i = 0; i < NCLASSES; i++)
		FREE(MALLOC(class_sizes[i]));
	struct sm_stats s0, s1;
	sm_stats(&s0);

	_sm_thread.depth++;
	void *p = sm_malloc(100);
	bool ok_alloc = p != NULL && sm_malloc_usable_size(p) >= 100;
	if (p)
		memset(p, 0x77, 100);
	sm_free(p);
	void *again = sm_malloc(100);
	bool reuse = again == p; /* served from what the nested free left */
	sm_free(again);
	errno = 0;
	void *big = sm_malloc(100000);
	int big_errno = errno;
	void *al = NULL;
	int al_rc = sm_posix_memalign(&al, 64, 200);
	bool al_ok = al_rc == 0 && al && ((uintptr_t)al & 63) == 0;
	sm_free(al);
	/* Drain the reserve of one class: eventually NULL/ENOMEM, never a crash. */
	void *held[64];
	int got = 0, nulls = 0, nomem = 1;
	for (int i = 0; i < 64; i++) {
		errno = 0;
		held[i] = sm_malloc(4000);
		if (held[i])
			got++;
		else {
			nulls++;
			nomem = nomem && errno == ENOMEM;
		}
	}
	for (int i = 0; i < 64; i++)
		sm_free(held[i]);
	_sm_thread.depth--;

	CHECK("nested malloc is served from the reserve", ok_alloc);
	CHECK("nested free feeds the next nested malloc", reuse);
	CHECK("nested large malloc is NULL/ENOMEM", big == NULL && big_errno == ENOMEM);
	CHECK("nested posix_memalign is served and aligned", al_ok);
	CHECK("an exhausted reserve gives NULL/ENOMEM", got > 0 && nulls > 0 && nomem);
	sm_stats(&s1);
	uint64_t na = 0, nn = 0, nf = 0;
	for (size_t i = 0; i < NCLASSES; i++) {
		na += s1.classes[i].nested_allocs - s0.classes[i].nested_allocs;
		nn += s1.classes[i].nested_nulls - s0.classes[i].nested_nulls;
		nf += s1.classes[i].nested_frees - s0.classes[i].nested_frees;
	}
	CHECK("statistics count nested allocations, NULLs and frees",
	      na == 67 && nn == (uint64_t)nulls && nf == (uint64_t)got + 3);

	/* A nested free of a large object is deferred, then done. */
	void *l = sm_malloc(50000);
	_sm_thread.depth++;
	sm_free(l);
	_sm_thread.depth--;
	for (int i = 0; i < 200; i++) /* slow paths drain the deferred list */
		sm_free(sm_malloc(4000));
	void *l2 = sm_malloc(50000);
	CHECK("a deferred large free is completed later", l2 != NULL);
	sm_free(l2);
	for (int i = 0; i < 400; i++)
		sm_free(sm_malloc(4000));
	_sm_thread.depth++;
	void *r = sm_malloc(4000);
	_sm_thread.depth--;
	CHECK("a nested malloc after the owner ran again is served", r != NULL);
	sm_free(r);

	/* Handlers that free many blocks (say, a structure the thread built)
	 * must not park them in the thread's stock, which only its owner can
	 * drain: the stock keeps a bounded few, the rest reach jemalloc by
	 * the next slow path of any thread (the deferred list). */
	enum { MANY = 100000 };
	static void *many[MANY];
	for (int i = 0; i < MANY; i++)
		many[i] = sm_malloc(64);
	struct sm_stats before, after;
	sm_stats(&before);
	_sm_thread.depth++;
	for (int i = 0; i < MANY; i++)
		sm_free(many[i]);
	_sm_thread.depth--;
	int32_t parked = _sm_thread.stock[3].more_count; /* class 3: 64 B */
	void *large = sm_malloc(100000); /* a slow path: housekeeping drains */
	sm_free(large);
	/* The refill thread (started by the nested mallocs above) drains the
	 * deferred list too, on its tick: if it took the list first, this
	 * slow path found it empty, and the frees may still be under way on
	 * that thread. Wait for its work in progress, then look. */
	_sm_refiller_barrier();
	sm_stats(&after);
	fprintf(stderr, "nested frees of %d x 64 B: %d parked in the stock; jemalloc allocated "
	        "%llu -> %llu B\n", MANY, parked, (unsigned long long)before.jemalloc_allocated,
	        (unsigned long long)after.jemalloc_allocated);
	CHECK("nested frees park at most 64 blocks of 64 B in the thread's stock",
	      parked >= 0 && parked <= 64);
	CHECK("... and the rest is back in jemalloc (next slow path or the refill thread)",
	      before.jemalloc_allocated - after.jemalloc_allocated >= (uint64_t)MANY * 64 * 9 / 10);
}
#endif

int main(void)
{
	test_malloc_free();
#ifdef SM_TEST_CORE
	/* First, while this process has one thread and so no refill thread
	 * restocking reserves behind the test's back. */
	test_nested();
#endif
	test_calloc();
	test_aligned();
	test_realloc();
	test_threads();
#ifndef SM_TEST_CORE
	test_introspection();
#endif
	test_memory();
	test_bad_free();
#ifdef SM_TEST_CORE
	test_asan_poison();
	test_bucket_capacity();
	test_inbox_overflow();
	test_large_size_classes();
	test_large_usable_map();
	test_trim_empties_depot();
	test_trims_use_thread_tcache();
#endif
	return print_test_summary();
}
