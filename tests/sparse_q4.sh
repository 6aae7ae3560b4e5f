#!/bin/sh
# sparse_q4.sh - packed 4-bit weights stored sparse (docs/prune.md): a
# pruned then 4-bit quantized MLP is written as a bitmask and its nonzero
# codes packed two a byte (smaller than the dense packed codes), loads and
# saves back to the same bytes, exports to ONNX (dense, with the note on
# pruned weights); a file whose stored codes or mask were edited is refused
# naming the file and tensor: exit 1 for mcomp inspect and export, 2 for a
# pipeline that loads it (its validation). Skips (77) without Fashion-MNIST
# or python3.
set -u
: "${MCOMP_BUILDDIR:?run through make check}" "${MCOMP_SRCDIR:?run through make check}"
mcomp="$MCOMP_BUILDDIR/mcomp"
data=/usr/share/datasets/fashion-mnist
tmp=$(mktemp -d "${TMPDIR:-/tmp}/mcomp-sparse-q4-XXXXXX")
trap 'rm -rf "$tmp"' EXIT
. "$MCOMP_SRCDIR/tests/expect.sh"
command -v python3 > /dev/null || skip "no python3"
[ -r "$data/train-images-idx3-ubyte.gz" ] || skip "no Fashion-MNIST in $data"

pipe() { # NAME SPARSITY
	cat > "$tmp/$1.yaml" <<YAML
mcomp: 1
seed: 7
data:
  train: {idx: $data/train, count: 200}
models:
  m:
    build: {input: [1, 28, 28], layers: [flatten, {linear: 64}, relu, {linear: 10}]}
passes:
  - prune: {model: m, method: magnitude, sparsity: $2}
  - quantize: {model: m, bits: 4, mode: weight-only, granularity: per-group, group_size: 32,
               overrides: {linear1: per-channel}}
output: $1.safetensors
YAML
	expect 0 "wrote .*$1.safetensors" "$mcomp" run "$tmp/$1.yaml"
}
pipe q4 0.75
pipe dense 0

# The header: linear1.weight as __mask U8 [784 * 64 / 8] and __values U8
# [ceil(nnz / 2)], nnz a quarter of the weights; the dense file keeps U8 [25088].
header() { # FILE PYTHON-EXPRESSION-OF-h-AND-sp
	python3 - "$1" "$2" <<'PY'
import json, struct, sys
b = open(sys.argv[1], "rb").read()
n = struct.unpack("<Q", b[:8])[0]
h = json.loads(b[8:8 + n])
sp = json.loads(h["__metadata__"].get("mcomp.sparse", "{}"))
sys.exit(0 if eval(sys.argv[2]) else 1)
PY
}
header "$tmp/q4.safetensors" 'sp["linear1.weight"]["format"] == "bitmask" and sp["linear1.weight"]["nnz"] == 12544 and h["linear1.weight.__mask"]["shape"] == [6272] and h["linear1.weight.__values"] == {"dtype": "U8", "shape": [6272], "data_offsets": h["linear1.weight.__values"]["data_offsets"]} and "linear1.weight" not in h' &&
	ok || bad "q4.safetensors does not store linear1.weight as a bitmask and 6272 bytes of codes"
header "$tmp/dense.safetensors" 'h["linear1.weight"]["shape"] == [25088] and "linear1.weight" not in sp' &&
	ok || bad "dense.safetensors does not store linear1.weight dense"
s=$(wc -c < "$tmp/q4.safetensors") d=$(wc -c < "$tmp/dense.safetensors")
echo "4-bit MLP: 75% sparse $s bytes, dense $d bytes"
[ "$s" -lt "$((d * 4 / 5))" ] && ok || bad "the 75% sparse 4-bit file ($s bytes) is not below 0.8 x the dense one ($d)"
expect 0 "linear1.weight.__values +U8 +\[6272\]" "$mcomp" inspect "$tmp/q4.safetensors"
expect 0 "parameters: 50974 \(12862 nonzero\)" "$mcomp" inspect "$tmp/q4.safetensors"

# Loaded and saved again: the same bytes.
cat > "$tmp/again.yaml" <<YAML
mcomp: 1
models:
  m: {load: q4.safetensors}
passes: []
output: again.safetensors
YAML
expect 0 "wrote .*again.safetensors" "$mcomp" run "$tmp/again.yaml"
cmp -s "$tmp/q4.safetensors" "$tmp/again.safetensors" && ok || bad "q4.safetensors loaded and saved is not the same file"

# ONNX export: the weights written dense as INT4, the note says so.
expect 0 "75.0% of the weights are zero \(pruned\).*the size gain of sparse storage stays in the .safetensors" \
	"$mcomp" export "$tmp/q4.safetensors" -o "$tmp/q4.onnx"
[ -s "$tmp/q4.onnx" ] && ok || bad "no q4.onnx"

# Edited files: refused, naming the file and the tensor.
edit() { # OUT PIECE BYTE VALUE
	python3 - "$tmp/q4.safetensors" "$tmp/$1" "$2" "$3" "$4" <<'PY'
import json, struct, sys
b = bytearray(open(sys.argv[1], "rb").read())
n = struct.unpack("<Q", b[:8])[0]
h = json.loads(b[8:8 + n])
b[8 + n + h[sys.argv[3]]["data_offsets"][0] + int(sys.argv[4])] = int(sys.argv[5], 0)
open(sys.argv[2], "wb").write(b)
PY
}
edit zero.safetensors linear1.weight.__values 0 0x88
expect 1 "zero.safetensors: tensor 'linear1.weight.__values' code 0 is q = 0, which the stored positions leave implicit; the file is corrupt" \
	"$mcomp" inspect "$tmp/zero.safetensors"
expect 1 "zero.safetensors: tensor 'linear1.weight.__values' code 0 is q = 0" \
	"$mcomp" export "$tmp/zero.safetensors" -o "$tmp/zero.onnx"
[ -e "$tmp/zero.onnx" ] && bad "a refused export wrote zero.onnx" || ok
sed 's/q4.safetensors/zero.safetensors/' "$tmp/again.yaml" > "$tmp/zero.yaml"
expect 2 "zero.yaml:3:[0-9]+: model 'm': tensor 'linear1.weight.__values' code 0 is q = 0" \
	"$mcomp" run "$tmp/zero.yaml"
edit mask.safetensors linear1.weight.__mask 0 0xff
expect 1 "mask.safetensors: tensor 'linear1.weight.__mask' sets (more bits than nnz|[0-9]+ bits for 12544 values); the file is corrupt" \
	"$mcomp" inspect "$tmp/mask.safetensors"
finish
