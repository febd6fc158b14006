/* The class pools (src/pool.c), in a fresh process against the core:
 *   - a program that uses a few objects of every class creates no class
 *     arena (jemalloc's arenas.narenas stays where initialisation left it);
 *   - those objects lie in the pools, and freed ones are reused from there;
 *   - a class that outgrows its pool gets its arena and its objects from
 *     jemalloc, and pool objects never go to jemalloc (a free of one there
 *     would crash or corrupt jemalloc: every block is checked intact);
 *   - SIGMALLOC_POOL=0 (the `pool-off` test) turns the pools off;
 *   - last, malloc_trim in a loop while two threads churn blocks of every
 *     class through the pools: every block keeps what its thread wrote
 *     (a trim that discarded or re-carved a live block would show), and
 *     under ThreadSanitizer the trim races with no refill or free.
 * Single-threaded until that last part: no refill thread starts, so every
 * count before it is this thread's. */
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#include "sigmalloc.h"
#include "testhelper.h"
#include "internal.h"
#include "types.h"

extern uintptr_t _sm_base;        /* backend.c */
extern uintptr_t _sm_pool_bytes;  /* pool.c */
extern const uint32_t _sm_class_size[SM_NUM_CLASSES]; /* sizeclass.c */
int mallctl(const char *name, void *oldp, size_t *oldlenp, void *newp, size_t newlen);

static unsigned narenas(void)
{
	unsigned n = 0;
	size_t len = sizeof n;
	mallctl("arenas.narenas", &n, &len, NULL, 0);
	return n;
}

/* The churn of the last part: 256 live blocks per thread, of random classes,
 * each filled with a tag of its thread and slot, checked before its free. */
enum { CHURN_LIVE = 256, CHURN_OPS = 200000 };
static atomic_int churners_done;
static atomic_long trims_done; /* the churn lasts for at least CHURN_TRIMS of them */
enum { CHURN_TRIMS = 50 };
static atomic_long churn_pooled, churn_bad, churn_ops;

static void *churn(void *arg)
{
	const unsigned id = (unsigned)(uintptr_t)arg;
	unsigned char *live[CHURN_LIVE] = {0};
	uint32_t size[CHURN_LIVE] = {0};
	uint64_t rng = 0x9e3779b97f4a7c15ull * (id + 1);
	long pooled = 0, bad = 0;
	long op;
	for (op = 0; op < CHURN_OPS || atomic_load(&trims_done) < CHURN_TRIMS; op++) {
		rng ^= rng << 13, rng ^= rng >> 7, rng ^= rng << 17;
		uint32_t i = (uint32_t)(rng % CHURN_LIVE);
		const unsigned char tag = (unsigned char)(id * 64 + i % 64 + 1);
		if (live[i]) {
			for (uint32_t k = 0; k < size[i]; k += 8)
				bad += live[i][k] != tag;
			sm_free(live[i]);
		}
		size[i] = _sm_class_size[(rng >> 32) % SM_NUM_CLASSES];
		live[i] = sm_malloc(size[i]);
		if (!live[i]) {
			bad++;
			continue;
		}
		pooled += _sm_pool_holds(live[i]);
		memset(live[i], tag, size[i]);
	}
	for (uint32_t i = 0; i < CHURN_LIVE; i++)
		sm_free(live[i]);
	atomic_fetch_add(&churn_ops, op);
	atomic_fetch_add(&churn_pooled, pooled);
	atomic_fetch_add(&churn_bad, bad);
	atomic_fetch_add(&churners_done, 1);
	return NULL;
}

static uint64_t pool_free_bytes(void)
{
	struct sm_stats st;
	sm_stats(&st);
	return st.pool_free_bytes;
}

static uint64_t pool_carved_bytes(void)
{
	struct sm_stats st;
	sm_stats(&st);
	return st.pool_bytes;
}

/* Resident pages of class cls's pool span (mincore). */
static long pool_resident_pages(uint32_t cls)
{
	if (!_sm_pool_bytes)
		return 0;
	const size_t pages = _sm_pool_bytes / 4096;
	unsigned char *vec = sm_malloc(pages);
	long n = -1;
	if (vec && mincore((void *)(_sm_base + (uintptr_t)cls * SM_SLOT_SIZE), _sm_pool_bytes, vec) == 0) {
		n = 0;
		for (size_t i = 0; i < pages; i++)
			n += vec[i] & 1;
	}
	sm_free(vec);
	return n;
}

/* Few enough that the largest class's pool (32 objects of 4 KiB) holds
 * them and its share of the process-wide nested reserve (16). */
