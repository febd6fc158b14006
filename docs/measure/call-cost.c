/* docs/PERFORMANCE.md, "What the preload costs": the same malloc(64)-free
 * pair loop over the same hit paths (the static core, sm_malloc/sm_free),
 * reached by different kinds of call. call-cost.sh builds every variant
 * and times them in interleaved launches.
 *
 *   CALL=0  direct calls (the loop and the core in one executable)
 *   CALL=1  through a hand-written stub `jmp *ptr(%rip)`, like a PLT entry,
 *           whose pointer holds the core's function from the start
 *           (a constructor sets it: the stub's jump only ever sees one
 *           target, as under LD_BIND_NOW)
 *   CALL=2  the same stub with lazy binding's history: the pointer first
 *           holds a resolver that swaps in the real function, so the jump
 *           has seen two targets, as a lazily bound PLT entry has
 *   LOOP_IN_LIB  builds run_loop() only, for a shared object (the loop and
 *           the core in one .so; the PLT or -Bsymbolic decides the call)
 *
 * The core may be linked into the program or sit in a shared object far
 * from it (call-cost.sh: "far"), which is where a preloaded allocator sits.
 */
#include <stdio.h>
#include <stdlib.h>

#include "pair-loop.h"
#include "sigmalloc.h"

#ifndef CALL
#define CALL 0
#endif

#if CALL == 0
#define CALL_MALLOC sm_malloc
#define CALL_FREE sm_free
#else
void *stub_malloc(size_t size);
void stub_free(void *p);
static void *resolve_malloc(size_t size);
static void resolve_free(void *p);
void *stub_malloc_target = resolve_malloc, *stub_free_target = resolve_free;

static void *resolve_malloc(size_t size)
{
	stub_malloc_target = sm_malloc;
	return sm_malloc(size);
}

static void resolve_free(void *p)
{
	stub_free_target = sm_free;
	sm_free(p);
}

#if CALL == 1
__attribute__((constructor)) static void bind_now(void)
{
	stub_malloc_target = sm_malloc;
	stub_free_target = sm_free;
}
#endif

__asm__(".text\n.p2align 6\nstub_malloc: jmp *stub_malloc_target(%rip)\n"
	".p2align 6\nstub_free: jmp *stub_free_target(%rip)\n");
#define CALL_MALLOC stub_malloc
#define CALL_FREE stub_free
#endif

DEFINE_PAIR_LOOP(, run_loop, CALL_MALLOC, CALL_FREE)

#ifndef LOOP_IN_LIB
int main(int argc, char **argv)
{
	long n = argc > 1 ? atol(argv[1]) : 5000000;
	printf("%.2f\n", run_loop(64, n));
	return 0;
}
#endif
