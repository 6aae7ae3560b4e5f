#!/bin/sh
# SPDX-License-Identifier: MIT
#
# bench/run.sh - mcomp measured against its peers, side by side, in one run.
#
#	sh bench/run.sh [all|gemm|train|sparse|quantize|memory|ort|scaling|contention]...
#	(default: all but scaling and contention)
#
# gemm     square f32 GEMM GFLOP/s (mcomp, OpenBLAS with OPENBLAS_CORETYPE as
#          the environment has it and unset) and mcomp's int8 GEMM GOP/s, with
#          full-range and 7-bit (reduce_range) weights
# train    MLP, student (784-64-10) and CNN training samples/s and inference latency at batch 1 and
#          256, against PyTorch in each configuration of OMP_WAIT_POLICY
#          (unset, PASSIVE) and OPENBLAS_CORETYPE (as the environment has it,
#          unset); the ratio is against PyTorch's best configuration per metric
# sparse   MLP inference latency at 0/80/90/95% sparsity, dense GEMM against
#          the CSR kernel the linear op switches to for very sparse weights
# quantize the quantize-mlp-int8-static recipe (2 epochs) against PyTorch's
#          quantize_dynamic on the same MLP: accuracy, bytes, latency
# memory   peak memory growth of a whole-data-set MLP epoch against the data
#          set + weights + Adam state + one batch's activations (target < 2x)
# ort      MLP, student and CNN inference latency, f32 and int8, batch 1 and
#          256, against ONNX Runtime (onnxruntime-node from tests/node) on the
#          same models exported by mcomp; target <= 1.0x ONNX Runtime's; and
#          the same figures, without a target, for the MobileNetV2 and the
#          ResNet-14 of pipelines/mobilenetv2.yaml and resnet-teacher.yaml
# scaling  GEMM and MLP training at 1, 2, ... N threads (N = nproc): speedup
#          and efficiency (not part of the default run)
# contention  MLP and CNN training and batch-1 latency, mcomp and PyTorch,
#          idle and beside 1 and 2 busy processes pinned to their CPUs
#          (BENCH_CPUS, default the first BENCH_THREADS of the affinity
#          mask); ratios against idle (not part of the default run)
# all      every part
#
# Every figure is the median of BENCH_ROUNDS interleaved rounds (each itself
# a median of repeated timings), and each ratio compares figures taken in the
# same run, so that other load on the machine hits both sides alike.
#
# Environment: MCOMP_BUILDDIR (where bench/bench_gemm is; `make bench` sets
# it), BENCH_THREADS (2), BENCH_ROUNDS (3 for gemm, 2 for train),
# BENCH_DATA (/usr/share/datasets/fashion-mnist; random data when absent),
# BENCH_PYTHON (/usr/bin/python3, Debian's python3-torch), BENCH_SIZES
# (256 512 1024 2048), BENCH_MAX_THREADS (nproc), BENCH_SCALING_SIZE (2048),
# BENCH_INSTALL (1: install a missing peer with apt-get when root; 0: skip it).
#
# OpenBLAS (libopenblas0) and PyTorch (python3-torch) are benchmark-only
# dependencies: installed here when missing and running as root, else their
# comparison is skipped with a message.
set -u

here=$(cd "$(dirname "$0")" && pwd)
SRCDIR=${MCOMP_SRCDIR:-$(dirname "$here")}
BUILDDIR=${MCOMP_BUILDDIR:-$SRCDIR}
THREADS=${BENCH_THREADS:-2}
DATA=${BENCH_DATA:-/usr/share/datasets/fashion-mnist}
PY=${BENCH_PYTHON:-/usr/bin/python3}
SIZES=${BENCH_SIZES:-256 512 1024 2048}
MAXT=${BENCH_MAX_THREADS:-$(nproc 2>/dev/null || echo 2)}
SCALE_SIZE=${BENCH_SCALING_SIZE:-2048}
INSTALL=${BENCH_INSTALL:-1}
GEMM=$BUILDDIR/bench/bench_gemm
TRAIN=$BUILDDIR/bench/bench_train
PEER=$SRCDIR/bench/torch_peer.py
# "As the environment has it": this workplace sets OPENBLAS_CORETYPE=Haswell;
# where nothing sets it, that setting is what is compared.
ENVCORE=${OPENBLAS_CORETYPE:-Haswell}

tmp=$(mktemp -d "${TMPDIR:-/tmp}/mcomp-bench.XXXXXX") || exit 1
[ -n "${BENCH_KEEP:-}" ] || trap 'rm -rf "$tmp"' EXIT INT TERM
RES=$tmp/results
: >"$RES"

for p in "$GEMM" "$TRAIN"; do
	if [ ! -x "$p" ]; then
		echo "run.sh: $p is not built; run 'make bench' (or set MCOMP_BUILDDIR)" >&2
		exit 2
	fi
done

# ---------------------------------------------------------------- helpers

# measure TAG SHOW COMMAND...: runs COMMAND, files its "RESULT metric value"
# lines under TAG, shows its INFO lines when SHOW is 1, and its errors.
measure() {
	tag=$1
	show=$2
	shift 2
	"$@" >"$tmp/out" 2>"$tmp/err"
	rc=$?
	sed -n "s/^RESULT /$tag /p" "$tmp/out" >>"$RES"
	if [ "$show" = 1 ]; then
		sed -n "s/^INFO /  [$tag] /p" "$tmp/out"
	fi
	if [ $rc -ne 0 ] && [ "$show" = 1 ]; then
		echo "  [$tag] failed (exit $rc): $(head -c 300 "$tmp/err")"
	fi
	return $rc
}

# med TAG METRIC: the median of the figures filed, or nothing.
med() {
	awk -v t="$1" -v m="$2" '$1 == t && $2 == m { print $3 }' "$RES" | sort -g |
		awk '{ v[NR] = $1 } END { if (NR) printf "%.6g\n", NR % 2 ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }'
}

