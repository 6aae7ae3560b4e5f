#!/bin/sh
# onnx_avx2.sh - mcomp's int8 ONNX export computed exactly by ONNX Runtime on
# an AVX2 CPU without VNNI, where its u8 x s8 kernels saturate (vpmaddubsw).
# This machine plays that CPU: tests/shim/.libs/cpuid_mask.so (LD_PRELOAD,
# CPUID_MASK=avx2) hides AVX-512, VNNI and AMX from CPUID through Linux's
# CPUID faulting, so ONNX Runtime's MLAS picks its AVX2 kernels.
#   - the mask: tests/shim/cpuid_flags sees AVX2 and FMA and none of
#     AVX-512, VNNI and AMX, on its main thread and on a thread it starts;
#     a fault that is no CPUID still reaches the program's handler, or kills;
#   - ONNX Runtime runs its CPUID (its MLAS kernel choice) through the mask,
#     and the threads of its pool start with CPUID faulting;
#   - an int8 static MLP and CNN and their dynamic forms, trained on a slice
#     of Fashion-MNIST as tests/onnx_export.sh trains them, exported, run by
#     ONNX Runtime on the whole test split (10000 images) masked and not:
#     exactly as many right as mcomp predict, and no prediction differs
#     (on the AVX2 kernels, not one bit of the logits).
# Without cpuid_fault (or arch_prctl ARCH_SET_CPUID), x86-64 Linux,
# Fashion-MNIST, node or onnxruntime-node: SKIP.
set -u
: "${MCOMP_BUILDDIR:?run through make check}" "${MCOMP_SRCDIR:?run through make check}"
mcomp="$MCOMP_BUILDDIR/mcomp"
ortjs="$MCOMP_SRCDIR/tests/ort_run.js"
shim="$MCOMP_BUILDDIR/tests/shim/.libs/cpuid_mask.so"
flags="$MCOMP_BUILDDIR/tests/shim/cpuid_flags"
data=/usr/share/datasets/fashion-mnist
tmp=$(mktemp -d "${TMPDIR:-/tmp}/mcomp-onnx-avx2-XXXXXX")
trap 'rm -rf "$tmp"' EXIT
. "$MCOMP_SRCDIR/tests/expect.sh"

masked() { CPUID_MASK=avx2 LD_PRELOAD="$shim" "$@"; }

# ---------------------------------------------------------------- the mask
[ "$(uname -m)" = x86_64 ] && [ "$(uname -s)" = Linux ] || skip "CPUID masking is x86-64 Linux only"
grep -q -w cpuid_fault /proc/cpuinfo ||
	skip "this CPU (or its hypervisor) offers no CPUID faulting (flag cpuid_fault in /proc/cpuinfo)"
# The shim is instrumented in a sanitizer build, and ASan's runtime must be
# the first library of a process: preloaded into node (not instrumented), it
# cannot start.
sanitized && skip "the LD_PRELOAD shim cannot load under AddressSanitizer (its runtime must come first)"
[ -r "$shim" ] && [ -x "$flags" ] || skip "no $shim or $flags (make check builds them)"
out=$(masked "$flags" 2>&1)
case $? in
0) ;;
77) skip "$out" ;;
*) bad "cpuid_flags under the mask failed: $out" && finish 1 ;;
esac
echo "$out"
for who in main thread; do
	line=$(printf '%s\n' "$out" | grep "^$who: ")
	printf '%s\n' "$line" | grep -q -w 'faulting=1' && ok || bad "$who: CPUID does not fault: $line"
	for f in avx fma avx2; do
		printf '%s\n' "$line" | grep -q -w -- "$f" && ok || bad "$who: the mask hid $f: $line"
	done
	printf '%s\n' "$line" | grep -q -E ' (avx512[a-z0-9]*|avx-vnni[a-z0-9-]*|amx-[a-z0-9]*|avx10)( |$)' &&
		bad "$who: the mask left some of AVX-512, VNNI, AMX: $line" || ok
done
if grep -q -w avx512f /proc/cpuinfo; then
	expect 0 '^main: faulting=0 .*avx512f' "$flags"
fi
expect 2 'CPUID_MASK=avx3: not a mask' env CPUID_MASK=avx3 LD_PRELOAD="$shim" "$flags"
# Faults that are no CPUID: the program's own handler (signal()), or death by SIGSEGV.
expect 3 '^caught SIGSEGV$' masked "$flags" --segv handler
masked "$flags" --segv default > /dev/null 2>&1
got=$?
[ "$got" = 139 ] && ok || bad "a NULL dereference under the mask exited $got, wanted 139 (SIGSEGV)"

