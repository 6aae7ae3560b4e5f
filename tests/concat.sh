#!/bin/sh
# concat.sh - a YAML model with concat (a SqueezeNet Fire module: a 1x1
# squeeze, a 1x1 and a 3x3 expand joined along channels) through the
# passes:
#   - train, then structured pruning: the expands that feed the concat are
#     kept whole, and the log says why; the layers before and after it
#     shrink; then static int8 quantization of the pruned model;
#   - both models export to ONNX (Concat, axis 1) and ONNX Runtime computes
#     mcomp's logits: f32 to 1e-5, int8 bit for bit;
# and the refusals, at the layer's line and column: inputs whose other
# dimensions differ (naming every input's shape), one input, five.
# Without Fashion-MNIST the passes are skipped (77); without node or
# onnxruntime-node, the ONNX Runtime part.
set -u
: "${MCOMP_BUILDDIR:?run through make check}" "${MCOMP_SRCDIR:?run through make check}"
mcomp="$MCOMP_BUILDDIR/mcomp"
ortjs="$MCOMP_SRCDIR/tests/ort_run.js"
data=/usr/share/datasets/fashion-mnist
tmp=$(mktemp -d "${TMPDIR:-/tmp}/mcomp-concat-XXXXXX")
trap 'rm -rf "$tmp"' EXIT
. "$MCOMP_SRCDIR/tests/expect.sh"

finish() {
	echo "concat.sh: $pass passed, $fail failed"
	[ "$fail" = 0 ] || exit 1
	exit "${1:-0}"
}

fire='
        - {conv2d: 8}
        - relu
        - {maxpool2d: 2}
        - {conv2d: {out: 4, kernel: 1}, name: squeeze}
        - {relu: {}, name: sq}
        - {conv2d: {out: 6, kernel: 1}, name: e1}
        - {conv2d: {out: 6, padding: 1}, name: e3, inputs: sq}
        - {concat: {}, inputs: [e1, e3], name: cat}
        - relu
        - {conv2d: {out: 8, padding: 1}, name: after}
        - relu
        - {avgpool2d: 2}
        - flatten
        - {linear: 10}'

model() { # FILE LAYERS (the build section only, no data)
	cat > "$1" <<EOF
mcomp: 1
models:
  m:
    build:
      input: [1, 28, 28]
      layers:$2
passes: []
EOF
}

# ---------------------------------------------------------------- refusals, no data needed
model "$tmp/ok.yaml" "$fire"
expect 0 "" "$mcomp" validate "$tmp/ok.yaml"
model "$tmp/shape.yaml" "$(printf '%s\n' "$fire" | sed 's/inputs: \[e1, e3\]/inputs: [e1, e3, input]/')"
expect 2 "shape.yaml:14:[0-9]+: .*node 'cat' \(concat\) given 'e1' \[6, 13, 13\], 'e3' \[6, 13, 13\], 'input' \[1, 28, 28\]: concat joins inputs along their first dimension .*input 1 is \[6, 13, 13\] and input 3 \[1, 28, 28\]" \
	"$mcomp" validate "$tmp/shape.yaml"
model "$tmp/one.yaml" "$(printf '%s\n' "$fire" | sed 's/inputs: \[e1, e3\]/inputs: [e1]/')"
expect 2 "one.yaml:14:[0-9]+: .*concat takes 2 to 4 inputs, got 1" "$mcomp" validate "$tmp/one.yaml"
model "$tmp/five.yaml" "$(printf '%s\n' "$fire" | sed 's/inputs: \[e1, e3\]/inputs: [e1, e3, e1, e3, e1]/')"
expect 2 "five.yaml:14:[0-9]+: .*concat takes 2 to 4 inputs, got 5" "$mcomp" validate "$tmp/five.yaml"
model "$tmp/none.yaml" "$(printf '%s\n' "$fire" | sed 's/, inputs: \[e1, e3\]//')"
expect 2 "none.yaml:14:[0-9]+: .*concat takes 2 to 4 inputs; list them" "$mcomp" validate "$tmp/none.yaml"

