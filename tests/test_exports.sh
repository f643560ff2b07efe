#!/bin/bash
# test_exports.sh - libbus.so exports exactly the functions of the public
# headers (libbus/libbus.map), so internal symbols never leak into the ABI.
set -eu
BUILD=${BUILD:-build}
top=$(cd "$(dirname "$0")/.." && pwd)
declared=$(sed -n 's/^[a-z_0-9 ]*[ *]\(bus_[a-z_0-9]*\)(.*/\1/p' "$top"/libbus/include/bus/*.h | sort -u)
exported=$(nm -D --defined-only "$top/$BUILD/lib/libbus.so.0" | awk '{print $3}' | sed 's/@.*//' | grep '^bus_' | sort -u)
if [ "$declared" != "$exported" ]; then
	echo "test_exports: public headers and libbus.so exports differ:" >&2
	diff <(echo "$declared") <(echo "$exported") >&2 || true
	exit 1
fi
echo "ok exports: $(echo "$exported" | wc -l) public functions, nothing else"
