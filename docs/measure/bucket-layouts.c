/* docs/PERFORMANCE.md, "What changed": a malloc(64)/free pair loop over
 * bucket layouts, each a pair of noinline functions with sigmalloc's depth
 * window, its TLS state in this executable (not sigmalloc itself):
 *   1  a list through the objects with a tally word (sigmalloc until 405bd7c)
 *   2  two lists, malloc pops one and free pushes the other (mimalloc style)
 *   3  a stack of pointers, one top pointer
 *   5  a stack of pointers, count = pushes - pops in two words
 *   6  a stack of pointers with a tally word (sigmalloc since 405bd7c)
 * Prints ns and TSC ticks per pair. Pin it: taskset -c 1.
 *   gcc -O2 -o /tmp/bucket-layouts docs/measure/bucket-layouts.c
 *   for v in 1 2 3 5 6; do taskset -c 1 /tmp/bucket-layouts $v 20000000; done
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
struct node {
  struct node *next;
};
struct b1 {
  struct node *head;
  uint64_t tally;
  uint32_t low, high;
};
struct b2 {
  struct node *ahead;
  uint64_t atally;
  struct node *fhead;
  uint64_t ftally;
  uint32_t low, high;
};
static __thread struct b1 B1[28];
static __thread struct b2 B2[28];
static __thread uint32_t depth;
#define NI __attribute__((noinline))
#define F() __asm__ volatile("" ::: "memory")
NI void *slow1(void) { abort(); }
NI void *m1(size_t cls) {
  uint32_t d = depth;
  depth = d + 1;
  F();
  if (d)
    abort();
  struct b1 *b = &B1[cls];
  uint64_t t = b->tally;
  if (__builtin_expect((t & 0xffff) <= b->low, 0))
    return slow1();
  struct node *n = b->head;
  b->tally = t + 0xffff;
  b->head = n->next;
  F();
  depth = 0;
  return n;
}
NI void f1(void *p, size_t cls) {
  uint32_t d = depth;
  depth = d + 1;
  F();
  if (d)
    abort();
  struct b1 *b = &B1[cls];
  uint64_t t = b->tally;
  if (__builtin_expect((t & 0xffff) >= b->high, 0)) {
    slow1();
    return;
  }
  struct node *n = p;
  n->next = b->head;
  b->head = n;
  b->tally = t + 1;
  F();
  depth = 0;
}
NI void *slow2(struct b2 *b) { /* swap free list in */
  if (!(b->ftally & 0xffff))
    abort();
  b->ahead = b->fhead;
  b->atally = (b->atally & ~0xffffull) | (b->ftally & 0xffff);
  b->fhead = 0;
  b->ftally &= ~0xffffull;
  struct node *n = b->ahead;
  b->atally += 0xffff;
  b->ahead = n->next;
  F();
  depth = 0;
  return n;
}
NI void *m2(size_t cls) {
  uint32_t d = depth;
  depth = d + 1;
  F();
  if (d)
    abort();
  struct b2 *b = &B2[cls];
  uint64_t t = b->atally;
  if (__builtin_expect((t & 0xffff) <= b->low, 0))
    return slow2(b);
  struct node *n = b->ahead;
  b->atally = t + 0xffff;
  b->ahead = n->next;
  F();
  depth = 0;
  return n;
}
NI void f2(void *p, size_t cls) {
  uint32_t d = depth;
  depth = d + 1;
  F();
  if (d)
    abort();
  struct b2 *b = &B2[cls];
  uint64_t t = b->ftally;
  if (__builtin_expect((t & 0xffff) >= b->high, 0))
    abort();
  struct node *n = p;
  n->next = b->fhead;
  b->fhead = n;
  b->ftally = t + 1;
  F();
  depth = 0;
}
/* 3: one pointer stack (jemalloc cache_bin) */
static __thread void **S3[28];
static __thread void **S3low[28];
static __thread void **S3high[28];
NI void *m3(size_t cls) {
  uint32_t d = depth;
  depth = d + 1;
  F();
  if (d)
    abort();
  void **s = S3[cls];
  if (__builtin_expect(s == S3low[cls], 0))
    abort();
  void *r = s[-1];
  S3[cls] = s - 1;
  F();
  depth = 0;
  return r;
}
NI void f3(void *p, size_t cls) {
  uint32_t d = depth;
  depth = d + 1;
  F();
  if (d)
    abort();
  void **s = S3[cls];
  if (__builtin_expect(s == S3high[cls], 0))
    abort();
  *s = p;
  S3[cls] = s + 1;
  F();
  depth = 0;
}
/* 5: pointer stack with count = pushes - pops: malloc writes only pops, free
 * only pushes */