# best max|min METRIC TAG...: the best median among TAGs and its tag.
best() {
	dir=$1
	m=$2
	shift 2
	for t in "$@"; do
		v=$(med "$t" "$m")
		[ -n "$v" ] && echo "$v $t"
	done | sort -g | if [ "$dir" = max ]; then tail -n 1; else head -n 1; fi
}

# ratio A B: A / B with two decimals, or "-".
ratio() {
	if [ -n "$1" ] && [ -n "$2" ]; then
		awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.2f", a / b; else print "-" }'
	else
		echo "-"
	fi
}

# verdict RATIO ge|le TARGET: pass, miss, or n/a.
verdict() {
	if [ "$1" = - ]; then
		echo "n/a"
	else
		awk -v r="$1" -v op="$2" -v t="$3" \
			'BEGIN { ok = op == "ge" ? r >= t : r <= t; print ok ? "pass" : "miss" }'
	fi
}

fmt() { # fmt VALUE: the value or "-"
	if [ -n "$1" ]; then echo "$1"; else echo "-"; fi
}

SUMMARY=$tmp/summary
: >"$SUMMARY"
# target NAME MCOMP PEER RATIO OP TARGET: a row of the final table.
target() {
	printf '%-48s %12s %12s %7s %8s  %s\n' "$1" "$(fmt "$2")" "$(fmt "$3")" "$4" \
		"$([ "$5" = ge ] && echo ">=" || echo "<=") $6" "$(verdict "$4" "$5" "$6")" >>"$SUMMARY"
}

# install_pkg PACKAGE: apt-get install it when allowed and root; 0 on success.
install_pkg() {
	if [ "$INSTALL" != 1 ] || [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null; then
		return 1
	fi
	echo "  installing $1 (a benchmark-only dependency) ..."
	DEBIAN_FRONTEND=noninteractive apt-get install -y -q "$1" >"$tmp/apt" 2>&1 ||
		{ DEBIAN_FRONTEND=noninteractive apt-get update -q >>"$tmp/apt" 2>&1 &&
			DEBIAN_FRONTEND=noninteractive apt-get install -y -q "$1" >>"$tmp/apt" 2>&1; }
}

have_openblas() {
	"$GEMM" -l openblas -t 1 -m 0 8 >/dev/null 2>&1
}

have_torch() {
	[ -x "$PY" ] && "$PY" -c 'import torch' >/dev/null 2>&1
}

# ---------------------------------------------------------------- gemm

run_gemm() {
	rounds=${BENCH_ROUNDS:-3}
	blas=1
	s8=1
	echo "== GEMM: square f32, row-major, $THREADS threads, GFLOP/s; median of $rounds rounds"
	if ! have_openblas; then
		install_pkg libopenblas0
		if ! have_openblas; then
			echo "  OpenBLAS comparison skipped: libopenblas.so.0 cannot be loaded;" \
				"install libopenblas0 (apt-get install libopenblas0, as root)"
			blas=0
		fi
	fi
	r=1
	while [ $r -le "$rounds" ]; do
		show=$([ $r = 1 ] && echo 1 || echo 0)
		# shellcheck disable=SC2086
		measure mcomp "$show" env OMP_NUM_THREADS=$THREADS "$GEMM" -l mcomp -t "$THREADS" \
			-m 0.2 $SIZES
		if [ $blas = 1 ]; then
			# shellcheck disable=SC2086
			measure blas_env "$show" env OPENBLAS_CORETYPE=$ENVCORE "$GEMM" -l openblas \
				-t "$THREADS" -m 0.2 $SIZES
			# shellcheck disable=SC2086
			measure blas_unset "$show" env -u OPENBLAS_CORETYPE "$GEMM" -l openblas \
				-t "$THREADS" -m 0.2 $SIZES
		fi
		if [ $s8 = 1 ]; then
			# shellcheck disable=SC2086
			measure s8 "$show" env OMP_NUM_THREADS=$THREADS "$GEMM" -l s8 -t "$THREADS" -m 0.2 \
				$SIZES || s8=0
			# shellcheck disable=SC2086
			measure s7 0 env OMP_NUM_THREADS=$THREADS "$GEMM" -l s7 -t "$THREADS" -m 0.2 \
				$SIZES
		fi
		r=$((r + 1))
	done
	printf '  %6s %10s %22s %7s %22s %7s\n' size mcomp "OpenBLAS $ENVCORE" ratio \
		"OpenBLAS unset" ratio
	for n in $SIZES; do
		a=$(med mcomp gemm"$n")
		b=$(med blas_env gemm"$n")
		c=$(med blas_unset gemm"$n")
		printf '  %6s %10s %22s %7s %22s %7s\n' "$n" "$(fmt "$a")" "$(fmt "$b")" \
			"$(ratio "$a" "$b")" "$(fmt "$c")" "$(ratio "$a" "$c")"
	done
	for n in 1024 2048; do
		a=$(med mcomp gemm"$n")
		c=$(med blas_unset gemm"$n")
		target "GEMM $n vs OpenBLAS unset (AVX-512)" "$a" "$c" "$(ratio "$a" "$c")" ge 0.9
	done

	echo
	echo "== int8 GEMM (u8 x s8 -> s32): GOP/s against mcomp's f32 GEMM, $THREADS threads"
	if [ $s8 = 0 ] && [ -z "$(med s8 gemm1024)" ]; then
		"$GEMM" -l s8 -t 1 -m 0 8 2>&1 >/dev/null | sed 's/^/  not yet: /'
		for n in 1024 2048; do
			target "int8 GEMM $n vs mcomp f32" "" "$(med mcomp gemm"$n")" - ge 2.5
		done
		return
	fi
	# 7-bit: weights in [-64, 64] (quantize reduce_range); only the avx2 kernel
	# (no VNNI) runs them otherwise, on vpmaddubsw
	printf '  %6s %10s %10s %7s %10s %7s\n' size int8 f32 ratio "int8 7-bit" ratio
	for n in $SIZES; do
		a=$(med s8 gemm"$n")
		b=$(med mcomp gemm"$n")
		c=$(med s7 gemm"$n")
		printf '  %6s %10s %10s %7s %10s %7s\n' "$n" "$(fmt "$a")" "$(fmt "$b")" \
			"$(ratio "$a" "$b")" "$(fmt "$c")" "$(ratio "$c" "$b")"
	done
	for n in 1024 2048; do
		a=$(med s8 gemm"$n")
		b=$(med mcomp gemm"$n")
		target "int8 GEMM $n vs mcomp f32" "$a" "$b" "$(ratio "$a" "$b")" ge 2.5
	done
	# on an AVX2 CPU without VNNI (or MCOMP_GEMM_S8=avx2), the 7-bit kernel's target
	if "$GEMM" -l s7 -t 1 -m 0 8 2>/dev/null | grep -q 'int8 kernel avx2 '; then
		for n in 1024 2048; do
			a=$(med s7 gemm"$n")
			b=$(med mcomp gemm"$n")
			target "int8 GEMM $n, 7-bit weights (no VNNI) vs f32" "$a" "$b" \
				"$(ratio "$a" "$b")" ge 1.8
		done
	fi
}

# ---------------------------------------------------------------- train

# The PyTorch configurations and the env(1) arguments that make each.
TORCH_TAGS="torch_default torch_passive torch_unset torch_passive_unset"

torch_env() {
	case $1 in
	torch_default) echo "-u OMP_WAIT_POLICY OPENBLAS_CORETYPE=$ENVCORE" ;;
	torch_passive) echo "OMP_WAIT_POLICY=PASSIVE OPENBLAS_CORETYPE=$ENVCORE" ;;
	torch_unset) echo "-u OMP_WAIT_POLICY -u OPENBLAS_CORETYPE" ;;
	torch_passive_unset) echo "-u OPENBLAS_CORETYPE OMP_WAIT_POLICY=PASSIVE" ;;
	esac
}

