/*
 * The depot: whole batches passed between threads without jemalloc (after
 * tcmalloc's transfer cache).
 *
 * A thread whose bucket overflows (a consumer freeing what another thread
 * allocated) puts its trimmed batch here; a thread whose bucket runs empty
 * (the producer) takes a batch here before it asks jemalloc. One push and
 * one exchange-based take per batch of `batch` objects, instead of `batch`
 * calls into jemalloc on each side.
 *
 * Who calls in: owners at depth 1 (put on trim, get on a miss, release of
 * everything in malloc_trim), the refill thread (get when serving a refill
 * request; release when idle). Never a
 * nested context (it could, the operations are lock-less, but nested
 * allocations have their own reserves).
 *
 * Layout: per class, a lock-less list (lockless.h) of full magazines
 * (magazine.c), each exactly the class's `batch` objects. A put copies the
 * pointers off the top of the trimming thread's bucket into a magazine; a
 * get hands the magazine itself over (to the owner, which copies it into
 * its bucket, or to the refill thread, which delivers it to an inbox). No
 * object is read or written on the way.
 *
 * Bounded: at most depot_limit(c) objects per class wait here (a put over
 * the limit returns false and the caller trims otherwise); batches not
 * taken for SIGMALLOC_IDLE_MS go back to jemalloc (refill thread), and all
 * of them at malloc_trim.
 */
#include "internal.h"
#include "lockless.h"

static struct {
	_Atomic(struct sm_node *) list; //! full magazines
	_Atomic int32_t count;          //! objects waiting (approximate)
	_Atomic uint64_t last_take;     //! refill-thread tick of the last get
} depot[SM_NUM_CLASSES];

/* 256 KiB or 1024 objects per class, whichever is less, but 4 batches at
 * least: 16 B 1024 (16 KiB), 256 B 1024 (256 KiB), 4 KiB 64 (256 KiB). */
static int32_t depot_limit(uint32_t cls)
{
	uint32_t by_bytes = (256u << 10) / _sm_class_size[cls];
	uint32_t limit = by_bytes < 1024 ? by_bytes : 1024;
	uint32_t floor = 4 * _sm_magazine_capacity(cls);
	return (int32_t)(limit > floor ? limit : floor);
}

bool _sm_depot_put(uint32_t cls, void *const *objs, uint32_t n)
{
	if (n != _sm_magazine_capacity(cls) ||
	    atomic_load_explicit(&depot[cls].count, memory_order_relaxed) >= depot_limit(cls))
		return false;
	struct sm_magazine *m = _sm_magazine_fill(cls, objs, n);
	if (!m)
		return false;
	atomic_fetch_add_explicit(&depot[cls].count, (int32_t)n, memory_order_relaxed);
	list_push(&depot[cls].list, &m->link);
	return true;
}

struct sm_magazine *_sm_depot_get(uint32_t cls)
{
	struct sm_node *link = list_take_one(&depot[cls].list, NULL); /* counts objects below */
	if (!link)
		return NULL;
	struct sm_magazine *m = (struct sm_magazine *)link;
	atomic_fetch_sub_explicit(&depot[cls].count, (int32_t)m->n, memory_order_relaxed);
	atomic_store_explicit(&depot[cls].last_take, atomic_load(&_sm_tick), memory_order_relaxed);
	return m;
}

int32_t _sm_depot_held(uint32_t cls)
{
	return atomic_load_explicit(&depot[cls].count, memory_order_relaxed);
}

/* Every batch of cls waiting here, and the class's spare magazines, back to
 * jemalloc. */
static void release_class(uint32_t cls, int tc)
{
	_sm_magazine_list_release(&depot[cls].list, &depot[cls].count, tc);
	_sm_magazine_release_spares(cls); /* one relaxed load when there are none */
}

/* Refill thread: classes whose depot nobody took from for idle_ticks give
 * their batches back to jemalloc, and their spare magazines with them. A
 * process without a refill thread (one thread, no handler that allocated)
 * keeps its depot, bounded by depot_limit, until malloc_trim. */
void _sm_depot_release_idle(uint64_t now, uint64_t idle_ticks, int tc)
{
	for (uint32_t cls = 0; cls < SM_NUM_CLASSES; cls++)
		if (now - atomic_load_explicit(&depot[cls].last_take, memory_order_relaxed) >=
		    idle_ticks)
			release_class(cls, tc);
}

/* malloc_trim (an owner at depth 1): everything. */
void _sm_depot_release_all(int tc)
{
	for (uint32_t cls = 0; cls < SM_NUM_CLASSES; cls++)
		release_class(cls, tc);
}
