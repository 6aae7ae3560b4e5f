#!/bin/sh
# ort_int8.sh - ONNX Runtime throughput of an exported int8 static MLP against
# the f32 one it came from, at batch 256 (the target: int8 at least 1.5x).
#
# Trains the MLP of pipelines/quantize-mlp-int8-static.yaml (784-512-256-10)
# briefly (accuracy is not the point here), quantizes it int8 static
# (per-channel, minmax calibration), exports both with `mcomp export`, and
# times ONNX Runtime on each (tests/ort_run.js bench; onnxruntime-node from
# tests/node, installed by scripts/setup.sh). Not part of make check.
#
#   sh bench/ort_int8.sh [SECONDS] [THREADS]     (from the build tree)
set -eu
src=$(cd "$(dirname "$0")/.." && pwd)
build=${MCOMP_BUILDDIR:-$src}
mcomp="$build/mcomp"
export MCOMP_PASS_PATH="${MCOMP_PASS_PATH:-$build/passes/.libs}"
data=/usr/share/datasets/fashion-mnist
secs=${1:-3}
threads=${2:-}
out="$src/bench/out"
mkdir -p "$out"

cat > "$out/ort-mlp.yaml" <<YAML
mcomp: 1
seed: 7
data:
  train: {idx: $data/train, count: 10000}
  calib: {idx: $data/train, first: 55000, count: 1000}
  test:  {idx: $data/t10k}
models:
  mlp:
    build:
      input: [1, 28, 28]
      layers: [flatten, {linear: 512}, relu, {linear: 256}, relu, {linear: 10}]
passes:
  - train: {model: mlp, epochs: 1, batch_size: 128, optimizer: adam, lr: 0.001}
output: ort-mlp-f32.safetensors
YAML
cat > "$out/ort-mlp-int8.yaml" <<YAML
mcomp: 1
seed: 7
data:
  calib: {idx: $data/train, first: 55000, count: 1000}
  test:  {idx: $data/t10k}
models:
  mlp: {load: ort-mlp-f32.safetensors}
passes:
  - quantize: {model: mlp, bits: 8, granularity: per-channel, mode: static,
               calibration: minmax, calibration_data: calib, samples: 1000}
output: ort-mlp-int8.safetensors
YAML
"$mcomp" run --quiet "$out/ort-mlp.yaml" > /dev/null
"$mcomp" run --quiet "$out/ort-mlp-int8.yaml" > /dev/null
for m in f32 int8; do
	"$mcomp" export "$out/ort-mlp-$m.safetensors" -o "$out/ort-mlp-$m.onnx" > /dev/null
done
grep -o -w 'avx512_vnni\|avx_vnni\|amx_int8' /proc/cpuinfo | sort -u | tr '\n' ' ' |
	sed 's/^/cpu int8 features: /; s/$/\n/'
t=${threads:+--threads $threads}
# shellcheck disable=SC2086
f=$(node "$src/tests/ort_run.js" bench "$out/ort-mlp-f32.onnx" --batch 256 --seconds "$secs" $t)
# shellcheck disable=SC2086
q=$(node "$src/tests/ort_run.js" bench "$out/ort-mlp-int8.onnx" --batch 256 --seconds "$secs" $t)
echo "$f"
echo "$q"
fs=$(echo "$f" | sed -n 's/.*: \([0-9]*\) samples.*/\1/p')
qs=$(echo "$q" | sed -n 's/.*: \([0-9]*\) samples.*/\1/p')
awk -v f="$fs" -v q="$qs" 'BEGIN { printf "int8 / f32 throughput at batch 256: %.2fx (target >= 1.5x)\n", q / f }'
