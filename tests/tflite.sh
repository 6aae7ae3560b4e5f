#!/bin/sh
# tflite.sh - TFLite export checked by an independent reader: Arm NN's
# TFLite parser and reference CPU backend (Debian's python3-pyarmnn,
# tests/tflite_run.py). Small models trained on a slice of Fashion-MNIST,
# quantized int8 static, exported (`mcomp export` and a pipeline's
# `output: x.tflite`), run by Arm NN on 300 test images, compared with
# mcomp predict's outputs:
#   - f32 (MLP; CNN with a flatten into a linear layer, whose columns the
#     export permutes for NHWC; a MobileNetV2-like block model: batch norms
#     folded, a stride-2 convolution through PAD, depthwise, relu6, a
#     residual add, global average pooling; an untrained model of the other
#     ops): outputs to 1e-5 of the largest;
#   - int8 ending in qglobal_avgpool (the block model): every output within
#     one quantum of mcomp's (the two round differently: TFLite's int32 bias
#     and fixed-point requantization against mcomp's f32 epilogue), at most
#     1% of predictions differing (a quantum can turn a tie);
#   - int8 MLP (per channel: 1x1 CONV_2D; per tensor: FULLY_CONNECTED) and
#     CNN, whose last layer is written f32 (no calibrated logits): logits
#     within 2% of the largest, at most 1% of predictions differing;
# and the refusals: ops TFLite does not hold (a grouped convolution, a
# dynamic int8 layer, an op without a mapping) exit 2 naming the node, at
# validation for a pipeline; a failed export leaves the previous file.
# Without Fashion-MNIST or pyarmnn: SKIP.
set -u
: "${MCOMP_BUILDDIR:?run through make check}" "${MCOMP_SRCDIR:?run through make check}"
mcomp="$MCOMP_BUILDDIR/mcomp"
run_py="$MCOMP_SRCDIR/tests/tflite_run.py"
data=/usr/share/datasets/fashion-mnist
tmp=$(mktemp -d "${TMPDIR:-/tmp}/mcomp-tflite-XXXXXX")
trap 'rm -rf "$tmp"' EXIT
. "$MCOMP_SRCDIR/tests/expect.sh"

# field NAME TEXT: the value of NAME=... in TEXT
field() { printf '%s\n' "$2" | tr ' ' '\n' | sed -n "s/^$1=//p"; }
# le A B: A <= B (decimals)
le() { awk -v a="$1" -v b="$2" 'BEGIN { exit !(a + 0 <= b + 0) }'; }

need_fashion_mnist
[ -x /usr/bin/python3 ] || skip "no /usr/bin/python3"
/usr/bin/python3 "$run_py" probe 2> "$tmp/probe.txt" || skip "$(cat "$tmp/probe.txt")"

# model NAME LAYERS: $tmp/NAME.safetensors, trained one epoch on 2000 images
model() {
	cat > "$tmp/$1.yaml" <<EOF
mcomp: 1
seed: 7
data:
  train: {idx: $data/train, count: 2000}
models:
  $1:
    build: {input: [1, 28, 28], layers: $2}
passes:
  - train: {model: $1, epochs: 1, batch_size: 64, optimizer: adam, lr: 0.004}
output: $1.safetensors
EOF
	expect 0 "wrote .*$1.safetensors" "$mcomp" run "$tmp/$1.yaml"
}

# quantize IN OUT GRANULARITY: int8 static, calibrated on 500 held-out images
quantize() {
	cat > "$tmp/$2.yaml" <<EOF
mcomp: 1
seed: 7
data:
  calib: {idx: $data/train, first: 55000, count: 500}
models:
  m: {load: $1.safetensors}
passes:
  - quantize: {model: m, bits: 8, granularity: $3, mode: static, calibration_data: calib, samples: 500}
output: $2.safetensors
EOF
	expect 0 "wrote .*$2.safetensors" "$mcomp" run "$tmp/$2.yaml"
}

