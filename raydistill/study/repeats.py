"""Seed repeats: each cell's best configuration retrained with fresh seeds, in parallel.

The best trial of a search was picked *because* it scored well, so its own accuracy is biased
upwards; the noise of a cell is measured by retraining its best configuration (spec and train
config from the trials table, `raydistill.core.results`' rule) with seeds the search never used.
Every (cell, seed) is one Ray task asking for what its search trial asked for (1 CPU and the
search's declared `--gpus-per-trial`, or for "auto" the student's sized share:
`raydistill.core.resources`), so the repeats spread over the cluster's workers and wait for an
autoscaler's GPU node rather than run on CPUs; the dataset and the transfer set go into the object
store once. With `storage` (a URI or path, `raydistill.core.storage`) each task writes its row to
`<storage>/repeats/<trial>-<seed>.json` and the driver reads it back from there; nothing is
read from a worker's disk. Results: one row per run in
`seeds.csv`, and per cell `n`, `mean`, `std` (sample std) in `repeats.csv` — the input of
`raydistill.study.findings`.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from raydistill.core import results
from raydistill.core.numbers import pct

SEED_OFFSET = 1000  # repeat k uses seed SEED_OFFSET + k: never a search trial's seed


def repeat_jobs(trials: pd.DataFrame, seeds: int) -> list[dict[str, Any]]:
    """One job per (best trial of each row × budget, seed); `trials` has a `row` column."""
    jobs = []
    for _, best in results.best(trials, by=("row", "budget")).iterrows():
        for k in range(seeds):
            jobs.append({
                "row": best["row"], "cell": best["cell"], "family": best["family"],
                "depth": int(best["depth"]), "budget": int(best["budget"]),
                "twin": bool(best["twin"]), "trial_id": best["trial_id"],
                "spec": json.loads(best["spec"]), "train": json.loads(best["train"]),
                "seed": SEED_OFFSET + k, "epoch_s": _epoch_seconds(best),
            })  # fmt: skip
    return jobs


def _epoch_seconds(trial: pd.Series) -> float:
    """The search's measured seconds per epoch of a trial; inf when not recorded."""
    wall, epochs = trial.get("wall_s"), trial.get("epochs")
    if wall is None or epochs is None or pd.isna(wall) or pd.isna(epochs) or epochs < 1:
        return math.inf
    return float(wall) / float(epochs)


def longest_first(jobs: Sequence[dict[str, Any]]) -> list[int]:
    """Job positions, the longest run first (the search's seconds per epoch of the job's
    configuration; unmeasured first): submitted in this order, the last tasks to start are the
    short ones, so no worker idles while one long repeat finishes (LPT scheduling)."""
    return sorted(range(len(jobs)), key=lambda i: -jobs[i].get("epoch_s", math.inf))


def training_options(
    spec: dict[str, Any],
    train: dict[str, Any],
    splits: Any,
    *,
    gpus_per_trial: float | str = 0.0,
    cpus_per_trial: float = 1.0,
    gpu_memory_gib: float | None = None,
) -> dict[str, Any]:
    """`ray.remote` options of a task that trains `spec` (TrainConfig entries `train`) as a
    search trial does: `cpus_per_trial` CPUs and the declared GPU share, for "auto" the
    student's sized share (`raydistill.search.sizing.task_share`). Seed repeats and prune
    fine-tunes use this."""
    from raydistill.core.resources import task_options
    from raydistill.search.sizing import resident_bytes, task_share

    batch = int(train.get("batch_size", 128))
    share = task_share(gpus_per_trial, spec, batch, gpu_memory_gib, resident_bytes(splits))
    return task_options(share, cpus_per_trial)


def run_job(
    job: dict[str, Any], splits: Any, transfer: Any, storage: str | None = None
) -> dict[str, Any] | str:
    """Train one repeat (in a Ray task or in-process); plain data out, or with `storage` the
    URI of its row written there."""
    from raydistill.core.device import gpu_ids
    from raydistill.training.config import TrainConfig
    from raydistill.training.loop import train_student

    cfg = TrainConfig.from_dict({**job["train"], "seed": job["seed"], "device": "auto"})
    res = train_student(job["spec"], splits, transfer, cfg)
    keep = ("row", "cell", "family", "depth", "budget", "twin", "trial_id", "seed")
    row = {
        **{k: job[k] for k in keep},
        "status": res.status,
        "val_acc": res.best_val_acc,
        "test_acc": res.test_acc,
        "epochs": res.epochs,
        "wall_s": res.wall_s,
        "gpu_ids": ",".join(gpu_ids()),
    }
    if storage is None:
        return row
    from raydistill.core.storage import join, write_bytes

    where = join(storage, "repeats", f"{job['trial_id']}-{job['seed']}.json")
    return write_bytes(where, json.dumps(row).encode())


