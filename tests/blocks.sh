#!/bin/sh
# blocks.sh - a model built of blocks (pipelines/mobilenetv2.yaml's inverted
# residuals, cut down to seconds: one epoch on 1024 images) trained with 1,
# 2 and 3 OpenMP threads gives byte-identical files; a pipeline whose block
# use is misspelt is refused with exit status 2 and its place. The ResNet
# recipes, cut down likewise: resnet-teacher.yaml's model (blocks repeated)
# is the teacher resnet-distill.yaml loads, and without it the distillation
# is refused naming the pipeline that writes it.
set -u
: "${MCOMP_BUILDDIR:?run through make check}" "${MCOMP_SRCDIR:?run through make check}"
mcomp="$MCOMP_BUILDDIR/mcomp"
recipe="$MCOMP_SRCDIR/pipelines/mobilenetv2.yaml"
data=/usr/share/datasets/fashion-mnist
[ -e "$data/train-images-idx3-ubyte.gz" ] || { echo "SKIP: no Fashion-MNIST in $data"; exit 77; }
tmp=$(mktemp -d "${TMPDIR:-/tmp}/mcomp-blocks-XXXXXX")
trap 'rm -rf "$tmp"' EXIT
fail=0

run() { # THREADS OUT
	OMP_NUM_THREADS=$1 "$mcomp" run "$recipe" --quiet --set data.train.count=1024 \
		--set data.test.count=256 --set passes.train.epochs=1 --set output.path="$2" \
		--set report="$2.json" --set passes.train.checkpoint.path="$2.ckpt" > "$tmp/log" 2>&1 || { cat "$tmp/log"; fail=1; }
}

run 1 "$tmp/t1.safetensors"
for t in 2 3; do
	run $t "$tmp/t$t.safetensors"
	if cmp "$tmp/t1.safetensors" "$tmp/t$t.safetensors"; then
		echo "PASS: 1 and $t threads give the same bytes"
	else
		echo "FAIL: 1 and $t threads differ"
		fail=1
	fi
done
if grep -q '"stage2.1.dw.weight"' "$tmp/t1.safetensors"; then
	echo "PASS: the file names the expanded layers (stage2.1.dw)"
else
	echo "FAIL: no stage2.1.dw.weight in the file"
	fail=1
fi

"$mcomp" validate "$recipe" --set 'models.mobilenetv2.build.layers.4={inverted_residul: {out: 16}}' \
	> "$tmp/out" 2>&1
rc=$?
if [ $rc -eq 2 ] && grep -q "unknown op or block 'inverted_residul'; did you mean 'inverted_residual'" "$tmp/out"; then
	echo "PASS: a misspelt block is refused (exit 2)"
else
	echo "FAIL: misspelt block: exit $rc:"; cat "$tmp/out"
	fail=1
fi
# the ResNet pair: the teacher's recipe, then the distillation that loads it
teacher="$MCOMP_SRCDIR/pipelines/resnet-teacher.yaml"
distill="$MCOMP_SRCDIR/pipelines/resnet-distill.yaml"
if "$mcomp" run "$teacher" --quiet --set data.train.count=512 --set data.test.count=128 \
	--set passes.train.epochs=1 --set output.path="$tmp/r14.safetensors" --set report="$tmp/r14.json" \
	--set passes.train.checkpoint.path="$tmp/r14.ckpt" > "$tmp/log" 2>&1 &&
	grep -q '"stage3.1.conv2.weight"' "$tmp/r14.safetensors"; then
	echo "PASS: resnet-teacher.yaml trains its ResNet-14 (stage3.1 expanded)"
else
	echo "FAIL: resnet-teacher.yaml:"; cat "$tmp/log"
	fail=1
fi
if "$mcomp" run "$distill" --quiet --set models.teacher.load="$tmp/r14.safetensors" \
	--set data.train.count=512 --set data.test.count=128 --set passes.0.distill.epochs=1 \
	--set passes.1.train.epochs=1 --set output.path="$tmp/r8.safetensors" --set report="$tmp/r8.json" \
	> "$tmp/log" 2>&1 && [ -s "$tmp/r8.safetensors" ]; then
	echo "PASS: resnet-distill.yaml distils from that teacher"
else
	echo "FAIL: resnet-distill.yaml:"; cat "$tmp/log"
	fail=1
fi
mkdir "$tmp/p" && cp "$teacher" "$distill" "$tmp/p/"
"$mcomp" validate "$tmp/p/resnet-distill.yaml" > "$tmp/out" 2>&1
rc=$?
if [ $rc -eq 2 ] && grep -q "the output of $tmp/p/resnet-teacher.yaml; run that pipeline first" "$tmp/out"; then
	echo "PASS: without its teacher, resnet-distill.yaml names resnet-teacher.yaml (exit 2)"
else
	echo "FAIL: missing teacher: exit $rc:"; cat "$tmp/out"
	fail=1
fi
exit $fail
