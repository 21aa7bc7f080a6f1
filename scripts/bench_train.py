"""Benchmark: our training loop against a torchvision DataLoader loop and the compute-only ceiling.

For the tiny scale's students (cnn depths 1–3 and mlp depth 1, at 10k and 30k parameters,
BatchNorm, balanced widths, batch 128, one torch thread per trial as the study runs them), one
run prints images/s of three loops on the same model, in the same layout, from the same weights:

- ours: `raydistill.training.loop.Trainer.train_epoch` over an epoch of a transfer set (CIFAR-10
  views replayed by index with flip + translate on the device, per-image standardisation, the L2
  loss on stored logits, the cosine schedule): the study's real code path. "ours+val" also counts
  the per-epoch validation pass (5,000 images) amortised over a 45,000-view epoch, as in the study;
- DataLoader (the named baseline): a Dataset of the same uint8 images with torchvision v2
  RandomCrop(32, padding=4) + RandomHorizontalFlip + ToDtype + Normalize, `--workers` worker
  processes, cross-entropy on hard labels, same model / SGD;
- ceiling: forward + backward + step on ONE resident, already preprocessed batch, same loss.

and the ratios ours/ceiling and ours/DataLoader. `--pairs` repeats everything with two copies of
the student running at once in two processes (the study's two concurrent trials on 2 cores):
their summed images/s against one copy's shows what the second core adds.

Every measurement runs in a worker process (spawned once, one torch thread each); the variants
are interleaved in a rotating order and repeated `--repeats` times, and the median counts, so a
shared machine's drifting load hits every variant alike. The 1-minute load average is printed
next to every figure. Throughput only: the teacher logits are random.

    python scripts/bench_train.py                                  # everything (~10 min idle)
    python scripts/bench_train.py --students cnn-d3@30k --steps 20 --repeats 1 --no-pairs
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import statistics
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
# the shared read-only copy, next to the repository (a checkout) or two levels up (a worktree)
DEFAULT_DATA = (
    next(
        (p for p in (REPO.parent / "shared", REPO.parent.parent / "shared") if p.is_dir()),
        REPO.parent / "shared",
    )
    / "datasets"
    / "cifar10-jpeg.parquet"
)
STUDENTS = (
    "cnn-d1@10k",
    "cnn-d2@10k",
    "cnn-d3@10k",
    "cnn-d1@30k",
    "cnn-d2@30k",
    "cnn-d3@30k",
    "mlp-d1@10k",
    "mlp-d1@30k",
)
VARIANTS = ("ours", "dataloader", "ceiling")
VAL_SIZE, EPOCH_VIEWS = 5000, 45_000  # the tiny study's validation split and epoch

_STATE: dict[str, Any] = {}  # per worker process: the splits, the barrier


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", default=str(DEFAULT_DATA), help="CIFAR-10 source (Parquet, folder)")
    p.add_argument("--students", default=",".join(STUDENTS), help="comma list of family-dD@budget")
    p.add_argument("--steps", type=int, default=40, help="SGD steps per measurement")
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--repeats", type=int, default=3, help="interleaved runs per variant (median)")
    p.add_argument("--threads", type=int, default=1, help="torch threads per process")
    p.add_argument("--workers", type=int, default=1, help="DataLoader num_workers")
    p.add_argument(
        "--pairs",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="also run two copies side by side",
    )
    p.add_argument("--cache-dir", default=None)
    p.add_argument("--json", default=None, help="also write the results to this JSON file")
    return p.parse_args(argv)


# ----------------------------------------------------------------------------- in the workers


def _serve(data: str, cache_dir: str | None, threads: int, barrier: Any, inbox, outbox) -> None:
    """A worker process: load the data once, then run measurements until it gets None. Not a
    Pool worker: those are daemonic, and the DataLoader loop starts worker processes."""
    import torch

    from raydistill.data import load_dataset

    torch.set_num_threads(threads)
    try:
        _STATE["splits"] = load_dataset(data, cache_dir=cache_dir, val_size=VAL_SIZE, seed=0)
    except Exception as exc:
        outbox.put(f"{type(exc).__name__}: {exc}")
        return
    _STATE["barrier"] = barrier
    outbox.put("ready")
    for task in iter(inbox.get, None):
        try:
            outbox.put(measure(task))
        except Exception as exc:  # the driver prints it and stops
            outbox.put(f"{task[:2]}: {type(exc).__name__}: {exc}")


def student_spec(name: str, splits: Any) -> dict[str, Any]:
    """The tiny study's spec of `name` ("cnn-d2@30k"): BatchNorm, no dropout, ratios 0.5."""
    from raydistill.students import data_spec_keys
    from raydistill.students.budget import solve_budget

    fam_depth, budget = name.split("@")
    family, depth = fam_depth.rsplit("-d", 1)
    keys = {"batchnorm": True, "dropout": 0.0, **data_spec_keys(splits)}
    return solve_budget(family, int(depth), budget, [0.5] * 8, **keys).spec


