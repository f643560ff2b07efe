#!/usr/bin/env bash
# bench/run.sh quick|full - the benchmark suite of shared/BENCH.md: bus
# against the bare limits (the targets table), against what a user would
# pick instead (Unix sockets, pipes, ZeroMQ, iceoryx), fan-out and cost.
# Prints the markdown report and writes it, with gnuplot PNGs, to
# bench/results/<date>-<host>-<cpu>[-quick].md (the runs' raw lines beside it, in
# .raw); a full run also puts its headline
# tables into README.md between the bench-table markers (BENCH_README=0:
# not).
#
# The programs built by make ($BUILD/bench) are used as they are; the two
# that need libraries the Makefile does not link (bench/ext/base_zmq.c,
# bench/ext/base_iceoryx.c) are compiled here.  bench/deps.sh installs the
# Debian packages (or names them and fails).  iceoryx's daemon iox-roudi is
# started here with bench/roudi.toml and stopped at exit.
#
# Protocol: every run is bracketed by a short bare ping-pong probe (its p50
# below $BENCH_NEAR_NS, default 180 ns, means the two vCPUs are "near",
# else "far"); a run is near or far when both its probes are, else mixed.
# A repetition runs one case's programs back to back, in an order that
# alternates between repetitions.  A figure is the median over the
# repetitions whose runs (the figure's and its reference's) share the most
# frequent tag, with the spread [min-max]; a ratio is taken per repetition,
# then the median.  In the targets section, when fewer than half the
# repetitions share a tag, up to as many again are run (the other sections,
# with a dozen runs per repetition, are rarely one tag throughout: their
# rows pair each run with bus's run of the same repetition instead).
#
#   sections         quick                          full
#   targets rtt      64 B, 200k round trips, 3 reps 32/64/256/1024 B, 1M, 5 reps
#   targets tput     64 B, 1 KiB, 3 reps            16 B .. 64 KiB, 5 reps
#   alternatives rtt 64 B; 50k round trips (slow    32/64/256/1024 B; 1M (slow
#                    kinds 10k), 3 reps             kinds 100k), 3 reps
#   alternatives tput 64 B, 1 KiB; 100k records     64 B, 1 KiB; 500k, 3 reps
#                    (bus and rings 2M), 3 reps     (bus and rings 10M)
#   fan-out          1/2/4/8 consumers, 1M, 3 reps  4M records, 5 reps
#   idle consumer    3 s, 3 reps                    10 s, 3 reps
#   disk             512 MiB of 1 KiB, 3 reps       2 GiB of 1 KiB, 3 reps
#
# Disk: bench/spill_bench.c spills through busd, then replays from the
# segment files after busd recovered the topic; bench/disk_ref.sh gives the
# references (dd writing as many bytes to the same folder, cat reading the
# segment files).  The folder is $BENCH_DATA_DIR (default $BUILD/bench-data,
# on the repository's file system).
#
# "Slow kinds" are those whose round trip takes tens of µs here (every
# blocking variant, and ZeroMQ, whose I/O thread sleeps even when the
# application spins): 1M of them would take 90 s per case; their count is
# in the table.  BENCH_REPS overrides every repetition count.
#
# Exits non-zero when a program fails (its output is shown).
set -euo pipefail

MODE=${1:-quick}
case $MODE in
quick | full) ;;
*)
	echo "usage: $0 quick|full" >&2
	exit 2
	;;
esac

cd "$(dirname "$0")/.."
BUILD=${BUILD:-build}
BIN=$BUILD/bench
NEAR_NS=${BENCH_NEAR_NS:-180}
T_START=$(date +%s)
DATE=$(date +%F) # the day the run started names its files

fail() {
	echo "run.sh: FAILED: $*" >&2
	exit 1
}

./bench/deps.sh || fail "bench/deps.sh: missing packages (see above)"
for p in bare_pingpong bare_ring bus_bench base_uds base_pipe spill_bench; do
	[ -x "$BIN/$p" ] || fail "$BIN/$p not built (run make first)"
done

# ------------------------------------------------------- external programs
WARN="-Wall -Wextra -Werror -Wmissing-prototypes -Wstrict-prototypes -Wshadow -Wundef
	-Wformat=2 -Wwrite-strings -Wpointer-arith -Wcast-qual -Wvla"
if ! ${CC:-cc} --version 2>/dev/null | grep -q clang; then
	WARN="$WARN -Wduplicated-cond -Wlogical-op -Wduplicated-branches"
fi
ICEORYX_INC=$(find /usr/include/iceoryx -maxdepth 1 -name 'v*' 2>/dev/null | sort -V | tail -1)
[ -n "$ICEORYX_INC" ] || fail "iceoryx headers not found under /usr/include/iceoryx"
ext_cc() { # OUT SRC LIBS...
	local out=$1 src=$2
	shift 2
	# shellcheck disable=SC2086
	${CC:-cc} -O2 -g -std=gnu11 -D_GNU_SOURCE -pthread $WARN -o "$out" "$src" "$@" ||
		fail "cannot build $out from $src"
}
# shellcheck disable=SC2046
ext_cc "$BIN/base_zmq" bench/ext/base_zmq.c $(pkg-config --cflags --libs libzmq)
ext_cc "$BIN/base_iceoryx" bench/ext/base_iceoryx.c -isystem "$ICEORYX_INC" -liceoryx_binding_c

LOAD_START=$(cut -d' ' -f1-3 /proc/loadavg)
TMP=$(mktemp -d /tmp/bus-bench-run.XXXXXX)
ROUDI_PID=""

roudi_stop() {
	[ -n "$ROUDI_PID" ] || return 0
	kill -TERM "$ROUDI_PID" 2>/dev/null || true
	for _ in $(seq 50); do
		kill -0 "$ROUDI_PID" 2>/dev/null || break
		sleep 0.1
	done
	kill -KILL "$ROUDI_PID" 2>/dev/null || true
	local rc=0
	wait "$ROUDI_PID" 2>/dev/null || rc=$?
	ROUDI_PID=""
	if [ $rc -ne 0 ]; then
		echo "run.sh: warning: iox-roudi ended with status $rc; its log:" >&2
		sed 's/^/  [iox-roudi] /' "$TMP/roudi.log" >&2
	fi
}

