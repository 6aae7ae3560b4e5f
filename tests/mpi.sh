#!/bin/sh
# mpi.sh - mcomp over MPI ranks (SKIP in a build without MPI, or with no
# mpirun or Fashion-MNIST): mpirun -np 2 and -np 3 sweeps print the same
# table as the sweep in one process and write the same model bytes; the JSON
# says which rank ran what; mpirun -np 1, 2, 3 mcomp run trains the same
# model bytes as a run without mpirun, and so do -np 1, 2, 4 with
# grad_groups: 4 on a CNN with batch norm and dropout, and -np 1, 2, 3 with
# grad_groups: 6 in distill, ensemble-distill, prune's and cluster's
# fine-tuning and qat
# (prune's sensitivity table split over the ranks); a grad_groups the ranks
# or the batch do not divide is refused at validation; a run failing on
# rank 1 and a rank killed with SIGKILL stop the job with a message naming
# the rank, a non-zero status, and the previous files as they were.
set -u
: "${MCOMP_BUILDDIR:?run through make check}" "${MCOMP_SRCDIR:?run through make check}"
mcomp="$MCOMP_BUILDDIR/mcomp"
data=/usr/share/datasets/fashion-mnist
tmp=$(mktemp -d "${TMPDIR:-/tmp}/mcomp-mpi-XXXXXX")
trap 'rm -rf "$tmp"' EXIT
. "$MCOMP_SRCDIR/tests/expect.sh"
"$mcomp" help | grep -q '^MPI: built in' || skip "mcomp built without MPI (configure --with-mpi)"
command -v mpirun > /dev/null 2>&1 || skip "no mpirun (apt-get install openmpi-bin)"
need_fashion_mnist
command -v jq > /dev/null 2>&1 || skip "no jq (apt-get install jq)"
export OMP_NUM_THREADS=1
# Open MPI refuses root unless told; CI runs as root.
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
# Under make check-sanitize: Open MPI 4.1 leaves allocations of its own at
# MPI_Finalize, most in components it has dlclose'd by then, so LeakSanitizer
# cannot name them and scripts/lsan.supp cannot match them. Leaks are not
# checked in the processes mpirun starts (every other test checks mcomp's);
# ASan's other checks and UBSan still run.
case ${ASAN_OPTIONS:-} in *detect_leaks=1*) export ASAN_OPTIONS="$ASAN_OPTIONS:detect_leaks=0" ;; esac
mpi() { mpirun --oversubscribe --bind-to none -np "$@"; }
q=-q
runp() { # runp FILE NAME [--set K=V]... [CMD ARGS...]: mcomp run $q FILE under CMD into $tmp/NAME.*
	file=$1 name=$2 sets=
	shift 2
	while [ "${1:-}" = --set ]; do
		sets="$sets $1 $2"
		shift 2
	done
	"$@" "$mcomp" run $q "$file" $sets --set output.path="$tmp/$name.safetensors" \
		--set report="$tmp/$name.json" > "$tmp/$name.out" 2> "$tmp/$name.err" ||
		bad "$name: exit $?: $(cat "$tmp/$name.err")"
}
same() { # same FILE NAME NP...: mpirun -np NP writes the model of the run without mpirun
	same_file=$1 same_name=$2
	shift 2
	runp "$same_file" "$same_name"
	for np; do
		runp "$same_file" "$same_name$np" mpi $np
		cmp -s "$tmp/$same_name.safetensors" "$tmp/$same_name$np.safetensors" && ok ||
			bad "$same_name, mpirun -np $np: another model than without mpirun"
	done
}
refused() { # refused FILE NP PATTERN [--set K=V]...: mpirun -np NP exits 2 saying PATTERN
	file=$1 np=$2 pat=$3
	shift 3
	mpi $np "$mcomp" run -q "$file" "$@" --set output.path="$tmp/refused.safetensors" \
		--set report="$tmp/refused.json" > /dev/null 2> "$tmp/refused.err"
	code=$?
	[ $code = 2 ] && ok || bad "$file on $np ranks: exit $code, not 2"
	grep -q "$pat" "$tmp/refused.err" && ok || bad "$file on $np ranks: $(cat "$tmp/refused.err")"
	[ ! -e "$tmp/refused.safetensors" ] && ok || bad "$file on $np ranks: a refused run wrote"
}

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
json="$tmp/out/tiny-report.sweep.json"
sweep="sweep -q $tmp/tiny.yaml --set seed=1,2,3,4"

