#!/usr/bin/env python3
"""PyTorch oracle for the CUDA kernels.

Reads the inputs and GPU outputs that the Go test TestCUDAWriteOracle wrote into DIR (cases.json and
<case>.in_*.bin / <case>.out_*.bin, raw little-endian arrays), recomputes route, plan, dispatch, combine
and all gradients with PyTorch autograd on the GPU in float64, and compares.

Semantics (ops/config.go, ops/backend.go, docs/...):
  SoftmaxTopK: p = softmax(logits); (v, idx) = topk(p, k) with ties to the lower index; w = v (/ sum v if
  renormalize). TopKSoftmax: w = softmax(logits[idx]) over the k selected logits.
  plan: expert-major rows, stable (slot order t*K+j) within an expert: order = argsort(idx.flatten(),
  stable=True); rowOf = inverse permutation of order.
  dispatch: xe[r] = x[order[r] // K]; combine: y[t] = sum_j w[t,j] * ye[rowOf[t*K+j]].
  Gradients: L = <y, dy> + <xe, dxe> gives dye, dw (through combine) -> dlogits (through the weights),
  and dx = dispatch backward of dxe.

Usage: oracle.py DIR   (exit status 1 on any mismatch)
"""
import json
import sys

import numpy as np
import torch


def load(d, case, key, dtype, shape):
    a = np.fromfile(f"{d}/{case}.{key}.bin", dtype=dtype)
    return a.reshape(shape)


def main(d):
    dev = "cuda" if torch.cuda.is_available() else "cpu"
    cases = json.load(open(f"{d}/cases.json"))
    ok = True
    print(f"torch {torch.__version__} on {torch.cuda.get_device_name(0) if dev == 'cuda' else 'cpu'}")
    for c in cases:
        T, E, K, H = c["T"], c["E"], c["K"], c["H"]
        fdt = np.float32 if c["Dtype"] == "float32" else np.float64
        tol = 2e-5 if fdt == np.float32 else 1e-10
        f = c["Files"]
        ld = lambda k, dt=fdt: load(d, c["Name"], k, dt, f[k])
        logits = torch.tensor(ld("in_logits"), dtype=torch.float64, device=dev, requires_grad=True)
        x = torch.tensor(ld("in_x"), dtype=torch.float64, device=dev, requires_grad=True)
        ye = torch.tensor(ld("in_ye"), dtype=torch.float64, device=dev, requires_grad=True)
        dy = torch.tensor(ld("in_dy"), dtype=torch.float64, device=dev)
        dxe = torch.tensor(ld("in_dxe"), dtype=torch.float64, device=dev)

        # Route: top-k on the logits (monotone in the probabilities); stable sort gives ties to the lower index.
        order_e = torch.sort(logits.detach(), dim=1, descending=True, stable=True).indices
        idx = order_e[:, :K]
        if c["Scoring"] == "softmax-topk":
            p = torch.softmax(logits, dim=1)
            w = torch.gather(p, 1, idx)
            if c["Renormalize"]:
                w = w / w.sum(dim=1, keepdim=True)
        else:
            w = torch.softmax(torch.gather(logits, 1, idx), dim=1)

        flat = idx.reshape(-1)
        order = torch.sort(flat, stable=True).indices  # slot of each expert-major row
        row_of = torch.empty_like(order)
        row_of[order] = torch.arange(T * K, device=dev)
        counts = torch.bincount(flat, minlength=E)
        offsets = torch.cat([torch.zeros(1, dtype=counts.dtype, device=dev), torch.cumsum(counts, 0)])
        plan = torch.cat([counts, offsets, row_of, order]).to(torch.int32)

        xe = x[order // K]
        y = (w.unsqueeze(-1) * ye[row_of].reshape(T, K, H)).sum(dim=1)
        L = (y * dy).sum() + (xe * dxe).sum()
        L.backward()

        got = {k: torch.tensor(ld("out_" + k), dtype=torch.float64, device=dev)
               for k in ["w", "xe", "y", "dye", "dw", "dlogits", "dx"]}
        gi = {k: torch.tensor(ld("out_" + k, np.int32), device=dev) for k in ["idx", "plan"]}

        # dw as autograd sees it: d L / d w.
        w_leaf = w.detach().requires_grad_(True)
        y2 = (w_leaf.unsqueeze(-1) * ye.detach()[row_of].reshape(T, K, H)).sum(dim=1)
        (y2 * dy).sum().backward()
        want = {"w": w.detach(), "xe": xe.detach(), "y": y.detach(), "dye": ye.grad, "dw": w_leaf.grad,
                "dlogits": logits.grad, "dx": x.grad}

        line = [c["Name"]]
        if not torch.equal(gi["idx"], idx.to(torch.int32)):
            ok = False
            line.append("idx MISMATCH")
        else:
            line.append("idx exact")
        if not torch.equal(gi["plan"], plan):
            ok = False
            line.append("plan MISMATCH")
        else:
            line.append("plan exact")
        for k, v in want.items():
            err = ((got[k] - v).abs() / v.abs().clamp(min=1.0)).max().item()
            bad = not (err <= tol)
            ok &= not bad
            line.append(f"{k} {err:.2e}{' FAIL' if bad else ''}")
        print("  ".join(line))
    print("ORACLE", "PASS" if ok else "FAIL")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
