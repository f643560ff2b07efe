#!/usr/bin/env bash
# bench/run.sh quick|full - run the benchmark programs (already built by make
# into $BUILD/bench) and print bus against the bare references as a markdown
# table, also written to bench/results/<date>-<host>[-quick].md.
#
# Protocol (shared/BENCH.md): every run is bracketed by a short bare
# ping-pong probe (its p50 below $BENCH_NEAR_NS, default 180 ns, means the
# two vCPUs are "near", else "far").  A repetition runs the bus case and its
# references back to back (the order alternates between repetitions); it is
# tagged near or far when all its runs are, else mixed.  Figures are medians
# over the repetitions of the most frequent tag (near on a tie), with the
# spread [min-max]; ratios are per repetition, then the median.  When fewer
# than half the repetitions share a tag, up to as many again are run.
#
#   quick: 3 repetitions; rtt 64 B (200k round trips); tput 64 B, 1 KiB
#   full:  5 repetitions; rtt 32/64/256/1024 B (1M round trips);
#          tput 16/64/256/1024/65536 B
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
for p in bare_pingpong bare_ring bus_bench; do
	if [ ! -x "$BIN/$p" ]; then
		echo "run.sh: $BIN/$p not built (run make first)" >&2
		exit 1
	fi
done

LOAD_START=$(cut -d' ' -f1-3 /proc/loadavg)
TMP=$(mktemp -d /tmp/bus-bench-run.XXXXXX)
trap 'rm -rf "$TMP"' EXIT
RAW=$TMP/raw
ROWS=$TMP/rows
: >"$RAW"
: >"$ROWS"

if [ "$MODE" = quick ]; then
	REPS=3
	ROUNDS=200000
	WARMUP=20000
	RTT_SIZES="64"
	TPUT_SIZES="64 1024"
	TPUT_BYTES=$((2 << 30))
	TPUT_MAX=10000000
else
	REPS=5
	ROUNDS=1000000
	WARMUP=100000
	RTT_SIZES="32 64 256 1024"
	TPUT_SIZES="16 64 256 1024 65536"
	TPUT_BYTES=$((4 << 30))
	TPUT_MAX=20000000
fi
RING=$((4 << 20))
PROBE_ROUNDS=20000
PROBE_WARMUP=2000

fail() {
	echo "run.sh: FAILED: $*" >&2
	exit 1
}

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

LAST_PROBE=""
# run_one CASE REP KIND CMD... - run CMD between two probes, record its line.
run_one() {
	local cs=$1 rep=$2 kind=$3 out pre post line
	shift 3
	[ -n "$LAST_PROBE" ] || LAST_PROBE=$(probe)
	pre=$LAST_PROBE
	if ! out=$("$@" 2>&1); then
		fail "$cs rep $rep ($kind): $*"$'\n'"$out"
	fi
	line=$(echo "$out" | grep -E '^(bare_pingpong|bare_ring|bus_rtt|bus_tput) ' | tail -1)
	[ -n "$line" ] || fail "$cs rep $rep ($kind): no result line from: $*"$'\n'"$out"
	if echo "$out" | grep -v -E '^(bare_pingpong|bare_ring|bus_rtt|bus_tput) ' | grep -q .; then
		echo "$out" | grep -v -E '^(bare_pingpong|bare_ring|bus_rtt|bus_tput) ' | sed "s/^/  [$cs $kind] /" >&2
	fi
	post=$(probe)
	LAST_PROBE=$post
	echo "case=$cs rep=$rep kind=$kind tag=$(tag_of "$pre" "$post") pre=$pre post=$post $line" >>"$RAW"
}

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

# reps CASE FN - call FN REP for REPS repetitions, plus extra ones while the
# tags are too mixed.
reps() {
	local cs=$1 fn=$2 r=1 max=$((REPS * 2))
	while [ $r -le "$REPS" ] || { [ $r -le $max ] && ! enough "$cs"; }; do
		$fn "$r"
		r=$((r + 1))
	done
}

human_size() {
	case $1 in
	1024) echo "1 KiB" ;;
	65536) echo "64 KiB" ;;
	*) echo "$1 B" ;;
	esac
}

# ------------------------------------------------------------------ rtt
for s in $RTT_SIZES; do
	cs="rtt$s"
	rtt_rep() {
		if [ $(($1 % 2)) -eq 1 ]; then
			run_one "$cs" "$1" ref "$BIN/bare_pingpong" $ROUNDS $WARMUP
			run_one "$cs" "$1" bus "$BIN/bus_bench" rtt "$s" $ROUNDS $WARMUP
		else
			run_one "$cs" "$1" bus "$BIN/bus_bench" rtt "$s" $ROUNDS $WARMUP
			run_one "$cs" "$1" ref "$BIN/bare_pingpong" $ROUNDS $WARMUP
		fi
	}
	echo "run.sh: rtt $(human_size "$s") ..." >&2
	reps "$cs" rtt_rep
	hs=$(human_size "$s")
	{
		echo "$cs|rtt $hs p50|bus|rtt_p50_ns|ref|rtt_p50_ns|lo|1.2|ns"
		echo "$cs|rtt $hs p90|bus|p90|ref|p90|lo|-|ns"
		echo "$cs|rtt $hs p99|bus|p99|ref|p99|lo|-|ns"
		echo "$cs|rtt $hs p99.9|bus|p999|ref|p999|lo|2|ns"
		echo "$cs|rtt $hs p99.99 (info)|bus|p9999|ref|p9999|lo|-|ns"
		echo "$cs|rtt $hs max (info)|bus|max|ref|max|lo|-|ns"
	} >>"$ROWS"