"$mcomp" $sweep > "$tmp/seq.txt" 2> "$tmp/seq.err" || bad "sweep in one process: $(cat "$tmp/seq.err")"
cksum "$tmp"/out/tiny.sweep*.safetensors | sed "s|$tmp/||" > "$tmp/seq.sum"
for np in 2 3; do
	if mpi $np "$mcomp" $sweep > "$tmp/np$np.txt" 2> "$tmp/np$np.err"; then
		ok
	else
		bad "mpirun -np $np sweep: $(cat "$tmp/np$np.err")"
	fi
	cmp -s "$tmp/seq.txt" "$tmp/np$np.txt" && ok ||
		bad "-np $np: another table: $(diff "$tmp/seq.txt" "$tmp/np$np.txt")"
	cksum "$tmp"/out/tiny.sweep*.safetensors | sed "s|$tmp/||" | cmp -s - "$tmp/seq.sum" && ok ||
		bad "-np $np: other model bytes than in one process"
	want=$([ $np = 2 ] && echo "2 0,1,0,1" || echo "3 0,1,2,0")
	[ "$(jq -r '"\(.ranks) \([.runs[].rank] | join(","))"' "$json")" = "$want" ] && ok ||
		bad "-np $np: ranks in the JSON: $(jq -c '[.ranks, [.runs[].rank]]' "$json")"
done

# Data-parallel training: the same model bytes for 1, 2 and 3 ranks as
# without mpirun, with the blocked GEMM kernel of this CPU and the portable
# one; rank 0 alone writes, and the manifest says how many ranks.
sed -e 's/{linear: 32}/{linear: 64}, relu, {linear: 32}/' -e 's/count: 2000/count: 1000/' \
	"$tmp/tiny.yaml" > "$tmp/dp.yaml"
dp() { # dp NAME [--set ...] [MPIRUN ARGS...]: runs dp.yaml into $tmp/NAME.*
	name=$1
	shift
	runp "$tmp/dp.yaml" "$name" "$@"
}
same "$tmp/dp.yaml" plain 1 2 3
for np in 1 2 3; do
	[ "$(jq .manifest.ranks "$tmp/plain$np.json")" = $np ] && ok || bad "-np $np: manifest ranks"
	[ "$(grep -c '^wrote' "$tmp/plain$np.out")" = 2 ] && ok ||
		bad "-np $np: $(cat "$tmp/plain$np.out")"
done
# The report's rows: the test accuracy, shared out over the ranks, is the
# plain run's to the bit; rank 0 timed the forwards.
acc='[.steps[].accuracy]'
[ "$(jq -c "$acc" "$tmp/plain3.json")" = "$(jq -c "$acc" "$tmp/plain.json")" ] && ok ||
	bad "-np 3: the rows' accuracies differ: $(jq -c "$acc" "$tmp/plain.json" "$tmp/plain3.json")"
jq -e '[.steps[].latency_ms | .batch1 > 0 and .batch256 > 0] | all' "$tmp/plain3.json" > /dev/null &&
	ok || bad "-np 3: a row without latencies: $(jq -c '[.steps[].latency_ms]' "$tmp/plain3.json")"
dp portable env MCOMP_GEMM=portable mpirun --oversubscribe --bind-to none -x MCOMP_GEMM -np 2
cmp -s "$tmp/plain.safetensors" "$tmp/portable.safetensors" && ok ||
	bad "mpirun -np 2 with MCOMP_GEMM=portable: another model"

# Ctrl-C (mpirun passes it on): every rank stops after the same step, rank
# 0 writes the checkpoint, and --resume on 2 ranks ends in the bytes of the
# run that never stopped. The run is long (400 epochs, a few seconds) because
# mpirun takes up to 2 s to pass the signal on: a run of 60 epochs ended
# first on a fast machine.
long_epochs=400
ck="--set passes.train.epochs=$long_epochs --set passes.train.checkpoint.path=$tmp/ck.bin"
dp long $ck
rm -f "$tmp/ck.bin"
mpirun --oversubscribe --bind-to none -np 2 "$mcomp" run -q "$tmp/dp.yaml" $ck \
	--set output.path="$tmp/resumed.safetensors" --set report="$tmp/resumed.json" \
	> "$tmp/int.out" 2> "$tmp/int.err" &
