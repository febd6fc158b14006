# gdb script: dynamic instruction count of one malloc(size)/free pair on
# the hit path, by single-stepping pair_count (docs/PERFORMANCE.md).
# callgrind cannot run sigmalloc (valgrind's address-space manager refuses
# its multi-TiB PROT_NONE reservation), so this counts the same thing for
# every allocator the same way: instructions executed outside main() from
# one `call malloc@plt` to the next, PLT stubs included, after WARMUP
# iterations; prints the per-iteration counts of ITERS iterations.
# Usage: gdb -batch -x benches/stepcount.py --args build/benches/pair_count 2000 64
#        (LD_PRELOAD set in the environment gdb passes on: `set env` below)
import os
import gdb

WARMUP = int(os.environ.get("STEPCOUNT_WARMUP", "1000"))
ITERS = int(os.environ.get("STEPCOUNT_ITERS", "8"))

gdb.execute("set pagination off")
gdb.execute("set confirm off")
pre = os.environ.get("STEPCOUNT_PRELOAD")
if pre:
    gdb.execute("set exec-wrapper env LD_PRELOAD=" + pre)
gdb.execute("break main")
gdb.execute("run", to_string=True)
# main's address range and its call to malloc, from its disassembly (the
# release build has no debug info, so no gdb.Block).
lines = gdb.execute("disassemble main", to_string=True).splitlines()
addrs = []
call = None
for line in lines:
    parts = line.replace("=>", " ").split()
    if not parts or not parts[0].startswith("0x"):
        continue
    a = int(parts[0], 16)
    addrs.append(a)
    if call is None and "call" in line and "malloc" in line:
        call = a
lo, hi = min(addrs), max(addrs) + 16
if call is None:
    raise gdb.GdbError("no call to malloc in main")
gdb.execute("delete")
gdb.execute("break *%#x" % call)
gdb.execute("ignore 2 %d" % WARMUP)
gdb.execute("continue", to_string=True)
counts = []
for _ in range(ITERS):
    outside = 0
    while True:
        gdb.execute("stepi", to_string=True)
        pc = int(gdb.parse_and_eval("$pc"))
        if pc == call:
            break
        if not (lo <= pc < hi):
            outside += 1
    counts.append(outside)
print("STEPCOUNT", " ".join(str(c) for c in counts))
gdb.execute("kill")
