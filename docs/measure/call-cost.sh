#!/bin/bash
# docs/PERFORMANCE.md, "What the preload costs": ns per malloc(64)-free pair
# of the same hit paths reached by each kind of call (call-cost.c), ROUNDS
# interleaved launches pinned to CPU 1, median and range. Run from the
# repository root after `ninja -C build`:
#   bash docs/measure/call-cost.sh 15
set -eu
rounds=${1:-15}
m=docs/measure
core=build/src/libsigmalloc-core.a
lib=build/preload/libsigmalloc.so
d=$(mktemp -d)
trap 'rm -rf "$d"' EXIT
cc() { gcc -O2 -Iinclude -I$m "$@"; }
whole() { echo -Wl,--whole-archive $core -Wl,--no-whole-archive -ljemalloc -lpthread; }
# the core linked into the program
cc -DCALL=0 -o $d/direct $m/call-cost.c $(whole)
cc -DCALL=1 -o $d/stub-eager $m/call-cost.c $(whole)
cc -DCALL=2 -o $d/stub-lazy $m/call-cost.c $(whole)
# the core in a shared object of its own, far from the program's code
gcc -O2 -fPIC -shared -Wl,-Bsymbolic -o $d/libcore.so $(whole)
cc -DCALL=1 -o $d/far-stub-eager $m/call-cost.c -L$d -lcore -Wl,-rpath,$d
cc -DCALL=2 -o $d/far-stub-lazy $m/call-cost.c -L$d -lcore -Wl,-rpath,$d
# the loop and the core in one shared object: PLT calls, or direct ones
echo 'double run_loop(unsigned long, long); int printf(const char *, ...);
int main(void) { printf("%.2f\n", run_loop(64, 5000000)); return 0; }' > $d/main.c
cc -fPIC -shared -DLOOP_IN_LIB -o $d/libloop-plt.so $m/call-cost.c $(whole)
cc -fPIC -shared -DLOOP_IN_LIB -Wl,-Bsymbolic -o $d/libloop-sym.so $m/call-cost.c $(whole)
mkdir -p $d/plt $d/sym
cp $d/libloop-plt.so $d/plt/libloop.so
cp $d/libloop-sym.so $d/sym/libloop.so
gcc -O2 -o $d/so-plt $d/main.c -L$d/plt -lloop -Wl,-rpath,$d/plt
gcc -O2 -o $d/so-sym $d/main.c -L$d/sym -lloop -Wl,-rpath,$d/sym
# the real thing: docs/measure/pair-loop.c under LD_PRELOAD
gcc -O2 -I$m -o $d/pair-loop $m/pair-loop.c
variants=(
	"direct|$d/direct"
	"stub, one target|$d/stub-eager"
	"stub, two targets (lazy)|$d/stub-lazy"
	"far stub, one target|$d/far-stub-eager"
	"far stub, two targets (lazy)|$d/far-stub-lazy"
	"in a .so, direct (-Bsymbolic)|$d/so-sym"
	"in a .so, PLT (lazy)|$d/so-plt"
	"in a .so, PLT, LD_BIND_NOW=1|env LD_BIND_NOW=1 $d/so-plt"
	"preload, PLT (lazy)|env LD_PRELOAD=$PWD/$lib $d/pair-loop 64 5000000"
	"preload, PLT, LD_BIND_NOW=1|env LD_BIND_NOW=1 LD_PRELOAD=$PWD/$lib $d/pair-loop 64 5000000"
)
declare -A res
for _ in $(seq "$rounds"); do
	for v in "${variants[@]}"; do
		res[${v%%|*}]+="$(taskset -c 1 ${v#*|}) "
	done
done
for v in "${variants[@]}"; do
	n=${v%%|*}
	echo ${res[$n]} | tr ' ' '\n' | sort -n |
		awk -v n="$n" '{a[NR]=$1} END{printf "%-32s median %.2f  (%.2f-%.2f)\n", n, a[int((NR+1)/2)], a[1], a[NR]}'
done
