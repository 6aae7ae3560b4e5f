#!/bin/sh
# autocompress.sh - the autocompress pass end to end on a small MLP trained
# for seconds on Fashion-MNIST: the emitted recipe makes the same file, byte
# for byte; 1 and 2 OpenMP threads choose the same recipe and model; the
# result meets the budget on the held-out split (measured again by eval);
# the test split is never read by the search (a test split whose every label
# is wrong changes nothing); max_seconds is kept (0: the model as given); a
# test split given as the held-out one is refused at validation, naming the
# key; a recipe without int8 layers, fine-tuned, reproduces too; with
# objective latency the chosen model and the uniform recipes within the
# budget are timed side by side and reported. Skips (77) without the data set, jq or python3.
set -u
: "${MCOMP_BUILDDIR:?run through make check}"
data=/usr/share/datasets/fashion-mnist
[ -r "$data/train-images-idx3-ubyte.gz" ] || { echo "SKIP: no Fashion-MNIST in $data"; exit 77; }
command -v jq > /dev/null || { echo "SKIP: no jq"; exit 77; }
command -v python3 > /dev/null || { echo "SKIP: no python3"; exit 77; }
mcomp="$MCOMP_BUILDDIR/mcomp"
tmp=$(mktemp -d "${TMPDIR:-/tmp}/mcomp-autocompress-XXXXXX")
trap 'rm -rf "$tmp"' EXIT
fail=0
check() { # WHAT COMMAND...
	what=$1
	shift
	if "$@"; then echo "PASS: $what"; else echo "FAIL: $what"; fail=1; fi
}
jqt() { jq -e "$@" > /dev/null; }

# Every test label moved to the next class: a search that read the test
# split would see a model of ~0% and a budget anything meets.
python3 - "$data/t10k-labels-idx1-ubyte.gz" "$tmp/wrong-labels-idx1-ubyte" <<'PY'
import gzip, sys
b = bytearray(gzip.open(sys.argv[1]).read())
for i in range(8, len(b)):
    b[i] = (b[i] + 1) % 10
open(sys.argv[2], "wb").write(bytes(b))
PY

pipeline() { # DIR TEST-LABELS EXTRA-AUTOCOMPRESS-KEYS
	mkdir -p "$1"
	cat > "$1/p.yaml" <<YAML
mcomp: 1
seed: 5
data:
  train: {idx: $data/train, count: 4000}
  valid: {idx: $data/train, first: 55000, count: 1000}
  test: {images: $data/t10k-images-idx3-ubyte.gz, labels: $2, count: 1000}
models:
  mlp:
    build:
      input: [1, 28, 28]
      layers: [flatten, {linear: 64}, relu, {linear: 32}, relu, {linear: 10}]
passes:
  - train: {model: mlp, epochs: 1, batch_size: 64, optimizer: adam, lr: 0.003}
  - autocompress:
      model: mlp
      data: valid
      max_drop: 0.5
      sparsities: [0.5, 0.8]
      samples: 200
      base: base.safetensors
      recipe: r.yaml
      plot: p.svg
      table: t.txt
      $3
  - eval: {model: mlp, data: valid}
output: {model: mlp, path: m.safetensors.zst}
report: report.json
YAML
}

run() { # THREADS DIR
	OMP_NUM_THREADS=$1 "$mcomp" run "$2/p.yaml" > "$2/log" 2>&1 || {
		cat "$2/log"
		fail=1
	}
}

good="$data/t10k-labels-idx1-ubyte.gz"
pipeline "$tmp/a" "$good" ""
pipeline "$tmp/b" "$good" ""
pipeline "$tmp/w" "$tmp/wrong-labels-idx1-ubyte" ""
pipeline "$tmp/z" "$good" "max_seconds: 0"
pipeline "$tmp/n" "$good" "$(printf 'formats: [f32, int4]\n      finetune_epochs: 1')"
pipeline "$tmp/l" "$good" "$(printf 'objective: latency\n      formats: [f32, int8]')"
run 1 "$tmp/a"
run 2 "$tmp/b"
run 2 "$tmp/w"
run 2 "$tmp/z"
run 2 "$tmp/n"
run 2 "$tmp/l"