job=$!
for i in $(seq 1 100); do
	[ -f "$tmp/ck.bin" ] && break
	sleep 0.1
done
kill -INT $job
wait $job
[ $? != 0 ] && ok || bad "SIGINT to mpirun: exit 0 (the run ended first?)"
grep -q "stopped at a safe point" "$tmp/int.err" && ok || bad "SIGINT: $(cat "$tmp/int.err")"
[ ! -e "$tmp/resumed.safetensors" ] && ok || bad "an interrupted run wrote its model"
mpirun --oversubscribe --bind-to none -np 2 "$mcomp" run -q "$tmp/dp.yaml" $ck --resume \
	--set output.path="$tmp/resumed.safetensors" --set report="$tmp/resumed.json" \
	> /dev/null 2> "$tmp/res.err" || bad "--resume on 2 ranks: $(cat "$tmp/res.err")"
cmp -s "$tmp/long.safetensors" "$tmp/resumed.safetensors" && ok ||
	bad "interrupted and resumed on 2 ranks: another model than the run that never stopped"

# grad_groups: a CNN with batch norm and dropout, every layer split over the
# ranks by groups of samples: -np 1, 2 and 4 write the bytes of the run
# without mpirun (a last batch of 40 in groups of 10 included); 3 ranks,
# which do not divide 4 groups, are refused at validation; interrupted on
# 2 ranks and resumed, the run ends in the bytes of the one that never stopped.
cat > "$tmp/cnn.yaml" << EOF2
mcomp: 1
seed: 7
data:
  train: {idx: $data/train, count: 680}
  test:  {idx: $data/t10k, count: 200}
models:
  cnn:
    build:
      input: [1, 28, 28]
      layers: [{conv2d: 6}, {batchnorm: {}}, relu, {maxpool2d: 2}, {conv2d: 8}, relu,
               {maxpool2d: 2}, flatten, {linear: 32}, relu, {dropout: 0.2}, {linear: 10}]
passes:
  - train: {model: cnn, epochs: 1, batch_size: 64, optimizer: adam, lr: 0.004, grad_groups: 4}
output: {model: cnn, path: out/cnn.safetensors}
report: out/cnn-report.json
EOF2
same "$tmp/cnn.yaml" grouped 1 2 4
refused "$tmp/cnn.yaml" 3 "cnn.yaml:[0-9]*:[0-9]*: .*grad_groups: 3 ranks do not divide grad_groups 4"
ck="--set passes.train.epochs=$long_epochs --set passes.train.grad_groups=4"
ck="$ck --set passes.train.checkpoint.path=$tmp/gck.bin"
dp glong $ck
rm -f "$tmp/gck.bin"
mpirun --oversubscribe --bind-to none -np 2 "$mcomp" run -q "$tmp/dp.yaml" $ck \
	--set output.path="$tmp/gres.safetensors" --set report="$tmp/gres.json" \
	> "$tmp/gint.out" 2> "$tmp/gint.err" &
job=$!
for i in $(seq 1 100); do
	[ -f "$tmp/gck.bin" ] && break
	sleep 0.1
done
kill -INT $job
wait $job
[ $? != 0 ] && ok || bad "grad_groups: SIGINT to mpirun: exit 0 (the run ended first?)"
mpirun --oversubscribe --bind-to none -np 2 "$mcomp" run -q "$tmp/dp.yaml" $ck --resume \
	--set output.path="$tmp/gres.safetensors" --set report="$tmp/gres.json" \
	> /dev/null 2> "$tmp/gres.err" || bad "grad_groups: --resume on 2 ranks: $(cat "$tmp/gres.err")"
cmp -s "$tmp/glong.safetensors" "$tmp/gres.safetensors" && ok ||
	bad "grad_groups: interrupted and resumed on 2 ranks: another model than the run that never stopped"

# grad_groups in the passes that train besides train: distill (the
# teacher's targets computed once, each rank a share of the split), then
# ensemble-distill on shifted images (the teachers run per group, each rank
# on its own), and prune's sensitivity table (each rank a share of the
# points), its fine-tuning, cluster's and qat: -np 1, 2 and 3 write the bytes of the run
# without mpirun, and the table is the same.
cat > "$tmp/kd.yaml" << EOF2
mcomp: 1
seed: 7
data:
  train: {idx: $data/train, count: 480}
  test:  {idx: $data/t10k, count: 100}
