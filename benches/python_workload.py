"""Allocation-heavy Python workload for benches/compare (issue 5).

Run with PYTHONMALLOC=malloc so that every object allocation goes through
the C library's malloc/realloc/free, hence through the preloaded allocator.
Deterministic (fixed seeds); prints one checksum line. About 2 s on the 2-core machine of docs/PERFORMANCE.md.
"""
import json
import random
import sys


def words(rng, n):
    return ["".join(chr(97 + rng.randrange(26)) for _ in range(rng.randint(3, 12)))
            for _ in range(n)]


def tree(rng, depth):
    if depth == 0:
        return rng.choice([rng.random(), rng.randrange(10**6), "leaf%d" % rng.randrange(999), None])
    return {"k%d" % i: tree(rng, depth - 1) for i in range(rng.randint(2, 5))}


class Node:
    __slots__ = ("key", "left", "right")

    def __init__(self, key):
        self.key, self.left, self.right = key, None, None


def bst(keys):
    root = None
    for k in keys:
        if root is None:
            root = Node(k)
            continue
        n = root
        while True:
            if k < n.key:
                if n.left is None:
                    n.left = Node(k)
                    break
                n = n.left
            else:
                if n.right is None:
                    n.right = Node(k)
                    break
                n = n.right
    return root


def depth_sum(n, d=0):
    return 0 if n is None else d + depth_sum(n.left, d + 1) + depth_sum(n.right, d + 1)


def main():
    rng = random.Random(1234)
    check = 0
    # Strings and dicts: word counts, rebuilt repeatedly.
    vocab = words(rng, 5000)
    for r in range(10):
        text = " ".join(rng.choice(vocab) for _ in range(60000))
        counts = {}
        for w in text.split():
            counts[w] = counts.get(w, 0) + 1
        check ^= hash(tuple(sorted(counts.items())[:50])) & 0xffff
    # JSON round trips of nested dicts.
    for r in range(4):
        t = tree(rng, 7)
        s = json.dumps(t, sort_keys=True)
        check ^= len(json.loads(s)) + len(s)
    # Many small objects: tuples, lists, a binary search tree.
    for r in range(5):
        keys = [rng.random() for _ in range(60000)]
        check ^= depth_sum(bst(keys)) & 0xffff
        pairs = sorted((k, str(k)[:6], [k]) for k in keys)
        check ^= len(pairs)
    # List growth and shrink (realloc).
    big = []
    for i in range(400000):
        big.append((i, "x" * (i % 40)))
        if i % 3 == 0:
            big.pop()
    check ^= len(big)
    print("checksum", check)


if __name__ == "__main__":
    sys.exit(main())