check "1 and 2 threads choose the same model" cmp "$tmp/a/m.safetensors.zst" "$tmp/b/m.safetensors.zst"
check "1 and 2 threads write the same recipe" cmp "$tmp/a/r.yaml" "$tmp/b/r.yaml"
check "the recipe compresses something" grep -q "^  - quantize:\|^  - prune:" "$tmp/a/r.yaml"
OMP_NUM_THREADS=2 "$mcomp" run "$tmp/a/r.yaml" > "$tmp/a/rlog" 2>&1 || { cat "$tmp/a/rlog"; fail=1; }
check "the recipe makes the same file, byte for byte" \
	cmp "$tmp/a/m.safetensors.zst" "$tmp/a/r.safetensors.zst"

check "no int8 layer: the recipe has no int8 pass" sh -c "! grep -q 'bits: 8' '$tmp/n/r.yaml'"
OMP_NUM_THREADS=2 "$mcomp" run "$tmp/n/r.yaml" > "$tmp/n/rlog" 2>&1 || { cat "$tmp/n/rlog"; fail=1; }
check "... with fine-tuning, makes the same file too" cmp "$tmp/n/m.safetensors.zst" "$tmp/n/r.safetensors.zst"

ac='.steps[] | select(.pass == "autocompress") | .metrics'
acc=$(jq "$ac | .split_accuracy" "$tmp/a/report.json")
given=$(jq "$ac | .split_accuracy_given" "$tmp/a/report.json")
evacc=$(jq '.steps[] | select(.pass == "eval") | .metrics.accuracy' "$tmp/a/report.json")
check "within the budget: $acc >= $given - 0.005" \
	jqt -n "$acc >= $given - 0.005 - 1e-12"
check "eval on the split measures what the search did ($evacc)" \
	jqt -n "$evacc == $acc"
check "smaller than given" jqt "($ac | .bytes) < .steps[1].bytes" "$tmp/a/report.json"
check "the plot and the table are written" test -s "$tmp/a/p.svg" -a -s "$tmp/a/t.txt"

check "wrong test labels change no choice (the search never reads test)" \
	cmp "$tmp/a/m.safetensors.zst" "$tmp/w/m.safetensors.zst"
sed -n '/^passes:/,$p' "$tmp/a/r.yaml" > "$tmp/a/passes"
sed -n '/^passes:/,$p' "$tmp/w/r.yaml" > "$tmp/w/passes"
check "... and no pass of the recipe" cmp "$tmp/a/passes" "$tmp/w/passes"

check "max_seconds 0: no candidate, the model as given" \
	jqt "$ac | .candidates == 0 and .timed_out == 1 and .split_accuracy == .split_accuracy_given" \
	"$tmp/z/report.json"
check "max_seconds 0: the log says the time ran out" grep -q "ran out" "$tmp/z/log"

# objective latency: the log says the choice follows timings; the chosen
# model, each uniform recipe within the budget and the model as given are
# timed side by side, and the report holds those figures and the verdict.
check "latency: the log says timings decide" grep -q "depend on timings measured" "$tmp/l/log"
check "latency: timed side by side" grep -q "batch-256 latency, side by side (7 interleaved rounds" "$tmp/l/log"
check "... the chosen, the model as given and a verdict" \
	sh -c "grep -q '^autocompress:   chosen  *[0-9.]* ms' '$tmp/l/log' &&
		grep -q '^autocompress:   as given  *[0-9.]* ms' '$tmp/l/log' &&
		grep -q 'uniform recipe.* meets the budget' '$tmp/l/log'"
meets=$(grep -c '^autocompress: uniform .*meets the budget' "$tmp/l/log")
check "... every uniform recipe within the budget ($meets) in the report" \
	jqt "$ac | ([keys[] | select(startswith(\"duel uniform \"))] | length) == $meets and
		.[\"duel chosen ms\"] > 0 and .[\"duel given ms\"] > 0 and
		(.[\"duel chosen fastest\"] == 0 or .[\"duel chosen fastest\"] == 1)" "$tmp/l/report.json"
OMP_NUM_THREADS=2 "$mcomp" run "$tmp/l/r.yaml" > "$tmp/l/rlog" 2>&1 || { cat "$tmp/l/rlog"; fail=1; }
check "... its recipe makes the same file" cmp "$tmp/l/m.safetensors.zst" "$tmp/l/r.safetensors.zst"

pipeline "$tmp/t" "$good" ""
sed -i 's/data: valid$/data: test/' "$tmp/t/p.yaml"
"$mcomp" validate "$tmp/t/p.yaml" > "$tmp/t/log" 2>&1
st=$?
check "data: test is refused at validation (exit $st)" test "$st" = 2
check "... naming the key" grep -q "autocompress', data: 'test'" "$tmp/t/log"
[ $fail = 0 ] || { cat "$tmp/a/log"; }
exit $fail
