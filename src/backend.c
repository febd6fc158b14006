/*
 * The backend: jemalloc, and the only file that calls it.
 *
 * Who calls in: the owner of a thread cache at depth 1, the refill thread,
 * and thread-exit and fork handlers, never a nested (signal) context: every
 * way into this file passes the depth counter (alloc.c), so a thread is
 * never inside jemalloc twice.
 *
 * Address layout (types.h): at init we reserve one range of address space,
 * aligned to 64 GiB, and give each class its own 64 GiB slot and jemalloc
 * arena (arenas.create with extent hooks). The hooks hand the arena extents
 * carved from its slot by an atomic bump pointer, so that every object of
 * class c lies in slot c, and free() finds the class with one subtraction
 * and one shift (no header, no lookup). Large objects (above 4 KiB) come
 * from SM_LARGE_ARENAS arenas that share the slots after the classes, so
 * that a pointer outside the whole reservation was never handed out by us:
 * free() of it is a bug of the caller, reported as such.
 *
 *   _sm_base
 *   | slot 0: 16 B | slot 1: 32 B | ... | slot 27: 4 KiB | 28-31 | 32..: large |
 *
 * The hooks keep jemalloc in charge of everything else: extents are never
 * unmapped (dalloc opts out, so jemalloc retains and reuses them), purging
 * is madvise(MADV_FREE / MADV_DONTNEED), and split and merge are allowed.
 * Hooks run under jemalloc's locks on whatever thread called jemalloc; they
 * only make system calls.
 *
 * Hubs: an arena costs about 90 KiB of jemalloc bookkeeping
 * (stats.arenas.<i>.base, docs/MEMORY.md), more than many programs put in
 * most classes (xz -T2 touches all 28 classes, most for a handful of
 * objects). So only the hubs (16, 64, 256, 1024 and 4096 B; sizeclass.c)
 * get an arena on first use; any other class draws its objects from its hub
 * (at most 3.2 times its size) until the bytes it wasted that way (objects
 * times the difference of the sizes) pass _sm_options.arena_after (64 KiB,
 * less than the arena it saves), and only then gets an arena of its own. A
 * hub object serves a request of the smaller class in every respect: free
 * finds its class from its address, malloc_usable_size reports the hub's
 * size, and a power-of-two hub object is aligned to its size, so to any
 * alignment the smaller class guarantees. What changes is that a bucket may
 * hold objects of a larger class than its own, so whatever needs an
 * object's size takes it from the object's address (free_chain, the ASan
 * poisoning), never from the bucket.
 *
 * Through the thread's jemalloc tcache: a tcache bin holds one size class,
 * and every jemalloc allocation of a size <= 4 KiB that sigmalloc makes names
 * the class arena, so each bin only ever holds objects of its one arena.
 * _sm_backend_alloc_batch checks that on every object (one compare) and
 * stops the program if jemalloc ever breaks it (a program calling
 * jemalloc's own mallocx() directly could; docs/SIGNAL-SAFETY.md).
 */
#include <jemalloc/jemalloc.h>
#include <pthread.h>
#include <string.h>
#include <sys/mman.h>

#include "internal.h"

uintptr_t _sm_base = SM_BASE_UNSET;
uint32_t _sm_large_slots;

/* jemalloc's configuration, which it reads from this symbol (its own
 * `malloc_conf` is weak, so this definition interposes it; a program's own
 * definition interposes this one, and MALLOC_CONF in the environment is
 * applied after it). One automatic arena: jemalloc gives every live thread
 * an automatic arena of its own (up to 4 per CPU), about 89 KiB of
 * bookkeeping each, while sigmalloc names its arenas on every call and
 * never allocates from an automatic one (5 short-lived threads: 6.1 against
 * 6.4 MiB resident; docs/MEMORY.md). */
__attribute__((visibility("default"))) const char *malloc_conf = "narenas:1";

/* One bump range and the hooks that carve extents from it. `hooks` comes
 * first: jemalloc hands the hooks pointer back to every hook. */
struct range {
	extent_hooks_t hooks;
	_Atomic uintptr_t next;  //! bump pointer; CAS by any thread in a hook
	uintptr_t end;           //! written once at init
};

static struct range class_range[SM_NUM_CLASSES];
static struct range large_range;
/* Arenas are created on first use of their class (0: not yet; jemalloc's
 * arena 0 is never one of ours). Each arena makes every fork() slower
 * (jemalloc's prefork and postfork handlers lock and unlock every mutex of
 * every arena, which after fork are copy-on-write faults: about 1.6 ms per
 * arena on this kind of VM, docs/MEMORY.md), so a program that uses few
 * classes pays for few. Created under arena_lock, read without it. */
