#!/bin/sh
# cli.sh - the mcomp command as a user meets it: help, exit codes, messages
# with file:line:col, hostile files, a small real run on Fashion-MNIST, and
# a failed run that leaves the previous output intact and nothing partial.
set -u
: "${MCOMP_BUILDDIR:?run through make check}" "${MCOMP_SRCDIR:?run through make check}"
mcomp="$MCOMP_BUILDDIR/mcomp"
data=/usr/share/datasets/fashion-mnist
tmp=$(mktemp -d "${TMPDIR:-/tmp}/mcomp-cli-XXXXXX")
trap 'rm -rf "$tmp"' EXIT
. "$MCOMP_SRCDIR/tests/expect.sh"

expect 0 'usage: mcomp' "$mcomp" help
expect 0 'pass-info' "$mcomp" --help
expect 2 'usage: mcomp' "$mcomp"
expect 2 "unknown command 'frobnicate'" "$mcomp" frobnicate
expect 0 'pass ABI' "$mcomp" version
# libgomp reads its wait policy only when it starts: mcomp starts again with
# bounded waits unless the user chose one (docs/threads.md).
expect 0 "GOMP_SPINCOUNT = '5000'" env -u OMP_WAIT_POLICY -u GOMP_SPINCOUNT \
	OMP_DISPLAY_ENV=verbose "$mcomp" version
expect 0 "GOMP_SPINCOUNT = '30000000000'" env -u GOMP_SPINCOUNT OMP_WAIT_POLICY=active \
	OMP_DISPLAY_ENV=verbose "$mcomp" version
expect 0 '^train +1\.0 .*train\.so' "$mcomp" passes
expect 0 '^eval ' "$mcomp" passes
expect 0 'epochs +int in \[1, 100000\]; default: 5' "$mcomp" pass-info train
expect 0 'optimizer +one of sgd, adam' "$mcomp" pass-info train
expect 0 'overrides +map of float in \[0, 1\); default: \{\}' "$mcomp" pass-info prune
# Every form of parameter, as the fixture pass fxparams declares them.
fx_path="${MCOMP_FIXTURES:?run through make check}:${MCOMP_PASS_PATH:-}"
for re in 'rank +int in \[1, 4096\]; default: none; exactly one of rank, energy$' \
	'energy +float in \(0, 1\]; default: none; exactly one of rank, energy$' \
	'scale +float in \(0, 10\); default: 1$' \
	'last +int in \[0, 100\]; default: none \(optional\); at most one of first, last$' \
	'note +string; default: none \(optional\)$' \
	'gran +map of one of per-tensor, per-channel; default: \{linear1: per-tensor\}$'; do
	expect 0 "$re" env MCOMP_PASS_PATH="$fx_path" "$mcomp" pass-info fxparams
done
expect 2 "no pass named 'trian'; did you mean 'train'" "$mcomp" pass-info trian
expect 2 'run needs a pipeline file' "$mcomp" run
expect 2 "unknown option '--bogus'" "$mcomp" run x.yaml --bogus

# Hostile model files: a clear message naming the file, exit 1, no crash.
printf 'not a model' > "$tmp/short.safetensors"
expect 1 'short.safetensors' "$mcomp" inspect "$tmp/short.safetensors"
printf '\377\377\377\377\377\377\377\177{}' > "$tmp/huge.safetensors"
expect 1 'huge.safetensors' "$mcomp" inspect "$tmp/huge.safetensors"
expect 1 'missing.safetensors' "$mcomp" inspect "$tmp/missing.safetensors"
printf '\030\000\000\000\000\000\000\000{"__metadata__":{}}     ' > "$tmp/noarch.safetensors"
expect 1 'noarch.safetensors.*(architecture|mcomp)' "$mcomp" inspect "$tmp/noarch.safetensors"
expect 2 'eval needs MODEL --data DIR' "$mcomp" eval "$tmp/short.safetensors"

