/*
 * The near copy: the malloc and free hit paths, copied at start-up into a
 * page mapped within reach of the main program's code, and the program's
 * PLT slots for malloc and free pointed at that copy.
 *
 * Why: a preloaded allocator sits in the shared-library area, terabytes
 * away from a PIE program's code, and on the AMD cores measured here a
 * call whose target is that far costs about 0.7 ns more than one within a
 * gigabyte (docs/PERFORMANCE.md, "Session 12"; docs/measure/call-cost.sh):
 * a third of a malloc-free pair. Calls from shared libraries (libstdc++'s
 * operator new, libc) land near libsigmalloc.so already and are left alone.
 *
 * What the copy does: exactly what alloc.c's sm_malloc and sm_free do up to
 * their tail calls, from the same source (src/hit_paths.h: same depth
 * window, same bucket fields, same tests),
 * reading the thread state %fs-relative from an offset patched into the
 * code as an immediate (near_tpoff). A nested call (depth was not 0) takes or puts a slot of the
 * thread's stock itself, with refill.c's own code for it (nested_stock.h),
 * and only when that fails jumps to _sm_nested_alloc/_sm_nested_free with
 * depth held; a bucket at its mark jumps to _sm_alloc_slow/_sm_free_slow;
 * these restore depth as they do for alloc.c. What sm_malloc and sm_free
 * handle before the window (a large size; NULL, large, foreign or
 * misaligned pointers) goes to them with the caller's argument; the double
 * free on top goes to alloc.c's report with depth held, as there (putting
 * depth back first would let a handler pop the pointer before sm_free
 * looked again, and the second free would then go unseen). The stock's common case is in the copy
 * because a signal handler's nested call that left the copy found the
 * library's code cold (the program's calls no longer warm it): the signal
 * benchmark's p99 went from 260-330 ns to 450-660 with the copy jumping
 * to _sm_nested_alloc, and back to 321 against 320 without the copy
 * with the stock in it (docs/PERFORMANCE.md, "Session 12").
 *
 * Invariant the copy relies on (checked at build time by
 * tests/check-near.py): everything in section sm_near_text reaches only
 * sm_near_text (RIP-relative data and direct branches), so a byte copy of
 * the section runs anywhere. Its data words (the library functions it
 * falls back to) and the TLS offset's immediates are written into the copy
 * before it is made executable; in the library's own image they stay 0 and
 * a placeholder, and that code never runs.
 *
 * When it is not set up (the library works as before): SIGMALLOC_NEAR=0;
 * no main program's dynamic section or no PLT slot for malloc or free (a
 * program built with -fno-plt calls through GOT words, which also serve
 * comparisons of function pointers, and are left alone); an auditor
 * (LD_AUDIT, DT_AUDIT); a slot that holds neither the program's lazy PLT
 * stub nor this library's function (someone's hook); a read-only slot
 * (-z now with full RELRO) whose page mprotect will not make writable;
 * a slot that the program's own binding does not point at this library
 * (malloc and free are decided one by one: a slot still lazily bound is
 * bound first, before main, by a call through it, malloc(1) and
 * free(NULL); under LD_BIND_NOT it stays unbound, and so unused); no free
 * address space below the program's image; mprotect refused (W^X
 * policies). Costs one page of address space and, when set up, one page of
 * memory (docs/MEMORY.md). Debuggers: a breakpoint on `malloc` does not
 * stop at the program's own calls that hit; SIGMALLOC_NEAR=0 restores that.
 */
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__SANITIZE_ADDRESS__) && \
    !defined(__SANITIZE_THREAD__)
/* x86-64 only (its relocations, %fs); not in a sanitizer's build, whose
 * instrumentation would call out of the section. */
#define _GNU_SOURCE
#include <elf.h>
#include <link.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "internal.h"
#include "nested_stock.h"
#include "sigmalloc.h"

