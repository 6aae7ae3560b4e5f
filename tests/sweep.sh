#!/bin/sh
# sweep.sh - mcomp sweep in one process, on real Fashion-MNIST (SKIP without
# it): the merged table and JSON against the same settings run one by one
# with mcomp run (the same model bytes, the same figures), every combination
# of two lists in order, distinct files per run, usage errors (exit 2), and a
# run that fails: the sweep stops with its number and setting, exit status of
# the failure, and the previous sweep's JSON as it was.
set -u
: "${MCOMP_BUILDDIR:?run through make check}" "${MCOMP_SRCDIR:?run through make check}"
mcomp="$MCOMP_BUILDDIR/mcomp"
data=/usr/share/datasets/fashion-mnist
tmp=$(mktemp -d "${TMPDIR:-/tmp}/mcomp-sweep-XXXXXX")
trap 'rm -rf "$tmp"' EXIT
. "$MCOMP_SRCDIR/tests/expect.sh"
need_fashion_mnist
command -v jq > /dev/null 2>&1 || skip "no jq (apt-get install jq)"
export OMP_NUM_THREADS=1

cat > "$tmp/tiny.yaml" << EOF2
mcomp: 1
seed: 7
data:
  train: {idx: $data/train, count: 2000}
  test:  {idx: $data/t10k, count: 500}
models:
  mlp:
    build: {input: [1, 28, 28], layers: [flatten, {linear: 32}, relu, {linear: 10}]}
passes:
  - train: {model: mlp, epochs: 1, batch_size: 64, optimizer: adam, lr: 0.001}
  - eval:  {model: mlp}
output: {model: mlp, path: out/tiny.safetensors}
report: out/tiny-report.json
EOF2
grep -v '^report:' "$tmp/tiny.yaml" > "$tmp/noreport.yaml"

expect 2 "sweep needs a pipeline file" "$mcomp" sweep
expect 2 "--set needs KEY=V1,V2" "$mcomp" sweep "$tmp/tiny.yaml" --set seed
expect 2 "unknown or incomplete option '--bogus'" "$mcomp" sweep "$tmp/tiny.yaml" --bogus
expect 2 "run #2 \(seed=x\): .*seed" "$mcomp" sweep "$tmp/tiny.yaml" --set seed=1,x
expect 2 "writes no report" "$mcomp" sweep "$tmp/noreport.yaml" --set seed=1,2
[ ! -e "$tmp/out" ] && ok || bad "a refused sweep wrote $(ls "$tmp/out")"

# Three seeds, then each alone with mcomp run.
if "$mcomp" sweep -q "$tmp/tiny.yaml" --set seed=1,2,3 > "$tmp/table.txt" 2> "$tmp/sweep.err"; then
	ok
else
	bad "sweep seed=1,2,3: $(cat "$tmp/sweep.err")"
fi
json="$tmp/out/tiny-report.sweep.json"
[ "$(jq -r '[.runs[].setting.seed] | join(",")' "$json" 2>&1)" = 1,2,3 ] && ok ||
	bad "sweep JSON settings: $(cat "$json")"
row() { # row FIGURE: the table's row for FIGURE, its name left out
	awk -v f="$1" '$1 == f { $1 = ""; print substr($0, 2) }' "$tmp/table.txt"
}
acc_row="" loss_row=""
for s in 1 2 3; do
	"$mcomp" run -q "$tmp/tiny.yaml" --set seed=$s --set output.path="$tmp/one$s.safetensors" \
		--set report="$tmp/one$s.json" > /dev/null 2>&1 || bad "run seed=$s failed"
	cmp -s "$tmp/one$s.safetensors" "$tmp/out/tiny.sweep$s.safetensors" && ok ||
		bad "run #$s of the sweep: another model than mcomp run --set seed=$s"
	[ -f "$tmp/out/tiny-report.sweep$s.json" ] && ok || bad "no report of run #$s"
	acc_row="$acc_row $(printf '%.10g' "$(jq '.steps[-1].accuracy' "$tmp/one$s.json")")"
	loss_row="$loss_row $(printf '%.10g' "$(jq '.steps[1].metrics.train_loss' "$tmp/one$s.json")")"
	same=$(jq -n --slurpfile a "$json" --slurpfile b "$tmp/one$s.json" \
		"\$a[0].runs[$s - 1].metrics[\"2:eval.loss\"] == \$b[0].steps[2].metrics.loss")
	[ "$same" = true ] && ok || bad "run #$s: eval loss in the JSON is not mcomp run's"
done
# the runs' columns, then mean, min and max
set -- $(row accuracy)
[ " $1 $2 $3" = "$acc_row" ] && ok || bad "accuracy row '$*', runs one by one:$acc_row"
min=$(printf '%s\n' $acc_row | sort -g | head -1) max=$(printf '%s\n' $acc_row | sort -g | tail -1)
[ "$5 $6" = "$min $max" ] && ok || bad "accuracy min, max '$5 $6', wanted '$min $max'"
mean=$(jq '.summary.accuracy.mean' "$json")
awk -v m="$mean" -v a="$1" -v b="$2" -v c="$3" 'BEGIN { d = m - (a + b + c) / 3; exit !(d < 1e-12 && d > -1e-12) }' &&
	ok || bad "accuracy mean $mean of $acc_row"
set -- $(row 1:train.train_loss)
[ " $1 $2 $3" = "$loss_row" ] && ok || bad "train loss row '$*', runs one by one:$loss_row"
# the training loop's own time: in each report, within its step's; a
# timing, so in the sweep's JSON but not in its table
[ "$(jq '.steps[1] | .metrics.train_seconds > 0 and .metrics.train_seconds < .seconds' \
	"$tmp/one1.json")" = true ] && ok || bad "train_seconds: $(jq -c '.steps[1]' "$tmp/one1.json")"
[ "$(jq '.runs[0].metrics | has("1:train.train_seconds")' "$json")" = true ] && [ -z "$(row 1:train.train_seconds)" ] &&
	ok || bad "train_seconds: in the sweep's table, or not in its JSON"

# Two lists: every combination, the last varying fastest.
expect 0 "#4 +seed=2 passes.train.lr=0.01" "$mcomp" sweep -q "$tmp/tiny.yaml" --set seed=1,2 \
	--set passes.train.lr=0.001,0.01 --set data.train.count=500 --json "$tmp/two.json"
[ "$(jq -r '[.runs[] | .setting.seed + "/" + .setting["passes.train.lr"]] | join(" ")' \
	"$tmp/two.json")" = "1/0.001 1/0.01 2/0.001 2/0.01" ] && ok || bad "combinations: $(cat "$tmp/two.json")"

# A run that fails (a last layer too small for the labels): the sweep stops
# there, says which run, and leaves the JSON of the sweep before as it was.
sum=$(cksum < "$json")
expect 2 "run #2 \(models.mlp.build.layers.3.linear=5\) failed: .*label" "$mcomp" sweep -q \
	"$tmp/tiny.yaml" --set models.mlp.build.layers.3.linear=10,5,10
[ "$(cksum < "$json")" = "$sum" ] && ok || bad "a failed sweep changed $json"
finish