roudi_start() {
	local other
	other=$(pgrep -x iox-roudi || true)
	[ -z "$other" ] || fail "an iox-roudi is already running (pid ${other//$'\n'/ }); stop it first"
	iox-roudi -c bench/roudi.toml -l warning >"$TMP/roudi.log" 2>&1 &
	ROUDI_PID=$!
	for _ in $(seq 100); do
		grep -q "RouDi is ready" "$TMP/roudi.log" && return 0
		kill -0 "$ROUDI_PID" 2>/dev/null || break
		sleep 0.1
	done
	cat "$TMP/roudi.log" >&2
	fail "iox-roudi did not start"
}

trap 'roudi_stop; rm -rf "$TMP"' EXIT
RAW=$TMP/raw
ROWS=$TMP/rows
DROPPED=$TMP/dropped
RECLAIMED=$TMP/reclaimed
: >"$RAW"
: >"$DROPPED"
: >"$RECLAIMED"
: >"$ROWS"

if [ "$MODE" = quick ]; then
	REPS=3
	ROUNDS=200000
	WARMUP=20000
	RTT_SIZES="64"
	TPUT_SIZES="64 1024"
	TPUT_BYTES=$((2 << 30))
	TPUT_MAX=10000000
	B_REPS=3
	B_ROUNDS=50000
	B_WARMUP=5000
	B_SLOW_ROUNDS=10000
	B_SLOW_WARMUP=1000
	B_RTT_SIZES="64"
	B_TPUT_SIZES="64 1024"
	B_TPUT_RECORDS=100000
	B_TPUT_FAST=2000000
	FAN_RECORDS=1000000
	FAN_REPS=3
	IDLE_SECS=3
	IDLE_REPS=3
	DISK_BYTES=$((512 << 20))
	DISK_REPS=3
else
	REPS=5
	ROUNDS=1000000
	WARMUP=100000
	RTT_SIZES="32 64 256 1024"
	TPUT_SIZES="16 64 256 1024 65536"
	TPUT_BYTES=$((4 << 30))
	TPUT_MAX=20000000
	B_REPS=3
	B_ROUNDS=1000000
	B_WARMUP=100000
	B_SLOW_ROUNDS=100000
	B_SLOW_WARMUP=10000
	B_RTT_SIZES="32 64 256 1024"
	B_TPUT_SIZES="64 1024"
	B_TPUT_RECORDS=500000
	B_TPUT_FAST=10000000
	FAN_RECORDS=4000000
	FAN_REPS=5
	IDLE_SECS=10
	IDLE_REPS=3
	DISK_BYTES=$((2 << 30))
	DISK_REPS=3
fi
if [ -n "${BENCH_REPS:-}" ]; then
	REPS=$BENCH_REPS B_REPS=$BENCH_REPS FAN_REPS=$BENCH_REPS IDLE_REPS=$BENCH_REPS
	DISK_REPS=$BENCH_REPS
fi
DISK_DIR=${BENCH_DATA_DIR:-$BUILD/bench-data}
DISK_RING=$((16 << 20))
RING=$((4 << 20))
PROBE_ROUNDS=20000
PROBE_WARMUP=2000
FAN_COUNTS="1 2 4 8"

# probe - p50 of a short bare ping-pong, in ns.
probe() {
	local out p50
	out=$("$BIN/bare_pingpong" $PROBE_ROUNDS $PROBE_WARMUP 2>&1) || fail "probe: $out"
	p50=$(echo "$out" | sed -n 's/.*rtt_p50_ns=\([0-9][0-9]*\).*/\1/p')
	[ -n "$p50" ] || fail "probe: no result line: $out"
	echo "$p50"
}

tag_of() {
	if [ "$1" -lt "$NEAR_NS" ] && [ "$2" -lt "$NEAR_NS" ]; then
		echo near
	elif [ "$1" -ge "$NEAR_NS" ] && [ "$2" -ge "$NEAR_NS" ]; then
		echo far
	else
		echo mixed
	fi
}

RESULT_RE='^(bare_[a-z]+|bus_[a-z]+|base_[a-z]+) '
LAST_PROBE=""
# run_one CASE REP KIND CMD... - run CMD between two probes, record its line.
run_one() {
	local cs=$1 rep=$2 kind=$3 out pre post line
	shift 3
	[ -n "$LAST_PROBE" ] || LAST_PROBE=$(probe)
	pre=$LAST_PROBE
	if ! out=$("$@" 2>&1); then
		case $kind in
		bus | ref | bare | classic | slot | dd | cat)
			fail "$cs rep $rep ($kind): $*"$'\n'"$out" ;;
		esac
		# An alternative transport failing (iceoryx's RouDi has refused
		# a client now and then) must not cost the whole run: once
		# more, then the rep goes without that row, said here and in
		# the report.
		echo "run.sh: $cs rep $rep ($kind) failed; once more:"$'\n'"$out" | sed 's/^/  /' >&2
		if ! out=$("$@" 2>&1); then
			echo "run.sh: $cs rep $rep ($kind) failed again; left out of this rep" >&2
			echo "$cs rep $rep: $(label "$kind") failed twice, left out" >>"$DROPPED"
			LAST_PROBE=
			return 0
		fi
	fi
	line=$(echo "$out" | grep -E "$RESULT_RE" | tail -1)
	[ -n "$line" ] || fail "$cs rep $rep ($kind): no result line from: $*"$'\n'"$out"
	if echo "$out" | grep -v -E "$RESULT_RE" | grep -q .; then
		echo "$out" | grep -v -E "$RESULT_RE" | sed "s/^/  [$cs $kind] /" >&2
		echo "$kind $(echo "$out" | grep -c 'host reclaimed guest memory' || true)" >>"$RECLAIMED"
	fi
	post=$(probe)
	LAST_PROBE=$post
	echo "case=$cs rep=$rep kind=$kind tag=$(tag_of "$pre" "$post") pre=$pre post=$post $line" >>"$RAW"
}

# reclaimed KIND - how many disk writer runs of KIND were made again.
reclaimed() { awk -v k="$1" '$1 == k { n += $2 } END { print n + 0 }' "$RECLAIMED"; }

