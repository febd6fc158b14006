#!/bin/bash
# docs/PERFORMANCE.md, "Pairs across launches": the sorted per-launch ns per
# malloc(64)-free pair of each library, LAUNCHES launches each, interleaved.
#   bash docs/measure/pair-launches.sh 11 build/preload/libsigmalloc.so \
#        /usr/lib/x86_64-linux-gnu/libtcmalloc_minimal.so.4
set -eu
launches=$1
shift
bin=$(mktemp)
gcc -O2 -o "$bin" "$(dirname "$0")/pair-loop.c"
declare -A res
for _ in $(seq "$launches"); do
	for lib in "$@"; do
		res[$lib]+="$(LD_PRELOAD=$lib "$bin" 64) "
	done
done
for lib in "$@"; do
	sorted=$(echo ${res[$lib]} | tr ' ' '\n' | sort -n | tr '\n' ' ')
	median=$(echo ${res[$lib]} | tr ' ' '\n' | sort -n | awk '{a[NR]=$1} END{print a[int((NR+1)/2)]}')
	echo "$(basename "$lib"): median $median ns; all: $sorted"
done
rm -f "$bin"
