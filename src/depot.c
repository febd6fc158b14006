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
 * Who calls in: owners at depth 1 (put on trim, get on a miss), the refill
 * thread (get when serving a refill request; release when idle). Never a
 * nested context (it could, the operations are lock-less, but nested
 * allocations have their own reserves).
 *
 * Layout: a lock-less list (lockless.h) of batches. A batch is exactly the
 * class's `batch` objects; its first object is the list node and its second
 * word points to the other objects (every class has at least two words):
 *
 *   depot[c] -> [B1 | rest] -> [B2 | rest] -> NULL      (B.next: next batch)
 *                    `-> o -> o -> ... -> NULL          (rest: batch - 1 objects)
 *
 * Bounded: at most depot_limit(c) objects per class wait here (a put over
 * the limit returns false and the caller trims to jemalloc); batches not
 * taken for SIGMALLOC_IDLE_MS go back to jemalloc (refill thread).
 */
#include "internal.h"
#include "lockless.h"

struct batch {
	struct sm_node link;  /* next batch in the depot */
	struct sm_node *rest; /* the batch's other objects, NULL-terminated */
};
_Static_assert(sizeof(struct batch) <= 16, "a batch header fits the smallest class");

static struct {
	_Atomic(struct sm_node *) list;
	_Atomic int32_t count;       //! objects waiting (approximate)
	_Atomic uint64_t last_take;  //! refill-thread tick of the last get
} depot[SM_NUM_CLASSES];

static uint32_t class_batch(uint32_t cls)
{
	uint32_t low, high, batch, cap;
	_sm_class_watermarks(cls, &low, &high, &batch, &cap);
	return batch;
}

/* 256 KiB or 1024 objects per class, whichever is less, but 4 batches at
 * least: 16 B 1024 (16 KiB), 256 B 1024 (256 KiB), 4 KiB 64 (256 KiB). */
static int32_t depot_limit(uint32_t cls)
{
	uint32_t by_bytes = (256u << 10) / _sm_class_size[cls];
	uint32_t limit = by_bytes < 1024 ? by_bytes : 1024;
	uint32_t floor = 4 * class_batch(cls);
	return (int32_t)(limit > floor ? limit : floor);
}

bool _sm_depot_put(uint32_t cls, struct sm_node *first, uint32_t n)
{
	if (n != class_batch(cls) ||
	    atomic_load_explicit(&depot[cls].count, memory_order_relaxed) >= depot_limit(cls))
		return false;
	struct batch *b = (struct batch *)first;
	b->rest = first->next;
	atomic_fetch_add_explicit(&depot[cls].count, (int32_t)n, memory_order_relaxed);
	list_push(&depot[cls].list, &b->link);
	return true;
}

/* A batch taken off the depot list back into a plain chain of
 * class_batch(cls) objects, uncounted. */
static struct sm_node *unpack(uint32_t cls, struct sm_node *link)
{
	struct batch *b = (struct batch *)link;
	atomic_fetch_sub_explicit(&depot[cls].count, (int32_t)class_batch(cls), memory_order_relaxed);
	b->link.next = b->rest;
	return &b->link;
}

struct sm_node *_sm_depot_get(uint32_t cls, uint32_t *n)
{
	struct sm_node *link = list_take_one(&depot[cls].list, NULL); /* counts objects below */
	if (!link)
		return NULL;
	atomic_store_explicit(&depot[cls].last_take, atomic_load(&_sm_tick), memory_order_relaxed);
	*n = class_batch(cls);
	return unpack(cls, link);
}

int32_t _sm_depot_held(uint32_t cls)
{
	return atomic_load_explicit(&depot[cls].count, memory_order_relaxed);
}

/* Refill thread: classes whose depot nobody took from for idle_ticks give
 * their batches back to jemalloc. */
void _sm_depot_release_idle(uint64_t now, uint64_t idle_ticks, int tc)
{
	for (uint32_t cls = 0; cls < SM_NUM_CLASSES; cls++) {
		if (!atomic_load_explicit(&depot[cls].list, memory_order_relaxed) ||
		    now - atomic_load_explicit(&depot[cls].last_take, memory_order_relaxed) < idle_ticks)
			continue;
		struct sm_node *link = list_take_all(&depot[cls].list);
		while (link) {
			struct sm_node *next = link->next;
			_sm_backend_free_chain(unpack(cls, link), tc);
			link = next;
		}
	}
}
