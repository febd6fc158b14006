#!/usr/bin/env python3
"""Writes the seed corpus of fuzz-api (tests/fuzz/corpus/).

Each seed exercises one family of operations in the encoding that
fuzz-api.c decodes (enum op, gen_size, gen_align; see its top comment).
Run again after changing that encoding:  python3 tests/fuzz/gen-corpus.py
"""
import os
import random

(MALLOC, CALLOC, REALLOC, REALLOCARRAY, POSIX_MEMALIGN, ALIGNED_ALLOC, MEMALIGN,
 VALLOC, FREE, FREE_SIZED, USABLE, GIVE, TAKE, RAISE, NEST, KICK, BURST, TRIM,
 YIELD, BAD) = range(20)

FLAG_TWO = 1
FLAG_TIMER = 2


def flags(two=False, timer=False, period=0, split=3):
    return bytes([(FLAG_TWO if two else 0) | (FLAG_TIMER if timer else 0)
                  | (period & 7) << 2 | (split & 7) << 5])


def cls(idx, delta=0):
    """A class size (index 0..27), plus delta in -2..2."""
    return bytes([((delta + 2) << 3) | 0, idx])


def tiny(n):
    return bytes([(n & 31) << 3 | 3])


def small(n):
    return bytes([4, n & 0xff, n >> 8])


def big(n):
    return bytes([5, n & 0xff, (n >> 8) & 0xff, n >> 16])


def edge(k):
    """4080 + k, k in 0..31: around the top class."""
    return bytes([(k & 31) << 3 | 6])


def pow2(k, d=1):
    return bytes([(k & 31) << 3 | 7, d])


def align(k):
    """8 << k, k in 0..10."""
    return bytes([k])


def malloc(slot, size, how=0):
    return bytes([MALLOC, slot, *size, how])


def calloc(slot, size, n, how=0):
    return bytes([CALLOC, slot, *size, how, n])


def aligned(op, slot, size, k, how=0):
    return bytes([op, slot, *size, how, *align(k)])


def realloc(slot, size, m=0):
    return bytes([REALLOC, slot, *size, m])


def reallocarray(slot, size, m):
    return bytes([REALLOCARRAY, slot, *size, m])


def free(slot):
    return bytes([FREE, slot])


def free_sized(slot, how):
    return bytes([FREE_SIZED, slot, how])


def usable(slot):
    return bytes([USABLE, slot])


def nest(*ops):
    return bytes([NEST, len(ops) - 1]) + b"".join(ops)


def raise_(script):
    return bytes([RAISE, len(script)]) + bytes(script)


def burst(m, size, n):
    return bytes([BURST, m, *size, n - 1])


seeds = {}

# 1. every class, allocated then freed in reverse
s = flags()
for i in range(28):
    s += malloc(i, cls(i))
for i in range(28):
    s += usable(i)
for i in reversed(range(28)):
    s += free(i)
seeds["classes"] = s

# 2. both sides of every boundary, the top-class edge, large sizes
s = flags()
for i in range(0, 28, 3):
    s += malloc(i, cls(i, -1)) + malloc(i + 1, cls(i, 1)) + usable(i)
for k in (0, 15, 16, 17, 31):
    s += malloc(40 + k % 8, edge(k))
for n in (4097, 8192, 16385, 65536, 70000):
    s += malloc(50, big(n)) + usable(50)
s += malloc(51, tiny(0)) + malloc(52, tiny(1)) + malloc(53, tiny(17))
seeds["boundaries"] = s

# 3. calloc, then realloc up through the classes into large and back down
s = flags()
s += calloc(0, small(100), 4) + calloc(1, big(20000), 8) + calloc(2, tiny(0), 1)
for size in (cls(3), cls(10), cls(20), cls(27), big(5000), big(60000), cls(5), tiny(0)):
    s += realloc(0, size)
s += realloc(7, cls(4)) + realloc(7, edge(20)) + realloc(7, tiny(0))
seeds["calloc-realloc"] = s

# 4. the aligned family, every alignment 8 .. 8192
s = flags()
for k in range(11):
    s += aligned(POSIX_MEMALIGN, k, small(100 + 37 * k), k)
    s += aligned(ALIGNED_ALLOC, 11 + k, cls(k * 2), k, how=2)
    s += aligned(MEMALIGN, 22 + k, pow2(k + 3, k % 3), k)
