#!/usr/bin/env bash
# demo.sh - a real run of the bus (make demo): a private bus in temporary
# directories, one ephemeral topic with 3 partitions, two producers and a
# live consumer running at once, then a replay from the start.
set -eu

cd "$(dirname "$0")/.."
BUS=${BUILD:-build}/bin/bus
if [ ! -x "$BUS" ]; then
	echo "demo: $BUS is not built (run make)" >&2
	exit 1
fi

PER_PRODUCER=${DEMO_RECORDS:-5000}
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

step "create the ephemeral topic 'quotes' with 3 partitions"
echo "\$ bus topic create quotes --partitions 3 --ephemeral"
"$BUS" topic create quotes --partitions 3 --ephemeral

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

step "replay from the earliest offset to the end (-e) with a format string"
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

step "check the counts"
appended=$("$BUS" topic describe quotes | awk '$2 == "-" { s += $4 } END { print s + 0 }')
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