if [ ! -r "$data/train-images-idx3-ubyte.gz" ] || [ ! -r "$data/t10k-images-idx3-ubyte.gz" ]; then
	echo "SKIP: no Fashion-MNIST in $data (apt-get install dataset-fashion-mnist)"
	finish 77
fi

# ---------------------------------------------------------------- train, prune, quantize
cat > "$tmp/train.yaml" <<EOF
mcomp: 1
seed: 7
data:
  train: {idx: $data/train, count: 2000}
models:
  fire:
    build:
      input: [1, 28, 28]
      layers:$fire
passes:
  - train: {model: fire, epochs: 1, batch_size: 64, optimizer: adam, lr: 0.003}
output: fire.safetensors
EOF
expect 0 "wrote .*fire.safetensors" "$mcomp" run "$tmp/train.yaml"

cat > "$tmp/pq.yaml" <<EOF
mcomp: 1
seed: 7
data:
  train: {idx: $data/train, count: 1000}
  calib: {idx: $data/train, first: 55000, count: 300}
models:
  fire: {load: fire.safetensors}
passes:
  - prune: {model: fire, method: structured, sparsity: 0.5, finetune_epochs: 1, lr: 0.001}
  - quantize: {model: fire, bits: 8, granularity: per-channel, mode: static, calibration_data: calib, samples: 300}
output: fire-pq.safetensors
EOF
expect 0 "wrote .*fire-pq.safetensors" "$mcomp" run "$tmp/pq.yaml"
log=$out
for l in e1 e3; do
	printf '%s\n' "$log" | grep -q "prune: $l: kept whole: node 'cat' (concat) reads it" && ok ||
		bad "no 'kept whole' for $l in: $log"
done
for l in "conv2d1: \[8, 1, 3, 3\] -> \[4, 1, 3, 3\]" "squeeze: \[4, 8, 1, 1\] -> \[2, 4, 1, 1\]" \
	"after: \[8, 12, 3, 3\] -> \[4, 12, 3, 3\]"; do
	printf '%s\n' "$log" | grep -q -E "prune: $l" && ok || bad "no /prune: $l/ in: $log"
done
expect 0 "cat +concat .*\[12, 13, 13\] +e1, e3" "$mcomp" inspect "$tmp/fire-pq.safetensors"
printf '%s\n' "$out" | grep -q -E "^e1 +qconv2d" && ok || bad "e1 is not quantized: $out"

# ---------------------------------------------------------------- ONNX Runtime
if ! node "$ortjs" probe > /dev/null 2>&1; then
	echo "SKIP: ONNX Runtime part: no node or onnxruntime-node (scripts/setup.sh installs it)"
	finish
fi
expect 0 "" node "$ortjs" idx "$data/t10k-images-idx3-ubyte.gz" --first 0 --count 300 \
	-o "$tmp/x.npy"
for m in fire fire-pq; do
	expect 0 "ONNX opset 13" "$mcomp" export "$tmp/$m.safetensors" -o "$tmp/$m.onnx"
	expect 0 "wrote" "$mcomp" predict "$tmp/$m.safetensors" --input "$tmp/x.npy" -o "$tmp/$m-mc.npy"
	expect 0 "" node "$ortjs" run "$tmp/$m.onnx" "$tmp/x.npy" "$tmp/$m-ort.npy"
	expect 0 "max_abs_diff" node "$ortjs" compare "$tmp/$m-mc.npy" "$tmp/$m-ort.npy"
	echo "$m: ONNX Runtime against mcomp predict: $out"
	d=$(printf '%s\n' "$out" | sed -n 's/.*"max_abs_diff":\([^,]*\),.*/\1/p')
	tol=1e-5
	[ "$m" = fire-pq ] && tol=0
	awk -v d="$d" -v t="$tol" 'BEGIN { exit !(d != "" && d + 0 <= t + 0) }' && ok ||
		bad "$m: ONNX Runtime differs from mcomp by $d (allowed $tol)"
done
finish
