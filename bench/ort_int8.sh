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
# Two paths: native (this CPU's kernels: VNNI or AMX where it has them) and
# avx2, ONNX Runtime run under tests/shim/.libs/cpuid_mask.so with
# CPUID_MASK=avx2 (AVX-512, VNNI and AMX hidden from CPUID: the kernels of
# an AVX2 CPU; needs the CPU flag cpuid_fault, and the shim, which
# `make check` or `make tests/shim/cpuid_mask.la` builds). f32 and int8
# alternate, ROUNDS times, so that a busy machine slows both alike; the
# median ratio of each path is the result.
#
#   sh bench/ort_int8.sh [SECONDS] [THREADS] [ROUNDS]     (from the build tree)
set -eu
src=$(cd "$(dirname "$0")/.." && pwd)
build=${MCOMP_BUILDDIR:-$src}
mcomp="$build/mcomp"
export MCOMP_PASS_PATH="${MCOMP_PASS_PATH:-$build/passes/.libs}"
data=/usr/share/datasets/fashion-mnist
secs=${1:-3}
threads=${2:-}
rounds=${3:-3}
shim="$build/tests/shim/.libs/cpuid_mask.so"
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
paths=native
if [ -r "$shim" ] && grep -q -w cpuid_fault /proc/cpuinfo; then
	paths="native avx2"
else
	echo "avx2 path skipped: no $shim (make tests/shim/cpuid_mask.la) or no cpuid_fault flag"
fi
# rate PATH MODEL: samples/s of ONNX Runtime on MODEL at batch 256
rate() {
	if [ "$1" = avx2 ]; then
		# shellcheck disable=SC2086
		r=$(CPUID_MASK=avx2 LD_PRELOAD="$shim" node "$src/tests/ort_run.js" bench "$2" \
			--batch 256 --seconds "$secs" $t)
	else
		# shellcheck disable=SC2086
		r=$(node "$src/tests/ort_run.js" bench "$2" --batch 256 --seconds "$secs" $t)
	fi
	echo "$r" | sed -n 's/.*: \([0-9]*\) samples.*/\1/p'
}
for p in $paths; do
	: > "$out/ratios-$p"
done
i=1
while [ "$i" -le "$rounds" ]; do
	for p in $paths; do
		fs=$(rate "$p" "$out/ort-mlp-f32.onnx")
		qs=$(rate "$p" "$out/ort-mlp-int8.onnx")
		awk -v p="$p" -v i="$i" -v f="$fs" -v q="$qs" 'BEGIN {
			printf "round %d, %-6s: f32 %7d samples/s, int8 %7d samples/s: %.2fx\n", i, p, f, q, q / f }'
		awk -v f="$fs" -v q="$qs" 'BEGIN { printf "%.4f\n", q / f }' >> "$out/ratios-$p"
	done
	i=$((i + 1))
done
for p in $paths; do
	sort -n "$out/ratios-$p" | awk -v p="$p" '{ r[NR] = $1 } END {
		printf "int8 / f32 throughput at batch 256, %s: median %.2fx of %d rounds (target >= 1.5x)\n",
			p, r[int((NR + 1) / 2)], NR }'
done