torch_label() {
	case $1 in
	torch_default) echo "WAIT unset, CORETYPE=$ENVCORE" ;;
	torch_passive) echo "WAIT=PASSIVE, CORETYPE=$ENVCORE" ;;
	torch_unset) echo "WAIT unset, CORETYPE unset" ;;
	torch_passive_unset) echo "WAIT=PASSIVE, CORETYPE unset" ;;
	esac
}

run_train() {
	rounds=${BENCH_ROUNDS:-2}
	torch=1
	if [ -f "$DATA/train-images-idx3-ubyte.gz" ] || [ -f "$DATA/train-images-idx3-ubyte" ]; then
		dopt="-d $DATA"
		what="Fashion-MNIST training images from $DATA"
	else
		dopt=
		what="random data of Fashion-MNIST's shape ($DATA has no training split)"
	fi
	echo "== Training (batch 128, Adam, samples/s) and inference latency (ms, median)," \
		"$THREADS threads"
	echo "   data: $what; median of $rounds rounds"
	if ! have_torch; then
		install_pkg python3-torch
		if ! have_torch; then
			echo "  PyTorch comparison skipped: '$PY -c \"import torch\"' fails;" \
				"install python3-torch (apt-get install python3-torch, as root)"
			torch=0
		fi
	fi
	for model in mlp student cnn; do
		case $model in
		mlp) steps=40 ;;
		student) steps=200 ;;
		*) steps=10 ;;
		esac
		ok=1
		r=1
		while [ $r -le "$rounds" ]; do
			show=$([ $r = 1 ] && echo 1 || echo 0)
			# shellcheck disable=SC2086
			measure mcomp "$show" env OMP_NUM_THREADS=$THREADS "$TRAIN" $dopt -s $steps -r 3 \
				-T 1 -m 0.3 $model train lat1 lat256 || ok=0
			[ $ok = 0 ] && break
			# For information: mcomp with passive waiting, as PyTorch's best runs.
			# shellcheck disable=SC2086
			measure mcomp_passive 0 env OMP_WAIT_POLICY=PASSIVE OMP_NUM_THREADS=$THREADS \
				"$TRAIN" $dopt -s $steps -r 3 -T 1 -m 0.3 $model train lat1 lat256
			if [ $torch = 1 ]; then
				for t in $TORCH_TAGS; do
					# shellcheck disable=SC2046,SC2086
					measure $t "$show" env $(torch_env $t) "$PY" "$PEER" \
						-t "$THREADS" $dopt -s $steps -r 3 -T 1 -m 0.3 \
						$model train lat1 lat256
				done
			fi
			r=$((r + 1))
		done
		if [ $ok = 0 ]; then
			echo "  $model: not measured (mcomp cannot build or run it yet)"
			case $model in
			mlp)
				target "MLP training vs PyTorch best" "" "" - ge 1.5
				target "MLP batch-1 latency vs PyTorch best" "" "" - le 0.5 ;;
			student)
				target "STUDENT training vs PyTorch best" "" "" - ge 2 ;;
			*)
				target "CNN training vs PyTorch best" "" "" - ge 1.5 ;;
			esac
			continue
		fi
		echo
		printf '  %-38s %12s %11s %13s\n' "$model" "train samples/s" "lat b1 ms" "lat b256 ms"
		for t in mcomp mcomp_passive $TORCH_TAGS; do
			case $t in
			torch_*) [ $torch = 0 ] && continue ;;
			esac
			case $t in
			mcomp) label="mcomp (as the environment runs it)" ;;
			mcomp_passive) label="mcomp WAIT=PASSIVE (for information)" ;;
			*) label="torch $(torch_label "$t")" ;;
			esac
			printf '  %-38s %12s %11s %13s\n' "$label" "$(fmt "$(med "$t" train_$model)")" \
				"$(fmt "$(med "$t" lat1_$model)")" "$(fmt "$(med "$t" lat256_$model)")"
		done
		# shellcheck disable=SC2086
		bt=$(best max train_$model $TORCH_TAGS)
		# shellcheck disable=SC2086
		b1=$(best min lat1_$model $TORCH_TAGS)
		# shellcheck disable=SC2086
		b256=$(best min lat256_$model $TORCH_TAGS)
		a=$(med mcomp train_$model)
		l1=$(med mcomp lat1_$model)
		l256=$(med mcomp lat256_$model)
		printf '  %-38s %12s %11s %13s\n' "torch best" "$(fmt "${bt%% *}")" \
			"$(fmt "${b1%% *}")" "$(fmt "${b256%% *}")"
		printf '  %-38s %11sx %10sx %12sx\n' "mcomp / torch best" \
			"$(ratio "$a" "${bt%% *}")" "$(ratio "$l1" "${b1%% *}")" \
			"$(ratio "$l256" "${b256%% *}")"
		pt=$(med mcomp_passive train_$model)
		p1=$(med mcomp_passive lat1_$model)
		p256=$(med mcomp_passive lat256_$model)
		printf '  %-38s %11sx %10sx %12sx\n' "mcomp WAIT=PASSIVE / torch best" \
			"$(ratio "$pt" "${bt%% *}")" "$(ratio "$p1" "${b1%% *}")" \
			"$(ratio "$p256" "${b256%% *}")"
		echo "  (training: higher is better; latency ratios: lower is better; targets use" \
			"the first mcomp row)"
		M=$(echo $model | tr '[:lower:]' '[:upper:]')
		want=1.5
		[ $model = student ] && want=2
		target "$M training vs PyTorch best" "$a" "${bt%% *}" "$(ratio "$a" "${bt%% *}")" \
			ge $want
		if [ $model = mlp ]; then
			target "MLP batch-1 latency vs PyTorch best" "$l1" "${b1%% *}" \
				"$(ratio "$l1" "${b1%% *}")" le 0.5
		fi
	done
}

