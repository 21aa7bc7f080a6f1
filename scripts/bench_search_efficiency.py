"""How many trials does TPE need to match the best that random search finds in 32 trials?

One cheap fixed cell (default: mlp-d2@50k on a CIFAR-10 subset, a few epochs, hard labels). For
each seed, random search runs 32 trials; TPE then runs until its best val/acc reaches random's
best (or `--max-trials`). Printed: per seed, random's best and the trials TPE needed; the median
over seeds (target ≤ 12).

The searcher is what is measured, so no Ray cluster is started: trials are suggested by
`raydistill.search.CellSearcher` itself (the same class, seeds and YAML → Optuna translation the
search uses: `spaces.to_optuna` + `spaces.make_sampler`), and evaluated in this process by
`trainable.solve_trial` + `train_student`, scored by `trainable.objective`.

    python scripts/bench_search_efficiency.py --data ../shared/datasets/cifar10-jpeg.parquet
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch

from raydistill.data import load_dataset
from raydistill.search import CellSearcher
from raydistill.search import spaces as sp
from raydistill.search.trainable import objective, solve_trial, trial_train_config
from raydistill.students.budget import parse_budget
from raydistill.training.loop import train_student


def _args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    default_data = Path(__file__).resolve().parents[2] / "shared/datasets/cifar10-jpeg.parquet"
    p.add_argument("--data", default=str(default_data))
    p.add_argument("--space", default="mlp", help="shipped space name or YAML path")
    p.add_argument("--depth", type=int, default=2)
    p.add_argument("--budget", default="50k")
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--train-subset", type=int, default=2000)
    p.add_argument("--val-size", type=int, default=1000)
    p.add_argument("--seeds", type=int, default=5)
    p.add_argument("--random-trials", type=int, default=32)
    p.add_argument("--max-trials", type=int, default=32, help="TPE gives up after this many")
    p.add_argument("--searcher", default="tpe", choices=["tpe", "gp"])
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--out", default="bench_search_efficiency.json")
    return p.parse_args()


def run_searcher(kind: str, seed: int, n: int, cell, space, evaluate, target=None) -> list[float]:
    """Suggest / evaluate / complete `n` trials of one cell (stop early once `target` is reached)."""
    searcher = CellSearcher([(cell, space, n)], kind=kind, seed=seed)
    values: list[float] = []
    for i in range(n):
        config = searcher.suggest(f"{kind}{seed}_{i}")
        value = evaluate(config)
        searcher.on_trial_complete(f"{kind}{seed}_{i}", {"objective": value})
        values.append(value)
        if target is not None and value >= target:
            break
    return values


def main() -> None:
    args = _args()
    torch.set_num_threads(args.threads)
    data = load_dataset(args.data, val_size=args.val_size, train_subset=args.train_subset)
    space = sp.load_space(args.space).with_train(loss="hard", augment="none", schedule="cosine")
    cell = sp.Cell(space.family, args.depth, parse_budget(args.budget))
    run = {"seed": 0, "device": "cpu", "max_epochs": args.epochs}
    cost = []

    def evaluate(config: dict) -> float:
        t0 = time.perf_counter()
        config = {**config, "run": run}
        sol = solve_trial(config, data)
        res = train_student(sol.spec, data, None, trial_train_config(config), evaluate_test=False)
        cost.append(time.perf_counter() - t0)
        return objective({"status": res.status, "best/val/acc": res.best_val_acc}) or 0.0

    rows = []
    print(f"cell {cell.id}, {args.epochs} epochs on {len(data.train_y)} images of {data.name}")
    for seed in range(args.seeds):
        # Another seed for the baseline: TPE's start-up trials are random draws, and with the
        # same seed they would repeat the baseline's first draws.
        rand = run_searcher("random", seed + 1000, args.random_trials, cell, space, evaluate)
        target = max(rand)
        tpe = run_searcher(args.searcher, seed, args.max_trials, cell, space, evaluate, target)
        needed = len(tpe) if max(tpe) >= target else None
        rows.append(
            {
                "seed": seed,
                "random_best": target,
                "needed": needed,
                "tpe_best": max(tpe),
                "random": rand,
                "tpe": tpe,
            }
        )
        shown = needed if needed is not None else f">{args.max_trials}"
        print(
            f"seed {seed}: random best of {args.random_trials} = {target:.4f}; "
            f"{args.searcher} reached it at trial {shown} (its best {max(tpe):.4f})",
            flush=True,
        )
    counts = [r["needed"] if r["needed"] is not None else args.max_trials + 1 for r in rows]
    median = statistics.median(counts)
    print(
        f"median trials {args.searcher} needs to match random@{args.random_trials}: {median} "
        f"(target ≤ 12); {len(cost)} trials, {statistics.mean(cost):.1f} s each"
    )
    Path(args.out).write_text(
        json.dumps({"args": vars(args), "rows": rows, "median": median}, indent=2)
    )


if __name__ == "__main__":
    main()
