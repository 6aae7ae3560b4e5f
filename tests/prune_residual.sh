#!/bin/sh
# prune_residual.sh - structured pruning of pipelines/mobilenetv2.yaml's
# MobileNetV2 (trained for seconds: one epoch on 1024 images): every
# expansion is pruned together with its depthwise filters, the projections
# tied through a residual add are pruned together, or kept whole with a log
# line when one of them is excluded; the smaller model loads, fine-tunes and
# evaluates, so its shapes are consistent. Then pipelines/mobilenetv2-prune-poly.yaml
# (which loads that recipe's model) runs cut down: its schedule updates where
# TF-MOT's would.
set -u
: "${MCOMP_BUILDDIR:?run through make check}" "${MCOMP_SRCDIR:?run through make check}"
mcomp="$MCOMP_BUILDDIR/mcomp"
recipe="$MCOMP_SRCDIR/pipelines/mobilenetv2.yaml"
data=/usr/share/datasets/fashion-mnist
[ -e "$data/train-images-idx3-ubyte.gz" ] || { echo "SKIP: no Fashion-MNIST in $data"; exit 77; }
tmp=$(mktemp -d "${TMPDIR:-/tmp}/mcomp-prune-residual-XXXXXX")
trap 'rm -rf "$tmp"' EXIT
fail=0

# The recipe's data, blocks and model; passes of our own.
sed '/^passes:/,$d' "$recipe" > "$tmp/p.yaml"
cat >> "$tmp/p.yaml" <<'YAML'
passes:
  - train: {model: mobilenetv2, epochs: 1, batch_size: 128, optimizer: adam, lr: 0.004}
  - prune: {model: mobilenetv2, method: structured, sparsity: 0.5, finetune_epochs: 1}
  - eval:  {model: mobilenetv2}
output: {model: mobilenetv2, path: out.safetensors}
YAML

check() { # WHAT PATTERN FILE
	if grep -qF -- "$2" "$3"; then
		echo "PASS: $1"
	else
		echo "FAIL: $1: no '$2' in:"; cat "$3"
		fail=1
	fi
}

OMP_NUM_THREADS=2 "$mcomp" run "$tmp/p.yaml" --set data.train.count=1024 \
	--set data.test.count=256 > "$tmp/log" 2>&1 || { echo "FAIL: run"; cat "$tmp/log"; exit 1; }
"$mcomp" inspect "$tmp/out.safetensors" > "$tmp/inspect" 2>&1 || { cat "$tmp/inspect"; exit 1; }
check "the projections of stage 2 are pruned together" \
	"stage2.1.project, stage2.2.project: tied through add 'stage2.2.residual', pruned together" "$tmp/log"
check "the projections of stage 4 are pruned together" \
	"stage4.1.project, stage4.2.project: tied through add 'stage4.2.residual', pruned together" "$tmp/log"
check "the tied projections keep the same width" "stage2.2.project: [16, 64, 1, 1] -> [8, 32, 1, 1]" "$tmp/log"
check "an expansion is pruned" "stage2.2.expand: [64, 16, 1, 1] -> [32, 8, 1, 1]" "$tmp/log"
check "its depthwise convolution follows" \
	"stage2.2.dw      conv2d     out=32 kernel=3 stride=1 padding=1 groups=32" "$tmp/inspect"
check "the depthwise convolutions are kept whole themselves" \
	"stage2.2.dw: kept whole: it is a depthwise convolution" "$tmp/log"
check "the pruned model evaluates" "eval: mobilenetv2 on test: accuracy" "$tmp/log"

# One projection of a tied pair excluded: both stay whole, and the log says why.
"$mcomp" run "$tmp/p.yaml" --set data.train.count=256 --set data.test.count=64 \
	--set 'passes.1.prune.exclude=[stage4.1.project]' > "$tmp/log2" 2>&1 ||
	{ echo "FAIL: run with exclude"; cat "$tmp/log2"; exit 1; }
"$mcomp" inspect "$tmp/out.safetensors" > "$tmp/inspect2" 2>&1 || { cat "$tmp/inspect2"; exit 1; }
check "a tie with an excluded layer is kept whole" \
	"stage4.1.project, stage4.2.project: kept whole: tied through add 'stage4.2.residual' to 'stage4.1.project', which is excluded" \
	"$tmp/log2"
check "so stage4.2.project keeps its 32 channels" "stage4.2.project conv2d     out=32 " "$tmp/inspect2"

# The polynomial-schedule recipe loads mobilenetv2.yaml's output and runs
# cut down, on a dense model trained for seconds: 8 steps, the schedule
# over steps 0..6 every 2: updates at 0, 2, 4, 6.
poly="$MCOMP_SRCDIR/pipelines/mobilenetv2-prune-poly.yaml"
if grep -q '^  mobilenetv2: {load: out/mobilenetv2.safetensors}' "$poly" &&
	grep -q '^output: {model: mobilenetv2, path: out/mobilenetv2.safetensors}' "$recipe"; then
	echo "PASS: mobilenetv2-prune-poly.yaml loads what mobilenetv2.yaml writes"
else
	echo "FAIL: mobilenetv2-prune-poly.yaml does not load mobilenetv2.yaml's output"
	fail=1
fi
"$mcomp" run "$recipe" --quiet --set data.train.count=1024 --set data.test.count=256 \
	--set passes.train.epochs=1 --set output.path="$tmp/dense.safetensors" \
	--set passes.train.checkpoint.path="$tmp/dense.ckpt" --set report="$tmp/dense.json" \
	> "$tmp/log4" 2>&1 || { echo "FAIL: the dense model"; cat "$tmp/log4"; exit 1; }
"$mcomp" run "$poly" --set data.train.count=1024 --set data.test.count=256 \
	--set models.mobilenetv2.load="$tmp/dense.safetensors" \
	--set passes.prune.finetune_epochs=1 --set passes.prune.end=6 \
	--set passes.prune.frequency=2 --set output.path="$tmp/poly.safetensors" \
	--set report="$tmp/poly.json" > "$tmp/log3" 2>&1 ||
	{ echo "FAIL: the polynomial recipe"; cat "$tmp/log3"; exit 1; }
check "the polynomial recipe's schedule" \
	"polynomial pruning 0.0000 -> 0.5000 from step 0 to 6 every 2 steps, power 3" "$tmp/log3"
check "four updates" "4 pruning updates" "$tmp/log3"
check "its file stores sparse tensors" "mcomp.sparse" "$tmp/poly.safetensors"
exit $fail
