#!/bin/sh
# Installs the Debian packages that building, testing and benchmarking need.
# As root it runs apt-get; otherwise it prints the exact command to run.
set -e
PKGS="build-essential clang pkg-config liburcu-dev libnuma-dev numactl libcriterion-dev"
# make fuzz: clang's libFuzzer runtime.
[ -z "${DEPS_FUZZ:-}" ] || PKGS="$PKGS libclang-rt-dev"
missing=""
for p in $PKGS; do
	dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing="$missing $p"
done
[ -z "$missing" ] && exit 0
if [ "$(id -u)" = 0 ]; then
	echo "deps: installing$missing"
	export DEBIAN_FRONTEND=noninteractive
	apt-get update -qq >/dev/null
	apt-get install -y -qq $missing >/dev/null
else
	echo "deps: missing Debian packages:$missing" >&2
	echo "deps: run: sudo apt-get install -y$missing" >&2
	exit 1
fi
