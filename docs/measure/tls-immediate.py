#!/usr/bin/env python3
"""docs/PERFORMANCE.md, "Session 11 run": what the load of the TLS offset costs.

A shared library reaches its initial-exec TLS through an offset it loads from
the GOT (`mov off(%rip), %reg`, then `%fs:(%reg)`); the same object linked into
an executable gets the offset as an immediate (`mov $tpoff, %reg`, 7 bytes
too). This script swaps one form for the other in a copy of a binary, for
measurement only (x86-64, the `mov` with a 64-bit register and a 32-bit
operand):

  lib MODE: every `mov got(%rip), %reg` that loads the TLS offset used by
    __libc_malloc becomes `mov $OFFSET, %reg`. OFFSET is what the process
    gives the library's TLS block: read it in gdb, e.g. -4096 for
    docs/measure/pair-loop.c under LD_PRELOAD (`p/x $fs_base` and the GOT
    word). A wrong OFFSET corrupts memory: check it for the program you run.
  exe MODE: in a static-core program (`sm_malloc`/`sm_free` linked from
    build/src/libsigmalloc-core.a), the `mov $-4096, %reg` at the head of
    sm_malloc and sm_free become loads from the .rodata word at SYMBOL[+OFF]
    (which must hold -4096), so that the static code pays what the library
    pays; OFF places the word at a chosen page offset, e.g. a page-aligned
    `const long tls_page[512] = { [0x9e0 / 8] = -4096 };` and tls_page+0x9e0.

  python3 docs/measure/tls-immediate.py lib build/preload/libsigmalloc.so /tmp/imm.so -4096
  python3 docs/measure/tls-immediate.py exe /tmp/pair-static /tmp/pair-static-got tls_page+0x9e0

Then time both copies, interleaved, with docs/measure/pair-loop.c.
"""
import os
import re
import subprocess
import sys

MODRM = {0x05: 0, 0x0d: 1, 0x15: 2, 0x1d: 3, 0x35: 6, 0x3d: 7}  # disp32(%rip) -> reg


def sections(path):
    out = subprocess.run(["readelf", "-SW", path], capture_output=True, text=True, check=True)
    secs = []
    for line in out.stdout.splitlines():
        m = re.match(r"\s*\[\s*\d+\]\s+(\S+)\s+\S+\s+([0-9a-f]+)\s+([0-9a-f]+)\s+([0-9a-f]+)", line)
        if m:
            secs.append((m.group(1), int(m.group(2), 16), int(m.group(3), 16), int(m.group(4), 16)))
    return secs


def symbols(path):
    out = subprocess.run(["nm", path], capture_output=True, text=True, check=True).stdout
    return {f[2]: int(f[0], 16) for f in (l.split() for l in out.splitlines()) if len(f) == 3}


def file_offset(secs, vaddr):
    for _, addr, off, size in secs:
        if size and addr <= vaddr < addr + size and off:
            return vaddr - addr + off
    raise SystemExit(f"address {vaddr:#x} is in no section")


def patch_lib(src, offset):
    dis = subprocess.run(["objdump", "-d", "--no-show-raw-insn", src], capture_output=True,
                         text=True, check=True).stdout
    m = re.search(r"<__libc_malloc>:\n(?:.*\n){0,4}?\s+[0-9a-f]+:\s+mov\s+0x[0-9a-f]+\(%rip\),%r\w+"
                  r"\s+# ([0-9a-f]+)", dis)
    if not m:
        raise SystemExit("no GOT load of the TLS offset found in __libc_malloc")
    got = int(m.group(1), 16)
    data = bytearray(open(src, "rb").read())
    _, addr, off, size = next(s for s in sections(src) if s[0] == ".text")
    n = 0
    for i in range(off, off + size - 7):
        if data[i] == 0x48 and data[i + 1] == 0x8b and data[i + 2] in MODRM:
            disp = int.from_bytes(data[i + 3:i + 7], "little", signed=True)
            if addr + (i - off) + 7 + disp == got:
                data[i:i + 7] = bytes([0x48, 0xc7, 0xc0 + MODRM[data[i + 2]]]) + \
                    offset.to_bytes(4, "little", signed=True)
                n += 1
    return data, n


def patch_exe(src, symbol):
    sym = symbols(src)
    secs = sections(src)
    name, _, plus = symbol.partition("+")
    word = sym[name] + (int(plus, 0) if plus else 0)
    data = bytearray(open(src, "rb").read())
    n = 0
    rev = {v: k for k, v in MODRM.items()}
    for fn in ("sm_malloc", "sm_free"):
        start = file_offset(secs, sym[fn])
        for reg in range(8):
            imm = bytes([0x48, 0xc7, 0xc0 + reg]) + (-4096).to_bytes(4, "little", signed=True)
            i = data.find(imm, start, start + 64)
            if i >= 0 and reg in rev:
                disp = word - (sym[fn] + (i - start) + 7)
                data[i:i + 7] = bytes([0x48, 0x8b, rev[reg]]) + disp.to_bytes(4, "little", signed=True)
                n += 1
    return data, n


def main():
    if len(sys.argv) != 5 or sys.argv[1] not in ("lib", "exe"):
        raise SystemExit(__doc__)
    mode, src, dst, arg = sys.argv[1:]
    data, n = patch_lib(src, int(arg, 0)) if mode == "lib" else patch_exe(src, arg)
    with open(dst, "wb") as f:
        f.write(data)
    os.chmod(dst, 0o755)
    print(f"{dst}: {n} instructions patched")


if __name__ == "__main__":
    main()