# enough CASE - succeeds when at least half of the repetitions so far of
# CASE have one tag across all their runs.
enough() {
	awk -v cs="$1" '
	{
		delete kv
		for (i = 1; i <= NF; i++) if (split($i, a, "=") == 2) kv[a[1]] = a[2]
		if (kv["case"] != cs) next
		r = kv["rep"]; reps[r] = 1
		if (!(r in tag)) tag[r] = kv["tag"]; else if (tag[r] != kv["tag"]) tag[r] = "mixed"
	}
	END {
		n = 0; for (r in reps) { n++; c[tag[r]]++ }
		best = c["near"] > c["far"] ? c["near"] : c["far"]
		exit !(best * 2 >= n)
	}' "$RAW"
}

# reps CASE FN [N [MAX]] - call FN REP for N (default $REPS) repetitions,
# plus extra ones while the tags are too mixed, up to MAX (default 2 N).
# (Locals are named so as not to shadow what the callbacks read: bash
# scopes dynamically.)
reps() {
	local reps_cs=$1 reps_fn=$2 reps_n=${3:-$REPS} reps_r=1
	local reps_max=${4:-$((reps_n * 2))}
	while [ $reps_r -le "$reps_n" ] || { [ $reps_r -le "$reps_max" ] && ! enough "$reps_cs"; }; do
		$reps_fn "$reps_r"
		reps_r=$((reps_r + 1))
	done
}

# run_list CASE REP LIST - run the "kind|command" lines of LIST, forwards
# on odd repetitions and backwards on even ones.
run_list() {
	local cs=$1 rep=$2 list=$3 line kind
	if [ $((rep % 2)) -eq 0 ]; then
		list=$(echo "$list" | tac)
	fi
	while IFS= read -r line; do
		[ -n "$line" ] || continue
		kind=${line%%|*}
		# shellcheck disable=SC2086
		run_one "$cs" "$rep" "$kind" ${line#*|}
	done <<<"$list"
}

# args LIST ARGS - LIST with ARGS appended to every line.
args() {
	local line
	while IFS= read -r line; do echo "$line $2"; done <<<"$1"
}

# label KIND - the name a table or plot gives a kind (as bench/report.awk).
label() {
	case $1 in
	bus) echo "bus" ;;
	bare) echo "bare ping-pong (floor)" ;;
	classic) echo "bare ring, classic" ;;
	slot) echo "bare ring, slot (ceiling)" ;;
	uds-stream-spin) echo "Unix stream, busy-poll" ;;
	uds-stream-block) echo "Unix stream, blocking" ;;
	uds-seqpacket-spin) echo "Unix seqpacket, busy-poll" ;;
	uds-seqpacket-block) echo "Unix seqpacket, blocking" ;;
	pipe-spin) echo "pipe, busy-poll" ;;
	pipe-block) echo "pipe, blocking" ;;
	zmq-spin) echo "ZeroMQ ipc, DONTWAIT spin" ;;
	zmq-block) echo "ZeroMQ ipc, blocking" ;;
	iceoryx-spin) echo "iceoryx, busy-poll take" ;;
	iceoryx-wait) echo "iceoryx, WaitSet" ;;
	*) echo "$1" ;;
	esac
}

# style KIND - gnuplot line style of a kind: one colour per transport,
# solid when it spins, dashed when it blocks, bus thickest.
style() {
	local c dt=1 lw=2
	case $1 in
	bus) c='#7b00d4' lw=4 ;;
	bare) c='#009e73' ;;
	classic) c='#009e73' ;;
	slot) c='#56b4e9' ;;
	uds-stream-*) c='#e69f00' ;;
	uds-seqpacket-*) c='#a65628' ;;
	pipe-*) c='#d4c000' ;;
	zmq-*) c='#d62728' ;;
	iceoryx-*) c='#0072b2' ;;
	*) c='#000000' ;;
	esac
	case $1 in *-block | *-wait) dt=2 ;; esac
	echo "lc rgb '$c' dt $dt lw $lw"
}

human_size() {
	case $1 in
	1024) echo "1 KiB" ;;
	65536) echo "64 KiB" ;;
	*) echo "$1 B" ;;
	esac
}

# =============================================== 1. targets: bus vs bare
for s in $RTT_SIZES; do
	cs="rtt$s"
	rtt_rep() {
		run_list "$cs" "$1" "ref|$BIN/bare_pingpong $ROUNDS $WARMUP
msg|$BIN/bare_pingpong msg $s $ROUNDS $WARMUP
bus|$BIN/bus_bench rtt $s $ROUNDS $WARMUP"
	}
	echo "run.sh: targets: rtt $(human_size "$s") ..." >&2
	reps "$cs" rtt_rep
	hs=$(human_size "$s")
	{
		echo "$cs|rtt $hs p50|bus|rtt_p50_ns|ref|rtt_p50_ns|lo|1.2|ns"
		echo "$cs|rtt $hs p90|bus|p90|ref|p90|lo|-|ns"
		echo "$cs|rtt $hs p99|bus|p99|ref|p99|lo|-|ns"
		echo "$cs|rtt $hs p99.9|bus|p999|ref|p999|lo|2|ns"
		echo "$cs|rtt $hs p99.99 (info)|bus|p9999|ref|p9999|lo|-|ns"
		echo "$cs|rtt $hs max (info)|bus|max|ref|max|lo|-|ns"
		echo "$cs|rtt $hs p50 vs bare $hs message (info)|bus|rtt_p50_ns|msg|rtt_p50_ns|lo|-|ns"
		echo "$cs|rtt $hs p99.9 vs bare $hs message (info)|bus|p999|msg|p999|lo|-|ns"
	} >>"$ROWS"
done