# ---------------------------------------------------------------- scaling

run_scaling() {
	rounds=${BENCH_ROUNDS:-1}
	echo "== Thread scaling: GEMM $SCALE_SIZE (GFLOP/s), MLP and CNN training (samples/s," \
		"random data), 1..$MAXT threads; median of $rounds rounds"
	r=1
	while [ $r -le "$rounds" ]; do
		t=1
		while [ "$t" -le "$MAXT" ]; do
			measure t$t 0 env OMP_NUM_THREADS=$t "$GEMM" -l mcomp -t "$t" -m 0.5 \
				"$SCALE_SIZE"
			measure t$t 0 env OMP_NUM_THREADS=$t "$TRAIN" -s 40 -r 3 mlp train
			measure t$t 0 env OMP_NUM_THREADS=$t "$TRAIN" -s 10 -r 3 cnn train
			t=$((t + 1))
		done
		r=$((r + 1))
	done
	g1=$(med t1 gemm"$SCALE_SIZE")
	m1=$(med t1 train_mlp)
	c1=$(med t1 train_cnn)
	printf '  %7s %10s %8s %6s %12s %8s %6s %12s %8s %6s\n' threads GFLOP/s speedup eff \
		"MLP samp/s" speedup eff "CNN samp/s" speedup eff
	t=1
	while [ "$t" -le "$MAXT" ]; do
		g=$(med t$t gemm"$SCALE_SIZE")
		m=$(med t$t train_mlp)
		c=$(med t$t train_cnn)
		gs=$(ratio "$g" "$g1")
		ms=$(ratio "$m" "$m1")
		cs=$(ratio "$c" "$c1")
		printf '  %7s %10s %8s %6s %12s %8s %6s %12s %8s %6s\n' "$t" "$(fmt "$g")" "$gs" \
			"$(ratio "$gs" "$t")" "$(fmt "$m")" "$ms" "$(ratio "$ms" "$t")" "$(fmt "$c")" \
			"$cs" "$(ratio "$cs" "$t")"
		t=$((t + 1))
	done
	g=$(med t"$MAXT" gemm"$SCALE_SIZE")
	c=$(med t"$MAXT" train_cnn)
	eff=$(ratio "$(ratio "$g" "$g1")" "$MAXT")
	at=$([ "$MAXT" -ge 16 ] && echo "" || echo " (target at 16)")
	target "GEMM $SCALE_SIZE efficiency, $MAXT vs 1 thread$at" "$g" "$g1" "$eff" ge 0.75
	target "CNN training, $MAXT vs 1 thread$at" "$c" "$c1" "$(ratio "$c" "$c1")" ge 10
}

# ---------------------------------------------------------------- contention

# cpu_list N: the first N CPUs of this shell's affinity mask, comma-separated.
cpu_list() {
	taskset -cp $$ 2>/dev/null | sed 's/.*: *//' | tr ',' '\n' |
		awk -F- -v n="$1" '{ hi = NF > 1 ? $2 : $1; for (c = $1; c <= hi && k < n; c++) { printf "%s%d", k ? "," : "", c; k++ } }'
}