/* The copy's data words, in the copy's own section (see above). */
__asm__(".section sm_near_text,\"ax\",@progbits\n"
        ".p2align 6\n"
        ".globl sm_near_malloc_miss\n.hidden sm_near_malloc_miss\nsm_near_malloc_miss: .quad 0\n"
        ".globl sm_near_free_miss\n.hidden sm_near_free_miss\nsm_near_free_miss: .quad 0\n"
        ".globl sm_near_nested_alloc\n.hidden sm_near_nested_alloc\nsm_near_nested_alloc: .quad 0\n"
        ".globl sm_near_nested_free\n.hidden sm_near_nested_free\nsm_near_nested_free: .quad 0\n"
        ".globl sm_near_alloc_slow\n.hidden sm_near_alloc_slow\nsm_near_alloc_slow: .quad 0\n"
        ".globl sm_near_free_slow\n.hidden sm_near_free_slow\nsm_near_free_slow: .quad 0\n"
        ".globl sm_near_double_free\n.hidden sm_near_double_free\nsm_near_double_free: .quad 0\n"
        ".previous\n");
extern void *(*sm_near_malloc_miss)(size_t) sm_hidden;    /* sm_malloc */
extern void (*sm_near_free_miss)(void *) sm_hidden;       /* sm_free */
/* alloc.c's own tail calls, entered as it enters them (depth held). */
extern void *(*sm_near_nested_alloc)(uint32_t, size_t) sm_hidden; /* _sm_nested_alloc */
extern void (*sm_near_nested_free)(void *, uint32_t) sm_hidden;   /* _sm_nested_free */
extern void *(*sm_near_alloc_slow)(uint32_t) sm_hidden;           /* _sm_alloc_slow */
extern void (*sm_near_free_slow)(void *, uint32_t) sm_hidden;     /* _sm_free_slow */
extern void (*sm_near_double_free)(void *) sm_hidden;             /* _sm_double_free */
extern char __start_sm_near_text[] sm_hidden, __stop_sm_near_text[] sm_hidden;

/* The offset of the thread state from the thread pointer (initial-exec
 * TLS sits at the same offset from every thread's), as an immediate that
 * near_setup writes into each copied `movq $imm32, %reg`: the hit paths
 * load nothing from the copy's page. A load of the offset from a data word
 * beside the code (as until session 13) was the slowest step of the first
 * malloc in a signal handler: p50 208 against 130-156 TSC cycles with that
 * word read just before, in docs/measure/handler-first-call.c.
 * Each use leaves its address in section sm_near_sites (as a distance from
 * the entry, so that the table needs no relocation); near_setup checks the
 * encoding and the placeholder at every site before it patches. The
 * placeholder is negative, so that the assembler must use the
 * sign-extended imm32 form (REX.W C7 /0), which the real offset (negative,
 * below the thread pointer) needs. */
#define NEAR_TPOFF_PLACEHOLDER (-0x5a5a5a5a)
static sm_always_inline uintptr_t near_tpoff(void)
{
	intptr_t v;
	__asm__("0: movq %1, %0\n"
	        ".pushsection sm_near_sites,\"a\",@progbits\n"
	        ".balign 4\n"
	        ".long 0b - .\n"
	        ".popsection"
	        : "=r"(v)
	        : "i"(NEAR_TPOFF_PLACEHOLDER));
	return (uintptr_t)v;
}
extern const int32_t __start_sm_near_sites[] sm_hidden, __stop_sm_near_sites[] sm_hidden;

/* The thread state through %fs. */
typedef struct sm_thread __seg_fs near_thread;

/* The same thread state as a plain pointer, for nested_stock.h: the
 * thread pointer (%fs:0 holds its own address) plus the offset. */
static sm_always_inline struct sm_thread *near_self_generic(void)
{
	return (struct sm_thread *)((char *)__builtin_thread_pointer() + near_tpoff());
}

#define SM_NEAR                                                                     \
	__attribute__((section("sm_near_text"), hot, aligned(64), used,                \
	               no_sanitize_undefined, no_instrument_function))

/* The nested cases: a slot of the stock in the copy itself (a signal
 * handler's common case, see above), else alloc.c's own fallback, entered
 * with depth held as alloc.c enters it. */
