/*
 * The near copy (preload/near.c), under LD_PRELOAD, in a program linked
 * with lazy binding: after start-up the program's PLT slots for malloc and
 * free hold the copy's addresses, within 2 GiB of the program's code, in
 * an executable page that no object maps; calls through them allocate and
 * free correctly in every class, from threads too; with SIGMALLOC_NEAR=0
 * (argument "off") the slots hold the library's own functions once called.
 * Built with -z now and full RELRO (second argument "now"), the same, and
 * the slots' page is read-only again. Built as a position-dependent
 * executable (second argument "nopie"), which is loaded at 0x400000 with
 * no room below it and, as it takes malloc's and free's addresses, has
 * their PLT entries as their canonical addresses (what dlsym returns, as
 * in Debian's python3.11), the same.
 *
 * Under another allocator preloaded ahead of sigmalloc (argument "other",
 * tests/other-malloc.c), the slots hold that allocator's functions.
 *
 *   test-near [on|off|other] [now|nopie]
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <elf.h>
#include <link.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "testhelper.h"


static int first_object(struct dl_phdr_info *info, size_t size, void *arg)
{
	(void)size;
	*(struct dl_phdr_info *)arg = *info;
	return 1;
}

/* The program's own PLT slot for name (its JUMP_SLOT relocation). */
static void **plt_slot(const char *name)
{
	struct dl_phdr_info prog;
	dl_iterate_phdr(first_object, &prog);
	const ElfW(Dyn) *dyn = NULL;
	for (int i = 0; i < prog.dlpi_phnum; i++)
		if (prog.dlpi_phdr[i].p_type == PT_DYNAMIC)
			dyn = (const void *)(prog.dlpi_addr + prog.dlpi_phdr[i].p_vaddr);
	REQUIRE(dyn != NULL);
	uintptr_t b = prog.dlpi_addr, jmprel = 0, symtab = 0, strtab = 0, sz = 0;
	for (; dyn->d_tag != DT_NULL; dyn++) {
		uintptr_t v = dyn->d_un.d_ptr;
		if (dyn->d_tag == DT_JMPREL) jmprel = v < b ? b + v : v;
		if (dyn->d_tag == DT_SYMTAB) symtab = v < b ? b + v : v;
		if (dyn->d_tag == DT_STRTAB) strtab = v < b ? b + v : v;
		if (dyn->d_tag == DT_PLTRELSZ) sz = dyn->d_un.d_val;
	}
	const ElfW(Rela) *r = (const void *)jmprel;
	const ElfW(Sym) *sym = (const void *)symtab;
	for (size_t i = 0; i < sz / sizeof *r; i++)
		if (strcmp((const char *)strtab + sym[ELF64_R_SYM(r[i].r_info)].st_name, name) == 0)
			return (void **)(b + r[i].r_offset);
	return NULL;
}

/* The mapping that holds addr: its permissions ("rwxp") and whether it has
 * no file; false if none does. */
static bool mapping_of(const void *addr, char perms[8], bool *anonymous)
{
	FILE *f = fopen("/proc/self/maps", "r");
	REQUIRE(f != NULL);
	char line[512];
	bool found = false;
	while (!found && fgets(line, sizeof line, f)) {
		unsigned long lo, hi, off, inode;
		char dev[16];
		if (sscanf(line, "%lx-%lx %7s %lx %15s %lu", &lo, &hi, perms, &off, dev, &inode) != 6)
			continue;
		found = (uintptr_t)addr >= lo && (uintptr_t)addr < hi;
		*anonymous = inode == 0;
	}
	fclose(f);
	return found;
}

/* Whether addr is in an anonymous executable mapping (no file). */
static bool in_anonymous_code(const void *addr)
{
	char perms[8];
	bool anonymous;
	return mapping_of(addr, perms, &anonymous) && perms[2] == 'x' && anonymous;
}

/* Whether addr is in one of the program's loaded segments. */
static bool in_program(const void *addr)
{
	struct dl_phdr_info prog;
	dl_iterate_phdr(first_object, &prog);
	for (int i = 0; i < prog.dlpi_phnum; i++) {
		const ElfW(Phdr) *ph = &prog.dlpi_phdr[i];
		uintptr_t lo = prog.dlpi_addr + ph->p_vaddr;
		if (ph->p_type == PT_LOAD && (uintptr_t)addr >= lo && (uintptr_t)addr < lo + ph->p_memsz)
			return true;
	}
	return false;
}

/* The library's own malloc or free, as it defines it. */
static int find_sigmalloc(struct dl_phdr_info *info, size_t size, void *arg)
{
	(void)size;
	if (!strstr(info->dlpi_name, "libsigmalloc"))
		return 0;
	*(const char **)arg = info->dlpi_name;
	return 1;
}