# agree NAME: exports $tmp/NAME.safetensors, runs it in Arm NN and mcomp; sets $cmp
agree() {
	expect 0 "-> .*$1.tflite \(TFLite\)" "$mcomp" export "$tmp/$1.safetensors" -o "$tmp/$1.tflite"
	"$mcomp" predict "$tmp/$1.safetensors" --input "$tmp/x.npy" -o "$tmp/$1.mc.npy" \
		> /dev/null || bad "mcomp predict $1 failed"
	/usr/bin/python3 "$run_py" run "$tmp/$1.tflite" "$tmp/x.npy" "$tmp/$1.arm.npy" \
		2> "$tmp/$1.err" || bad "Arm NN could not run $1.tflite: $(tail -3 "$tmp/$1.err")"
	cmp=$(/usr/bin/python3 "$run_py" compare "$tmp/$1.mc.npy" "$tmp/$1.arm.npy" "$tmp/y.npy")
	echo "$1: $cmp"
}

/usr/bin/python3 "$run_py" idx "$data/t10k-images-idx3-ubyte.gz" 300 "$tmp/x.npy" \
	"$data/t10k-labels-idx1-ubyte.gz" "$tmp/y.npy" || bad "tflite_run.py idx failed"

model mlp '[flatten, {linear: 64}, relu, {linear: 10}]'
model cnn '[{conv2d: 4}, relu, {maxpool2d: 2}, {conv2d: {out: 16, padding: 1}}, relu, {avgpool2d: 2}, flatten, {linear: 10}]'
# MobileNetV2's parts: a stride-2 stem (28 -> 14: SAME would pad after, mcomp
# pads both sides: a PAD), a 2x2 conv to 13, an inverted residual of stride 2
# (1x1 expansion, 3x3 depthwise, 1x1 linear projection, batch norms, relu6),
# one of stride 1 with its residual add, a 1x1 head to 10 channels, pooling.
blk='[{conv2d: {out: 8, stride: 2, padding: 1, bias: false}}, batchnorm, relu6,
 {conv2d: {out: 8, kernel: 2}}, relu6,
 {conv2d: {out: 32, kernel: 1, bias: false}}, batchnorm, relu6,
 {conv2d: {out: 32, groups: 32, stride: 2, padding: 1, bias: false}}, batchnorm, relu6,
 {conv2d: {out: 12, kernel: 1, bias: false}}, {batchnorm: {}, name: b1},
 {conv2d: {out: 48, kernel: 1, bias: false}}, batchnorm, relu6,
 {conv2d: {out: 48, groups: 48, padding: 1, bias: false}}, batchnorm, relu6,
 {conv2d: {out: 12, kernel: 1, bias: false}}, {batchnorm: {}, name: b2},
 {add: {}, inputs: [b2, b1]}, {conv2d: {out: 10, kernel: 1}}, relu6, global_avgpool]'
model blk "$blk"
# the other ops, untrained (agreement needs no training): sigmoid, a max pool
# SAME reproduces, clip by MAXIMUM and MINIMUM, concat, an uneven pad2d, an
# average pool through PAD, a flatten read by softmax (TRANSPOSE to NCHW)
cat > "$tmp/misc.yaml" <<EOF
mcomp: 1
seed: 7
models:
  misc:
    build:
      input: [1, 28, 28]
      layers: [{conv2d: {out: 6, padding: 1}, name: c1}, sigmoid,
               {maxpool2d: {kernel: 3, stride: 1, padding: 1}}, {conv2d: {out: 6, padding: 1}, name: c2},
               {clip: {min: -0.5, max: 2}}, {concat: {}, inputs: [c1, c2]},
               {pad2d: {top: 1, left: 2, bottom: 0, right: 1}}, {avgpool2d: {kernel: 3, stride: 2, padding: 1}},
               {conv2d: {out: 2, kernel: 4, stride: 4}}, flatten, softmax]
passes: []
output: misc.safetensors
EOF
expect 0 "wrote .*misc.safetensors" "$mcomp" run "$tmp/misc.yaml"
quantize mlp mlp-int8 per-channel
quantize mlp mlp-int8t per-tensor
quantize cnn cnn-int8 per-channel
quantize blk blk-int8 per-channel

