#!/bin/sh
# onnx_export.sh - ONNX export checked against ONNX Runtime: a small MLP and
# CNN trained on a slice of Fashion-MNIST, quantized int8 static, exported
# f32 and int8 (`mcomp export` and a pipeline's `output: x.onnx`), run by
# ONNX Runtime (tests/ort_run.js, onnxruntime-node from tests/node):
#   - f32: ONNX Runtime's logits agree with mcomp predict's to 1e-5;
#   - int8 static: ONNX Runtime's logits are mcomp's, bit for bit (so its
#     argmax gets exactly as many of the test slice right);
#   - dynamic int8 (MLP, CNN) and 4-bit weight-only exports run and agree;
#   - a model of every activation op (leaky_relu, hardswish, relu6,
#     hardsigmoid, a per-channel mul gate, sigmoid, clip): f32 logits to
#     1e-5, its int8 static form the same correct count;
#   - 4-bit weights as INT4 DequantizeLinear (opset 21, per channel and
#     per group of 32, asymmetric; pruned 75%, stored sparse in the
#     .safetensors): logits to 1e-5, same correct count;
#     --int4 f32 the dense fallback with its warning;
#   - a pruned model exports dense, saying the sparse gain stays in the
#     .safetensors (which is smaller);
#   - cascades: one file per stage; tests/ort_run.js applies the rule from
#     metadata_props and gets mcomp's predictions, accuracy and exits;
#   - metadata_props carry mcomp's version (and a pipeline's digest, or
#     the exported file's);
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


# ---------------------------------------------------------------- usage, no data needed
expect 0 'export MODEL.safetensors -o OUT.onnx' "$mcomp" help
expect 2 'export needs MODEL.safetensors -o OUT.onnx' "$mcomp" export x.safetensors
expect 2 "unknown or incomplete option '--bogus'" "$mcomp" export x.safetensors --bogus
expect 2 'one model at a time' "$mcomp" export a.safetensors b.safetensors -o c.onnx
expect 1 'cannot open' "$mcomp" export "$tmp/none.safetensors" -o "$tmp/none.onnx"
[ -e "$tmp/none.onnx" ] && bad "a failed export left $tmp/none.onnx" || ok

need_fashion_mnist

# ---------------------------------------------------------------- models
# Each trains on 3000 images for a few seconds; accuracy is not the point,
# agreement is.


train_model mlp '[flatten, {linear: 64}, relu, {linear: 10}]' 2
train_model cnn '[{conv2d: 4}, relu, {maxpool2d: 2}, {conv2d: {out: 16, padding: 1}}, relu, {avgpool2d: 2}, flatten, {linear: 10}]' 1
# Every activation, and a squeeze-and-excitation gate: mul of [8, 13, 13] by [8].
train_model act '[{conv2d: 8}, {leaky_relu: 0.1}, {maxpool2d: 2, name: stem}, {conv2d: {out: 8, padding: 1}}, hardswish, global_avgpool, {linear: 4}, relu6, {linear: 8}, {hardsigmoid: {alpha: 0.25, beta: 0.4}, name: gate}, {mul: {}, inputs: [stem, gate]}, {conv2d: {out: 8, padding: 1}}, sigmoid, {avgpool2d: 2}, flatten, {clip: {min: -0.5, max: 2}}, {linear: 10}]' 2
static='bits: 8, granularity: per-channel, mode: static, calibration_data: calib, samples: 500'
quantize_model mlp mlp-int8 "$static"
quantize_model cnn cnn-int8 "$static"
quantize_model act act-int8 "$static"
quantize_model mlp mlp-dyn 'bits: 8, mode: dynamic'
quantize_model cnn cnn-dyn 'bits: 8, mode: dynamic'
quantize_model mlp mlp-w4 'bits: 4, granularity: per-channel'
# per group of 32 where the inputs allow it (linear2: 64), asymmetric: INT4 zero points
quantize_model mlp mlp-w4g 'bits: 4, scheme: asymmetric, granularity: per-group, group_size: 32, overrides: {linear1: per-channel}'
# pruned 75%, then 4-bit: the file stores the codes sparse (bitmask + nonzero codes), ONNX dense
cat > "$tmp/mlp-w4s.yaml" <<EOF
mcomp: 1
seed: 7
data:
  train: {idx: $data/train, count: 500}