run_contention() {
	rounds=${BENCH_ROUNDS:-2}
	torch=1
	if ! command -v taskset >/dev/null; then
		echo "== Contention: skipped, taskset (util-linux) is missing"
		return
	fi
	cpus=${BENCH_CPUS:-$(cpu_list "$THREADS")}
	c1=${cpus%%,*}
	c2=$(echo "$cpus" | cut -d, -f2)
	echo "== Contention: MLP and CNN training (samples/s) and batch-1 latency (ms) on CPUs" \
		"$cpus, $THREADS threads, idle and beside 1 and 2 busy processes (a shell loop" \
		"pinned to CPU $c1, then also to $c2); median of $rounds rounds"
	if [ -d "$DATA" ]; then dopt="-d $DATA"; else dopt=; fi
	if ! have_torch; then
		echo "  PyTorch side skipped: '$PY -c \"import torch\"' fails (python3-torch)"
		torch=0
	fi
	spin=
	trap 'kill $spin 2>/dev/null; rm -rf "$tmp"' EXIT INT TERM
	r=1
	while [ $r -le "$rounds" ]; do
		for load in 0 1 2; do
			spin=
			if [ $load -ge 1 ]; then
				taskset -c "$c1" sh -c 'while :; do :; done' &
				spin=$!
			fi
			if [ $load -ge 2 ]; then
				taskset -c "$c2" sh -c 'while :; do :; done' &
				spin="$spin $!"
			fi
			sleep 0.3
			for model in mlp cnn; do
				steps=40
				[ $model = cnn ] && steps=10
				# shellcheck disable=SC2086
				measure mc_l$load 0 env OMP_NUM_THREADS=$THREADS taskset -c "$cpus" \
					"$TRAIN" $dopt -s $steps -r 3 -T 2 -m 0.3 $model train lat1
				if [ $load = 0 ]; then
					# The same with the team size fixed: what adapting costs when idle.
					# shellcheck disable=SC2086
					measure mc_fixed 0 env OMP_NUM_THREADS=$THREADS OMP_DYNAMIC=false \
						taskset -c "$cpus" "$TRAIN" $dopt -s $steps -r 3 -T 2 -m 0.3 \
						$model train lat1
				fi
				[ $torch = 1 ] || continue
				for t in torch passive; do
					w=-u\ OMP_WAIT_POLICY
					[ $t = passive ] && w=OMP_WAIT_POLICY=PASSIVE
					# shellcheck disable=SC2086
					measure ${t}_l$load 0 env $w taskset -c "$cpus" "$PY" "$PEER" \
						-t "$THREADS" $dopt -s $steps -r 3 -T 2 -m 0.3 $model train lat1
				done
			done
			# shellcheck disable=SC2086
			[ -n "$spin" ] && kill $spin 2>/dev/null
			wait 2>/dev/null
		done
		r=$((r + 1))
	done
	spin=
	trap 'rm -rf "$tmp"' EXIT INT TERM
	printf '  %-30s %5s %11s %6s %9s %6s %11s %6s %9s %6s\n' "" busy "MLP train" x "MLP b1" x \
		"CNN train" x "CNN b1" x
	for t in mc torch passive; do
		case $t in
		mc) label="mcomp" ;;
		torch) label="torch (WAIT unset)"; [ $torch = 1 ] || continue ;;
		*) label="torch (WAIT=PASSIVE)"; [ $torch = 1 ] || continue ;;
		esac
		for load in 0 1 2; do
			row=
			for m in train_mlp lat1_mlp train_cnn lat1_cnn; do
				v=$(med ${t}_l$load $m)
				row="$row $(fmt "$v") $(ratio "$v" "$(med ${t}_l0 $m)")"
			done
			# shellcheck disable=SC2086
			printf '  %-30s %5s %11s %6s %9s %6s %11s %6s %9s %6s\n' "$label" $load $row
		done
	done
	echo "  (x: against the same side's idle figure; training: higher is better," \
		"latency: lower)"
	for m in mlp cnn; do
		M=$(echo $m | tr '[:lower:]' '[:upper:]')
		i=$(med mc_l0 train_$m)
		f=$(med mc_fixed train_$m)
		target "$M training idle, adaptive / fixed team" "$i" "$f" "$(ratio "$i" "$f")" ge 0.9
		i=$(med mc_l0 lat1_$m)
		f=$(med mc_fixed lat1_$m)
		target "$M batch-1 latency idle, adaptive / fixed" "$i" "$f" "$(ratio "$i" "$f")" le 1.1
		for load in 1 2; do
			want=0.4
			[ $load = 2 ] && want=0.25
			v=$(med mc_l$load train_$m)
			i=$(med mc_l0 train_$m)
			target "$M training, $load busy / idle" "$v" "$i" "$(ratio "$v" "$i")" ge $want
		done
		v=$(med mc_l2 lat1_$m)
		i=$(med mc_l0 lat1_$m)
		target "$M batch-1 latency, 2 busy / idle" "$v" "$i" "$(ratio "$v" "$i")" le 3
	done
}

# ---------------------------------------------------------------- sparse

run_sparse() {
	echo "== Sparse linear: MLP inference at 0/80/90/95% unstructured sparsity," \
		"dense GEMM against the CSR kernel, $THREADS threads (ms, median)"
	SPARSE=$BUILDDIR/bench/bench_sparse
	if [ ! -x "$SPARSE" ]; then
		echo "  $SPARSE is not built; run 'make bench'"
		return
	fi
	OMP_NUM_THREADS=$THREADS "$SPARSE" 0.3 >"$tmp/sparse" 2>&1
	grep -v '^RESULT' "$tmp/sparse" | sed 's/^/  /'
	sed -n 's/^RESULT /sparse /p' "$tmp/sparse" >>"$RES"
	s=$(med sparse sparse_s90_b256_speedup)
	target "Sparse MLP at 90%, batch 256: dense / CSR time" "$s" 1 "$(fmt "$s")" ge 1
}

# ---------------------------------------------------------------- quantize

