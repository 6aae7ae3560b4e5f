#!/bin/sh
# mobilenet_int8.sh - pipelines/mobilenetv2-int8.yaml over
# pipelines/mobilenetv2.yaml's model trained for seconds (one epoch on 8192
# images; 256 calibration samples): every convolution
# (depthwise included), both adds and the pooling become int8 ops; the
# quantized file has the same bytes for 1 and 2 threads and on the portable
# int8 path as on the fastest; its logits (mcomp predict) are the same bytes
# on every int8 path (MCOMP_GEMM_S8) and for 1, 2 and 3 threads; it
# classifies the test images within 2 points of the f32 model; and exported to ONNX
# (grouped ConvInteger, qadd and qglobal_avgpool in integer form) ONNX
# Runtime gives the same logits bit for bit (that part needs node and
# onnxruntime-node from tests/node, and says SKIP without them).
set -u
: "${MCOMP_BUILDDIR:?run through make check}" "${MCOMP_SRCDIR:?run through make check}"
mcomp="$MCOMP_BUILDDIR/mcomp"
recipe="$MCOMP_SRCDIR/pipelines/mobilenetv2-int8.yaml"
f32="$MCOMP_SRCDIR/pipelines/mobilenetv2.yaml"
data=/usr/share/datasets/fashion-mnist
[ -e "$data/t10k-images-idx3-ubyte.gz" ] || { echo "SKIP: no Fashion-MNIST in $data"; exit 77; }
tmp=$(mktemp -d "${TMPDIR:-/tmp}/mcomp-mbv2q-XXXXXX")
trap 'rm -rf "$tmp"' EXIT
fail=0
pass() { echo "PASS: $*"; }
bad() { echo "FAIL: $*"; fail=1; }

# The f32 recipe's data, blocks and model, trained briefly by a pass of our own.
sed '/^passes:/,$d' "$f32" > "$tmp/f32.yaml"
cat >> "$tmp/f32.yaml" <<'YAML'
passes:
  - train: {model: mobilenetv2, epochs: 1, batch_size: 128, optimizer: adam, lr: 0.004}
output: {model: mobilenetv2, path: f32.safetensors}
YAML
OMP_NUM_THREADS=2 "$mcomp" run "$tmp/f32.yaml" --quiet --set data.train.count=8192 \
	> "$tmp/log" 2>&1 || { cat "$tmp/log"; echo "FAIL: training the f32 model"; exit 1; }

run() { # OUT [ENV=VALUE]...
	out=$1
	shift
	env "$@" "$mcomp" run "$recipe" --quiet --set models.mobilenetv2.load="$tmp/f32.safetensors" \
		--set data.test.count=256 --set passes.quantize.samples=256 \
		--set output.path="$out" --set report="$out.json" > "$tmp/log" 2>&1 ||
		{ cat "$tmp/log"; fail=1; }
}

run "$tmp/a.safetensors" OMP_NUM_THREADS=1 MCOMP_GEMM_S8=portable
run "$tmp/b.safetensors" OMP_NUM_THREADS=2
if cmp "$tmp/a.safetensors" "$tmp/b.safetensors"; then
	pass "1 thread on the portable int8 path and 2 on the fastest give the same file"
else
	bad "the quantized files differ"
fi
# the architecture is JSON inside the header's JSON: quotes come escaped
for op in 'op\":\"qadd\"' 'op\":\"qglobal_avgpool\"' 'groups\":64' 'relu6\":true'; do
	if grep -a -F -q "$op" "$tmp/a.safetensors"; then
		pass "the file has $op"
	else
		bad "no $op in the quantized file"
	fi
done
for op in 'op\":\"conv2d\"' 'op\":\"add\"' 'op\":\"batchnorm\"' 'op\":\"global_avgpool\"'; do
	if grep -a -F -q "$op" "$tmp/a.safetensors"; then
		bad "an f32 op is left: $op"
	else
		pass "no $op left"
	fi
done

# 64 test images as uint8 [64, 1, 28, 28] in an NPY 1.0 file
{
	printf '\223NUMPY\001\000\166\000'
	printf "%-117s\n" "{'descr': '|u1', 'fortran_order': False, 'shape': (64, 1, 28, 28), }"
	gzip -dc "$data/t10k-images-idx3-ubyte.gz" | tail -c +17 | head -c $((64 * 784))
} > "$tmp/x.npy"
first=
for path in avx512-vnni avx2 portable; do
	for t in 1 2 3; do
		y="$tmp/y-$path-$t.npy"
		OMP_NUM_THREADS=$t MCOMP_GEMM_S8=$path "$mcomp" predict "$tmp/a.safetensors" \
			--input "$tmp/x.npy" -o "$y" > "$tmp/log" 2>&1 || { cat "$tmp/log"; fail=1; }
		if [ -z "$first" ]; then
			first=$y
		elif cmp -s "$first" "$y"; then
			pass "logits on $path with $t threads: the same bytes"
		else
			bad "logits on $path with $t threads differ from $(basename "$first")"
		fi
	done
done

acc() { "$mcomp" eval "$1" --data "$data" 2>&1 | sed -n 's/^accuracy: *\([0-9.]*\)%.*/\1/p'; }
a32=$(acc "$tmp/f32.safetensors")
a8=$(acc "$tmp/a.safetensors")
if [ -n "$a32" ] && [ -n "$a8" ] && awk -v a="$a8" -v b="$a32" 'BEGIN { d = a - b; exit !(d < 2 && d > -2) }'; then
	pass "the int8 model classifies the test split as the f32 one does: $a8% against $a32%"
else
	bad "accuracy of the int8 model '$a8', of the f32 one '$a32'"
fi

ortjs="$MCOMP_SRCDIR/tests/ort_run.js"
if ! command -v node > /dev/null 2>&1; then
	echo "SKIP: no node for the ONNX Runtime comparison"
else
	# the probe loads onnxruntime-node (idx alone does not need it)
	node "$ortjs" probe > "$tmp/log" 2>&1 &&
		node "$ortjs" idx "$data/t10k-images-idx3-ubyte.gz" --first 0 --count 500 \
			-o "$tmp/xf.npy" > "$tmp/log" 2>&1
	rc=$?
	if [ $rc -eq 77 ]; then
		echo "SKIP: no onnxruntime-node for the ONNX Runtime comparison"
	elif [ $rc -ne 0 ]; then
		cat "$tmp/log"
		bad "ort_run.js idx failed"
	else
		"$mcomp" export "$tmp/a.safetensors" -o "$tmp/a.onnx" > "$tmp/log" 2>&1 ||
			{ cat "$tmp/log"; bad "export failed"; }
		"$mcomp" predict "$tmp/a.safetensors" --input "$tmp/xf.npy" -o "$tmp/ym.npy" \
			> "$tmp/log" 2>&1 || { cat "$tmp/log"; bad "predict failed"; }
		for opt in all disabled; do
			node "$ortjs" run "$tmp/a.onnx" "$tmp/xf.npy" "$tmp/yo.npy" --optimize $opt \
				> "$tmp/log" 2>&1 || { cat "$tmp/log"; bad "ONNX Runtime failed"; }
			cmpout=$(node "$ortjs" compare "$tmp/ym.npy" "$tmp/yo.npy" 2>&1)
			case $cmpout in
			*'"max_abs_diff":0,'*) pass "ONNX Runtime (optimize $opt) gives mcomp's logits bit for bit" ;;
			*) bad "ONNX Runtime (optimize $opt) differs: $cmpout" ;;
			esac
		done
	fi
fi
exit $fail
