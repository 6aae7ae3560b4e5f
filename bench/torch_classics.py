#!/usr/bin/python3
# SPDX-License-Identifier: MIT
"""
The PyTorch side of the classic recipes (issue 15): the same MobileNetV2 and
ResNet architectures as pipelines/mobilenetv2.yaml and
pipelines/resnet-distill.yaml, trained the same way (Adam, cosine learning
rate per step down to 0, batch 128, the same shift/flip augmentation), so
accuracy, size and CPU latency can be put beside mcomp's.

    /usr/bin/python3 bench/torch_classics.py --data DIR --model mbv2 --epochs 2
    /usr/bin/python3 bench/torch_classics.py --data DIR --model resnet \
        --width 16 --epochs 2 --distill-width 8 --distill-epochs 5

A grid of students distilled from one teacher trains the teacher once:

    /usr/bin/python3 bench/torch_classics.py --data DIR --model resnet --device cuda \
        --width 16 --blocks 2 --epochs 15 --shift 2 --teacher-file t.pt --no-latency \
        --distill-width 4 --distill-blocks 1 --distill-epochs 15 --temperature 2 \
        --alpha 0.5 --seed S

(the first run trains the teacher and saves it to t.pt, the others load it;
--no-scratch leaves out the student trained alone).

DIR holds the Fashion-MNIST IDX files (train-images-idx3-ubyte.gz, ...).
Prints one line per trained model:
    RESULT model=... acc=... params=... bytes=... lat1_ms=... lat256_ms=...
Latency is measured on the CPU with --threads threads (default 2), whatever
device trained the model.
"""
import argparse
import gzip
import math
import os
import struct
import time

import torch
import torch.nn as nn
import torch.nn.functional as F


def read_idx(path):
    op = gzip.open if path.endswith(".gz") else open
    with op(path, "rb") as f:
        data = f.read()
    magic, = struct.unpack(">I", data[:4])
    nd = magic & 0xFF
    dims = struct.unpack(">" + "I" * nd, data[4:4 + 4 * nd])
    t = torch.frombuffer(bytearray(data[4 + 4 * nd:]), dtype=torch.uint8)
    return t.reshape(dims)


def load(data, split):
    def find(kind):
        for ext in ("", ".gz"):
            p = os.path.join(data, "%s-%s%s" % (split, kind, ext))
            if os.path.exists(p):
                return p
        raise SystemExit("torch_classics: no %s-%s in %s" % (split, kind, data))
    x = read_idx(find("images-idx3-ubyte")).float().div_(255.0).unsqueeze(1)
    y = read_idx(find("labels-idx1-ubyte")).long()
    return x, y


class InvertedResidual(nn.Module):
    def __init__(self, cin, cout, expansion, stride):
        super().__init__()
        mid = cin * expansion
        layers = []
        if expansion != 1:
            layers += [nn.Conv2d(cin, mid, 1, bias=False), nn.BatchNorm2d(mid), nn.ReLU6()]
        layers += [nn.Conv2d(mid, mid, 3, stride, 1, groups=mid, bias=False),
                   nn.BatchNorm2d(mid), nn.ReLU6(),
                   nn.Conv2d(mid, cout, 1, bias=False), nn.BatchNorm2d(cout)]
        self.body = nn.Sequential(*layers)
        self.residual = stride == 1 and cin == cout

    def forward(self, x):
        y = self.body(x)
        return x + y if self.residual else y


def mobilenetv2(width=1.0, stem_stride=2, expansion=4, head=128, strides=(1, 2, 1, 2)):
    def w(c):
        return max(1, int(round(c * width)))
    stem = w(16)
    layers = [nn.Conv2d(1, stem, 3, stem_stride, 1, bias=False), nn.BatchNorm2d(stem), nn.ReLU6()]
    cin = stem
    # (t, c, n, s) as pipelines/mobilenetv2.yaml
    for (t, c, n), s in zip(((1, 8, 1), (expansion, 16, 2), (expansion, 24, 1),
                             (expansion, 32, 2)), strides):
        for i in range(n):
            layers.append(InvertedResidual(cin, w(c), t, s if i == 0 else 1))
            cin = w(c)
    hd = w(head)
    layers += [nn.Conv2d(cin, hd, 1, bias=False), nn.BatchNorm2d(hd), nn.ReLU6(),
               nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(hd, 10)]
    return nn.Sequential(*layers)


