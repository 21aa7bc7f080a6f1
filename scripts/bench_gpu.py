"""GPU benchmarks of the training loop (issue 12); not a timed test. Prints one line per figure.

  (a) student images/s for a 1M CNN and a 1M MLP: our loop (`raydistill.training.loop.Trainer`, data
      and augmentation on the device, bf16 autocast + channels_last on CUDA) vs a plain PyTorch
      loop fed by a torchvision DataLoader (the baseline: CPU-side crop/flip, float32), and the
      compute-only ceiling (the same model and settings as ours, one batch already on the
      device, forward + backward + step only); ratios ours/baseline and ours/ceiling.
  (b) trial throughput with 1, 2, 4, 8 trials per GPU (Ray tasks with 1/k GPU each, our loop);
      skipped with a message when Ray or a GPU is absent.
  (c) a 4-member airbench teacher ensemble: wall time and test accuracy (goal ≥ 94 % on
      CIFAR-10 in ≤ 60 s on one H100-class GPU); members one after another, in this process.
  (cl) channels_last on vs off for small BatchNorm CNN students (batch 128, our loop).

(a), (c) and (cl) need torch only (Ray is imported inside (b)).

    python scripts/bench_gpu.py                          # all, on CUDA when available
    python scripts/bench_gpu.py --device cpu --quick     # tiny sizes: a smoke test
    python scripts/bench_gpu.py --sections cl --device cpu --threads 1
"""

from __future__ import annotations

import argparse
import os
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from torch import nn

from raydistill.core.device import resolve_device
from raydistill.data import Splits
from raydistill.students import complete_spec
from raydistill.students.budget import solve_budget
from raydistill.training.config import TrainConfig
from raydistill.training.loop import Trainer

SECTIONS = ("a", "b", "c", "cl")


def random_splits(n: int, seed: int = 0) -> Splits:
    """CIFAR-shaped uint8 images with random labels (throughput only: nothing to learn)."""
    rng = np.random.default_rng(seed)
    parts: dict[str, np.ndarray] = {}
    for name, size in (("train", n), ("val", 256), ("test", 256)):
        parts[f"{name}_x"] = rng.integers(0, 256, (size, 3, 32, 32), dtype=np.uint8)
        parts[f"{name}_y"] = rng.integers(0, 10, size).astype(np.int64)
    return Splits(name="random", fingerprint=f"random-{n}", classes=tuple("0123456789"), **parts)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def our_loop(spec: dict, splits: Splits, device: str, epochs: int, **cfg: Any) -> float:
    """Images/s of `Trainer.train_epoch` (hard labels, flip + translate on the device), after
    one warm-up epoch."""
    values = {"loss": "hard", "augment": "flip_translate", "batch_size": 256, **cfg}
    config = TrainConfig(device=device, max_epochs=epochs + 1, **values)
    tr = Trainer(spec, splits, None, config)
    tr.train_epoch(0)
    sync(tr.device)
    t0 = time.perf_counter()
    for e in range(1, epochs + 1):
        tr.train_epoch(e)
    sync(tr.device)
    return epochs * len(splits.train_y) / (time.perf_counter() - t0)


