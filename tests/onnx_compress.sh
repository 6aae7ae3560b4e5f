#!/bin/sh
# onnx_compress.sh - the recipe pipelines/onnx-compress.yaml end to end, as
# a user runs it: the CNN that pipelines/models/train_cnn.py trained and
# exported with PyTorch is imported and evaluated (mcomp gets exactly the
# test-split correct count PyTorch recorded in fmnist-cnn.json), pruned,
# quantized to int8 and exported to ONNX; ONNX Runtime then gets exactly
# mcomp's final correct count on the whole test split, and the exported file
# carries the recipe's digest. Without Fashion-MNIST, node or
# onnxruntime-node: SKIP.
set -u
: "${MCOMP_BUILDDIR:?run through make check}" "${MCOMP_SRCDIR:?run through make check}"
mcomp="$MCOMP_BUILDDIR/mcomp"
ortjs="$MCOMP_SRCDIR/tests/ort_run.js"
recipe="$MCOMP_SRCDIR/pipelines/onnx-compress.yaml"
ref="$MCOMP_SRCDIR/pipelines/models/fmnist-cnn.json"
data=/usr/share/datasets/fashion-mnist
tmp=$(mktemp -d "${TMPDIR:-/tmp}/mcomp-onnx-compress-XXXXXX")
trap 'rm -rf "$tmp"' EXIT
. "$MCOMP_SRCDIR/tests/expect.sh"


need_fashion_mnist
need_ort

expect 0 "wrote .*cnn-int8.onnx \(model 'cnn'\)" "$mcomp" run "$recipe" \
	--set "output.path=$tmp/cnn-int8.onnx" --set "report=$tmp/report.json"
printf '%s\n' "$out" | sed -n '/^step/,$p'

# count-correct STEP: test-split correct count of report step STEP
correct() {
	node -e 'const r = JSON.parse(require("fs").readFileSync(process.argv[1]));
		const s = r.steps[+process.argv[2]];
		console.log(Math.round(s.accuracy * 10000));' "$tmp/report.json" "$1"
}
torch=$(sed -n 's/.*"correct": *\([0-9]*\).*/\1/p' "$ref")
imported=$(correct 1)
[ -n "$torch" ] && [ "$imported" = "$torch" ] && ok ||
	bad "the imported model gets $imported of 10000 right, PyTorch $torch"
final=$(correct 4)
[ -n "$final" ] && [ "$final" -gt 8500 ] && ok || bad "the compressed model gets only $final of 10000 right"

# ONNX Runtime on the exported int8 model, whole test split.
ort idx "$data/t10k-images-idx3-ubyte.gz" --first 0 --count 10000 -o "$tmp/x.npy" \
	--labels "$data/t10k-labels-idx1-ubyte.gz" "$tmp/y.npy" || bad "ort_run.js idx failed"
ort run "$tmp/cnn-int8.onnx" "$tmp/x.npy" "$tmp/ort.npy" || bad "ONNX Runtime failed"
cmp=$(ort compare "$tmp/ort.npy" "$tmp/ort.npy" --labels "$tmp/y.npy")
b=$(printf '%s\n' "$cmp" | sed -n 's/.*"correct_a":\([0-9]*\).*/\1/p')
echo "ONNX Runtime: $b of 10000; mcomp: $final"
[ -n "$b" ] && [ "$b" = "$final" ] && ok || bad "ONNX Runtime gets $b of 10000 right, mcomp $final"

digest=$(sha256sum "$recipe" | cut -d' ' -f1)
expect 0 "^mcomp.pipeline.sha256=$digest\$" ort meta "$tmp/cnn-int8.onnx"

finish 0
