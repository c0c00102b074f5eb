#!/usr/bin/env python3
"""Compare the whole-layer bench (`bench -op layer,layer-bwd,train-step -json`) with the PyTorch baseline
(`bench/pytorch_layer.py --json`): one row per (op, T, H, F, E, k, dtype, tf32) present in both, with the
ratio ours / torch (below 1: we are faster; the issue's target for layer-bwd is <= 1, stretch 0.8).

Usage: compare_layer.py OURS.json[l] [MORE.json ...] --torch TORCH.json [--markdown]
Our files may hold several JSON objects one after the other (the -json output of several runs appended);
each is a result or {"results": [...]}. The torch file is the list pytorch_layer.py writes.
"""
import argparse
import json
import sys


def objects(path):
    """Every result in a file of concatenated JSON values (objects, {"results": [...]}, or lists)."""
    txt = open(path).read()
    dec = json.JSONDecoder()
    i, out = 0, []
    while i < len(txt):
        while i < len(txt) and txt[i].isspace():
            i += 1
        if i >= len(txt):
            break
        o, i = dec.raw_decode(txt, i)
        if isinstance(o, list):
            out += o
        elif "results" in o:
            out += o["results"]
        else:
            out.append(o)
    return out


def key(r, tf32):
    return (r["op"], r["tokens"], r["hidden"], r["ffn"], r["experts"], r["top_k"], r["dtype"], bool(tf32))


OP_ORDER = {"layer": 0, "layer-bwd": 1, "train-step": 2}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("ours", nargs="+")
    ap.add_argument("--torch", required=True)
    ap.add_argument("--markdown", action="store_true", help="print a Markdown table (for bench/RESULTS.md)")
    a = ap.parse_args()
    ours = {}
    for p in a.ours:
        for r in objects(p):
            if r.get("op") in OP_ORDER:
                ours[key(r, "tf32" in r.get("device_desc", ""))] = r
    torch = {}
    for r in objects(a.torch):
        if r.get("op") in OP_ORDER:
            torch[key(r, r.get("tf32", False))] = r
    keys = sorted(set(ours) & set(torch), key=lambda k: (k[7], k[6], k[1], k[2], k[3], k[4], k[5], OP_ORDER[k[0]]))
    missing = sorted(set(ours) ^ set(torch))
    if not keys:
        print("no (op, shape, dtype) in both files", file=sys.stderr)
        return 1
    devs = {r.get("device_desc", "") for r in ours.values()} | {r.get("device", "") for r in torch.values()}
    cols = ["op", "T", "H", "F", "E", "k", "prec", "ours ms", "torch ms", "ours/torch", "ours TFLOP/s",
            "matmul % step", "host syncs/step"]
    rows = []
    for k in keys:
        o, t = ours[k], torch[k]
        share = o.get("matmul_pct_of_step")
        syncs = o.get("host_syncs_per_step")
        rows.append([k[0], str(k[1]), str(k[2]), str(k[3]), str(k[4]), str(k[5]),
                     ("tf32" if k[7] else k[6].replace("float", "fp")),
                     f"{o['median_ms']:.3f}", f"{t['median_ms']:.3f}", f"{o['median_ms'] / t['median_ms']:.3f}",
                     f"{o.get('tflop_per_s', 0):.1f}",
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
    if missing:
        print(f"({len(missing)} rows only in one file: " + ", ".join(f"{m[0]} T={m[1]} {m[6]}{' tf32' if m[7] else ''}" for m in missing[:6]) + ")")
    return 0


if __name__ == "__main__":
    sys.exit(main())
