#!/bin/sh
# bench/deps.sh - installs the Debian packages the benchmark baselines and
# plots need (on top of what .ci/deps.sh installs for the build):
#   libzmq3-dev               ZeroMQ (base_zmq), with pkg-config's libzmq.pc
#   iceoryx                   iox-roudi, iceoryx's daemon (base_iceoryx)
#   libiceoryx-binding-c-dev  iceoryx's C binding (base_iceoryx)
#   gnuplot-nox               the PNG plots (pngcairo terminal)
#   pkg-config                to find libzmq
# As root it runs apt-get; otherwise it prints the exact command and fails.
set -e
PKGS="libzmq3-dev iceoryx libiceoryx-binding-c-dev gnuplot-nox pkg-config"
missing=""
for p in $PKGS; do
	dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing="$missing $p"
done
[ -z "$missing" ] && exit 0
if [ "$(id -u)" = 0 ]; then
	echo "bench/deps.sh: installing$missing" >&2
	export DEBIAN_FRONTEND=noninteractive
	apt-get update -qq >/dev/null
	# shellcheck disable=SC2086
	apt-get install -y -qq --no-install-recommends $missing >/dev/null
else
	echo "bench/deps.sh: missing Debian packages:$missing" >&2
	echo "bench/deps.sh: run: sudo apt-get install -y$missing" >&2
	exit 1
fi
