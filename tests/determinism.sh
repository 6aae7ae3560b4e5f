#!/bin/sh
# determinism.sh - the quickstart recipe, cut down to seconds (one epoch on
# 6000 images), trained with 1, 2 and 3 OpenMP threads and on every GEMM
# kernel this CPU can run (MCOMP_GEMM=avx512, avx2, portable): the saved
# models must be byte-identical. A changed seed must change them.
set -u
: "${MCOMP_BUILDDIR:?run through make check}" "${MCOMP_SRCDIR:?run through make check}"
mcomp="$MCOMP_BUILDDIR/mcomp"
tmp=$(mktemp -d "${TMPDIR:-/tmp}/mcomp-det-XXXXXX")
trap 'rm -rf "$tmp"' EXIT
quick="$MCOMP_SRCDIR/pipelines/quickstart.yaml"
fail=0

run() { # THREADS SEED OUT [GEMM KERNEL]
	MCOMP_GEMM=${4:-} OMP_NUM_THREADS=$1 "$mcomp" run "$quick" --quiet --set seed="$2" \
		--set data.train.count=6000 --set data.test.count=500 \
		--set passes.train.epochs=1 --set output.path="$3" \
		--set report="$3.json" > "$tmp/log" 2>&1 || { cat "$tmp/log"; fail=1; }
}

run 1 7 "$tmp/t1.safetensors"
run 2 7 "$tmp/t2.safetensors"
run 3 7 "$tmp/t3.safetensors"
run 2 8 "$tmp/s8.safetensors"
for t in 2 3; do
	if cmp "$tmp/t1.safetensors" "$tmp/t$t.safetensors"; then
		echo "PASS: 1 and $t threads give the same bytes"
	else
		echo "FAIL: 1 and $t threads differ"
		fail=1
	fi
done
for k in avx512 avx2 portable; do
	run 2 7 "$tmp/k$k.safetensors" "$k"
	# a kernel this CPU lacks falls back to the fastest: the report says which ran
	if ! grep -q "\"gemm_kernel\": *\"$k\"" "$tmp/k$k.safetensors.json"; then
		echo "SKIP: GEMM kernel $k does not run on this CPU"
	elif cmp "$tmp/t1.safetensors" "$tmp/k$k.safetensors"; then
		echo "PASS: MCOMP_GEMM=$k gives the same bytes"
	else
		echo "FAIL: MCOMP_GEMM=$k gives other bytes"
		fail=1
	fi
done
if cmp -s "$tmp/t1.safetensors" "$tmp/s8.safetensors"; then
	echo "FAIL: seeds 7 and 8 gave the same model"
	fail=1
else
	echo "PASS: another seed gives another model"
fi
exit $fail
