"""Allocation-heavy, deterministic workload for the sigmalloc `programs` suite.

Run with PYTHONMALLOC=malloc so that every object allocation goes through
malloc/realloc/free (and hence through the preloaded allocator).  Every line
printed must depend only on the input seeds, never on addresses, timing or
thread scheduling, so that the output under glibc and under sigmalloc can be
compared byte for byte.
"""

import hashlib
import json
import random
import sqlite3
import sys
import threading
import zlib


def digest(obj):
    """A short stable checksum of any str/bytes/repr-able object."""
    if isinstance(obj, str):
        obj = obj.encode()
    elif not isinstance(obj, bytes):
        obj = repr(obj).encode()
    return hashlib.sha256(obj).hexdigest()[:16]


def out(label, *values):
    print(label + ":", *values, flush=True)


def rand_word(rng, lo=3, hi=12):
    return "".join(chr(97 + rng.randrange(26)) for _ in range(rng.randint(lo, hi)))


# ---------------------------------------------------------------------------
# JSON: a large nested structure, dumped and loaded several times
# ---------------------------------------------------------------------------
def build_tree(rng, depth, width):
    if depth == 0:
        choice = rng.randrange(5)
        if choice == 0:
            return rng.randrange(-10**9, 10**9)
        if choice == 1:
            return rand_word(rng)
        if choice == 2:
            return [rng.randrange(1000) for _ in range(rng.randrange(8))]
        if choice == 3:
            return rng.random() < 0.5
        return None
    node = {}
    for i in range(width):
        key = "%s_%d" % (rand_word(rng, 2, 6), i)
        if rng.random() < 0.3:
            node[key] = [build_tree(rng, depth - 1, max(1, width - 2))
                         for _ in range(3)]
        else:
            node[key] = build_tree(rng, depth - 1, width)
    return node


def count_nodes(obj):
    if isinstance(obj, dict):
        return 1 + sum(count_nodes(v) for v in obj.values())
    if isinstance(obj, list):
        return 1 + sum(count_nodes(v) for v in obj)
    return 1


def json_phase():
    rng = random.Random(1234)
    tree = build_tree(rng, 5, 7)
    text = json.dumps(tree, sort_keys=True)
    pretty = json.dumps(tree, sort_keys=True, indent=2)
    for _ in range(3):
        back = json.loads(text)
        assert back == tree
        text = json.dumps(back, sort_keys=True)
    again = json.loads(pretty)
    assert again == tree
    out("json", count_nodes(tree), len(text), len(pretty), digest(text),
        digest(pretty))


# ---------------------------------------------------------------------------
# Big dicts, sets and lists of strings and tuples
# ---------------------------------------------------------------------------
def containers_phase():
    rng = random.Random(42)
    words = [rand_word(rng) for _ in range(80000)]
    freq = {}
    for w in words:
        freq[w] = freq.get(w, 0) + 1
    pairs = {(w, len(w)) for w in words}
    bigrams = {}
    for a, b in zip(words, words[1:]):
        bigrams.setdefault(a[:2], []).append(b[-2:])
    tuples = [(w[::-1], i, i * i % 997) for i, w in enumerate(words)]
    tuples.sort()
    by_len = {}
    for w in freq:
        by_len.setdefault(len(w), set()).add(w)
    # Churn: delete half of the keys and re-insert transformed ones.
    for i, w in enumerate(sorted(freq)):
        if i % 2:
            del freq[w]
    for w in words[:30000]:
        freq[w.upper()] = freq.get(w.upper(), 0) + len(w)
    summary = sorted((k, len(v)) for k, v in by_len.items())
    out("containers", len(words), len(freq), len(pairs), len(bigrams),
        digest(tuples[:1000] + tuples[-1000:]), digest(summary),
        digest(sorted(freq.items())))


