#!/bin/sh
# fuzz/run.sh NAME... - runs the libFuzzer harness fuzz/fuzz-NAME of a build
# configured with --enable-fuzz for FUZZ_SECONDS each (make fuzz, make
# fuzz-ci), FUZZ_JOBS of them at a time, and fails when any of them found a
# crash, a leak, a sanitizer report, a hang or an input that ran out of
# memory.
#
# Each harness starts from its seeds, fuzz/corpus/NAME and fuzz/regress/NAME
# of the sources (read only), and from what earlier runs found, kept in
# BUILD/fuzz/work/NAME (new inputs go there, so a later run goes on where
# this one stopped). What fails is written to BUILD/fuzz/crashes/NAME/
# (emptied at the start of each run), the harness's output to
# BUILD/fuzz/logs/NAME.log.
#
#   FUZZ_SRCDIR, FUZZ_BUILDDIR  the source and build trees (make sets them)
#   FUZZ_SECONDS                time per harness (default 600)
#   FUZZ_JOBS                   harnesses run at once (default 1)
#   FUZZ_ARGS                   more libFuzzer options, e.g. -max_len=65536
set -u
src=${FUZZ_SRCDIR:-$(cd "$(dirname "$0")/.." && pwd)}
build=${FUZZ_BUILDDIR:-$(pwd)}
seconds=${FUZZ_SECONDS:-600}
jobs=${FUZZ_JOBS:-1}

# One harness, in the background of the loop below: its status in a file.
run_one() {
	name=$1
	bin=$build/fuzz/fuzz-$name
	work=$build/fuzz/work/$name
	crashes=$build/fuzz/crashes/$name
	log=$build/fuzz/logs/$name.log
	# what the last run found goes: its report named it
	rm -rf "$crashes"
	mkdir -p "$work" "$crashes" "$build/fuzz/logs"
	if [ ! -x "$bin" ]; then
		echo "no $bin: configure with --enable-fuzz CC=clang and make" > "$log"
		echo 2 > "$log.status"
		return
	fi
	seeds="$src/fuzz/corpus/$name"
	[ -d "$src/fuzz/regress/$name" ] && seeds="$seeds $src/fuzz/regress/$name"
	dict=
	[ -s "$src/fuzz/$name.dict" ] && dict="-dict=$src/fuzz/$name.dict"
	# One OpenMP thread: the parsers are serial, and a harness should take one
	# core. Leaks count (ASan's leak check at each input and at exit). An
	# input that runs 20 s is a hang; one that needs 2 GB is a finding too
	# (issue: bounded memory on hostile input).
	# shellcheck disable=SC2086
	OMP_NUM_THREADS=1 MCOMP_PROGRESS=0 \
		ASAN_OPTIONS="${ASAN_OPTIONS:-detect_leaks=1:halt_on_error=1}" \
		UBSAN_OPTIONS="${UBSAN_OPTIONS:-halt_on_error=1:print_stacktrace=1}" \
		"$bin" -max_total_time="$seconds" -timeout=20 -rss_limit_mb=2560 \
		-malloc_limit_mb=2048 -print_final_stats=1 -artifact_prefix="$crashes/" \
		$dict ${FUZZ_ARGS:-} "$work" $seeds > "$log" 2>&1
	echo $? > "$log.status"
}

[ $# -gt 0 ] || { echo "usage: $0 NAME..." >&2; exit 2; }
echo "fuzz: $* for $seconds s each, $jobs at a time (logs: $build/fuzz/logs)"
running=0
for name; do
	rm -f "$build/fuzz/logs/$name.log.status"
	run_one "$name" &
	running=$((running + 1))
	if [ "$running" -ge "$jobs" ]; then
		wait
		running=0
	fi
done
wait

failed=0
for name; do
	log=$build/fuzz/logs/$name.log
	status=$(cat "$log.status" 2> /dev/null || echo 2)
	execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -n 1)
	# -fork mode (FUZZ_ARGS) reports "#RUNS: cov: ..." lines and may go on past findings
	[ -n "$execs" ] || execs=$(sed -n 's/^#\([0-9]*\): cov:.*/\1/p' "$log" | tail -n 1)
	found=$(ls "$build/fuzz/crashes/$name" 2> /dev/null | wc -l)
	[ "$status" = 0 ] && [ "$found" != 0 ] && status="0 with $found inputs found"
	corpus=$(ls "$build/fuzz/work/$name" 2> /dev/null | wc -l)
	if [ "$status" = 0 ]; then
		echo "fuzz: $name: ${execs:-?} inputs run, $corpus in its corpus, no failure"
	else
		failed=$((failed + 1))
		echo "fuzz: $name: FAILED (exit $status) after ${execs:-?} inputs:"
		grep -E '^(==[0-9]+==ERROR|SUMMARY|[^ ]*runtime error|artifact_prefix|Test unit written)' \
			"$log" | head -n 8 | sed 's/^/    /'
		ls "$build/fuzz/crashes/$name" 2> /dev/null | sed "s|^|    input: $build/fuzz/crashes/$name/|"
	fi
done
if [ "$failed" -gt 0 ]; then
	echo "fuzz: replay a failing input with fuzz/fuzz-NAME INPUT; once it is fixed, add"
	echo "fuzz: it to fuzz/regress/NAME/ so that make check replays it."
fi
echo "fuzz: $(($# - failed)) passed, $failed failed"
[ "$failed" = 0 ]
