#!/bin/sh
# Installs what the fuzzers need beyond scripts/setup.sh (Debian 12, as
# root): clang, its libFuzzer and sanitizer runtimes, and LLVM's OpenMP
# runtime (clang's -fopenmp). The normal build needs none of these; make
# fuzz and make fuzz-ci do (docs/fuzzing.md). libzstd-dev is setup.sh's too:
# listed here for a tree set up before mcomp read zstd files (the model
# harness decodes them). Safe to run again.
set -eu
packages="clang libclang-rt-14-dev libomp-14-dev libzstd-dev"
missing=""
for p in $packages; do
	dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" ||
		missing="$missing $p"
done
if [ -n "$missing" ]; then
	echo "setup-fuzz: installing$missing"
	if [ "$(id -u)" != 0 ]; then
		echo "setup-fuzz: run as root (or with sudo) to install packages" >&2
		exit 1
	fi
	export DEBIAN_FRONTEND=noninteractive
	apt-get update -q
	# shellcheck disable=SC2086
	apt-get install -y -q --no-install-recommends $missing
fi
