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
# Prints one line: base_dd|base_cat bytes=.. secs=.. bytes_per_s=..
set -euo pipefail

now() { date +%s%N; }

case ${1:-} in
dd)
	f=$2/dd-ref.bin
	blocks=$(($3 / 1048576))
	[ "$blocks" -gt 0 ] || blocks=1
	times=
	for _ in 1 2 3; do
		sync
		${WARM:-true} # run.sh: warm the page allocator, as for busd
		t0=$(now)
		dd if=/dev/zero of="$f" bs=1M count="$blocks" status=none
		t1=$(now)
		rm -f "$f"
		times="$times $((t1 - t0))"
	done
	t0=0
	t1=$(printf '%s\n' $times | sort -n | sed -n 2p)
	bytes=$((blocks * 1048576))
	name=base_dd
	;;
cat)
	bytes=$(cat "$2"/*.log | wc -c)
	t0=$(now)
	cat "$2"/*.log >/dev/null
	t1=$(now)
	name=base_cat
	;;
*)
	echo "usage: disk_ref.sh dd DIR BYTES | cat DIR" >&2
	exit 2
	;;
esac
awk -v n="$name" -v b="$bytes" -v ns=$((t1 - t0)) 'BEGIN {
	printf "%s bytes=%.0f secs=%.4f bytes_per_s=%.0f\n", n, b, ns / 1e9, b / (ns / 1e9) }'
