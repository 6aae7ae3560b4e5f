#!/bin/sh
# fuzz-build.sh DIR TARGET - make fuzz or make fuzz-ci from a normal build:
# builds the libFuzzer harnesses in a build of their own, the distributed
# sources (make distdir of the configured tree $MCOMP_BUILDDIR) copied to
# DIR/src and configured out of tree in DIR/build with CC=clang
# --enable-fuzz, then runs make TARGET there (fuzz/run.sh). make keeps what
# did not change, and what the fuzzers found stays in DIR/build/fuzz/work.
#
# Needs clang and its fuzzer runtime: scripts/setup-fuzz.sh installs them.
#   FUZZ_CC          the compiler (default clang)
#   FUZZ_SECONDS, FUZZ_CI_SECONDS, FUZZ_JOBS, FUZZ_NAMES: as make fuzz takes them
set -eu
top=$(cd "$(dirname "$0")/.." && pwd)
build_top=${MCOMP_BUILDDIR:-$top}
dir=${1:?usage: fuzz-build.sh DIR TARGET}
target=${2:-fuzz}
case $dir in /*) ;; *) dir=$(pwd)/$dir ;; esac
: "${MAKE:=make}"
: "${FUZZ_CC:=clang}"
jobs=$(nproc 2> /dev/null || echo 2)

command -v "$FUZZ_CC" > /dev/null 2>&1 ||
	{ echo "fuzz: no $FUZZ_CC; run scripts/setup-fuzz.sh (as root) first" >&2; exit 2; }
mkdir -p "$dir"
$MAKE -s -C "$build_top" distdir distdir="$dir/src" > "$dir/distdir.log" 2>&1 ||
	{ cat "$dir/distdir.log"; exit 1; }
mkdir -p "$dir/build"
cd "$dir/build"
if [ ! -f Makefile ]; then
	echo "fuzz: configuring $dir/build with CC=$FUZZ_CC --enable-fuzz"
	../src/configure --quiet --enable-fuzz CC="$FUZZ_CC" > configure.log 2>&1 ||
		{ cat configure.log; exit 1; }
fi
echo "fuzz: building the harnesses in $dir/build"
$MAKE -s -j"$jobs" > build.log 2>&1 || { tail -n 40 build.log; exit 1; }
$MAKE -s "$target" ${FUZZ_SECONDS:+FUZZ_SECONDS="$FUZZ_SECONDS"} \
	${FUZZ_CI_SECONDS:+FUZZ_CI_SECONDS="$FUZZ_CI_SECONDS"} \
	${FUZZ_JOBS:+FUZZ_JOBS="$FUZZ_JOBS"} ${FUZZ_NAMES:+FUZZ_NAMES="$FUZZ_NAMES"}
