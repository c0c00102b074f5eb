#!/usr/bin/env python3
"""PyTorch eager baseline for the routing kernels, same semantics and shapes as `go run ./bench`.

Semantics (../shared/notes/moe-routing.md, as the original ExpertRT v1 baseline):
  route    = softmax(logits) in fp32, topk, renormalise; stable argsort of the flat indices, bincount,
             cumsum (the plan: order, inverse permutation, counts, offsets)
  dispatch = index_select(x, 0, order // k)                       [T*k, H], expert-major
  combine  = inverse permutation + weighted sum over k (deterministic, no atomics)
  dispatch backward = the unweighted combine of d packed
  combine backward  = d packed rows w[t,j] * dy[t] (expert-major) and dw[t,j] = <dy[t], ye[row(t,j)]>
Timing: CUDA events around each op, median of --reps after --warmup; the device-to-device copy baseline
(dst.copy_(src) of the op's output size) is timed in the same run; bandwidth = minimal bytes / time
(read + written), copy bandwidth = 2 * bytes / time.

With --dtype bfloat16 the rows (x, expert outputs, dy and the packed gradients) are bfloat16 while logits and
routing weights stay float32, as `go run ./bench -dtype bfloat16` runs them: combine sums the weighted rows in
float32 (torch's type promotion) and rounds the result to bfloat16; dw is a bfloat16 einsum (fp32 accumulation).
Byte counts use the row element size throughout, as the Go bench does.

Usage: pytorch_baseline.py [--json out.json] [--reps 50] [--dtype float32|bfloat16]
"""
import argparse
import json
import statistics

import torch


def timeit(fn, reps, warmup):
    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    ts = []
    for _ in range(reps):
        a = torch.cuda.Event(enable_timing=True)
        b = torch.cuda.Event(enable_timing=True)
        a.record()
        fn()
        b.record()
        b.synchronize()
        ts.append(a.elapsed_time(b))
    return statistics.median(ts)


def route(logits, k):
    p = torch.softmax(logits, dim=1)
    w, idx = torch.topk(p, k, dim=1)
    w = w / w.sum(dim=1, keepdim=True)
    flat = idx.reshape(-1)
    order = torch.argsort(flat, stable=True)
    counts = torch.bincount(flat, minlength=logits.shape[1])
    offsets = torch.cumsum(counts, 0)
    row_of = torch.empty_like(order)
    row_of[order] = torch.arange(order.numel(), device=order.device)
    return idx, w, order, row_of, counts, offsets


def dispatch(x, order, k):
    return torch.index_select(x, 0, order // k)


def combine(ye, w, row_of):
    T, k = w.shape
    return (ye.index_select(0, row_of).view(T, k, -1) * w.unsqueeze(-1)).sum(dim=1).to(ye.dtype)


def dispatch_bwd(dpacked, row_of, T, k):
    return dpacked.index_select(0, row_of).view(T, k, -1).sum(dim=1)


def combine_bwd(dy, ye, w, order, row_of):
    T, k = w.shape
    dye = (w.unsqueeze(-1) * dy.unsqueeze(1)).reshape(T * k, -1).index_select(0, order).to(dy.dtype)
    dw = torch.einsum("th,tkh->tk", dy, ye.index_select(0, row_of).view(T, k, -1)).to(w.dtype)
    return dye, dw


def bench_shape(T, H, E, k, reps, warmup, dev, dt=torch.float32):
    g = torch.Generator(device=dev).manual_seed(1)
    logits = (torch.rand(T, E, device=dev, generator=g) * 8 - 4)
    x = (torch.rand(T, H, device=dev, generator=g) * 2 - 1).to(dt)
    ye = (torch.rand(T * k, H, device=dev, generator=g) * 2 - 1).to(dt)
    dy = (torch.rand(T, H, device=dev, generator=g) * 2 - 1).to(dt)
    idx, w, order, row_of, counts, offsets = route(logits, k)
    es = torch.finfo(dt).bits // 8
    th, tk, te = T * H, T * k, T * E
    rows = []

    def add(op, fn, read, written):
        ms = timeit(fn, reps, warmup)
        src = torch.empty(written // 4 + 1, dtype=torch.float32, device=dev)
        dst = torch.empty_like(src)
        cms = timeit(lambda: dst.copy_(src), reps, warmup)
        gb = (read + written) / (ms * 1e-3) / 1e9
        cgb = 2 * src.numel() * 4 / (cms * 1e-3) / 1e9
        rows.append(dict(op=op, tokens=T, hidden=H, experts=E, top_k=k, median_ms=ms, gb_per_s=gb,
                         copy_gb_per_s=cgb, ratio_to_copy=gb / cgb, dtype=str(dt).replace("torch.", "")))

    add("route", lambda: route(logits, k), te * es, tk * 4 + tk * es)
    add("dispatch", lambda: dispatch(x, order, k), th * es, th * k * es)
    add("dispatch-bwd", lambda: dispatch_bwd(ye, row_of, T, k), th * k * es, th * es)
    add("combine", lambda: combine(ye, w, row_of), (th * k + tk) * es, th * es)
    add("combine-bwd", lambda: combine_bwd(dy, ye, w, order, row_of), (th + tk + th * k) * es, (th * k + tk) * es)

    def e2e():
        _, w2, order2, row_of2, _, _ = route(logits, k)
        packed = dispatch(x, order2, k)
        return combine(packed, w2, row_of2)

    add("e2e", e2e, (te + th + th * k + tk) * es, (th * k + th + tk * 2) * es)
    return rows


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--reps", type=int, default=50)
    ap.add_argument("--warmup", type=int, default=10)
    ap.add_argument("--json", default="")
    ap.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    ap.add_argument("--quick", action="store_true", help="only T=4096 and T=16384 with H=4096, E=16, k=2")
    a = ap.parse_args()
    dt = getattr(torch, a.dtype)
    torch.backends.cuda.matmul.allow_tf32 = False
    dev = "cuda"
    name = torch.cuda.get_device_name(0)
    print(f"PyTorch {torch.__version__} eager, {a.dtype} rows, {name}; median of {a.reps} (CUDA events)")
    shapes = [(4096, 4096, 16, 2), (4096, 4096, 64, 2), (16384, 4096, 16, 2), (16384, 4096, 64, 2), (8192, 4096, 32, 2)]
    if a.quick:
        shapes = [(4096, 4096, 16, 2), (16384, 4096, 16, 2)]
    allrows = []
    for T, H, E, k in shapes:
        rows = bench_shape(T, H, E, k, a.reps, a.warmup, dev, dt)
        for r in rows:
            r["device"] = name
            print(f"torch {r['op']:14s} T={T:6d} H={H} E={E:3d} k={k}  {r['median_ms']*1e3:9.1f} us  "
                  f"{r['gb_per_s']:7.1f} GB/s  copy {r['copy_gb_per_s']:7.1f} GB/s  ratio {r['ratio_to_copy']:.3f}")
        allrows += rows
    if a.json:
        json.dump(allrows, open(a.json, "w"), indent=1)


if __name__ == "__main__":
    main()
