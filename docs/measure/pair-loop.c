/* docs/PERFORMANCE.md, "Pairs across launches": malloc(SIZE), write a byte,
 * free, N times; prints ns per pair. Each process gets its own address
 * layout (ASLR), and on this VM the pair time varies by up to 40 % from one
 * launch to the next while it is steady within one: compare allocators
 * over many launches (pair-launches.sh), not within one.
 *
 *   gcc -O2 -o /tmp/pair-loop docs/measure/pair-loop.c
 *
 * Session 11: the same loop over the static core (sm_malloc/sm_free linked
 * into the program: local-exec TLS, no PLT), and with TLS_PAGE_OFF a
 * page-aligned word holding -4096 at that page offset, for
 * docs/measure/tls-immediate.py exe ... tls_page+TLS_PAGE_OFF:
 *   gcc -O2 -DSTATIC_CORE -Iinclude -o /tmp/pair-static docs/measure/pair-loop.c \
 *       build/src/libsigmalloc-core.a -ljemalloc -lpthread
 *   gcc -O2 -DSTATIC_CORE -DTLS_PAGE_OFF=0x9e0 -Iinclude -o /tmp/pair-static-9e0 ...
 */
#include <stdio.h>
#include <stdlib.h>

#include "pair-loop.h"

#ifdef STATIC_CORE
#include "sigmalloc.h"
#define malloc sm_malloc
#define free sm_free
#endif
#ifdef TLS_PAGE_OFF
__attribute__((used, aligned(4096))) const long tls_page[512] = { [(TLS_PAGE_OFF) / 8] = -4096 };
#endif

DEFINE_PAIR_LOOP(static, pair_loop, malloc, free)

int main(int argc, char **argv)
{
	size_t size = argc > 1 ? strtoul(argv[1], NULL, 0) : 64;
	long n = argc > 2 ? atol(argv[2]) : 20000000;
	printf("%.2f\n", pair_loop(size, n));
	return 0;
}
