"""Speed and memory of one adder layer against nn.Conv2d of the same shape, on the CPU.

    python scripts/bench_adder.py [--batch 128] [--channels 64] [--size 16] [--kernel 5]

Times forward and forward+backward (median of --repeats) and measures the peak extra memory
of one forward+backward (tracemalloc does not see ATen's allocations, so this reads the
process's resident-set high-water mark in a fresh subprocess per layer kind).
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time

import torch
from torch import nn

from raydistill.students.adder import AdderConv2d


def make(kind: str, c: int, k: int) -> nn.Module:
    if kind == "adder":
        return AdderConv2d(c, c, k, padding=k // 2)
    return nn.Conv2d(c, c, k, padding=k // 2, bias=False)


def timed(fn, repeats: int) -> float:
    fn()  # warm-up: allocator, kernels
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def run_one(kind: str, a: argparse.Namespace) -> dict[str, float]:
    torch.manual_seed(0)
    layer = make(kind, a.channels, a.kernel)
    x = torch.randn(a.batch, a.channels, a.size, a.size, requires_grad=True)
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux

    def fwd() -> None:
        with torch.no_grad():
            layer(x)

    def fwd_bwd() -> None:
        layer(x).sum().backward()

    t_f = timed(fwd, a.repeats)
    t_fb = timed(fwd_bwd, a.repeats)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return {"forward_s": t_f, "fwd_bwd_s": t_fb, "peak_extra_mb": (peak - base) / 1024}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--channels", type=int, default=64)
    p.add_argument("--size", type=int, default=16)
    p.add_argument("--kernel", type=int, default=5)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--child", choices=["adder", "conv"], help=argparse.SUPPRESS)
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    if a.child:
        print(json.dumps(run_one(a.child, a)))
        return
    args = [f"--{k}={v}" for k, v in vars(a).items() if k != "child"]
    res = {}
    for kind in ("conv", "adder"):
        cmd = [sys.executable, __file__, *args, f"--child={kind}"]
        res[kind] = json.loads(
            subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
        )
    shape = f"x ({a.batch}, {a.channels}, {a.size}, {a.size}), {a.channels}→{a.channels}, {a.kernel}×{a.kernel}"
    print(f"{shape}, {a.threads} CPU threads")
    for kind, r in res.items():
        print(
            f"  {kind:5s}: forward {r['forward_s'] * 1e3:9.1f} ms   forward+backward "
            f"{r['fwd_bwd_s'] * 1e3:9.1f} ms   peak extra RSS {r['peak_extra_mb']:7.1f} MB"
        )
    c, d = res["conv"], res["adder"]
    print(
        f"  adder / conv: forward {d['forward_s'] / c['forward_s']:.1f}×, forward+backward "
        f"{d['fwd_bwd_s'] / c['fwd_bwd_s']:.1f}×"
    )


if __name__ == "__main__":
    main()
