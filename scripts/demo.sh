#!/bin/bash
# The demonstration: installs what is missing, builds, then runs two things
# under the `sigmalloc` launcher (LD_PRELOAD of libsigmalloc.so):
#   1. the signal torture test: four threads churning malloc while SIGPROF
#      and SIGALRM handlers allocate, at any moment, into each other;
#   2. a real program (python3 with PYTHONMALLOC=malloc on an
#      allocation-heavy script: JSON, dicts, sqlite3, threads),
# each with sigmalloc's statistics printed at exit (--stats).
# `scripts/demo.sh --glibc` also runs the torture test on glibc's malloc,
# which hangs within seconds (the test's watchdog reports it).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh

launcher=build/preload/sigmalloc
seconds=${SIGMALLOC_DEMO_SECONDS:-5}

echo
echo "== 1. Signal handlers that allocate while the thread is inside malloc"
echo "   $launcher --stats build/tests/test-signal $seconds"
"$launcher" --stats build/tests/test-signal "$seconds"

echo
echo "== 2. A real program: python3 (PYTHONMALLOC=malloc) on tests/programs/alloc_heavy.py"
python=$(command -v python3)
python=$("$python" -c 'import sys; print(sys.executable)' 2>/dev/null || echo "$python")
echo "   PYTHONMALLOC=malloc $launcher --stats $python tests/programs/alloc_heavy.py"
start=$(date +%s.%N)
PYTHONMALLOC=malloc "$launcher" --stats "$python" tests/programs/alloc_heavy.py | tail -n 5
end=$(date +%s.%N)
echo "   (wall time $(python3 -c "print(round($end - $start, 2))") s; table above: sigmalloc's per-class counters)"

if [ "${1:-}" = "--glibc" ]; then
	echo
	echo "== 3. The same torture test on glibc's malloc (expected: HANG or crash)"
	set +e
	timeout 60 build/tests/test-signal "$seconds"
	echo "   exit status $? (1: the watchdog saw a hang; 124: timeout; >128: killed by a signal)"
fi
