#!/usr/bin/env bash
# test_cli.sh - the `bus` command line against its contract (CLI.md), on a
# private bus in temporary directories.  Prints "ok NAME" per check; stops
# at the first failure with a message and a non-zero status.
set -eu

cd "$(dirname "$0")/.."
BUS=${BUILD:-build}/bin/bus
if [ ! -x "$BUS" ]; then
	echo "test_cli: $BUS is not built (run make)" >&2
	exit 1
fi

TMP=$(mktemp -d)
BUS_SHM_DIR=$(mktemp -d)
BUS_DATA_DIR=$(mktemp -d)
export BUS_SHM_DIR BUS_DATA_DIR
export BUS_NAME=cli-test
BGPID=
cleanup() {
	if [ -n "$BGPID" ]; then kill "$BGPID" 2>/dev/null || true; fi
	rm -rf "$TMP" "$BUS_SHM_DIR" "$BUS_DATA_DIR"
}
trap cleanup EXIT

CHECK="setup"
fail() {
	echo "FAIL $CHECK: $*" >&2
	if [ -s "$TMP/err" ]; then
		echo "--- stderr of the last command:" >&2
		head -n 20 "$TMP/err" >&2
	fi
	exit 1
}
ok() { echo "ok $CHECK"; }

# run CMD...: run it, keeping stdout in $TMP/out, stderr in $TMP/err and the
# exit status in $RC, whatever it is.
RC=0
run() {
	set +e
	"$@" >"$TMP/out" 2>"$TMP/err"
	RC=$?
	set -e
}

# expect STATUS CMD...: run it and require that exit status.
expect() {
	local want=$1
	shift
	run "$@"
	[ "$RC" -eq "$want" ] || fail "'$*' exited $RC, expected $want"
}

