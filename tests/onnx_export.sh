#!/bin/sh
# onnx_export.sh - ONNX export checked against ONNX Runtime: a small MLP and
# CNN trained on a slice of Fashion-MNIST, quantized int8 static, exported
# f32 and int8 (`mcomp export` and a pipeline's `output: x.onnx`), run by
# ONNX Runtime (tests/ort_run.js, onnxruntime-node from tests/node):
#   - f32: ONNX Runtime's logits agree with mcomp predict's to 1e-5;
#   - int8 static: ONNX Runtime's logits are mcomp's, bit for bit (so its
#     argmax gets exactly as many of the test slice right);
#   - dynamic int8 (MLP, CNN) and 4-bit weight-only exports run and agree;
#   - metadata_props carry mcomp's version (and a pipeline's digest);
# and the refusals: bad usage (2), unreadable files (1), an op a plugin
# provides (2 at validation, naming node and op), a failed export leaves
# the previous file. Without Fashion-MNIST, node or onnxruntime-node: SKIP.
set -u
: "${MCOMP_BUILDDIR:?run through make check}" "${MCOMP_SRCDIR:?run through make check}"
mcomp="$MCOMP_BUILDDIR/mcomp"
ortjs="$MCOMP_SRCDIR/tests/ort_run.js"
data=/usr/share/datasets/fashion-mnist
tmp=$(mktemp -d "${TMPDIR:-/tmp}/mcomp-onnx-export-XXXXXX")
trap 'rm -rf "$tmp"' EXIT
. "$MCOMP_SRCDIR/tests/expect.sh"

finish() {
	echo "onnx_export.sh: $pass passed, $fail failed"
	[ "$fail" = 0 ] || exit 1
	exit "${1:-0}"
}

# ---------------------------------------------------------------- usage, no data needed
expect 0 'export MODEL.safetensors -o OUT.onnx' "$mcomp" help
expect 2 'export needs MODEL.safetensors -o OUT.onnx' "$mcomp" export x.safetensors
expect 2 "unknown or incomplete option '--bogus'" "$mcomp" export x.safetensors --bogus
expect 2 'one model at a time' "$mcomp" export a.safetensors b.safetensors -o c.onnx
expect 1 'cannot open' "$mcomp" export "$tmp/none.safetensors" -o "$tmp/none.onnx"
[ -e "$tmp/none.onnx" ] && bad "a failed export left $tmp/none.onnx" || ok

if [ ! -r "$data/train-images-idx3-ubyte.gz" ] || [ ! -r "$data/t10k-images-idx3-ubyte.gz" ]; then
	echo "SKIP: no Fashion-MNIST in $data (apt-get install dataset-fashion-mnist)"
	finish 77
fi

# ---------------------------------------------------------------- models
# Each trains on 3000 images for a few seconds; accuracy is not the point,
# agreement is.
train() { # NAME LAYERS EPOCHS
	cat > "$tmp/$1.yaml" <<EOF
mcomp: 1
seed: 7
data:
  train: {idx: $data/train, count: 3000}
  calib: {idx: $data/train, first: 55000, count: 500}
models:
  $1:
    build: {input: [1, 28, 28], layers: $2}
passes:
  - train: {model: $1, epochs: $3, batch_size: 64, optimizer: adam, lr: 0.003}
output: $1.safetensors
EOF
	expect 0 "wrote .*$1.safetensors" "$mcomp" run "$tmp/$1.yaml"
}

quantize() { # IN OUT QUANTIZE-PARAMS
	cat > "$tmp/$2.yaml" <<EOF
mcomp: 1
seed: 7
data:
  calib: {idx: $data/train, first: 55000, count: 500}
models:
  m: {load: $1.safetensors}
passes:
  - quantize: {model: m, $3}
output: $2.safetensors
EOF
	expect 0 "wrote .*$2.safetensors" "$mcomp" run "$tmp/$2.yaml"
}

train mlp '[flatten, {linear: 64}, relu, {linear: 10}]' 2
train cnn '[{conv2d: 4}, relu, {maxpool2d: 2}, {conv2d: {out: 8, padding: 1}}, relu, {avgpool2d: 2}, flatten, {linear: 10}]' 1
static='bits: 8, granularity: per-channel, mode: static, calibration_data: calib, samples: 500'
quantize mlp mlp-int8 "$static"
quantize cnn cnn-int8 "$static"
quantize mlp mlp-dyn 'bits: 8, mode: dynamic'
quantize cnn cnn-dyn 'bits: 8, mode: dynamic'
quantize mlp mlp-w4 'bits: 4, granularity: per-channel'

for m in mlp cnn mlp-int8 cnn-int8 mlp-dyn cnn-dyn; do
	expect 0 "$m.safetensors: .* -> .*$m.onnx \(ONNX opset 13\)" \
		"$mcomp" export "$tmp/$m.safetensors" -o "$tmp/$m.onnx"
done
expect 0 "warning: node 'linear1' \(qlinear, 4-bit weight-only\): .*dequantized to f32" \
	"$mcomp" export "$tmp/mlp-w4.safetensors" -o "$tmp/mlp-w4.onnx"
expect 2 'is the input' "$mcomp" export "$tmp/mlp.safetensors" -o "$tmp/mlp.safetensors"

# A pipeline's output: picks ONNX from the extension, and says which recipe made it.
cat > "$tmp/out.yaml" <<EOF
mcomp: 1
models:
  m: {load: mlp-int8.safetensors}
passes: []
output: {model: m, path: out.onnx}
EOF
expect 0 "wrote .*out.onnx \(model 'm'\)" "$mcomp" run "$tmp/out.yaml"

