"""Benchmark: raydistill's device-resident batches vs a conventional torchvision DataLoader.

One epoch (or --steps) of CIFAR-10's 40k training split for an MLP student (mlp, depth 3, 1M
params) and a 2-conv student (cnn, depth 2, 100k params), same model init, same SGD, same number
of steps, both pipelines in one run:

- raydistill: uint8 tensors on the device, batches by index, the paper's augmentation (mirror +
  24..32 px crop resized to 32) as one grid_sample, per-image standardisation;
- DataLoader: a Dataset over the same decoded uint8 arrays (HWC) with
  RandomCrop(32, padding=4) / RandomHorizontalFlip / ToTensor / Normalize, num_workers=2.

Prints images/s for each and the ratio. Usage (from the repository root):

    python scripts/bench_data.py                      # full epoch, CPU
    python scripts/bench_data.py --cnn-steps 100 --layouts contiguous,channels_last
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from raydistill.data import AugConfig, DeviceSplit, Preprocess, iterate, load_dataset
from raydistill.students import build
from raydistill.students.budget import solve_budget

REPO = Path(__file__).resolve().parent.parent
DEFAULT_DATA = REPO.parent / "shared" / "datasets" / "cifar10-jpeg.parquet"
CIFAR_MEAN, CIFAR_STD = (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", default=str(DEFAULT_DATA), help="CIFAR-10 source (Parquet, folder)")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--steps", type=int, default=None, help="steps per model (default: one epoch)")
    p.add_argument(
        "--cnn-steps", type=int, default=None, help="steps for the CNN (default: --steps)"
    )
    p.add_argument("--layouts", default="channels_last", help="CNN memory layouts, comma-separated")
    p.add_argument("--workers", type=int, default=2, help="DataLoader num_workers")
    p.add_argument(
        "--threads", type=int, default=2, help="torch.set_num_threads in the main process"
    )
    p.add_argument("--models", default="mlp,cnn")
    p.add_argument("--data-steps", type=int, default=100, help="batches, data-only run; 0 skips")
    p.add_argument(
        "--repeats", type=int, default=1, help="alternating runs per pipeline; best counts"
    )
    p.add_argument("--cache-dir", default=None)
    p.add_argument("--json", default=None, help="also write the results to this JSON file")
    return p.parse_args()


class ArrayDataset(torch.utils.data.Dataset):
    """The conventional pipeline: PIL image per sample, torchvision transforms in workers."""

    def __init__(self, x_nhwc: np.ndarray, y: np.ndarray):
        from torchvision import transforms as T

        self.x, self.y = x_nhwc, y
        self.tf = T.Compose(
            [
                T.RandomCrop(32, padding=4),
                T.RandomHorizontalFlip(),
                T.ToTensor(),
                T.Normalize(CIFAR_MEAN, CIFAR_STD),
            ]
        )

    def __len__(self) -> int:
        return len(self.y)

    def __getitem__(self, i: int):
        from PIL import Image

        return self.tf(Image.fromarray(self.x[i])), int(self.y[i])


def make_model(
    family: str, device: str, layout: str
) -> tuple[torch.nn.Module, torch.optim.Optimizer, str]:
    spec = (
        solve_budget("mlp", 3, "1M").spec
        if family == "mlp"
        else solve_budget("cnn", 2, "100k").spec
    )
    torch.manual_seed(0)
    model = build(spec).to(device)
    if layout == "channels_last":
        model = model.to(memory_format=torch.channels_last)
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    return (
        model,
        opt,
        f"{family} widths={spec['widths']} params={sum(p.numel() for p in model.parameters()):,}",
    )


def train_steps(model, opt, batches, steps: int, layout: str, device: str) -> tuple[int, float]:
    """Run `steps` SGD steps on `batches`; (images seen, seconds), including batch production."""
    model.train()
    seen, t0 = 0, time.perf_counter()
    for _, (x, y, *_) in zip(range(steps), batches, strict=False):
        x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
        if layout == "channels_last":
            x = x.contiguous(memory_format=torch.channels_last)
        loss = F.cross_entropy(model(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        seen += len(y)
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    return seen, time.perf_counter() - t0


def ours(split: DeviceSplit, bs: int, epoch: int):
    return iterate(
        split, bs, seed=0, epoch=epoch, aug=AugConfig.paper(), preprocess=Preprocess("per_image")
    )


def conventional(x_nhwc: np.ndarray, y: np.ndarray, bs: int, workers: int):
    ds = ArrayDataset(x_nhwc, y)
    return iter(torch.utils.data.DataLoader(ds, batch_size=bs, shuffle=True, num_workers=workers))


def bench_data_only(args, split, x_nhwc, y) -> dict:
    """Batch production alone (no model): what each pipeline costs per image."""
    out = {}
    for name in ("raydistill", "dataloader"):
        if name == "raydistill":
            batches = ours(split, args.batch_size, epoch=0)
        else:
            batches = conventional(x_nhwc, y, args.batch_size, args.workers)
        seen, t0 = 0, time.perf_counter()
        for _, (xb, *_) in zip(range(args.data_steps), batches, strict=False):
            seen += len(xb)
        out[name] = seen / (time.perf_counter() - t0)
    print(
        f"data only [{args.data_steps} batches × {args.batch_size}]: raydistill "
        f"{out['raydistill']:,.0f} img/s, DataLoader {out['dataloader']:,.0f} img/s",
        flush=True,
    )
    return out


def bench_model(family, layout, steps, args, split, x_nhwc, y) -> dict:
    """Both pipelines from the same initial weights, `--repeats` times in alternating order
    (ours, DataLoader, DataLoader, ours, ...) so drifting load on a shared machine hits both;
    the best run of each counts (like timeit)."""
    model, opt, desc = make_model(family, args.device, layout)
    train_steps(
        model, opt, ours(split, args.batch_size, epoch=99), 3, layout, args.device
    )  # warm-up
    state = {k: v.clone() for k, v in model.state_dict().items()}
    runs: dict[str, list[float]] = {"raydistill": [], "dataloader": []}
    for rep in range(args.repeats):
        order = ["raydistill", "dataloader"] if rep % 2 == 0 else ["dataloader", "raydistill"]
        for name in order:
            model.load_state_dict(state)
            if name == "raydistill":
                batches = ours(split, args.batch_size, epoch=rep)
            else:  # worker start-up is part of the conventional epoch
                batches = conventional(x_nhwc, y, args.batch_size, args.workers)
            seen, secs = train_steps(model, opt, batches, steps, layout, args.device)
            runs[name].append(seen / secs)
    best = {k: max(v) for k, v in runs.items()}
    r = {
        "model": desc,
        "layout": layout,
        "steps": steps,
        "batch_size": args.batch_size,
        "runs": runs,
    }
    r |= {"raydistill_img_s": best["raydistill"], "dataloader_img_s": best["dataloader"]}
    r["ratio"] = best["raydistill"] / best["dataloader"]
    each = "; ".join(f"{k} " + ", ".join(f"{v:,.0f}" for v in vs) for k, vs in runs.items())
    print(
        f"{desc} [{layout}, {steps} steps × {args.batch_size}]: raydistill {best['raydistill']:,.0f} img/s, "
        f"DataLoader {best['dataloader']:,.0f} img/s, ratio {r['ratio']:.2f}× (runs: {each})",
        flush=True,
    )
    return r


def main() -> None:
    args = parse_args()
    torch.set_num_threads(args.threads)
    t0 = time.perf_counter()
    splits = load_dataset(args.data, cache_dir=args.cache_dir)
    print(
        f"data {splits.name}: {splits.sizes()} loaded in {time.perf_counter() - t0:.2f} s",
        flush=True,
    )
    load = os.getloadavg()
    print(f"device {args.device}, torch threads {args.threads}, load average {load}", flush=True)
    split = DeviceSplit.from_splits(splits, "train", args.device)
    x_nhwc = np.ascontiguousarray(splits.train_x.transpose(0, 2, 3, 1))
    epoch_steps = -(-len(splits.train_y) // args.batch_size)
    results = [bench_data_only(args, split, x_nhwc, splits.train_y)] if args.data_steps else []
    families = [m for m in args.models.split(",") if m]
    if set(families) - {"mlp", "cnn"}:
        raise SystemExit(f"--models {args.models!r}: expected a comma list of mlp, cnn (or empty)")
    for family in families:
        steps = args.steps or epoch_steps
        layouts = ["contiguous"]
        if family == "cnn":
            steps = args.cnn_steps or steps
            layouts = args.layouts.split(",")
        for layout in layouts:
            results.append(bench_model(family, layout, steps, args, split, x_nhwc, splits.train_y))
    print(f"load average at the end {os.getloadavg()}", flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps({"args": vars(args), "results": results}, indent=1))


if __name__ == "__main__":
    main()
