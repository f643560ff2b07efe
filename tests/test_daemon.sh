#!/usr/bin/env bash
# test_daemon.sh - busd as a user runs it, with the `bus` command: in the
# foreground and detached, a persistent topic spilled and replayed from
# disk, SIGHUP, a second daemon refused, SIGTERM, usage errors that name
# the option, a bus that cannot be opened named.  Run by `make test` in
# every build, so also with the sanitizers' busd (`make tsan test` checks
# its two threads: the spill loop and the heartbeat).
set -eu

cd "$(dirname "$0")/.."
BUS=${BUILD:-build}/bin/bus
BUSD=${BUILD:-build}/bin/busd
for bin in "$BUS" "$BUSD"; do
	if [ ! -x "$bin" ]; then
		echo "test_daemon: $bin is not built (run make)" >&2
		exit 1
	fi
done

TMP=$(mktemp -d)
BUS_SHM_DIR=$(mktemp -d)
BUS_DATA_DIR=$(mktemp -d)
export BUS_SHM_DIR BUS_DATA_DIR
export BUS_NAME=daemon-test
DPID=
cleanup() {
	if [ -n "$DPID" ]; then kill -KILL "$DPID" 2>/dev/null || true; fi
	rm -rf "$TMP" "$BUS_SHM_DIR" "$BUS_DATA_DIR"
}
trap cleanup EXIT

CHECK=setup
fail() {
	echo "FAIL $CHECK: $*" >&2
	if [ -s "$TMP/busd.log" ]; then
		echo "--- busd's log:" >&2
		tail -n 30 "$TMP/busd.log" >&2
	fi
	exit 1
}
ok() { echo "ok $CHECK"; }

# wait_for WHAT CMD...: retry CMD for up to 20 s.
wait_for() {
	local what=$1
	shift
	for _ in $(seq 400); do
		if "$@" 2>/dev/null; then return 0; fi
		sleep 0.05
	done
	fail "timed out waiting for $what"
}
logged() { grep -q -- "$1" "$TMP/busd.log"; }
sanitizer_clean() {
	! grep -E -q "ThreadSanitizer|AddressSanitizer|LeakSanitizer|runtime error" "$TMP/busd.log"
}

CHECK=foreground-start
echo "log_level = info" >"$TMP/busd.conf"
"$BUSD" --foreground --config "$TMP/busd.conf" 2>"$TMP/busd.log" &
DPID=$!
wait_for "busd ready" logged "ready"
ok

CHECK=spill-and-replay
"$BUS" topic create d --partitions 2 --ring-size 64K >/dev/null 2>"$TMP/err"
seq 1 30000 | "$BUS" produce d
"$BUS" consume d --from earliest -e -f '%o %s\n' >"$TMP/replay.txt"
[ "$(wc -l <"$TMP/replay.txt")" -eq 30000 ] || fail "replayed $(wc -l <"$TMP/replay.txt") records of 30000"
[ "$(sort -n -k2 "$TMP/replay.txt" | awk '{ print $2 }' | uniq | wc -l)" -eq 30000 ] ||
	fail "records missing or repeated"
first=$("$BUS" topic describe d --json | grep -o '"first_offset_ring":[0-9]*' | head -1 | cut -d: -f2)
[ "$first" -gt 0 ] || fail "the ring still holds everything: nothing came from disk"
ls "$BUS_DATA_DIR/d/0/"*.log >/dev/null || fail "no segment file"
[ -f "$BUS_DATA_DIR/d/topic.conf" ] || fail "no topic.conf"
ok

CHECK=sighup-reload
echo "log_level = debug" >"$TMP/busd.conf"
kill -HUP "$DPID"
wait_for "the reload" logged "reloaded"
ok

CHECK=second-daemon-refused
if "$BUSD" --foreground 2>"$TMP/second.err"; then fail "a second busd started"; fi
grep -q "pid $DPID" "$TMP/second.err" || fail "the refusal does not name pid $DPID: $(cat "$TMP/second.err")"
ok

CHECK=sigterm
kill -TERM "$DPID"
rc=0
wait "$DPID" || rc=$?
DPID=
[ "$rc" -eq 0 ] || fail "busd exited with status $rc"
logged "stopped" || fail "no 'stopped' line"
sanitizer_clean || fail "sanitizer reports in busd's log"
ok