for m in mlp cnn blk misc; do
	agree $m
	le "$(field max_rel "$cmp")" 1e-5 && ok || bad "$m: Arm NN's outputs are not mcomp's: $cmp"
	[ "$(field argmax_disagree "$cmp")" = 0 ] && ok || bad "$m: predictions differ: $cmp"
done
agree blk-int8
le "$(field max_quanta "$cmp")" 1.0001 && ok || bad "blk-int8: more than a quantum apart: $cmp"
# outputs a quantum apart can turn a tie between two classes
le "$(field argmax_disagree "$cmp")" 3 && ok || bad "blk-int8: predictions differ: $cmp"
for m in mlp-int8 mlp-int8t cnn-int8; do
	agree $m
	le "$(field max_rel "$cmp")" 0.02 && ok || bad "$m: Arm NN's logits are far from mcomp's: $cmp"
	le "$(field argmax_disagree "$cmp")" 3 && ok || bad "$m: predictions differ: $cmp"
done
# the layer written f32 says so
expect 0 "node 'linear2' \(qlinear\): its output has no calibrated range" \
	"$mcomp" export "$tmp/mlp-int8.safetensors" -o "$tmp/again.tflite"

# ---------------------------------------------------------------- a pipeline's output
cat > "$tmp/p.yaml" <<EOF
mcomp: 1
seed: 7
models:
  m: {load: mlp.safetensors}
passes: []
output: {model: m, path: out/m.tflite}
EOF
expect 0 "wrote .*out/m.tflite" "$mcomp" run "$tmp/p.yaml"
grep -q "mcomp.pipeline.sha256=" "$tmp/out/m.tflite" && ok ||
	bad "the pipeline's digest is not in the TFLite description"
cmp -s "$tmp/out/m.tflite" "$tmp/mlp.tflite" 2> /dev/null && bad "the pipeline's file has no digest" || ok
# same bytes for any thread count
OMP_NUM_THREADS=1 "$mcomp" export "$tmp/blk-int8.safetensors" -o "$tmp/t1.tflite" > /dev/null 2>&1
OMP_NUM_THREADS=2 "$mcomp" export "$tmp/blk-int8.safetensors" -o "$tmp/t2.tflite" > /dev/null 2>&1
cmp -s "$tmp/t1.tflite" "$tmp/t2.tflite" && ok || bad "the TFLite bytes depend on the thread count"

# ---------------------------------------------------------------- refusals
model grp '[{conv2d: {out: 8, padding: 1}}, relu, {conv2d: {out: 8, groups: 2}}, global_avgpool, {linear: 10}]'
printf 'old\n' > "$tmp/keep.tflite"
expect 2 "node 'conv2d2' \(conv2d\): groups 2 of 4 channels each: TFLite has CONV_2D" \
	"$mcomp" export "$tmp/grp.safetensors" -o "$tmp/keep.tflite"
[ "$(cat "$tmp/keep.tflite")" = old ] && ok || bad "a failed export changed keep.tflite"
ls "$tmp" | grep -q 'keep.tflite.' && bad "a failed export left a temporary file: $(ls "$tmp")" || ok
cat > "$tmp/dyn.yaml" <<EOF
mcomp: 1
seed: 7
models:
  m: {load: mlp.safetensors}
passes:
  - quantize: {model: m, bits: 8, mode: dynamic}
output: {model: m, path: dyn.tflite}
EOF
expect 2 "output '.*dyn.tflite' .*node 'linear1' \(qlinear\): mode 'dynamic': TFLite's int8 layers take activations at calibrated scales; quantize with mode: static" \
	"$mcomp" validate "$tmp/dyn.yaml"
cat > "$tmp/hsw.yaml" <<EOF
mcomp: 1
seed: 7
models:
  m: {build: {input: [1, 28, 28], layers: [{conv2d: 4}, hardswish, flatten, {linear: 10}]}}
passes: []
output: {model: m, path: hsw.tflite}
EOF
expect 2 "node 'hardswish1' \(hardswish\): TFLite export has no mapping for op 'hardswish'" \
	"$mcomp" validate "$tmp/hsw.yaml"
finish
