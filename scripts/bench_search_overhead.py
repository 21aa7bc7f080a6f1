"""What does Ray Tune cost on top of training? The same N trials, by `run_search` and by a loop.

1. a plain Python loop calls `train_student` on N configs of one cell, one thread;
2. `raydistill.search.run_search` runs the same N trials (random searcher, same seed: the same
   configs, checked against trials.parquet), 1 CPU per trial and at most one at a time, so it
   is serial work against serial work, starting its own local Ray;
3. the loop again: this machine is shared, so the search is compared with the mean of the
   loops that bracket it, and the load average is printed with each phase.

Printed: wall times per trial and in total (the search's with and without starting Ray), and
the ratio search / loop (target ≤ 1.10 for trials of ≥ 30 s).

    python scripts/bench_search_overhead.py --data ../shared/datasets/cifar10-jpeg.parquet
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

import torch

from raydistill.data import load_dataset
from raydistill.search import CellSearcher, SearchSettings, load_trials, run_search
from raydistill.search import spaces as sp
from raydistill.search.trainable import solve_trial, trial_train_config
from raydistill.students.budget import parse_budget
from raydistill.training.loop import train_student


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


def planned_trials(args: argparse.Namespace, data) -> list[dict]:
    """The configs the search will run: its CellSearcher, same seed, random sampler."""
    space = sp.load_space(args.space).with_train(loss="hard")  # run_search forces it too
    cell = sp.Cell(space.family, args.depth, parse_budget(args.budget))
    searcher = CellSearcher([(cell, space, args.trials)], kind="random", seed=0)
    run = {"seed": 0, "device": "cpu", "max_epochs": args.epochs}
    return [{**searcher.suggest(f"t{i}"), "run": run} for i in range(args.trials)]


def loop(configs: list[dict], data) -> tuple[float, list[tuple[float, float]]]:
    """Train every config in this process; (total wall, [(wall, best val/acc)])."""
    torch.set_num_threads(1)  # as the trials run: one thread for one CPU
    rows, t0 = [], time.perf_counter()
    for config in configs:
        t = time.perf_counter()
        res = train_student(solve_trial(config, data).spec, data, None, trial_train_config(config))
        rows.append((time.perf_counter() - t, res.best_val_acc))
    return time.perf_counter() - t0, rows


def main() -> None:
    args = _args()
    data = load_dataset(args.data, val_size=args.val_size, train_subset=args.train_subset)
    configs = planned_trials(args, data)
    load = [os.getloadavg()[0]]
    before, rows = loop(configs, data)
    load.append(os.getloadavg()[0])
    out = Path(args.out or tempfile.mkdtemp(prefix="bench-overhead-")) / "search"
    t0 = time.perf_counter()
    settings = SearchSettings(
        spaces=[args.space],
        budgets=args.budget,
        depths=[args.depth],
        trials=args.trials,
        out=str(out),
        searcher="random",
        cpus_per_trial=1,
        max_concurrent=1,
        max_epochs=args.epochs,
        device="cpu",
        wandb="off",
    )
    run_search(settings, data=data, verbose=0)
    search_wall = time.perf_counter() - t0
    load.append(os.getloadavg()[0])
    tune_wall = SearchSettings.load(out).runs[0]["wall_s"]
    trials = load_trials(out).sort_values("started_at")
    sampled = [json.loads(c) for c in trials["config"]]
    assert sampled == [{k: c[k] for k in s} for c, s in zip(configs, sampled, strict=True)]
    after, rows2 = loop(configs, data)
    load.append(os.getloadavg()[0])
    ref = (before + after) / 2

    print(
        f"{args.trials} trials of {args.space}-d{args.depth}@{args.budget}, {args.epochs} epochs "
        f"on {len(data.train_y)} images, 1 CPU each, one at a time"
    )
    print(
        f"{'trial':10s} {'search s':>9s} {'loop1 s':>8s} {'loop2 s':>8s} {'val/acc':>8s} {'loop':>7s}"
    )
    for (_, row), (s1, acc), (s2, _) in zip(trials.iterrows(), rows, rows2, strict=True):
        print(
            f"{row['trial_id']:10s} {row['wall_s']:9.1f} {s1:8.1f} {s2:8.1f} "
            f"{row['val/acc']:8.4f} {acc:7.4f}"
        )
    print(
        f"loop before {before:.1f} s | search {search_wall:.1f} s (Tune loop {tune_wall:.1f} s; "
        f"the rest is Ray start/stop and outputs) | loop after {after:.1f} s"
    )
    print(
        f"ratio search / mean loop: {search_wall / ref:.3f} (Tune loop only: "
        f"{tune_wall / ref:.3f}); mean trial {ref / len(configs):.1f} s; "
        f"1-min load average at the phase boundaries {[round(x, 1) for x in load]}"
    )


if __name__ == "__main__":
    main()