def _row(result: dict[str, Any] | str) -> dict[str, Any]:
    """A task's row: as returned, or read back through storage."""
    if isinstance(result, dict):
        return result
    from raydistill.core.storage import read_bytes

    return json.loads(read_bytes(result))


def run_repeats(
    jobs: Sequence[dict[str, Any]],
    splits: Any,
    transfer: Any,
    *,
    address: str = "local",
    storage: str | None = None,
    gpus_per_trial: float | str = 0.0,
    cpus_per_trial: float = 1.0,
    gpu_memory_gib: float | None = None,
    log: Callable[[str], None] = print,
) -> pd.DataFrame:
    """Run every job as a Ray task with its search trial's resources (see the module
    docstring); one row per job, in job order."""
    if not jobs:
        return pd.DataFrame()
    from raydistill.core.cluster import ray_session
    from raydistill.core.resources import check_gpu_request, least_request

    resources = {"gpus_per_trial": gpus_per_trial, "cpus_per_trial": cpus_per_trial,
                 "gpu_memory_gib": gpu_memory_gib}  # fmt: skip
    options = [training_options(j["spec"], j["train"], splits, **resources) for j in jobs]
    with ray_session(address) as ray:
        check_gpu_request(least_request(gpus_per_trial), address, "--gpus-per-trial")
        task = ray.remote(max_retries=1)(run_job)
        data_ref, transfer_ref = ray.put(splits), ray.put(transfer)
        pending = {
            task.options(**options[i]).remote(jobs[i], data_ref, transfer_ref, storage): i
            for i in longest_first(jobs)
        }
        rows: list[dict[str, Any] | None] = [None] * len(jobs)
        while pending:
            done, _ = ray.wait(list(pending), num_returns=1)
            row = _row(ray.get(done[0]))
            rows[pending.pop(done[0])] = row
            log(
                f"   seed repeat {len(jobs) - len(pending)}/{len(jobs)}: {row['row']} @ "
                f"{row['budget']:,} seed {row['seed']}: test {pct(row['test_acc'], '%')}"
            )
    return pd.DataFrame(rows)


def summarize(runs: pd.DataFrame) -> pd.DataFrame:
    """Per (row, budget): n, mean and sample std of the test accuracy over the seeds."""
    keys = ["row", "family", "depth", "budget", "twin"]
    ok = runs.dropna(subset=["test_acc"])
    grouped = ok.groupby(keys, sort=True)["test_acc"]
    out = grouped.agg(n="count", mean="mean", std="std").reset_index()
    out["std"] = out["std"].fillna(0.0)
    return out


def repeat_seeds(
    study: Path,
    trials: pd.DataFrame,
    splits: Any,
    transfer: Any,
    seeds: int,
    *,
    address: str = "local",
    storage: str | None = None,
    resources: dict[str, Any] | None = None,
    log: Callable[[str], None] = print,
) -> pd.DataFrame:
    """Run (or reuse, when `study/seeds.csv` has them) the repeats; writes seeds.csv and
    repeats.csv into `study`; returns the per-cell summary. `resources`: `run_repeats`'
    gpus_per_trial / cpus_per_trial / gpu_memory_gib (the search's)."""
    from raydistill.core.manifest import atomic_write_text

    jobs = repeat_jobs(trials, seeds)
    path = study / "seeds.csv"
    done = pd.read_csv(path) if path.is_file() else pd.DataFrame()
    wanted = {(j["trial_id"], j["seed"]) for j in jobs}
    have = set(zip(done["trial_id"], done["seed"], strict=True)) if len(done) else set()
    todo = [j for j in jobs if (j["trial_id"], j["seed"]) not in have]
    runs = pd.concat(
        [
            done,
            run_repeats(
                todo,
                splits,
                transfer,
                address=address,
                storage=storage,
                log=log,
                **(resources or {}),
            ),
        ]
    )
    # Rows of a best trial that is no longer the best (a resumed search) are dropped.
    runs = runs[[k in wanted for k in zip(runs["trial_id"], runs["seed"], strict=True)]]
    atomic_write_text(path, runs.to_csv(index=False))
    summary = summarize(runs)
    atomic_write_text(study / "repeats.csv", summary.to_csv(index=False))
    return summary