def dataloader_loop(spec: dict, splits: Splits, device: str, epochs: int, workers: int) -> float:
    """Images/s of the plain baseline: torchvision transforms in DataLoader workers, float32."""
    from torch.utils.data import DataLoader, Dataset
    from torchvision.transforms import v2

    from raydistill.students import build

    class Images(Dataset):
        def __init__(self, x: np.ndarray, y: np.ndarray) -> None:
            self.x, self.y = torch.from_numpy(x), torch.from_numpy(y)
            self.tf = v2.Compose(
                [
                    v2.RandomCrop(32, padding=4),
                    v2.RandomHorizontalFlip(),
                    v2.ToDtype(torch.float32, scale=True),
                    v2.Normalize([0.49, 0.48, 0.45], [0.25, 0.24, 0.26]),
                ]
            )

        def __len__(self) -> int:
            return len(self.y)

        def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
            return self.tf(self.x[i]), self.y[i]

    dev = resolve_device(device)
    model = build(spec).to(dev)
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, nesterov=True)
    loader = DataLoader(
        Images(splits.train_x, splits.train_y),
        batch_size=256,
        shuffle=True,
        num_workers=workers,
        pin_memory=dev.type == "cuda",
        persistent_workers=workers > 0,
    )

    def epoch() -> None:
        for x, y in loader:
            x, y = x.to(dev, non_blocking=True), y.to(dev, non_blocking=True)
            loss = nn.functional.cross_entropy(model(x), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()

    epoch()  # warm-up (worker start, cudnn autotune)
    sync(dev)
    t0 = time.perf_counter()
    for _ in range(epochs):
        epoch()
    sync(dev)
    return epochs * len(splits.train_y) / (time.perf_counter() - t0)


def ceiling(spec: dict, splits: Splits, device: str, steps: int) -> float:
    """Images/s of forward + backward + step on one resident batch, with our loop's settings."""
    config = TrainConfig(loss="hard", device=device, batch_size=256, max_epochs=1)
    tr = Trainer(spec, splits, None, config)
    x, y, _ = next(tr._batches(0))

    def step() -> None:
        tr.step(x, y, None)  # the loop's own step: precision, layout, loss, optimizer

    for _ in range(3):
        step()
    sync(tr.device)
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    sync(tr.device)
    return steps * len(y) / (time.perf_counter() - t0)


def section_a(args: argparse.Namespace, say: Callable[[str], None]) -> None:
    budget = 30_000 if args.quick else 1_000_000
    splits = random_splits(256 if args.quick else 50_000)
    epochs, steps = (1, 5) if args.quick else (3, 100)
    workers = 0 if args.quick else min(8, os.cpu_count() or 1)
    for family, depth in (("cnn", 2), ("mlp", 1)):
        spec = complete_spec(solve_budget(family, depth, budget).spec, splits)
        ours = our_loop(spec, splits, args.device, epochs)
        base = dataloader_loop(spec, splits, args.device, epochs, workers)
        top = ceiling(spec, splits, args.device, steps)
        say(
            f"(a) {family}-d{depth}@{budget:,}: ours {ours:,.0f} img/s, DataLoader "
            f"({workers} workers) {base:,.0f} img/s, compute ceiling {top:,.0f} img/s; "
            f"ours/DataLoader {ours / base:.2f}x, ours/ceiling {ours / top:.2f}"
        )


def _trial(spec: dict, splits: Splits, epochs: int) -> tuple[float, float]:
    t0 = time.perf_counter()
    our_loop(spec, splits, "auto", epochs)
    return epochs * len(splits.train_y), time.perf_counter() - t0


def section_b(args: argparse.Namespace, say: Callable[[str], None]) -> None:
    try:
        import ray
    except ImportError:
        say("(b) skipped: Ray is not installed")
        return
    if not torch.cuda.is_available() or args.device == "cpu":
        say("(b) skipped: no GPU (trial packing needs one)")
        return
    gpus = torch.cuda.device_count()
    splits = random_splits(1024 if args.quick else 20_000)
    spec = complete_spec(solve_budget("cnn", 2, 30_000 if args.quick else 1_000_000).spec, splits)
    ray.init(address="local", num_gpus=gpus, include_dashboard=False, log_to_driver=False)
    try:
        ref = ray.put(splits)
        base = None
        for k in (1, 2, 4, 8):
            task = ray.remote(num_gpus=1 / k, num_cpus=1)(_trial)
            t0 = time.perf_counter()
            done = ray.get([task.remote(spec, ref, 2) for _ in range(k * gpus)])
            rate = sum(n for n, _ in done) / (time.perf_counter() - t0)
            base = base or rate
            say(
                f"(b) {k} trials/GPU: {rate:,.0f} img/s over {k * gpus} trials "
                f"({rate / base:.2f}x of 1 trial/GPU)"
            )
    finally:
        ray.shutdown()


def section_c(args: argparse.Namespace, say: Callable[[str], None]) -> None:
    """4 airbench members trained one after another here, then the ensemble's test accuracy."""
    from raydistill.data import load_dataset
    from raydistill.distill.ensemble import evaluate_members, make_ensemble
    from raydistill.distill.teachers import member_config, teacher_spec, train_member
    from raydistill.training.config import make_preprocess

    source = "synthetic-sep:400" if args.quick else args.data
    try:
        splits = load_dataset(source, val_size=100 if args.quick else 5000)
    except Exception as exc:  # e.g. no CIFAR-10 download on an offline machine
        say(f"(c) skipped: cannot load {source!r} ({exc})")
        return
    epochs, scale = (1, 0.25) if args.quick else (args.teacher_epochs, 1.0)
    spec = teacher_spec("airbench", splits, width_scale=scale)
    train = {"batch_size": 512, "lr": 0.4, "label_smoothing": 0.0, "device": args.device}
    configs = [member_config("airbench", epochs, s, **train) for s in range(4)]
    t0 = time.perf_counter()
    results = [train_member(spec, splits, c.to_dict()) for c in configs]
    ensemble = make_ensemble(
        spec,
        [r["weights"] for r in results],
        make_preprocess(configs[0].preprocess, splits),
        device=args.device,
    )
    _, overall = evaluate_members(ensemble, splits)
    wall = time.perf_counter() - t0
    members = ", ".join(f"{100 * r['test_acc']:.2f}%" for r in results)
    say(
        f"(c) airbench x4 on {splits.name} ({len(splits.train_y)} train, {epochs} epochs): "
        f"ensemble test {100 * overall['test/acc']:.2f}% (members {members}) in {wall:.1f} s "
        f"(goal: ≥ 94 % in ≤ 60 s)"
    )


def section_cl(args: argparse.Namespace, say: Callable[[str], None]) -> None:
    """channels_last on vs off in our loop, interleaved rounds (medians: a shared CPU's load
    drifts); the same seed gives the same first-epoch loss."""
    splits = random_splits(128 if args.quick else 1024)
    specs = [solve_budget("cnn", d, 30_000, batchnorm=True).spec for d in (1, 2, 3)]
    rounds = 1 if args.quick else 3
    for spec in specs:
        spec = complete_spec(spec, splits)
        rates: dict[bool, list[float]] = {False: [], True: []}
        for _ in range(rounds):
            for cl in (False, True):
                rates[cl].append(
                    our_loop(spec, splits, args.device, 1, channels_last=cl, batch_size=128)
                )
        med = {cl: float(np.median(r)) for cl, r in rates.items()}
        losses = [
            Trainer(
                spec,
                splits,
                None,
                TrainConfig(loss="hard", device=args.device, channels_last=cl, max_epochs=1),
            ).train_epoch(0)
            for cl in (False, True)
        ]
        say(
            f"(cl) cnn-d{spec['depth']} {spec['widths']} BN: NCHW {med[False]:,.0f} img/s, "
            f"channels_last {med[True]:,.0f} img/s ({med[True] / med[False]:.2f}x, median of "
            f"{rounds}); epoch-0 loss {losses[0]:.6f} vs {losses[1]:.6f}"
        )


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="auto", help="auto (CUDA when available) | cpu | cuda")
    p.add_argument("--quick", action="store_true", help="tiny sizes (a CPU smoke test)")
    p.add_argument("--sections", default=",".join(SECTIONS), help="comma list of a,b,c,cl")
    p.add_argument("--data", default="cifar10", help="(c): a raydistill data source")
    p.add_argument("--teacher-epochs", type=int, default=12, help="(c): epochs per member")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: default)")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    wanted = [s.strip() for s in args.sections.split(",") if s.strip()]
    bad = [s for s in wanted if s not in SECTIONS]
    if bad:
        p.error(f"--sections {bad[0]!r} is invalid; valid: {', '.join(SECTIONS)}")
    dev = resolve_device(args.device)
    name = torch.cuda.get_device_name(dev) if dev.type == "cuda" else "CPU"
    print(f"device {dev} ({name}), torch {torch.__version__}, threads {torch.get_num_threads()}")
    run = {"a": section_a, "b": section_b, "c": section_c, "cl": section_cl}
    for s in wanted:
        t0 = time.perf_counter()
        run[s](args, lambda line: print(line, flush=True))
        print(f"    section {s}: {time.perf_counter() - t0:.1f} s", flush=True)


if __name__ == "__main__":
    main()
