/* docs/PERFORMANCE.md, "Machine": the core's clock while it runs, from a
 * chain of dependent imul (3 cycles of latency each on Intel cores since
 * Sandy Bridge and on AMD Zen). Not a chain of `add $1`: Golden Cove and
 * later fold dependent add-immediates in the renamer, which would read as
 * more than 10 GHz.
 *
 *   gcc -O2 -o /tmp/cycles docs/measure/cycles.c && /tmp/cycles
 */
#include <stdint.h>
#include <stdio.h>

#include "clock.h"

int main(void)
{
	uint64_t x = 3;
	const long n = 200000000;
	uint64_t t0 = now_ns();
	for (long i = 0; i < n; i++)
		__asm__ volatile("imul %0, %0\n\timul %0, %0\n\timul %0, %0\n\timul %0, %0" : "+r"(x));
	uint64_t t1 = now_ns();
	printf("%.2f GHz\n", 4.0 * 3 * (double)n / (double)(t1 - t0));
	return (int)(x & 1);
}