models:
  cnn:
    build:
      input: [1, 28, 28]
      layers: [{conv2d: 4}, {batchnorm: {}}, relu, {maxpool2d: 4}, flatten, {linear: 16}, relu,
               {dropout: 0.2}, {linear: 10}]
  mlp:
    build: {input: [1, 28, 28], layers: [flatten, {linear: 16}, relu, {linear: 10}]}
  student:
    build:
      input: [1, 28, 28]
      layers: [flatten, {linear: 32}, {batchnorm: {}}, relu, {dropout: 0.2}, {linear: 10}]
passes:
  - train: {model: cnn, epochs: 1, batch_size: 48, lr: 0.004, grad_groups: 6}
  - train: {model: mlp, epochs: 1, batch_size: 48, lr: 0.004}
  - distill: {student: student, teacher: cnn, epochs: 2, batch_size: 48, lr: 0.003, grad_groups: 6}
  - ensemble-distill: {student: student, teachers: [cnn, mlp], epochs: 1, batch_size: 48,
                       lr: 0.001, shift: 1, grad_groups: 6}
output: {model: student, path: out/kd.safetensors}
report: out/kd.json
EOF2
sed -e '/^  mlp:/,$d' "$tmp/kd.yaml" > "$tmp/prune.yaml"
cat >> "$tmp/prune.yaml" << EOF2
passes:
  - train: {model: cnn, epochs: 1, batch_size: 48, lr: 0.004}
  - prune: {model: cnn, mode: sensitivity, levels: [0.5, 0.9], eval_data: test}
  - prune: {model: cnn, sparsity: 0.8, schedule: gradual, frequency: 3, finetune_epochs: 1,
            batch_size: 48, lr: 0.002, grad_groups: 6}
  - cluster: {model: cnn, bits: 4, finetune_epochs: 1, batch_size: 48, grad_groups: 6}
  - quantize: {model: cnn, mode: qat, activations: learned, epochs: 1, batch_size: 48,
               lr: 0.001, grad_groups: 6}
output: {model: cnn, path: out/prune.safetensors}
report: out/prune.json
EOF2
q= # the log says how the targets were computed
same "$tmp/kd.yaml" kd 1 2 3
q=-q
grep -q "computed once for 480 samples (.*), shared out over the ranks" "$tmp/kd3.err" && ok ||
	bad "distill on 3 ranks: the targets were not shared out: $(cat "$tmp/kd3.err")"
same "$tmp/prune.yaml" prune 1 2 3
table='.steps[] | select(.pass == "prune" and .metrics.sensitivity_base_accuracy) | .metrics'
[ "$(jq -c "$table" "$tmp/prune.json")" = "$(jq -c "$table" "$tmp/prune3.json")" ] &&
	[ "$(jq -c "$table | length" "$tmp/prune.json")" = 7 ] && ok ||
	bad "sensitivity on 3 ranks: $(jq -c "$table" "$tmp/prune.json" "$tmp/prune3.json")"
# Static quantization's calibration: the forwards shared out over the ranks
# in blocks of 256 samples (600: three blocks, one a rank on 3), the
# activations gathered; a percentile range needs every value.
cat > "$tmp/calib.yaml" << EOF2
mcomp: 1
seed: 7
data:
  train: {idx: $data/train, count: 480}
  calib: {idx: $data/train, first: 1000, count: 600}
models:
  cnn:
    build:
      input: [1, 28, 28]
      layers: [{conv2d: 4}, relu, {maxpool2d: 4}, flatten, {linear: 16}, relu, {linear: 10}]
passes:
  - train: {model: cnn, epochs: 1, batch_size: 48, lr: 0.004}
  - quantize: {model: cnn, bits: 8, mode: static, calibration_data: calib, samples: 600,
               calibration: percentile, percentile: 99.9}
output: {model: cnn, path: out/calib.safetensors}
report: out/calib.json
EOF2
q=
same "$tmp/calib.yaml" calib 1 2 3
q=-q
grep -q "calibrated on 600 samples of 'calib' (percentile), shared out over the ranks" \
	"$tmp/calib3.err" && ok || bad "calibration on 3 ranks was not shared out: $(cat "$tmp/calib3.err")"
