#!/bin/sh
# SPDX-License-Identifier: MIT
#
# scripts/recipes-cmp.sh - run every recipe of a pipelines folder with one
# mcomp and record the sha256 of every model file they write, so that two
# builds (say, before and after a refactor) can be compared byte for byte.
#
#	sh scripts/recipes-cmp.sh MCOMP PIPELINES_DIR OUTDIR [quick]
#	diff OUTDIR_A/SUMS OUTDIR_B/SUMS
#
# MCOMP          the mcomp to run: an installed binary, or the uninstalled
#                ./mcomp of a build tree (a libtool wrapper: its real binary
#                .libs/mcomp is run with that tree's .libs first on
#                LD_LIBRARY_PATH, whatever folder the tree was built in, and
#                its passes/.libs as MCOMP_PASS_PATH unless that is set)
# PIPELINES_DIR  the folder of recipes; every *.yaml in it is run, in name order
# OUTDIR         results: OUTDIR/NAME/ holds a copy of recipe NAME.yaml, so
#                its relative outputs (out/...) land in OUTDIR/NAME/out/, its
#                command line (cmd) and its log (log). OUTDIR/SUMS lists
#                "sha256  path" (path relative to OUTDIR, sorted) of every
#                file the recipes write: *.safetensors (models and cascade
#                files), anything else but the JSON reports (timings), and the
#                SVG plots but those of NONDET_SVG (timings). OUTDIR/TIMES lists each recipe's wall seconds.
# quick          shrink the work with the --set overrides of quick_overrides
#                below (one epoch, 10000 training images, fewer calibration
#                samples, a smaller sensitivity grid) so that the whole set
#                runs in a few minutes on 2 cores, still going through every
#                pass's code path. Without it the recipes run as they are.
#
# The recipes only read data by absolute path and load no model (no `load:`),
# so each runs alone in its own folder. A recipe that fails is named at the
# end and the script exits 1 (the others still run).
#
# Environment: OMP_NUM_THREADS (default 2; results do not depend on it).
set -u

usage() {
	echo "usage: sh scripts/recipes-cmp.sh MCOMP PIPELINES_DIR OUTDIR [quick]" >&2
	exit 2
}

if [ $# -lt 3 ] || [ $# -gt 4 ]; then usage; fi
MCOMP=$1
PIPES=$2
OUTDIR=$3
QUICK=
if [ $# -eq 4 ]; then
	[ "$4" = quick ] || usage
	QUICK=1
fi

# SVG plots whose contents depend on timings (measured latencies): left out
# of SUMS. The cascade plot's x axis is the cost measured on this machine;
# the sensitivity plot is accuracies only, so it is kept.
# (The cascade file itself is deterministic: with two stages the cheapest
# threshold within max_drop does not depend on the measured latencies.)
NONDET_SVG="cascade-mlp-cnn.svg"

# The --set overrides of quick mode, one recipe a line. Each recipe's training
# set is cut to its first 10000 images (val/calib splits stay disjoint from
# it), every epoch count to 1; calibration to 200 samples; the gradual
# prune's ramp fits inside the one shorter fine-tuning epoch (157 steps at
# batch 64): 50% at step 0 to 90% at step 100, every 10 steps.
quick_overrides() {
	tr1="--set data.train.count=10000 --set passes.train.epochs=1"
	case $1 in
	quickstart | cnn | quantize-mlp-int4-g32)
		echo "$tr1" ;;
	quantize-mlp-int8-static | quantize-cnn-int8-static)
		echo "$tr1 --set passes.quantize.samples=200" ;;
	prune-mlp-2of4 | prune-mlp-structured-50 | prune-cnn-structured-50)
		echo "$tr1 --set passes.prune.finetune_epochs=1" ;;
	prune-mlp-90-gradual)
		echo "$tr1 --set passes.prune.finetune_epochs=1" \
		     "--set passes.prune.end=100 --set passes.prune.frequency=10" ;;
	prune-quantize-mlp)
		echo "$tr1 --set passes.prune.finetune_epochs=1" \
		     "--set passes.prune.end=100 --set passes.prune.frequency=10" \
		     "--set passes.quantize.samples=200" ;;
	prune-mlp-sensitivity)
		echo "$tr1 --set data.val.count=1000 --set 'passes.prune.levels=[0.5, 0.9]'" ;;
	distill-cnn-to-mlp)
		echo "$tr1 --set passes.distill.epochs=1 --set passes.quantize.samples=200" ;;
	ensemble-distill-mlp)
		echo "$tr1 --set passes.ensemble-distill.epochs=1 --set passes.quantize.samples=200" ;;
	cascade-mlp-cnn)
		echo "$tr1 --set data.val.count=1000 --set passes.distill.epochs=1" \
		     "--set passes.quantize.samples=200" ;;
	*)
		return 1 ;;
	esac
}