# ---------------------------------------------------------------- ONNX Runtime
need_fashion_mnist
need_ort

# The models of tests/onnx_export.sh: 3000 training images, a few seconds each.
train_model mlp '[flatten, {linear: 64}, relu, {linear: 10}]' 2
train_model cnn '[{conv2d: 4}, relu, {maxpool2d: 2}, {conv2d: {out: 8, padding: 1}}, relu, {avgpool2d: 2}, flatten, {linear: 10}]' 1
static='bits: 8, granularity: per-channel, mode: static, calibration_data: calib, samples: 500'
quantize_model mlp mlp-int8 "$static"
quantize_model cnn cnn-int8 "$static"
quantize_model mlp mlp-dyn 'bits: 8, mode: dynamic'
quantize_model cnn cnn-dyn 'bits: 8, mode: dynamic'
for m in mlp-int8 cnn-int8 mlp-dyn cnn-dyn; do
	expect 0 "-> .*$m.onnx" "$mcomp" export "$tmp/$m.safetensors" -o "$tmp/$m.onnx"
done

ort idx "$data/t10k-images-idx3-ubyte.gz" -o "$tmp/x.npy" \
	--labels "$data/t10k-labels-idx1-ubyte.gz" "$tmp/y.npy" || bad "ort_run.js idx failed"

# ONNX Runtime chooses its kernels through the mask (its CPUID of leaf 7
# traps), and the threads of its pool start with CPUID faulting.
masked env CPUID_MASK_LOG=1 node "$ortjs" run "$tmp/mlp-int8.onnx" "$tmp/x.npy" "$tmp/log.npy" \
	--threads 3 > /dev/null 2> "$tmp/log.txt"
grep -q 'cpuid 0x7\.0 in libonnxruntime[^ ]* masked' "$tmp/log.txt" && ok ||
	bad "ONNX Runtime's CPUID did not go through the mask: $(grep -v 'in node' "$tmp/log.txt" | tail -5)"
grep -q '(libonnxruntime[^ ]*) starts: CPUID faults' "$tmp/log.txt" && ok ||
	bad "no thread of ONNX Runtime's pool started with CPUID faulting: $(grep starts "$tmp/log.txt")"
grep -q 'did not fault' "$tmp/log.txt" && bad "a thread started without CPUID faulting: $(grep 'did not' "$tmp/log.txt")" || ok

field() { printf '%s\n' "$1" | sed -n "s/.*\"$2\":\([-0-9.e+]*\).*/\1/p"; }

for m in mlp-int8 cnn-int8 mlp-dyn cnn-dyn; do
	"$mcomp" predict "$tmp/$m.safetensors" --input "$tmp/x.npy" -o "$tmp/$m.mc.npy" > /dev/null ||
		bad "mcomp predict $m failed"
	# dynamic ranges are per batch: ONNX Runtime runs mcomp predict's batches of 256
	b=
	case $m in *-dyn) b='--batch 256' ;; esac
	for path in avx2 native; do
		run=
		[ $path = avx2 ] && run=masked
		# shellcheck disable=SC2086
		$run node "$ortjs" run "$tmp/$m.onnx" "$tmp/x.npy" "$tmp/$m.$path.npy" $b ||
			bad "ONNX Runtime on $m ($path) failed"
		cmp=$(ort compare "$tmp/$m.mc.npy" "$tmp/$m.$path.npy" --labels "$tmp/y.npy")
		echo "$m, ONNX Runtime $path: $cmp"
		a=$(field "$cmp" correct_a) o=$(field "$cmp" correct_b) d=$(field "$cmp" argmax_disagree)
		[ -n "$a" ] && [ "$a" = "$o" ] && ok ||
			bad "$m ($path): mcomp gets $a of 10000 right, ONNX Runtime $o"
		[ "$d" = 0 ] && ok || bad "$m ($path): $d of 10000 predictions differ"
		# the integer form is mcomp's bits; on the AVX2 kernels every f32 op agrees too
		if [ $path = avx2 ]; then
			x=$(field "$cmp" max_abs_diff)
			[ "$x" = 0 ] && ok || bad "$m ($path): logits differ from mcomp's by up to $x"
		fi
	done
done

finish 0
