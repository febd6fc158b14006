#!/bin/bash
# Runs the libFuzzer harness fuzz-api for SECONDS (default 600) on a copy of
# the seed corpus, so that tests/fuzz/corpus/ is never written to.
#
#   tests/fuzz/run-fuzz.sh [SECONDS] [libFuzzer options...]
#
# Environment:
#   FUZZ_BIN      the fuzzer; default: $FUZZ_BUILD/tests/fuzz/fuzz-api, built
#                 (and $FUZZ_BUILD configured as the clang ASan build) if needed
#   FUZZ_BUILD    build directory, default build-asan
#   FUZZ_WORKDIR  corpus copy, crash artifacts and fuzz.log; default
#                 $FUZZ_BUILD/tests/fuzz/run. The corpus copy is made afresh
#                 from the seeds each time.
#   SM_FUZZ_NO_TIMER=1  no interval-timer signals (for reproducing a crash:
#                 `FUZZ_BIN ARTIFACT` runs one input)
# Exit status: 0 nothing found; 77 no libFuzzer here (skipped); 1 a finding
# (a crash leaves crash-*, timeout-* or oom-* in artifacts/), or an error.
set -uo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
secs=${1:-600}
[ $# -gt 0 ] && shift
build=${FUZZ_BUILD:-$root/build-asan}

bin=${FUZZ_BIN:-}
if [ -z "$bin" ]; then
	if [ ! -f "$build/build.ninja" ]; then
		command -v clang >/dev/null || { echo "run-fuzz: no clang: skipped"; exit 77; }
		CC=clang CXX=clang++ meson setup "$build" -Dbuildtype=debugoptimized \
			-Db_sanitize=address,undefined -Db_lundef=false -Dbenches=disabled || exit 1
	fi
	# grep without -q reads all of ninja's output: with pipefail, -q's early
	# exit would kill ninja with SIGPIPE and read as "no such target".
	if ! ninja -C "$build" -t targets all | grep '^tests/fuzz/fuzz-api:' >/dev/null; then
		echo "run-fuzz: $build has no fuzz-api (needs clang, ASan and libFuzzer): skipped"
		exit 77
	fi
	ninja -C "$build" tests/fuzz/fuzz-api || exit 1
	bin=$build/tests/fuzz/fuzz-api
fi

work=${FUZZ_WORKDIR:-$build/tests/fuzz/run}
rm -rf "$work/corpus"
mkdir -p "$work/corpus" "$work/artifacts" || exit 1
cp "$here"/corpus/* "$work/corpus/" || exit 1

# UBSan findings are crashes too; leak checking stays on (libFuzzer's own).
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-halt_on_error=1:print_stacktrace=1}
export ASAN_OPTIONS=${ASAN_OPTIONS:-abort_on_error=0:detect_leaks=1}

echo "run-fuzz: $bin for ${secs}s, corpus copy in $work/corpus"
# libFuzzer's own exit code for a finding is 77 unless told otherwise, which
# meson would count as a skip: findings exit 1 here.
rm -f "$work/artifacts/"*
"$bin" -max_total_time="$secs" -timeout=60 -rss_limit_mb=4096 -print_final_stats=1 \
	-error_exitcode=1 -timeout_exitcode=1 \
	-artifact_prefix="$work/artifacts/" "$@" "$work/corpus" 2>&1 | tee "$work/fuzz.log"
rc=${PIPESTATUS[0]}
found=$(ls "$work/artifacts" | wc -l)
echo "run-fuzz: exit $rc; corpus now $(ls "$work/corpus" | wc -l) inputs; artifacts: $found"
if [ "$rc" -eq 0 ] && [ "$found" -gt 0 ]; then
	rc=1 # an artifact is a finding, whatever the exit code said
fi
[ "$rc" -eq 77 ] && rc=1 # never a skip once the fuzzer ran
exit "$rc"
