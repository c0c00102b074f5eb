#!/usr/bin/env python3
"""PyTorch (cuBLAS) baseline for the GEMM ops of `go run ./bench` (-op groupedmm, groupedmm-bwd,
groupedmm-bwd-x, groupedmm-bwd-w, matmul, matmul-bwd, matmul-dense), same shapes and FLOP counts.

Grouped ops are what an eager MoE layer runs: one torch.mm per expert over its rows of the expert-major
buffer (written into slices of preallocated outputs, so allocation is not timed):
  groupedmm        out_e = x_e @ W[e]                       x [T*k,H], W [E,H,F]
  groupedmm-bwd-x  dx_e  = dy_e @ W[e].T
  groupedmm-bwd-w  dW[e] = x_e.T @ dy_e
  groupedmm-bwd    both backward products
Dense ops are one torch.mm each: matmul = x @ Wg.T (router logits, N = E), matmul-bwd = dlogits @ Wg and
dlogits.T @ x, matmul-dense = x @ W [H,F].
Routing: random logits, top-k per token, rows grouped by expert (bincount gives the segment lengths);
--skew (as the Go bench's -skew): even tokens rank expert 0 first, odd tokens never choose it, so expert
0 gets exactly half the tokens.
Precision: float32 with torch.backends.cuda.matmul.allow_tf32 = False (FFMA), and True (TF32 tensor
cores) for the TF32 rows; with --bf16 bfloat16 rows instead (every tensor bfloat16, cuBLAS's bf16
tensor cores with float32 accumulation; dW is bfloat16 there, float32 in ours). Timing: CUDA events
around each op, median of --reps after --warmup. TFLOP/s counts 2*M*N*K per product; "% peak" is
against the fp32 FFMA peak of 66.9 TFLOP/s.

Usage: pytorch_gemm.py [--json out.json] [--reps 30] [--warmup 5] [--quick] [--no-tf32] [--bf16]
"""
import argparse
import json
import statistics

import torch

PEAK_FP32 = 66.9e12


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


def segments(T, E, k, skew, dev, gen):
    logits = torch.rand(T, E, device=dev, generator=gen) * 8 - 4
    if skew:
        logits[0::2, 0] = 100.0
        logits[1::2, 0] = -100.0
    idx = torch.topk(logits, k, dim=1).indices.reshape(-1)
    counts = torch.bincount(idx, minlength=E).tolist()
    offs = [0]
    for c in counts:
        offs.append(offs[-1] + c)
    return offs


def grouped_rows(T, H, F, E, k, skew, reps, warmup, dev, dt=torch.float32):
    g = torch.Generator(device=dev).manual_seed(1)
    offs = segments(T, E, k, skew, dev, g)
    n = T * k
    x = (torch.rand(n, H, device=dev, generator=g) * 2 - 1).to(dt)
    W = (torch.rand(E, H, F, device=dev, generator=g) * 2 - 1).to(dt)
    dy = (torch.rand(n, F, device=dev, generator=g) * 2 - 1).to(dt)
    out = torch.empty(n, F, device=dev, dtype=dt)
    dx = torch.empty(n, H, device=dev, dtype=dt)
    dW = torch.empty(E, H, F, device=dev, dtype=dt)
    segs = [(e, offs[e], offs[e + 1]) for e in range(E)]

    def fwd():
        for e, lo, hi in segs:
            if hi > lo:
                torch.mm(x[lo:hi], W[e], out=out[lo:hi])

    def bwd_x():
        for e, lo, hi in segs:
            if hi > lo:
                torch.mm(dy[lo:hi], W[e].t(), out=dx[lo:hi])

    def bwd_w():
        for e, lo, hi in segs:
            if hi > lo:
                torch.mm(x[lo:hi].t(), dy[lo:hi], out=dW[e])
            else:
                dW[e].zero_()

    def bwd():
        bwd_x()
        bwd_w()

    f = 2.0 * n * H * F
    shape = dict(tokens=T, hidden=H, ffn=F, experts=E, top_k=k, skew=skew, max_segment=max(b - a for _, a, b in segs))
    return [("groupedmm", fwd, f, shape), ("groupedmm-bwd-x", bwd_x, f, shape), ("groupedmm-bwd-w", bwd_w, f, shape),
            ("groupedmm-bwd", bwd, 2 * f, shape)]