for s in $TPUT_SIZES; do
	cs="tput$s"
	n=$((TPUT_BYTES / s))
	[ $n -le $TPUT_MAX ] || n=$TPUT_MAX
	tput_rep() {
		run_list "$cs" "$1" "classic|$BIN/bare_ring classic $s $n $RING
slot|$BIN/bare_ring slot $s $n $RING
bus|$BIN/bus_bench tput $s $n $RING"
	}
	echo "run.sh: targets: tput $(human_size "$s") ($n records) ..." >&2
	reps "$cs" tput_rep
	hs=$(human_size "$s")
	t64=-
	t1k=-
	[ "$s" = 64 ] && t64=0.7
	[ "$s" = 1024 ] && t1k=0.8
	if [ "$s" -le 256 ]; then
		echo "$cs|tput $hs rec/s vs classic ring|bus|recs_per_s|classic|recs_per_s|hi|$t64|rec" >>"$ROWS"
		echo "$cs|tput $hs rec/s vs slot ring (ceiling)|bus|recs_per_s|slot|recs_per_s|hi|-|rec" >>"$ROWS"
	else
		echo "$cs|tput $hs B/s vs classic ring|bus|bytes_per_s|classic|bytes_per_s|hi|$t1k|B" >>"$ROWS"
		echo "$cs|tput $hs B/s vs slot ring (ceiling)|bus|bytes_per_s|slot|bytes_per_s|hi|-|B" >>"$ROWS"
	fi
done

# ====================================== 2. what a user would pick instead
roudi_start

RTT_FAST="uds-stream-spin|$BIN/base_uds rtt stream-spin
uds-seqpacket-spin|$BIN/base_uds rtt seqpacket-spin
pipe-spin|$BIN/base_pipe rtt spin
iceoryx-spin|$BIN/base_iceoryx rtt spin"
RTT_SLOW="zmq-spin|$BIN/base_zmq rtt spin
uds-stream-block|$BIN/base_uds rtt stream-block
uds-seqpacket-block|$BIN/base_uds rtt seqpacket-block
pipe-block|$BIN/base_pipe rtt block
zmq-block|$BIN/base_zmq rtt block
iceoryx-wait|$BIN/base_iceoryx rtt wait"
RTT_KINDS="bus bare $(echo "$RTT_FAST" | cut -d'|' -f1 | tr '\n' ' ') $(echo "$RTT_SLOW" | cut -d'|' -f1 | tr '\n' ' ')"

for s in $B_RTT_SIZES; do
	cs="brtt$s"
	list="bus|$BIN/bus_bench rtt $s $B_ROUNDS $B_WARMUP
bare|$BIN/bare_pingpong $B_ROUNDS $B_WARMUP
$(args "$RTT_FAST" "$s $B_ROUNDS $B_WARMUP")
$(args "$RTT_SLOW" "$s $B_SLOW_ROUNDS $B_SLOW_WARMUP")"
	brtt_rep() { run_list "$cs" "$1" "$list"; }
	echo "run.sh: alternatives: rtt $(human_size "$s") ..." >&2
	reps "$cs" brtt_rep "$B_REPS" "$B_REPS"
done

TPUT_ALT="uds-stream-block|$BIN/base_uds tput stream-block
uds-stream-spin|$BIN/base_uds tput stream-spin
uds-seqpacket-block|$BIN/base_uds tput seqpacket-block
uds-seqpacket-spin|$BIN/base_uds tput seqpacket-spin
pipe-block|$BIN/base_pipe tput block
pipe-spin|$BIN/base_pipe tput spin
zmq-block|$BIN/base_zmq tput block
zmq-spin|$BIN/base_zmq tput spin
iceoryx-spin|$BIN/base_iceoryx tput spin
iceoryx-wait|$BIN/base_iceoryx tput wait"
TPUT_KINDS="bus classic slot $(echo "$TPUT_ALT" | cut -d'|' -f1 | tr '\n' ' ')"

for s in $B_TPUT_SIZES; do
	cs="btput$s"
	list="bus|$BIN/bus_bench tput $s $B_TPUT_FAST $RING
classic|$BIN/bare_ring classic $s $B_TPUT_FAST $RING
slot|$BIN/bare_ring slot $s $B_TPUT_FAST $RING
$(args "$TPUT_ALT" "$s $B_TPUT_RECORDS")"
	btput_rep() { run_list "$cs" "$1" "$list"; }
	echo "run.sh: alternatives: tput $(human_size "$s") ..." >&2
	reps "$cs" btput_rep "$B_REPS" "$B_REPS"
done
roudi_stop

# ============================================================ 3. fan-out
FAN_LIST=""
FAN_KINDS=""
for n in $FAN_COUNTS; do
	FAN_LIST="$FAN_LIST
fan$n|$BIN/bus_bench fanout $n 64 $FAN_RECORDS $RING"
	FAN_KINDS="$FAN_KINDS fan$n"
done
fan_rep() { run_list fanout "$1" "$FAN_LIST"; }
echo "run.sh: fan-out 1..8 consumers ..." >&2
reps fanout fan_rep "$FAN_REPS" "$FAN_REPS"

# =============================================================== 4. idle
idle_rep() { run_one idle "$1" idle "$BIN/bus_bench" idle "$IDLE_SECS"; }
echo "run.sh: idle sleeping consumer, $IDLE_SECS s ..." >&2
reps idle idle_rep "$IDLE_REPS" "$IDLE_REPS"

# =============================================================== 5. disk
mkdir -p "$DISK_DIR"
# What the writers write and a half more: the page cache, the ring, slack.
WARM="$BIN/spill_bench warm $((DISK_BYTES * 3 / 2 >> 20))"
export WARM
disk_rep() {
	local d=$DISK_DIR/rep$1 lb
	# Each writer starts with no dirty pages of the other's to flush, with
	# a warm page allocator (spill_bench.c, warm()), and runs again if the
	# host reclaimed guest memory meanwhile: disk_ref.sh, for both.
	run_one spill "$1" bus bash bench/disk_ref.sh run "$d" \
		"$BIN/spill_bench" spill "$d" "$DISK_BYTES" 1024 "$DISK_RING"
	lb=$(grep "^case=spill rep=$1 kind=bus " "$RAW" | sed -n 's/.* log_bytes=\([0-9]*\).*/\1/p' | tail -1)
	sync
	run_one spill "$1" ref bash bench/disk_ref.sh dd "$d" "$lb"
	run_one replay "$1" bus "$BIN/spill_bench" replay "$d"
	run_one replay "$1" ref bash bench/disk_ref.sh cat "$d/spill/0"
	rm -rf "$d"
}
echo "run.sh: disk: spill and replay of $((DISK_BYTES >> 20)) MiB through busd ..." >&2
reps disk disk_rep "$DISK_REPS" "$DISK_REPS"
rmdir "$DISK_DIR" 2>/dev/null || true
{
	echo "spill|spill: produce rate with busd spilling (log bytes) vs dd|bus|log_bytes_per_s|ref|bytes_per_s|hi|0.8|B"
	echo "replay|replay from segment files (log bytes) vs cat|bus|log_bytes_per_s|ref|bytes_per_s|hi|0.8|B"
} >>"$ROWS"

