#!/bin/sh
# onnx.sh - ONNX import as a user meets it: `mcomp import` (exit codes,
# messages, an atomic output that evaluates like PyTorch's model) and
# `models: NAME: {onnx: FILE}` in a pipeline (file:line:col on refusal).
set -u
: "${MCOMP_BUILDDIR:?run through make check}" "${MCOMP_SRCDIR:?run through make check}"
mcomp="$MCOMP_BUILDDIR/mcomp"
fx="$MCOMP_SRCDIR/tests/fixtures/onnx"
data=/usr/share/datasets/fashion-mnist
tmp=$(mktemp -d "${TMPDIR:-/tmp}/mcomp-onnx-XXXXXX")
trap 'rm -rf "$tmp"' EXIT
. "$MCOMP_SRCDIR/tests/expect.sh"

expect 0 'import MODEL.onnx -o OUT.safetensors' "$mcomp" help
expect 2 'import needs MODEL.onnx -o OUT' "$mcomp" import "$fx/cnn.onnx"
expect 2 "unknown or incomplete option '--bogus'" "$mcomp" import "$fx/cnn.onnx" --bogus
expect 1 'cannot open' "$mcomp" import "$tmp/none.onnx" -o "$tmp/none.safetensors"
printf 'not a protobuf at all\n' > "$tmp/text.onnx"
expect 1 'text.onnx: ' "$mcomp" import "$tmp/text.onnx" -o "$tmp/text.safetensors"
[ -e "$tmp/text.safetensors" ] && bad "a failed import left $tmp/text.safetensors" || ok
# An unsupported op: exit 2, the node, its op type and opset, the ops read.
expect 2 "node '/Sin' \(Sin, opset 13\): mcomp has no op for Sin; the ops it reads are Add, " \
	"$mcomp" import "$fx/sin.onnx" -o "$tmp/sin.safetensors"
# Refusals of what the wider import still does not compute, the same way.
if [ -r "$fx/reflect-opset13.onnx" ]; then
	expect 2 "node '/Pad' \(Pad, opset 13\): mode 'reflect': mcomp pads with zeros only" \
		"$mcomp" import "$fx/reflect-opset13.onnx" -o "$tmp/reflect.safetensors"
	# PyTorch's exports: a shape subgraph, uneven pads, folded constants
	expect 0 '15 nodes, 5194 parameters, input \[3, 16, 16\], 10 outputs' \
		"$mcomp" import "$fx/resnet-opset11.onnx" -o "$tmp/resnet.safetensors"
	expect 0 '10 nodes' \
		"$mcomp" import "$fx/padnet-opset13.onnx" -o "$tmp/padnet.safetensors"
	expect 0 'pad2d +top=0 left=1 bottom=1 right=2' "$mcomp" inspect "$tmp/padnet.safetensors"
fi
# A failed import leaves the previous output as it was.
echo previous > "$tmp/keep.safetensors"
expect 2 'Sin' "$mcomp" import "$fx/sin.onnx" -o "$tmp/keep.safetensors"
[ "$(cat "$tmp/keep.safetensors")" = previous ] && ok || bad "the previous output was changed"
cp "$fx/cnn.onnx" "$tmp/self.onnx"
expect 2 'is the input' "$mcomp" import "$tmp/self.onnx" -o "$tmp/self.onnx"
expect 0 '11 nodes, 9258 parameters, input \[1, 28, 28\], 10 outputs' \
	"$mcomp" import "$fx/cnn.onnx" -o "$tmp/cnn.safetensors"
expect 0 'conv2d' "$mcomp" inspect "$tmp/cnn.safetensors"
if [ -r "$data/t10k-images-idx3-ubyte.gz" ]; then
	correct=$(sed -n 's/.*"cnn":{[^}]*"correct":\([0-9]*\).*/\1/p' "$fx/torch_reference.json")
	expect 0 "accuracy: $(awk "BEGIN { printf \"%.2f\", $correct / 100 }")%" \
		"$mcomp" eval "$tmp/cnn.safetensors" --data "$data"
fi

# Pipelines: onnx: beside build: and load:, checked at validation.
cat > "$tmp/good.yaml" <<EOF
mcomp: 1
models:
  cnn: {onnx: $fx/cnn.onnx}
passes: []
EOF
expect 0 '' "$mcomp" validate "$tmp/good.yaml"
cat > "$tmp/sin.yaml" <<EOF
mcomp: 1
models:
  m:
    onnx: $fx/sin.onnx
passes: []
EOF
expect 2 "sin.yaml:4:11: model 'm': node '/Sin' \(Sin, opset 13\): mcomp has no op for Sin" \
	"$mcomp" validate "$tmp/sin.yaml"
cat > "$tmp/both.yaml" <<EOF
mcomp: 1
models:
  m:
    load: x.safetensors
    onnx: $fx/cnn.onnx
passes: []
EOF
expect 2 "both.yaml:5:5: model 'm': give either 'load' or 'onnx', not both" \
	"$mcomp" validate "$tmp/both.yaml"
cat > "$tmp/missing.yaml" <<EOF
mcomp: 1
models:
  m: {onnx: nowhere.onnx}
passes: []
EOF
expect 2 "missing.yaml:3:13: .*cannot find .*nowhere.onnx" "$mcomp" validate "$tmp/missing.yaml"

echo "onnx.sh: $pass passed, $fail failed"
[ "$fail" = 0 ]