static sm_always_inline void *near_nested_alloc(size_t cls, size_t align)
{
	void *node = nested_alloc_from_stock(near_self_generic(), (uint32_t)cls, align);
	if (sm_likely(node != NULL))
		return node;
	return sm_near_nested_alloc((uint32_t)cls, align); /* it leaves depth at d */
}

static sm_always_inline void near_nested_free(void *p, size_t cls)
{
	if (sm_likely(nested_free_to_stock(near_self_generic(), p, (uint32_t)cls)))
		return;
	sm_near_nested_free(p, (uint32_t)cls); /* it leaves depth at d */
}

/* near_alloc_class and near_free_class: alloc.c's alloc_class and
 * free_class (src/hit_paths.h), on the %fs address space, falling back
 * through the copy's data words. */
#define HIT_PREFIX near_
#define HIT_THREAD near_thread
#define HIT_SELF() ((near_thread *)near_tpoff())
#define HIT_NESTED_ALLOC(cls, align) near_nested_alloc((cls), (align))
#define HIT_NESTED_FREE(p, cls) near_nested_free((p), (cls))
#define HIT_ALLOC_SLOW(cls) sm_near_alloc_slow((uint32_t)(cls))
#define HIT_FREE_SLOW(p, cls) sm_near_free_slow((p), (uint32_t)(cls))
#define HIT_DOUBLE_FREE(p) sm_near_double_free(p)
#define HIT_POISON(p) ((void)(p))
#define HIT_UNPOISON(p) ((void)(p))
#include "hit_paths.h"

/* alloc.c's sm_malloc: a large size goes to it. */
SM_NEAR void *sm_near_malloc(size_t size)
{
	if (sm_unlikely(size > SM_MAX_SMALL))
		return sm_near_malloc_miss(size);
	return near_alloc_class(HIT_SELF()->class_of_units[(size + 15) >> 4], 0);
}

/* alloc.c's sm_free: what sm_free hands to free_other or reports before
 * its window (NULL, large, foreign, misaligned) goes to sm_free itself. */
SM_NEAR void sm_near_free(void *p)
{
	near_thread *t = HIT_SELF();
	uintptr_t slot = ((uintptr_t)p - t->base) >> SM_SLOT_SHIFT;
	if (sm_unlikely(slot >= SM_NUM_CLASSES || ((uintptr_t)p & t->class_align_mask[slot]))) {
		sm_near_free_miss(p);
		return;
	}
	near_free_class(p, slot);
}

/* ------------------------------------------------------------------------
 * Set-up, in a constructor: before main, one thread.
 * ---------------------------------------------------------------------- */

static int first_object(struct dl_phdr_info *info, size_t size, void *arg)
{
	(void)size;
	*(struct dl_phdr_info *)arg = *info;
	return 1; /* the first object is the main program */
}

/* A dynamic-section address: ld.so may have made it absolute already. */
static uintptr_t dyn_addr(uintptr_t bias, uintptr_t v)
{
	return v < bias ? bias + v : v;
}

struct plt_info {
	uintptr_t bias, text_lo;
	uintptr_t image_lo, image_hi; /* the program's loaded segments */
	const ElfW(Rela) *jmprel;
	size_t n_rel;
	const ElfW(Sym) *symtab;
	const char *strtab;
};