enum { FEW = 10 };
enum { POOL = 128 * 1024 }; /* SIGMALLOC_POOL's default: what one pool carves */

int main(void)
{
	const char *env = getenv("SIGMALLOC_POOL");
	const bool pools_on = !(env && strcmp(env, "0") == 0);
	sm_free(sm_malloc(1)); /* initialises: arena 0 and the first large arena */
	const unsigned base_arenas = narenas();
	fprintf(stderr, "pool %zu B per class, %u arenas after init\n", (size_t)_sm_pool_bytes,
	        base_arenas);
	/* The span a slot keeps: the pool (128 KiB by default) and its colouring
	 * (at most 1 MiB: _sm_slot_colour). */
	CHECK("SIGMALLOC_POOL decides the pool size",
	      pools_on ? _sm_pool_bytes >= POOL && _sm_pool_bytes <= POOL + 1024 * 1024
	               : _sm_pool_bytes == 0);

	BANNER("a few objects of every class");
	void *v[SM_NUM_CLASSES][FEW];
	bool all_pooled = true;
	for (uint32_t c = 0; c < SM_NUM_CLASSES; c++)
		for (int i = 0; i < FEW; i++) {
			v[c][i] = sm_malloc(_sm_class_size[c]);
			memset(v[c][i], (int)c, _sm_class_size[c]);
			all_pooled &= _sm_pool_holds(v[c][i]);
		}
	unsigned used_arenas = narenas();
	fprintf(stderr, "%u arenas after %d objects of each of %u classes\n", used_arenas, FEW,
	        SM_NUM_CLASSES);
	if (pools_on) {
		CHECK("they come from the pools", all_pooled);
		CHECK("no class arena is created", used_arenas == base_arenas);
	} else {
		/* The first malloc(1) made the 16 B hub's already. */
		CHECK("without pools, every other hub gets an arena", used_arenas >= base_arenas + 4);
	}
	bool intact = true;
	for (uint32_t c = 0; c < SM_NUM_CLASSES; c++)
		for (int i = 0; i < FEW; i++) {
			const unsigned char *b = v[c][i];
			for (size_t k = 0; k < _sm_class_size[c]; k += 7)
				intact &= b[k] == (unsigned char)c;
			sm_free(v[c][i]);
		}
	CHECK("every object kept its contents", intact);
	if (pools_on) {
		/* Before a trim, freed objects wait in the thread's cache or on
		 * their pool's list; a new one comes from either. */
		void *again = sm_malloc(64);
		CHECK("a freed pool object is reused", _sm_pool_holds(again));
		sm_free(again);
	}
	const uint64_t carved_before = pool_carved_bytes();
	CHECK("malloc_trim returns 1", sm_malloc_trim(0) == 1);
	if (pools_on) {
		/* Every object is free: the trim uncarves each pool down to what
		 * the nested reserves hold (they keep a few of some classes). */
		fprintf(stderr, "malloc_trim: %llu B carved before, %llu B after, %llu B wait\n",
		        (unsigned long long)carved_before, (unsigned long long)pool_carved_bytes(),
		        (unsigned long long)pool_free_bytes());
		CHECK("malloc_trim uncarves the pools' free tops",
		      pool_carved_bytes() < carved_before / 2 && pool_free_bytes() < carved_before / 2);
		void *again = sm_malloc(64);
		CHECK("the pool carves again after a trim", _sm_pool_holds(again));
		sm_free(again);
	}

	BANNER("a class that outgrows its pool");
	uint32_t c64 = 0;
	while (_sm_class_size[c64] != 64)
		c64++;
	const uint32_t n = (uint32_t)(POOL / 64) + 5000;
	void **w = sm_malloc(sizeof(void *) * n);
	uint32_t pooled = 0;
	for (uint32_t i = 0; i < n; i++) {
		w[i] = sm_malloc(64);
		memcpy(w[i], &i, sizeof i);
		pooled += _sm_pool_holds(w[i]);
	}
	fprintf(stderr, "%u of %u objects of 64 B from the pool; %u arenas\n", pooled, n, narenas());
	/* All but what the thread's cache and the nested reserves hold. */
	const uint32_t pool_objects = (uint32_t)(POOL / 64);
	CHECK("the pool serves what it holds, jemalloc the rest",
	      pools_on ? pooled <= pool_objects && pooled + 64 >= pool_objects : pooled == 0);
	CHECK("the class (a hub) gets its arena", narenas() > used_arenas || !pools_on);
	intact = true;
	for (uint32_t i = 0; i < n; i++) {
		uint32_t got;
		memcpy(&got, w[i], sizeof got);
		intact &= got == i;
	}
	CHECK("every object kept its contents", intact);
	for (uint32_t i = 0; i < n; i++)
		sm_free(w[i]);
	const long resident_full = pool_resident_pages(c64);
	CHECK("malloc_trim returns 1", sm_malloc_trim(0) == 1);
	const long resident_trimmed = pool_resident_pages(c64);
	fprintf(stderr, "64 B pool: %ld pages resident before the trim, %ld after\n", resident_full,
	        resident_trimmed);
	if (pools_on)
		CHECK("the trim gives back the freed pool's pages (none of it went to jemalloc)",
		      resident_full >= POOL / 4096 && resident_trimmed <= 2);
	/* Everything again, through the pools and jemalloc. */
	pooled = 0;
	for (uint32_t i = 0; i < n; i++) {
		w[i] = sm_malloc(64);
		memset(w[i], 1, 64);
		pooled += _sm_pool_holds(w[i]);
	}
	if (pools_on)
		CHECK("after the trim the pool serves its objects again", pooled + 64 >= pool_objects);

	BANNER("a pool with holes");
	/* Free all of the pool's objects but one in every 4 pages: the pages
	 * between the survivors hold only free objects and go back; the
	 * survivors' pages stay, with their contents. */
	uint32_t kept = 0, freed = 0;
	for (uint32_t i = 0; i < n; i++) {
		uintptr_t page = ((uintptr_t)w[i] - _sm_base) / 4096;
		if (_sm_pool_holds(w[i]) && page % 4 == 0 && ((uintptr_t)w[i] & 4095) == 0) {
			memset(w[i], 0x5a, 64);
			kept++;
		} else {
			sm_free(w[i]);
			w[i] = NULL;
			freed++;
		}
	}
	const long resident_holes = pool_resident_pages(c64);
	sm_malloc_trim(0);
	const long resident_after = pool_resident_pages(c64);
	fprintf(stderr, "%u kept, %u freed; 64 B pool: %ld pages resident before the trim, %ld after\n",
	        kept, freed, resident_holes, resident_after);
	intact = true;
	for (uint32_t i = 0; i < n; i++)
		if (w[i])
			for (int k = 0; k < 64; k++)
				intact &= ((unsigned char *)w[i])[k] == 0x5a;
	CHECK("the survivors kept their contents", intact);
	if (pools_on) {
		CHECK("one survivor in every 4 pages", kept >= POOL / 4096 / 4 - 1);
		CHECK("the pages between survivors go back",
		      resident_holes >= POOL / 4096 && resident_after <= (long)kept + 2);
	}
	/* The discarded objects serve again: as many come from the pool as
	 * were freed to it (less what the cache keeps back). */
	uint32_t repooled = 0;
	for (uint32_t i = 0; i < n; i++)
		if (!w[i]) {
			w[i] = sm_malloc(64);
			memcpy(w[i], &i, sizeof i);
			repooled += _sm_pool_holds(w[i]);
		}
	intact = true;
	for (uint32_t i = 0; i < n; i++) {
		uint32_t got;
		memcpy(&got, w[i], sizeof got);
		intact &= got == i || got == 0x5a5a5a5au; /* a new object, or a survivor */
	}
	CHECK("every object holds what was written to it", intact);
	if (pools_on)
		CHECK("the discarded objects serve again", repooled + kept + 64 >= pool_objects);
	for (uint32_t i = 0; i < n; i++)
		sm_free(w[i]);
	sm_free(w);
	CHECK("malloc_trim returns 1", sm_malloc_trim(0) == 1);

	BANNER("malloc_trim while two threads churn the pools");
	pthread_t th[2];
	for (uintptr_t k = 0; k < 2; k++)
		if (pthread_create(&th[k], NULL, churn, (void *)k) != 0)
			abort();
	while (atomic_load(&churners_done) < 2) {
		sm_malloc_trim(0);
		atomic_fetch_add(&trims_done, 1);
	}
	const long trims = atomic_load(&trims_done);
	for (int k = 0; k < 2; k++)
		pthread_join(th[k], NULL);
	fprintf(stderr, "%ld trims; %ld of %ld allocations from the pools; %ld bad\n", trims,
	        atomic_load(&churn_pooled), atomic_load(&churn_ops), atomic_load(&churn_bad));
	CHECK("every churned block kept its thread's bytes", atomic_load(&churn_bad) == 0);
	CHECK("the trims ran during the churn", trims >= CHURN_TRIMS);
	if (pools_on)
		CHECK("the churn went through the pools", atomic_load(&churn_pooled) > atomic_load(&churn_ops) / 2);
	return print_test_summary();
}