struct b5 {
  void **slots;
  uint64_t pops;
  uint64_t pushes;
  uint16_t low, high, batch, cap;
};
static __thread struct b5 B5[28];
NI void *m5(size_t cls) {
  uint32_t d = depth;
  depth = d + 1;
  F();
  if (d)
    abort();
  struct b5 *b = &B5[cls];
  uint64_t po = b->pops, pu = b->pushes;
  uint32_t n = (uint32_t)(pu - po);
  if (__builtin_expect(n <= b->low, 0))
    abort();
  b->pops = po + 1;
  void *r = b->slots[n - 1];
  F();
  depth = 0;
  return r;
}
NI void f5(void *p, size_t cls) {
  uint32_t d = depth;
  depth = d + 1;
  F();
  if (d)
    abort();
  struct b5 *b = &B5[cls];
  uint64_t po = b->pops, pu = b->pushes;
  uint32_t n = (uint32_t)(pu - po);
  if (__builtin_expect(n >= b->high, 0))
    abort();
  b->slots[n] = p;
  b->pushes = pu + 1;
  F();
  depth = 0;
}
/* 6: tally-based pointer stack (what 405bd7c ships) */
struct b6 {
  void **slots;
  uint64_t tally;
  uint32_t low, high;
};
static __thread struct b6 B6[28];
NI void *m6(size_t cls) {
  uint32_t d = depth;
  depth = d + 1;
  F();
  if (d)
    abort();
  struct b6 *b = &B6[cls];
  uint64_t t = b->tally;
  size_t n = t & 0xffff;
  if (__builtin_expect(n <= b->low, 0))
    abort();
  b->tally = t + 0xffff;
  void *r = b->slots[n - 1];
  F();
  depth = 0;
  return r;
}
NI void f6(void *p, size_t cls) {
  uint32_t d = depth;
  depth = d + 1;
  F();
  if (d)
    abort();
  struct b6 *b = &B6[cls];
  uint64_t t = b->tally;
  size_t n = t & 0xffff;
  if (__builtin_expect(n >= b->high, 0))
    abort();
  b->slots[n] = p;
  b->tally = t + 1;
  F();
  depth = 0;
}
static inline uint64_t rd(void) {
  unsigned lo, hi;
  __asm__ volatile("rdtsc" : "=a"(lo), "=d"(hi));
  return ((uint64_t)hi << 32) | lo;
}
int main(int argc, char **argv) {
  int v = atoi(argv[1]);
  long N = argc > 2 ? atol(argv[2]) : 50000000;
  size_t cls = 4;
  int K = 64;
  char *mem = aligned_alloc(64, 64 * 4096);
  for (int i = 0; i < K; i++) {
    struct node *n = (void *)(mem + 64 * i);
    n->next = B1[cls].head;
    B1[cls].head = n;
  }
  B1[cls].tally = K;
  B1[cls].low = 0;
  B1[cls].high = 1000;
  for (int i = 0; i < K; i++) {
    struct node *n = (void *)(mem + 64 * i);
    n->next = B2[cls].ahead;
    B2[cls].ahead = n;
  }
  B2[cls].atally = K;
  B2[cls].low = 0;
  B2[cls].high = 1000;
  static void *stk[4096];
  for (int i = 0; i < K; i++)
    stk[i] = mem + 64 * i;
  S3[cls] = stk + K;
  S3low[cls] = stk;
  S3high[cls] = stk + 4096;
  static void *s5[4096];
  for (int i = 0; i < K; i++)
    s5[i] = mem + 64 * i;
  B5[cls].slots = s5;
  B5[cls].pops = 1000;
  B5[cls].pushes = 1000 + K;
  B5[cls].low = 0;
  B5[cls].high = 4000;
  static void *s6[4096];
  for (int i = 0; i < K; i++)
    s6[i] = mem + 64 * i;
  B6[cls].slots = s6;
  B6[cls].tally = K;
  B6[cls].low = 0;
  B6[cls].high = 4000;
  void *(*m)(size_t);
  void (*f)(void *, size_t);
  switch (v) {
  case 1:
    m = m1;
    f = f1;
    break;
  case 2:
    m = m2;
    f = f2;
    break;
  case 3:
    m = m3;
    f = f3;
    break;
  case 5:
    m = m5;
    f = f5;
    break;
  default:
    m = m6;
    f = f6;
    break;
  }
  uint64_t t0 = rd();
  struct timespec a, b;
  clock_gettime(CLOCK_MONOTONIC, &a);
  for (long i = 0; i < N; i++) {
    char *p = m(cls);
    __asm__ volatile("" ::"r"(p) : "memory");
    f(p, cls);
  }
  clock_gettime(CLOCK_MONOTONIC, &b);
  uint64_t t1 = rd();
  printf("v%d %.2f ns %.2f tsc/pair\n", v,
         ((b.tv_sec - a.tv_sec) * 1e9 + (b.tv_nsec - a.tv_nsec)) / N,
         (double)(t1 - t0) / N);
}