models:
  m: {load: mlp.safetensors}
passes:
  - prune: {model: m, sparsity: 0.75}
  - quantize: {model: m, bits: 4, granularity: per-group, group_size: 32, overrides: {linear1: per-channel}}
output: mlp-w4s.safetensors
EOF
expect 0 "wrote .*mlp-w4s.safetensors" "$mcomp" run "$tmp/mlp-w4s.yaml"

for m in mlp cnn mlp-int8 cnn-int8 mlp-dyn cnn-dyn; do
	expect 0 "$m.safetensors: .* -> .*$m.onnx \(ONNX opset 13\)" \
		"$mcomp" export "$tmp/$m.safetensors" -o "$tmp/$m.onnx"
done
for m in act act-int8; do # HardSwish is opset 14
	expect 0 "$m.safetensors: .* -> .*$m.onnx \(ONNX opset 14\)" \
		"$mcomp" export "$tmp/$m.safetensors" -o "$tmp/$m.onnx"
done
for m in mlp-w4 mlp-w4g mlp-w4s; do # INT4 with block quantization is opset 21
	expect 0 "$m.safetensors: .* -> .*$m.onnx \(ONNX opset 21\)" \
		"$mcomp" export "$tmp/$m.safetensors" -o "$tmp/$m.onnx"
	printf '%s\n' "$out" | grep -q warning && bad "$m: the INT4 export warned: $out" || ok
done
expect 0 "warning: node 'linear1' \(qlinear, 4-bit weight-only\): .*dequantized to f32" \
	"$mcomp" export "$tmp/mlp-w4.safetensors" -o "$tmp/mlp-w4f.onnx" --int4 f32
expect 0 "mlp-w4f.onnx \(ONNX opset 13\)" \
	"$mcomp" export "$tmp/mlp-w4.safetensors" -o "$tmp/mlp-w4f.onnx" --int4 f32
expect 2 "export: --int4 takes int4 .* or f32 .*, not 'bf16'" \
	"$mcomp" export "$tmp/mlp-w4.safetensors" -o "$tmp/x.onnx" --int4 bf16
[ "$(wc -c < "$tmp/mlp-w4.onnx")" -lt "$(($(wc -c < "$tmp/mlp-w4f.onnx") / 5))" ] && ok ||
	bad "the INT4 export is not a fifth of the f32 fallback's size"

# A pruned model: written dense, and the log says where the gain stays.
cat > "$tmp/prune.yaml" <<EOF
mcomp: 1
seed: 7
data:
  train: {idx: $data/train, count: 500}
models:
  m: {load: mlp.safetensors}
passes:
  - prune: {model: m, sparsity: 0.9}
output: mlp-pruned.safetensors
EOF
expect 0 "wrote .*mlp-pruned.safetensors" "$mcomp" run "$tmp/prune.yaml"
expect 0 "of the weights are zero \(pruned\).*written dense: the size gain of sparse storage stays in the .safetensors" \
	"$mcomp" export "$tmp/mlp-pruned.safetensors" -o "$tmp/mlp-pruned.onnx"
st=$(wc -c < "$tmp/mlp-pruned.safetensors") ox=$(wc -c < "$tmp/mlp-pruned.onnx")
echo "pruned 90%: $st bytes .safetensors, $ox bytes .onnx"
[ "$st" -lt "$((ox / 3))" ] && ok || bad "the pruned .safetensors ($st bytes) is not below a third of the dense .onnx ($ox)"