static _Atomic unsigned class_arena[SM_NUM_CLASSES];
static _Atomic unsigned large_arena[SM_LARGE_ARENAS];
static pthread_mutex_t arena_lock = PTHREAD_MUTEX_INITIALIZER;

static bool large_sizes_open(uintptr_t start, uintptr_t end);

static void *range_alloc(extent_hooks_t *h, void *new_addr, size_t size, size_t alignment,
                         bool *zero, bool *commit, unsigned arena_ind)
{
	(void)arena_ind;
	struct range *r = (struct range *)h;
	uintptr_t cur = atomic_load_explicit(&r->next, memory_order_relaxed);
	uintptr_t start, end;
	if (alignment == 0)
		alignment = 1;
	do {
		if (new_addr) {
			/* Only growth in place at the bump point can be had. */
			if ((uintptr_t)new_addr != cur)
				return NULL;
			start = cur;
		} else {
			start = (cur + alignment - 1) & ~(uintptr_t)(alignment - 1);
		}
		end = start + size;
		if (end < start || end > r->end)
			return NULL;
	} while (!atomic_compare_exchange_weak_explicit(&r->next, &cur, end, memory_order_relaxed,
	                                                memory_order_relaxed));
	/* The reservation is PROT_NONE: make this extent usable. It stays so for
	 * good (decommit opts out), so commit charge is taken once here; the
	 * same for the words of the large blocks' map that cover it (writable
	 * now; every word was readable already, so that a failure here, or an
	 * alignment gap below start, leaves words that read 0: no block). */
	if ((r == &large_range && !large_sizes_open(start, end)) ||
	    mprotect((void *)start, size, PROT_READ | PROT_WRITE) != 0)
		return NULL; /* the address space stays burnt; jemalloc reports OOM */
	*zero = true;
	*commit = true;
	return (void *)start;
}

static bool range_dalloc(extent_hooks_t *h, void *addr, size_t size, bool committed,
                         unsigned arena_ind)
{
	(void)h, (void)addr, (void)size, (void)committed, (void)arena_ind;
	return true; /* opt out: jemalloc retains the extent for reuse */
}

static void range_destroy(extent_hooks_t *h, void *addr, size_t size, bool committed,
                          unsigned arena_ind)
{
	(void)h, (void)committed, (void)arena_ind;
	madvise(addr, size, MADV_DONTNEED);
}

static bool range_commit(extent_hooks_t *h, void *addr, size_t size, size_t offset,
                         size_t length, unsigned arena_ind)
{
	(void)h, (void)addr, (void)size, (void)offset, (void)length, (void)arena_ind;
	return false; /* always committed */
}

static bool range_decommit(extent_hooks_t *h, void *addr, size_t size, size_t offset,
                           size_t length, unsigned arena_ind)
{
	(void)h, (void)addr, (void)size, (void)offset, (void)length, (void)arena_ind;
	return true; /* opt out: jemalloc purges instead */
}

static bool range_purge_lazy(extent_hooks_t *h, void *addr, size_t size, size_t offset,
                             size_t length, unsigned arena_ind)
{
	(void)h, (void)size, (void)arena_ind;
	return madvise((char *)addr + offset, length, MADV_FREE) != 0;
}

static bool range_purge_forced(extent_hooks_t *h, void *addr, size_t size, size_t offset,
                               size_t length, unsigned arena_ind)
{
	(void)h, (void)size, (void)arena_ind;
	/* Private anonymous memory reads back as zeros: jemalloc relies on it. */
	return madvise((char *)addr + offset, length, MADV_DONTNEED) != 0;
}

static bool range_split(extent_hooks_t *h, void *addr, size_t size, size_t size_a,
                        size_t size_b, bool committed, unsigned arena_ind)
{
	(void)h, (void)addr, (void)size, (void)size_a, (void)size_b, (void)committed,
		(void)arena_ind;
	return false;
}

static bool range_merge(extent_hooks_t *h, void *addr_a, size_t size_a, void *addr_b,
                        size_t size_b, bool committed, unsigned arena_ind)
{
	(void)h, (void)addr_a, (void)size_a, (void)addr_b, (void)size_b, (void)committed,
		(void)arena_ind;
	return false;
}

