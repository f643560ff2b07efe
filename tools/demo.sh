#!/usr/bin/env bash
# demo.sh - a real run of the bus (make demo): a private bus in temporary
# directories, the daemon busd spilling to disk, one persistent topic with
# 3 small partition rings, two producers and a live consumer running at
# once, then a replay from the start that reads what has left the rings
# from disk, the topic's description, and a clean stop of busd.
set -eu

cd "$(dirname "$0")/.."
BUS=${BUILD:-build}/bin/bus
BUSD=${BUILD:-build}/bin/busd
for bin in "$BUS" "$BUSD"; do
	if [ ! -x "$bin" ]; then
		echo "demo: $bin is not built (run make)" >&2
		exit 1
	fi
done

PER_PRODUCER=${DEMO_RECORDS:-10000}
TOTAL=$((2 * PER_PRODUCER))

WORK=$(mktemp -d)
BUS_SHM_DIR=$(mktemp -d)
BUS_DATA_DIR=$(mktemp -d)
export BUS_SHM_DIR BUS_DATA_DIR
export BUS_NAME=demo
PIDS=""
cleanup() {
	for pid in $PIDS; do kill "$pid" 2>/dev/null || true; done
	rm -rf "$WORK" "$BUS_SHM_DIR" "$BUS_DATA_DIR"
}
trap cleanup EXIT

step() { printf '\n== %s\n' "$*"; }
die() {
	echo "demo: FAILED: $*" >&2
	exit 1
}

# quotes SEED SYMBOL...: PER_PRODUCER lines "SYMBOL:price seq" on stdout,
# with a per-producer sequence number so that order can be checked.
quotes() {
	local seed=$1
	shift
	awk -v n="$PER_PRODUCER" -v seed="$seed" -v syms="$*" 'BEGIN {
		k = split(syms, s, " "); srand(seed)
		for (i = 0; i < k; i++) price[s[i + 1]] = 100 + 50 * rand()
		for (i = 1; i <= n; i++) {
			sym = s[1 + int(rand() * k)]
			price[sym] += rand() - 0.5
			printf "%s:%.2f %d\n", sym, price[sym], i
		}
	}'
}

step "a private bus '$BUS_NAME' in $BUS_SHM_DIR (shared memory) and $BUS_DATA_DIR (logs)"

step "start the daemon: busd spills persistent topics to $BUS_DATA_DIR"
echo "\$ busd --foreground 2> busd.log &"
"$BUSD" --foreground 2>"$WORK/busd.log" &
BUSD_PID=$!
PIDS="$PIDS $BUSD_PID"
for _ in $(seq 100); do
	grep -q "spilling" "$WORK/busd.log" 2>/dev/null && break
	kill -0 "$BUSD_PID" 2>/dev/null || die "busd exited: $(cat "$WORK/busd.log")"
	sleep 0.05
done
sed 's/^/    /' "$WORK/busd.log"

step "create the persistent topic 'quotes': 3 partitions, rings of 64 KiB (the rest goes to disk)"
echo "\$ bus topic create quotes --partitions 3 --ring-size 64K"
"$BUS" topic create quotes --partitions 3 --ring-size 64K

step "start a live consumer in the background: it waits for all $TOTAL records (-c $TOTAL)"
printf '%s\n' "\$ bus consume quotes -c $TOTAL -f '%p %o %k %s\\n' > live.txt &"
"$BUS" consume quotes -c "$TOTAL" -f '%p %o %k %s\n' >"$WORK/live.txt" &
LIVE=$!
PIDS="$PIDS $LIVE"
sleep 0.2

step "start 2 producers in the background, $PER_PRODUCER keyed quotes each (key before ':')"
echo "\$ quotes AAPL MSFT GOOG CSCO | bus produce quotes -k : &"
echo "\$ quotes AMZN NVDA INTC | bus produce quotes -k : &"
quotes 1 AAPL MSFT GOOG CSCO | "$BUS" produce quotes -k : &
P1=$!
quotes 2 AMZN NVDA INTC | "$BUS" produce quotes -k : &
P2=$!
PIDS="$PIDS $P1 $P2"
wait "$P1" || die "producer 1 failed"
wait "$P2" || die "producer 2 failed"
echo "both producers are done"

