#!/bin/sh
# resume.sh - checkpoints and `mcomp run --resume` on real Fashion-MNIST
# (docs/pipelines.md, "Checkpoints and --resume"): a run of train, gradual
# prune with fine-tuning, and distill (with its scratch comparison, a second
# training run in the pass) is stopped by SIGTERM inside each pass's training
# and resumed; the model file must be byte-identical to an uninterrupted
# run's and the report too, but for the timings and the manifest's
# "resumed". A changed pipeline, other --set overrides, a changed input, a
# damaged or truncated checkpoint and a file that is no checkpoint are
# refused with a message; the checkpoints' state is the same bytes for 1 and
# 3 threads.
set -u
: "${MCOMP_BUILDDIR:?run through make check}" "${MCOMP_SRCDIR:?run through make check}"
mcomp="$MCOMP_BUILDDIR/mcomp"
data=/usr/share/datasets/fashion-mnist
tmp=$(mktemp -d "${TMPDIR:-/tmp}/mcomp-resume-XXXXXX")
trap 'rm -rf "$tmp"' EXIT
. "$MCOMP_SRCDIR/tests/expect.sh"
need_fashion_mnist
env --default-signal=TERM true 2> /dev/null || skip "env has no --default-signal (coreutils < 8.31)"

# The labels are copied: the test changes them to see a changed input refused.
cp "$data/train-labels-idx1-ubyte.gz" "$tmp/labels.gz"
cat > "$tmp/p.yaml" <<EOF
mcomp: 1
seed: 5
data:
  train: {images: $data/train-images-idx3-ubyte.gz, labels: labels.gz, count: 3000}
  test: {idx: $data/t10k, count: 500}
models:
  t: {build: {input: [1, 28, 28], layers: [flatten, {linear: 48}, relu, {dropout: 0.1}, {linear: 10}]}}
  s: {build: {input: [1, 28, 28], layers: [flatten, {linear: 16}, relu, {linear: 10}]}}
passes:
  - train: {model: t, epochs: 3, batch_size: 16, optimizer: sgd, lr: 0.01,
            checkpoint: {every: 1, path: out/ck-train.safetensors}}
  - prune: {model: t, sparsity: 0.6, schedule: gradual, frequency: 50, finetune_epochs: 3,
            batch_size: 16, checkpoint: {path: out/ck-prune.safetensors}}
  - distill: {student: s, teacher: t, epochs: 3, batch_size: 16, compare_scratch: true,
              shift: 1, checkpoint: {path: out/ck-distill.safetensors}}
output: {model: s, path: out/s.safetensors}
report: out/report.json
EOF

# The report without what differs from run to run (latencies, times, the
# thread count mcomp chose for the machine's load) and without the
# manifest's "resumed" entry (a block of seven lines).
figures() {
	sed '/"resumed": {/,/}/d' "$1" | grep -v -E '"(batch1|batch256|[a-z_]*seconds|threads)"|latency'
}

# The uninterrupted run.
expect 0 'wrote .*report.json' "$mcomp" run "$tmp/p.yaml"
cp "$tmp/out/s.safetensors" "$tmp/whole.safetensors"
figures "$tmp/out/report.json" > "$tmp/whole.txt"
[ -s "$tmp/whole.txt" ] && ok || bad "no report from the whole run"

# stop_at PATTERN N: runs from nothing, sends SIGTERM once the log has N
# lines matching PATTERN (a checkpoint written: training goes on a little
# before it stops); then resumes and compares with the whole run.
stop_at() {
	rm -rf "$tmp/out"
	: > "$tmp/log"
	env --default-signal=TERM "$mcomp" run "$tmp/p.yaml" >> "$tmp/log" 2>&1 &
	pid=$!
	n=0
	while [ "$(grep -c -E "$1" "$tmp/log" 2> /dev/null || true)" -lt "$2" ] && [ $n -lt 3000 ] &&
		kill -0 $pid 2> /dev/null; do
		sleep 0.01
		n=$((n + 1))
	done
	kill -s TERM $pid 2> /dev/null
	wait $pid
	rc=$?
	how="SIGTERM after /$1/ x$2"
	if [ $rc = 143 ]; then
		ok
		grep -q 'stopped in epoch' "$tmp/log" ||
			echo "note: $how: the signal came outside a training step; the last periodic checkpoint is used"
	else
		bad "$how: exit $rc, wanted 143: $(cat "$tmp/log")"
	fi
	expect 0 'wrote .*report.json' "$mcomp" run "$tmp/p.yaml" --resume
	printf '%s\n' "$out" | grep -q -E "$3" && ok || bad "$how: the resumed run did not say /$3/: $out"
	cmp "$tmp/whole.safetensors" "$tmp/out/s.safetensors" && ok ||
		bad "$how: the resumed run wrote another model"
	figures "$tmp/out/report.json" > "$tmp/resumed.txt"
	diff "$tmp/whole.txt" "$tmp/resumed.txt" > /dev/null && ok ||
		bad "$how: the resumed report differs: $(diff "$tmp/whole.txt" "$tmp/resumed.txt")"
	grep -q '"resumed": {' "$tmp/out/report.json" && ok || bad "$how: no \"resumed\" in the manifest"
}

