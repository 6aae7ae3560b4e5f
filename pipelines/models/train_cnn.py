#!/usr/bin/python3
# SPDX-License-Identifier: MIT
"""train_cnn.py - the PyTorch model that pipelines/onnx-compress.yaml imports.

Trains a small CNN on Fashion-MNIST with PyTorch, as a user of mcomp would
have done before bringing the model in, and exports it with
torch.onnx.export:

    pipelines/models/fmnist-cnn.onnx   the model (opset 13, batch symbolic)
    pipelines/models/fmnist-cnn.json   what PyTorch measured on the test split:
                                       {"count": 10000, "correct": N,
                                        "accuracy": A, "opset": 13, "torch": V}

The network: conv 1->16 3x3 + batch norm + relu, maxpool 2, conv 16->32 3x3
+ batch norm + relu, maxpool 2, flatten, fc 1568->64, relu, fc 64->10. In
evaluation mode torch.onnx.export folds each batch norm into its conv.
Inputs are the IDX bytes / 255 in [N, 1, 28, 28], as mcomp loads them.
Run with Debian's python3-torch (1.13; the `python3` of a pyenv has none):

    /usr/bin/python3 pipelines/models/train_cnn.py [DATA_DIR]

(DATA_DIR defaults to /usr/share/datasets/fashion-mnist). Deterministic for
a given PyTorch build: it uses one thread and fixed seeds.
"""
import gzip
import json
import os
import struct
import sys

import numpy as np
import torch
from torch import nn

OPSET = 13
HERE = os.path.dirname(os.path.abspath(__file__))


def idx(path):
    with gzip.open(path, "rb") as f:
        data = f.read()
    magic, = struct.unpack(">I", data[:4])
    ndim = magic & 0xFF
    dims = struct.unpack(">" + "I" * ndim, data[4:4 + 4 * ndim])
    return np.frombuffer(data, np.uint8, offset=4 + 4 * ndim).reshape(dims)


def load(data_dir, split):
    x = idx(os.path.join(data_dir, split + "-images-idx3-ubyte.gz"))
    y = idx(os.path.join(data_dir, split + "-labels-idx1-ubyte.gz"))
    x = torch.from_numpy(x.astype(np.float32) / np.float32(255)).unsqueeze(1)
    return x, torch.from_numpy(y.astype(np.int64))


class Cnn(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 16, 3, padding=1)
        self.bn1 = nn.BatchNorm2d(16)
        self.conv2 = nn.Conv2d(16, 32, 3, padding=1)
        self.bn2 = nn.BatchNorm2d(32)
        self.pool = nn.MaxPool2d(2)
        self.fc1 = nn.Linear(32 * 7 * 7, 64)
        self.fc2 = nn.Linear(64, 10)

    def forward(self, x):
        x = self.pool(torch.relu(self.bn1(self.conv1(x))))
        x = self.pool(torch.relu(self.bn2(self.conv2(x))))
        return self.fc2(torch.relu(self.fc1(torch.flatten(x, 1))))


def main():
    data_dir = sys.argv[1] if len(sys.argv) > 1 else "/usr/share/datasets/fashion-mnist"
    torch.set_num_threads(1)
    torch.manual_seed(0)
    xtr, ytr = load(data_dir, "train")
    xte, yte = load(data_dir, "t10k")
    model = Cnn()
    opt = torch.optim.Adam(model.parameters(), lr=0.002)
    g = torch.Generator().manual_seed(1)
    for epoch in range(4):
        model.train()
        perm = torch.randperm(len(xtr), generator=g)
        for i in range(0, len(xtr), 128):
            b = perm[i:i + 128]
            opt.zero_grad()
            nn.functional.cross_entropy(model(xtr[b]), ytr[b]).backward()
            opt.step()
        print("epoch", epoch + 1, "done", flush=True)
    model.eval()
    with torch.no_grad():
        correct = int((model(xte).argmax(1) == yte).sum())
    onnx_path = os.path.join(HERE, "fmnist-cnn.onnx")
    torch.onnx.export(model, torch.zeros(1, 1, 28, 28), onnx_path,
                      input_names=["input"], output_names=["logits"],
                      dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}},
                      opset_version=OPSET)
    ref = {"count": len(yte), "correct": correct, "accuracy": correct / len(yte),
           "opset": OPSET, "torch": torch.__version__}
    with open(os.path.join(HERE, "fmnist-cnn.json"), "w") as f:
        json.dump(ref, f, indent=1)
        f.write("\n")
    print("test accuracy %.4f (%d / %d); wrote %s" % (ref["accuracy"], correct, len(yte), onnx_path))


if __name__ == "__main__":
    main()