# predict: bad usage exits 2 and writes nothing; a model built from the seed
# alone (no data needed) gives float32 [N, classes] for uint8 inputs.
expect 0 'predict MODEL --input X.npy -o Y.npy' "$mcomp" help
expect 2 'predict needs MODEL --input X.npy -o Y.npy' "$mcomp" predict "$tmp/m0.safetensors"
expect 2 "predict: unknown option '--bogus'" "$mcomp" predict m --input x.npy -o y.npy --bogus
expect 2 "predict: --mean 'a,b'" "$mcomp" predict m --input x.npy -o y.npy --mean a,b
expect 2 "predict: --scale '0'" "$mcomp" predict m --input x.npy -o y.npy --scale 0
expect 2 "would overwrite an input \(the inputs\)" "$mcomp" predict m --input "$tmp/x.npy" -o "$tmp/x.npy"
cat > "$tmp/m0.yaml" <<EOF
mcomp: 1
seed: 4
models:
  m: {build: {input: [2, 2], layers: [flatten, {linear: 3}]}}
passes: []
output: m0.safetensors
EOF
"$mcomp" run "$tmp/m0.yaml" > /dev/null 2>&1 && ok || bad "cannot build m0.safetensors"
# x.npy: uint8 [5, 2, 2] (an NPY 1.0 header of 118 bytes, then 20 bytes)
npy_header() { # DESCR SHAPE: the 128 bytes of magic and header
	printf '\223NUMPY\001\000\166\000'
	printf "%-117s\n" "{'descr': '$1', 'fortran_order': False, 'shape': $2, }"
}
{ npy_header '|u1' '(5, 2, 2)'; printf '\000\001\002\003\377\376\375\374\100\100\100\100\000\000\000\000\011\022\033\044'; } > "$tmp/x.npy"
expect 0 'wrote .*y.npy \(5 samples x 3 outputs, float32\)' "$mcomp" predict "$tmp/m0.safetensors" --input "$tmp/x.npy" -o "$tmp/y.npy"
grep -a -q "{'descr': '<f4', 'fortran_order': False, 'shape': (5, 3), }" "$tmp/y.npy" && ok || bad "y.npy header: $(head -c 80 "$tmp/y.npy")"
[ "$(wc -c < "$tmp/y.npy")" = $((128 + 5 * 3 * 4)) ] && ok || bad "y.npy is $(wc -c < "$tmp/y.npy") bytes"
# The same twice; other preprocessing, other logits, and the all-zero fourth
# sample moves only with the mean.
"$mcomp" predict "$tmp/m0.safetensors" --input "$tmp/x.npy" -o "$tmp/y1.npy" > /dev/null &&
	cmp -s "$tmp/y.npy" "$tmp/y1.npy" && ok || bad "predict is not deterministic"
"$mcomp" predict "$tmp/m0.safetensors" --input "$tmp/x.npy" -o "$tmp/y2.npy" --scale 7 > /dev/null &&
	cmp -s "$tmp/y.npy" "$tmp/y2.npy" && bad "--scale changed nothing" || ok
off=$((128 + 3 * 3 * 4))
[ "$(od -A n -t x1 -j $off -N 12 "$tmp/y.npy")" = "$(od -A n -t x1 -j $off -N 12 "$tmp/y2.npy")" ] &&
	ok || bad "--scale moved the all-zero sample"
"$mcomp" predict "$tmp/m0.safetensors" --input "$tmp/x.npy" -o "$tmp/y2.npy" --mean 0.5 --std 2 > /dev/null || bad "--mean --std failed"
[ "$(od -A n -t x1 -j $off -N 12 "$tmp/y.npy")" = "$(od -A n -t x1 -j $off -N 12 "$tmp/y2.npy")" ] &&
	bad "--mean did not move the all-zero sample" || ok
expect 2 'mean has 3 values but the samples have 1 channel' "$mcomp" predict "$tmp/m0.safetensors" --input "$tmp/x.npy" -o "$tmp/y3.npy" --mean 1,2,3
# Hostile inputs: a clear message, exit 1, nothing written.
{ npy_header '<f8' '(5, 2, 2)'; head -c 160 /dev/zero; } > "$tmp/f8.npy"
expect 1 "f8.npy: inputs of dtype '<f8' \(float64\); mcomp reads uint8" "$mcomp" predict "$tmp/m0.safetensors" --input "$tmp/f8.npy" -o "$tmp/y3.npy"
head -c 140 "$tmp/x.npy" > "$tmp/short.npy"
expect 1 'short.npy: shape \(5, 2, 2\) of .* found 12; the file is truncated' "$mcomp" predict "$tmp/m0.safetensors" --input "$tmp/short.npy" -o "$tmp/y3.npy"
{ npy_header '|u1' '(5, 3)'; head -c 15 /dev/zero; } > "$tmp/x3.npy"
expect 1 'samples of 3 values do not fit model' "$mcomp" predict "$tmp/m0.safetensors" --input "$tmp/x3.npy" -o "$tmp/y3.npy"
[ ! -e "$tmp/y3.npy" ] && ok || bad "a failed predict wrote y3.npy"
[ -z "$(ls -A "$tmp" | grep '^\.')" ] && ok || bad "a failed predict left $(ls -A "$tmp" | grep '^\.')"