class Basic(nn.Module):
    def __init__(self, cin, cout, stride):
        super().__init__()
        self.c1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.b1 = nn.BatchNorm2d(cout)
        self.c2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.b2 = nn.BatchNorm2d(cout)
        self.proj = None
        if stride != 1 or cin != cout:
            self.proj = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False),
                                      nn.BatchNorm2d(cout))

    def forward(self, x):
        y = self.b2(self.c2(F.relu(self.b1(self.c1(x)))))
        return F.relu(y + (self.proj(x) if self.proj is not None else x))


def resnet(width=16, blocks=1):
    layers = [nn.Conv2d(1, width, 3, 1, 1, bias=False), nn.BatchNorm2d(width), nn.ReLU()]
    cin = width
    for i, (c, s) in enumerate(((width, 1), (2 * width, 2), (4 * width, 2))):
        for b in range(blocks):
            layers.append(Basic(cin, c, s if b == 0 else 1))
            cin = c
    layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(cin, 10)]
    return nn.Sequential(*layers)


def augment(x, shift, hflip, gen):
    n = x.shape[0]
    if shift > 0:
        h, w = x.shape[2], x.shape[3]
        p = F.pad(x, (shift, shift, shift, shift))
        dy = torch.randint(0, 2 * shift + 1, (n,), generator=gen, device="cpu").to(x.device)
        dx = torch.randint(0, 2 * shift + 1, (n,), generator=gen, device="cpu").to(x.device)
        iy = (dy.view(n, 1) + torch.arange(h, device=x.device).view(1, h))
        ix = (dx.view(n, 1) + torch.arange(w, device=x.device).view(1, w))
        rows = torch.arange(n, device=x.device).view(n, 1, 1)
        x = p[:, 0][rows, iy.view(n, h, 1), ix.view(n, 1, w)].unsqueeze(1)
    if hflip:
        m = torch.randint(0, 2, (n,), generator=gen, device="cpu").bool().to(x.device)
        x = torch.where(m.view(n, 1, 1, 1), x.flip(3), x)
    return x


def evaluate(model, x, y, dev):
    model.eval()
    correct = 0
    with torch.no_grad():
        for i in range(0, x.shape[0], 1000):
            out = model(x[i:i + 1000].to(dev))
            correct += (out.argmax(1).cpu() == y[i:i + 1000]).sum().item()
    return 100.0 * correct / x.shape[0]


def train(model, x, y, a, dev, teacher=None, epochs=None):
    epochs = epochs or a.epochs
    gen = torch.Generator().manual_seed(a.seed)
    opt = torch.optim.Adam(model.parameters(), lr=a.lr)
    steps = epochs * math.ceil(x.shape[0] / a.batch)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: 0.5 * (1 + math.cos(math.pi * min(s, steps) / steps)))
    xd, yd = x.to(dev), y.to(dev)
    for ep in range(epochs):
        model.train()
        perm = torch.randperm(x.shape[0], generator=gen).to(dev)
        for i in range(0, x.shape[0], a.batch):
            idx = perm[i:i + a.batch]
            xb = augment(xd[idx], a.shift, a.hflip, gen)
            out = model(xb)
            loss = F.cross_entropy(out, yd[idx])
            if teacher is not None:
                with torch.no_grad():
                    tl = teacher(xb)
                T = a.temperature
                kd = F.kl_div(F.log_softmax(out / T, 1), F.softmax(tl / T, 1),
                              reduction="batchmean") * T * T
                loss = a.alpha * kd + (1 - a.alpha) * loss
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
    return model


