#!/usr/bin/env bash
# run-program.sh NAME LIBPATH
#
# The `programs` suite: runs a real program's workload twice, once on the
# system (glibc) malloc and once with LD_PRELOAD=LIBPATH, each in a fresh
# temporary directory, and compares the two outputs.
#
#   NAME     python | git | sort | gxx       (single- and multi-threaded)
#            xz | zstd | pigz                 multi-threaded (-T2 / -p 2)
#            make                             make -j2 building a C project
#            perl-signals | bash-traps        programs with their own signal
#                                             handlers (signals.pl, traps.sh)
#   LIBPATH  path of libsigmalloc.so
#
# Exit status: 0 when both runs exit 0 and print the same output, 77 (skip)
# when the program is not installed, 1 otherwise (a unified diff, the exit
# statuses and the tail of stderr are printed).  A "sigmalloc:" message on the
# preloaded run's stderr is a failure too.
#
# Every workload is deterministic: fixed seeds, LC_ALL=C, TZ=UTC, fixed git
# identities and dates, and nothing in the output depends on the temporary
# directory's name.  Files a workload produces are compared through their
# checksums, which the workload prints.

set -u

usage() {
	echo "usage: $0 python|git|sort|gxx|xz|zstd|pigz|make|perl-signals|bash-traps LIBPATH" >&2
	exit 2
}
[ $# -eq 2 ] || usage
name=$1
lib=$2
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)

skip() {
	echo "SKIP: $*"
	exit 77
}
have() {
	command -v "$1" >/dev/null 2>&1
}

case $name in
python | git | sort | gxx | xz | zstd | pigz | make | perl-signals | bash-traps) ;;
*) usage ;;
esac
if [ ! -f "$lib" ]; then
	echo "FAIL: library not found: $lib"
	exit 1
