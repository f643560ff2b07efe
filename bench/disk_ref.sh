#!/usr/bin/env bash
# disk_ref.sh - the references of the disk benchmarks (bench/run.sh):
#   disk_ref.sh dd DIR BYTES   dd writes BYTES (whole MiB) of zeros to a new
#                              file in DIR (the file system busd spilled to),
#                              as busd does: into the page cache, no fsync
#                              (busd's default fsync policy is "never"), in
#                              1 MiB writes (busd's write size,
#                              BUS_SEG_WRITE_DEFAULT in segment.h); the
#                              median of 3 runs (BENCH.md: medians, not
#                              bests: a best of 3 against busd's single
#                              run would favour dd), each after a sync
#                              and $WARM
#                              (run.sh sets it to warm the page allocator
#                              as before busd's run: spill_bench.c, warm())
#   disk_ref.sh cat DIR        cat reads DIR/*.log (warm in the page cache,
#                              as the replay found them) to /dev/null
#   disk_ref.sh run DIR CMD..  runs the writer CMD (busd's spill) as dd is
#                              run: 3 times, each with DIR removed, a sync
#                              and $WARM first; prints the line with secs=
#                              of the median run (DIR is left from the last)
# Prints one line: base_dd|base_cat bytes=.. secs=.. bytes_per_s=..
#
# A run disturbed by the host is run again, for dd and for busd alike.
# This VM gives the guest's free memory back to its host (virtio-balloon
# free page reporting: /sys/module/page_reporting).  When a reporting pass
# runs between $WARM and the end of a writer, the writer's page-cache
# pages must be faulted back in from the host, and 512 MiB takes 0.5 to
# 1.5 s instead of 0.1 s: seen on 2026-12-03 in 3 of 10 dd runs, each time
# with the pass counter moved, and never without.  So each writer run
# reads the counter after $WARM and after the writer; if it moved, the run
# is said on stderr and made again (at most 5 tries; the last one counts
# if all were disturbed, and that is said too).  Where the counter does
# not exist, every run counts.
set -euo pipefail

now() { date +%s%N; }

PASSES=/sys/module/page_reporting/parameters/passes
passes() { cat "$PASSES" 2>/dev/null || echo 0; }

# undisturbed CLEAN CMD... - run CMD after removing CLEAN (unless it is
# "-"), a sync and $WARM; again while the host reclaimed memory meanwhile
# (see above).  CMD's output goes to stdout; each try leaves T0 and T1 (ns)
# around CMD.
undisturbed() {
	local clean=$1 try p0 p1 out
	shift
	for try in 1 2 3 4 5; do
		[ "$clean" = - ] || rm -rf "$clean"
		sync
		${WARM:-true} # run.sh: warm the page allocator (spill_bench.c, warm())
		p0=$(passes)
		T0=$(now)
		out=$("$@")
		T1=$(now)
		p1=$(passes)
		if [ "$p0" = "$p1" ]; then
			[ -z "$out" ] || echo "$out"
			return 0
		fi
		if [ "$try" -lt 5 ]; then
			echo "disk_ref.sh: the host reclaimed guest memory during $1's run (page_reporting passes $p0 -> $p1): once more" >&2
		fi
	done
	echo "disk_ref.sh: the host reclaimed guest memory during all 5 runs of $1; the last one counts" >&2
	[ -z "$out" ] || echo "$out"
}

case ${1:-} in
dd)
	f=$2/dd-ref.bin
	blocks=$(($3 / 1048576))
	[ "$blocks" -gt 0 ] || blocks=1
	times=
	for _ in 1 2 3; do
		undisturbed "$f" dd if=/dev/zero of="$f" bs=1M count="$blocks" status=none
		rm -f "$f"
		times="$times $((T1 - T0))"
	done
	t0=0
	t1=$(printf '%s\n' $times | sort -n | sed -n 2p)
	bytes=$((blocks * 1048576))
	name=base_dd
	;;
run)
	# As dd: the median of 3 runs (by secs=), each undisturbed.
	shift
	lines=
	for _ in 1 2 3; do
		lines="$lines$(undisturbed "$@" | grep 'secs=' | tail -1)"$'\n'
	done
	echo -n "$lines" | awk '{ for (i = 1; i <= NF; i++) if ($i ~ /^secs=/) print substr($i, 6), $0 }' |
		sort -g | sed -n '2s/^[^ ]* //p'
	exit 0
	;;
cat)
	bytes=$(cat "$2"/*.log | wc -c)
	t0=$(now)
	cat "$2"/*.log >/dev/null
	t1=$(now)
	name=base_cat
	;;
*)
	echo "usage: disk_ref.sh dd DIR BYTES | cat DIR | run DIR CMD..." >&2
	exit 2
	;;
esac
awk -v n="$name" -v b="$bytes" -v ns=$((t1 - t0)) 'BEGIN {
	printf "%s bytes=%.0f secs=%.4f bytes_per_s=%.0f\n", n, b, ns / 1e9, b / (ns / 1e9) }'
