"""Uniform allocation vs adaptive allocation + warm starts: a study's search stage, three ways.

The scale's teachers and transfer set are made (or reused) in OUT as `reproduce` makes them,
then its main search runs (real Ray, the scale's own settings) as:

    uniform        --trials per cell (the baseline: today's search)
    adaptive       adaptive allocation + warm start, the same total
    adaptive-60    adaptive allocation + warm start, 60 % of that total

Printed for each: the cells on the front (best validation accuracy of each cell no larger cell
beats, `raydistill.search.allocation.front`), the trials each cell got, the wall time; and the
trials each run needed to reach the uniform run's final front within its noise (every front
value within 2 binomial standard errors of the validation accuracy, √(p(1−p)/n_val)), walking its
trials in the order they ended, as a ratio to uniform's total. The baseline is named
`uniform`, the ceiling is uniform's own trial count to its final front.

    python scripts/bench_allocation.py --scale demo --out runs/bench-alloc-demo
    python scripts/bench_allocation.py --scale tiny --data /work/shared/datasets/cifar10-jpeg.parquet
"""

from __future__ import annotations

import argparse
import json
import math
import time
from dataclasses import replace
from pathlib import Path

import pandas as pd

from raydistill.core import results
from raydistill.search import load_trials, run_search
from raydistill.study.reproduce import prepare, search_settings, study_inputs

Z = 2.0  # binomial standard errors: "within the noise" of a validation accuracy


def _args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--scale", default="demo")
    p.add_argument("--data", default=None, help="overrides the scale's data source")
    p.add_argument("--out", default=None, help="default runs/bench-allocation-<scale>")
    p.add_argument("--trials", type=int, default=None, help="override the scale's trials per cell")
    p.add_argument("--fraction", type=float, default=0.6, help="the reduced run's share")
    p.add_argument("--address", default="local")
    return p.parse_args()


def fronts(rows: pd.DataFrame) -> dict[float, float]:
    """budget → the best val/acc of any cell no larger (the front at that size)."""
    best = results.best(rows)
    pts = list(zip(best["budget"].astype(float), best["val/acc"].astype(float), strict=True))
    return {b: max(v for s, v in pts if s <= b) for b in sorted({s for s, _ in pts})}


def trials_to_reach(rows: pd.DataFrame, target: dict[float, float], n_val: int) -> int | None:
    """Trials (in the order they ended) until every front value is within Z·SE of `target`."""
    ordered = rows.sort_values("ended_at", na_position="last").reset_index(drop=True)
    for k in range(1, len(ordered) + 1):
        now = fronts(ordered.iloc[:k])
        if all(now.get(b, -math.inf) >= t - Z * _se(t, n_val) for b, t in target.items()):
            return k
    return None


def _se(p: float, n: int) -> float:
    return math.sqrt(max(p * (1 - p), 1e-6) / max(n, 1))


def on_front(rows: pd.DataFrame) -> pd.DataFrame:
    """The best trial of each cell that no cell of the same or smaller budget beats."""
    best = results.best(rows).sort_values(["budget", "val/acc"], ascending=[True, False])
    keep, top = [], -math.inf
    for _, r in best.iterrows():
        if r["val/acc"] > top:
            keep.append(r)
            top = r["val/acc"]
    return pd.DataFrame(keep)


def run_variant(name: str, base, splits, out: Path, **change) -> dict:
    where = out / "bench" / name
    settings = replace(base, out=str(where), experiment=f"bench-{name}", **change)
    t0 = time.perf_counter()
    if not (where / "trials.parquet").is_file():
        run_search(settings, data=splits, verbose=0)
    wall = time.perf_counter() - t0
    saved = json.loads((where / "search.json").read_text())
    rows = load_trials(where)
    return {
        "name": name,
        "rows": rows,
        "wall_s": sum(r.get("wall_s", 0) for r in saved["runs"]),
        "this_call_s": wall,
    }


def main() -> None:
    args = _args()
    sc = prepare(args.scale)
    out = Path(args.out or f"runs/bench-allocation-{sc.name}").resolve()
    t0 = time.perf_counter()
    splits, transfer = study_inputs(sc, out, source=args.data, address=args.address)
    print(f"inputs (teachers, transfer set): {time.perf_counter() - t0:.0f} s")
    run = {"transfer": transfer, "address": args.address, "wandb": "off", "storage": None}
    base = search_settings(sc, out / "bench" / "uniform", args.trials, run)
    cells = len(base.budgets) * sum(
        len(sc.search.depths_for(s) or []) or 1 for s in sc.search.spaces
    )
    total = base.trials * cells
    reduced = max(cells, round(args.fraction * total))
    runs = [
        run_variant("uniform", base, splits, out, allocate="uniform", warm_start=False),
        run_variant("adaptive", base, splits, out, allocate="adaptive", warm_start=True),
        run_variant(
            f"adaptive-{round(100 * args.fraction)}",
            base,
            splits,
            out,
            allocate="adaptive",
            warm_start=True,
            total_trials=reduced,
        ),
    ]
    n_val = len(splits.val_y)
    target = fronts(runs[0]["rows"])
    print(f"\n{sc.name}: {cells} cells, uniform {total} trials, n_val {n_val}")
    for r in runs:
        rows = r["rows"]
        print(f"\n== {r['name']}: {len(rows)} trials, wall {r['wall_s']:.0f} s")
        for _, f in on_front(rows).iterrows():
            print(f"   front {f['cell']:18s} best val {100 * f['val/acc']:.2f} %")
        counts = rows.groupby("cell").size().to_dict()
        print("   trials per cell: " + ", ".join(f"{c} {n}" for c, n in sorted(counts.items())))
        k = trials_to_reach(rows, target, n_val)
        ratio = "never" if k is None else f"{k} trials = {k / total:.2f} of uniform's {total}"
        print(f"   reached uniform's front within {Z:g} SE after {ratio}")


if __name__ == "__main__":
    main()