static const extent_hooks_t range_hooks = {
	.alloc = range_alloc,
	.dalloc = range_dalloc,
	.destroy = range_destroy,
	.commit = range_commit,
	.decommit = range_decommit,
	.purge_lazy = range_purge_lazy,
	.purge_forced = range_purge_forced,
	.split = range_split,
	.merge = range_merge,
};

static void range_init(struct range *r, uintptr_t start, uintptr_t end)
{
	r->hooks = range_hooks;
	atomic_store_explicit(&r->next, start, memory_order_relaxed);
	r->end = end;
}

/* The arena in *slot, created over range r if it does not exist yet. */
static sm_noinline unsigned arena_create(_Atomic unsigned *slot, struct range *r)
{
	pthread_mutex_lock(&arena_lock);
	unsigned ind = atomic_load_explicit(slot, memory_order_relaxed);
	if (!ind) {
		extent_hooks_t *hooks = &r->hooks;
		size_t len = sizeof ind;
		if (mallctl("arenas.create", &ind, &len, &hooks, sizeof hooks) != 0) {
			_sm_message("sigmalloc: jemalloc arenas.create failed\n");
			ind = 0;
		} else {
			/* One arena per class cannot hand a freed slab's pages to
			 * another class, as a single arena would at once; purging
			 * them sooner than jemalloc's 10 s gives that back (python
			 * workload peak RSS: 150 MB at 10 s, 123 MB at 1 s, jemalloc
			 * alone 121 MB; docs/MEMORY.md). */
			char name[64];
			ssize_t ms = (ssize_t)_sm_options.decay_ms;
			_sm_format(name, sizeof name, "arena.%u.dirty_decay_ms", ind);
			mallctl(name, NULL, NULL, &ms, sizeof ms);
		}
		atomic_store_explicit(slot, ind, memory_order_release);
	}
	pthread_mutex_unlock(&arena_lock);
	return ind;
}

/* Bytes each non-hub class has wasted by drawing from its hub (any
 * thread): objects drawn times the difference of the sizes. */
static _Atomic uint64_t class_waste[SM_NUM_CLASSES];

/* The class whose arena serves n objects of class cls now: cls itself once
 * it has an arena (or is a hub, or has wasted enough), else its hub. */
static uint32_t source_class(uint32_t cls, uint32_t n)
{
	uint32_t hub = _sm_class_hub[cls];
	if (hub == cls || atomic_load_explicit(&class_arena[cls], memory_order_relaxed))
		return cls;
	uint64_t waste = (uint64_t)n * (_sm_class_size[hub] - _sm_class_size[cls]);
	uint64_t was = atomic_fetch_add_explicit(&class_waste[cls], waste, memory_order_relaxed);
	return was + waste > _sm_options.arena_after ? cls : hub;
}

static inline unsigned class_arena_get(uint32_t cls)
{
	unsigned ind = atomic_load_explicit(&class_arena[cls], memory_order_acquire);
	if (sm_likely(ind))
		return ind;
	ind = arena_create(&class_arena[cls], &class_range[cls]);
	if (ind) /* a new class: its handlers get a process-wide reserve */
		_sm_global_reserve_want(cls);
	return ind;
}

static inline unsigned large_arena_get(uint32_t which)
{
	unsigned ind = atomic_load_explicit(&large_arena[which], memory_order_acquire);
	return sm_likely(ind) ? ind : arena_create(&large_arena[which], &large_range);
}

void _sm_backend_fork_prepare(void)
{
	pthread_mutex_lock(&arena_lock);
}

void _sm_backend_fork_parent(void)
{
	pthread_mutex_unlock(&arena_lock);
}

void _sm_backend_fork_child(void)
{
	pthread_mutex_init(&arena_lock, NULL);
}

/* jemalloc's "experimental.batch_alloc" (5.3): n objects of one size in one
 * call, copied out of the tcache bin instead of one mallocx() each.
 * Looked up once at init; where the jemalloc at hand lacks it,
 * batch_mib_len stays 0 and refill falls back to one mallocx() per object.
 * Measured with docs/measure/wave.c (docs/PERFORMANCE.md, "Refill cost").
 *
 * A request for a whole slab's worth of objects or more makes batch_alloc
 * carve them from fresh slabs (arena_fill_small_fresh), never from the
 * free regions of slabs already in use: freed memory would not be reused,
 * and a program that frees half of its blocks at random and allocates
 * them again grew from 108 to 274 MB (256 B blocks). So each call asks for
 * at most nregs - 1 objects (the class's objects per slab, from
 * arenas.bin.<i>.nregs), and a class whose slab holds one object (4 KiB)
 * does not use it at all. */
#define SM_BATCH_CHUNK 64u

