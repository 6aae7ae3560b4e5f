#!/bin/sh
# qat.sh - quantization-aware training from the command, on real
# Fashion-MNIST (SKIP without it): the shipped recipes validate; a short run
# of pipelines/qat-int4.yaml gives a 4-bit model within 3 pt of its f32 one, the same
# bytes with 1 or 2 threads and with the portable GEMM; and epochs: 0 is
# refused at validation with its place and exit 2.
set -u
: "${MCOMP_BUILDDIR:?run through make check}" "${MCOMP_SRCDIR:?run through make check}"
mcomp="$MCOMP_BUILDDIR/mcomp"
data=/usr/share/datasets/fashion-mnist
tmp=$(mktemp -d "${TMPDIR:-/tmp}/mcomp-qat-XXXXXX")
trap 'rm -rf "$tmp"' EXIT
. "$MCOMP_SRCDIR/tests/expect.sh"

if [ ! -r "$data/train-images-idx3-ubyte.gz" ] || [ ! -r "$data/t10k-images-idx3-ubyte.gz" ]; then
	skip "no Fashion-MNIST in $data (apt-get install dataset-fashion-mnist)"
fi

for r in qat-int4 qat-cnn-int8; do
	expect 0 "" "$mcomp" validate "$MCOMP_SRCDIR/pipelines/$r.yaml"
done

# A short run: 6000 training images, two epochs of training, one of QAT.
short() { # short OUT [ENV...]
	out=$1
	shift
	env "$@" "$mcomp" run --quiet "$MCOMP_SRCDIR/pipelines/qat-int4.yaml" \
		--set data.train.count=6000 --set data.test.count=2000 \
		--set passes.0.train.epochs=2 --set passes.1.quantize.epochs=1 \
		--set output.path="$tmp/$out.safetensors" --set report="$tmp/$out.json" \
		> "$tmp/$out.log" 2>&1
}
if short a OMP_NUM_THREADS=1; then ok; else bad "qat-int4 run: $(cat "$tmp/a.log")"; fi
flat=$(tr -d ' \n' < "$tmp/a.json")
f32=$(printf '%s' "$flat" | sed -n 's/.*"pass":"train"[^}]*"accuracy":\([0-9.]*\).*/\1/p')
acc=$(printf '%s' "$flat" | sed -n 's/.*"pass":"quantize"[^}]*"accuracy":\([0-9.]*\).*/\1/p')
if [ -n "$acc" ] && [ -n "$f32" ] && awk "BEGIN { exit !($f32 >= 0.7 && $acc >= $f32 - 0.03) }"; then
	ok
else
	bad "accuracy f32 '$f32', after qat int4 '$acc' (wanted f32 >= 0.7, qat within 3 pt)"
fi
expect 0 "qlinear.*bits.*4|4.*qlinear" "$mcomp" inspect "$tmp/a.safetensors"
short b OMP_NUM_THREADS=2 || bad "qat-int4 with 2 threads: $(cat "$tmp/b.log")"
if cmp -s "$tmp/a.safetensors" "$tmp/b.safetensors"; then ok; else bad "1 and 2 threads differ"; fi
short c OMP_NUM_THREADS=2 MCOMP_GEMM=portable || bad "portable GEMM: $(cat "$tmp/c.log")"
if cmp -s "$tmp/a.safetensors" "$tmp/c.safetensors"; then ok; else bad "the portable GEMM differs"; fi

# the value came from the override: that is its place
expect 2 "^mcomp: --set passes.1.quantize.epochs: pass 'quantize', epochs: quantization-aware training needs 1 epoch or more" \
	"$mcomp" validate "$MCOMP_SRCDIR/pipelines/qat-int4.yaml" --set passes.1.quantize.epochs=0
# and from the file: a line and column of it
sed 's/epochs: 2/epochs: 0/' "$MCOMP_SRCDIR/pipelines/qat-int4.yaml" > "$tmp/zero.yaml"
expect 2 "zero.yaml:[0-9]+:[0-9]+: pass 'quantize', epochs: quantization-aware training needs 1 epoch" \
	"$mcomp" validate "$tmp/zero.yaml"
finish
