#!/bin/sh
# torchvision.sh - torchvision's ImageNet classifiers, as PyTorch exports
# them, through mcomp: resnet18, mobilenet_v2, mobilenet_v3_small,
# efficientnet_b0 and squeezenet1_1 (its Fire modules Concat channels), at
# random weights (weights=None: nothing is downloaded) with the batch-norm
# running statistics and affine parameters randomised too, so that folding
# them is tested. Each is exported at opset 13 with a symbolic batch and
# run at [2, 3, 64, 64]:
#   - `mcomp predict` on the .onnx gives PyTorch's logits to 1e-4, absolute
#     and relative to the largest logit;
#   - `mcomp import`, then `mcomp export` of the .safetensors, run in ONNX
#     Runtime (tests/ort_run.js), gives them to 1e-4 as well.
# The largest difference per model is printed. Needs Debian's
# python3-torch, python3-torchvision and python3-numpy for /usr/bin/python3
# (scripts/setup.sh does not install them): without them, SKIP (77);
# without node or onnxruntime-node, the ONNX Runtime half is skipped.
set -u
: "${MCOMP_BUILDDIR:?run through make check}" "${MCOMP_SRCDIR:?run through make check}"
mcomp="$MCOMP_BUILDDIR/mcomp"
ortjs="$MCOMP_SRCDIR/tests/ort_run.js"
py=/usr/bin/python3
tmp=$(mktemp -d "${TMPDIR:-/tmp}/mcomp-torchvision-XXXXXX")
trap 'rm -rf "$tmp"' EXIT
. "$MCOMP_SRCDIR/tests/expect.sh"
models="resnet18 mobilenet_v2 mobilenet_v3_small efficientnet_b0 squeezenet1_1"
tol=1e-4

finish() {
	echo "torchvision.sh: $pass passed, $fail failed"
	[ "$fail" = 0 ] || exit 1
	exit "${1:-0}"
}

if [ ! -x "$py" ] || ! "$py" -c 'import torch, torchvision, numpy' > /dev/null 2>&1; then
	echo "SKIP: $py lacks torch, torchvision or numpy (apt-get install python3-torch python3-torchvision python3-numpy)"
	exit 77
fi

# The models, the input and PyTorch's logits: MODEL.onnx, x.npy, MODEL.torch.npy.
OMP_NUM_THREADS=2 "$py" - "$tmp" $models <<'EOF' || { bad "exporting from PyTorch failed"; finish; }
import sys, warnings
import numpy as np
import torch
import torchvision

warnings.filterwarnings("ignore")
torch.set_num_threads(2)
out = sys.argv[1]
torch.manual_seed(0)
x = torch.rand(2, 3, 64, 64)
np.save(f"{out}/x.npy", x.numpy())
for name in sys.argv[2:]:
    torch.manual_seed(1)
    m = getattr(torchvision.models, name)(weights=None).eval()
    with torch.no_grad():
        for mod in m.modules():
            if isinstance(mod, torch.nn.BatchNorm2d):
                mod.running_mean.uniform_(-0.2, 0.2)
                mod.running_var.uniform_(0.5, 2.0)
                mod.weight.uniform_(0.5, 1.5)
                mod.bias.uniform_(-0.2, 0.2)
        y = m(x)
    torch.onnx.export(m, x, f"{out}/{name}.onnx", opset_version=13, input_names=["input"],
                      output_names=["logits"], dynamic_axes={"input": {0: "N"}})
    np.save(f"{out}/{name}.torch.npy", y.numpy())
    print(f"{name}: exported, logits up to {float(y.abs().max()):.3g}")
EOF

# compare NAME A.npy B.npy (B PyTorch's): prints the largest |A - B|, and it
# over the largest |B| (random weights make some logits small); fails when
# either is above tol
compare() {
	d=$("$py" -c 'import sys, numpy as np
a, b = np.load(sys.argv[1]), np.load(sys.argv[2])
if a.shape != b.shape:
    print("shape %s, not %s" % (a.shape, b.shape))
else:
    d = float(np.abs(a - b).max())
    print("%.3g %.3g" % (d, d / max(float(np.abs(b).max()), 1e-30)))' "$2" "$3" 2>&1)
	echo "$1: max |difference| ${d% *}, relative to the largest logit ${d#* }"
	awk -v d="$d" -v t="$tol" 'BEGIN { n = split(d, v, " ")
		exit !(n == 2 && v[1] ~ /^[0-9.e+-]+$/ && v[1] + 0 <= t + 0 && v[2] + 0 <= t + 0) }' &&
		ok || bad "$1 differs from PyTorch by $d (allowed $tol, absolute and relative)"
}

ort=1
node "$ortjs" probe > /dev/null 2>&1 || {
	ort=0
	echo "SKIP: the ONNX Runtime half: no node or onnxruntime-node (scripts/setup.sh installs it)"
}
for m in $models; do
	expect 0 "wrote" "$mcomp" predict "$tmp/$m.onnx" --input "$tmp/x.npy" -o "$tmp/$m.mcomp.npy"
	compare "$m mcomp predict" "$tmp/$m.mcomp.npy" "$tmp/$m.torch.npy"
	[ "$ort" = 1 ] || continue
	expect 0 "-> .*$m.safetensors" "$mcomp" import "$tmp/$m.onnx" -o "$tmp/$m.safetensors"
	expect 0 "-> .*$m.back.onnx" "$mcomp" export "$tmp/$m.safetensors" -o "$tmp/$m.back.onnx"
	expect 0 "" node "$ortjs" run "$tmp/$m.back.onnx" "$tmp/x.npy" "$tmp/$m.ort.npy"
	compare "$m exported, ONNX Runtime" "$tmp/$m.ort.npy" "$tmp/$m.torch.npy"
done
finish