/* The main program's PLT relocations (JMPREL), or false. */
static bool main_program_plt(struct plt_info *pi)
{
	struct dl_phdr_info prog;
	memset(&prog, 0, sizeof prog);
	memset(pi, 0, sizeof *pi);
	if (dl_iterate_phdr(first_object, &prog) == 0 || !prog.dlpi_phdr)
		return false;
	pi->bias = prog.dlpi_addr;
	pi->text_lo = pi->image_lo = UINTPTR_MAX;
	const ElfW(Dyn) *dyn = NULL;
	for (int i = 0; i < prog.dlpi_phnum; i++) {
		const ElfW(Phdr) *ph = &prog.dlpi_phdr[i];
		uintptr_t at = pi->bias + ph->p_vaddr;
		if (ph->p_type == PT_LOAD) {
			if (at < pi->image_lo)
				pi->image_lo = at;
			if (at + ph->p_memsz > pi->image_hi)
				pi->image_hi = at + ph->p_memsz;
		}
		if (ph->p_type == PT_DYNAMIC)
			dyn = (const ElfW(Dyn) *)at;
		else if (ph->p_type == PT_LOAD && (ph->p_flags & PF_X) && at < pi->text_lo)
			pi->text_lo = at;
	}
	if (!dyn || pi->text_lo == UINTPTR_MAX)
		return false;
	size_t pltrelsz = 0;
	uintptr_t pltrel = 0;
	for (; dyn->d_tag != DT_NULL; dyn++) {
		switch (dyn->d_tag) {
		case DT_JMPREL: pi->jmprel = (const void *)dyn_addr(pi->bias, dyn->d_un.d_ptr); break;
		case DT_PLTRELSZ: pltrelsz = dyn->d_un.d_val; break;
		case DT_PLTREL: pltrel = dyn->d_un.d_val; break;
		case DT_SYMTAB: pi->symtab = (const void *)dyn_addr(pi->bias, dyn->d_un.d_ptr); break;
		case DT_STRTAB: pi->strtab = (const void *)dyn_addr(pi->bias, dyn->d_un.d_ptr); break;
		case DT_AUDIT: /* an auditor's PLT trampolines may be in the slots */
		case DT_DEPAUDIT: return false;
		default: break;
		}
	}
	pi->n_rel = pltrelsz / sizeof(ElfW(Rela));
	return pi->jmprel && pi->symtab && pi->strtab && pltrel == DT_RELA;
}

/* Maps len bytes at exactly hint, or returns NULL. */
static void *map_at(uintptr_t hint, size_t len)
{
	void *m = mmap((void *)hint, len, PROT_READ | PROT_WRITE,
	               MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED_NOREPLACE, -1, 0);
	if (m == MAP_FAILED)
		return NULL;
	if ((uintptr_t)m == hint)
		return m;
	munmap(m, len); /* a kernel without MAP_FIXED_NOREPLACE put it elsewhere */
	return NULL;
}

/* len bytes of memory just below the program's image, or NULL: in 16 MiB
 * steps down to 1 GiB from it (the brk heap grows above the image, so
 * nothing is put in its way), or, for a program loaded too low for those
 * (a non-PIE one, at 0x400000), the pages right below the image, above
 * vm.mmap_min_addr. Only the distance from the program's calls matters,
 * not reach: the PLT's `jmp *slot` is absolute. */
static void *map_near(const struct plt_info *pi, size_t len)
{
	const uintptr_t step = (uintptr_t)16 << 20;
	for (uintptr_t k = 1; k <= 64; k++) {
		uintptr_t hint = (pi->image_lo & ~(step - 1)) - k * step;
		if (hint >= pi->image_lo)
			break; /* wrapped below 0 */
		void *m = map_at(hint, len);
		if (m)
			return m;
	}
	if (pi->image_lo > len)
		return map_at(pi->image_lo - len, len);
	return NULL;
}

/* Whether a slot is still lazily bound: it points into the program's own
 * PLT (LD_BIND_NOT keeps it so). */
static bool lazy(const struct plt_info *pi, void **slot)
{
	uintptr_t v = (uintptr_t)*slot;
	return v >= pi->image_lo && v < pi->image_hi;
}

/* A slot still lazily bound or bound to this library's function: anything
 * else is someone's hook (a tracer that patched the program's GOT), left in
 * place. */
static bool slot_is_ours(const struct plt_info *pi, void **slot, void *ours)
{
	return *slot == ours || lazy(pi, slot);
}

