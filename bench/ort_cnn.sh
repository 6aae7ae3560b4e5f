#!/bin/sh
# SPDX-License-Identifier: MIT
#
# ort_cnn.sh - inference latency of the CNN (pipelines/cnn.yaml's
# architecture), f32 and int8 static (pipelines/quantize-cnn-int8-static.yaml's
# quantization), at batch 1 and 256: mcomp against ONNX Runtime on the same
# models exported with `mcomp export`, in interleaved rounds.
#
# Trains the CNN briefly (accuracy is not the point), quantizes it, exports
# both, then runs ROUNDS rounds of: mcomp f32, ORT f32, mcomp int8, ORT int8
# (bench_train -M for mcomp, bench/ort_cnn.js for ORT, each the median of its
# calls), and prints each figure's median over the rounds with the spread
# (min-max) and the ratio mcomp / ORT (target <= 1.0). Not part of make check.
#
#   sh bench/ort_cnn.sh [ROUNDS] [THREADS]     (from the build tree; 5, 2)
set -eu
src=$(cd "$(dirname "$0")/.." && pwd)
build=${MCOMP_BUILDDIR:-$src}
mcomp="$build/mcomp"
train="$build/bench/bench_train"
export MCOMP_PASS_PATH="${MCOMP_PASS_PATH:-$build/passes/.libs}"
data=/usr/share/datasets/fashion-mnist
rounds=${1:-5}
threads=${2:-2}
out="$src/bench/out"
mkdir -p "$out"
[ -x "$train" ] || { echo "ort_cnn.sh: $train is not built (make bench/bench_train)" >&2; exit 2; }
rc=0
node "$src/bench/ort_cnn.js" 2>/dev/null || rc=$?
[ $rc -ne 77 ] || { echo "ort_cnn.sh: no onnxruntime-node in tests/node" >&2; exit 77; }

if [ ! -f "$out/ort-cnn-int8.onnx" ]; then
	cat > "$out/ort-cnn.yaml" <<YAML
mcomp: 1
seed: 7
data:
  train: {idx: $data/train, count: 10000}
  calib: {idx: $data/train, first: 55000, count: 1000}
  test:  {idx: $data/t10k, count: 1000}
models:
  cnn:
    build:
      input: [1, 28, 28]
      layers: [{conv2d: 32}, relu, {maxpool2d: 2}, {conv2d: 64}, relu, {maxpool2d: 2},
               flatten, {linear: 128}, relu, {linear: 10}]
passes:
  - train: {model: cnn, epochs: 1, batch_size: 128, optimizer: adam, lr: 0.004}
output: ort-cnn-f32.safetensors
YAML
	cat > "$out/ort-cnn-int8.yaml" <<YAML
mcomp: 1
seed: 7
data:
  calib: {idx: $data/train, first: 55000, count: 1000}
  test:  {idx: $data/t10k, count: 1000}
models:
  cnn: {load: ort-cnn-f32.safetensors}
passes:
  - quantize: {model: cnn, bits: 8, scheme: symmetric, granularity: per-channel,
               mode: static, calibration: minmax, calibration_data: calib, samples: 1000}
output: ort-cnn-int8.safetensors
YAML
	"$mcomp" run --quiet "$out/ort-cnn.yaml" > /dev/null
	"$mcomp" run --quiet "$out/ort-cnn-int8.yaml" > /dev/null
	for m in f32 int8; do
		"$mcomp" export "$out/ort-cnn-$m.safetensors" -o "$out/ort-cnn-$m.onnx" > /dev/null
	done
fi

res=$(mktemp "${TMPDIR:-/tmp}/ort-cnn.XXXXXX")
trap 'rm -f "$res"' EXIT
r=0
while [ $r -lt "$rounds" ]; do
	for m in f32 int8; do
		OMP_NUM_THREADS=$threads "$train" -M "$out/ort-cnn-$m.safetensors" -m 0.3 cnn lat1 lat256 |
			sed -n "s/^RESULT \(lat[0-9]*\)_cnn /mcomp_$m \1 /p" >> "$res"
		node "$src/bench/ort_cnn.js" "$out/ort-cnn-$m.onnx" cnn --threads "$threads" --min 0.3 |
			sed -n "s/^RESULT \(lat[0-9]*\)_cnn /ort_$m \1 /p" >> "$res"
	done
	r=$((r + 1))
done

# stat TAG METRIC: "median min max" of the figures filed
stat() {
	awk -v t="$1" -v m="$2" '$1 == t && $2 == m { print $3 }' "$res" | sort -g |
		awk '{ v[NR] = $1 } END { if (NR) printf "%.4g %.4g %.4g\n",
			NR % 2 ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2, v[1], v[NR] }'
}

echo "CNN inference latency, ms, $threads threads, median (min-max) of $rounds rounds"
printf '%-12s %-22s %-22s %8s\n' "" mcomp "ONNX Runtime" ratio
for m in f32 int8; do
	for l in lat1 lat256; do
		set -- $(stat mcomp_$m $l)
		a=$1 al="$2-$3"
		set -- $(stat ort_$m $l)
		b=$1 bl="$2-$3"
		printf '%-12s %-22s %-22s %8s\n' "$m ${l#lat}" "$a ($al)" "$b ($bl)" \
			"$(awk -v a="$a" -v b="$b" 'BEGIN { printf "%.2f", a / b }')"
	done
done