# ---------------------------------------------------------------------------
# String building
# ---------------------------------------------------------------------------
def strings_phase():
    rng = random.Random(7)
    parts = []
    s = ""
    for i in range(60000):
        w = rand_word(rng, 1, 20)
        parts.append(w)
        if i % 7 == 0:
            s += w  # quadratic-ish realloc growth
        if len(s) > 200000:
            s = s[len(s) // 2:]
    joined = "-".join(parts)
    pieces = joined.split("-")
    assert pieces == parts
    fmt = "".join("%05d:%s;" % (i, p) for i, p in enumerate(parts[:20000]))
    upper = joined.upper().replace("A", "<a>").replace("E", "")
    ba = bytearray()
    for p in parts:
        ba += p.encode()
        if len(ba) > 100000:
            del ba[:50000]
    comp = zlib.compress(joined.encode() * 4, 6)
    assert zlib.decompress(comp) == joined.encode() * 4
    out("strings", len(s), len(joined), len(fmt), len(upper), len(ba),
        len(comp), digest(s), digest(fmt), digest(upper), digest(bytes(ba)))


# ---------------------------------------------------------------------------
# In-memory sqlite3
# ---------------------------------------------------------------------------
def sqlite_phase():
    rng = random.Random(99)
    db = sqlite3.connect(":memory:")
    cur = db.cursor()
    cur.execute("CREATE TABLE person (id INTEGER PRIMARY KEY, name TEXT, "
                "city INTEGER, age INTEGER, score REAL, note TEXT)")
    cur.execute("CREATE TABLE city (id INTEGER PRIMARY KEY, name TEXT, "
                "region TEXT)")
    cities = [(i, rand_word(rng, 4, 10).capitalize(), "R%d" % (i % 7))
              for i in range(500)]
    rows = [(i, rand_word(rng, 3, 9), rng.randrange(500), rng.randrange(18, 90),
             rng.randrange(100000) / 100.0, rand_word(rng, 0, 40))
            for i in range(100000)]
    cur.execute("BEGIN")
    cur.executemany("INSERT INTO city VALUES (?, ?, ?)", cities)
    cur.executemany("INSERT INTO person VALUES (?, ?, ?, ?, ?, ?)", rows)
    cur.execute("COMMIT")
    cur.execute("CREATE INDEX person_city ON person(city)")
    cur.execute("CREATE INDEX person_name ON person(name, age)")
    cur.execute("CREATE INDEX city_region ON city(region)")
    results = []
    results.append(cur.execute(
        "SELECT count(*), sum(age), round(avg(score), 4), min(name), max(name) "
        "FROM person").fetchall())
    results.append(cur.execute(
        "SELECT c.region, count(*), round(sum(p.score), 2), max(p.age) "
        "FROM person p JOIN city c ON p.city = c.id "
        "GROUP BY c.region ORDER BY c.region").fetchall())
    results.append(cur.execute(
        "SELECT c.name, count(*) AS n FROM person p JOIN city c ON p.city = c.id "
        "WHERE p.age BETWEEN 30 AND 40 GROUP BY c.id "
        "ORDER BY n DESC, c.name LIMIT 20").fetchall())
    results.append(cur.execute(
        "SELECT name, count(*) FROM person GROUP BY name HAVING count(*) > 2 "
        "ORDER BY count(*) DESC, name LIMIT 50").fetchall())
    results.append(cur.execute(
        "SELECT group_concat(name, ','), length(group_concat(note, '|')) "
        "FROM (SELECT name, note FROM person WHERE city = 17 ORDER BY id)"
    ).fetchall())
    cur.execute("UPDATE person SET note = note || name WHERE age % 3 = 0")
    cur.execute("DELETE FROM person WHERE score < 100")
    results.append(cur.execute(
        "SELECT count(*), sum(length(note)) FROM person").fetchall())
    results.append(cur.execute(
        "SELECT a.id, b.id FROM person a JOIN person b "
        "ON a.name = b.name AND a.age = b.age AND a.id < b.id "
        "ORDER BY a.id, b.id LIMIT 100").fetchall())
    dump = "\n".join(db.iterdump())
    db.close()
    out("sqlite", len(rows), digest(results), len(dump), digest(dump))
    for r in results[:2]:
        out("sqlite-row", r)


# ---------------------------------------------------------------------------
# Sorting
# ---------------------------------------------------------------------------
def sorting_phase():
    rng = random.Random(2024)
    nums = [rng.randrange(10**12) for _ in range(100000)]
    strs = [str(n) for n in nums]
    recs = [(n % 1000, s[::-1], -n) for n, s in zip(nums, strs)]
    a = sorted(nums)
    b = sorted(strs)
    c = sorted(recs)
    d = sorted(strs, key=lambda x: (len(x), x[::-1]))
    e = sorted(recs, key=lambda r: (r[1], r[0]), reverse=True)
    out("sorting", digest(a), digest(b), digest(c[:5000]), digest(d[:5000]),
        digest(e[:5000]))


# ---------------------------------------------------------------------------
# Threads doing allocation work; results collected by index, so the output
# does not depend on scheduling.
# ---------------------------------------------------------------------------
def thread_work(index, results):
    rng = random.Random(1000 + index)
    table = {}
    total = 0
    for round_ in range(15):
        chunk = [(rand_word(rng, 2, 10), rng.randrange(1 << 30))
                 for _ in range(3000)]
        for k, v in chunk:
            table[k] = table.get(k, 0) ^ v
        blob = json.dumps(chunk)
        total += len(json.loads(blob))
        if round_ % 5 == 4:
            # Drop most of the table so memory is freed and reused.
            for k in list(table)[: len(table) * 3 // 4]:
                del table[k]
    results[index] = (total, len(table), digest(sorted(table.items())))


def threads_phase():
    n = 4
    results = [None] * n
    threads = [threading.Thread(target=thread_work, args=(i, results))
               for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for i, r in enumerate(results):
        out("thread-%d" % i, *r)


def main():
    out("python", "%d.%d" % sys.version_info[:2], "sqlite", sqlite3.sqlite_version)
    json_phase()
    containers_phase()
    strings_phase()
    sqlite_phase()
    sorting_phase()
    threads_phase()
    out("done", "ok")


if __name__ == "__main__":
    main()
