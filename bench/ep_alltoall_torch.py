"""All-to-all baseline for the expert-parallel NCCL transport: torch.distributed.all_to_all_single
(NCCL) on the same bytes per rank, one process per GPU, nccl-tests' definitions (S = bytes each rank
sends in total, itself included; algbw = S / time, busbw = algbw * (W-1)/W). Rank 0 prints one JSON line
per size, with the same fields as `mixtral-layer ep-bench`.

    NCCL_NVLS_ENABLE=0 torchrun --nproc_per_node W bench/ep_alltoall_torch.py [--sizes 1M,16M] [--reps 20]
"""
import argparse
import json
import os
import statistics
import time

import torch
import torch.distributed as dist


def parse_bytes(s):
    s = s.strip().upper()
    mult = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}.get(s[-1:], 1)
    return int(s[:-1] if mult > 1 else s) * mult


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--sizes", default="1M,4M,16M,64M,256M")
    p.add_argument("--reps", type=int, default=20)
    p.add_argument("--warmup", type=int, default=5)
    a = p.parse_args()
    os.environ.setdefault("NCCL_NVLS_ENABLE", "0")
    local = int(os.environ.get("LOCAL_RANK", "0"))
    torch.cuda.set_device(local)
    dist.init_process_group("nccl", device_id=torch.device("cuda", local))
    world, rank = dist.get_world_size(), dist.get_rank()
    h = 1024
    for s in a.sizes.split(","):
        rows = parse_bytes(s) // (4 * h)
        per_peer = rows // world
        rows = per_peer * world
        send = torch.zeros(rows, h, device="cuda")
        recv = torch.empty_like(send)
        wall, ev = [], []
        for i in range(a.warmup + a.reps):
            dist.barrier()
            torch.cuda.synchronize()
            e0, e1 = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            t0 = time.perf_counter()
            e0.record()
            dist.all_to_all_single(recv, send)
            e1.record()
            torch.cuda.synchronize()
            if i >= a.warmup:
                wall.append((time.perf_counter() - t0) * 1e6)
                ev.append(e0.elapsed_time(e1) * 1e3)
        sent = rows * h * 4
        med = statistics.median(wall)
        if rank == 0:
            print(json.dumps({
                "world": world, "bytes_per_rank": sent, "median_us": med, "min_us": min(wall),
                "event_median_us": statistics.median(ev),
                "algbw_gb_s": sent / (med * 1e3), "busbw_gb_s": sent / (med * 1e3) * (world - 1) / world,
                "device": torch.cuda.get_device_name(), "nccl": ".".join(map(str, torch.cuda.nccl.version())),
                "reps": a.reps, "impl": "torch.distributed.all_to_all_single",
            }), flush=True)
        del send, recv
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