# An op a plugin provides has no ONNX form: refused at validation, naming node and op.
cat > "$tmp/plugin.yaml" <<EOF
mcomp: 1
models:
  m: {build: {input: [4], layers: [{linear: 4}, fx_gain, {linear: 2}]}}
passes:
  - fxgraph: {model: m}
output: {model: m, path: plugin.onnx}
EOF
echo previous > "$tmp/plugin.onnx"
expect 2 "output '.*plugin.onnx' \(model 'm' after the passes\): node 'fx_gain1' \(fx_gain\): op 'fx_gain' is provided by pass 'fxgraph' and has no ONNX form" \
	env MCOMP_PASS_PATH="$MCOMP_FIXTURES:$MCOMP_PASS_PATH" "$mcomp" validate "$tmp/plugin.yaml"
[ "$(cat "$tmp/plugin.onnx")" = previous ] && ok || bad "a refused export changed the previous file"

# ---------------------------------------------------------------- ONNX Runtime
if ! command -v node > /dev/null 2>&1; then
	echo "SKIP: no node (Node.js) to run ONNX Runtime (apt-get install nodejs npm)"
	finish 77
fi
node "$ortjs" probe > /dev/null 2> "$tmp/probe.txt"
if [ $? = 77 ]; then
	echo "SKIP: $(cat "$tmp/probe.txt")"
	finish 77
fi
ort() { node "$ortjs" "$@"; }

# metadata_props: mcomp's version; from a pipeline, the digest of its file.
version=$("$mcomp" version | sed -n 's/^mcomp \([^ ]*\) .*/\1/p')
expect 0 "^mcomp.version=$version\$" ort meta "$tmp/mlp.onnx"
digest=$(sha256sum "$tmp/out.yaml" | cut -d' ' -f1)
expect 0 "^mcomp.pipeline.sha256=$digest\$" ort meta "$tmp/out.onnx"
expect 0 "^mcomp.version=$version\$" ort meta "$tmp/out.onnx"
cmp -s "$tmp/out.onnx" "$tmp/mlp-int8.onnx" && bad "the pipeline's export has no digest" || ok

# The test slice, as mcomp reads IDX (bytes / 255 in float32).
ort idx "$data/t10k-images-idx3-ubyte.gz" --first 0 --count 2000 -o "$tmp/x.npy" \
	--labels "$data/t10k-labels-idx1-ubyte.gz" "$tmp/y.npy" || bad "ort_run.js idx failed"

# field JSON KEY: a number of compare's JSON line
field() { printf '%s\n' "$1" | sed -n "s/.*\"$2\":\([-0-9.e+]*\).*/\1/p"; }

# agree MODEL ORT-OPTIONS...: mcomp predict and ONNX Runtime on the slice; sets $cmp
agree() {
	m=$1
	shift
	"$mcomp" predict "$tmp/$m.safetensors" --input "$tmp/x.npy" -o "$tmp/$m.mc.npy" \
		> /dev/null || bad "mcomp predict $m failed"
	ort run "$tmp/$m.onnx" "$tmp/x.npy" "$tmp/$m.ort.npy" "$@" || bad "ONNX Runtime on $m failed"
	cmp=$(ort compare "$tmp/$m.mc.npy" "$tmp/$m.ort.npy" --labels "$tmp/y.npy")
	echo "$m: mcomp vs ONNX Runtime: $cmp"
}

for m in mlp cnn; do
	agree $m
	d=$(field "$cmp" max_abs_diff)
	awk -v d="$d" 'BEGIN { exit !(d != "" && d + 0 <= 1e-5) }' && ok || bad "$m: f32 logits differ by $d (> 1e-5)"
done
# int8 static is written in integer form, the steps of mcomp's own kernels:
# ONNX Runtime gives the same bits, on its default (fused) graph and as written.
for m in mlp-int8 cnn-int8; do
	for level in all disabled; do
		agree $m --optimize $level
		a=$(field "$cmp" correct_a) b=$(field "$cmp" correct_b) d=$(field "$cmp" max_abs_diff)
		[ -n "$a" ] && [ "$a" = "$b" ] && ok ||
			bad "$m ($level): mcomp gets $a of 2000 right, ONNX Runtime $b"
		[ "$d" = 0 ] && ok || bad "$m ($level): logits differ by $d, not bit for bit"
	done
done
# Dynamic ranges are per batch: ONNX Runtime runs mcomp predict's batches of 256.
for m in mlp-dyn cnn-dyn; do
	agree $m --batch 256
	a=$(field "$cmp" correct_a) b=$(field "$cmp" correct_b)
	[ -n "$a" ] && [ "$a" = "$b" ] && ok || bad "$m: mcomp gets $a of 2000 right, ONNX Runtime $b"
done
agree mlp-w4
d=$(field "$cmp" max_abs_diff)
awk -v d="$d" 'BEGIN { exit !(d != "" && d + 0 <= 1e-4) }' && ok || bad "mlp-w4: logits differ by $d (> 1e-4)"

# And back: the f32 export imports as the model it came from.
for m in mlp cnn; do
	expect 0 'parameters' "$mcomp" import "$tmp/$m.onnx" -o "$tmp/$m.back.safetensors"
	"$mcomp" predict "$tmp/$m.back.safetensors" --input "$tmp/x.npy" -o "$tmp/$m.back.npy" \
		> /dev/null
	d=$(field "$(ort compare "$tmp/$m.mc.npy" "$tmp/$m.back.npy")" max_abs_diff)
	[ "$d" = 0 ] && ok || bad "$m: export then import changed the logits by $d"
done

finish 0