run_quantize() {
	echo "== int8 quantization of the MLP: mcomp (static, per-channel) against PyTorch's" \
		"quantize_dynamic, both trained 2 epochs, $THREADS threads"
	if ! have_torch && ! { install_pkg python3-torch && have_torch; }; then
		echo "  PyTorch not available ($PY -c 'import torch' failed): skipped"
		return
	fi
	q=$SRCDIR/pipelines/quantize-mlp-int8-static.yaml
	OMP_NUM_THREADS=$THREADS MCOMP_QUIET=1 "$BUILDDIR/mcomp" run "$q" --quiet \
		--set passes.train.epochs=2 --set output.path="$tmp/q.safetensors" \
		--set report="$tmp/q.json" >"$tmp/qrun" 2>&1 ||
		{ echo "  mcomp run failed: $(tail -n 3 "$tmp/qrun")"; return; }
	"$PY" - "$tmp/q.json" >>"$RES" <<'PYEOF'
import json, sys
steps = {s["pass"]: s for s in json.load(open(sys.argv[1]))["steps"]}
for name, row in (("f32", steps["train"]), ("int8", steps["quantize"])):
    print("quant mcomp_acc_%s %.2f" % (name, 100 * row["accuracy"]))
    print("quant mcomp_bytes_%s %d" % (name, row["bytes"]))
    print("quant mcomp_lat1_%s %.4f" % (name, row["latency_ms"]["batch1"]))
    print("quant mcomp_lat256_%s %.4f" % (name, row["latency_ms"]["batch256"]))
PYEOF
	env -u OPENBLAS_CORETYPE OMP_WAIT_POLICY=PASSIVE "$PY" "$SRCDIR/bench/quantize_peer.py" \
		-d "$DATA" -t "$THREADS" 2>"$tmp/qerr" | sed -n 's/^RESULT quant_peer_/quant peer_/p' >>"$RES"
	printf '  %-10s %12s %12s %12s %12s\n' "" "acc f32 %" "acc int8 %" "bytes ratio" \
		"lat b1 ratio"
	for w in mcomp peer; do
		printf '  %-10s %12s %12s %12s %12s\n' "$w" "$(fmt "$(med quant ${w}_acc_f32)")" \
			"$(fmt "$(med quant ${w}_acc_int8)")" \
			"$(ratio "$(med quant ${w}_bytes_int8)" "$(med quant ${w}_bytes_f32)")" \
			"$(ratio "$(med quant ${w}_lat1_int8)" "$(med quant ${w}_lat1_f32)")"
	done
	printf '  %-10s %12s %12s\n' "" "lat b256 f32" "lat b256 int8"
	for w in mcomp peer; do
		printf '  %-10s %12s %12s\n' "$w" "$(fmt "$(med quant ${w}_lat256_f32)")" \
			"$(fmt "$(med quant ${w}_lat256_int8)")"
	done
	m1=$(med quant mcomp_lat1_int8)
	p1=$(med quant peer_lat1_int8)
	target "int8 MLP batch-1 latency vs PyTorch quantize_dynamic" "$m1" "$p1" \
		"$(ratio "$m1" "$p1")" le 1
}

# ---------------------------------------------------------------- memory

run_memory() {
	echo "== Memory: peak growth while training the MLP for one epoch on the whole data set," \
		"against data set + weights + Adam state + one batch's activations"
	if [ -f "$DATA/train-images-idx3-ubyte.gz" ] || [ -f "$DATA/train-images-idx3-ubyte" ]; then
		measure mem 1 env OMP_NUM_THREADS="$THREADS" MCOMP_PROGRESS=0 "$TRAIN" -d "$DATA" \
			mlp memory
	else
		measure mem 1 env OMP_NUM_THREADS="$THREADS" MCOMP_PROGRESS=0 "$TRAIN" mlp memory
	fi
	m=$(med mem mem_mlp)
	printf '  peak growth / budget: %s\n' "$(fmt "$m")"
	target "MLP training memory: peak / budget" "$m" 1 "$(fmt "$m")" le 2
}

# ---------------------------------------------------------------- ort

ORTJS=$SRCDIR/tests/ort_run.js
INFER=$BUILDDIR/bench/bench_infer

ORTPY=$SRCDIR/bench/ort_peer.py
MCENV="" LABEL="" ISAWRAP="" # the avx2 part's settings for run_ort

# ort_lat MODEL BATCH: ONNX Runtime's latency line, through the binding chosen
# (BENCH_ORT: node, the default, or python: bench/ort_peer.py with
# BENCH_PYTHON's onnxruntime, where no npm registry is at hand).
ort_lat() {
	if [ "${BENCH_ORT:-node}" = python ]; then
		$ISAWRAP "$PY" "$ORTPY" "$1" --batch "$2" --seconds 0.3 --threads "$THREADS"
	else
		$ISAWRAP node "$ORTJS" latency "$1" --batch "$2" --seconds 0.3 --threads "$THREADS"
	fi
}

# have_ort: node and onnxruntime-node (tests/node), installed when allowed; or
# with BENCH_ORT=python, onnxruntime in BENCH_PYTHON.
have_ort() {
	if [ "${BENCH_ORT:-node}" = python ]; then
		"$PY" -c 'import onnxruntime, numpy' >/dev/null 2>&1
		return
	fi
	command -v node >/dev/null 2>&1 || { install_pkg nodejs && install_pkg npm; } ||
		return 1
	node "$ORTJS" probe >/dev/null 2>&1 && return 0
	[ "$INSTALL" = 1 ] && command -v npm >/dev/null 2>&1 || return 1
	echo "  installing onnxruntime-node into tests/node (a benchmark-only dependency) ..."
	(cd "$SRCDIR/tests/node" && npm ci --ignore-scripts --no-audit --no-fund) >"$tmp/npm" 2>&1
	node "$ORTJS" probe >/dev/null 2>&1
}

# ort_models: the MLP (784-512-256-10), student (784-64-10) and CNN (32 and
# 64 channels, fc 128) of bench_train, trained one epoch on 5000 images,
# quantized int8 static, saved and exported to ONNX into $tmp/ort; plus a
# model of one global average pool, whose ONNX Runtime time is the binding's
# overhead: the same input as the others and an output as small (the time
# of a model of one Flatten, whose output is as large as its input, was
# mostly that output's copy into JavaScript, which the others do not pay).
ort_models() {
	d=$tmp/ort
	mkdir -p "$d"
	for m in mlp student cnn; do
		case $m in
		mlp) layers='[flatten, {linear: 512}, relu, {linear: 256}, relu, {linear: 10}]' ;;
		student) layers='[flatten, {linear: 64}, relu, {linear: 10}]' ;;
		cnn) layers='[{conv2d: 32}, relu, {maxpool2d: 2}, {conv2d: 64}, relu, {maxpool2d: 2}, flatten, {linear: 128}, relu, {linear: 10}]' ;;
		esac
		cat >"$d/$m.yaml" <<EOF
mcomp: 1
seed: 7
data:
  train: {idx: $DATA/train, count: 5000}
models:
  m: {build: {input: [1, 28, 28], layers: $layers}}
passes:
  - train: {model: m, epochs: 1, batch_size: 128, optimizer: adam, lr: 0.002}
output: $m-f32.safetensors
EOF
		cat >"$d/$m-q.yaml" <<EOF
mcomp: 1
data:
  calib: {idx: $DATA/train, first: 55000, count: 1000}
models:
  m: {load: $m-f32.safetensors}
passes:
  - quantize: {model: m, bits: 8, granularity: per-channel, mode: static, calibration_data: calib, samples: 1000}