/* Which function the program's calls through its slots reach decides, not
 * dlsym: in a program that takes malloc's address (a non-PIE python3.11)
 * dlsym returns the program's own PLT entry, the function's canonical
 * address. So a slot still lazily bound is bound first, by a call through
 * it, as the program's own first call would bind it, and kept only if it
 * then holds ours. malloc and free are decided one by one.
 *
 * free's slot (if not NULL) or NULL: bound by free(NULL). */
static void **bind_free(const struct plt_info *pi, void **slot)
{
	if (!slot)
		return NULL;
	if (lazy(pi, slot))
		((void (*)(void *))*slot)(NULL);
	return *slot == (void *)sm_free ? slot : NULL;
}

/* malloc's slot (if not NULL) or NULL: bound by malloc(1), whose block goes
 * back the way the program frees (through its free slot, bound already),
 * or to ours if the program has no free slot and its malloc is ours; else
 * (another allocator's malloc, and no free slot) one byte stays with that
 * allocator. */
static void **bind_malloc(const struct plt_info *pi, void **slot, void **free_slot)
{
	if (!slot)
		return NULL;
	if (lazy(pi, slot)) {
		void *p = ((void *(*)(size_t))*slot)(1);
		if (free_slot)
			((void (*)(void *))*free_slot)(p);
		else if (*slot == (void *)sm_malloc)
			sm_free(p);
	}
	return *slot == (void *)sm_malloc ? slot : NULL;
}

/* Writes the thread state's offset into every near_tpoff site of the copy;
 * false (the copy is not used) if a site is not the instruction near_tpoff
 * emits with its placeholder, or the offset does not fit its imm32. */
static bool patch_tpoff(char *copy)
{
	intptr_t off = (intptr_t)((uintptr_t)&_sm_thread - (uintptr_t)__builtin_thread_pointer());
	if (off < INT32_MIN || off > INT32_MAX || &__start_sm_near_sites[0] == &__stop_sm_near_sites[0])
		return false;
	for (const int32_t *e = __start_sm_near_sites; e < __stop_sm_near_sites; e++) {
		const char *site = (const char *)e + *e;
		if (site < __start_sm_near_text || site + 7 > __stop_sm_near_text)
			return false;
		unsigned char *ins = (unsigned char *)copy + (site - __start_sm_near_text);
		int32_t imm;
		memcpy(&imm, ins + 3, sizeof imm);
		if ((ins[0] & 0xfe) != 0x48 || ins[1] != 0xc7 || (ins[2] & 0xf8) != 0xc0 ||
		    imm != NEAR_TPOFF_PLACEHOLDER)
			return false;
		imm = (int32_t)off;
		memcpy(ins + 3, &imm, sizeof imm);
	}
	return true;
}

/* The protection of the mapping that holds addr, as in /proc/self/maps
 * ("rw-p"), into perms[5]; false if it cannot be read. */
static bool protection_of(uintptr_t addr, char perms[5])
{
	FILE *f = fopen("/proc/self/maps", "re");
	if (!f)
		return false;
	char line[256];
	bool found = false;
	while (!found && fgets(line, sizeof line, f)) {
		unsigned long lo, hi;
		found = sscanf(line, "%lx-%lx %4s", &lo, &hi, perms) == 3 && addr >= lo && addr < hi;
		/* a line longer than the buffer: skip the rest of it */
		while (!strchr(line, '\n') && fgets(line, sizeof line, f))
			;
	}
	fclose(f);
	return found;
}

/* Points a PLT slot (if not NULL) at the copy. One aligned word: a thread
 * calling through the slot meanwhile takes the old target or the copy,
 * both complete. The slot's page is what it is now, not what ld.so left
 * (an earlier constructor, a GOT hooker's, may have made it writable and
 * count on it staying so): a writable page is written as it is; a
 * read-only one (a program bound at start-up, -z now, with full RELRO:
 * ld.so protected it before any constructor ran) is made writable for the
 * store and read-only again at once; anything else, or a page whose
 * protection cannot be read or changed, keeps the library's function. */