stop_at 'train: checkpoint .*epoch 1/3' 1 "pass 1 \('train'\) goes on"
stop_at 'prune: checkpoint .*epoch 1/3' 1 "pass 2 \('prune'\) goes on"
# the second training run of distill: the first is restored, not run again
stop_at 'distill: checkpoint .*training run 2, epoch 1/3' 1 'training run 1 was done before the checkpoint'

# The block is checked like any parameter, each key at its place.
sed 's/checkpoint: {every: 1,/checkpoint: {evry: 1,/' "$tmp/p.yaml" > "$tmp/bad.yaml"
expect 2 "bad.yaml:11:26: unknown key 'evry' in pass 'train', checkpoint; did you mean 'every'\\?" \
	"$mcomp" validate "$tmp/bad.yaml"
sed 's/checkpoint: {every: 1, path: out\/ck-train.safetensors}/checkpoint: out\/ck.safetensors/' \
	"$tmp/p.yaml" > "$tmp/bad.yaml"
expect 2 "bad.yaml:11:25: pass 'train': checkpoint is a block of keys \\(every, path\\)" \
	"$mcomp" validate "$tmp/bad.yaml"
expect 2 "--set passes.train.checkpoint.every: pass 'train': checkpoint.every: 0 is out of range" \
	"$mcomp" validate "$tmp/p.yaml" --set passes.train.checkpoint.every=0
expect 2 "is the same file as pass 'train', checkpoint.path" \
	"$mcomp" validate "$tmp/p.yaml" --set passes.prune.checkpoint.path=out/ck-train.safetensors

# Refusals, against the checkpoints a whole run leaves.
rm -rf "$tmp/out"
expect 0 'wrote .*report.json' "$mcomp" run "$tmp/p.yaml" --quiet
cp "$tmp/p.yaml" "$tmp/p.orig"
sed 's/frequency: 50/frequency: 40/' "$tmp/p.orig" > "$tmp/p.yaml"
expect 2 'made by another pipeline than .*p.yaml: line 12 reads .*frequency: 40.* now, .*frequency: 50.* in the checkpoint' \
	"$mcomp" run "$tmp/p.yaml" --resume
cp "$tmp/p.orig" "$tmp/p.yaml"
expect 2 "made with other --set overrides: 'seed=6' now, none in the checkpoint" \
	"$mcomp" run "$tmp/p.yaml" --resume --set seed=6
printf '\001' >> "$tmp/labels.gz"
expect 2 'the input .*labels.gz changed since the checkpoint was made' \
	"$mcomp" run "$tmp/p.yaml" --resume
cp "$data/train-labels-idx1-ubyte.gz" "$tmp/labels.gz"
ck="$tmp/out/ck-distill.safetensors"
cp "$ck" "$tmp/ck.bak"
size=$(wc -c < "$ck")
printf '\377' | dd of="$ck" bs=1 seek=$((size - 100)) conv=notrunc 2> /dev/null
expect 1 'ck-distill.safetensors: not a whole mcomp checkpoint: its contents do not match the digest' \
	"$mcomp" run "$tmp/p.yaml" --resume
head -c 2000 "$tmp/ck.bak" > "$ck"
expect 1 'ck-distill.safetensors: .*truncated' "$mcomp" run "$tmp/p.yaml" --resume
cp "$tmp/out/s.safetensors" "$ck"
expect 2 'ck-distill.safetensors: not an mcomp checkpoint' "$mcomp" run "$tmp/p.yaml" --resume
cp "$tmp/ck.bak" "$ck"
expect 2 'no pass sets checkpoint.path' "$MCOMP_BUILDDIR/mcomp" run "$MCOMP_SRCDIR/pipelines/quickstart.yaml" --resume
# Nothing there yet: the run starts from the beginning and says so.
rm -rf "$tmp/out"
expect 0 'no checkpoint at .*ck-train.safetensors yet; running from the start' \
	"$mcomp" run "$tmp/p.yaml" --resume
cmp "$tmp/whole.safetensors" "$tmp/out/s.safetensors" && ok || bad "a --resume from nothing wrote another model"
# Checkpoints are the run's state, not its results: the report lists none.
sed -n '/"outputs": \[/,/\]/p' "$tmp/out/report.json" | grep -q 'ck-' &&
	bad "the report lists a checkpoint among the outputs" || ok

# state FILE: digests of a checkpoint's tensor bytes and of its
# "mcomp.checkpoint" (the rest, "mcomp.report", holds the rows' timings).
state() {
	n=$(od -An -tu8 -N8 "$1" | tr -d ' ')
	tail -c +$((9 + n)) "$1" | sha256sum | cut -d' ' -f1
	head -c $((8 + n)) "$1" | tail -c "$n" |
		grep -o '"mcomp\.checkpoint":"\([^"\\]\|\\.\)*"' | sha256sum | cut -d' ' -f1
}
for t in 1 3; do
	rm -rf "$tmp/out"
	OMP_NUM_THREADS=$t "$mcomp" run "$tmp/p.yaml" --quiet > /dev/null 2>&1 || bad "$t threads: the run failed"
	for f in train prune distill; do
		state "$tmp/out/ck-$f.safetensors" > "$tmp/state-$f-$t"
	done
done
for f in train prune distill; do
	[ "$(wc -c < "$tmp/state-$f-1")" -gt 0 ] && cmp "$tmp/state-$f-1" "$tmp/state-$f-3" && ok ||
		bad "the $f checkpoint's state differs between 1 and 3 threads"
done
finish
