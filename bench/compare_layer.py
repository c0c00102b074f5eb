#!/usr/bin/env python3
"""Compare the whole-layer bench (`bench -op layer,layer-bwd,train-step -json`) with the PyTorch baseline
(`bench/pytorch_layer.py --json`): one row per (op, T, H, F, E, k, dtype, tf32) of ours, with torch's time
on the same row when a baseline file has it and the ratio ours / torch (below 1: we are faster; the issue's target for layer-bwd is <= 1, stretch 0.8).

Usage: compare_layer.py OURS.json[l] [MORE.json ...] --torch TORCH.json [--torch MORE.json] [--markdown] [--kernels]
Our files may hold several JSON objects one after the other (the -json output of several runs appended);
each is a result or {"results": [...]}. The torch file is the list pytorch_layer.py writes.
"""
import argparse
import sys

from jsonrows import rows


def objects(path):
    """Every result in a file of concatenated JSON values (objects, {"results": [...]}, or lists)."""
    return rows(path, required=True)


def key(r, tf32):
    return (r["op"], r["tokens"], r["hidden"], r["ffn"], r["experts"], r["top_k"], r["dtype"], bool(tf32))


OP_ORDER = {"layer": 0, "layer-bwd": 1, "train-step": 2}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("ours", nargs="+")
    ap.add_argument("--torch", required=True, action="append", help="a pytorch_layer.py --json file (repeatable)")
    ap.add_argument("--markdown", action="store_true", help="print a Markdown table (for bench/RESULTS.md)")
    ap.add_argument("--kernels", action="store_true", help="also print our per-kernel breakdown of every row")
    a = ap.parse_args()
    ours = {}
    for p in a.ours:
        for r in objects(p):
            if r.get("op") in OP_ORDER:
                ours[key(r, "tf32" in r.get("device_desc", ""))] = r
    torch = {}
    for p in a.torch:
        try:
            rs = objects(p)
        except (OSError, ValueError) as e:
            print(f"torch baseline {p}: {e}", file=sys.stderr)
            continue
        for r in rs:
            if r.get("op") in OP_ORDER:
                torch[key(r, r.get("tf32", False))] = r
    keys = sorted(ours, key=lambda k: (k[7], k[6], k[1], k[2], k[3], k[4], k[5], OP_ORDER[k[0]]))
    missing = sorted(set(torch) - set(ours))
    if not keys:
        print("no whole-layer results in " + ", ".join(a.ours), file=sys.stderr)
        return 1
    devs = {r.get("device_desc", "") for r in ours.values()} | {r.get("device", "") for r in torch.values()}
    cols = ["op", "T", "H", "F", "E", "k", "prec", "ours ms", "torch ms", "ours/torch", "ours TFLOP/s",
            "matmul % step", "host syncs/step"]
    rows = []
    for k in keys:
        o, t = ours[k], torch.get(k)
        share = o.get("matmul_pct_of_step")
        syncs = o.get("host_syncs_per_step")
        rows.append([k[0], str(k[1]), str(k[2]), str(k[3]), str(k[4]), str(k[5]),
                     ("tf32" if k[7] else k[6].replace("float", "fp")),
                     f"{o['median_ms']:.3f}", "-" if t is None else f"{t['median_ms']:.3f}",
                     "-" if t is None else f"{o['median_ms'] / t['median_ms']:.3f}",
                     f"{o.get('tflop_per_s', 0):.3g}",
                     "-" if share is None else f"{share:.1f}",
                     "-" if syncs is None else f"{syncs:g}"])
    print("Whole MoE layer: ours (moe.Layer graph, ops.Runner/Trainer) vs torch (transformers MixtralSparseMoeBlock)")
    print("devices: " + "; ".join(sorted(d for d in devs if d)))
    if a.markdown:
        print("| " + " | ".join(cols) + " |")
        print("|" + "|".join("---" for _ in cols) + "|")
        for r in rows:
            print("| " + " | ".join(r) + " |")
    else:
        w = [max(len(c), *(len(r[i]) for r in rows)) for i, c in enumerate(cols)]
        print("  ".join(c.rjust(w[i]) for i, c in enumerate(cols)))
        for r in rows:
            print("  ".join(v.rjust(w[i]) for i, v in enumerate(r)))
    if a.kernels:
        for k in keys:
            o = ours[k]
            if not o.get("kernels"):
                continue
            print(f"\n{k[0]} T={k[1]} {'tf32' if k[7] else k[6]}: step {o['kernel_step_ms']:.3f} ms with events around every launch, "
                  f"{o['launches_per_step']:.0f} launches; matmuls {o['matmul_ms']:.3f} ms = {o['matmul_pct_of_step']:.1f}% of the step")
            for f in o["kernels"]:
                mark = "  matmul" if f["matmul"] else ""
                print(f"  {f['family']:28s} {f['launches_per_step']:7.1f} launches {f['ms_per_step']:9.4f} ms {f['pct_of_step']:6.1f}%{mark}")
    if missing:
        print(f"({len(missing)} torch rows without ours: " + ", ".join(f"{m[0]} T={m[1]} {m[6]}{' tf32' if m[7] else ''}" for m in missing[:6]) + ")")
    return 0


if __name__ == "__main__":
    sys.exit(main())
