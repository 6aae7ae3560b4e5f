#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""ONNX Runtime's latency through its Python binding, for bench/run.sh ort
where onnxruntime-node is not installed (BENCH_ORT=python).

    ort_peer.py MODEL.onnx --batch B [--seconds S] [--threads T] [--shape 1,28,28]

prints "RESULT lat_bB_ms MS": the median of single timed runs on fixed
inputs, as tests/ort_run.js latency and bench/bench_infer.c time them (two
warm-up runs, then at least 20 and at least S seconds, at most 200).
Exits 77 when onnxruntime or numpy cannot be imported.
"""
import argparse
import sys
import time

try:
    import numpy as np
    import onnxruntime as ort
except ImportError as e:  # the SKIP of bench/run.sh
    print(f"ort_peer.py: {e}", file=sys.stderr)
    sys.exit(77)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("model")
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--seconds", type=float, default=0.5)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--shape", default="1,28,28")
    ap.add_argument("--version", action="store_true")
    a = ap.parse_args()
    so = ort.SessionOptions()
    so.intra_op_num_threads = a.threads
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    s = ort.InferenceSession(a.model, so, providers=["CPUExecutionProvider"])
    shape = [a.batch] + [int(d) for d in a.shape.split(",")]
    # the inputs of tests/ort_run.js: a linear congruential sequence in [0, 1)
    n = int(np.prod(shape))
    seq = np.empty(n, dtype=np.uint64)
    v = 12345
    for k in range(n):
        v = (v * 1664525 + 1013904223) & 0xFFFFFFFF
        seq[k] = v >> 8
    x = (seq.astype(np.float64) / 16777216).astype(np.float32).reshape(shape)
    feed = {s.get_inputs()[0].name: x}
    for _ in range(2):
        s.run(None, feed)
    t, start = [], time.perf_counter()
    while len(t) < 200 and (len(t) < 20 or time.perf_counter() - start < a.seconds):
        t0 = time.perf_counter()
        s.run(None, feed)
        t.append((time.perf_counter() - t0) * 1e3)
    t.sort()
    print(f"RESULT lat_b{a.batch}_ms {t[len(t) >> 1]:.6g}")
    print(f"onnxruntime {ort.__version__} (Python)", file=sys.stderr)


if __name__ == "__main__":
    main()