case $MCOMP in /*) ;; *) MCOMP=$(pwd)/$MCOMP ;; esac
[ -x "$MCOMP" ] || { echo "recipes-cmp: $MCOMP: not an executable" >&2; exit 2; }
[ -d "$PIPES" ] || { echo "recipes-cmp: $PIPES: not a folder" >&2; exit 2; }

# An uninstalled mcomp is a libtool wrapper that puts the library folder of
# the tree it was *built* in on LD_LIBRARY_PATH (wrong for a copied tree), and
# finds the tree's passes only from the folder it was built in: run the real
# binary against this tree's library and passes instead.
bindir=$(cd "$(dirname "$MCOMP")" && pwd -P)
real=$bindir/.libs/$(basename "$MCOMP")
if [ -x "$real" ] && head -c 4096 "$MCOMP" | grep -q 'libtool'; then
	MCOMP=$real
	LD_LIBRARY_PATH=$bindir/.libs${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
	export LD_LIBRARY_PATH
fi
if [ -z "${MCOMP_PASS_PATH:-}" ] && [ -d "$bindir/passes/.libs" ]; then
	MCOMP_PASS_PATH=$(cd "$bindir/passes/.libs" && pwd -P)
	export MCOMP_PASS_PATH
fi
OMP_NUM_THREADS=${OMP_NUM_THREADS:-2}
MCOMP_PROGRESS=0
export OMP_NUM_THREADS MCOMP_PROGRESS

mkdir -p "$OUTDIR" || exit 2
OUTDIR=$(cd "$OUTDIR" && pwd -P)
rm -f "$OUTDIR/SUMS" "$OUTDIR/TIMES"
"$MCOMP" version >"$OUTDIR/VERSION" 2>&1

failed=
n=0
for recipe in "$PIPES"/*.yaml; do
	[ -f "$recipe" ] || continue
	name=$(basename "$recipe" .yaml)
	dir=$OUTDIR/$name
	rm -rf "$dir"
	mkdir -p "$dir"
	cp "$recipe" "$dir/$name.yaml"
	sets=
	if [ -n "$QUICK" ]; then
		if ! sets=$(quick_overrides "$name"); then
			echo "recipes-cmp: $name: no quick overrides listed; running it as is" >&2
			sets=
		fi
	fi
	printf '%s run %s %s\n' "$MCOMP" "$name.yaml" "$sets" >"$dir/cmd"
	printf '%-28s ' "$name"
	t0=$(date +%s)
	# $sets holds quoted words: eval splits them as the shell would.
	(cd "$dir" && eval "exec \"\$MCOMP\" run \"$name.yaml\" $sets") >"$dir/log" 2>&1
	rc=$?
	t1=$(date +%s)
	echo "$name $((t1 - t0))" >>"$OUTDIR/TIMES"
	if [ $rc -eq 0 ]; then
		echo "ok     $((t1 - t0)) s"
	else
		echo "FAILED $((t1 - t0)) s (exit $rc; see $dir/log)"
		failed="$failed $name"
	fi
	n=$((n + 1))
done
[ $n -gt 0 ] || { echo "recipes-cmp: no *.yaml in $PIPES" >&2; exit 2; }

# Every file the recipes wrote, but reports and plots with timings.
(
	cd "$OUTDIR" || exit 1
	find . -mindepth 2 -type f ! -name '*.json' ! -name cmd ! -name log |
		sed 's|^\./||' | LC_ALL=C sort | while IFS= read -r f; do
			b=$(basename "$f")
			[ "$b" = "$(dirname "$f").yaml" ] && continue	# the recipe's copy
			skip=
			for x in $NONDET_SVG; do
				[ "$b" = "$x" ] && skip=1
			done
			[ -n "$skip" ] || sha256sum "$f"
		done
) >"$OUTDIR/SUMS"
echo "$(wc -l <"$OUTDIR/SUMS") files in $OUTDIR/SUMS"

if [ -n "$failed" ]; then
	echo "recipes-cmp: failed:$failed" >&2
	exit 1
fi
exit 0
