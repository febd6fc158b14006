#!/bin/sh
# libsigmalloc.so must export only the interposed allocation entry points,
# the C++ operators new/delete, the sm_ API, jemalloc's configuration
# string malloc_conf, and sigaction and the signal-like functions (preload/signal_warm.c;
# preload/sigmalloc.map).
lib=${1:?usage: check-exports.sh libsigmalloc.so}
allowed='^(malloc|free|calloc|realloc|reallocarray|posix_memalign|aligned_alloc|memalign|valloc|pvalloc|malloc_usable_size|free_sized|free_aligned_sized|cfree|malloc_trim|mallinfo|mallinfo2|malloc_stats|mallopt|__libc_(malloc|free|calloc|realloc|memalign|valloc|pvalloc)|sm_[a-z_0-9]+|malloc_conf|sigaction|signal|bsd_signal|ssignal|sysv_signal|__sysv_signal|sigset|_Znwm.*|_Znam.*|_ZdlPv.*|_ZdaPv.*)$'
syms=$(nm -D --defined-only "$lib" | awk '{print $3}')
[ -n "$syms" ] || { echo "no exported symbols read from $lib"; exit 1; }
bad=$(printf '%s\n' "$syms" | grep -Ev "$allowed")
for need in malloc free calloc realloc posix_memalign aligned_alloc malloc_usable_size _Znwm _ZdlPv sm_malloc sm_free malloc_conf sigaction signal bsd_signal ssignal sysv_signal __sysv_signal sigset; do
	printf '%s\n' "$syms" | grep -qx "$need" || { echo "missing export: $need"; exit 1; }
done
if [ -n "$bad" ]; then
	echo "unexpected exports:"; printf '%s\n' "$bad"; exit 1
fi
echo "$(printf '%s\n' "$syms" | wc -l) exports, all interposed or sm_*"
echo "1 passed, 0 failed"
