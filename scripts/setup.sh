#!/bin/bash
# Installs what sigmalloc needs and is missing, with apt-get (Debian 12),
# then configures the build directories. Idempotent; run as root (or with
# sudo available). Used by scripts/demo.sh and scripts/test.sh.
set -euo pipefail
cd "$(dirname "$0")/.."

# build: compilers, meson, jemalloc; tests: clang for sanitizers, the real
# programs of the `programs` suite and CPython's regression suite (`cpython`);
# benches: Google Benchmark.
packages=(gcc g++ clang libclang-rt-14-dev meson ninja-build pkg-config libjemalloc-dev
          libbenchmark-dev git python3 libpython3.11-testsuite coreutils xz-utils zstd pigz
          make perl)
missing=()
for p in "${packages[@]}"; do
	dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
	echo "setup: installing ${missing[*]}"
	SUDO=""
	[ "$(id -u)" -eq 0 ] || SUDO="sudo"
	export DEBIAN_FRONTEND=noninteractive
	$SUDO apt-get update -qq
	$SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# build/: the release build (library, launcher, every suite).
[ -f build/build.ninja ] || meson setup build --buildtype=release >/dev/null
ninja -C build >/dev/null