# one_error_line [TEXT]: stderr is exactly one line "bus: ...", containing
# TEXT if given.
one_error_line() {
	local n
	n=$(wc -l <"$TMP/err")
	[ "$n" -eq 1 ] || fail "stderr has $n lines, expected one"
	grep -q '^bus: ' "$TMP/err" || fail "stderr does not start with 'bus: '"
	if [ $# -gt 0 ]; then
		grep -qF -- "$1" "$TMP/err" || fail "stderr does not say '$1'"
	fi
}

# usage_error TEXT CMD...: exit 2, one line on stderr containing TEXT.
usage_error() {
	local text=$1
	shift
	expect 2 "$@"
	one_error_line "$text"
}

# json_ok: $TMP/out is one JSON document (skipped without python3).
HAVE_PY=0
if command -v python3 >/dev/null 2>&1 && python3 -c 'import json' 2>/dev/null; then HAVE_PY=1; fi
json_ok() {
	if [ "$HAVE_PY" -eq 1 ]; then
		python3 -c 'import json,sys; json.load(sys.stdin)' <"$TMP/out" || fail "stdout is not one JSON document"
	else
		echo "skip $CHECK: no python3 to parse the JSON"
	fi
}

# wait_lines FILE N: until FILE has N lines (at most 5 s).
wait_lines() {
	for _ in $(seq 50); do
		[ "$(wc -l <"$1")" -ge "$2" ] && return 0
		sleep 0.1
	done
	return 1
}

# ------------------------------------------------------------ basics
CHECK="version"
expect 0 "$BUS" --version
grep -q '^bus [0-9]*\.[0-9]*\.[0-9]*' "$TMP/out" || fail "no version on stdout"
ok

CHECK="help"
for c in "" "topic" "topic create" "topic list" "topic describe" "topic delete" "produce" "consume"; do
	# shellcheck disable=SC2086
	expect 0 "$BUS" $c --help
	grep -q '^usage: bus' "$TMP/out" || fail "'bus $c --help' prints no usage"
done
expect 0 "$BUS" help consume
grep -q '^usage: bus consume' "$TMP/out" || fail "'bus help consume' prints no usage"
# help is listed among the commands: `bus help help` said "unknown command".
expect 0 "$BUS" help help
grep -q '^usage: bus ' "$TMP/out" || fail "'bus help help' prints no usage"
ok

# Output that could not be written is an error, for the top-level --help
# and --version as for every command.
CHECK="stdout-full"
for args in "--version" "--help" "help" "consume --help"; do
	expect 1 bash -c '"$1" $2 >/dev/full' _ "$BUS" "$args"
	one_error_line "writing to stdout"
done
ok

# ------------------------------------------------------ usage errors
CHECK="usage-errors"
usage_error "missing command" "$BUS"
usage_error "unknown command" "$BUS" frobnicate
usage_error "missing subcommand" "$BUS" topic
usage_error "--partitions" "$BUS" topic create t1
usage_error "--partitions" "$BUS" topic create t1 --partitions 0
usage_error "--partitions" "$BUS" topic create t1 --partitions 257
usage_error "missing topic NAME" "$BUS" topic describe
usage_error "unexpected argument" "$BUS" topic delete a b
usage_error "character outside" "$BUS" topic create 'bad name' --partitions 1
usage_error "unknown option '--bogus'" "$BUS" consume t1 --bogus
usage_error "needs a value" "$BUS" consume t1 -p
usage_error "--from" "$BUS" consume t1 --from yesterday
usage_error "--from" "$BUS" consume t1 --from @2026-13-01T00:00:00Z
for at in @2026-11-24T10:00:00+01: @2026-11-24T10:00:00+01:0 @2026-11-24T10:00:00+1 @2026-11-24T10:00:00.Z; do
	usage_error "--from" "$BUS" consume t1 --from "$at"
done
usage_error "-c" "$BUS" consume t1 -c 0
# A count beyond 2^64 - 1 says so, naming the value (it said "expected a
# count of at least 1").
for v in 18446744073709551616 99999999999999999999 123456789012345678901234567890; do
	usage_error "-c '$v': too large: a count goes up to 18446744073709551615" "$BUS" consume t1 -c "$v"
	usage_error "-c '$v': too large" "$BUS" consume t1 --count="$v"
done
usage_error "--numa-node '99999999999999999999': expected a node number from 0 to 2147483647" \
	"$BUS" topic create t1 --partitions 1 --numa-node 99999999999999999999
usage_error "unknown field" "$BUS" consume t1 -f '%x'
usage_error "consumer groups are not implemented yet" "$BUS" consume t1 -g g1
usage_error "standby" "$BUS" produce t1 --acks all
usage_error "--acks" "$BUS" produce t1 --acks 2
usage_error "NAME=VALUE" "$BUS" produce t1 -H novalue
# 0 is the library's "now": taken as given, it stamped records with now.
usage_error "--timestamp" "$BUS" produce t1 --timestamp 0
usage_error "--timestamp" "$BUS" produce t1 --timestamp 9223372036854775808
usage_error "--retention" "$BUS" topic create t1 --partitions 1 --retention 5x
usage_error "--overflow" "$BUS" topic create t1 --partitions 1 --overflow sometimes
# Well-formed values beyond what is held say so, not "expected <that form>".
usage_error "out of range" "$BUS" consume t1 --from @9999-12-31T23:59:59Z
usage_error "out of range" "$BUS" consume t1 --from @9223372036855
usage_error "too large" "$BUS" topic create t1 --partitions 1 --retention 300000000000d
usage_error "too large" "$BUS" topic create t1 --partitions 1 --retention-bytes 20000000000G
usage_error "missing TOPIC" "$BUS" produce
ok

# An argument quoted in an error cannot split its one line or drive the
# terminal: control characters are escaped (a newline in a name made two
# lines, an ESC reached the terminal as it was).
CHECK="errors-escape-controls"
usage_error "topic name 'a\\nb' has a character outside" "$BUS" topic create $'a\nb' --partitions 1
usage_error "unknown command 'frob\\x1b[31mred\\r'" "$BUS" $'frob\e[31mred\r'
usage_error "-p '1\\n2'" "$BUS" consume t1 -p $'1\n2'
usage_error "unknown option '--bogus\\tx'" "$BUS" consume t1 $'--bogus\tx'
usage_error "unknown field '%\\n'" "$BUS" consume t1 -f $'%\n'
usage_error "BUS_NAME: bus name 'a\\x7fb'" env BUS_NAME=$'a\x7fb' "$BUS" topic list
expect 1 env BUS_SHM_DIR=$'/nonexistent\n/x' "$BUS" topic list
one_error_line "/nonexistent\\n/x does not exist"
! grep -q $'[\x01-\x09\x0b-\x1f\x7f]' "$TMP/err" || fail "a control character reached stderr"
ok

# A bad short option inside a cluster is named, not the argument before
# it: "--json -xl" said "bad option '--json'".
CHECK="option-errors-name-the-option"
usage_error "unknown option '-x'" "$BUS" topic list --json -xl
! grep -q -- '--json' "$TMP/err" || fail "the error names --json, which was fine"
usage_error "unknown option '-x'" "$BUS" consume t1 --exit -xe
usage_error "unknown option '-R'" "$BUS" consume t1 --offset-reset=none -Rx
usage_error "option '-f' needs a value" "$BUS" consume t1 --exit -ef
usage_error "option '--json' takes no value" "$BUS" topic list --json=1
usage_error "option '--from' needs a value" "$BUS" consume t1 --from
usage_error "ambiguous option '--f': --from, --format" "$BUS" consume t1 --f x
usage_error "unknown option byte 0xc3" "$BUS" topic list -é
ok

# Numbers: no sign, no exponent, no suffix, not empty, no overflow.
CHECK="bad-numbers"
for v in -1 +1 1e3 "" 1x " 1" 0x10 99999999999999999999999; do
	usage_error "--partitions" "$BUS" topic create t1 --partitions "$v"
	usage_error "-p" "$BUS" produce t1 -p "$v"
	usage_error "-p" "$BUS" consume t1 -p "$v"
	usage_error "-c" "$BUS" consume t1 -c "$v"
	usage_error "--numa-node" "$BUS" topic create t1 --partitions 1 --numa-node "$v"
	usage_error "--timestamp" "$BUS" produce t1 --timestamp "$v"
done
for v in -1 1e3 "" 1x 99999999999999999999999 @ @1e3 @-5 @2026-02-29; do
	usage_error "--from" "$BUS" consume t1 --from "$v"
done
for v in 5 1h30 -1h 1H 1.5s "1h 30m" ms ""; do
	usage_error "--retention" "$BUS" topic create t1 --partitions 1 --retention "$v"
done
for v in 1T 1.5G -1K K ""; do
	usage_error "--retention-bytes" "$BUS" topic create t1 --partitions 1 --retention-bytes "$v"
done
usage_error "lone '%'" "$BUS" consume t1 -f 'x%'
usage_error "lone '\\'" "$BUS" consume t1 -f 'x\'
usage_error "unknown escape" "$BUS" consume t1 -f '\x'
usage_error "unknown option" "$BUS" topic list --bogus
usage_error "unknown subcommand" "$BUS" topic frob
ok

CHECK="bad-ring-size"
for size in 3M 1K 2G abc 4Q ""; do
	usage_error "--ring-size" "$BUS" topic create t1 --partitions 1 --ring-size "$size"
done
expect 0 "$BUS" topic list
[ ! -s "$TMP/out" ] || fail "a refused create left a topic behind"
ok

# ------------------------------------------------------------ topics
CHECK="create"
expect 0 "$BUS" topic create quotes --partitions 3 --ring-size 1M --ephemeral
[ ! -s "$TMP/out" ] || fail "create printed on stdout"
grep -q "^bus: topic 'quotes': rings on" "$TMP/err" || fail "create did not say which memory backs the rings"
ok

CHECK="create-idempotent"
expect 0 "$BUS" topic create quotes --partitions 3 --ring-size 1M --ephemeral
ok

CHECK="create-config-mismatch"
expect 1 "$BUS" topic create quotes --partitions 4 --ring-size 1M --ephemeral
one_error_line "another config"
grep -qF "partitions 3 (asked 4)" "$TMP/err" || fail "the message does not name the difference"
expect 1 "$BUS" topic create quotes --partitions 3 --ring-size 1M
one_error_line "another config"
# A topic without a NUMA node says "none", as describe does, not -1.
expect 1 "$BUS" topic create quotes --partitions 3 --ring-size 1M --ephemeral --numa-node 0
one_error_line "numa-node none (asked 0)"
ok

CHECK="list"
expect 0 "$BUS" topic create other --partitions 1 --ring-size 64K --ephemeral --overflow overwrite
expect 0 "$BUS" topic list
[ "$(sort "$TMP/out" | tr '\n' ' ')" = "other quotes " ] || fail "list printed: $(tr '\n' ' ' <"$TMP/out")"
expect 0 "$BUS" topic list --long
grep -q '^quotes  *3  *1M  *ephemeral  *block' "$TMP/out" || fail "list --long misses quotes' config"
ok

CHECK="list-json"
expect 0 "$BUS" topic list --json
json_ok
[ "$(wc -l <"$TMP/out")" -eq 1 ] || fail "list --json is not one line"
if [ "$HAVE_PY" -eq 1 ]; then
	python3 -c 'import json,sys; d=json.load(sys.stdin); assert sorted(t["name"] for t in d["topics"])==["other","quotes"], d' <"$TMP/out" ||
		fail "list --json does not hold both topics"
else
	echo "skip list-json content: no python3"
fi
ok

CHECK="describe"
expect 0 "$BUS" topic describe quotes
grep -q '^partitions  *3$' "$TMP/out" || fail "describe does not say 3 partitions"
grep -q '^ring-size  *1M$' "$TMP/out" || fail "describe does not say the ring size"
grep -q '^kind  *ephemeral$' "$TMP/out" || fail "describe does not say ephemeral"
grep -q 'FIRST-ON-DISK *FIRST-IN-RING *NEXT *SPILLED *REPLICATED *BYTES-ON-DISK' "$TMP/out" ||
	fail "describe has no partition table"
[ "$(grep -c '^ *[0-9][0-9]* *- ' "$TMP/out")" -eq 3 ] || fail "describe does not list 3 partitions"
grep -q '^access  *shared' "$TMP/out" || fail "describe does not say shared"
ok

# --retention 0 keeps records forever, as no --retention does (the same
# config: the create is idempotent), and says so in the help and describe.
CHECK="retention-zero-forever"
expect 0 "$BUS" topic create --help
grep -qF -- '--retention DURATION    keep records this long on disk; 0 (the default)' "$TMP/out" ||
	fail "topic create --help does not say what --retention 0 means"
grep -qF 'keeps them forever' "$TMP/out" || fail "topic create --help does not say that 0 keeps records forever"
grep -qF '0 (the default): no limit' "$TMP/out" || fail "topic create --help does not say what --retention-bytes 0 means"
expect 0 "$BUS" topic describe --help
grep -qF '"forever"' "$TMP/out" || fail "topic describe --help does not say how retention 0 shows"
expect 0 "$BUS" topic create keep --partitions 1 --ring-size 64K --retention 0 --retention-bytes 0
for r in "" "--retention 0s" "--retention 0ms --retention-bytes 0K"; do
	# shellcheck disable=SC2086
	expect 0 "$BUS" topic create keep --partitions 1 --ring-size 64K $r
done
expect 1 "$BUS" topic create keep --partitions 1 --ring-size 64K --retention 7d
one_error_line "retention forever (asked 7d)"
expect 1 "$BUS" topic create keep --partitions 1 --ring-size 64K --retention-bytes 1G
one_error_line "retention-bytes none (asked 1G)"
expect 0 "$BUS" topic describe keep
grep -q '^retention  *forever$' "$TMP/out" || fail "describe does not say retention forever"
grep -q '^retention-bytes  *none$' "$TMP/out" || fail "describe does not say retention-bytes none"
expect 0 "$BUS" topic list --long
grep -q '^keep .* forever  *none$' "$TMP/out" || fail "list --long does not say forever/none"
expect 0 "$BUS" topic describe keep --json
json_ok
grep -qF '"retention_ms":0,"retention_bytes":0,' "$TMP/out" || fail "describe --json does not give retention 0"
expect 0 "$BUS" topic delete keep
ok

CHECK="private"
expect 0 "$BUS" topic create secret --partitions 1 --ring-size 64K --ephemeral --private
expect 0 "$BUS" topic describe secret
grep -q '^access  *private' "$TMP/out" || fail "describe does not say private"
[ "$(stat -c %a "$BUS_SHM_DIR"/bus.*.secret.*.0)" = 600 ] || fail "the private ring is not 0600"
expect 0 "$BUS" topic create secret --partitions 1 --ring-size 64K --ephemeral --private
expect 1 "$BUS" topic create secret --partitions 1 --ring-size 64K --ephemeral
grep -q 'private (asked shared)' "$TMP/err" || fail "the config error does not name the difference"
expect 0 "$BUS" topic delete secret
# On a bus it makes, a private topic leaves the bus itself to the group.
expect 0 "$BUS" --bus priv-bus topic create secret --partitions 1 --ring-size 64K --ephemeral --private
[ "$(stat -c %a "$BUS_SHM_DIR"/bus.priv-bus.secret.*.0)" = 600 ] || fail "the private ring is not 0600"
[ "$(stat -c %a "$BUS_SHM_DIR"/bus.priv-bus.ctl)" = 660 ] ||
	fail "creating a private topic made the bus's control region $(stat -c %a "$BUS_SHM_DIR"/bus.priv-bus.ctl)"
expect 0 "$BUS" --bus priv-bus topic create open --partitions 1 --ring-size 64K --ephemeral
[ "$(stat -c %a "$BUS_SHM_DIR"/bus.priv-bus.open.*.0)" = 660 ] || fail "a shared topic's ring is not 0660"
ok

CHECK="describe-json"
expect 0 "$BUS" topic describe quotes --json
json_ok
if [ "$HAVE_PY" -eq 1 ]; then
	python3 -c '
import json,sys
d=json.load(sys.stdin)
assert d["name"]=="quotes" and d["config"]["partitions"]==3 and d["config"]["ephemeral"] is True, d
assert [p["partition"] for p in d["partitions"]]==[0,1,2], d
assert all(p["next_offset"]==0 and p["first_offset_disk"] is None for p in d["partitions"]), d
' <"$TMP/out" || fail "describe --json content"
else
	echo "skip describe-json content: no python3 (the JSON syntax was not checked either)"
fi
ok

# The JSON string writer of --json (tools/parse.c), on bytes that bus and
# topic names cannot hold today (they are [A-Za-z0-9._-]), built on its own
# by tests/cli_json.c: every output must parse with a strict parser (valid
# UTF-8, no raw control character) to what Python's (and Java's, so
# Kafka's) UTF-8 decoder makes of the bytes, one U+FFFD per maximal
# subpart of an ill-formed sequence.  It used to copy bytes >= 0x80 as they
# were: invalid UTF-8 made the whole document unreadable.
CHECK="json-escaping"
if [ "$HAVE_PY" -eq 0 ] || ! command -v "${CC:-cc}" >/dev/null 2>&1; then
	echo "skip $CHECK: needs python3 and a C compiler (${CC:-cc})"
else
	"${CC:-cc}" -std=gnu11 -Itools -Ilibbus/include -o "$TMP/cli_json" tests/cli_json.c tools/parse.c 2>"$TMP/err" ||
		fail "cannot build tests/cli_json.c"
	python3 - "$TMP/cli_json" >"$TMP/why" 2>&1 <<'PY' || fail "$(tail -n 3 "$TMP/why")"
import json, random, subprocess, sys
def check(raw, want_text=None):
    out = subprocess.run([sys.argv[1]], input=raw, stdout=subprocess.PIPE, check=True).stdout
    assert out.endswith(b"\n") and out.count(b"\n") == 1, "not one line: %r" % out[:80]
    got = json.loads(out.decode("utf-8"))  # strict: bad UTF-8 or a raw control byte raises
    want = raw.decode("utf-8", "replace")
    assert got == want, "%r gave %r, expected %r" % (raw[:40], got[:40], want[:40])
    if want_text is not None:
        assert out[:-1] == want_text, "%r written as %r, expected %r" % (raw, out[:-1], want_text)
cases = [
    (b"plain", b'"plain"'),
    (b"\xff", b'"\\ufffd"'),                      # never a lead byte
    (b"a\x80b", b'"a\\ufffdb"'),                  # a stray continuation byte
    (b"\xc0\xaf", b'"\\ufffd\\ufffd"'),          # overlong '/'
    (b"\xe2\x82", b'"\\ufffd"'),                 # cut at the end: one maximal subpart
    (b"\xe2\x82A", b'"\\ufffdA"'),
    (b"\xed\xa0\x80", b'"\\ufffd\\ufffd\\ufffd"'),  # a surrogate
    (b"\xf4\x90\x80\x80", b'"\\ufffd\\ufffd\\ufffd\\ufffd"'),  # above U+10FFFF
    (b"\x00\x01\x1f\x7f", b'"\\u0000\\u0001\\u001f\\u007f"'),
    (b"\"\\\b\f\n\r\t", b'"\\"\\\\\\b\\f\\n\\r\\t"'),
    ("\u2028\u2029".encode(), b'"\\u2028\\u2029"'),
    ("é€😀\U0010ffff".encode(), ('"' + "é€😀\U0010ffff" + '"').encode()),
]
for raw, text in cases:
    check(raw, text)
rnd = random.Random(8259)
pool = [0x00, 0x0a, 0x1f, 0x22, 0x5c, 0x7f, 0x80, 0x8f, 0x90, 0x9f, 0xa0, 0xbf, 0xc0, 0xc1, 0xc2,
        0xdf, 0xe0, 0xe2, 0xed, 0xef, 0xf0, 0xf4, 0xf5, 0xff, 0x41]
for _ in range(20):
    check(bytes(rnd.choice(pool) if rnd.random() < 0.7 else rnd.randrange(256) for _ in range(4096)))
PY
	ok
fi

# --------------------------------------------------- produce/consume
N=300
CHECK="produce-keys"
awk -v n=$N 'BEGIN { for (i = 0; i < n; i++) printf "key%d:value%d\n", i % 7, i }' >"$TMP/in"
expect 0 "$BUS" produce quotes -k : <"$TMP/in"
if [ -s "$TMP/out" ] || [ -s "$TMP/err" ]; then fail "produce printed something"; fi
ok

CHECK="consume-e-keys-order-dense"
expect 0 "$BUS" consume quotes -e -f '%p %o %k %s\n'
cp "$TMP/out" "$TMP/all"
awk -v n=$N '
	{ p = $1; o = $2; k = $3; v = substr($4, 6) + 0
	  if (o != next_off[p] + 0) { print "partition " p ": offset " o ", expected " next_off[p] + 0; bad = 1; exit }
	  next_off[p] = o + 1
	  if ((k in kp) && kp[k] != p) { print "key " k " in partitions " kp[k] " and " p; bad = 1; exit }
	  kp[k] = p
	  if ((k in last) && v <= last[k]) { print "key " k ": value " v " after " last[k]; bad = 1; exit }
	  last[k] = v
	  if ("key" (v % 7) != k) { print "value " v " under key " k; bad = 1; exit }
	  count++ }
	END { if (!bad && count != n) { print count " records, expected " n; bad = 1 }
	      exit bad }' "$TMP/all" >"$TMP/why" || fail "$(cat "$TMP/why")"
ok

# The partition of a key is FNV-1a 64 of its bytes modulo the partitions
# (bus.h: stable across versions and hosts).
CHECK="key-hash-fnv1a"
if [ "$HAVE_PY" -eq 1 ]; then
	python3 -c '
import sys
def fnv1a64(b):
    h = 0xcbf29ce484222325
    for c in b:
        h = ((h ^ c) * 0x100000001b3) & 0xffffffffffffffff
    return h
for line in sys.stdin:
    p, o, k, v = line.split()
    want = fnv1a64(k.encode()) % 3
    if int(p) != want:
        sys.exit("key %s is in partition %s; FNV-1a 64 modulo 3 is %d" % (k, p, want))
' <"$TMP/all" >"$TMP/why" 2>&1 || fail "$(tail -n 1 "$TMP/why")"
else
	echo "skip key-hash-fnv1a: no python3"
fi
ok

CHECK="describe-after-produce"
expect 0 "$BUS" topic describe quotes
total=$(awk '$2 == "-" { s += $4 } END { print s + 0 }' "$TMP/out")
[ "$total" -eq $N ] || fail "the next offsets sum to $total, expected $N"
ok

CHECK="print-offsets"
printf 'a\nb\n' >"$TMP/in"
expect 0 "$BUS" produce quotes -p 1 --print-offsets <"$TMP/in"
next1=$(awk '$1 == 1 { n = $2 + 1 } END { print n + 0 }' "$TMP/all")
printf '1 %d\n1 %d\n' "$next1" $((next1 + 1)) >"$TMP/want"
cmp -s "$TMP/out" "$TMP/want" || fail "printed $(tr '\n' ' ' <"$TMP/out"), expected $(tr '\n' ' ' <"$TMP/want")"
ok

CHECK="consume-count"
expect 0 "$BUS" consume quotes -c 5
[ "$(wc -l <"$TMP/out")" -eq 5 ] || fail "-c 5 printed $(wc -l <"$TMP/out") lines"
ok

CHECK="consume-from-offset"
expect 0 "$BUS" consume quotes -p 0 --from 3 -e -f '%o\n'
n0=$(awk '$1 == 0' "$TMP/all" | wc -l)
seq 3 $((n0 - 1)) >"$TMP/want"
cmp -s "$TMP/out" "$TMP/want" || fail "--from 3 of partition 0 ($n0 records) printed $(head -c 60 "$TMP/out" | tr '\n' ' ')..."
expect 0 "$BUS" consume quotes -p 0 --from 100000 -e
[ ! -s "$TMP/out" ] || fail "--from past the end printed records"
expect 0 "$BUS" consume quotes --from latest -e
[ ! -s "$TMP/out" ] || fail "--from latest -e printed records"
ok

# -e stops at the ends as of the start, in every partition read: at once
# on an empty topic or partition, with -p as without.
CHECK="consume-e-empty"
expect 0 "$BUS" topic create sparse --partitions 3 --ring-size 64K --ephemeral
expect 0 timeout 10 "$BUS" consume sparse -e
[ ! -s "$TMP/out" ] || fail "-e on an empty topic printed records"
printf 'a\nb\n' | "$BUS" produce sparse -p 1 || fail "produce to sparse"
expect 0 timeout 10 "$BUS" consume sparse -e -p 2
[ ! -s "$TMP/out" ] || fail "-e -p 2 on an empty partition printed records"
expect 0 timeout 10 "$BUS" consume sparse -e -p 1
[ "$(tr '\n' ' ' <"$TMP/out")" = "a b " ] || fail "-e -p 1 printed '$(tr '\n' ' ' <"$TMP/out")'"
expect 0 timeout 10 "$BUS" consume sparse -e
[ "$(tr '\n' ' ' <"$TMP/out")" = "a b " ] || fail "-e printed '$(tr '\n' ' ' <"$TMP/out")'"
ok

CHECK="consume-from-time"
expect 0 "$BUS" topic create timed --partitions 1 --ring-size 64K --ephemeral
T1=1795514400000000000 # 2026-11-24T10:00:00Z in ns
T2=$((T1 + 3600000000000))
printf 'early1\nearly2\n' | "$BUS" produce timed --timestamp $T1 || fail "produce early"
printf 'late1\nlate2\n' | "$BUS" produce timed --timestamp $T2 || fail "produce late"
for at in @2026-11-24T10:30:00Z @2026-11-24T11:30:00.250+01:00 @2026-11-24T10:59:59.999999999Z @$((T2 / 1000000)); do
	expect 0 "$BUS" consume timed --from "$at" -e
	[ "$(tr '\n' ' ' <"$TMP/out")" = "late1 late2 " ] || fail "--from $at printed $(tr '\n' ' ' <"$TMP/out")"
done
expect 0 "$BUS" consume timed --from @2026-11-24T09:00:00Z -e
[ "$(wc -l <"$TMP/out")" -eq 4 ] || fail "--from a time before every record printed $(wc -l <"$TMP/out") records"
expect 0 "$BUS" consume timed --from @2026-11-24T12:00:00Z -e
[ ! -s "$TMP/out" ] || fail "--from a time after every record printed records"
ok

CHECK="format-fields"
printf 'k1=v1\n' | "$BUS" produce timed -k = -H h1=x -H h2=y=z --timestamp $T2 || fail "produce with headers"
expect 0 "$BUS" consume timed --from 4 -e -f '%t|%p|%o|%k|%K|%s|%S|%T|%h|%%\t\\\n'
printf 'timed|0|4|k1|2|v1|2|%d|h1=x,h2=y=z|%%\t\\\n' $((T2 / 1000000)) >"$TMP/want"
cmp -s "$TMP/out" "$TMP/want" || fail "printed '$(cat "$TMP/out")', expected '$(cat "$TMP/want")'"
ok

# Records without a key go round-robin over the partitions, also when each
# `bus produce` writes one record: every invocation used to start at
# partition 0, so a script producing line by line filled partition 0 only.
CHECK="unkeyed-round-robin"
expect 0 "$BUS" topic create rr --partitions 4 --ring-size 64K --ephemeral
seq 8 | "$BUS" produce rr || fail "produce to rr"
expect 0 "$BUS" consume rr -e -f '%p\n'
[ "$(sort "$TMP/out" | uniq -c | awk '{ print $1 }' | tr '\n' ' ')" = "2 2 2 2 " ] ||
	fail "8 records without a key in one produce are spread as $(sort "$TMP/out" | uniq -c | tr '\n' ' ')"
expect 0 "$BUS" topic create rr1 --partitions 4 --ring-size 64K --ephemeral
for i in $(seq 40); do echo "$i" | "$BUS" produce rr1 || fail "produce to rr1"; done
expect 0 "$BUS" consume rr1 -e -f '%p\n'
[ "$(sort -u "$TMP/out" | wc -l)" -gt 1 ] || fail "40 one-record produces all went to partition $(head -n 1 "$TMP/out")"
ok

# A record larger than consume's first buffer, at the end of partition 2
# (a one-partition consumer of a partition other than 0).
CHECK="long-line"
awk 'BEGIN { s = "x"; while (length(s) < 300000) s = s s; printf "key|%s\n", substr(s, 1, 300000) }' >"$TMP/in"
expect 0 "$BUS" produce quotes -k '|' -p 2 <"$TMP/in"
expect 0 "$BUS" consume quotes -p 2 -e -f '%K %S\n'
[ "$(tail -n 1 "$TMP/out")" = "3 300000" ] ||
	fail "the 300000-byte record at the end of partition 2 was not printed (last line: '$(tail -n 1 "$TMP/out")')"
ok

# More bytes than consume's buffer in one batch, on one partition other
# than 0: nothing may go missing.
CHECK="one-partition-big-batch"
expect 0 "$BUS" topic create wide --partitions 3 --ring-size 4M --ephemeral
awk 'BEGIN { for (i = 0; i < 100; i++) printf "%010000d\n", i }' >"$TMP/in"
for p in 0 1; do
	expect 0 "$BUS" produce wide -p $p <"$TMP/in"
	expect 0 "$BUS" consume wide -p $p -e -f '%o\n'
	seq 0 99 >"$TMP/want"
	cmp -s "$TMP/out" "$TMP/want" || fail "partition $p: $(wc -l <"$TMP/out") of 100 records of 10000 bytes printed"
done
ok

CHECK="record-too-large"
awk 'BEGIN { s = "x"; while (length(s) < 2000000) s = s s; print s }' >"$TMP/in"
expect 1 "$BUS" produce other <"$TMP/in"
one_error_line "0 records written"
ok

# A line larger than the memory produce may take: an error saying so (not
# an end of input, exit 0, with the record dropped).
CHECK="line-beyond-memory"
case "$BUS" in
*-asan/* | *-tsan/*) echo "skip $CHECK: a sanitizer's shadow memory does not fit under ulimit -v" ;;
*)
	expect 0 "$BUS" topic create mem --partitions 1 --ring-size 64K --ephemeral
	# The limit leaves produce room for everything else.
	expect 0 bash -c '(ulimit -v 100000; exec "$1" produce mem) </dev/null' _ "$BUS"
	expect 1 bash -c '{ printf "small\n"; head -c 200000000 /dev/zero 2>/dev/null | tr "\0" x 2>/dev/null; } |
		(ulimit -v 100000; exec "$1" produce mem)' _ "$BUS"
	one_error_line "record 2 not written"
	grep -qF "1 records written" "$TMP/err" || fail "the error does not say how many records were written"
	expect 0 "$BUS" consume mem -e
	[ "$(cat "$TMP/out")" = small ] || fail "mem holds '$(head -c 60 "$TMP/out")'"
	;;
esac
ok

# Retention on an ephemeral topic does nothing (never on disk): a warning
# says so (it was taken in silence and shown by describe as if it held).
CHECK="ephemeral-retention"
for r in "--retention 1h" "--retention-bytes 1G" "--retention 1h --retention-bytes 1G"; do
	# shellcheck disable=SC2086
	expect 0 "$BUS" topic create volatile --partitions 1 --ring-size 64K --ephemeral $r
	[ "$(grep -c '^bus: warning: ' "$TMP/err")" -eq 1 ] || fail "$r on an ephemeral topic: no single warning"
	grep -qF "bus: warning: topic 'volatile' is ephemeral: --retention and --retention-bytes have no effect" "$TMP/err" ||
		fail "$r on an ephemeral topic: the warning does not say it has no effect"
	expect 0 "$BUS" topic delete volatile
done
ok

# Creating a persistent topic while no busd runs succeeds, with one warning
# line on stderr (it said nothing: producers met -BUS_ENODAEMON only once
# the ring was full); an ephemeral topic gets none.
CHECK="persistent-without-daemon"
expect 0 "$BUS" topic create persist --partitions 1 --ring-size 64K
[ ! -s "$TMP/out" ] || fail "create printed on stdout"
[ "$(grep -c '^bus: warning: ' "$TMP/err")" -eq 1 ] || fail "no single warning line on stderr"
grep -qF "bus: warning: topic 'persist' is persistent but no busd runs for bus 'cli-test': its records are not spilled to disk until one starts (busd --bus cli-test)" "$TMP/err" ||
	fail "the warning does not say that no busd runs and nothing is spilled"
[ "$(wc -l <"$TMP/err")" -eq 2 ] || fail "create printed $(wc -l <"$TMP/err") lines on stderr, expected the memory line and the warning"
expect 0 "$BUS" topic create persist --partitions 1 --ring-size 64K
grep -q '^bus: warning: .*no busd runs' "$TMP/err" || fail "an idempotent create does not warn"
expect 0 "$BUS" topic create volatile --partitions 1 --ring-size 64K --ephemeral
! grep -q warning "$TMP/err" || fail "an ephemeral create warned: $(cat "$TMP/err")"
expect 0 "$BUS" topic delete volatile
awk 'BEGIN { for (i = 0; i < 200; i++) printf "%01000d\n", i }' >"$TMP/in"
expect 1 "$BUS" produce persist <"$TMP/in"
one_error_line "busd"
grep -q ' records written$' "$TMP/err" || fail "the error does not say how many records were written"
ok

# With a busd running, creating a persistent topic warns of nothing.
CHECK="persistent-with-daemon"
BUSD=${BUILD:-build}/bin/busd
if [ ! -x "$BUSD" ]; then
	echo "skip $CHECK: $BUSD is not built"
else
	echo "log_level = info" >"$TMP/busd.conf"
	"$BUSD" --foreground --config "$TMP/busd.conf" 2>"$TMP/busd.log" &
	BGPID=$!
	for _ in $(seq 200); do
		grep -q ready "$TMP/busd.log" && break
		kill -0 "$BGPID" 2>/dev/null || fail "busd exited: $(tail -n 3 "$TMP/busd.log")"
		sleep 0.05
	done
	grep -q ready "$TMP/busd.log" || fail "busd did not get ready within 10 s"
	expect 0 "$BUS" topic create spilled --partitions 1 --ring-size 64K
	! grep -q warning "$TMP/err" || fail "a create with busd running warned: $(cat "$TMP/err")"
	kill -TERM "$BGPID"
	set +e
	wait "$BGPID"
	RC=$?
	set -e
	BGPID=
	[ "$RC" -eq 0 ] || fail "busd exited $RC at SIGTERM: $(tail -n 3 "$TMP/busd.log")"
	expect 0 "$BUS" topic delete spilled
	ok
fi

CHECK="consume-live-sigterm"
# From the earliest: the records count whether the consumer is attached
# before they are produced or after.
"$BUS" consume other --from earliest -f '%s\n' >"$TMP/live" 2>"$TMP/err" &
BGPID=$!
printf 'one\ntwo\nthree\n' | "$BUS" produce other || fail "produce to other"
wait_lines "$TMP/live" 3 || true
[ "$(tr '\n' ' ' <"$TMP/live")" = "one two three " ] || fail "a live consumer printed '$(tr '\n' ' ' <"$TMP/live")' (not flushed when idle?)"
kill -TERM "$BGPID"
set +e
wait "$BGPID"
RC=$?
set -e
BGPID=
[ "$RC" -eq 0 ] || fail "SIGTERM: the consumer exited $RC"
ok

# A consumer whose reader has gone ends while the topic is idle, as a
# write would have ended it (SIGPIPE), instead of waiting for the next
# record to find out.
CHECK="consume-idle-closed-pipe"
set +e
timeout 20 bash -c '"$1" consume other --from earliest | head -n 1 >/dev/null; echo "${PIPESTATUS[0]}" >"$2"' _ "$BUS" "$TMP/st"
RC=$?
set -e
[ "$RC" -eq 0 ] || fail "consume went on after its reader had gone (timeout: $RC)"
[ "$(cat "$TMP/st")" -eq 141 ] || fail "consume exited $(cat "$TMP/st"), expected death by SIGPIPE (141)"
set +e
timeout 20 bash -c 'trap "" PIPE; "$1" consume other --from earliest 2>"$3" | head -n 1 >/dev/null; echo "${PIPESTATUS[0]}" >"$2"' _ "$BUS" "$TMP/st" "$TMP/err"
RC=$?
set -e
[ "$RC" -eq 0 ] || fail "consume (SIGPIPE ignored) went on after its reader had gone (timeout: $RC)"
[ "$(cat "$TMP/st")" -eq 1 ] || fail "consume (SIGPIPE ignored) exited $(cat "$TMP/st"), expected 1"
one_error_line "Broken pipe"
ok

# SIGTERM stops a consumer cleanly also while it is blocked writing to a
# reader that does not read: stdio used to retry the interrupted write(2)
# and block again, so the consumer stayed until SIGKILL.
CHECK="consume-sigterm-blocked-output"
expect 0 "$BUS" topic create blocked --partitions 1 --ring-size 1M --ephemeral
seq 100000 | "$BUS" produce blocked || fail "produce to blocked"
mkfifo "$TMP/fifo"
exec 7<>"$TMP/fifo" # the reader, which never reads
"$BUS" consume blocked >"$TMP/fifo" 2>"$TMP/err" &
BGPID=$!
# blocked_in_write PID: PID sleeps in a pipe write (the fifo is full).
blocked_in_write() { grep -q pipe "/proc/$1/wchan" 2>/dev/null; }
for _ in $(seq 100); do
	blocked_in_write "$BGPID" && break
	sleep 0.05
done
if blocked_in_write "$BGPID"; then
	kill -TERM "$BGPID"
	for _ in $(seq 100); do
		kill -0 "$BGPID" 2>/dev/null || break
		sleep 0.05
	done
	kill -0 "$BGPID" 2>/dev/null && fail "SIGTERM did not stop a consumer blocked writing to stdout"
	set +e
	wait "$BGPID"
	RC=$?
	set -e
	BGPID=
	[ "$RC" -eq 0 ] || fail "SIGTERM: the consumer blocked on its output exited $RC"
	[ ! -s "$TMP/err" ] || fail "SIGTERM: the consumer printed '$(head -n 1 "$TMP/err")'"
	ok
else
	echo "skip $CHECK: /proc/PID/wchan does not show the consumer's pipe write"
	kill -KILL "$BGPID"
	wait "$BGPID" 2>/dev/null || true
	BGPID=
fi
exec 7<&-

# The same for produce --print-offsets: SIGTERM ends it, saying how many
# records were written.
CHECK="produce-sigterm-blocked-output"
seq 200000 >"$TMP/in"
"$BUS" produce blocked --print-offsets <"$TMP/in" >"$TMP/fifo" 2>"$TMP/err" &
BGPID=$!
exec 7<>"$TMP/fifo"
for _ in $(seq 100); do
	blocked_in_write "$BGPID" && break
	sleep 0.05
done
if blocked_in_write "$BGPID"; then
	kill -TERM "$BGPID"
	for _ in $(seq 100); do
		kill -0 "$BGPID" 2>/dev/null || break
		sleep 0.05
	done
	kill -0 "$BGPID" 2>/dev/null && fail "SIGTERM did not stop a producer blocked writing its offsets"
	set +e
	wait "$BGPID"
	RC=$?
	set -e
	BGPID=
	[ "$RC" -eq 1 ] || fail "SIGTERM: the producer blocked on its output exited $RC, expected 1"
	one_error_line "interrupted"
	grep -q ' records written$' "$TMP/err" || fail "the error does not say how many records were written"
	ok
else
	echo "skip $CHECK: /proc/PID/wchan does not show the producer's pipe write"
	kill -KILL "$BGPID"
	wait "$BGPID" 2>/dev/null || true
	BGPID=
fi
exec 7<&-

# Offsets that cannot be written stop produce, which says how many records
# went in (it used to write every line, then fail without a count: a
# caller could not know what to send again).
CHECK="produce-offsets-unwritable"
expect 0 "$BUS" topic create offs --partitions 1 --ring-size 1M --ephemeral
seq 3000 >"$TMP/in"
expect 1 bash -c '"$1" produce offs --print-offsets <"$2" >/dev/full' _ "$BUS" "$TMP/in"
one_error_line "writing the offsets to stdout"
n=$(sed -n 's/.*; \([0-9]*\) records written$/\1/p' "$TMP/err")
[ -n "$n" ] || fail "the error does not say how many records were written"
expect 0 "$BUS" consume offs -e
[ "$(wc -l <"$TMP/out")" -eq "$n" ] || fail "the error says $n records written; offs holds $(wc -l <"$TMP/out")"
head -n "$n" "$TMP/in" | cmp -s - "$TMP/out" || fail "offs does not hold the first $n lines"
ok

# A consumer lapped on an overwrite topic says how many records it lost.
CHECK="lost-records"
expect 0 "$BUS" topic create lapped --partitions 1 --ring-size 64K --ephemeral --overflow overwrite
"$BUS" consume lapped --from earliest -f '%o\n' >"$TMP/live" 2>"$TMP/lost" &
BGPID=$!
seq 10 | "$BUS" produce lapped || fail "produce to lapped"
wait_lines "$TMP/live" 10 || fail "the consumer did not print the first 10 records"
kill -STOP "$BGPID"
seq 20000 | "$BUS" produce lapped || fail "produce to lapped"
kill -CONT "$BGPID"
wait_lines "$TMP/live" 11 || fail "the consumer printed nothing after it was lapped"
for _ in $(seq 100); do
	[ "$(tail -n 1 "$TMP/live")" = 20009 ] && break
	sleep 0.1
done
kill -INT "$BGPID"
set +e
wait "$BGPID"
RC=$?
set -e
BGPID=
[ "$RC" -eq 0 ] || fail "SIGINT: the consumer exited $RC"
first=$(sed -n 11p "$TMP/live")
lost=$((first - 10))
[ "$lost" -gt 0 ] || fail "the consumer was not lapped (offset $first after 9)"
grep -q "^bus: warning: consume 'lapped': $lost records lost before offset $first " "$TMP/lost" ||
	fail "no warning of $lost records lost before offset $first: $(cat "$TMP/lost")"
[ "$(tail -n 1 "$TMP/live")" = 20009 ] || fail "the consumer did not reach the end after it was lapped"
ok

CHECK="bus-name"
expect 0 "$BUS" --bus other-bus topic create elsewhere --partitions 1 --ring-size 64K --ephemeral
expect 0 "$BUS" topic list --bus other-bus
[ "$(cat "$TMP/out")" = elsewhere ] || fail "--bus other-bus lists '$(cat "$TMP/out")'"
expect 0 env BUS_NAME=other-bus "$BUS" topic list
[ "$(cat "$TMP/out")" = elsewhere ] || fail "BUS_NAME=other-bus lists '$(cat "$TMP/out")'"
expect 0 "$BUS" topic list
! grep -qx elsewhere "$TMP/out" || fail "a topic of bus other-bus shows on bus $BUS_NAME"
usage_error "bus name" "$BUS" --bus 'no/slash' topic list
usage_error "BUS_NAME" env BUS_NAME='no/slash' "$BUS" topic list
grep -qF "outside [A-Za-z0-9._-]" "$TMP/err" || fail "the error does not say what is wrong with BUS_NAME"
expect 0 env BUS_NAME='no/slash' "$BUS" --bus other-bus topic list
ok

# A standard stream closed by the caller is not taken over by the files
# the library opens: output written there or input read from there would
# land in or come from the bus's shared memory (the control region).
CHECK="closed-std-fds"
expect 0 "$BUS" --bus fds-bus topic create fds --partitions 1 --ring-size 1M --ephemeral
expect 0 bash -c '"$1" --bus fds-bus topic create fds2 --partitions 1 --ring-size 64K --ephemeral 2>&-' _ "$BUS"
expect 0 "$BUS" --bus fds-bus topic list
[ "$(sort "$TMP/out" | tr '\n' ' ')" = "fds fds2 " ] || fail "after a create with stderr closed, the bus lists '$(tr '\n' ' ' <"$TMP/out")'"
expect 1 bash -c '"$1" --bus fds-bus produce fds <&-' _ "$BUS"
one_error_line "reading stdin"
grep -qF "0 records written" "$TMP/err" || fail "the error does not say how many records were written"
seq 3000 >"$TMP/in"
expect 1 bash -c '"$1" --bus fds-bus produce fds --print-offsets <"$2" >&-' _ "$BUS" "$TMP/in"
one_error_line "writing the offsets to stdout"
n=$(sed -n 's/.*; \([0-9]*\) records written$/\1/p' "$TMP/err")
[ -n "$n" ] || fail "the error does not say how many records were written"
expect 0 "$BUS" --bus fds-bus consume fds -e
head -n "$n" "$TMP/in" | cmp -s - "$TMP/out" ||
	fail "after a produce with stdout closed that wrote $n records, fds holds $(wc -l <"$TMP/out") of 3000 records"
expect 1 bash -c '"$1" --bus fds-bus consume fds -e >&-' _ "$BUS"
one_error_line "writing to stdout"
expect 0 "$BUS" --bus fds-bus topic list
ok

# ------------------------------------------------------- runtime errors
CHECK="unknown-topic"
for cmd in "consume nosuch -e" "produce nosuch" "topic describe nosuch" "topic delete nosuch"; do
	# shellcheck disable=SC2086
	expect 1 "$BUS" $cmd </dev/null
	one_error_line "no such topic"
done
expect 1 "$BUS" consume quotes -p 3 -e
one_error_line "no partition 3"
ok

CHECK="delete"
expect 0 "$BUS" topic delete quotes
expect 0 "$BUS" topic list
! grep -qx quotes "$TMP/out" || fail "quotes is still listed"
expect 1 "$BUS" topic describe quotes
one_error_line "no such topic"
expect 0 "$BUS" topic create quotes --partitions 2 --ring-size 64K --ephemeral
expect 0 "$BUS" consume quotes -e
[ ! -s "$TMP/out" ] || fail "a re-created topic has old records"
ok

echo "test_cli: all passed"
