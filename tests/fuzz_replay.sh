#!/bin/sh
# fuzz_replay.sh - every fuzz harness (fuzz/NAME.c, linked with the plain
# driver fuzz/replay.c) replays its seed corpus fuzz/corpus/NAME and the
# inputs that once made it fail, fuzz/regress/NAME: no crash, no abort (a
# harness aborts on an inconsistency: a refusal without a message, a model
# that does not read back as it was written), and under make
# check-sanitize no sanitizer report. docs/fuzzing.md says more.
set -u
: "${MCOMP_BUILDDIR:?run through make check}" "${MCOMP_SRCDIR:?run through make check}"
. "$MCOMP_SRCDIR/tests/expect.sh"
tmp=$(mktemp -d "${TMPDIR:-/tmp}/mcomp-fuzz-replay-XXXXXX")
trap 'rm -rf "$tmp"' EXIT
export TMPDIR="$tmp" OMP_NUM_THREADS=2
# Under make check-sanitize: an allocation of more than 1 GB fails (and the
# harness aborts on the MC_ENOMEM), as fuzz/replay.c's memory limit makes it
# fail in other builds. No input here needs that much.
ASAN_OPTIONS="${ASAN_OPTIONS:+$ASAN_OPTIONS:}allocator_may_return_null=1:max_allocation_size_mb=1024"
export ASAN_OPTIONS

for name in safetensors model idx npy pipeline cascade onnx; do
	bin=$MCOMP_BUILDDIR/fuzz/replay-$name
	if [ ! -x "$bin" ]; then
		bad "no $bin (make check builds it)"
		continue
	fi
	set -- "$MCOMP_SRCDIR/fuzz/corpus/$name"
	[ -d "$MCOMP_SRCDIR/fuzz/regress/$name" ] && set -- "$@" "$MCOMP_SRCDIR/fuzz/regress/$name"
	if out=$("$bin" "$@" 2>&1); then
		echo "$name: $(printf '%s\n' "$out" | tail -n 1)"
		ok
	else
		bad "$name harness failed on its inputs (FUZZ_REPLAY_VERBOSE=1 names each): $(printf '%s\n' "$out" | tail -n 30)"
	fi
done
# nothing left behind: each harness removes its folder at exit
left=$(ls "$tmp")
[ -z "$left" ] && ok || bad "harnesses left files: $left"
finish
