/*
 * Size classes: jemalloc 5.3's small classes from 16 B to 4 KiB (with 4 KiB
 * pages), so that every object of ours is exactly one jemalloc object and a
 * class arena's slabs hold nothing else.
 *
 * Who calls in: anyone, at any depth. Everything here is a constant table.
 *
 * Lookup: class = class_of_units[(size + 15) >> 4], one load from the
 * thread's TLS copy of the table (internal.h, SM_CLASS_OF_UNITS). Alignment: jemalloc places the objects of a class at multiples of
 * the class size from a page-aligned slab start, so a class whose size is a
 * multiple of A returns A-aligned objects for any A <= 4096.
 */
#include "internal.h"

const uint32_t _sm_class_size[SM_NUM_CLASSES] = {
	16,   32,   48,   64,   80,   96,   112,  128,  160,  192,  224,  256,  320,  384,
	448,  512,  640,  768,  896,  1024, 1280, 1536, 1792, 2048, 2560, 3072, 3584, 4096,
};

/*
 * Hubs: 16, 64, 256, 1024 and 4096 B (the powers of four). The hub of a
 * class is the smallest hub at least as large: at most 3.2 times its size
 * (80 -> 256, 320 -> 1024, 1280 -> 4096). A hub object can serve a request
 * of any smaller class: free finds its class from its address, and a hub
 * object is aligned to its power-of-two size, hence to any alignment the
 * smaller class guarantees. Classes draw from their hub's arena until they
 * earn one of their own (backend.c), and the process-wide nested reserve is
 * kept by hub (refill.c).
 */
const uint8_t _sm_class_hub[SM_NUM_CLASSES] = {
	0,                              /* 16 */
	3, 3, 3,                        /* 32 .. 64 */
	11, 11, 11, 11, 11, 11, 11, 11, /* 80 .. 256 */
	19, 19, 19, 19, 19, 19, 19, 19, /* 320 .. 1024 */
	27, 27, 27, 27, 27, 27, 27, 27, /* 1280 .. 4096 */
};

uint32_t _sm_class_aligned(size_t size, size_t align)
{
	if (size > SM_MAX_SMALL || align > SM_MAX_SMALL)
		return SM_NUM_CLASSES;
	for (uint32_t cls = class_of_size(size); cls < SM_NUM_CLASSES; cls++)
		if (_sm_class_size[cls] % align == 0)
			return cls;
	return SM_NUM_CLASSES;
}

/*
 * The kernel's watermarks (memalloc.c, prefill_mem_cache): 32 / 96 / 48 up
 * to 256 B; above, scaled by 256 / size, so that a bucket holds about the
 * same bytes (4 KiB: low 2, high 6, batch 3). `cap` is where slow start
 * stops growing high_mark: cap_bytes / size objects, at least high and at
 * most 2048 (16 B: 2048 objects = 32 KiB; 4 KiB: 32 objects = 128 KiB with
 * the default cap_bytes of 128 KiB; docs/MEMORY.md has the per-thread sum).
 */
void _sm_class_watermarks(uint32_t cls, uint32_t *low, uint32_t *high, uint32_t *batch,
                          uint32_t *cap)
{
	uint32_t size = _sm_class_size[cls];
	uint32_t lo = 32, hi = 96;
	if (size > 256) {
		lo = 32 * 256 / size;
		hi = 96 * 256 / size;
		if (lo < 1)
			lo = 1;
		if (hi < 3)
			hi = 3;
	}
	uint32_t b = (hi - lo) / 4 * 3;
	*low = lo;
	*high = hi;
	*batch = b ? b : 1;
	uint32_t c = _sm_options.cap_bytes / size;
	if (c < hi)
		c = hi;
	if (c > 2048)
		c = 2048;
	*cap = c;
}

/* The length of a bucket's slot array: its cap, which slow start never
 * takes high_mark past, plus two batches, so that high_mark < capacity
 * always holds (types.h) and the slow paths that push beyond high_mark
 * (a free that trims next, a thread's stock handed over at exit) rarely
 * find it full. 16 B: 2048 + 2 x 48 = 2144 slots (17 KiB); the sum over
 * the 28 classes with the default cap_bytes is in docs/MEMORY.md. */
uint32_t _sm_class_slots(uint32_t cls)
{
	uint32_t low, high, batch, cap;
	_sm_class_watermarks(cls, &low, &high, &batch, &cap);
	return cap + 2 * batch;
}
