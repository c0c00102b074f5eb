#!/usr/bin/env python3
"""PyTorch baseline for a whole MoE layer: transformers' MixtralSparseMoeBlock on the GPU, the same shapes
and semantics as `go run ./bench -op layer,layer-bwd,train-step` (softmax top-k, renormalised, SwiGLU experts).

Times, with CUDA events (median of --reps after --warmup), for each T in --tokens:
  layer      forward only (no autograd graph: torch.no_grad)
  layer-bwd  forward + backward of sum(y * dy) (the gradients w.r.t. the input, router and all experts)
  train-step forward + backward of MSE(y, target) + Adam step (torch.optim.Adam, foreach)
TF32 is off (torch.backends.cuda.matmul.allow_tf32 = False) unless --tf32. --autocast runs the float32
module under torch.autocast(bfloat16) (float32 master weights, bfloat16 matmuls: mixed precision, as
`go run ./bench -dtype bfloat16` trains); --dtype bfloat16 instead converts the module to bfloat16.

Usage: pytorch_layer.py [--tokens 4096,16384] [--hidden 1024] [--ffn 3584] [--experts 8] [--top-k 2]
                        [--dtype float32|bfloat16] [--autocast] [--tf32] [--json out.json]
"""
import argparse
import json
import statistics

import torch
import transformers
from transformers import MixtralConfig
from transformers.models.mixtral.modeling_mixtral import MixtralSparseMoeBlock


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


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--tokens", default="4096,16384")
    ap.add_argument("--hidden", type=int, default=1024)
    ap.add_argument("--ffn", type=int, default=3584)
    ap.add_argument("--experts", type=int, default=8)
    ap.add_argument("--top-k", type=int, default=2)
    ap.add_argument("--dtype", default="float32")
    ap.add_argument("--tf32", action="store_true")
    ap.add_argument("--autocast", action="store_true", help="float32 module under torch.autocast(bfloat16)")
    ap.add_argument("--reps", type=int, default=20)
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--json")
    a = ap.parse_args()
    torch.backends.cuda.matmul.allow_tf32 = a.tf32
    torch.backends.cudnn.allow_tf32 = a.tf32
    dt = getattr(torch, a.dtype)
    dev = torch.device("cuda")
    cfg = MixtralConfig(hidden_size=a.hidden, intermediate_size=a.ffn, num_local_experts=a.experts,
                        num_experts_per_tok=a.top_k, router_jitter_noise=0.0)
    torch.manual_seed(0)
    block = MixtralSparseMoeBlock(cfg).to(dev, dt)
    for p in block.parameters():
        torch.nn.init.uniform_(p, -0.05, 0.05)
    opt = torch.optim.Adam(block.parameters(), lr=1e-3)
    rows = []
    for T in [int(t) for t in a.tokens.split(",")]:
        x = torch.randn(1, T, a.hidden, device=dev, dtype=dt)
        dy = torch.randn(1, T, a.hidden, device=dev, dtype=dt)
        target = torch.randn(1, T, a.hidden, device=dev, dtype=dt)
        xg = x.clone().requires_grad_(True)

        def out(res):
            return res[0] if isinstance(res, tuple) else res

        def fwd():
            with torch.no_grad():
                out(block(x))

        def fwd_bwd():
            y = out(block(xg))
            (y * dy).sum().backward()

        def step():
            opt.zero_grad(set_to_none=True)
            y = out(block(x))
            torch.nn.functional.mse_loss(y, target).backward()
            opt.step()

        def autocast(fn):
            def run():
                with torch.autocast("cuda", dtype=torch.bfloat16, enabled=a.autocast):
                    fn()
            return run

        for op, fn in (("layer", fwd), ("layer-bwd", fwd_bwd), ("train-step", step)):
            ms = timeit(autocast(fn), a.reps, a.warmup)
            rows.append({"op": op, "tokens": T, "hidden": a.hidden, "ffn": a.ffn, "experts": a.experts,
                         "top_k": a.top_k, "dtype": "autocast-bfloat16" if a.autocast else a.dtype, "tf32": a.tf32, "median_ms": ms,
                         "impl": "torch MixtralSparseMoeBlock", "torch": torch.__version__,
                         "transformers": transformers.__version__,
                         "device": torch.cuda.get_device_name()})
            print(f"torch {op:10s} T={T:6d} {ms:8.3f} ms")
    if a.json:
        with open(a.json, "w") as f:
            json.dump(rows, f, indent=1)


if __name__ == "__main__":
    main()
