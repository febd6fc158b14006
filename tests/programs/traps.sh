#!/bin/bash
# The `bash-traps` workload of run-program.sh: bash with its own signal
# handlers doing work while it spawns many subprocesses.
#
#   SIGCHLD  bash's own C handler reaps the children (waitchld).  No CHLD
#            trap: with one, bash 5.2 (on the system malloc too) warned
#            "run_pending_traps: bad value in trap_list[17]" in subshells
#            forked while it was pending, and now and then the script
#            ended early and silently.
#   SIGUSR1  sent by every subprocess before it exits; the trap builds a
#            string and stores it in an associative array.
#   SIGALRM  sent every few milliseconds by a background ticker process;
#            the trap appends to a list.
#
# Meanwhile the main script fills associative and indexed arrays, edits
# strings, and collects every subprocess's exit status with `wait`.  bash
# runs trap commands deferred (after the current command), the reaping in
# its SIGCHLD handler is not deferred.
#
# Only deterministic facts are printed: how many signals arrived depends on
# timing (signals of one kind coalesce), so the output says only that they
# did, and that what the traps built checks out.
set -u
export LC_ALL=C

declare -A usr1_seen=()
declare -A table=()
alrm_log=()
usr1=0
alrm=0
trap 'usr1=$((usr1 + 1)); printf -v v "%05d" "$usr1"; usr1_seen[u$usr1]=$v' USR1
trap 'alrm=$((alrm + 1)); alrm_log+=("tick $alrm")' ALRM

# The ticker: SIGALRM to this shell every ~5 ms until told to stop (or a
# minute passes).  It sleeps with a timed `read` on a FIFO nobody writes,
# so it forks nothing.
me=$$
mkfifo tick.fifo
(
	exec 3<>tick.fifo
	for ((i = 0; i < 12000; i++)); do
		[ -e stop-ticker ] && exit 0
		kill -ALRM "$me" 2>/dev/null || exit 0
		read -r -t 0.005 -u 3 _
	done
) &
ticker=$!

# 200 subprocesses in waves of 10; each signals USR1, records its status
# in a file and exits with it.  After each wave the main shell waits for
# the wave: bash's `wait` returns early (status > 128) when a trapped signal
# arrives, so it waits again while any of the wave is still there.  Neither
# `wait`'s status nor its count of returns is relied on: bash 5.2's
# `wait PID` can report -1 when the child was reaped while a wait was
# interrupted by a trap, and can keep returning 142 (SIGALRM) without
# waiting once a trap interrupted it; the statuses come from the files.
mkdir st
alive() { # any of the pids still there (bash reaps its children at once)
	local p
	for p; do
		kill -0 "$p" 2>/dev/null && return 0
	done
	return 1
}
n=0
want=()
wave=()
for ((i = 1; i <= 200; i++)); do
	(
		kill -USR1 "$me"
		rc=$(((i * 37) % 101))
		echo "$rc" >"st/$i"
		exit "$rc"
	) &
	wave+=($!)
	n=$((n + 1))
	want+=($(((i * 37) % 101)))
	for ((j = 1; j <= 40; j++)); do
		table["k$i.$j"]="v$((i * j))-$n"
	done
	if ((i % 10 == 0)); then
		while alive "${wave[@]}"; do
			wait "${wave[@]}"
		done
		wave=()
	fi
done
got=()
for ((i = 1; i <= 200; i++)); do
	[ -s "st/$i" ] && read -r v <"st/$i" && got+=("$v")
done

# String work between signals.
s=""
for ((i = 0; i < 3000; i++)); do
	s+="${table["k$((i % 200 + 1)).$((i % 40 + 1))"]},"
done
s=${s//v/V}
s=${s%,}
IFS=, read -r -a fields <<<"$s"

# Let the ticker tick some more, then stop it.
for ((i = 0; i < 20; i++)); do
	sleep 0.01
done
: >stop-ticker
while alive "$ticker"; do
	wait "$ticker"
done
trap - ALRM USR1

echo "subprocesses: $n, statuses collected: ${#got[@]}"
echo "statuses match: $([ "${got[*]}" = "${want[*]}" ] && echo yes || echo no)"
echo "status sum: $(IFS=+; echo $((${got[*]})))"
echo "table: ${#table[@]} entries, md5 $(for k in "${!table[@]}"; do echo "$k=${table[$k]}"; done | sort | md5sum | cut -d' ' -f1)"
echo "fields: ${#fields[@]}, md5 $(printf '%s\n' "${fields[@]}" | md5sum | cut -d' ' -f1)"
echo "USR1 trap ran: $([ "$usr1" -ge 1 ] && echo yes || echo no)"
# The traps' own data: every entry well-formed.  (Counting is not exact in
# bash: a trap that runs while the shell forks a subshell can be lost or run
# in the child, so neither the counts nor gaps are checked.)
ok=yes
for k in "${!usr1_seen[@]}"; do
	printf -v v "u%d=%05d" "${k#u}" "${k#u}"
	[ "$k=${usr1_seen[$k]}" = "$v" ] || ok=no
done
echo "USR1 trap's entries check out: $ok"
echo "ALRM trap ran at least 20 times: $([ "$alrm" -ge 20 ] && echo yes || echo no)"
ok=yes
for e in "${alrm_log[@]}"; do
	[[ $e =~ ^tick\ [1-9][0-9]*$ ]] || ok=no
done
echo "ALRM trap's entries check out: $ok"