# Cascades: one ONNX file per stage. [mlp, cnn] f32, and [mlp int8, act int8, cnn].
cascade() { # NAME STAGES THRESHOLDS
	cat > "$tmp/$1.yaml" <<EOF
mcomp: 1
seed: 7
data:
  calib: {idx: $data/train, first: 55000, count: 500}
models:
  mlp: {load: mlp.safetensors}
  cnn: {load: cnn.safetensors}
  mlpq: {load: mlp-int8.safetensors}
  actq: {load: act-int8.safetensors}
passes:
  - cascade: {stages: $2, confidence: margin, calibrate: calib, thresholds: $3, cost: flops, output: $1.safetensors}
EOF
	expect 0 "cascade" "$mcomp" run "$tmp/$1.yaml"
}
cascade casc '[mlp, cnn]' '[0.5]'
cascade casc3 '[mlpq, actq, cnn]' '[0.6, 0.4]'
expect 0 "stage 0 'mlp', 4 nodes -> .*/c.stage0.onnx \(ONNX opset 13\)" \
	"$mcomp" export "$tmp/casc.safetensors" -o "$tmp/c.onnx"
printf '%s\n' "$out" | grep -q "stage 1 'cnn' (last), 8 nodes -> .*/c.stage1.onnx" && ok ||
	bad "no stage 1 in: $out"
[ ! -e "$tmp/c.onnx" ] && [ ! -e "$tmp/c.stage2.onnx" ] && ok || bad "the cascade export wrote other files"
expect 1 "/proc/c.stage0.onnx: cannot create" "$mcomp" export "$tmp/casc.safetensors" -o /proc/c.onnx
expect 0 "stage 2 'cnn' \(last\), .* \(ONNX opset 13\)" \
	"$mcomp" export "$tmp/casc3.safetensors" -o "$tmp/c3.onnx"
printf '%s\n' "$out" | grep -q "stage 1 'actq', .*c3.stage1.onnx (ONNX opset 14)" && ok ||
	bad "no stage 1 in: $out"
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

# output: int4: f32 asks a pipeline for the dense fallback; only for .onnx paths.
cat > "$tmp/w4.yaml" <<EOF
mcomp: 1
models:
  m: {load: mlp-w4.safetensors}
passes: []
output: {model: m, path: w4-pipe.onnx, int4: f32}
EOF
expect 0 "warning: node 'linear1' \(qlinear, 4-bit weight-only\): .*dequantized to f32" \
	"$mcomp" run "$tmp/w4.yaml"
[ -s "$tmp/w4-pipe.onnx" ] && ok || bad "the pipeline wrote no w4-pipe.onnx"
sed -i 's/int4: f32/int4: fp8/' "$tmp/w4.yaml"
expect 2 "w4.yaml:5:[0-9]*: output: int4 is int4 .* or f32 .*, not 'fp8'" "$mcomp" validate "$tmp/w4.yaml"
sed -i 's/int4: fp8/int4: f32/; s/w4-pipe.onnx/w4-pipe.safetensors/' "$tmp/w4.yaml"
expect 2 "output: int4 says how an ONNX file holds 4-bit weights; .* is not a .onnx path" \
	"$mcomp" validate "$tmp/w4.yaml"

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
need_ort

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
		# Bit for bit as ONNX Runtime runs by default (all): its average pool
		# over 16 channels then runs in its blocked layout, whose window sums
		# are mcomp's (ops_pool.c). Its plain kernel (disabled) sums a window
		# column by column: a last-bit difference in a mean can move a
		# requantized value, ~2e-3 in the logits; the counts still agree.
		if [ $m = mlp-int8 ] || [ $level = all ]; then
			[ "$d" = 0 ] && ok || bad "$m ($level): logits differ by $d, not bit for bit"
		else
			awk -v d="$d" 'BEGIN { exit !(d != "" && d + 0 <= 5e-3) }' && ok ||
				bad "$m ($level): logits differ by $d (> 5e-3)"
		fi
	done