# The rest uses the real data set.
if [ ! -d "$data" ]; then
	echo "cli: $pass passed, $fail failed; SKIP the rest: $data is absent (apt-get install dataset-fashion-mnist)"
	[ "$fail" = 0 ] && exit 77
	exit 1
fi

# A pipeline with a typo in its last pass fails at validation, before anything runs.
cat > "$tmp/typo.yaml" <<EOF
mcomp: 1
data:
  train: {idx: $data/train}
  test: {idx: $data/t10k}
models:
  m: {build: {input: [1, 28, 28], layers: [flatten, {linear: 10}]}}
passes:
  - train: {model: m, epochs: 1}
  - eval: {model: m, dataa: test}
EOF
expect 2 "typo.yaml:9:22: .*'dataa'.*did you mean 'data'" "$mcomp" validate "$tmp/typo.yaml"
expect 2 "typo.yaml:9:22" "$mcomp" run "$tmp/typo.yaml"
expect 0 'valid' "$mcomp" validate "$tmp/typo.yaml" --set passes.1.eval.dataa=test --set 'passes.1.eval={model: m}'
expect 2 'does-not-exist' "$mcomp" validate "$tmp/does-not-exist.yaml"
# A pass's own check of a value an override gave: the override is the place, once.
expect 2 "^mcomp: --set passes.0.quantize.epochs: pass 'quantize', epochs: quantization-aware" \
	"$mcomp" validate "$tmp/typo.yaml" --set 'passes.0={quantize: {model: m, mode: qat}}' \
	--set passes.0.quantize.epochs=0 --set 'passes.1.eval={model: m}'

# A small real run: train on 3000 images for one epoch, save, report.
cat > "$tmp/small.yaml" <<EOF
mcomp: 1
seed: 5
data:
  train: {idx: $data/train, count: 3000}
  test: {idx: $data/t10k, count: 1000}
models:
  m: {build: {input: [1, 28, 28], layers: [flatten, {linear: 32}, relu, {linear: 10}]}}
passes:
  - train: {model: m, epochs: 1, batch_size: 64}
  - eval: {model: m}
output: {model: m, path: out/m.safetensors}
report: out/report.json
EOF
expect 0 'wrote .*out/m.safetensors' "$mcomp" run "$tmp/small.yaml"
printf '%s\n' "$out" | grep -q '^\[1/2\] train$' && ok || bad "no progress line: $out"
[ -s "$tmp/out/m.safetensors" ] && ok || bad "no output model"
grep -q '"sha256"' "$tmp/out/report.json" && ok || bad "report has no digests"
grep -q '"name": "train"' "$tmp/out/report.json" && ok || bad "report lacks the train pass"
expect 0 'linear1 +linear +out=32' "$mcomp" inspect "$tmp/out/m.safetensors"
expect 0 'linear1.weight +F32 +\[32, 784\]' "$mcomp" inspect "$tmp/out/m.safetensors"
expect 0 'accuracy: [0-9.]+%' "$mcomp" eval "$tmp/out/m.safetensors" --data "$data"

