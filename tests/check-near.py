#!/usr/bin/env python3
"""preload/near.c's invariant: the code and data of section sm_near_text
reach nothing outside it (every RIP-relative operand and every direct jump
or call lands inside, no absolute address), so that a byte copy of the
section runs anywhere; indirect jumps go through its own data words.
Also that the section holds both functions and no relocation applies to it.

  check-near.py build/preload/libsigmalloc.so [STAMP]

It runs as a build step of the library (preload/meson.build writes STAMP on
success, so a build with tests off checks it too) and as the test
near-relocatable.
"""
import re
import subprocess
import sys

lib = sys.argv[1]
out = subprocess.run(["objdump", "-d", "-w", "-j", "sm_near_text", lib],
                     capture_output=True, text=True, check=True).stdout
sec = subprocess.run(["readelf", "-SW", lib], capture_output=True, text=True, check=True).stdout
m = re.search(r"\]\s+sm_near_text\s+\S+\s+([0-9a-f]+)\s+[0-9a-f]+\s+([0-9a-f]+)", sec)
if not m:
    sys.exit("FAIL: no section sm_near_text in " + lib)
lo = int(m.group(1), 16)
hi = lo + int(m.group(2), 16)
bad = []
for line in out.splitlines():
    ins = re.match(r"\s*([0-9a-f]+):\s+(?:[0-9a-f]{2} )+\s*(.*)$", line)
    if not ins:
        continue
    text = ins.group(2)
    targets = []
    if "(%rip)" in text:
        c = re.search(r"#\s*([0-9a-f]+)", text)
        if not c:
            bad.append(line)
            continue
        targets.append(int(c.group(1), 16))
    j = re.match(r"(j[a-z]+|call)\s+([0-9a-f]+)\b", text)
    if j:
        targets.append(int(j.group(2), 16))
    if re.match(r"movabs", text):
        bad.append(line)  # an absolute address: valid only where the section was linked
    for t in targets:
        if not lo <= t < hi:
            bad.append(line)
for name in ("sm_near_malloc", "sm_near_free"):
    if "<%s>:" % name not in out:
        bad.append("missing " + name)
rel = subprocess.run(["readelf", "-rW", lib], capture_output=True, text=True, check=True).stdout
for line in rel.splitlines():
    f = line.split()
    if len(f) > 2 and re.fullmatch(r"[0-9a-f]{16}", f[0]) and lo <= int(f[0], 16) < hi:
        bad.append("relocation: " + line)
if bad:
    print("FAIL: sm_near_text reaches outside [%#x, %#x):" % (lo, hi))
    print("\n".join(bad))
    sys.exit(1)
print("sm_near_text [%#x, %#x): every reference stays inside" % (lo, hi))
if len(sys.argv) > 2:
    with open(sys.argv[2], "w") as stamp:
        stamp.write("ok\n")