refused "$tmp/kd.yaml" 1 "grad_groups: pass 'distill', grad_groups: 5 groups do not divide batch_size 48 into equal groups; set grad_groups to a divisor of 48" \
	--set passes.distill.grad_groups=5
refused "$tmp/prune.yaml" 4 "prune.yaml:[0-9]*:[0-9]*: pass 'prune', grad_groups: 4 ranks do not divide grad_groups 6"

# A rank failing at the start (a memory limit its data set does not fit)
# stops the job, naming the rank; the previous model stays.
cp "$tmp/plain.safetensors" "$tmp/keep.safetensors"
sum=$(cksum < "$tmp/keep.safetensors")
out=$(mpirun --oversubscribe --bind-to none -np 1 "$mcomp" run -q "$tmp/dp.yaml" \
	--set output.path="$tmp/keep.safetensors" --set report="$tmp/keep.json" : \
	-np 1 -x MCOMP_MAX_MEMORY=64K "$mcomp" run -q "$tmp/dp.yaml" \
	--set output.path="$tmp/keep.safetensors" --set report="$tmp/keep.json" 2>&1)
[ $? != 0 ] && ok || bad "a failing rank 1: exit 0"
printf '%s\n' "$out" | grep -q "mcomp: rank 1 of 2: .*64" && ok ||
	bad "a failing rank 1 was not named: $out"
[ "$(cksum < "$tmp/keep.safetensors")" = "$sum" ] && ok || bad "a failed run changed the model"

# A run failing on rank 1 (a last layer too small for the labels).
sum=$(cksum < "$json")
out=$(mpi 2 "$mcomp" sweep -q "$tmp/tiny.yaml" --set models.mlp.build.layers.3.linear=10,5 2>&1)
[ $? != 0 ] && ok || bad "a failing run on rank 1: exit 0"
printf '%s\n' "$out" | grep -q "rank 1 of 2: run #2 (models.mlp.build.layers.3.linear=5) failed: .*label" &&
	ok || bad "a failing run on rank 1 was not named: $out"
[ "$(cksum < "$json")" = "$sum" ] && ok || bad "a failed sweep changed $json"

# Rank 1 killed (SIGKILL) in the middle of a long sweep, then of a long
# data-parallel run.
killer() { # killer WHAT: kills rank 1 of the mpirun $job
	what=$1
victim=
for i in $(seq 1 100); do
	for p in $(ps -o pid= --ppid $job 2> /dev/null); do
		tr '\0' '\n' < /proc/$p/environ 2> /dev/null | grep -q '^OMPI_COMM_WORLD_RANK=1$' &&
			victim=$p
	done
	[ -n "$victim" ] && break
	sleep 0.2
done
if [ -z "$victim" ]; then
	kill $job 2> /dev/null
	wait $job
	bad "$what: rank 1 of the job never started"
	return
fi
sleep 1
kill -KILL "$victim"
wait $job
code=$?
[ $code != 0 ] && ok || bad "$what: rank 1 killed: the job exited 0"
grep -q "rank 1 .*signal 9" "$tmp/kill.err" && ok ||
	bad "$what: rank 1 killed: no message naming it: $(cat "$tmp/kill.err")"
}
mpirun --oversubscribe --bind-to none -np 2 "$mcomp" sweep -q "$tmp/tiny.yaml" \
	--set passes.train.epochs=1000 --set seed=1,2 > "$tmp/kill.out" 2> "$tmp/kill.err" &
job=$!
killer sweep
[ "$(cksum < "$json")" = "$sum" ] && ok || bad "a killed sweep changed $json"
[ ! -s "$tmp/kill.out" ] && ok || bad "a killed sweep printed a table: $(cat "$tmp/kill.out")"
sum=$(cksum < "$tmp/keep.safetensors")
mpirun --oversubscribe --bind-to none -np 2 "$mcomp" run -q "$tmp/dp.yaml" \
	--set passes.train.epochs=1000 --set output.path="$tmp/keep.safetensors" \
	--set report="$tmp/keep.json" > "$tmp/kill.out" 2> "$tmp/kill.err" &
job=$!
killer run
[ "$(cksum < "$tmp/keep.safetensors")" = "$sum" ] && ok || bad "a killed run changed the model"
ls "$tmp" | grep -q '^\.keep' && bad "a killed run left a temporary file: $(ls -a "$tmp")" || ok
finish