CHECK=detached
: >"$TMP/busd.log"
"$BUSD" || fail "a detached busd did not start"
DPID=$(cat "$BUS_SHM_DIR/bus.$BUS_NAME.busd")
kill -0 "$DPID" || fail "no daemon at pid $DPID"
seq 1 1000 | "$BUS" produce d
"$BUS" topic describe d | grep -q "busd running" || fail "describe does not see busd"
kill -TERM "$DPID"
wait_for "the detached busd to stop" sh -c "! kill -0 $DPID"
DPID=
ok

CHECK=data-dir-option
BUS_NAME=daemon-test-dd "$BUSD" --foreground --data-dir "$TMP/dd" 2>"$TMP/busd.log" &
DPID=$!
wait_for "busd ready" logged "ready"
BUS_NAME=daemon-test-dd "$BUS" topic create t2 --partitions 1 --ring-size 64K >/dev/null 2>"$TMP/err"
seq 1 100 | BUS_NAME=daemon-test-dd "$BUS" produce t2
wait_for "the log in --data-dir" sh -c "ls '$TMP'/dd/t2/0/*.log >/dev/null"
[ ! -e "$BUS_DATA_DIR/t2" ] || fail "busd wrote to \$BUS_DATA_DIR, not to --data-dir"
kill -TERM "$DPID"
wait "$DPID" || fail "busd did not stop cleanly"
DPID=
ok

CHECK=std-streams-closed
# busd started with its standard streams closed: its log lines must not go
# into the next file it opens (the control region: the bus was corrupt).
BUS_NAME=daemon-test-fd "$BUSD" --foreground 2>&- &
DPID=$!
wait_for "busd to publish its pid" sh -c "[ -s '$BUS_SHM_DIR/bus.daemon-test-fd.busd' ]"
BUS_NAME=daemon-test-fd "$BUS" topic create t3 --partitions 1 --ring-size 64K >/dev/null 2>"$TMP/err" ||
	fail "create: $(cat "$TMP/err")"
seq 1 100 | BUS_NAME=daemon-test-fd "$BUS" produce t3
wait_for "the log of t3" sh -c "ls '$BUS_DATA_DIR'/t3/0/*.log >/dev/null"
BUS_NAME=daemon-test-fd "$BUS" topic list >/dev/null 2>"$TMP/err" || fail "the bus: $(cat "$TMP/err")"
[ "$(BUS_NAME=daemon-test-fd "$BUS" consume t3 --from earliest -e | wc -l)" -eq 100 ] ||
	fail "records lost"
kill -TERM "$DPID"
wait "$DPID" || fail "busd did not stop cleanly"
DPID=
ok

CHECK=usage-errors-name-the-option
# usage ARGS WANT: busd ARGS exits 2 and says WANT.  An unknown option inside
# a cluster was named by the argument before it ('--foreground').
usage() {
	local rc=0
	# shellcheck disable=SC2086
	timeout 10 "$BUSD" $1 2>"$TMP/usage.err" >/dev/null || rc=$?
	[ "$rc" -eq 2 ] || fail "busd $1: exit $rc, not 2"
	grep -qF -- "$2" "$TMP/usage.err" || fail "busd $1: '$2' not in: $(cat "$TMP/usage.err")"
}
usage "--foreground -xf" "unknown option '-x' (in '-xf')"
usage "-x" "unknown option '-x'"
usage "--bogus=1" "unknown option '--bogus'"
usage "--foreground=1" "option '--foreground' takes no value"
usage "--f" "ambiguous option '--f' (--foreground, --fsync)"
usage "--foreground --bus" "option '--bus' needs a value"
usage "-f -c" "option '-c' needs a value"
usage "-fc" "option '-c' (in '-fc') needs a value"
usage "--bus .x" "bad value for --bus: '.x'"
usage "--fsync sometimes" "bad value for --fsync: 'sometimes'"
usage "-f stray" "unexpected argument 'stray'"
ok

CHECK=bus-open-failure-names-the-path
rc=0
BUS_SHM_DIR=$TMP/no-such-dir "$BUSD" --foreground 2>"$TMP/open.err" || rc=$?
[ "$rc" -eq 1 ] || fail "exit $rc, not 1"
grep -qF "cannot open bus 'daemon-test' ($TMP/no-such-dir/bus.daemon-test.ctl): " "$TMP/open.err" ||
	fail "the error does not name the control region: $(cat "$TMP/open.err")"
ok

echo "test_daemon: all passed"
