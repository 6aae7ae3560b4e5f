#!/usr/bin/python3
# SPDX-License-Identifier: MIT
"""PyTorch doing what bench/bench_train does, for a side-by-side comparison.

    /usr/bin/python3 bench/torch_peer.py [-d DIR] [-s STEPS] [-w WARMUP] [-r REPS] [-T MAX_SECONDS]
                                         [-m MIN_SECONDS] [-t THREADS] mlp|student|cnn train|lat1|lat256...

Same models, same batches (128 in order from Fashion-MNIST's training images in
DIR, or 8192 random samples of that shape), same loss (softmax cross-entropy),
same optimizer (Adam, lr 1e-3), same timing (median of REPS runs of STEPS steps
after WARMUP steps, a run cut short after MAX_SECONDS if given; latency: median of single forwards under inference_mode,
at least 5 and at least MIN_SECONDS), and the same output lines:

    RESULT train_mlp <samples/s>
    RESULT lat1_mlp <milliseconds>

The environment (OMP_WAIT_POLICY, OPENBLAS_CORETYPE) is the caller's: bench/run.sh
runs this script once per configuration.
"""
import argparse
import gzip
import os
import statistics
import sys
import time

import torch
import torch.nn as nn
import torch.nn.functional as F

BATCH = 128


def mlp():
    return nn.Sequential(nn.Flatten(), nn.Linear(784, 512), nn.ReLU(), nn.Linear(512, 256),
                         nn.ReLU(), nn.Linear(256, 10))


def student():
    return nn.Sequential(nn.Flatten(), nn.Linear(784, 64), nn.ReLU(), nn.Linear(64, 10))


def cnn():
    return nn.Sequential(nn.Conv2d(1, 32, 3), nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(32, 64, 3),
                         nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(), nn.Linear(1600, 128), nn.ReLU(),
                         nn.Linear(128, 10))


def read_idx(path):
    opener = gzip.open if path.endswith(".gz") else open
    with opener(path, "rb") as f:
        raw = f.read()
    ndim = raw[3]
    dims = [int.from_bytes(raw[4 + 4 * i:8 + 4 * i], "big") for i in range(ndim)]
    data = torch.frombuffer(bytearray(raw[4 + 4 * ndim:]), dtype=torch.uint8)
    return data.reshape(dims)


def load_data(d):
    if d is None:
        g = torch.Generator().manual_seed(3)
        x = torch.rand(8192, 1, 28, 28, generator=g)
        y = torch.randint(0, 10, (8192,), generator=g)
        return x, y, "random"

    def pick(stem):
        p = os.path.join(d, stem)
        return p + ".gz" if os.path.exists(p + ".gz") else p

    x = read_idx(pick("train-images-idx3-ubyte")).float().div_(255.0).unsqueeze(1).contiguous()
    y = read_idx(pick("train-labels-idx1-ubyte")).long()
    return x, y, os.path.join(d, "train")


def bench_train(name, model, x, y, src, a):
    # foreach: PyTorch's faster multi-tensor Adam (not its default on the CPU in 1.13).
    opt = torch.optim.Adam(model.parameters(), lr=1e-3, foreach=True)
    model.train()
    nb = x.shape[0] // BATCH
    b = 0

    def step():
        nonlocal b
        xb = x[b * BATCH:(b + 1) * BATCH]
        yb = y[b * BATCH:(b + 1) * BATCH]
        b = (b + 1) % nb
        opt.zero_grad(set_to_none=True)
        loss = F.cross_entropy(model(xb), yb)
        loss.backward()
        opt.step()
        return loss.item()

    for _ in range(a.warmup):
        last = step()
    rates = []
    first = None
    done = 0
    for _ in range(a.reps):
        t0 = time.perf_counter()
        n = 0
        while n < a.steps and (n < 3 or not a.max_time or time.perf_counter() - t0 < a.max_time):
            last = step()
            n += 1
            if first is None:
                first = last
        rates.append(n * BATCH / (time.perf_counter() - t0))
        done += n
    cut = f" (cut short by -T {a.max_time:g})" if done < a.steps * a.reps else ""
    print(f"INFO train_{name} loss {first:.4f} -> {last:.4f} over {done} steps{cut} on {src}")
    print(f"RESULT train_{name} {statistics.median(rates):.1f}", flush=True)


def bench_latency(name, model, x, batch, a):
    model.eval()
    xb = x[:batch].contiguous()
    times = []
    with torch.inference_mode():
        for _ in range(3):
            model(xb)
        t0 = time.perf_counter()
        while len(times) < 100000 and (len(times) < 5 or time.perf_counter() - t0 < a.min_time):
            s = time.perf_counter()
            model(xb)
            times.append(time.perf_counter() - s)
    print(f"RESULT lat{batch}_{name} {statistics.median(times) * 1e3:.4f}", flush=True)


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("-d", dest="data")
    p.add_argument("-s", dest="steps", type=int, default=40)
    p.add_argument("-w", dest="warmup", type=int, default=5)
    p.add_argument("-r", dest="reps", type=int, default=3)
    p.add_argument("-m", dest="min_time", type=float, default=0.5)
    p.add_argument("-T", dest="max_time", type=float, default=0.0)
    p.add_argument("-t", dest="threads", type=int, default=2)
    p.add_argument("model", choices=["mlp", "student", "cnn"])
    p.add_argument("what", nargs="+", choices=["train", "lat1", "lat256"])
    a = p.parse_args()
    if a.steps < 1 or a.reps < 1 or a.warmup < 0 or a.threads < 1:
        p.error("steps, reps and threads must be at least 1, warmup at least 0")

    torch.set_num_threads(a.threads)
    torch.manual_seed(1)
    x, y, src = load_data(a.data)
    model = {"mlp": mlp, "student": student, "cnn": cnn}[a.model]()
    print(f"INFO torch {torch.__version__}, {torch.get_num_threads()} threads, "
          f"OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY', '(unset)')}, "
          f"OPENBLAS_CORETYPE={os.environ.get('OPENBLAS_CORETYPE', '(unset)')}, data {src}")
    for w in a.what:
        if w == "train":
            bench_train(a.model, model, x, y, src, a)
        else:
            bench_latency(a.model, model, x, 1 if w == "lat1" else 256, a)
    return 0


if __name__ == "__main__":
    sys.exit(main())