done

# ----------------------------------------------------------------- tput
for s in $TPUT_SIZES; do
	cs="tput$s"
	n=$((TPUT_BYTES / s))
	[ $n -le $TPUT_MAX ] || n=$TPUT_MAX
	tput_rep() {
		if [ $(($1 % 2)) -eq 1 ]; then
			run_one "$cs" "$1" classic "$BIN/bare_ring" classic "$s" "$n" $RING
			run_one "$cs" "$1" slot "$BIN/bare_ring" slot "$s" "$n" $RING
			run_one "$cs" "$1" bus "$BIN/bus_bench" tput "$s" "$n" $RING
		else
			run_one "$cs" "$1" bus "$BIN/bus_bench" tput "$s" "$n" $RING
			run_one "$cs" "$1" classic "$BIN/bare_ring" classic "$s" "$n" $RING
			run_one "$cs" "$1" slot "$BIN/bare_ring" slot "$s" "$n" $RING
		fi
	}
	echo "run.sh: tput $(human_size "$s") ($n records) ..." >&2
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

# ---------------------------------------------------------------- table
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
		if (kv["kind"] == "bus" && ("hugepages" in kv)) huge[kv["hugepages"]] = 1
		next
	}
	{
		cs = $1; label = $2; bk = $3; bf = $4; rk = $5; rf = $6; dir = $7; tgt = $8; unit = $9
		cnt["near"] = cnt["far"] = cnt["mixed"] = 0
		for (i = 1; i <= nrep[cs]; i++) {
			r = reps[cs, i]
			kb = cs SUBSEP r SUBSEP bk; kr = cs SUBSEP r SUBSEP rk
			if (!(kb in tag) || !(kr in tag)) continue
			t = tag[kb] == tag[kr] ? tag[kb] : "mixed"
			pt[i] = t; cnt[t]++
		}
		use = cnt["near"] >= cnt["far"] ? "near" : "far"
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

hugepages() {
	awk '/ kind=bus / && /bus_tput/ { for (i = 1; i <= NF; i++) if ($i ~ /^hugepages=/) { split($i, a, "="); h[a[2]] = 1 } }
	END { if ((1 in h) && (0 in h)) print "mixed"; else if (1 in h) print "yes"; else if (0 in h) print "no"; else print "unknown" }' "$RAW"
}

probe_summary() {
	awk -v near="$NEAR_NS" '{ for (i = 1; i <= NF; i++) if ($i ~ /^(pre|post)=/) { split($i, a, "="); p[a[2]]++ } }
	END { n = 0; f = 0; for (v in p) { if (v + 0 < near) n += p[v]; else f += p[v] } printf "%d near, %d far", n, f }' "$RAW"
}

CPU=$(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -1)
DATE=$(date +%F)
HOST=$(hostname -s 2>/dev/null || hostname)
REV=$(git rev-parse --short HEAD 2>/dev/null || echo none)
if [ -n "$(git status --porcelain 2>/dev/null | head -1)" ]; then REV="$REV+dirty"; fi
SHMBASE=${BUS_BENCH_SHM_BASE:-default}
mkdir -p bench/results
if [ "$MODE" = quick ]; then
	OUT=bench/results/$DATE-$HOST-quick.md
else
	OUT=bench/results/$DATE-$HOST.md
fi

{
	echo "# bus benchmark ($MODE), $DATE, $HOST"
	echo
	echo "- CPU: $CPU; $(nproc) CPUs online; workers pinned to CPUs ${BENCH_CPU_A:-0} and ${BENCH_CPU_B:-1}"
	echo "- Kernel: $(uname -r); clocksource $(cat /sys/devices/system/clocksource/clocksource0/current_clocksource 2>/dev/null || echo '?')"
	echo "- Huge pages for the bus rings: $(hugepages) (shm base: $SHMBASE; HugePages_Total $(awk '/^HugePages_Total/ {print $2}' /proc/meminfo))"
	echo "- Source: $REV; build dir $BUILD"
	echo "- Load average before the run: $LOAD_START (other work on the box skews the tails)"
	echo "- $REPS repetitions; rtt $ROUNDS round trips after $WARMUP warm-up; tput ring $RING bytes"
	echo "- Probes (bare ping-pong p50, $PROBE_ROUNDS round trips, near < $NEAR_NS ns): $(probe_summary)"
	echo "- Figures: median [min-max] over the repetitions of the tag shown (n/total);"
	echo "  ratio = bus / reference per repetition, then the median. Rtt: lower is better;"
	echo "  tput: higher is better. Maxima are host descheduling, information only."
	echo
	echo "| case | bus | reference | ratio | target | tag |"
	echo "|---|---|---|---|---|---|"
	table
} >"$TMP/table.md"

cp "$TMP/table.md" "$OUT"
cat "$TMP/table.md"
echo
echo "run.sh: written to $OUT" >&2
