#!/bin/sh
# Runs every test binary given, then the shell tests; fails if any fails.
# Each suite runs with private BUS_SHM_DIR/BUS_DATA_DIR (set by the tests).
set -u
BUILD=${BUILD:-build}
export BUILD
fail=0
for t in "$@"; do
	echo "== $(basename "$t")"
	opts="--jobs 2"
	case "$(basename "$t")" in
	thr_*) opts="" ;;          # plain programs, no Criterion options
	fuzz_*) opts="$(dirname "$0")/fuzz/$(basename "$t" | sed 's/^fuzz_//')" ;; # its corpus
	esac
	# shellcheck disable=SC2086
	if ! "$t" $opts; then
		echo "FAIL: $t" >&2
		fail=1
	fi
done
for t in "$(dirname "$0")"/test_*.sh; do
	[ -f "$t" ] || continue
	echo "== $(basename "$t")"
	if ! bash "$t"; then
		echo "FAIL: $t" >&2
		fail=1
	fi
done
[ "$fail" = 0 ] && echo "all tests passed"
exit $fail