fi
case $lib in /*) ;; *) lib="$(cd "$(dirname "$lib")" && pwd)/$(basename "$lib")" ;; esac

# ---------------------------------------------------------------------------
# Common environment
# ---------------------------------------------------------------------------
export LC_ALL=C LANG=C TZ=UTC
unset LANGUAGE
# SIGMALLOC_VERBOSE prints "sigmalloc: ..." lines by design; the other
# SIGMALLOC_* options are left alone so the suite can run under them.
unset SIGMALLOC_VERBOSE
unset LD_PRELOAD MALLOC_CHECK_ MALLOC_PERTURB_
umask 022

# ---------------------------------------------------------------------------
# Workloads: each runs in a subshell whose current directory is a fresh,
# empty temporary directory, with HOME and TMPDIR inside it.  stdout is the
# compared output; stderr is kept only for the report.
# ---------------------------------------------------------------------------

check_python() {
	have python3 || skip "python3 not installed"
	python3 -c 'import sqlite3, threading, json, zlib, hashlib' >/dev/null 2>&1 ||
		skip "python3 has no sqlite3 module"
	# The interpreter itself, not a wrapper such as a pyenv shim.
	python=$(python3 -c 'import sys; print(sys.executable)') && [ -x "$python" ] ||
		python=python3
}
run_python() {
	export PYTHONMALLOC=malloc PYTHONHASHSEED=0 PYTHONDONTWRITEBYTECODE=1
	export PYTHONNOUSERSITE=1
	unset PYTHONSTARTUP PYTHONPATH PYTHONDEVMODE PYTHONWARNINGS
	cp "$here/alloc_heavy.py" .
	"$python" -B alloc_heavy.py
}

check_git() {
	have git || skip "git not installed"
	have awk || skip "awk not installed"
	have md5sum || skip "md5sum not installed"
}
# One file per line of output: d<k>/f<nnn>.txt with pseudo-random words.
# SEED varies the content; ONLY (if > 0) rewrites only every ONLY-th file.
gen_files() { # seed count only
	awk -v seed="$1" -v count="$2" -v only="$3" '
	function rnd(n) { x = (x * 16807) % 2147483647; return x % n }
	BEGIN {
		split("alpha beta gamma delta epsilon zeta eta theta iota kappa " \
		      "lambda mu nu xi omicron pi rho sigma tau upsilon phi chi psi omega", w, " ")
		x = seed * 7919 + 1
		for (f = 0; f < count; f++) {
			if (only > 0 && f % only != seed % only) continue
			file = sprintf("d%d/f%03d.txt", f % 10, f)
			lines = 20 + rnd(150)
			for (l = 0; l < lines; l++) {
				s = sprintf("%d:", l)
				n = 1 + rnd(12)
				for (i = 0; i < n; i++) s = s " " w[1 + rnd(24)]
				print s > file
			}
			close(file)
		}
	}'
}
run_git() {
	export HOME="$PWD/home"
	mkdir -p "$HOME"
	export GIT_CONFIG_NOSYSTEM=1 GIT_CONFIG_GLOBAL=/dev/null
	export GIT_AUTHOR_NAME="A U Thor" GIT_AUTHOR_EMAIL="author@example.com"
	export GIT_COMMITTER_NAME="C O Mitter" GIT_COMMITTER_EMAIL="committer@example.com"
	export GIT_PAGER=cat PAGER=cat GIT_TERMINAL_PROMPT=0 GIT_EDITOR=true
	unset GIT_DIR GIT_WORK_TREE GIT_INDEX_FILE GIT_OBJECT_DIRECTORY GIT_CONFIG_PARAMETERS
	local t0=1577836800 n=0
	at() { # set both dates to the n-th hour after t0
		n=$((n + 1))
		export GIT_AUTHOR_DATE="$((t0 + n * 3600)) +0000"
		export GIT_COMMITTER_DATE="$GIT_AUTHOR_DATE"
	}
	g() {
		git -c gc.auto=0 -c maintenance.auto=false -c core.autocrlf=false \
			-c commit.gpgsign=false -c tag.gpgsign=false -c color.ui=never \
			-c pack.threads=2 "$@"
	}
	g -c init.defaultBranch=main init -q repo
	cd repo
	mkdir d0 d1 d2 d3 d4 d5 d6 d7 d8 d9
	gen_files 1 400 0
	g add -A
	at; g commit -q -m "initial: 400 files"
	for k in 2 3 4 5 6 7; do
		gen_files "$k" 400 7 # rewrite every 7th file
		rm "d$k/f$(printf %03d $((k * 10 + k)))".txt
		mv "d$((k + 1))/f$(printf %03d $((k * 10 + k + 1)))".txt "d$((k + 1))/moved$k.txt"
		printf 'added in round %d\n' "$k" >"d0/new$k.txt"
		g add -A
		at; g commit -q -m "round $k: modify, remove, rename, add"
		if [ "$k" = 4 ]; then
			g branch topic
		fi
	done
	g checkout -q topic
	for k in 1 2 3; do
		printf 'topic change %d\n' "$k" >>d3/f393.txt
		printf 'topic file %d\n' "$k" >"d9/topic$k.txt"
		g add -A
		at; g commit -q -m "topic $k"
	done
	g checkout -q main
	at; g merge -q --no-ff -m "merge topic" topic
	at; g tag -a v1.0 -m "release 1.0"
	g gc -q --aggressive --prune=now
	g fsck --full --strict --no-progress
	echo "== log"
	g log --format='%H %s'
	echo "== count-objects"
	g count-objects -v
	echo "== tree"
	g rev-parse 'HEAD^{tree}' v1.0 topic
	echo "== status"
	g status --porcelain
	echo "== diff-stat"
	g diff --stat HEAD~6 HEAD | tail -n 3
	echo "== digests"
	g log -p --stat --all | md5sum
	g archive --format=tar v1.0 | md5sum
	g cat-file --batch-check --batch-all-objects | md5sum
	g rev-list --objects --all | md5sum
	g blame -s d3/f393.txt | md5sum
	g grep -c omega HEAD~3 | md5sum
	g ls-files -s | md5sum
	md5sum .git/objects/pack/*.pack | cut -d' ' -f1
}

check_sort() {
	have sort || skip "sort not installed"
	have awk || skip "awk not installed"
	have md5sum || skip "md5sum not installed"
	sort --parallel=2 -S 1M </dev/null >/dev/null 2>&1 || skip "sort is not GNU sort"
}
run_sort() {
	mkdir tmp
	# ~30 MB: "number,word,fixed-point,word" with a Park-Miller LCG (exact in
	# double precision, so the same in every awk).
	awk 'function rnd(n) { x = (x * 16807) % 2147483647; return x % n }
	BEGIN {
		x = 20240601
		for (i = 0; i < 30000; i++) { # a vocabulary of random words
			m = 2 + rnd(10); s = ""
			for (j = 0; j < m; j++) s = s substr("abcdefghijklmnopqrstuvwxyz", 1 + rnd(26), 1)
			w[i] = s
		}
		for (i = 0; i < 700000; i++)
			printf "%d,%s,%d.%03d,%s %s\n", rnd(100000000), w[rnd(30000)], rnd(5000),
				rnd(1000), w[rnd(30000)], w[rnd(30000)]
	}' >input.txt
	wc -lc <input.txt
	md5sum input.txt
	local cmd out i=0
	while IFS= read -r cmd; do
		i=$((i + 1))
		out="out$i.txt"
		eval "sort $cmd" >"$out"
		printf '%-48s %s %s\n' "sort $cmd" "$(wc -l <"$out")" "$(md5sum <"$out" | cut -d' ' -f1)"
	done <<'EOF'
--parallel=2 -S 64M input.txt
--parallel=2 -S 64M -n input.txt
--parallel=2 -S 64M -k2,2 -t, input.txt
--parallel=2 -S 64M -t, -k3,3n -k1,1nr input.txt
--parallel=2 -S 64M -u -t, -k2,2 input.txt
--parallel=2 -S 64M -r -s -t, -k4,4 input.txt
--parallel=2 -S 2M -T tmp --batch-size=4 input.txt
--parallel=2 -S 16M -R --random-source=input.txt <(head -n 100000 input.txt)
EOF
	sort -c out1.txt && echo "sorted: yes"
	sort -m out1.txt out1.txt | md5sum
}

check_gxx() {
	have g++ || skip "g++ not installed"
	have nm || skip "nm not installed"
	have md5sum || skip "md5sum not installed"
}
run_gxx() {
	cp "$here/template_heavy.cpp" .
	g++ -std=c++17 -O2 -g0 -frandom-seed=sigmalloc -c template_heavy.cpp -o template_heavy.o
	echo "compiled: yes"
	g++ template_heavy.o -o template_heavy
	echo "linked: yes"
	nm -C template_heavy.o | md5sum
	md5sum template_heavy.o template_heavy
	./template_heavy
}

# ~SIZE MB of text, deterministic (Park-Miller LCG as above): numbers and
# words from a skewed alphabet, compressible about 2.5:1.
gen_blob() { # megabytes
	awk -v size="$(($1 * 1000000))" '
	function rnd(n) { x = (x * 16807) % 2147483647; return x % n }
	BEGIN {
		x = 42
		for (i = 0; i < 4096; i++) {
			m = 3 + rnd(8); s = ""
			for (j = 0; j < m; j++)
				s = s substr("etaoinshrdlucmfwypvbgkqjxz", 1 + int(rnd(676) ^ 0.5), 1)
			w[i] = s
		}
		n = 0
		while (n < size) {
			l = sprintf("%07d %s %s %s %d.%02d %s\n", rnd(10000000), w[rnd(4096)],
				w[rnd(4096)], w[rnd(64)], rnd(100000), rnd(100), w[rnd(4096)])
			printf "%s", l
			n += length(l)
		}
	}'
}
have_tools() {
	local t
	for t; do
		have "$t" || skip "$t not installed"
	done
}

# xz: multi-threaded compression (2 threads, 2 MiB blocks so that both
# work) and multi-threaded decompression (xz >= 5.4 decodes blocks in
# parallel).
check_xz() {
	have_tools xz awk md5sum
	xz -T2 -1 -c </dev/null >/dev/null 2>&1 || skip "xz has no -T"
}
run_xz() {
	gen_blob 16 >blob.txt
	wc -c <blob.txt
	md5sum blob.txt
	xz -T2 -1 --block-size=2MiB -c blob.txt >blob.xz
	md5sum blob.xz
	echo "blocks: $(xz -lvv --robot blob.xz | awk '$1 == "block"' | wc -l)"
	xz -T2 -t blob.xz && echo "test: ok"
	xz -T2 -dc blob.xz | md5sum
	head -c 4000000 blob.txt | xz -T2 -4 --block-size=1MiB >part.xz
	md5sum part.xz
	xz -T2 -dc part.xz | md5sum
	cat blob.xz part.xz | xz -T2 -dc | md5sum
}

# zstd: multi-threaded compression (-T2) at two levels and with long-range
# matching, decompression, a dictionary trained on the data.
check_zstd() {
	have_tools zstd awk md5sum split
}
run_zstd() {
	gen_blob 50 >blob.txt
	md5sum blob.txt
	local l
	for l in 3 9; do
		zstd -q -T2 -"$l" -c blob.txt >"blob$l.zst"
		echo "level $l: $(md5sum <"blob$l.zst" | cut -d' ' -f1)"
		zstd -q -dc "blob$l.zst" | md5sum
	done
	zstd -q -T2 -3 --long=26 -c blob.txt | zstd -q -d --long=26 | md5sum
	zstd -q -t blob9.zst && echo "test: ok"
	mkdir samples
	head -c 4000000 blob.txt | split -b 4000 - samples/s
	zstd -q --train samples/* -o dict --maxdict=65536
	md5sum dict
	head -c 2000000 blob.txt | zstd -q -T2 -D dict -c | zstd -q -d -D dict | md5sum
}

# pigz: parallel gzip (-p 2) at two levels, zlib format, independent
# blocks; decompression (pigz decompresses with helper threads for reading,
# writing and checking); gzip -d cross-checks.
check_pigz() {
	have_tools pigz gzip awk md5sum
}
run_pigz() {
	gen_blob 50 >blob.txt
	md5sum blob.txt
	pigz -p 2 -n -6 -c blob.txt >blob.gz
	md5sum blob.gz
	pigz -p 2 -dc blob.gz | md5sum
	gzip -dc blob.gz | md5sum
	pigz -p 2 -n -9 -b 256 -c blob.txt >blob9.gz
	md5sum blob9.gz
	pigz -p 2 -t blob9.gz && echo "test: ok"
	pigz -p 2 -z -c blob.txt >blob.zz
	md5sum blob.zz
	pigz -p 2 -dz -c blob.zz | md5sum
	pigz -p 2 -n -i --rsyncable -c blob.txt | pigz -p 2 -dc | md5sum
}

# make -j2: a generated C project (40 sources, a generated header, a static
# library, a program), built, run, checked up to date, rebuilt after a change.
check_make() {
	have_tools make gcc ar awk md5sum
}
gen_project() {
	mkdir -p src
	local i
	for ((i = 0; i < 40; i++)); do
		cat >"src/m$i.c" <<EOF
#include "gen.h"
static unsigned long tab${i}[64];
unsigned long f$i(unsigned long x)
{
	for (int k = 0; k < 64; k++)
		tab${i}[k] = (x ^ (k * 2654435761ul)) * (GEN_SEED + $i);
	unsigned long h = 0;
	for (int k = 0; k < 64; k++)
		h = (h << 5) + h + tab${i}[(k * 7) % 64];
	return h;
}
EOF
	done
	{
		echo '#include <stdio.h>'
		echo '#include "gen.h"'
		for ((i = 0; i < 40; i++)); do echo "unsigned long f$i(unsigned long);"; done
		echo 'int main(void)'
		echo '{'
		echo '	unsigned long x = 1;'
		for ((i = 0; i < 40; i++)); do echo "	x = f$i(x);"; done
		# shellcheck disable=SC2028 # a C string's \n, written as is
		echo '	printf("%lu\n", x);'
		echo '	return 0;'
		echo '}'
	} >src/main.c
	cat >Makefile <<'EOF'
SRCS := $(sort $(wildcard src/m*.c))
OBJS := $(SRCS:src/%.c=obj/%.o)
CFLAGS := -O2 -g0 -Iobj -frandom-seed=sigmalloc

all: bin/prog

obj/gen.h: seed.txt | obj
	printf '#define GEN_SEED %sul\n' "$$(cat seed.txt)" >$@

obj bin:
	mkdir -p $@

obj/%.o: src/%.c obj/gen.h | obj
	$(CC) $(CFLAGS) -c $< -o $@

obj/libm.a: $(OBJS)
	$(AR) rcD $@ $^

bin/prog: obj/main.o obj/libm.a | bin
	$(CC) $^ -o $@

.PHONY: all
EOF
	echo 17 >seed.txt
}
run_make() {
	gen_project
	make -j2 -s CC=gcc AR=ar
	echo "built: $(find obj bin -type f | wc -l) files"
	bin/prog
	md5sum obj/*.o obj/libm.a | md5sum
	make -j2 -q CC=gcc AR=ar && echo "up to date: yes"
	echo 23 >seed.txt
	make -j2 -s CC=gcc AR=ar
	bin/prog
	md5sum obj/*.o obj/libm.a | md5sum
}

# perl with its own SIGALRM (ualarm), SIGCHLD and SIGUSR1 handlers doing
# work while the program builds hashes and forks children: signals.pl.
check_perl-signals() {
	have_tools perl
	perl -MTime::HiRes -MDigest::MD5 -MPOSIX -e 1 2>/dev/null ||
		skip "perl lacks Time::HiRes, Digest::MD5 or POSIX"
}
run_perl-signals() {
	perl "$here/signals.pl"
}

# bash with CHLD, USR1 and ALRM traps while it spawns 200 subprocesses and
# fills associative arrays: traps.sh.
check_bash-traps() {
	have_tools bash mkfifo md5sum sort
}
run_bash-traps() {
	bash "$here/traps.sh"
}

"check_$name"

# ---------------------------------------------------------------------------
# The two runs
# ---------------------------------------------------------------------------
res=
plain_dir=
preload_dir=
cleanup() {
	rm -rf -- ${res:+"$res"} ${plain_dir:+"$plain_dir"} ${preload_dir:+"$preload_dir"}
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
res=$(mktemp -d "${TMPDIR:-/tmp}/sm-programs-$name-res.XXXXXX") || exit 1
plain_dir=$(mktemp -d "${TMPDIR:-/tmp}/sm-programs-$name-plain.XXXXXX") || exit 1
preload_dir=$(mktemp -d "${TMPDIR:-/tmp}/sm-programs-$name-preload.XXXXXX") || exit 1

# A private copy of the library: a rebuild during the runs (ninja in another
# shell) must not change what the preloaded run loads.
built_lib=$lib
cp "$lib" "$res/$(basename "$lib")" || exit 1
lib="$res/$(basename "$lib")"

now() { date +%s.%N; }

run() { # mode dir
	local mode=$1 dir=$2 t0 t1
	t0=$(now)
	(
		cd "$dir" || exit 1
		mkdir -p .tmp
		export TMPDIR="$dir/.tmp"
		if [ "$mode" = preload ]; then
			export LD_PRELOAD="$lib"
		fi
		set -e -o pipefail
		"run_$name"
	) >"$res/$mode.out" 2>"$res/$mode.err"
	echo $? >"$res/$mode.rc"
	t1=$(now)
	awk -v m="$mode" -v rc="$(cat "$res/$mode.rc")" -v t0="$t0" -v t1="$t1" \
		'BEGIN { printf "%s: exit %s, %.1f s\n", m, rc, t1 - t0 }'
}

# The library must really be loaded: ld.so only warns when it cannot be.
# shellcheck disable=SC2002 # the maps of cat itself, run preloaded
if ! LD_PRELOAD="$lib" cat /proc/self/maps 2>"$res/check.err" | grep -qF "$lib"; then
	echo "FAIL: $lib is not loaded by LD_PRELOAD"
	cat "$res/check.err"
	exit 1
fi

echo "== $name: plain (glibc malloc)"
run plain "$plain_dir"
echo "== $name: LD_PRELOAD=$built_lib (a copy)"
run preload "$preload_dir"

rc_plain=$(cat "$res/plain.rc")
rc_preload=$(cat "$res/preload.rc")
status=0

if [ "$rc_plain" != 0 ] || [ "$rc_preload" != 0 ] || [ "$rc_plain" != "$rc_preload" ]; then
	echo "FAIL: exit status plain=$rc_plain preload=$rc_preload"
	status=1
fi
if ! diff -u --label "plain (glibc)" --label "preload (sigmalloc)" \
	"$res/plain.out" "$res/preload.out" >"$res/diff"; then
	echo "FAIL: outputs differ"
	head -n 200 "$res/diff"
	status=1
fi
if grep -q 'sigmalloc:' "$res/preload.err"; then
	echo "FAIL: sigmalloc reported an error:"
	grep 'sigmalloc:' "$res/preload.err" | head -n 20
	status=1
fi
if grep -q 'cannot be preloaded' "$res/preload.err"; then
	echo "FAIL: the library was not preloaded in every process:"
	grep 'cannot be preloaded' "$res/preload.err" | head -n 5
	status=1
fi

if [ "$status" != 0 ]; then
	for mode in plain preload; do
		if [ "$(cat "$res/$mode.rc")" != 0 ] && [ -s "$res/$mode.out" ]; then
			echo "-- stdout of the $mode run (last 10 lines):"
			tail -n 10 "$res/$mode.out"
		fi
		if [ -s "$res/$mode.err" ]; then
			echo "-- stderr of the $mode run (last 30 lines):"
			tail -n 30 "$res/$mode.err"
		fi
	done
	exit 1
fi
echo "-- output ($(wc -l <"$res/plain.out") lines, identical):"
head -n 40 "$res/plain.out"
echo "PASS: $name"
exit 0