struct batch_packet {
	void **ptrs;
	size_t num;
	size_t size;
	int flags;
};
static size_t batch_mib[2];
static size_t batch_mib_len;
static uint32_t batch_max[SM_NUM_CLASSES]; //! objects per batch_alloc call; 0: mallocx

static void batch_alloc_lookup(void)
{
	size_t len = sizeof batch_mib / sizeof batch_mib[0];
	if (mallctlnametomib("experimental.batch_alloc", batch_mib, &len) != 0)
		return;
	unsigned nbins = 0;
	size_t sz = sizeof nbins;
	if (mallctl("arenas.nbins", &nbins, &sz, NULL, 0) != 0)
		return;
	for (unsigned i = 0; i < nbins; i++) {
		char name[64];
		size_t size = 0;
		uint32_t nregs = 0;
		sz = sizeof size;
		_sm_format(name, sizeof name, "arenas.bin.%u.size", i);
		if (mallctl(name, &size, &sz, NULL, 0) != 0)
			continue;
		sz = sizeof nregs;
		_sm_format(name, sizeof name, "arenas.bin.%u.nregs", i);
		if (mallctl(name, &nregs, &sz, NULL, 0) != 0)
			continue;
		for (uint32_t cls = 0; cls < SM_NUM_CLASSES; cls++)
			if (_sm_class_size[cls] == size && nregs > 1)
				batch_max[cls] = nregs - 1 < SM_BATCH_CHUNK ? nregs - 1 : SM_BATCH_CHUNK;
	}
	batch_mib_len = len;
}

/* Up to n objects of class cls into ptrs (n <= SM_BATCH_CHUNK); returns
 * how many. */
static size_t alloc_some(uint32_t cls, int flags, void **ptrs, size_t n)
{
	const size_t size = _sm_class_size[cls];
	if (sm_likely(batch_mib_len && batch_max[cls])) {
		struct batch_packet packet = { ptrs, n < batch_max[cls] ? n : batch_max[cls], size,
		                               flags };
		size_t filled = 0, len = sizeof filled;
		if (mallctlbymib(batch_mib, batch_mib_len, &filled, &len, &packet,
		                 sizeof packet) == 0 && filled)
			return filled;
	}
	/* No batch call for this class, or it declined (jemalloc declines when
	 * it is "reentrant", which is also when it ignores our arena:
	 * misplaced). */
	ptrs[0] = mallocx(size, flags);
	return ptrs[0] != NULL;
}

/* Reserves the whole layout, as large as the system allows: the large part
 * halves until mmap accepts it (ulimit -v, or a small address space). */