def bench_transfer(splits: Any, views: int, epochs: int) -> Any:
    """An in-memory transfer set: `epochs` epochs of `views` flip + translate views each, drawn as
    the writer draws them (`epoch_plan`), with random logits (throughput only)."""
    import numpy as np

    from raydistill.data.batches import epoch_plan
    from raydistill.distill.transfer.aug import transfer_aug
    from raydistill.distill.transfer.format import TransferSet

    aug = transfer_aug("flip_translate", splits)
    n = len(splits.train_y)
    plans = [epoch_plan(n, seed=0, epoch=e, aug=aug) for e in range(epochs)]
    index = np.concatenate([o[:views].numpy() for o, _ in plans])
    params = {k: np.concatenate([p[k][:views].numpy() for _, p in plans]) for k in plans[0][1]}
    logits = np.random.default_rng(0).normal(size=(len(index), splits.num_classes))
    meta = {
        "epochs": epochs,
        "views_per_epoch": views,
        "num_classes": splits.num_classes,
        "aug": aug.to_dict(),
        "image_size": int(min(splits.image_shape[1:])),
    }
    return TransferSet(
        path=Path("bench"),
        index=index,
        epoch=np.repeat(np.arange(epochs), views),
        params=params,
        logits=logits.astype(np.float32),
        meta=meta,
    )


def _trainer(name: str, steps: int, bs: int, epochs: int = 2) -> Any:
    from raydistill.training.config import TrainConfig
    from raydistill.training.loop import Trainer

    splits = _STATE["splits"]
    ts = bench_transfer(splits, steps * bs, epochs)
    cfg = TrainConfig(
        lr=0.005,
        momentum=0.9,
        batch_size=bs,
        schedule="cosine",
        warmup_epochs=0.3,
        loss="l2_logits",
        device="cpu",
        seed=0,
    )
    return Trainer(student_spec(name, splits), splits, ts, cfg)


def run_ours(name: str, steps: int, bs: int, **_: Any) -> dict[str, float]:
    """Images/s of `Trainer.train_epoch` (epoch 1, after epoch 0 as warm-up), and the seconds
    of one validation pass."""
    tr = _trainer(name, steps, bs)
    tr.train_epoch(0)
    _wait()
    t0 = time.perf_counter()
    tr.train_epoch(1)
    train_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    tr.evaluate(tr.val)
    val_s = time.perf_counter() - t0
    rate = steps * bs / train_s
    return {
        "img_s": rate,
        "val_s": val_s,
        "epoch_img_s": EPOCH_VIEWS / (EPOCH_VIEWS / rate + val_s),
    }


def run_ceiling(name: str, steps: int, bs: int, **_: Any) -> dict[str, float]:
    """Images/s of `Trainer.step` (forward + backward + step, our model, layout and loss) on
    one resident batch, as it leaves the data pipeline."""
    tr = _trainer(name, steps, bs)
    batch = next(tr._batches(0))
    tr.model.train()
    for _ in range(3):
        tr.step(*batch)
    _wait()
    t0 = time.perf_counter()
    for _ in range(steps):
        tr.step(*batch)
    return {"img_s": steps * bs / (time.perf_counter() - t0)}


class Images:
    """The baseline's Dataset: uint8 CHW images, torchvision v2 crop / flip / normalise."""

    def __init__(self, x: Any, y: Any) -> None:
        import torch
        from torchvision.transforms import v2

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

    def __getitem__(self, i: int) -> tuple[Any, Any]:
        return self.tf(self.x[i]), self.y[i]


