/* docs/PERFORMANCE.md, "Session 12": what the distance of a call's target
 * costs. Two stubs `jmp *ptr(%rip)` (as PLT entries) call copies of a
 * two-instruction leaf placed DELTA bytes above this program's code
 * (MAP_FIXED_NOREPLACE), or where mmap puts them with DELTA 0 (the
 * shared-library area); prints ns per pair of calls.
 *
 *   gcc -O2 -Idocs/measure -o /tmp/call-distance docs/measure/call-distance.c
 *   for d in 0x100000 0x40000000 0x400000000 0x10000000000 0; do
 *     echo "$d $(taskset -c 1 /tmp/call-distance $d)"; done
 */
#define _GNU_SOURCE
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include "clock.h"
/* leaf: lea 1(%rdi),%rax ; ret */
static const unsigned char leaf[] = { 0x48, 0x8d, 0x47, 0x01, 0xc3 };
void *ptr_a, *ptr_b;
long stub_a(long); long stub_b(long);
__asm__(".text\n.p2align 6\nstub_a: jmp *ptr_a(%rip)\n.p2align 6\nstub_b: jmp *ptr_b(%rip)\n");
int main(int argc, char **argv)
{
	long delta = strtol(argv[1], NULL, 0);
	uintptr_t here = ((uintptr_t)main & ~(uintptr_t)0xfff) + delta;
	void *m = mmap((void *)here, 8192, PROT_READ | PROT_WRITE | PROT_EXEC,
		       MAP_PRIVATE | MAP_ANONYMOUS | (delta ? MAP_FIXED_NOREPLACE : 0), -1, 0);
	if (m == MAP_FAILED) { perror("mmap"); return 1; }
	memcpy(m, leaf, sizeof leaf); memcpy((char *)m + 64, leaf, sizeof leaf);
	ptr_a = m; ptr_b = (char *)m + 64;
	long n = 20000000, x = 0;
	uint64_t t0 = now_ns();
	for (long i = 0; i < n; i++) { x = stub_a(x); x = stub_b(x); }
	printf("%.3f\n", (double)(now_ns() - t0) / n);
	return x == 0;
}