step "wait for the live consumer (at most 20 s)"
for _ in $(seq 200); do
	kill -0 "$LIVE" 2>/dev/null || break
	sleep 0.1
done
if kill -0 "$LIVE" 2>/dev/null; then
	kill -TERM "$LIVE"
	die "the live consumer has only $(wc -l <"$WORK/live.txt") of $TOTAL records after 20 s"
fi
wait "$LIVE" || die "the live consumer failed"
live=$(wc -l <"$WORK/live.txt")
echo "the live consumer printed $live records; the first ones:"
head -n 5 "$WORK/live.txt" | sed 's/^/    /'

step "the rings hold only the newest records; busd spilled everything to disk"
"$BUS" topic describe quotes | sed -n '/PARTITION/,$p' | sed 's/^/    /'

step "replay from the earliest offset to the end (-e): older records come from disk"
printf '%s\n' "\$ bus consume quotes --from earliest -e -f 'partition %p offset %o: %k = %s\\n'"
"$BUS" consume quotes --from earliest -e -f 'partition %p offset %o: %k = %s\n' >"$WORK/replay.txt"
replay=$(wc -l <"$WORK/replay.txt")
head -n 3 "$WORK/replay.txt" | sed 's/^/    /'
echo "    ..."
tail -n 2 "$WORK/replay.txt" | sed 's/^/    /'
echo "the replay printed $replay records"

step "records per partition and symbol (a key always lands in one partition)"
awk '{ n[$1 " " $3]++ } END { for (k in n) print k, n[k] }' "$WORK/live.txt" | sort |
	awk '{ printf "    partition %s  %-5s %5d records\n", $1, $2, $3 }'

step "bus topic describe quotes"
"$BUS" topic describe quotes | sed 's/^/    /'

step "bus topic list"
"$BUS" topic list | sed 's/^/    /'

step "stop busd with SIGTERM: it spills everything committed, then exits 0"
echo "\$ kill -TERM \$busd"
kill -TERM "$BUSD_PID"
wait "$BUSD_PID" || die "busd did not stop cleanly"
PIDS=${PIDS/ $BUSD_PID/}
echo "busd's log:"
sed 's/^/    /' "$WORK/busd.log"
echo "the segment files of partition 0:"
ls -l "$BUS_DATA_DIR/quotes/0" | sed 's/^/    /'

step "check the counts"
appended=$("$BUS" topic describe quotes | awk '/^ *PARTITION/ { t = 1; next } t && $1 ~ /^[0-9]+$/ { s += $4 } END { print s + 0 }')
disk_first=$("$BUS" topic describe quotes --json | grep -o '"first_offset_disk":[0-9a-z]*' | head -1)
ring_first=$("$BUS" topic describe quotes | awk '/^ *PARTITION/ { t = 1; next } t && $1 == "0" { print $3 }')
[ "$disk_first" = '"first_offset_disk":0' ] || die "partition 0's log does not start at 0 ($disk_first)"
[ "$ring_first" -gt 0 ] || die "the ring still holds every record: nothing was read from disk"
echo "partition 0: offsets from 0 on disk, from $ring_first in the ring"
echo "produced $TOTAL, appended $appended (sum of next offsets), live $live, replay $replay"
[ "$appended" -eq "$TOTAL" ] || die "the topic holds $appended records, expected $TOTAL"
[ "$live" -eq "$TOTAL" ] || die "the live consumer printed $live records, expected $TOTAL"
[ "$replay" -eq "$TOTAL" ] || die "the replay printed $replay records, expected $TOTAL"
# Per key: one partition, and each producer's sequence numbers in order.
awk '{ p = $1; k = $3; seq = $5
       if ((k in part) && part[k] != p) { print "key " k " in partitions " part[k] " and " p; exit 1 }
       part[k] = p
       if (seq <= last[k]) { print "key " k ": record " seq " after " last[k]; exit 1 }
       last[k] = seq }' "$WORK/live.txt" || die "per-key placement or order is wrong"
cmp -s <(awk '{ print $1, $2, $3, $4, $5 }' "$WORK/live.txt" | sort) \
	<(awk '{ sub(":", "", $4); print $2, $4, $5, $7, $8 }' "$WORK/replay.txt" | sort) ||
	die "the live consumer and the replay saw different records"
echo "demo: ok"