s += bytes([VALLOC, 40, *small(10), 0, 1]) + bytes([VALLOC, 41, *big(9000), 0, 0])
for k in range(42):
    s += free_sized(k, k)
seeds["aligned"] = s

# 5. two threads trading blocks
a = b""
for i in range(16):
    a += malloc(i, cls(i)) + bytes([GIVE, i, i])
bb = b""
for i in range(16):
    bb += bytes([TAKE, i, i]) + malloc(20 + i, small(200 * i + 1)) + bytes([GIVE, 20 + i, i + 3])
s = flags(two=True, split=3) + a + bb
seeds["two-threads"] = s

# 6. nested windows: malloc, free, realloc, aligned, large (ENOMEM)
s = flags()
for i in range(28):
    s += malloc(i, cls(i)) + free(i)
s += malloc(30, big(30000)) + malloc(31, cls(12))
s += nest(malloc(0, cls(2)), free(0), malloc(1, cls(7)), realloc(1, cls(9)),
          aligned(POSIX_MEMALIGN, 2, small(200), 3), malloc(3, big(10000)),
          usable(30), free(30))
s += nest(realloc(31, cls(20)), calloc(4, cls(1), 2), nest(malloc(5, tiny(8)), free(31)))
s += malloc(6, cls(7)) + free(6) + nest(malloc(7, cls(7)), bytes([TRIM]))
seeds["nested"] = s

# 7. signal handlers: raise at depth 0 and inside a nested window
s = flags()
for i in range(10):
    s += malloc(i, cls(i * 2))
s += raise_([0x03, 0x00, 0x01, 0x02, 0x13, 0x05, 0x02, 0x23, 0x06, 0x01, 0x04])
s += nest(raise_([0x02, 0x01, 0x07, 0x00, 0x11, 0x03, 0x01]), free(3))
s += raise_([0x03, 0x81, 0x00, 0x82, 0x00, 0x03, 0x05])
s += nest(raise_([0x01, 0xe0, 0xe0, 0x10]))
seeds["signals"] = s

# 8. bursts across the watermarks
s = flags()
for i, n in ((0, 200), (5, 120), (11, 97), (16, 40), (23, 12), (27, 8)):
    s += burst(1 | (i % 3) << 1, bytes([i]), n)
s += burst(0, big(9000), 20) + burst(4, tiny(3), 256)
s += nest(burst(1, bytes([3]), 64))
seeds["bursts"] = s

# 9. requests that must fail with the documented errno
s = flags()
for m in range(0, 64, 3):
    s += bytes([BAD, m])
s += reallocarray(0, cls(3), 0x80) + malloc(0, cls(3)) + reallocarray(0, cls(3), 0x81)
seeds["errors"] = s

# 10. two threads, interval timer, kicks, yields, random ops
rng = random.Random(4)
a = b"".join(malloc(i, cls(rng.randrange(28))) for i in range(20))
a += bytes([KICK, YIELD, KICK]) + b"".join(free(i) for i in range(0, 20, 2))
bb = b"".join(calloc(i, small(rng.randrange(4096)), 3) for i in range(20))
bb += bytes([KICK, YIELD, KICK]) + b"".join(realloc(i, cls(rng.randrange(28))) for i in range(20))
seeds["timer-kick"] = flags(two=True, timer=True, period=2, split=3) + a + bb

# 11. reallocarray, free_sized, free_aligned_sized
s = flags()
for i in range(8):
    s += reallocarray(i, small(64 * i + 3), i) + reallocarray(i, big(5000 + 999 * i), i)
    s += free_sized(i, 1)
for k in range(6):
    s += aligned(ALIGNED_ALLOC, 10 + k, big(4096 * k + 1), k + 3) + free_sized(10 + k, 2)
seeds["sized-frees"] = s

# 12. valloc/pvalloc, trim, and a random mix on two threads
s = flags(two=True, timer=True, period=4, split=4)
s += bytes([VALLOC, 0, *tiny(0), 0, 0, VALLOC, 1, *small(5000), 0, 1, TRIM, YIELD])
s += bytes(rng.randrange(256) for _ in range(600))
seeds["mix"] = s

here = os.path.dirname(os.path.abspath(__file__))
out = os.path.join(here, "corpus")
os.makedirs(out, exist_ok=True)
for name, data in seeds.items():
    with open(os.path.join(out, "seed-" + name), "wb") as f:
        f.write(data)
print(f"{len(seeds)} seeds in {out}")
