#!/usr/bin/env bash
# run-regrtest.sh LIBPATH [TEST...]
#
# The `cpython` suite: a slice of CPython's own regression suite
# (`python -m test`, PYTHONMALLOC=malloc) run once on the system (glibc)
# malloc and once with LD_PRELOAD=LIBPATH; passes exactly when the set of
# test modules that pass under sigmalloc equals the set that pass on the
# system malloc.  Modules that fail or are skipped on the system malloc are
# excluded and listed.  The comparison itself is regrtest.py, beside this
# script; see its header for the details (retries, test-case level report).
#
# The interpreter is the first of these that has the regression suite
# (the `test` package with every module of the slice):
#   $SIGMALLOC_REGRTEST_PYTHON, python3 on PATH (resolved through a pyenv
#   shim to the real executable), /usr/bin/python3 (Debian: the suite is
#   the package libpython3.<minor>-testsuite).
# When none has all of the slice, the one that has most of it is used and the
# missing modules are reported as excluded; when none has the `test` package
# at all, the test is skipped (exit 77).
#
# Exit status: 0 pass, 1 fail, 77 skip.

set -u

if [ $# -lt 1 ]; then
	echo "usage: $0 LIBPATH [TEST...]" >&2
	exit 2
fi
lib=$1
shift
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)

if [ ! -f "$lib" ]; then
	echo "FAIL: library not found: $lib"
	exit 1
fi
case $lib in /*) ;; *) lib="$(cd "$(dirname "$lib")" && pwd)/$(basename "$lib")" ;; esac

unset LD_PRELOAD PYTHONPATH PYTHONHOME PYTHONSTARTUP PYTHONDEVMODE PYTHONWARNINGS

# The library must really be loaded: ld.so only warns when it cannot be.
# shellcheck disable=SC2002 # the maps of cat itself, run preloaded
if ! LD_PRELOAD="$lib" cat /proc/self/maps 2>/dev/null | grep -qF "$lib"; then
	echo "FAIL: $lib is not loaded by LD_PRELOAD"
	exit 1
fi

# ---------------------------------------------------------------------------
# Choose the interpreter
# ---------------------------------------------------------------------------
candidates=()
if [ -n "${SIGMALLOC_REGRTEST_PYTHON:-}" ]; then
	candidates+=("$SIGMALLOC_REGRTEST_PYTHON")
fi
if command -v python3 >/dev/null 2>&1; then
	# sys.executable, not a wrapper such as a pyenv shim.
	exe=$(python3 -c 'import sys; print(sys.executable)' 2>/dev/null) && [ -x "$exe" ] &&
		candidates+=("$exe")
fi
[ -x /usr/bin/python3 ] && candidates+=(/usr/bin/python3)

# Prints the number of modules of the slice the interpreter lacks, or fails
# when it has no regression suite at all.
count_missing() { # python
	"$1" -I - "$here/regrtest.py" <<'EOF' 2>/dev/null
import runpy, sys
import test.libregrtest                                  # noqa: F401
ns = runpy.run_path(sys.argv[1], run_name="regrtest_slice")
print(sum(not ns["have_module"](t) for t in ns["resolve"](ns["TESTS"])))
EOF
}

python=
best=
for c in "${candidates[@]}"; do
	real=$(readlink -f "$c" 2>/dev/null || echo "$c")
	case " ${seen:-} " in *" $real "*) continue ;; esac
	seen="${seen:-} $real"
	n=$(count_missing "$c") || {
		echo "note: $c has no regression suite (no test.libregrtest)"
		continue
	}
	if [ "$n" = 0 ]; then
		python=$c
		break
	fi
	echo "note: $c lacks $n module(s) of the slice"
	if [ -z "$best" ] || [ "$n" -lt "$best" ]; then
		best=$n
		python=$c
	fi
done
if [ -z "$python" ]; then
	echo "SKIP: no python3 with CPython's regression suite (the test package;" \
		"Debian: libpython3.11-testsuite)"
	exit 77
fi

exec "$python" -I "$here/regrtest.py" --python "$python" --lib "$lib" "$@"
