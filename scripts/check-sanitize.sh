#!/bin/sh
# check-sanitize.sh [DIR] - make check with AddressSanitizer, LeakSanitizer and
# UBSan, in a build of its own: the distributed sources (make distdir of the
# configured build tree $MCOMP_BUILDDIR, default this checkout) copied to
# DIR/src and built out of tree (VPATH) in DIR/build; DIR defaults to
# build-asan. A source tree that is configured in place cannot host a VPATH
# build (configure refuses it), hence the copy; make keeps what did not
# change, so a second run rebuilds only what changed.
#
# Any sanitizer report fails the test that made it (halt_on_error). Leaks are
# reported except those scripts/lsan.supp names (the OpenMP runtime's
# thread pool, kept until exit by design). Tests that cannot run under a
# sanitizer say so and SKIP.
#
#   SANITIZE_CFLAGS  compiler flags (default below)
#   JOBS             make -j (default: the number of CPUs)
#   TESTS            a subset of the tests, as for make check
set -eu
top=$(cd "$(dirname "$0")/.." && pwd)
build_top=${MCOMP_BUILDDIR:-$top}
dir=${1:-$build_top/build-asan}
case $dir in /*) ;; *) dir=$(pwd)/$dir ;; esac
: "${MAKE:=make}"
: "${JOBS:=$(nproc 2> /dev/null || echo 2)}"
: "${SANITIZE_CFLAGS:=-fsanitize=address,undefined -fno-omit-frame-pointer -g -O1}"

[ -f "$build_top/Makefile" ] ||
	{ echo "check-sanitize: configure $build_top first (scripts/setup.sh does)" >&2; exit 2; }

start=$(date +%s)
echo "check-sanitize: sources into $dir/src"
mkdir -p "$dir"
# distdir writes only its own folder; the tree's own build stays as it is.
$MAKE -s -C "$build_top" distdir distdir="$dir/src" > "$dir/distdir.log" 2>&1 ||
	{ cat "$dir/distdir.log"; exit 1; }
# ONNX Runtime for the ONNX tests, where this checkout has it (not distributed).
if [ -d "$top/tests/node/node_modules" ] && [ ! -e "$dir/src/tests/node/node_modules" ]; then
	ln -s "$top/tests/node/node_modules" "$dir/src/tests/node/node_modules"
fi

mkdir -p "$dir/build"
cd "$dir/build"
if [ ! -f Makefile ] || [ "$(cat .sanitize-cflags 2> /dev/null)" != "$SANITIZE_CFLAGS" ]; then
	echo "check-sanitize: configuring with CFLAGS='$SANITIZE_CFLAGS'"
	../src/configure --quiet CFLAGS="$SANITIZE_CFLAGS" LDFLAGS="-fsanitize=address,undefined" \
		> configure.log 2>&1 || { cat configure.log; exit 1; }
	printf '%s' "$SANITIZE_CFLAGS" > .sanitize-cflags
fi

# halt_on_error: the first report ends the process (nonzero), so the test
# fails; UBSan needs it said (it recovers by default).
# detect_stack_use_after_return stays off: GCC's fake stack frames do not
# keep the 64-byte alignment of the AVX-512 GEMM's locals, and the kernel
# faults on an aligned store there (no bug of mcomp's).
ASAN_OPTIONS="halt_on_error=1:detect_leaks=1:strict_string_checks=1:detect_stack_use_after_return=0"
UBSAN_OPTIONS="halt_on_error=1:print_stacktrace=1"
LSAN_OPTIONS="suppressions=$dir/src/scripts/lsan.supp:print_suppressions=0"
export ASAN_OPTIONS UBSAN_OPTIONS LSAN_OPTIONS

echo "check-sanitize: make -j$JOBS check in $dir/build"
status=0
$MAKE -j"$JOBS" check ${TESTS:+TESTS="$TESTS"} || status=$?
end=$(date +%s)
echo "check-sanitize: $((end - start)) s; exit $status (logs: $dir/build/test-suite.log)"
exit $status