def latency(model, batch, threads, reps=20):
    torch.set_num_threads(threads)
    model = model.cpu().eval()
    x = torch.randn(batch, 1, 28, 28)
    with torch.no_grad():
        for _ in range(3):
            model(x)
        ts = []
        for _ in range(reps):
            t = time.perf_counter()
            model(x)
            ts.append(time.perf_counter() - t)
    ts.sort()
    return 1000.0 * ts[len(ts) // 2]


def report(name, model, acc, a):
    params = sum(p.numel() for p in model.parameters())
    buffers = sum(b.numel() for n, b in model.named_buffers() if "running" in n)
    if a.no_latency:
        print("RESULT model=%s acc=%.2f params=%d bytes=%d" %
              (name, acc, params + buffers, 4 * (params + buffers)), flush=True)
        return
    l1 = latency(model, 1, a.threads)
    l256 = latency(model, 256, a.threads, 10)
    print("RESULT model=%s acc=%.2f params=%d bytes=%d lat1_ms=%.3f lat256_ms=%.2f" %
          (name, acc, params + buffers, 4 * (params + buffers), l1, l256), flush=True)


def report_int8(model, xt, xv, yv, a):
    """PyTorch's own int8 form of the model: FX static quantization (batch
    norms folded, per-channel weights, the x86 backend's kernels), the
    counterpart of mcomp's quantize pass with mode: static."""
    import io
    from torch.ao.quantization import get_default_qconfig_mapping
    from torch.ao.quantization.quantize_fx import prepare_fx, convert_fx
    engine = [e for e in ("x86", "fbgemm", "onednn", "qnnpack")
              if e in torch.backends.quantized.supported_engines][0]
    torch.backends.quantized.engine = engine
    m = model.cpu().eval()
    ex = (xt[:1],)
    q = prepare_fx(m, get_default_qconfig_mapping(engine), ex)
    with torch.no_grad():
        for i in range(0, 1000, 100):
            q(xt[i:i + 100])
    q = convert_fx(q)
    acc = evaluate(q, xv, yv, torch.device("cpu"))
    buf = io.BytesIO()
    torch.save(q.state_dict(), buf)
    l1 = latency(q, 1, a.threads)
    l256 = latency(q, 256, a.threads, 10)
    print("RESULT model=%s-int8 engine=%s acc=%.2f bytes=%d lat1_ms=%.3f lat256_ms=%.2f" %
          (a.model, engine, acc, len(buf.getvalue()), l1, l256), flush=True)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--data", required=True)
    p.add_argument("--model", choices=("mbv2", "resnet"), default="mbv2")
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--lr", type=float, default=0.004)
    p.add_argument("--shift", type=int, default=0)
    p.add_argument("--hflip", action="store_true")
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--width", type=float, default=None)
    p.add_argument("--blocks", type=int, default=1)
    p.add_argument("--stem-stride", type=int, default=2)
    p.add_argument("--expansion", type=int, default=4)
    p.add_argument("--strides", default="1,2,1,2", help="the four stages' strides")
    p.add_argument("--head", type=int, default=128)
    p.add_argument("--distill-width", type=float, default=None)
    p.add_argument("--distill-epochs", type=int, default=5)
    p.add_argument("--distill-blocks", type=int, default=None,
                   help="the student's blocks per stage (default: the teacher's)")
    p.add_argument("--temperature", type=float, default=4.0)
    p.add_argument("--alpha", type=float, default=0.7)
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--limit", type=int, default=0, help="train on the first N images only")
    p.add_argument("--teacher-file", default=None,
                   help="the trained network's weights: loaded from this file when it "
                        "exists (no training), else trained and saved there, so several "
                        "runs can distill from one teacher")
    p.add_argument("--no-scratch", action="store_true",
                   help="with --distill-width: train the distilled student only")
    p.add_argument("--no-latency", action="store_true",
                   help="report accuracy and size only (no CPU latency runs)")
    p.add_argument("--int8", action="store_true",
                   help="also quantize the trained network to int8 with PyTorch's FX graph "
                        "mode (static, per-channel, the x86 backend; calibrated on 1000 "
                        "training images, as pipelines/mobilenetv2-int8.yaml) and report it")
    a = p.parse_args()
    torch.manual_seed(a.seed)
    torch.set_num_threads(a.threads)
    dev = torch.device(a.device)
    xt, yt = load(a.data, "train")
    if a.limit:
        xt, yt = xt[:a.limit], yt[:a.limit]
    xv, yv = load(a.data, "t10k")
    if a.model == "mbv2":
        m = mobilenetv2(a.width or 1.0, a.stem_stride, a.expansion, a.head,
                        tuple(int(v) for v in a.strides.split(","))).to(dev)
    else:
        m = resnet(int(a.width or 16), a.blocks).to(dev)
    t0 = time.time()
    if a.teacher_file and os.path.exists(a.teacher_file):
        m.load_state_dict(torch.load(a.teacher_file, map_location=dev))
    elif a.epochs > 0:  # 0: latency of the untrained network only
        train(m, xt, yt, a, dev)
        if a.teacher_file:
            torch.save(m.state_dict(), a.teacher_file + ".tmp")
            os.replace(a.teacher_file + ".tmp", a.teacher_file)
    acc = evaluate(m, xv, yv, dev)
    print("trained %s in %.1f s" % (a.model, time.time() - t0), flush=True)
    report(a.model, m, acc, a)
    if a.int8:
        report_int8(m, xt, xv, yv, a)
    if a.distill_width:
        m.to(dev).eval()
        runs = (("student", m),) if a.no_scratch else (("student", m), ("scratch", None))
        for name, teacher in runs:
            torch.manual_seed(a.seed)
            s = resnet(int(a.distill_width), a.distill_blocks or a.blocks).to(dev)
            train(s, xt, yt, a, dev, teacher, a.distill_epochs)
            report(name, s, evaluate(s, xv, yv, dev), a)


if __name__ == "__main__":
    main()
