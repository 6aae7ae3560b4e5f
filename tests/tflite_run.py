#!/usr/bin/python3
# tflite_run.py - the independent reader of tests/tflite.sh: Arm NN's TFLite
# parser and its reference CPU backend (Debian's python3-pyarmnn), through
# /usr/bin/python3 and NumPy.
#
#   tflite_run.py probe
#       exit 0 when pyarmnn loads with the TFLite parser and CpuRef, else 77
#       with the reason on stderr
#   tflite_run.py idx IMAGES.gz N OUT.npy LABELS.gz OUT_LABELS.npy
#       the first N images as float32 [N, 1, 28, 28] scaled to [0, 1] (what
#       mcomp's idx splits give) and their labels
#   tflite_run.py run MODEL.tflite X.npy OUT.npy
#       loads the file, runs every sample (batch 1; X NCHW is fed NHWC) and
#       writes the outputs [N, ...]
#   tflite_run.py compare MCOMP.npy ARMNN.npy LABELS.npy
#       prints max_abs=, max_rel=, argmax_disagree=, correct_mcomp=,
#       correct_armnn= (rel: max abs difference over the max |logit|)
import gzip
import sys

import numpy as np


def probe():
    try:
        import pyarmnn as ann  # noqa: F401
    except Exception as exc:  # any failure to load is a SKIP
        sys.stderr.write("no pyarmnn (apt-get install python3-pyarmnn libarmnntfliteparser22 "
                         "libarmnn-cpuref-backend22): %s\n" % exc)
        return 77
    if not hasattr(ann, "ITfLiteParser"):
        sys.stderr.write("pyarmnn has no TFLite parser (apt-get install libarmnntfliteparser22)\n")
        return 77
    return 0


def idx(images, n, out, labels, out_labels):
    with gzip.open(images, "rb") as f:
        raw = f.read()
    count, rows, cols = (int.from_bytes(raw[k:k + 4], "big") for k in (4, 8, 12))
    n = min(n, count)
    x = np.frombuffer(raw, np.uint8, n * rows * cols, 16).reshape(n, 1, rows, cols)
    np.save(out, x.astype(np.float32) / np.float32(255))
    with gzip.open(labels, "rb") as f:
        raw = f.read()
    np.save(out_labels, np.frombuffer(raw, np.uint8, n, 8).astype(np.int64))
    return 0


def run(model, xfile, out):
    import pyarmnn as ann

    parser = ann.ITfLiteParser()
    net = parser.CreateNetworkFromBinaryFile(model)
    inputs = parser.GetSubgraphInputTensorNames(0)
    outputs = parser.GetSubgraphOutputTensorNames(0)
    ib = parser.GetNetworkInputBindingInfo(0, inputs[0])
    ob = parser.GetNetworkOutputBindingInfo(0, outputs[0])
    rt = ann.IRuntime(ann.CreationOptions())
    opt, _ = ann.Optimize(net, [ann.BackendId("CpuRef")], rt.GetDeviceSpec(),
                          ann.OptimizerOptions())
    nid, _ = rt.LoadNetwork(opt)
    x = np.load(xfile).astype(np.float32)
    if x.ndim == 4:
        x = x.transpose(0, 2, 3, 1)  # NCHW -> NHWC
    ys = []
    for k in range(x.shape[0]):
        it = ann.make_input_tensors([ib], [np.ascontiguousarray(x[k:k + 1])])
        ot = ann.make_output_tensors([ob])
        rt.EnqueueWorkload(nid, it, ot)
        ys.append(ann.workload_tensors_to_ndarray(ot)[0].reshape(-1))
    np.save(out, np.stack(ys).astype(np.float32))
    return 0


def compare(a, b, labels):
    a, b, y = np.load(a), np.load(b), np.load(labels)
    a = a.reshape(a.shape[0], -1)
    b = b.reshape(b.shape[0], -1)
    d = np.abs(a.astype(np.float64) - b)
    # the quantum of an int8 output (so (q - zo)): the least step between its values
    u = np.unique(a)
    step = np.diff(u).min() if len(u) > 1 else 0.0
    print("max_abs=%.9g max_rel=%.9g quantum=%.9g max_quanta=%.4f differ=%d/%d argmax_disagree=%d "
          "correct_mcomp=%d correct_armnn=%d n=%d"
          % (d.max(), d.max() / max(np.abs(a).max(), 1e-30), step,
             d.max() / step if step > 0 else float("inf"), int((d > 0).sum()), d.size,
             int((a.argmax(1) != b.argmax(1)).sum()), int((a.argmax(1) == y[:len(a)]).sum()),
             int((b.argmax(1) == y[:len(b)]).sum()), len(a)))
    return 0


def main(argv):
    if argv[1:2] == ["probe"]:
        return probe()
    if argv[1:2] == ["idx"] and len(argv) == 7:
        return idx(argv[2], int(argv[3]), argv[4], argv[5], argv[6])
    if argv[1:2] == ["run"] and len(argv) == 5:
        return run(argv[2], argv[3], argv[4])
    if argv[1:2] == ["compare"] and len(argv) == 5:
        return compare(argv[2], argv[3], argv[4])
    sys.stderr.write(__doc__ if __doc__ else "usage: see tests/tflite_run.py\n")
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv))