static void *sigmalloc_function(const char *name)
{
	const char *path = NULL;
	REQUIRE(dl_iterate_phdr(find_sigmalloc, &path) == 1 && path != NULL);
	void *lib = dlopen(path, RTLD_NOLOAD | RTLD_LAZY);
	REQUIRE(lib != NULL);
	void *fn = dlsym(lib, name);
	Dl_info info;
	REQUIRE(fn != NULL && dladdr(fn, &info) && strstr(info.dli_fname, "libsigmalloc") != NULL);
	return fn;
}

/* Taken in code (main), so that a position-dependent build has canonical
 * PLT entries (a static initialiser is a data relocation instead); only
 * there: a PIE build that takes them calls through the GOT word, not a
 * PLT slot (.plt.got), which near.c leaves alone. */
void *(*volatile taken_malloc)(size_t);
void (*volatile taken_free)(void *);

/* Every class and a large size, through the program's PLT. */
static void *churn(void *arg)
{
	(void)arg;
	for (int round = 0; round < 200; round++) {
		void *p[64];
		for (int i = 0; i < 64; i++) {
			size_t size = (size_t)(1 + (i * 67 + round) % 4200);
			p[i] = malloc(size);
			REQUIRE(p[i] != NULL);
			memset(p[i], i, size);
		}
		for (int i = 0; i < 64; i++) {
			size_t size = (size_t)(1 + (i * 67 + round) % 4200);
			REQUIRE(((unsigned char *)p[i])[size - 1] == (unsigned char)i);
			free(p[i]);
		}
	}
	free(NULL);
	return NULL;
}

int main(int argc, char **argv)
{
	bool other = argc > 1 && strcmp(argv[1], "other") == 0;
	bool on = !other && !(argc > 1 && strcmp(argv[1], "off") == 0);
	bool bind_now = argc > 2 && strcmp(argv[2], "now") == 0;
	bool no_pie = argc > 2 && strcmp(argv[2], "nopie") == 0;
#if !defined(__pie__)
	taken_malloc = malloc;
	taken_free = free;
#endif
	churn(NULL); /* the lazily bound slots are resolved by now */
	void **sm = plt_slot("malloc"), **sf = plt_slot("free");
	REQUIRE(sm != NULL && sf != NULL);
	void *real_malloc = sigmalloc_function("malloc"), *real_free = sigmalloc_function("free");
	if (no_pie) {
		/* The case this build is for: dlsym finds the program's own PLT
		 * entries, not the library's functions. */
		REQUIRE(in_program(dlsym(RTLD_DEFAULT, "malloc")) && in_program(dlsym(RTLD_DEFAULT, "free")));
		REQUIRE((uintptr_t)dlsym(RTLD_DEFAULT, "malloc") == (uintptr_t)taken_malloc);
		REQUIRE((uintptr_t)dlsym(RTLD_DEFAULT, "free") == (uintptr_t)taken_free);
	}
	if (other) {
		/* The program's lookup finds the other allocator's: its slots
		 * must reach that one, neither sigmalloc nor a copy. */
		Dl_info info;
		void *found_malloc = dlsym(RTLD_DEFAULT, "malloc");
		REQUIRE(dladdr(found_malloc, &info) && strstr(info.dli_fname, "other-malloc") != NULL);
		REQUIRE(*sm == found_malloc && *sf == dlsym(RTLD_DEFAULT, "free"));
	} else if (on) {
		REQUIRE(*sm != real_malloc && *sf != real_free);
		intptr_t dm = (intptr_t)*sm - (intptr_t)(uintptr_t)main;
		intptr_t df = (intptr_t)*sf - (intptr_t)(uintptr_t)main;
		REQUIRE(dm > -(1l << 31) && dm < (1l << 31) && df > -(1l << 31) && df < (1l << 31));
		REQUIRE(in_anonymous_code(*sm) && in_anonymous_code(*sf));
		/* Bound at start-up with full RELRO: the slots' page is read-only
		 * again after near.c wrote them. */
		if (bind_now) {
			char perms[8];
			bool anonymous;
			REQUIRE(mapping_of(sm, perms, &anonymous) && strcmp(perms, "r--p") == 0);
			REQUIRE(mapping_of(sf, perms, &anonymous) && strcmp(perms, "r--p") == 0);
		}
	} else {
		REQUIRE(*sm == real_malloc && *sf == real_free);
	}
	pthread_t th[4];
	for (int i = 0; i < 4; i++)
		REQUIRE(pthread_create(&th[i], NULL, churn, NULL) == 0);
	for (int i = 0; i < 4; i++)
		REQUIRE(pthread_join(th[i], NULL) == 0);
	printf("near copy %s: malloc slot %p, free slot %p\n", other ? "other" : on ? "on" : "off", *sm, *sf);
	return 0;
}
