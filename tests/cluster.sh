#!/bin/sh
# cluster.sh - pipelines/deep-compression.yaml cut down to seconds (6000
# training images, an epoch per stage) on Fashion-MNIST: the cluster pass
# runs after pruning and fine-tunes its shared values, the pruned weights
# stay zero, every layer keeps at most 2^bits values, the recipe's
# zstd-coded file decodes to one that stores codes and codebooks and loads
# and saves back to the same bytes, 1 and 3 OpenMP threads and the
# portable GEMM give the same file (and with grad_groups: 4 one of its own),
# and a quantized layer is refused. Skips (77) without the data set.
set -u
: "${MCOMP_BUILDDIR:?run through make check}" "${MCOMP_SRCDIR:?run through make check}"
data=/usr/share/datasets/fashion-mnist
[ -r "$data/train-images-idx3-ubyte.gz" ] || { echo "SKIP: no Fashion-MNIST in $data"; exit 77; }
command -v jq > /dev/null || { echo "SKIP: no jq"; exit 77; }
mcomp="$MCOMP_BUILDDIR/mcomp"
tmp=$(mktemp -d "${TMPDIR:-/tmp}/mcomp-cluster-XXXXXX")
trap 'rm -rf "$tmp"' EXIT
recipe="$MCOMP_SRCDIR/pipelines/deep-compression.yaml"
fail=0
check() { # WHAT COMMAND...
	what=$1
	shift
	if "$@"; then echo "PASS: $what"; else echo "FAIL: $what"; fail=1; fi
}

run() { # THREADS OUT [GEMM KERNEL [--set K=V]...]
	t=$1 out=$2 gemm=${3:-}
	shift 2
	[ $# -gt 0 ] && shift
	MCOMP_GEMM=$gemm OMP_NUM_THREADS=$t "$mcomp" run "$recipe" --quiet "$@" \
		--set data.train.count=6000 --set data.test.count=1000 \
		--set passes.train.epochs=1 --set passes.prune.finetune_epochs=2 \
		--set passes.prune.end=1 --set passes.cluster.finetune_epochs=1 \
		--set output.path="$out.zst" --set report="$out.json" > "$tmp/log" 2>&1 || {
		cat "$tmp/log"
		fail=1
	}
}

run 1 "$tmp/t1.safetensors"
run 3 "$tmp/t3.safetensors"
check "1 and 3 threads give the same file" cmp "$tmp/t1.safetensors.zst" "$tmp/t3.safetensors.zst"
run 2 "$tmp/p2.safetensors" portable
check "the portable GEMM gives the same file" cmp "$tmp/t1.safetensors.zst" "$tmp/p2.safetensors.zst"
# Fine-tuning in groups (grad_groups): its own bytes, the same on 1 and 3 threads
run 1 "$tmp/g1.safetensors" "" --set passes.cluster.grad_groups=4
run 3 "$tmp/g3.safetensors" "" --set passes.cluster.grad_groups=4
check "grad_groups: 1 and 3 threads give the same file" cmp "$tmp/g1.safetensors.zst" "$tmp/g3.safetensors.zst"
check "grad_groups reaches the fine-tuning (other bytes than one gradient a batch)" \
	test "$(cmp -s "$tmp/t1.safetensors.zst" "$tmp/g1.safetensors.zst"; echo $?)" = 1

# The recipe writes through zstd; mcomp reads that back and writes it plain
cat > "$tmp/plain.yaml" << EOF
mcomp: 1
models:
  m: {load: $tmp/t1.safetensors.zst}
passes: []
output: {model: m, path: $tmp/t1.safetensors}
EOF
"$mcomp" run "$tmp/plain.yaml" --quiet > "$tmp/log" 2>&1 || { cat "$tmp/log"; fail=1; }

r="$tmp/t1.safetensors.json"
step() { jq -r ".steps[] | select(.pass == \"$1\") | $2" "$r"; }
check "the cluster row reports accuracy before and after fine-tuning" \
	test "$(step cluster '.metrics | has("accuracy_clustered") and has("accuracy_finetuned")')" = true
check "the cluster row reports indices of at most 4 bits and codebooks" \
	test "$(step cluster '"\(.metrics.index_bits <= 4) \(.metrics."linear1.clusters" <= 16) \(.metrics.codebook_bytes > 0)"')" = "true true true"
check "pruned weights stay zero through centroid fine-tuning" \
	test "$(step prune .nonzeros)" = "$(step cluster .nonzeros)"
check "weight sharing shrinks the file" \
	test "$(step cluster .bytes)" -lt "$(step prune .bytes)"

# The file: every weight as a bitmask of its nonzeros and 4-bit codes into
# a codebook of at most 16 values ("mcomp.sparse" of the header)
n=$(od -An -t u8 -N 8 "$tmp/t1.safetensors" | tr -d ' ')
tail -c +9 "$tmp/t1.safetensors" | head -c "$n" > "$tmp/header.json"
for l in linear1 linear2 linear3; do
	check "$l.weight is stored as a bitmask and codes of at most 4 bits" test "$(jq -r \
		".__metadata__[\"mcomp.sparse\"] | fromjson | .[\"$l.weight\"] |
		 \"\\(.format) \\(.bits <= 4) \\(.clusters <= pow(2; .bits))\"" "$tmp/header.json")" = \
		"bitmask true true"
	check "$l.weight.__codes holds bits per nonzero" test "$(jq -r \
		"(.__metadata__[\"mcomp.sparse\"] | fromjson | .[\"$l.weight\"]) as \$e |
		 .[\"$l.weight.__codes\"].shape[0] == ((\$e.nnz * \$e.bits + 7) / 8 | floor)" \
		"$tmp/header.json")" = true
done

check "the biases are shared too (bias_bits: 4), every one coded" test "$(jq -r \
	".__metadata__[\"mcomp.sparse\"] | fromjson | .[\"linear1.bias\"] |
	 \"\\(.format) \\(.nnz) \\(.bits <= 4)\"" "$tmp/header.json")" = "dense 300 true"

# Loading and saving again gives the same bytes
cat > "$tmp/resave.yaml" << EOF
mcomp: 1
models:
  m: {load: $tmp/t1.safetensors}
passes: []
output: {model: m, path: $tmp/again.safetensors}
EOF
"$mcomp" run "$tmp/resave.yaml" --quiet > "$tmp/log" 2>&1 || { cat "$tmp/log"; fail=1; }
check "a clustered file loads and saves to the same bytes" cmp "$tmp/t1.safetensors" "$tmp/again.safetensors"

# A quantized layer is refused, at validation, with the fix
cat > "$tmp/q.yaml" << EOF
mcomp: 1
data:
  train: {idx: $data/train}
models:
  m: {load: $tmp/t1.safetensors}
passes:
  - quantize: {model: m, bits: 8, mode: weight-only}
  - cluster: {model: m}
EOF
"$mcomp" run "$tmp/q.yaml" --quiet > "$tmp/log" 2>&1
rc=$?
check "clustering a quantized layer exits 2" test "$rc" = 2
check "and says why" grep -q "layer 'linear1' of model 'm' is quantized (qlinear); weight sharing clusters f32 weights" "$tmp/log"
exit $fail