static uintptr_t reserve_layout(uint32_t *large_slots)
{
	for (uint32_t large = SM_LARGE_SLOTS_MAX; large >= SM_LARGE_SLOTS_MIN; large /= 2) {
		size_t len = (size_t)(SM_LARGE_FIRST_SLOT + large) * SM_SLOT_SIZE;
		size_t padded = len + SM_SLOT_SIZE;
		void *m = mmap(NULL, padded, PROT_NONE,
		               MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
		if (m == MAP_FAILED)
			continue;
		uintptr_t lo = (uintptr_t)m;
		uintptr_t base = (lo + SM_SLOT_SIZE - 1) & ~(SM_SLOT_SIZE - 1);
		if (base > lo)
			munmap(m, base - lo);
		if (lo + padded > base + len)
			munmap((void *)(base + len), lo + padded - (base + len));
		*large_slots = large;
		return base;
	}
	return 0;
}

/* The usable size of every live large block, by the 4 KiB page its address
 * starts in (no two large blocks start in one page: every jemalloc class
 * above 4 KiB is more than 4 KiB apart), so that realloc and
 * malloc_usable_size need not ask jemalloc (sallocx: about a third of the
 * samples of realloc/+64, docs/PERFORMANCE.md) and malloc_usable_size can
 * answer from a signal handler. One word per page of the large range,
 * reserved MAP_NORESERVE: its pages are touched only where large blocks
 * start, 4 KiB of map per 2 MiB of the range in use. It also tells free,
 * realloc and malloc_usable_size whether a pointer starts a live large
 * block (a second free, or a pointer inside one, aborts: alloc.c).
 *
 * The map is reserved read-only, its words all 0, and they become writable
 * with the extents they cover (range_alloc), so that commit charge
 * (vm.overcommit_memory=2) follows the large range in use: a private
 * mapping takes commit charge only while it is writable, and a read of a
 * page never written maps the shared zero page. So every word below the
 * bump can be read, also where range_alloc's mprotect failed (ENOMEM: a
 * commit limit, RLIMIT_DATA, the map count), and a free of a pointer there
 * reads 0 and aborts with the message instead of faulting.
 *
 * A word is the block's usable size (a multiple of 1 KiB: every jemalloc
 * class above 4 KiB is) with, in its low bits, the block's offset in its
 * page in 16-byte units (SM_LARGE_WORD_OFFSET), so that a pointer can be
 * checked to be the start of a live block (_sm_backend_large_live). It is
 * written by whoever allocates the block (alloc and realloc, before the
 * pointer is returned), read by whoever holds the block, and cleared by
 * whoever frees it, before jemalloc may hand its memory out again (a clear
 * after that could erase the word of the next block there). 0: no live
 * block starts in that page. No map at all (its mmap failed): every reader
 * asks jemalloc and nothing is checked. */
size_t *_sm_large_sizes;
uintptr_t _sm_large_sizes_base;

static void large_sizes_init(uintptr_t large_start, uintptr_t large_end)
{
	size_t bytes = (large_end - large_start) / 4096 * sizeof(size_t);
	void *m = mmap(NULL, bytes, PROT_READ, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
	if (m == MAP_FAILED)
		return; /* every lookup asks jemalloc */
	_sm_large_sizes_base = large_start;
	_sm_large_sizes = m;
}

/* Makes the map's words for the large range [start, end) writable (whole
 * pages of the map, which may already be). */
static bool large_sizes_open(uintptr_t start, uintptr_t end)
{
	if (!_sm_large_sizes)
		return true;
	uintptr_t lo = (uintptr_t)large_size_word((void *)start) & ~(uintptr_t)(SM_PAGE - 1);
	uintptr_t hi = ((uintptr_t)large_size_word((void *)(end - 1)) + sizeof(size_t) + SM_PAGE - 1) &
	               ~(uintptr_t)(SM_PAGE - 1);
	return mprotect((void *)lo, hi - lo, PROT_READ | PROT_WRITE) == 0;
}

static void large_size_set(void *p, size_t size, size_t align)
{
	if (_sm_large_sizes)
		__atomic_store_n(large_size_word(p),
		                 (align <= 16 && size > SM_MAX_SMALL ? large_usable_of(size)
		                                                      : sallocx(p, 0)) |
		                         (((uintptr_t)p & (SM_PAGE - 1)) >> 4),
		                 __ATOMIC_RELAXED);
}

/* Relaxed atomics: a valid program never races on a word (the block's
 * holder alone reads or writes it), but a buggy one's stale check may meet
 * another thread's set; same instructions as plain ones on x86-64. */
static void large_size_clear(void *p)
{
	if (_sm_large_sizes)
		__atomic_store_n(large_size_word(p), 0, __ATOMIC_RELAXED);
}

/* Whether p is the start of a live large block by the map: false for a
 * page where no live block starts (freed, never one, or past what the large
 * range has carved: the map is readable over the whole range and nothing
 * writes a word there), or an offset that is not the block's (inside one).
 * p must be in the large range (slot_is_large: every caller checks it), which
 * the map covers. A plain load: safe in a signal handler. True when there is
 * no map (nothing to check against). *usable: the block's usable size from
 * the same load (0 without a map: ask jemalloc), so that no caller reads the
 * word twice. */
bool _sm_backend_large_live(const void *p, size_t *usable)
{
	*usable = 0;
	if (!_sm_large_sizes)
		return true;
	size_t w = __atomic_load_n(large_size_word(p), __ATOMIC_RELAXED);
	*usable = w & ~SM_LARGE_WORD_OFFSET;
	return w != 0 && (w & SM_LARGE_WORD_OFFSET) << 4 == ((uintptr_t)p & (SM_PAGE - 1));
}

/* The large range's bump point: every address below it was carved, the
 * addresses of an extent whose mprotect failed included (tests). */
uintptr_t _sm_backend_large_carved(void)
{
	return atomic_load_explicit(&large_range.next, memory_order_relaxed);
}

/* A nested free of a large block, which is deferred (alloc.c): the block
 * stops being live now, so that a second free of it aborts too. */
void _sm_backend_large_forget(void *p)
{
	large_size_clear(p);
}

bool _sm_backend_init(void)
{
	uint32_t large_slots;
	uintptr_t base = reserve_layout(&large_slots);
	if (!base) {
		_sm_message("sigmalloc: cannot reserve address space; every allocation fails\n");
		return false;
	}
	/* Each class slot starts with its pool's span (pool.c); jemalloc's
	 * extents come after it, shifted by the class's page colour
	 * (internal.h). */
	const uintptr_t pool = _sm_pool_init(base);
	for (uint32_t cls = 0; cls < SM_NUM_CLASSES; cls++) {
		uintptr_t start = base + (uintptr_t)cls * SM_SLOT_SIZE;
		range_init(&class_range[cls], start + pool + _sm_slot_colour(cls),
		           start + SM_SLOT_SIZE);
	}
	uintptr_t large_start = base + (uintptr_t)SM_LARGE_FIRST_SLOT * SM_SLOT_SIZE;
	uintptr_t large_end = large_start + (uintptr_t)large_slots * SM_SLOT_SIZE;
	/* All large arenas share one range: the same hooks, one bump pointer. */
	range_init(&large_range, large_start, large_end);
	large_sizes_init(large_start, large_end);
	/* jemalloc answers at all? (this also initialises it) */
	if (!large_arena_get(0))
		return false;
	batch_alloc_lookup();
	_sm_large_slots = large_slots;
	/* Published last: from here on, free() classifies by address. */
	__atomic_store_n(&_sm_base, base, __ATOMIC_RELEASE);
	return true;
}

uint32_t _sm_backend_large_arena(uint32_t seq)
{
	return seq % SM_LARGE_ARENAS;
}

/* Explicit tcaches (tcache.create), one per thread cache and one for the
 * refill thread, rather than the thread's implicit one: a tcache bin is per
 * size class, not per arena, so the implicit one would mix our class
 * arenas' objects with the default arenas' whenever anything else in the
 * process calls jemalloc's malloc (the test programs do, through libc;
 * so would a program calling mallocx itself). An explicit tcache only ever
 * sees sigmalloc's calls, each naming its class arena, so each bin stays
 * pure. Costs one jemalloc tcache per thread cache (reused with it). */
int _sm_backend_tcache_create(void)
{
	unsigned id;
	size_t len = sizeof id;
	if (mallctl("tcache.create", &id, &len, NULL, 0) != 0)
		return SM_TCACHE_NONE; /* jemalloc's limit: 4094 at once */
	return (int)id;
}

/* Returns what an explicit tcache holds to its arenas. The caller is the
 * tcache's only user at that moment (its owner, or the refill thread for a
 * dead owner). SM_TCACHE_THREAD: the calling thread's automatic tcache. */
void _sm_backend_tcache_flush(int tc)
{
	if (tc == SM_TCACHE_THREAD)
		mallctl("thread.tcache.flush", NULL, NULL, NULL, 0);
	if (tc < 0)
		return;
	unsigned id = (unsigned)tc;
	mallctl("tcache.flush", NULL, NULL, &id, sizeof id);
}

static inline int tcache_flag(int tc)
{
	return tc < 0 ? MALLOCX_TCACHE_NONE : MALLOCX_TCACHE((unsigned)tc);
}

/* The flags of a free. SM_TCACHE_THREAD is flags 0: jemalloc's fast path
 * (sdallocx with any flag set takes its slow path, a call through its
 * thread state and tcache lookup), into the thread's automatic tcache. That
 * is safe for the bins' purity (above) because sigmalloc never allocates
 * from the automatic tcache: a free goes to the arena that owns the object,
 * by address, whichever tcache it passes through. The cost is that the
 * blocks are not reused by this thread's next refill, which draws from its
 * explicit tcache; so only the owner's trims, a thread freeing more than it
 * keeps, name it (refill.c, _sm_bucket_trim_to), not the refill thread,
 * which frees and allocates for others in turn. What it saves: docs/
 * PERFORMANCE.md, "Refill cost". */
static inline int free_flags(int tc)
{
	return tc == SM_TCACHE_THREAD ? 0 : tcache_flag(tc);
}

/*
 * jemalloc ignored the arena we named. It does that in one case: its own
 * per-thread state was torn down (its pthread key destructor ran, on a
 * thread that is exiting) and it serves every later call of the thread
 * "reentrantly" from arena 0, whatever the flags say (imalloc_body). The
 * object goes straight back (a free finds its arena by address), and the
 * thread is marked so that it stops asking: its allocations come from the
 * process-wide reserve instead (refill.c, alloc_proxied).
 */
static sm_noinline sm_cold void misplaced(void *p)
{
	dallocx(p, MALLOCX_TCACHE_NONE);
	_sm_thread.no_jemalloc = 1;
}

/* Up to n objects for class cls into out[0 .. n-1], in the order jemalloc
 * hands them out (a fresh slab's are ascending): objects of cls, or of its
 * hub while cls has no arena of its own (source_class). Nothing is written
 * into the objects: a bucket is an array of pointers (types.h), so a refill
 * straight into it touches no object, as jemalloc's own tcache does not.
 * Every object is checked to lie in the slot it was asked from (see
 * misplaced). Returns how many. */
uint32_t _sm_backend_alloc_array(uint32_t want_cls, uint32_t n, void **out, int tc)
{
	/* The class's pool first (pool.c): no arena until it is used up. */
	const uint32_t pooled = _sm_pool_alloc(want_cls, n, out);
	if (sm_likely(pooled == n))
		return n;
	out += pooled;
	n -= pooled;
	const uint32_t cls = source_class(want_cls, n);
	unsigned arena = class_arena_get(cls);
	const int flags = MALLOCX_ARENA(arena) | tcache_flag(tc);
	uint32_t got = 0;
	if (sm_unlikely(!arena || _sm_thread.no_jemalloc))
		n = 0;
	while (got < n) {
		size_t want = n - got < SM_BATCH_CHUNK ? n - got : SM_BATCH_CHUNK;
		void **ptrs = out + got;
		size_t filled = alloc_some(cls, flags, ptrs, want);
		if (sm_unlikely(!filled))
			break;
		size_t i = 0;
		while (i < filled && sm_likely(slot_of(ptrs[i]) == cls))
			i++;
		got += (uint32_t)i;
		if (sm_unlikely(i < filled)) {
			misplaced(ptrs[i]);
			while (++i < filled)
				dallocx(ptrs[i], MALLOCX_TCACHE_NONE);
			break;
		}
	}
	return pooled + got;
}

/* n objects as a chain first .. last (for the lists that are chains: the
 * nested stock and the reserves): _sm_backend_alloc_array, then each
 * object's link written. */
uint32_t _sm_backend_alloc_batch(uint32_t cls, uint32_t n, struct sm_node **first,
                                 struct sm_node **last, int tc)
{
	struct sm_node *head = NULL, *tail = NULL;
	uint32_t got = 0;
	void *ptrs[SM_BATCH_CHUNK];
	while (got < n) {
		uint32_t want = n - got < SM_BATCH_CHUNK ? n - got : SM_BATCH_CHUNK;
		uint32_t filled = _sm_backend_alloc_array(cls, want, ptrs, tc);
		for (uint32_t i = 0; i < filled; i++)
			chain_append(&head, &tail, ptrs[i]);
		got += filled;
		if (filled < want)
			break;
	}
	*first = head;
	*last = tail;
	return got;
}

/* Frees a NULL-terminated chain of class objects; returns its length (one
 * walk: callers need not count it first). Each object's size
 * comes from its address, since a bucket may hold its hub's objects
 * (source_class). Objects may be poisoned (ASan builds): each is unpoisoned
 * before its link is read. */
uint32_t _sm_backend_free_chain(struct sm_node *node, int tc)
{
	const int flags = free_flags(tc);
	uint32_t n = 0;
	while (node) {
		sm_unpoison(node);
		struct sm_node *next = node->next;
		if (sm_unlikely(_sm_pool_holds(node)))
			_sm_pool_free((uint32_t)slot_of(node), (void *const *)&node, 1);
		else
			sdallocx(node, _sm_class_size[slot_of(node)], flags);
		node = next;
		n++;
	}
	return n;
}

/* Frees n class objects given by pointer (a bucket's slots). Each may be
 * poisoned (ASan builds) and is unpoisoned first, as _sm_backend_free_chain
 * does. */
void _sm_backend_free_array(void *const *objs, uint32_t n, int tc)
{
	const int flags = free_flags(tc);
	for (uint32_t i = 0; i < n; i++) {
		if (sm_unlikely(_sm_pool_holds(objs[i]))) {
			/* The run of pool objects of one class from here: one lock. */
			uint32_t cls = (uint32_t)slot_of(objs[i]), j = i + 1;
			while (j < n && _sm_pool_holds(objs[j]) && slot_of(objs[j]) == cls)
				j++;
			_sm_pool_free(cls, objs + i, j - i);
			i = j - 1;
			continue;
		}
		sm_unpoison(objs[i]);
		sdallocx(objs[i], _sm_class_size[slot_of(objs[i])], flags);
	}
}

void *_sm_backend_alloc_large(size_t size, size_t align, bool zero, uint32_t arena, int tc)
{
	/* jemalloc's limit is PTRDIFF_MAX; say so before its arithmetic does. */
	if (size > PTRDIFF_MAX || align > ((size_t)1 << 40))
		return NULL;
	unsigned ind = large_arena_get(arena);
	if (!ind || _sm_thread.no_jemalloc)
		return NULL;
	int flags = MALLOCX_ARENA(ind) | tcache_flag(tc);
	if (align > 16)
		flags |= MALLOCX_ALIGN(align);
	if (zero)
		flags |= MALLOCX_ZERO;
	void *p = mallocx(size, flags);
	if (p && sm_unlikely(!slot_is_large(slot_of(p)))) {
		misplaced(p);
		p = NULL;
	}
	if (p)
		large_size_set(p, size, align);
	return p;
}

void _sm_backend_free_large(void *p, int tc)
{
	large_size_clear(p); /* before jemalloc may reuse the page */
	dallocx(p, tcache_flag(tc));
}

/* sigmalloc's own small records (magazines: magazine.c), from jemalloc's
 * automatic arena 0. Not a class object: drawn as one, a 400 B magazine
 * counted as a 448 B class's use of its hub (source_class) until that
 * class got an arena of its own, about 90 KiB of jemalloc's bookkeeping
 * that a program which never allocates 448 B had no need of. No tcache:
 * an explicit tcache's bin of that size also caches the class arena's
 * objects, and a record must not come out of it as one, nor a class
 * object as a record. */
void *_sm_backend_alloc_record(size_t size)
{
	if (_sm_thread.no_jemalloc)
		return NULL;
	return mallocx(size, MALLOCX_ARENA(0) | MALLOCX_TCACHE_NONE);
}

void _sm_backend_free_record(void *p)
{
	dallocx(p, MALLOCX_TCACHE_NONE);
}

/* The usable size of the live large block p by the map; 0 without one. */
static size_t large_size_mapped(const void *p)
{
	return _sm_large_sizes
	               ? __atomic_load_n(large_size_word(p), __ATOMIC_RELAXED) & ~SM_LARGE_WORD_OFFSET
	               : 0;
}

size_t _sm_backend_usable_large(void *p)
{
	size_t n = large_size_mapped(p);
	return n ? n : sallocx(p, 0);
}

/* Whether a block of `size` bytes would have the large block p's usable
 * size (one jemalloc size class: large_class_holds, internal.h). The
 * usable size comes from the map above, where sallocx took a third of the
 * samples of realloc/+64. */
bool _sm_backend_same_large_class(void *p, size_t size)
{
	return large_class_holds(_sm_backend_usable_large(p), size);
}

void *_sm_backend_realloc_large(void *p, size_t size, uint32_t arena, int tc)
{
	if (size > PTRDIFF_MAX)
		return NULL;

	unsigned ind = large_arena_get(arena);
	if (!ind)
		return NULL;
	if (_sm_thread.no_jemalloc)
		return NULL; /* rallocx would move it to arena 0 */
	/* rallocx may free p's memory and hand it out again at once: p's word
	 * goes first, and comes back if p stays where it was, unchanged. */
	size_t word = _sm_large_sizes ? __atomic_load_n(large_size_word(p), __ATOMIC_RELAXED) : 0;
	large_size_clear(p);
	void *q = rallocx(p, size, MALLOCX_ARENA(ind) | tcache_flag(tc));
	if (q && sm_unlikely(!slot_is_large(slot_of(q))))
		_sm_fatal("sigmalloc: jemalloc moved %p outside the large range\n", q);
	if (q)
		large_size_set(q, size, 0);
	else if (_sm_large_sizes)
		__atomic_store_n(large_size_word(p), word, __ATOMIC_RELAXED);
	return q;
}

void _sm_backend_purge(int tc)
{
	_sm_backend_tcache_flush(tc);
	_sm_backend_tcache_flush(SM_TCACHE_THREAD); /* the owner's trims (free_flags) */
	_sm_pool_trim();
	char name[64];
	_sm_format(name, sizeof name, "arena.%u.purge", (unsigned)MALLCTL_ARENAS_ALL);
	mallctl(name, NULL, NULL, NULL, 0);
}

bool _sm_backend_read_u64(const char *name, uint64_t *out)
{
	uint64_t epoch = 1;
	size_t len = sizeof epoch;
	mallctl("epoch", &epoch, &len, &epoch, len);
	size_t v = 0;
	len = sizeof v;
	if (mallctl(name, &v, &len, NULL, 0) != 0)
		return false;
	*out = v;
	return true;
}