done
# Dynamic ranges are per batch: ONNX Runtime runs mcomp predict's batches of 256.
for m in mlp-dyn cnn-dyn; do
	agree $m --batch 256
	a=$(field "$cmp" correct_a) b=$(field "$cmp" correct_b)
	[ -n "$a" ] && [ "$a" = "$b" ] && ok || bad "$m: mcomp gets $a of 2000 right, ONNX Runtime $b"
done
agree act
d=$(field "$cmp" max_abs_diff)
awk -v d="$d" 'BEGIN { exit !(d != "" && d + 0 <= 1e-5) }' && ok || bad "act: f32 logits differ by $d (> 1e-5)"
# int8 with the activations between the quantized layers (in f32, as mcomp computes them)
agree act-int8
a=$(field "$cmp" correct_a) b=$(field "$cmp" correct_b)
[ -n "$a" ] && [ "$a" = "$b" ] && ok || bad "act-int8: mcomp gets $a of 2000 right, ONNX Runtime $b"
# INT4: DequantizeLinear gives the weights mcomp computes with, to the bit
# (mlp-w4s: loaded from its sparse 4-bit storage)
for m in mlp-w4 mlp-w4g mlp-w4s; do
	agree $m
	a=$(field "$cmp" correct_a) b=$(field "$cmp" correct_b) d=$(field "$cmp" max_abs_diff)
	awk -v d="$d" 'BEGIN { exit !(d != "" && d + 0 <= 1e-5) }' && ok || bad "$m: logits differ by $d (> 1e-5)"
	[ -n "$a" ] && [ "$a" = "$b" ] && ok || bad "$m: mcomp gets $a of 2000 right, ONNX Runtime $b"
done
cp "$tmp/mlp-w4f.onnx" "$tmp/mlp-w4.onnx"
agree mlp-w4
d=$(field "$cmp" max_abs_diff)
awk -v d="$d" 'BEGIN { exit !(d != "" && d + 0 <= 1e-4) }' && ok || bad "mlp-w4 --int4 f32: logits differ by $d (> 1e-4)"

# Cascades: ONNX Runtime runs the stage files by the rule in their metadata.
expect 0 "^mcomp.cascade.threshold=0.5\$" ort meta "$tmp/c.stage0.onnx"
expect 0 "^mcomp.source.sha256=$(sha256sum "$tmp/casc.safetensors" | cut -d' ' -f1)\$" \
	ort meta "$tmp/c.stage1.onnx"
printf '%s\n' "$out" | grep -q '^mcomp.cascade.threshold' && bad "the last stage has a threshold" || ok
expect 0 "^mcomp.version=$version\$" ort meta "$tmp/c3.stage2.onnx"
# f32 stages: every sample's logits, so its exit stage too, are mcomp's
"$mcomp" predict "$tmp/casc.safetensors" --input "$tmp/x.npy" -o "$tmp/casc.mc.npy" > /dev/null ||
	bad "mcomp predict casc failed"
ex=$(ort cascade "$tmp/c.stage1.onnx" "$tmp/x.npy" "$tmp/casc.ort.npy") || bad "ort_run.js cascade failed"
cmp=$(ort compare "$tmp/casc.mc.npy" "$tmp/casc.ort.npy" --labels "$tmp/y.npy")
echo "cascade [mlp, cnn]: ONNX Runtime $ex; vs mcomp: $cmp"
d=$(field "$cmp" max_abs_diff)
awk -v d="$d" 'BEGIN { exit !(d != "" && d + 0 <= 1e-5) }' && ok || bad "casc: logits differ by $d (> 1e-5)"
printf '%s\n' "$ex" | grep -q '"exits":\[[1-9][0-9]*,[1-9][0-9]*\]' && ok || bad "casc: a stage gets nothing: $ex"
# int8 stages, the whole test split: accuracy and exits as mcomp eval counts them
ort idx "$data/t10k-images-idx3-ubyte.gz" -o "$tmp/xt.npy" \
	--labels "$data/t10k-labels-idx1-ubyte.gz" "$tmp/yt.npy" || bad "ort_run.js idx failed"
