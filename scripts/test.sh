#!/bin/bash
# The whole test suite: what CI runs (.ci/run).
#   1. release build: suites unit, preload, lifecycle, signal, stress, programs, cpython
#   2. clang AddressSanitizer + UBSan build of the core: suites unit, fuzz
#   3. clang ThreadSanitizer build of the core: suites unit, lifecycle
# Prints each build's meson test summary and a final "N passed, N failed".
set -uo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh || exit 1

status=0
pass=0
fail=0
run_suites() { # build-dir suites...
	local dir=$1
	shift
	local args=()
	for s in "$@"; do args+=(--suite "$s"); done
	meson test -C "$dir" --print-errorlogs "${args[@]}" 2>&1 | tee "$dir/test-summary.txt" |
		grep -vE '^(==|\s*$)'
	local rc=${PIPESTATUS[0]}
	local ok fl
	ok=$(awk '/^Ok:/{print $2}' "$dir/test-summary.txt")
	fl=$(awk '/^Fail:/{print $2}' "$dir/test-summary.txt")
	pass=$((pass + ${ok:-0}))
	fail=$((fail + ${fl:-0}))
	[ "$rc" -eq 0 ] || status=1
}

echo "== release build: unit, preload, lifecycle, signal, stress, programs, cpython"
run_suites build unit preload lifecycle signal stress programs cpython

echo "== AddressSanitizer + UndefinedBehaviorSanitizer (clang): unit, fuzz"
if [ ! -f build-asan/build.ninja ]; then
	CC=clang CXX=clang++ meson setup build-asan -Dbuildtype=debugoptimized \
		-Db_sanitize=address,undefined -Db_lundef=false -Dbenches=disabled >/dev/null || exit 1
fi
ninja -C build-asan >/dev/null || exit 1
UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1 run_suites build-asan unit fuzz

echo "== ThreadSanitizer (clang): unit, lifecycle (the refill thread and cross-thread frees)"
if [ ! -f build-tsan/build.ninja ]; then
	CC=clang CXX=clang++ meson setup build-tsan -Dbuildtype=debugoptimized \
		-Db_sanitize=thread -Db_lundef=false -Dbenches=disabled >/dev/null || exit 1
fi
ninja -C build-tsan >/dev/null || exit 1
# tests/tsan.supp says why each suppression is there.
TSAN_OPTIONS="suppressions=$PWD/tests/tsan.supp:detect_deadlocks=0:halt_on_error=1" \
	run_suites build-tsan unit lifecycle

echo
echo "$pass passed, $fail failed"
exit $status
