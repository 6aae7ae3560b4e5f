#!/bin/sh
# profile.sh - `mcomp profile`: a row per layer with its time, training adds
# backward times and the optimizer step; bad arguments are usage errors.
set -u
: "${MCOMP_BUILDDIR:?run through make check}" "${MCOMP_SRCDIR:?run through make check}"
mcomp="$MCOMP_BUILDDIR/mcomp"
tmp=$(mktemp -d "${TMPDIR:-/tmp}/mcomp-profile-XXXXXX")
trap 'rm -rf "$tmp"' EXIT
. "$MCOMP_SRCDIR/tests/expect.sh"

cat > "$tmp/cnn.yaml" <<'YAML'
mcomp: 1
models:
  m: {build: {input: [1, 12, 12], layers: [{conv2d: 4}, relu, {maxpool2d: 2}, flatten,
                                          {linear: 16}, relu, {linear: 3}]}}
passes: []
output: cnn.safetensors
YAML
expect 0 'wrote' "$mcomp" run "$tmp/cnn.yaml"
expect 0 'batch 8, inference' "$mcomp" profile "$tmp/cnn.safetensors" --batch 8 --seconds 0.05
out=$("$mcomp" profile "$tmp/cnn.safetensors" --batch 8 --seconds 0.05 2>&1)
for layer in conv2d1 relu1 maxpool2d1 flatten1 linear1 relu2 linear2 total; do
	if printf '%s\n' "$out" | grep -q -E "^$layer +"; then ok; else bad "no row for $layer: $out"; fi
done
# the convolution did work: a time above zero, and a GFLOP/s figure
if printf '%s\n' "$out" | grep -E '^conv2d1 ' | awk '{ exit !($(NF - 2) > 0 && $(NF - 1) ~ /%$/ && $NF > 0) }'; then
	ok
else
	bad "conv2d1's row has no time or no GFLOP/s: $out"
fi
expect 0 '^\(optimizer step\) +adam' "$mcomp" profile "$tmp/cnn.safetensors" --train \
	--batch 4 --seconds 0.05
expect 0 'backward ms' "$mcomp" profile "$tmp/cnn.safetensors" --train --batch 4 --seconds 0.05
expect 2 'profile needs a model file' "$mcomp" profile
expect 2 '--batch takes a whole number' "$mcomp" profile "$tmp/cnn.safetensors" --batch 0
expect 2 '--seconds takes a number' "$mcomp" profile "$tmp/cnn.safetensors" --seconds x
expect 2 "unexpected argument '--frobnicate'" "$mcomp" profile "$tmp/cnn.safetensors" --frobnicate
expect 1 'nothere.safetensors' "$mcomp" profile "$tmp/nothere.safetensors"
finish
