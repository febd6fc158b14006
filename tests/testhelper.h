/* Minimal test harness (after mimalloc's test/testhelper.h): CHECK records a
 * named result; print_test_summary() prints "N passed, N failed" and
 * returns the exit status. */
#ifndef SM_TESTHELPER_H
#define SM_TESTHELPER_H

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

static int tests_passed, tests_failed;

#define CHECK(name, expr)                                                              \
	do {                                                                           \
		if (expr) {                                                            \
			tests_passed++;                                                \
		} else {                                                               \
			tests_failed++;                                                \
			fprintf(stderr, "FAIL: %s (%s:%d): %s\n", name, __FILE__, __LINE__, \
			        #expr);                                                \
		}                                                                      \
	} while (0)

/* A block of statements whose last value decides: CHECK_BODY("x") { ...; result = ...; } */
#define CHECK_BODY(name)                                                               \
	for (bool result = true, once = true; once;                                    \
	     once = false, (result ? tests_passed++ : (tests_failed++,                  \
	     fprintf(stderr, "FAIL: %s (%s:%d)\n", name, __FILE__, __LINE__))))

#define BANNER(title) fprintf(stderr, "--- %s\n", title)

/* Fail-fast: a check that later steps depend on; exits 1 with the line. */
#define REQUIRE(e)                                                                   \
	do {                                                                         \
		if (!(e)) {                                                          \
			fprintf(stderr, "FAIL %s:%d: %s\n", __FILE__, __LINE__, #e); \
			exit(1);                                                     \
		}                                                                    \
	} while (0)

/* Marsaglia's xorshift generators: cheap, and reentrant in a signal handler
 * when each context keeps its own state. */
static inline uint32_t xorshift32(uint32_t *s)
{
	*s ^= *s << 13;
	*s ^= *s >> 17;
	*s ^= *s << 5;
	return *s;
}

static inline uint64_t xorshift64(uint64_t *s)
{
	*s ^= *s << 13;
	*s ^= *s >> 7;
	*s ^= *s << 17;
	return *s;
}

#include "rss.h"

static inline int print_test_summary(void)
{
	printf("%d passed, %d failed\n", tests_passed, tests_failed);
	return tests_failed ? 1 : 0;
}

#endif
