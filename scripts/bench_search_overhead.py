"""What does Ray Tune cost on top of training? The same N trials, by `run_search` and by a loop.

1. `raydistill.search.run_search` runs N trials of one cell (random searcher, 1 CPU per trial,
   at most 1 trial at a time, so the comparison is serial work against serial work), starting
   its own local Ray;
2. a plain Python loop calls `train_student` on exactly the same specs and training configs
   (read back from trials.parquet), with the same one thread per trial.

Printed: both wall times (the search's with and without starting Ray), per trial and in total,
and their ratio (target ≤ 1.10 for trials of ≥ 30 s).

    python scripts/bench_search_overhead.py --data ../shared/datasets/cifar10-jpeg.parquet
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import torch

from raydistill.data import load_dataset
from raydistill.search import SearchSettings, load_trials, run_search
from raydistill.train import TrainConfig, train_student


def _args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    default_data = Path(__file__).resolve().parents[2] / "shared/datasets/cifar10-jpeg.parquet"
    p.add_argument("--data", default=str(default_data))
    p.add_argument("--space", default="cnn")
    p.add_argument("--depth", type=int, default=2)
    p.add_argument("--budget", default="20k")
    p.add_argument("--trials", type=int, default=4)
    p.add_argument("--epochs", type=int, default=6)
    p.add_argument("--train-subset", type=int, default=4000)
    p.add_argument("--val-size", type=int, default=1000)
    p.add_argument("--out", help="search directory (default: a temporary one)")
    return p.parse_args()


def main() -> None:
    args = _args()
    data = load_dataset(args.data, val_size=args.val_size, train_subset=args.train_subset)
    out = Path(args.out or tempfile.mkdtemp(prefix="bench-overhead-")) / "search"
    t0 = time.perf_counter()
    run_search([args.space], budgets=args.budget, depths=[args.depth], trials=args.trials,
               data=data, out=out, searcher="random", cpus_per_trial=1, max_concurrent=1,
               max_epochs=args.epochs, device="cpu", wandb="off", verbose=0)  # fmt: skip
    search_wall = time.perf_counter() - t0
    tune_wall = SearchSettings.load(out).runs[0]["wall_s"]
    trials = load_trials(out).sort_values("started_at")

    torch.set_num_threads(1)  # as the trials ran: one thread for one CPU
    loop = []
    t0 = time.perf_counter()
    for _, row in trials.iterrows():
        t = time.perf_counter()
        cfg = TrainConfig.from_dict(json.loads(row["train"]))
        res = train_student(json.loads(row["spec"]), data, None, cfg)
        loop.append((time.perf_counter() - t, res.best_val_acc))
    loop_wall = time.perf_counter() - t0

    print(f"{args.trials} trials of {args.space}-d{args.depth}@{args.budget}, {args.epochs} epochs "
          f"on {len(data.train_y)} images, 1 CPU each, one at a time")  # fmt: skip
    print(f"{'trial':10s} {'search s':>9s} {'loop s':>8s} {'search acc':>10s} {'loop acc':>9s}")
    for (_, row), (secs, acc) in zip(trials.iterrows(), loop, strict=True):
        print(
            f"{row['trial_id']:10s} {row['wall_s']:9.1f} {secs:8.1f} {row['val/acc']:10.4f} {acc:9.4f}"
        )
    print(f"search wall {search_wall:.1f} s (Tune loop {tune_wall:.1f} s, the rest: Ray start/stop "
          f"and outputs); plain loop {loop_wall:.1f} s")  # fmt: skip
    print(f"ratio search/loop: {search_wall / loop_wall:.3f} (Tune loop only: "
          f"{tune_wall / loop_wall:.3f}); mean trial {loop_wall / len(loop):.1f} s")  # fmt: skip


if __name__ == "__main__":
    main()
