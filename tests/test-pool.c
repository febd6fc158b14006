/* The class pools (src/pool.c), in a fresh process against the core:
 *   - a program that uses a few objects of every class creates no class
 *     arena (jemalloc's arenas.narenas stays where initialisation left it);
 *   - those objects lie in the pools, and freed ones are reused from there;
 *   - a class that outgrows its pool gets its arena and its objects from
 *     jemalloc, and pool objects never go to jemalloc (a free of one there
 *     would crash or corrupt jemalloc: every block is checked intact);
 *   - SIGMALLOC_POOL=0 (the `pool-off` test) turns the pools off.
 * Single-threaded: no refill thread starts, so every count is this
 * thread's. */
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#include "sigmalloc.h"
#include "testhelper.h"
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

static bool in_pool(const void *p)
{
	return (((uintptr_t)p - _sm_base) & (SM_SLOT_SIZE - 1)) < _sm_pool_bytes;
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
			all_pooled &= in_pool(v[c][i]);
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
		CHECK("a freed pool object is reused", in_pool(again));
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
		CHECK("the pool carves again after a trim", in_pool(again));
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
		pooled += in_pool(w[i]);
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
		pooled += in_pool(w[i]);
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
		if (in_pool(w[i]) && page % 4 == 0 && ((uintptr_t)w[i] & 4095) == 0) {
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
			repooled += in_pool(w[i]);
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
	return print_test_summary();
}
