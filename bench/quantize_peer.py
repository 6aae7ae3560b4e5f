#!/usr/bin/python3
# SPDX-License-Identifier: MIT
"""PyTorch's dynamic int8 quantization on the MLP of pipelines/quantize-mlp-int8-static.yaml,
for a side-by-side comparison with mcomp's quantize pass.

    /usr/bin/python3 bench/quantize_peer.py [-d DIR] [-e EPOCHS] [-t THREADS] [-m MIN_SECONDS]

Trains the MLP 784-512-256-10 (Adam, lr 1e-3, batch 128, EPOCHS epochs over the
first 55000 training images of Fashion-MNIST in DIR, seed 7), then applies
torch.ao.quantization.quantize_dynamic to its nn.Linear layers (int8 weights
per tensor, activations quantized per batch at run time) and prints, for the
f32 model and the int8 one:

    RESULT quant_peer_acc_f32 <test accuracy, %>
    RESULT quant_peer_acc_int8 <test accuracy, %>
    RESULT quant_peer_bytes_f32 <bytes of torch.save(state_dict) into a BytesIO>
    RESULT quant_peer_bytes_int8 <...>
    RESULT quant_peer_lat1_f32 <median ms of one forward of batch 1>
    RESULT quant_peer_lat256_f32 <median ms at batch 256>
    RESULT quant_peer_lat1_int8 <...>
    RESULT quant_peer_lat256_int8 <...>

Latency: the median of single forwards under inference_mode after warm-up, at
least 20 of them and at least MIN_SECONDS; torch.set_num_threads(THREADS)
(default 2, the CI machine's cores). Needs Debian's python3-torch
(/usr/bin/python3), not another interpreter's.
"""
import argparse
import gzip
import io
import os
import statistics
import sys
import time

import torch
import torch.nn as nn
import torch.nn.functional as F

BATCH = 128
TRAIN = 55000


def mlp():
    return nn.Sequential(nn.Flatten(), nn.Linear(784, 512), nn.ReLU(), nn.Linear(512, 256),
                         nn.ReLU(), nn.Linear(256, 10))


def read_idx(path):
    opener = gzip.open if path.endswith(".gz") else open
    with opener(path, "rb") as f:
        raw = f.read()
    if len(raw) < 4 or raw[0] or raw[1] or raw[2] != 8:
        sys.exit(f"{path}: not an IDX file of unsigned bytes; give the Fashion-MNIST folder")
    ndim = raw[3]
    dims = [int.from_bytes(raw[4 + 4 * i:8 + 4 * i], "big") for i in range(ndim)]
    data = torch.frombuffer(bytearray(raw[4 + 4 * ndim:]), dtype=torch.uint8)
    return data.reshape(dims)


def load(d, split):
    def pick(stem):
        p = os.path.join(d, stem)
        return p + ".gz" if os.path.exists(p + ".gz") else p

    x = read_idx(pick(f"{split}-images-idx3-ubyte")).float().div_(255.0).unsqueeze(1)
    y = read_idx(pick(f"{split}-labels-idx1-ubyte")).long()
    return x.contiguous(), y


def train(model, x, y, epochs):
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    g = torch.Generator().manual_seed(7)
    model.train()
    for _ in range(epochs):
        perm = torch.randperm(x.shape[0], generator=g)
        for b in range(0, x.shape[0] - BATCH + 1, BATCH):
            idx = perm[b:b + BATCH]
            opt.zero_grad(set_to_none=True)
            F.cross_entropy(model(x[idx]), y[idx]).backward()
            opt.step()
    model.eval()


def accuracy(model, x, y):
    with torch.inference_mode():
        hits = sum(int((model(x[b:b + 1000]).argmax(1) == y[b:b + 1000]).sum())
                   for b in range(0, x.shape[0], 1000))
    return 100.0 * hits / x.shape[0]


def state_bytes(model):
    buf = io.BytesIO()
    torch.save(model.state_dict(), buf)
    return buf.getbuffer().nbytes


def latency_ms(model, x, batch, min_s):
    xb = x[:batch].contiguous()
    times = []
    with torch.inference_mode():
        for _ in range(5):
            model(xb)
        t_end = time.perf_counter() + min_s
        while len(times) < 20 or time.perf_counter() < t_end:
            t0 = time.perf_counter()
            model(xb)
            times.append(1e3 * (time.perf_counter() - t0))
    return statistics.median(times)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("-d", "--data", default="/usr/share/datasets/fashion-mnist")
    ap.add_argument("-e", "--epochs", type=int, default=2)
    ap.add_argument("-t", "--threads", type=int, default=2)
    ap.add_argument("-m", "--min-seconds", type=float, default=1.0)
    a = ap.parse_args()

    torch.set_num_threads(a.threads)
    torch.manual_seed(7)
    xtr, ytr = load(a.data, "train")
    xte, yte = load(a.data, "t10k")
    f32 = mlp()
    t0 = time.perf_counter()
    train(f32, xtr[:TRAIN], ytr[:TRAIN], a.epochs)
    print(f"INFO trained the MLP for {a.epochs} epochs on {TRAIN} images in "
          f"{time.perf_counter() - t0:.1f} s, {a.threads} threads, torch {torch.__version__}, "
          f"quantized engine {torch.backends.quantized.engine}")
    q = torch.ao.quantization.quantize_dynamic(f32, {nn.Linear}, dtype=torch.qint8)
    models = (("f32", f32), ("int8", q))
    for name, m in models:
        print(f"RESULT quant_peer_acc_{name} {accuracy(m, xte, yte):.2f}")
    for name, m in models:
        print(f"RESULT quant_peer_bytes_{name} {state_bytes(m)}")
    for name, m in models:
        for batch in (1, 256):
            print(f"RESULT quant_peer_lat{batch}_{name} "
                  f"{latency_ms(m, xte, batch, a.min_seconds):.4f}", flush=True)


if __name__ == "__main__":
    main()