def run_dataloader(name: str, steps: int, bs: int, workers: int = 1, **_: Any) -> dict[str, float]:
    """Images/s of the conventional loop: torchvision transforms in DataLoader workers."""
    import torch
    from torch.utils.data import DataLoader

    splits = _STATE["splits"]
    tr = _trainer(name, 1, bs)  # the same model, init and layout as ours
    model, opt, cl = tr.model, tr.opt, tr.channels_last

    loader = DataLoader(
        Images(splits.train_x, splits.train_y),
        batch_size=bs,
        shuffle=True,
        num_workers=workers,
        persistent_workers=workers > 0,
        multiprocessing_context="fork" if workers > 0 else None,
    )

    def run(n: int) -> None:
        for _, (x, y) in zip(range(n), loader, strict=False):
            if cl:
                x = x.contiguous(memory_format=torch.channels_last)
            loss = torch.nn.functional.cross_entropy(model(x), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()

    run(3)  # worker start-up
    _wait()
    t0 = time.perf_counter()
    run(steps)
    return {"img_s": steps * bs / (time.perf_counter() - t0)}


RUNNERS = {"ours": run_ours, "dataloader": run_dataloader, "ceiling": run_ceiling}


def _wait() -> None:
    """Line up with the other copy (pairs) just before the timed part."""
    barrier = _STATE.get("barrier")
    if _STATE.get("paired") and barrier is not None:
        barrier.wait(timeout=600)


def measure(task: tuple[str, str, bool, dict[str, Any]]) -> dict[str, float]:
    variant, name, paired, kw = task
    _STATE["paired"] = paired
    out = RUNNERS[variant](name, **kw)
    out["load1"] = os.getloadavg()[0]
    return out


# ----------------------------------------------------------------------------- the driver


def _median(runs: list[dict[str, float]], key: str) -> float:
    return statistics.median(r[key] for r in runs)


def _line(name: str, mode: str, runs: dict[str, list[dict[str, float]]]) -> dict[str, Any]:
    ours, dl, ceil = (_median(runs[v], "img_s") for v in VARIANTS)
    epoch = _median(runs["ours"], "epoch_img_s")
    load = statistics.median(r["load1"] for v in VARIANTS for r in runs[v])
    print(
        f"{name:11s} {mode:6s} ours {ours:7,.0f}  ours+val {epoch:7,.0f}  DataLoader {dl:7,.0f}  "
        f"ceiling {ceil:7,.0f} img/s | ours/ceiling {ours / ceil:5.2f}  ours+val/ceiling "
        f"{epoch / ceil:5.2f}  ours/DataLoader {ours / dl:5.2f} | load {load:.1f}",
        flush=True,
    )
    return {
        "student": name,
        "mode": mode,
        "ours": ours,
        "ours_val": epoch,
        "dataloader": dl,
        "ceiling": ceil,
        "ours/ceiling": ours / ceil,
        "ours_val/ceiling": epoch / ceil,
        "ours/dataloader": ours / dl,
        "load1": load,
        "runs": runs,
    }


def _run(inboxes: list, outbox: Any, task: tuple) -> dict[str, float]:
    """One measurement in one worker, or (paired) in both at once: then the summed images/s."""
    paired = task[2]
    for q in inboxes[: 2 if paired else 1]:
        q.put(task)
    got = [outbox.get() for _ in range(2 if paired else 1)]
    failed = [g for g in got if isinstance(g, str)]
    if failed:
        raise SystemExit(f"benchmark worker: {failed[0]}")
    return {k: got[0][k] if k == "load1" else sum(r[k] for r in got) for k in got[0]}


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    names = [s for s in args.students.split(",") if s]
    kw = {"steps": args.steps, "bs": args.batch_size, "workers": args.workers}
    if not Path(args.data).exists() and args.data != "cifar10":
        raise SystemExit(f"--data {args.data}: no such file or folder")
    ctx = mp.get_context("spawn")
    barrier, outbox = ctx.Barrier(2), ctx.Queue()
    inboxes = [ctx.Queue() for _ in range(2)]
    procs = [
        ctx.Process(
            target=_serve, args=(args.data, args.cache_dir, args.threads, barrier, q, outbox)
        )
        for q in inboxes
    ]
    for proc in procs:
        proc.start()
    for _ in procs:
        if (msg := outbox.get()) != "ready":
            raise SystemExit(f"a benchmark worker failed to start: {msg}")
    print(f"uptime: {os.popen('uptime').read().strip()}", flush=True)
    print(
        f"{args.steps} steps × {args.batch_size} per measurement, {args.threads} torch thread(s) "
        f"per process, DataLoader workers {args.workers}, median of {args.repeats}",
        flush=True,
    )
    results = []
    try:
        for mode in ["single", "pair"] if args.pairs else ["single"]:
            for name in names:
                runs: dict[str, list[dict[str, float]]] = {v: [] for v in VARIANTS}
                for rep in range(args.repeats):
                    for i in range(len(VARIANTS)):
                        v = VARIANTS[(rep + i) % len(VARIANTS)]
                        runs[v].append(_run(inboxes, outbox, (v, name, mode == "pair", kw)))
                results.append(_line(name, mode, runs))
    finally:
        for q in inboxes:
            q.put(None)
        for proc in procs:
            proc.join(timeout=30)
    if args.pairs:
        print("second core: pair's summed images/s / one copy's (2.0 = the core adds a full one)")
        single = {r["student"]: r for r in results if r["mode"] == "single"}
        for r in (r for r in results if r["mode"] == "pair"):
            s = single[r["student"]]
            print(f"{r['student']:11s} " + "  ".join(f"{v} {r[v] / s[v]:.2f}" for v in VARIANTS))
    print(f"uptime: {os.popen('uptime').read().strip()}", flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps({"args": vars(args), "results": results}, indent=1))


if __name__ == "__main__":
    main()