output: $m-int8.safetensors
EOF
		MCOMP_PROGRESS=0 "$BUILDDIR/mcomp" run "$d/$m.yaml" >"$d/log" 2>&1 &&
			MCOMP_PROGRESS=0 "$BUILDDIR/mcomp" run "$d/$m-q.yaml" >>"$d/log" 2>&1 ||
			{ echo "  mcomp run failed: $(tail -n 3 "$d/log")"; return 1; }
	done
	# The classics: the recipes' own networks, trained one epoch on 2000
	# images (their latency, not their accuracy, is measured), quantized as
	# the others (batch norms folded, every convolution and add integer).
	mkdir -p "$d/ck"
	for m in mbv2 resnet; do
		case $m in
		mbv2) recipe=mobilenetv2 ;;
		resnet) recipe=resnet-teacher ;;
		esac
		MCOMP_PROGRESS=0 "$BUILDDIR/mcomp" run "$SRCDIR/pipelines/$recipe.yaml" \
			--set data.train.idx="$DATA/train" --set data.train.count=2000 \
			--set data.test.idx="$DATA/t10k" --set data.test.count=500 \
			--set passes.train.epochs=1 \
			--set passes.train.checkpoint.path="$d/ck/$m.safetensors" \
			--set output.path="$d/$m-f32.safetensors" --set report="$d/$m.json" \
			>>"$d/log" 2>&1 &&
			sed "s/^output: .*/output: $m-int8.safetensors/; s/^  m: {load: .*/  m: {load: $m-f32.safetensors}/" \
				"$d/mlp-q.yaml" >"$d/$m-q.yaml" &&
			MCOMP_PROGRESS=0 "$BUILDDIR/mcomp" run "$d/$m-q.yaml" >>"$d/log" 2>&1 ||
			{ echo "  mcomp run failed: $(tail -n 3 "$d/log")"; return 1; }
	done
	printf 'mcomp: 1\nmodels:\n  m: {build: {input: [1, 28, 28], layers: [global_avgpool]}}\npasses: []\noutput: flat.safetensors\n' \
		>"$d/flat.yaml"
	"$BUILDDIR/mcomp" run "$d/flat.yaml" >>"$d/log" 2>&1 ||
		{ echo "  mcomp run failed: $(tail -n 3 "$d/log")"; return 1; }
	for f in "$d"/*.safetensors; do
		"$BUILDDIR/mcomp" export "$f" -o "${f%.safetensors}.onnx" >>"$d/log" 2>&1 ||
			{ echo "  mcomp export $f failed: $(tail -n 2 "$d/log")"; return 1; }
	done
}

run_ort() {
	rounds=${BENCH_ROUNDS:-3}
	echo "== ${LABEL}Inference latency against ONNX Runtime (onnxruntime-${BENCH_ORT:-node}, the" \
		"same models exported by mcomp), $THREADS threads, median ms"
	if [ ! -f "$DATA/train-images-idx3-ubyte.gz" ] && [ ! -f "$DATA/train-images-idx3-ubyte" ]; then
		echo "  no Fashion-MNIST in $DATA (the int8 models need calibration data): skipped"
		return
	fi
	if ! have_ort; then
		echo "  ONNX Runtime not available (node $ORTJS probe failed; scripts/setup.sh installs" \
			"it): skipped"
		return
	fi
	[ -x "$INFER" ] || { echo "  $INFER is not built (make bench): skipped"; return; }
	[ -f "$tmp/ort/flat.onnx" ] || ort_models || return
	d=$tmp/ort
	# a second run (the avx2 part) files its own figures
	grep -v '^ort_' "$RES" >"$tmp/ort.res"
	cp "$tmp/ort.res" "$RES"
	for r in $(seq "$rounds"); do
		for m in mlp student cnn mbv2 resnet; do
			for q in f32 int8; do
				# shellcheck disable=SC2086
				measure "ort_mc_${m}_$q" 0 $ISAWRAP env OMP_NUM_THREADS="$THREADS" \
					$MCENV "$INFER" "$d/$m-$q.safetensors" 0.3 1 256
				for b in 1 256; do
					measure "ort_rt_${m}_$q" 0 ort_lat "$d/$m-$q.onnx" $b
				done
			done
		done
		for b in 1 256; do
			measure ort_rt_flat 0 ort_lat "$d/flat.onnx" $b
		done
	done
	echo "  ONNX Runtime's time includes its ${BENCH_ORT:-node} binding (the call, the input and" \
		"output tensors); the time of a model of one global average pool is taken off for" \
		"'ORT net'"
	printf '  %-8s %-5s %6s %12s %12s %12s %8s\n' model dtype batch mcomp ORT "ORT net" ratio
	for m in mlp student cnn mbv2 resnet; do
		for q in f32 int8; do
			for b in 1 256; do
				a=$(med "ort_mc_${m}_$q" "lat_b${b}_ms")
				o=$(med "ort_rt_${m}_$q" "lat_b${b}_ms")
				f=$(med ort_rt_flat "lat_b${b}_ms")
				net=""
				if [ -n "$o" ] && [ -n "$f" ]; then
					net=$(awk -v o="$o" -v f="$f" \
						'BEGIN { v = o - f; printf "%.6g", (v > 0 ? v : o) }')
				fi
				rt=$(ratio "$a" "$net")
				printf '  %-8s %-5s %6s %12s %12s %12s %8s\n' "$m" "$q" "$b" "$(fmt "$a")" \
					"$(fmt "$o")" "$(fmt "$net")" "$rt"
				case $m in mbv2 | resnet) continue ;; esac # no target
				target "$LABEL$(echo "$m" | tr a-z A-Z) $q batch $b latency vs ORT net" "$a" \
					"$net" "$rt" le 1
			done
		done
	done
}

# ---------------------------------------------------------------- avx2

SHIM=$BUILDDIR/tests/shim/.libs/cpuid_mask.so
FLAGS=$BUILDDIR/tests/shim/cpuid_flags

# The AVX2 paths on any x86 CPU: mcomp forced with MCOMP_GEMM=avx2 and
# MCOMP_GEMM_S8=avx2 (no VNNI), against OpenBLAS's Haswell kernel and against
# ONNX Runtime with AVX-512, VNNI and AMX hidden from its CPUID by the shim
# make check builds (tests/shim/cpuid_mask.so, CPUID faulting), mcomp under
# the same shim so that its other kernels (pooling, quantizers) take their
# AVX2 paths too, as on an AVX2 machine (on a CPU without AVX-512 both run
# their AVX2 code anyway).
run_avx2() {
	rounds=${BENCH_ROUNDS:-3}
	echo "== AVX2: GEMM, mcomp forced to its AVX2 kernels against OpenBLAS Haswell, $THREADS" \
		"threads, GFLOP/s (int8: GOP/s, u8 x s8 without VNNI); median of $rounds rounds"
	have_openblas || install_pkg libopenblas0
	for r in $(seq "$rounds"); do
		# shellcheck disable=SC2086
		measure avx2_f32 0 env OMP_NUM_THREADS=$THREADS MCOMP_GEMM=avx2 "$GEMM" -l mcomp \
			-t "$THREADS" -m 0.2 $SIZES
		# shellcheck disable=SC2086
		measure avx2_s8 0 env OMP_NUM_THREADS=$THREADS MCOMP_GEMM_S8=avx2 "$GEMM" -l s8 \
			-t "$THREADS" -m 0.2 $SIZES
		# shellcheck disable=SC2086
		measure avx2_s7 0 env OMP_NUM_THREADS=$THREADS MCOMP_GEMM_S8=avx2 "$GEMM" -l s7 \
			-t "$THREADS" -m 0.2 $SIZES
		if have_openblas; then
			# shellcheck disable=SC2086
			measure avx2_blas 0 env OPENBLAS_CORETYPE=Haswell "$GEMM" -l openblas \
				-t "$THREADS" -m 0.2 $SIZES
		fi
	done
	echo "  (int8 7-bit: weights in [-64, 64], quantize reduce_range: vpmaddubsw, which cannot" \
		"saturate on them)"
	printf '  %6s %10s %16s %7s %10s %7s %10s %7s\n' size mcomp "OpenBLAS Haswell" ratio int8 \
		"/ f32" "int8 7-bit" "/ f32"
	for n in $SIZES; do
		a=$(med avx2_f32 gemm"$n")
		b=$(med avx2_blas gemm"$n")
		c=$(med avx2_s8 gemm"$n")
		d=$(med avx2_s7 gemm"$n")
		printf '  %6s %10s %16s %7s %10s %7s %10s %7s\n' "$n" "$(fmt "$a")" "$(fmt "$b")" \
			"$(ratio "$a" "$b")" "$(fmt "$c")" "$(ratio "$c" "$a")" "$(fmt "$d")" \
			"$(ratio "$d" "$a")"
	done
	for n in 1024 2048; do
		a=$(med avx2_f32 gemm"$n")
		b=$(med avx2_blas gemm"$n")
		target "AVX2: GEMM $n vs OpenBLAS Haswell" "$a" "$b" "$(ratio "$a" "$b")" ge 0.9
	done
	for n in 1024 2048; do
		a=$(med avx2_s8 gemm"$n")
		b=$(med avx2_f32 gemm"$n")
		target "AVX2: int8 GEMM $n (no VNNI) vs mcomp f32" "$a" "$b" "$(ratio "$a" "$b")" ge 1.8
	done
	for n in 1024 2048; do
		a=$(med avx2_s7 gemm"$n")
		b=$(med avx2_f32 gemm"$n")
		target "AVX2: int8 GEMM $n, 7-bit weights vs f32" "$a" "$b" "$(ratio "$a" "$b")" ge 1.8
	done
	echo
	if [ -r "$SHIM" ] && [ -x "$FLAGS" ] &&
		CPUID_MASK=avx2 LD_PRELOAD="$SHIM" "$FLAGS" 2>/dev/null | grep -q 'faulting=1' &&
		! CPUID_MASK=avx2 LD_PRELOAD="$SHIM" "$FLAGS" 2>/dev/null | grep -q avx512f; then
		ISAWRAP="env CPUID_MASK=avx2 LD_PRELOAD=$SHIM"
		note="ONNX Runtime and mcomp with AVX-512, VNNI and AMX hidden"
		note="$note (tests/shim/cpuid_mask.so): every kernel of both on its AVX2 path"
	elif grep -q avx512f /proc/cpuinfo; then
		ISAWRAP=""
		note="ONNX Runtime on its native paths: the CPUID mask is not usable here (no CPUID"
		note="$note faulting, or make check has not built tests/shim); not the same instructions"
	else
		ISAWRAP=""
		note="an AVX2 CPU: ONNX Runtime's native paths are its AVX2 ones"
	fi
	echo "  $note"
	MCENV="MCOMP_GEMM=avx2 MCOMP_GEMM_S8=avx2"
	LABEL="AVX2: "
	run_ort
	MCENV="" LABEL="" ISAWRAP=""
}

# ---------------------------------------------------------------- main

parts=${*:-gemm train sparse quantize memory ort avx2}
[ "$parts" = all ] && parts="gemm train sparse quantize memory ort avx2 scaling contention"
for p in $parts; do
	case $p in
	gemm | train | sparse | quantize | memory | scaling | ort | avx2 | contention) ;;
	*)
		echo "usage: sh bench/run.sh [all|gemm|train|sparse|quantize|memory|scaling|ort|avx2|contention]..." >&2
		exit 2
		;;
	esac
done
echo "mcomp benchmarks on $(nproc 2>/dev/null || echo '?') CPUs: $(sed -n 's/^model name[^:]*: //p' /proc/cpuinfo 2>/dev/null | head -n 1)"
echo
for p in $parts; do
	"run_$p"
	echo
done
echo "== Summary: ratios against targets (peers measured in this same run)"
printf '%-48s %12s %12s %7s %8s  %s\n' metric mcomp peer ratio target verdict
cat "$SUMMARY"