ev=$("$mcomp" eval "$tmp/casc3.safetensors" --data "$data") || bad "mcomp eval casc3 failed"
ex=$(ort cascade "$tmp/c3.stage0.onnx" "$tmp/xt.npy" "$tmp/casc3.ort.npy") || bad "ort_run.js cascade failed"
"$mcomp" predict "$tmp/casc3.safetensors" --input "$tmp/xt.npy" -o "$tmp/casc3.mc.npy" > /dev/null
cmp=$(ort compare "$tmp/casc3.mc.npy" "$tmp/casc3.ort.npy" --labels "$tmp/yt.npy")
echo "cascade [mlp int8, act int8, cnn]: ONNX Runtime $ex; vs mcomp: $cmp"
acc=$(printf '%s\n' "$ev" | sed -n 's/^accuracy: *\([0-9.]*\)%.*/\1/p')
b=$(field "$cmp" correct_b)
[ -n "$acc" ] && [ "$(awk -v b="$b" 'BEGIN { printf "%.2f", b / 100 }')" = "$acc" ] && ok ||
	bad "casc3: mcomp eval ${acc}%, ONNX Runtime $b of 10000"
[ "$(field "$cmp" argmax_disagree)" = 0 ] && ok || bad "casc3: predictions differ: $cmp"
for s in 0 1 2; do # "0     mlpq    0.600000024      56.17%    93.75%"
	pct=$(printf '%s\n' "$ev" | awk -v s=$s '$1 == s { for (i = 1; i <= NF; i++) if ($i ~ /%$/) { print $i; exit } }')
	n=$(printf '%s\n' "$ex" | sed 's/.*"exits":\[\([0-9,]*\)\].*/\1/' | cut -d, -f$((s + 1)))
	[ -n "$pct" ] && [ "$(awk -v n="$n" 'BEGIN { printf "%.2f%%", n / 100 }')" = "$pct" ] && ok ||
		bad "casc3 stage $s: mcomp eval exits $pct, ONNX Runtime $n of 10000"
done

# And back: the f32 export imports as the model it came from.
for m in mlp cnn act; do
	expect 0 'parameters' "$mcomp" import "$tmp/$m.onnx" -o "$tmp/$m.back.safetensors"
	"$mcomp" predict "$tmp/$m.back.safetensors" --input "$tmp/x.npy" -o "$tmp/$m.back.npy" \
		> /dev/null
	d=$(field "$(ort compare "$tmp/$m.mc.npy" "$tmp/$m.back.npy")" max_abs_diff)
	[ "$d" = 0 ] && ok || bad "$m: export then import changed the logits by $d"
done

# PyTorch's ResNet, MobileNet (ReLU6, depthwise, squeeze-excitation with
# hardswish) and padded nets (pad2d): imported, exported, run by ONNX Runtime.
fx="$MCOMP_SRCDIR/tests/fixtures/onnx"
for n in resnet mobile padnet; do
	[ -r "$fx/$n-opset13.onnx" ] || { bad "no fixture $fx/$n-opset13.onnx"; continue; }
	expect 0 'parameters' "$mcomp" import "$fx/$n-opset13.onnx" -o "$tmp/$n.safetensors"
	expect 0 "-> .*$n.onnx" "$mcomp" export "$tmp/$n.safetensors" -o "$tmp/$n.onnx"
	"$mcomp" predict "$tmp/$n.safetensors" --input "$fx/nets-input.npy" -o "$tmp/$n.mc.npy" \
		> /dev/null || bad "mcomp predict $n failed"
	ort run "$tmp/$n.onnx" "$fx/nets-input.npy" "$tmp/$n.ort.npy" || bad "ONNX Runtime on $n failed"
	d=$(field "$(ort compare "$tmp/$n.mc.npy" "$tmp/$n.ort.npy")" max_abs_diff)
	awk -v d="$d" 'BEGIN { exit !(d != "" && d + 0 <= 1e-5) }' && ok || bad "$n: logits differ by $d (> 1e-5)"
done

finish 0