def dense(T, H, F, E, dev, dt=torch.float32):
    g = torch.Generator(device=dev).manual_seed(2)
    x = (torch.rand(T, H, device=dev, generator=g) * 2 - 1).to(dt)
    wg = (torch.rand(E, H, device=dev, generator=g) * 2 - 1).to(dt)
    dl = (torch.rand(T, E, device=dev, generator=g) * 2 - 1).to(dt)
    w = (torch.rand(H, F, device=dev, generator=g) * 2 - 1).to(dt)
    logits = torch.empty(T, E, device=dev, dtype=dt)
    dx = torch.empty(T, H, device=dev, dtype=dt)
    dwg = torch.empty(E, H, device=dev, dtype=dt)
    y = torch.empty(T, F, device=dev, dtype=dt)

    def mm():
        torch.mm(x, wg.t(), out=logits)

    def mm_bwd():
        torch.mm(dl, wg, out=dx)
        torch.mm(dl.t(), x, out=dwg)

    def mm_dense():
        torch.mm(x, w, out=y)

    shape = dict(tokens=T, hidden=H, ffn=F, experts=E, top_k=0, skew=False)
    return [("matmul", mm, 2.0 * T * H * E, shape), ("matmul-bwd", mm_bwd, 4.0 * T * H * E, shape),
            ("matmul-dense", mm_dense, 2.0 * T * H * F, shape)]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--reps", type=int, default=30)
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--json", default="")
    ap.add_argument("--quick", action="store_true", help="only the T=4096 Mixtral shapes")
    ap.add_argument("--no-tf32", action="store_true", help="skip the TF32 rows")
    ap.add_argument("--bf16", action="store_true", help="bfloat16 rows only (no fp32/TF32 rows)")
    a = ap.parse_args()
    dev = "cuda"
    name = torch.cuda.get_device_name(0)
    dt = torch.bfloat16 if a.bf16 else torch.float32
    print(f"PyTorch {torch.__version__}, {'bfloat16' if a.bf16 else 'float32'}, {name}; median of {a.reps} (CUDA events)")
    cases = []
    cases += grouped_rows(4096, 1024, 3584, 8, 2, False, a.reps, a.warmup, dev, dt)
    cases += grouped_rows(4096, 1024, 3584, 8, 2, True, a.reps, a.warmup, dev, dt)
    cases += dense(4096, 1024, 3584, 8, dev, dt)
    if not a.quick:
        cases += grouped_rows(16384, 1024, 3584, 8, 2, False, a.reps, a.warmup, dev, dt)
        cases += grouped_rows(4096, 2048, 1408, 64, 6, False, a.reps, a.warmup, dev, dt)
        cases += grouped_rows(4096, 2048, 1408, 64, 6, True, a.reps, a.warmup, dev, dt)
        cases += dense(16384, 1024, 3584, 8, dev, dt)
    rows = []
    for tf32 in ([False] if a.no_tf32 or a.bf16 else [False, True]):
        torch.backends.cuda.matmul.allow_tf32 = tf32
        for op, fn, flops, shape in cases:
            ms = timeit(fn, a.reps, a.warmup)
            tflops = flops / (ms * 1e-3) / 1e12
            r = dict(op=op, tf32=tf32, dtype="bfloat16" if a.bf16 else "float32", median_ms=ms, tflop_per_s=tflops, pct_fp32_peak=100 * tflops * 1e12 / PEAK_FP32,
                     device=name, **shape)
            rows.append(r)
            print(f"torch {'bf16' if a.bf16 else 'tf32' if tf32 else 'fp32'} {op:16s} T={shape['tokens']:6d} H={shape['hidden']} F={shape['ffn']} "
                  f"E={shape['experts']:3d} k={shape['top_k']}{' skew' if shape['skew'] else '     '} "
                  f"{ms:9.4f} ms  {tflops:7.2f} TFLOP/s  {r['pct_fp32_peak']:5.1f}% of fp32 peak")
    torch.backends.cuda.matmul.allow_tf32 = False
    if a.json:
        with open(a.json, "w") as f:
            json.dump(rows, f, indent=1)


if __name__ == "__main__":
    main()
