#!/bin/sh
# blocks.sh - a model built of blocks (pipelines/mobilenetv2.yaml's inverted
# residuals, cut down to seconds: one epoch on 1024 images) trained with 1,
# 2 and 3 OpenMP threads gives byte-identical files; a pipeline whose block
# use is misspelt is refused with exit status 2 and its place.
set -u
: "${MCOMP_BUILDDIR:?run through make check}" "${MCOMP_SRCDIR:?run through make check}"
mcomp="$MCOMP_BUILDDIR/mcomp"
recipe="$MCOMP_SRCDIR/pipelines/mobilenetv2.yaml"
data=/usr/share/datasets/fashion-mnist
[ -e "$data/train-images-idx3-ubyte.gz" ] || { echo "SKIP: no Fashion-MNIST in $data"; exit 77; }
tmp=$(mktemp -d "${TMPDIR:-/tmp}/mcomp-blocks-XXXXXX")
trap 'rm -rf "$tmp"' EXIT
fail=0

run() { # THREADS OUT
	OMP_NUM_THREADS=$1 "$mcomp" run "$recipe" --quiet --set data.train.count=1024 \
		--set data.test.count=256 --set passes.train.epochs=1 --set output.path="$2" \
		--set report="$2.json" --set passes.train.checkpoint.path="$2.ckpt" > "$tmp/log" 2>&1 || { cat "$tmp/log"; fail=1; }
}

run 1 "$tmp/t1.safetensors"
for t in 2 3; do
	run $t "$tmp/t$t.safetensors"
	if cmp "$tmp/t1.safetensors" "$tmp/t$t.safetensors"; then
		echo "PASS: 1 and $t threads give the same bytes"
	else
		echo "FAIL: 1 and $t threads differ"
		fail=1
	fi
done
if grep -q '"stage2.1.dw.weight"' "$tmp/t1.safetensors"; then
	echo "PASS: the file names the expanded layers (stage2.1.dw)"
else
	echo "FAIL: no stage2.1.dw.weight in the file"
	fail=1
fi

"$mcomp" validate "$recipe" --set 'models.mobilenetv2.build.layers.4={inverted_residul: {out: 16}}' \
	> "$tmp/out" 2>&1
rc=$?
if [ $rc -eq 2 ] && grep -q "unknown op or block 'inverted_residul'; did you mean 'inverted_residual'" "$tmp/out"; then
	echo "PASS: a misspelt block is refused (exit 2)"
else
	echo "FAIL: misspelt block: exit $rc:"; cat "$tmp/out"
	fail=1
fi
exit $fail