static void point_slot(void **slot, void *copy_fn)
{
	char perms[5];
	if (!slot || !protection_of((uintptr_t)slot, perms) || perms[0] != 'r' || perms[2] != '-')
		return;
	uintptr_t page_size = (uintptr_t)getpagesize(), page = (uintptr_t)slot & ~(page_size - 1);
	bool read_only = perms[1] != 'w';
	if (read_only && mprotect((void *)page, page_size, PROT_READ | PROT_WRITE) != 0)
		return;
	__atomic_store_n(slot, copy_fn, __ATOMIC_RELEASE);
	if (read_only && mprotect((void *)page, page_size, PROT_READ) != 0)
		_sm_message("sigmalloc: the program's PLT page %p stays writable: mprotect failed\n", (void *)page);
}

extern char **environ;

/* An auditor (LD_AUDIT) may have put its own PLT trampolines in the slots. */
static bool audited(void)
{
	for (char **e = environ; e && *e; e++)
		if (strncmp(*e, "LD_AUDIT=", 9) == 0)
			return true;
	return false;
}

__attribute__((constructor)) static void near_setup(void)
{
	sm_free(sm_malloc(1)); /* global set-up, options included (cache.c) */
	if (!_sm_options.near || audited())
		return;
	struct plt_info pi;
	if (!main_program_plt(&pi))
		return;
	void **slot_malloc = NULL, **slot_free = NULL;
	for (size_t i = 0; i < pi.n_rel; i++) {
		const ElfW(Rela) *r = &pi.jmprel[i];
		if (ELF64_R_TYPE(r->r_info) != R_X86_64_JUMP_SLOT)
			continue;
		const char *name = pi.strtab + pi.symtab[ELF64_R_SYM(r->r_info)].st_name;
		uintptr_t at = pi.bias + r->r_offset;
		if (strcmp(name, "malloc") == 0 && slot_is_ours(&pi, (void **)at, (void *)sm_malloc))
			slot_malloc = (void **)at;
		else if (strcmp(name, "free") == 0 && slot_is_ours(&pi, (void **)at, (void *)sm_free))
			slot_free = (void **)at;
	}
	/* The program's calls must reach this library's malloc and free (a
	 * program whose lookup finds another's keeps calling that one). */
	void **program_free = slot_free;
	slot_free = bind_free(&pi, program_free);
	slot_malloc = bind_malloc(&pi, slot_malloc, program_free);
	if (!slot_malloc && !slot_free)
		return;
	size_t len = (size_t)(__stop_sm_near_text - __start_sm_near_text);
	size_t map_len = (len + 4095) & ~(size_t)4095;
	char *copy = map_near(&pi, map_len);
	if (!copy)
		return;
	memcpy(copy, __start_sm_near_text, len);
	if (!patch_tpoff(copy)) {
		munmap(copy, map_len);
		return;
	}
#define IN_COPY(sym) ((void *)(copy + ((const char *)&(sym) - __start_sm_near_text)))
	*(void **)IN_COPY(sm_near_malloc_miss) = (void *)sm_malloc;
	*(void **)IN_COPY(sm_near_free_miss) = (void *)sm_free;
	*(void **)IN_COPY(sm_near_nested_alloc) = (void *)_sm_nested_alloc;
	*(void **)IN_COPY(sm_near_nested_free) = (void *)_sm_nested_free;
	*(void **)IN_COPY(sm_near_alloc_slow) = (void *)_sm_alloc_slow;
	*(void **)IN_COPY(sm_near_free_slow) = (void *)_sm_free_slow;
	*(void **)IN_COPY(sm_near_double_free) = (void *)_sm_double_free;
	if (mprotect(copy, map_len, PROT_READ | PROT_EXEC) != 0) {
		munmap(copy, map_len);
		return;
	}
	__atomic_store_n(&_sm_near_len, len, __ATOMIC_RELAXED);
	__atomic_store_n(&_sm_near_code, copy, __ATOMIC_RELEASE); /* signal_warm.c */
	point_slot(slot_malloc, IN_COPY(sm_near_malloc));
	point_slot(slot_free, IN_COPY(sm_near_free));
#undef IN_COPY
}
#endif