# busd_cpu - median busd CPU seconds per GB spilled, with the spread.
busd_cpu() {
	awk '/^case=spill / && / kind=bus / { for (i = 1; i <= NF; i++) if ($i ~ /^busd_cpu_s_per_gb=/) { split($i, a, "="); v[++n] = a[2] + 0 } }
	END {
		if (!n) { print "no data"; exit }
		for (i = 2; i <= n; i++) { t = v[i]; for (j = i - 1; j >= 1 && v[j] > t; j--) v[j + 1] = v[j]; v[j + 1] = t }
		m = n % 2 ? v[(n + 1) / 2] : (v[n / 2] + v[n / 2 + 1]) / 2
		printf "%.2f s per GB [%.2f-%.2f], %d runs", m, v[1], v[n], n
	}' "$RAW"
}

# ============================================================== tables
table() {
	awk -F'|' '
	function isort(arr, n,    i, j, t) {
		for (i = 2; i <= n; i++) {
			t = arr[i]
			for (j = i - 1; j >= 1 && arr[j] > t; j--) arr[j + 1] = arr[j]
			arr[j + 1] = t
		}
	}
	function med(arr, n) {
		isort(arr, n)
		return n % 2 ? arr[(n + 1) / 2] : (arr[n / 2] + arr[n / 2 + 1]) / 2
	}
	function fmt(v, unit) {
		if (unit == "ns") return sprintf("%.0f ns", v)
		if (unit == "rec") return sprintf("%.1f M/s", v / 1e6)
		return sprintf("%.2f GB/s", v / 1e9)
	}
	FNR == NR {
		# raw lines: space-separated key=value
		n = split($0, tok, " ")
		delete kv
		for (i = 1; i <= n; i++) if (split(tok[i], a, "=") == 2) kv[a[1]] = a[2]
		k = kv["case"] SUBSEP kv["rep"] SUBSEP kv["kind"]
		tag[k] = kv["tag"]
		for (f in kv) val[k, f] = kv[f]
		if (!((kv["case"], kv["rep"]) in seen)) {
			seen[kv["case"], kv["rep"]] = 1
			nrep[kv["case"]]++
			reps[kv["case"], nrep[kv["case"]]] = kv["rep"]
		}
		next
	}
	{
		cs = $1; label = $2; bk = $3; bf = $4; rk = $5; rf = $6; dir = $7; tgt = $8; unit = $9
		cnt["near"] = cnt["far"] = cnt["mixed"] = cnt["all"] = 0
		for (i = 1; i <= nrep[cs]; i++) {
			r = reps[cs, i]
			kb = cs SUBSEP r SUBSEP bk; kr = cs SUBSEP r SUBSEP rk
			if (!(kb in tag) || !(kr in tag)) continue
			t = tag[kb] == tag[kr] ? tag[kb] : "mixed"
			# The disk cases do not depend on where the two vCPUs sit:
			# every repetition counts.
			if (cs == "spill" || cs == "replay") t = "all"
			pt[i] = t; cnt[t]++
		}
		use = cnt["near"] >= cnt["far"] ? "near" : "far"
		if (cnt["all"]) use = "all"
		if (cnt[use] == 0) use = "mixed"
		m = 0
		for (i = 1; i <= nrep[cs]; i++) {
			r = reps[cs, i]
			kb = cs SUBSEP r SUBSEP bk; kr = cs SUBSEP r SUBSEP rk
			if (!(kb in tag) || !(kr in tag) || pt[i] != use) continue
			m++
			B[m] = val[kb, bf] + 0; R[m] = val[kr, rf] + 0
			Q[m] = R[m] > 0 ? B[m] / R[m] : 0
		}
		if (m == 0) { printf "| %s | - | - | - | - | no data |\n", label; next }
		bmin = bmax = B[1]; rmin = rmax = R[1]; qmin = qmax = Q[1]
		for (i = 1; i <= m; i++) {
			if (B[i] < bmin) bmin = B[i]; if (B[i] > bmax) bmax = B[i]
			if (R[i] < rmin) rmin = R[i]; if (R[i] > rmax) rmax = R[i]
			if (Q[i] < qmin) qmin = Q[i]; if (Q[i] > qmax) qmax = Q[i]
		}
		for (i = 1; i <= m; i++) { b2[i] = B[i]; r2[i] = R[i]; q2[i] = Q[i] }
		bm = med(b2, m); rm = med(r2, m); qm = med(q2, m)
		if (tgt == "-") verdict = "-"
		else if (dir == "lo") verdict = (qm <= tgt + 0 ? "ok" : "MISS") sprintf(" (<= %s)", tgt)
		else verdict = (qm >= tgt + 0 ? "ok" : "MISS") sprintf(" (>= %s)", tgt)
		printf "| %s | %s [%s-%s] | %s [%s-%s] | %.2f [%.2f-%.2f] | %s | %s %d/%d |\n",
			label, fmt(bm, unit), fmt(bmin, unit), fmt(bmax, unit),
			fmt(rm, unit), fmt(rmin, unit), fmt(rmax, unit),
			qm, qmin, qmax, verdict, use, m, nrep[cs]
		delete B; delete R; delete Q; delete b2; delete r2; delete q2; delete pt
	}' "$RAW" "$ROWS"
}

report() { # WHAT CASE KINDS REF [SIZE]
	awk -f bench/report.awk -v what="$1" -v cs="$2" -v kinds="$3" -v ref="$4" -v size="${5:-0}" "$RAW"
}