# predict round trip: the first 500 test images as x.npy (uint8 [500, 1, 28, 28]);
# the arg-max of each row of the logits gives the accuracy eval reports on the
# same 500 images as an IDX split.
gzip -dc "$data/t10k-images-idx3-ubyte.gz" | tail -c +17 | head -c $((500 * 784)) > "$tmp/px"
gzip -dc "$data/t10k-labels-idx1-ubyte.gz" | tail -c +9 | head -c 500 > "$tmp/lb"
{ npy_header '|u1' '(500, 1, 28, 28)'; cat "$tmp/px"; } > "$tmp/t500.npy"
{ printf '\000\000\010\003\000\000\001\364\000\000\000\034\000\000\000\034'; cat "$tmp/px"; } > "$tmp/sub-images-idx3-ubyte"
{ printf '\000\000\010\001\000\000\001\364'; cat "$tmp/lb"; } > "$tmp/sub-labels-idx1-ubyte"
expect 0 'wrote .*logits.npy \(500 samples x 10 outputs' "$mcomp" predict "$tmp/out/m.safetensors" --input "$tmp/t500.npy" -o "$tmp/logits.npy"
eacc=$("$mcomp" eval "$tmp/out/m.safetensors" --data "$tmp/sub" | sed -n 's/^accuracy: \(.*\)%$/\1/p')
hl=$(od -A n -t u2 -j 8 -N 2 "$tmp/logits.npy" | tr -d ' ')
pacc=$( (od -A n -v -t u1 "$tmp/lb"; echo END; od -A n -v -t f4 -j $((10 + hl)) "$tmp/logits.npy") | awk '
	/END/ { logits = 1; next }
	!logits { for (i = 1; i <= NF; i++) y[n++] = $i; next }
	{ for (i = 1; i <= NF; i++) { v[k % 10] = $i; k++; if (k % 10 == 0) {
		b = 0; for (j = 1; j < 10; j++) if (v[j] + 0 > v[b] + 0) b = j
		c += b == y[k / 10 - 1] } } }
	END { printf "%.2f", 100 * c / n }')
[ -n "$eacc" ] && [ "$eacc" = "$pacc" ] && ok || bad "predict's accuracy $pacc% is not eval's $eacc%"

# A run that fails (the model does not fit the data) exits 1, and leaves the
# previous output and report as they were, with no temporary files beside them.
cp "$tmp/out/m.safetensors" "$tmp/before.safetensors"
cp "$tmp/out/report.json" "$tmp/before.json"
sed 's/input: \[1, 28, 28\]/input: [1, 14, 14]/' "$tmp/small.yaml" > "$tmp/misfit.yaml"
expect 2 "misfit.yaml:9:5: .*split 'train' has samples of shape \\[1, 28, 28\\] but model 'm' takes \\[1, 14, 14\\]" "$mcomp" run "$tmp/misfit.yaml"
# A run that fails while running (the output's folder cannot be made) exits 1
# after printing the table, and writes the report of the failed run; --quiet
# leaves out the progress lines, not the error.
sed 's|path: out/m.safetensors|path: before.safetensors/m.safetensors|' "$tmp/small.yaml" > "$tmp/unwritable.yaml"
expect 1 'before.safetensors' "$mcomp" run "$tmp/unwritable.yaml" --quiet
printf '%s\n' "$out" | grep -q -E '^2 +eval ' && ok || bad "failed run printed no table: $out"
printf '%s\n' "$out" | grep -q '^\[1/2\]' && bad "--quiet printed progress: $out" || ok
cmp -s "$tmp/out/m.safetensors" "$tmp/before.safetensors" && ok || bad "failed run changed the output"
grep -q '"status": "failed"' "$tmp/out/report.json" && ok ||
	bad "failed run's report lacks its status: $(head -c 300 "$tmp/out/report.json")"
grep -q '"error": ".*before.safetensors' "$tmp/out/report.json" && ok ||
	bad "failed run's report lacks the error"
grep -q '"outputs": \[\]' "$tmp/out/report.json" && ok || bad "failed run's report lists an output"
[ "$(ls -A "$tmp/out" | wc -l)" = 2 ] && ok || bad "failed run left files: $(ls -A "$tmp/out")"
cp "$tmp/before.json" "$tmp/out/report.json"

# A pass on MCOMP_PASS_PATH under a shipped pass's name is not used by that
# name: validate says why and how; a pipeline that names its file runs it,
# and the report has the digest of the file that ran.
mkdir "$tmp/shadow"
cp "$MCOMP_BUILDDIR/passes/.libs/eval.so" "$tmp/shadow/eval.so"
shadow_path="$tmp/shadow:${MCOMP_PASS_PATH:-}"
expect 2 "small.yaml:[0-9]+:[0-9]+: pass 'eval' is both .*/shadow/eval.so, .* and the shipped .*/eval.so.*name its file" \
	env MCOMP_PASS_PATH="$shadow_path" "$mcomp" validate "$tmp/small.yaml"
sed -e 's/count: 3000/count: 100/' -e '/  - train:/d' -e "s|  - eval:|  - $tmp/shadow/eval.so:|" \
	"$tmp/small.yaml" > "$tmp/shadowed.yaml"
expect 0 "note: pass 'eval' of .*/shadow/eval.so \\(MCOMP_PASS_PATH\\) has the name of the shipped" \
	env MCOMP_PASS_PATH="$shadow_path" "$mcomp" run "$tmp/shadowed.yaml" --quiet
grep -q "\"sha256\": \"$(sha256sum "$tmp/shadow/eval.so" | cut -d' ' -f1)\"" "$tmp/out/report.json" &&
	ok || bad "the report lacks the digest of the eval.so that ran"
cp "$tmp/before.json" "$tmp/out/report.json"
cp "$tmp/before.safetensors" "$tmp/out/m.safetensors"
# A FIFO named like a pass on the path: refused at once, no command hangs.
mkdir "$tmp/fifo"
mkfifo "$tmp/fifo/x.so"
expect 0 "refused .*/fifo/x.so: not a regular file \(a FIFO\)" \
	env MCOMP_PASS_PATH="$tmp/fifo:${MCOMP_PASS_PATH:-}" timeout 60 "$mcomp" passes
expect 0 "valid" env MCOMP_PASS_PATH="$tmp/fifo:${MCOMP_PASS_PATH:-}" timeout 60 "$mcomp" \
	validate "$tmp/small.yaml"
expect 1 "x.so: not a regular file \(a FIFO\)" timeout 60 "$mcomp" pass-info "$tmp/fifo/x.so"

# Distillation from the model just trained, beside scratch: every epoch's
# accuracy is logged for both students, the last one is the accuracy the
# pass reports, and the teacher's cost in the report is its file's size.
# The small run's seed and data (its first 6 lines), other models and passes:
sed -n '1,6p' "$tmp/small.yaml" > "$tmp/kd.yaml"
cat >> "$tmp/kd.yaml" <<EOF
  t: {load: before.safetensors}
  s: {build: {input: [1, 28, 28], layers: [flatten, {linear: 16}, relu, {linear: 10}]}}
passes:
  - distill: {student: s, teacher: t, epochs: 2, batch_size: 64, compare_scratch: true}
report: kd.json
EOF
MCOMP_PROGRESS=0 "$mcomp" run "$tmp/kd.yaml" > "$tmp/kd.log" 2>&1 && ok || bad "distill run failed: $(cat "$tmp/kd.log")"
acc() { sed -n "s|^distill: $1epoch 2/2: loss [0-9.]*, test accuracy \([0-9.]*%\)\$|\1|p" "$tmp/kd.log"; }
last=$(acc '') slast=$(acc 'scratch: ')
[ "$(grep -c '^distill: epoch [12]/2: loss' "$tmp/kd.log")" = 2 ] && ok ||
	bad "distill logged no per-epoch lines: $(cat "$tmp/kd.log")"
[ -n "$last" ] && grep -q "test accuracy: distilled $last, from scratch $slast " "$tmp/kd.log" && ok ||
	bad "the last epochs' accuracies ($last, $slast) are not the reported ones: $(cat "$tmp/kd.log")"
grep -q -E "\"teacher_bytes\": $(wc -c < "$tmp/before.safetensors")(\.0)?," "$tmp/kd.json" && ok ||
	bad "teacher_bytes is not the teacher file's size: $(grep teacher_bytes "$tmp/kd.json")"

# An output that would overwrite an input is refused before anything runs.
cat > "$tmp/clobber.yaml" <<EOF
mcomp: 1
data:
  test: {idx: $data/t10k, count: 100}
models:
  m: {load: before.safetensors}
passes:
  - eval: {model: m}
output: {model: m, path: before.safetensors}
EOF
expect 2 'clobber.yaml:[0-9]+:[0-9]+: .*input' "$mcomp" validate "$tmp/clobber.yaml"

echo "cli: $pass passed, $fail failed"
[ "$fail" = 0 ]