hugepages() {
	awk '/ kind=bus / && /bus_tput/ { for (i = 1; i <= NF; i++) if ($i ~ /^hugepages=/) { split($i, a, "="); h[a[2]] = 1 } }
	END { if ((1 in h) && (0 in h)) print "mixed"; else if (1 in h) print "yes"; else if (0 in h) print "no"; else print "unknown" }' "$RAW"
}

probe_summary() {
	awk -v near="$NEAR_NS" '{ for (i = 1; i <= NF; i++) if ($i ~ /^(pre|post)=/) { split($i, a, "="); p[a[2]]++ } }
	END { n = 0; f = 0; for (v in p) { if (v + 0 < near) n += p[v]; else f += p[v] } printf "%d near, %d far", n, f }' "$RAW"
}

pkgver() { dpkg-query -W -f='${Version}' "$1" 2>/dev/null || echo '?'; }

CPU=$(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -1)
CORES=$(lscpu 2>/dev/null | awk -F: '/^Core\(s\) per socket/ { c = $2 } /^Socket\(s\)/ { s = $2 } /^Thread\(s\) per core/ { t = $2 }
	END { gsub(/ /, "", c); gsub(/ /, "", s); gsub(/ /, "", t); if (c != "") printf "%s socket(s) x %s core(s) x %s thread(s)", s, c, t }')
VIRT=$(lscpu 2>/dev/null | sed -n 's/^Hypervisor vendor:[[:space:]]*//p')
THP=$(sed -n 's/.*\[\(.*\)\].*/\1/p' /sys/kernel/mm/transparent_hugepage/enabled 2>/dev/null || echo '?')
HOST=$(hostname -s 2>/dev/null || hostname)
# The CPU in the file name as well: machines here are all called "vm", and
# runs on two kinds of machine on one day would overwrite each other.
CPUTAG=$(awk -F': *' '/^vendor_id/ && !v { v = tolower($2); sub(/^genuine/, "", v); sub(/^authentic/, "", v) }
	/^cpu family/ && !f { f = $2 } /^model[ \t]*:/ && !m { m = $2 }
	END { if (v != "") printf "%s-%s-%s", v, f, m }' /proc/cpuinfo 2>/dev/null)
[ -z "$CPUTAG" ] || HOST=$HOST-$CPUTAG
REV=$(git rev-parse --short HEAD 2>/dev/null || echo none)
if [ -n "$(git status --porcelain 2>/dev/null | head -1)" ]; then REV="$REV+dirty"; fi
SHMBASE=${BUS_BENCH_SHM_BASE:-default}
mkdir -p bench/results
if [ "$MODE" = quick ]; then
	STEM=$DATE-$HOST-quick
else
	STEM=$DATE-$HOST
fi
OUT=bench/results/$STEM.md

# =============================================================== plots
PLOTS=""
if command -v gnuplot >/dev/null; then
	GP_HEAD="set terminal pngcairo size 1000,620 font ',10'; set grid; set key outside right top"
	for s in $B_RTT_SIZES; do
		png=$STEM-rtt$s.png
		report plotrtt "brtt$s" "$RTT_KINDS" bus >"$TMP/rtt$s.dat"
		plot="" i=0
		for k in $RTT_KINDS; do
			plot="$plot${plot:+, }'$TMP/rtt$s.dat' index $i using 1:2 with linespoints $(style "$k") title '$(label "$k")'"
			i=$((i + 1))
		done
		gnuplot -e "$GP_HEAD; set output 'bench/results/$png';
			set title 'Round trip, $(human_size "$s") values, pinned CPUs ${BENCH_CPU_A:-0}/${BENCH_CPU_B:-1}: latency by percentile (median of the repetitions)';
			set logscale xy; set xlabel 'percentile'; set ylabel 'round trip (ns)';
			set xtics ('50%%' 2, '90%%' 10, '99%%' 100, '99.9%%' 1000, '99.99%%' 10000, 'max' 100000);
			plot $plot" || fail "gnuplot (rtt $s)"
		PLOTS="$PLOTS $png"
	done
	png=$STEM-tput.png
	: >"$TMP/tput-bus.dat"
	: >"$TMP/tput-classic.dat"
	: >"$TMP/tput-slot.dat"
	for s in $TPUT_SIZES; do
		for k in bus classic slot; do
			report plottput "tput$s" "$k" bus "$s" >>"$TMP/tput-$k.dat"
		done
	done
	plot=""
	for k in bus classic slot; do
		plot="$plot${plot:+, }'$TMP/tput-$k.dat' using 1:(\$2/1e9) with linespoints $(style "$k") title '$(label "$k")'"
	done
	for k in $(echo "$TPUT_ALT" | cut -d'|' -f1); do
		: >"$TMP/tput-$k.dat"
		for s in $B_TPUT_SIZES; do
			report plottput "btput$s" "$k" bus "$s" >>"$TMP/tput-$k.dat"
		done
		plot="$plot, '$TMP/tput-$k.dat' using 1:(\$2/1e9) with linespoints $(style "$k") title '$(label "$k")'"
	done
	gnuplot -e "$GP_HEAD; set output 'bench/results/$png';
		set title 'Throughput, 1 producer to 1 consumer, by record size (median of the repetitions)';
		set logscale x 2; set logscale y 10; set format y '%g'; set xlabel 'value size (bytes)'; set ylabel 'payload GB/s';
		plot $plot" || fail "gnuplot (tput)"
	PLOTS="$PLOTS $png"
	png=$STEM-fanout.png
	report plotfan fanout "$FAN_KINDS" fan1 >"$TMP/fan.dat"
	gnuplot -e "$GP_HEAD; set output 'bench/results/$png';
		set title 'Fan-out: 1 producer, N gating consumer processes, 64 B records (median of the repetitions)';
		set xlabel 'consumers'; set ylabel 'M records/s'; set logscale x 2; set xrange [0.8:10]; set xtics (1, 2, 4, 8); set yrange [0:*];
		plot '$TMP/fan.dat' using 1:(\$2/1e6) with linespoints lw 3 title 'delivered (all consumers)',
		     '' using 1:(\$3/1e6) with linespoints lw 2 title 'per consumer (slowest)'" || fail "gnuplot (fan-out)"
	PLOTS="$PLOTS $png"
else
	echo "run.sh: gnuplot not found: no plots" >&2
fi

# ============================================================== report
RTT_HEAD="| transport | p50 | p90 | p99 | p99.9 | p99.99 (info) | max (info) | round trips | bus ÷ this, p50 | bus ÷ this, p99.9 | tag |
|---|---|---|---|---|---|---|---|---|---|---|"
TPUT_HEAD="| transport | records/s | payload | bus ÷ this | producer CPU s / M rec | consumer CPU s / M rec | producer peak RSS MiB | consumer peak RSS MiB | tag |
|---|---|---|---|---|---|---|---|---|"
FAN_HEAD="| consumers | wait | delivered records/s | per consumer (slowest) | ÷ 1 consumer | producer CPU s / M rec | consumer CPU s / M delivered | tag |
|---|---|---|---|---|---|---|---|"
IDLE_HEAD="| idle for | consumer CPU used | CPU % | wake-up latency (append to poll return) | tag |
|---|---|---|---|---|"

targets_md() {
	echo "| case | bus | reference | ratio | target | tag |"
	echo "|---|---|---|---|---|---|"
	table
}

{
	echo "# bus benchmark ($MODE), $DATE, $HOST"
	echo
	echo "## Machine"
	echo
	echo "- CPU: $CPU; ${CORES:-?}; $(nproc) CPUs online${VIRT:+; virtualised ($VIRT)}; workers pinned to CPUs ${BENCH_CPU_A:-0} and ${BENCH_CPU_B:-1}"
	echo "- Kernel: $(uname -r); clocksource $(cat /sys/devices/system/clocksource/clocksource0/current_clocksource 2>/dev/null || echo '?')"
	echo "- Huge pages for the bus rings: $(hugepages) (shm base: $SHMBASE; HugePages_Total $(awk '/^HugePages_Total/ {print $2}' /proc/meminfo)); transparent huge pages: $THP"
	echo "- Source: $REV; build dir $BUILD; libzmq $(pkgver libzmq3-dev), iceoryx $(pkgver libiceoryx-binding-c-dev)"
	echo "- Load average before the run: $LOAD_START (other work on the box skews the tails)"
	echo "- Probes (bare ping-pong p50, $PROBE_ROUNDS round trips, near < $NEAR_NS ns): $(probe_summary)"
	echo "- Figures: median [min-max] over the repetitions of the tag shown (n/total);"
	echo "  a ratio is taken per repetition, then the median. Maxima are host"
	echo "  descheduling, information only. Run time: $(($(date +%s) - T_START)) s."
	if [ -s "$DROPPED" ]; then
		echo "- Left out (an alternative that failed twice in a repetition):"
		sed 's/^/  - /' "$DROPPED"
	fi
	echo
	echo "## Targets: bus against the bare limits"
	echo
	echo "$REPS repetitions; rtt $ROUNDS round trips after $WARMUP warm-up; tput ring $RING bytes."
	echo "Disk: $DISK_REPS repetitions of $((DISK_BYTES >> 20)) MiB of 1 KiB values through busd into"
	echo "$DISK_DIR ($(df -h --output=source,fstype "$BUILD" 2>/dev/null | tail -1 | tr -s ' ')), against dd writing as many"
	echo "bytes there and cat reading the segment files. Writer runs made again because"
	echo "the host reclaimed guest memory meanwhile (bench/disk_ref.sh): busd $(reclaimed bus), dd $(reclaimed ref)."
	echo "How the replays read sealed"
	echo "segments (BUS_REPLAY; by default each measures read against map once):"
	echo "$(grep -o 'case=replay [^ ]* kind=bus .*method=[a-z]*' "$RAW" | sed 's/.*method=//' | sort | uniq -c |
		awk '{ printf "%s%s %d/%d", (NR > 1 ? ", " : ""), $2, $1, t }' t="$DISK_REPS")."
	echo "Ratio = bus / reference: rtt lower is better, tput higher is better."
	echo "The rtt reference is the bare counter ping-pong; the rows \"vs bare message\""
	echo "compare with the floor for a message of the same size instead (bare_pingpong msg:"
	echo "the value and a sequence word, 8-byte aligned, no header, no clock)."
	echo
	targets_md
	echo
	echo "## Round trip against the alternatives"
	echo
	echo "Ping on CPU ${BENCH_CPU_A:-0}, pong on CPU ${BENCH_CPU_B:-1}, both pinned, every transport with the same"
	echo "values (word 0 the sequence number, checked on return). $B_REPS repetitions;"
	echo "$B_ROUNDS round trips after $B_WARMUP warm-up, except the slow kinds (blocking"
	echo "variants and ZeroMQ: $B_SLOW_ROUNDS after $B_SLOW_WARMUP). \"bus ÷ this\" below 1: bus is faster."
	echo "How each is configured: see \"Baselines\" below."
	for s in $B_RTT_SIZES; do
		echo
		echo "### $(human_size "$s") values"
		echo
		echo "$RTT_HEAD"
		report rtt "brtt$s" "$RTT_KINDS" bus
		[ ! -f "bench/results/$STEM-rtt$s.png" ] || {
			echo
			echo "![round trip percentiles, $(human_size "$s")]($STEM-rtt$s.png)"
		}
	done
	echo
	echo "## Throughput against the alternatives"
	echo
	echo "One producer (CPU ${BENCH_CPU_A:-0}) to one consumer (CPU ${BENCH_CPU_B:-1}); every record's words are summed"
	echo "and checked by the consumer; nothing may be lost. $B_REPS repetitions; $B_TPUT_RECORDS records"
	echo "(bus and the bare rings: $B_TPUT_FAST). \"bus ÷ this\" above 1: bus is faster."
	echo "CPU: user + system time of each process (all its threads, ZeroMQ's I/O thread"
	echo "included) over the measured phase, per million records; RSS: VmHWM (shared"
	echo "ring or chunk pages the process touched count)."
	for s in $B_TPUT_SIZES; do
		echo
		echo "### $(human_size "$s") values"
		echo
		echo "$TPUT_HEAD"
		report tput "btput$s" "$TPUT_KINDS" bus
	done
	[ ! -f "bench/results/$STEM-tput.png" ] || {
		echo
		echo "The plot takes bus and the bare rings at every size from the targets runs,"
		echo "the alternatives at ${B_TPUT_SIZES// / and } B from the runs above."
		echo
		echo "![throughput by record size]($STEM-tput.png)"
	}
	echo
	echo "## Fan-out"
	echo
	echo "One producer (CPU ${BENCH_CPU_A:-0}) to N gating consumer processes on an ephemeral topic with"
	echo "the block overflow policy (nothing lost; every record checked by every"
	echo "consumer), 64 B values, $FAN_RECORDS records, 4 MiB ring, $FAN_REPS repetitions."
	echo "Consumers busy-spin, pinned, while they and the producer fit on the"
	echo "$(nproc) CPUs; beyond that they use BUS_WAIT_SLEEP, unpinned. Delivered ="
	echo "N x records / the slowest consumer's time."
	echo
	echo "$FAN_HEAD"
	report fanout fanout "$FAN_KINDS" fan1
	[ ! -f "bench/results/$STEM-fanout.png" ] || {
		echo
		echo "![fan-out]($STEM-fanout.png)"
	}
	echo
	echo "## Cost"
	echo
	echo "CPU seconds per million records and peak RSS of bus's producer and"
	echo "consumer: the **bus** rows of the throughput tables (and the fan-out table"
	echo "for N consumers)."
	echo
	echo "busd, spilling (the disk rows of the targets table: $((DISK_BYTES >> 20)) MiB of 1 KiB values, a"
	echo "16 MiB ring, fsync never): $(busd_cpu) of CPU time (user + system)"
	echo "per GB of log written."
	echo "Idle consumer: a BUS_WAIT_SLEEP consumer (CPU ${BENCH_CPU_B:-1}) waiting in bus_consumer_poll()"
	echo "on an empty topic while the producer sleeps, then one record wakes it;"
	echo "$IDLE_REPS repetitions."
	echo
	echo "$IDLE_HEAD"
	report idle idle idle idle
	echo
	echo "## Baselines"
	echo
	echo "Sources: bench/base_uds.c, bench/base_pipe.c, bench/ext/base_zmq.c,"
	echo "bench/ext/base_iceoryx.c (driver bench/base_common.h, the same loops as"
	echo "bench/bus_bench.c). Every send copies the value once into the transport, as"
	echo "bus_produce() copies it into the ring; receivers use it in place where the"
	echo "transport allows."
	echo
	echo "- **Unix sockets**: socketpair(AF_UNIX, SOCK_STREAM or SOCK_SEQPACKET), default"
	echo "  buffers (AF_UNIX has no latency option). Blocking recv(), or busy-poll:"
	echo "  O_NONBLOCK and recv()/send() retried at once on EAGAIN. Streams are read in"
	echo "  bulk for throughput (every whole record received at once)."
	echo "- **Pipe**: one per direction; blocking, or O_NONBLOCK busy-poll; grown to"
	echo "  /proc/sys/fs/pipe-max-size with F_SETPIPE_SZ for throughput."
	echo "- **ZeroMQ** $(pkgver libzmq3-dev): ZMQ_PAIR over ipc://, defaults (1 I/O thread, HWM 1000,"
	echo "  linger -1); zmq_send copies, zmq_msg_recv hands out the message in place."
	echo "  Blocking, or ZMQ_DONTWAIT retried on EAGAIN. The process (and so its I/O"
	echo "  thread) is pinned; a spinning application thread then competes with its"
	echo "  own I/O thread, which is why the spin variant is slower than blocking here."
	echo "- **iceoryx** $(pkgver libiceoryx-binding-c-dev) (C binding), as its iceperf benchmark does: publisher"
	echo "  historyCapacity 0, subscriber historyRequest 0, queue 256 (the maximum),"
	echo "  WAIT_FOR_CONSUMER / BLOCK_PRODUCER so nothing is lost; loan, copy in,"
	echo "  publish; take, use in place, release. Busy-poll take, or a WaitSet on"
	echo "  HAS_DATA. RouDi: iox-roudi -c bench/roudi.toml, started and stopped by run.sh."
} >"$TMP/report.md"

cp "$TMP/report.md" "$OUT"
cp "$RAW" "bench/results/$STEM.raw"

# README: the headline tables of a full run between the markers.
if [ "$MODE" = full ] && [ "${BENCH_README:-1}" != 0 ] && grep -q '<!-- bench-table -->' README.md 2>/dev/null; then
	{
		echo "<!-- bench-table -->"
		echo "Latest full run: [bench/results/$STEM.md](bench/results/$STEM.md) ($DATE, $HOST, $REV;"
		echo "$CPU, $(nproc) CPUs, kernel $(uname -r), huge pages: $(hugepages))."
		echo
		targets_md
		echo
		hs=$(human_size 64)
		echo "Round trip, $hs, p50 and p99.9 (\"bus ÷ this\" below 1: bus is faster):"
		echo
		echo "| transport | p50 | p99.9 | bus ÷ this (p50) |"
		echo "|---|---|---|---|"
		report summary brtt64 "$RTT_KINDS" bus
		echo
		echo "Throughput, one producer to one consumer, $hs (\"bus ÷ this\" above 1: bus is faster):"
		echo
		echo "| transport | records/s | payload | bus ÷ this |"
		echo "|---|---|---|---|"
		report tsummary btput64 "$TPUT_KINDS" bus
		echo
		echo -n "Plots:"
		for p in $PLOTS; do echo -n " [${p#"$STEM"-}](bench/results/$p)"; done
		echo
		echo "<!-- /bench-table -->"
	} >"$TMP/readme-block"
	awk -v blk="$TMP/readme-block" '
		/<!-- bench-table -->/ { while ((getline l < blk) > 0) print l; skip = 1; next }
		/<!-- \/bench-table -->/ { skip = 0; next }
		!skip { print }' README.md >"$TMP/README.md"
	cp "$TMP/README.md" README.md
	echo "run.sh: README.md table updated" >&2
fi

cat "$TMP/report.md"
echo
echo "run.sh: written to $OUT$(for p in $PLOTS; do echo -n " bench/results/$p"; done) in $(($(date +%s) - T_START)) s" >&2
