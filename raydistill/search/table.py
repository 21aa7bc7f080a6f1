"""The trials table of a search: `trials.parquet` (one row per trial of every run, schema
`TRIALS_SCHEMA`), `best/<cell>.json` (by the one best-trial rule, `raydistill.core.results`),
`manifest.json`, reading the table back (`load_trials`) and the per-cell summary text.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from ray import tune

from raydistill.core import results
from raydistill.core.errors import UserError
from raydistill.core.manifest import atomic_path, atomic_write_text, build_manifest, write_manifest
from raydistill.core.numbers import finite, optional_int
from raydistill.core.storage import join, upload, with_scheme
from raydistill.search.settings import (
    ALLOCATION_DIR,
    METRIC,
    SEARCH_FILE,
    STORAGE_OUTPUTS,
    TRIALS_FILE,
    SearchSettings,
)
from raydistill.search.trainable import sampled_values, trial_train_config
from raydistill.tracking.context import describe_dataset, describe_transfer
from raydistill.tracking.runs import collect_runs
from raydistill.tracking.tracker import resolve_mode


def write_outputs(settings: SearchSettings, splits: Any, ts: Any) -> pd.DataFrame:
    """trials.parquet (every run), best/<cell>.json and manifest.json in DIR; the trials' W&B
    runs gathered from the storage into DIR/wandb."""
    out = Path(settings.out)
    if resolve_mode(settings.wandb) != "off":
        collect_runs([settings.run_path(run) for run in settings.runs], out)
    rows = [row for _, row in trial_rows(settings)]
    table = pa.Table.from_pylist(rows, schema=TRIALS_SCHEMA)
    with atomic_path(out / TRIALS_FILE) as tmp:
        pq.write_table(table, tmp)
    frame = table.to_pandas()
    _write_best(out, frame)
    _write_manifest(settings, frame, splits, ts)
    publish(settings)
    return frame


def trial_rows(settings: SearchSettings) -> list[tuple[Any, dict[str, Any]]]:
    """(Tune trial, its trials-table row) of every run, read from the search's Tune storage
    (also while the search runs: `raydistill status`)."""
    out = []
    for run in settings.runs:
        try:
            analysis = tune.ExperimentAnalysis(settings.run_path(run))
        except ValueError:
            continue  # a run that never started
        frames = analysis.trial_dataframes
        out += [(t, _trial_row(settings, run, t, frames.get(t.trial_id))) for t in analysis.trials]
    return out


def publish(settings: SearchSettings) -> None:
    """DIR's small outputs to `<storage>/_search/` when the storage is not DIR/tune."""
    out = Path(settings.out)
    if settings.storage == str(out / "tune"):
        return
    best = sorted(f"best/{p.name}" for p in (out / "best").glob("*.json"))
    journals = sorted(f"{ALLOCATION_DIR}/{p.name}" for p in (out / ALLOCATION_DIR).glob("*.json"))
    names = [SEARCH_FILE, TRIALS_FILE, "manifest.json", *best, *journals]
    upload(out, [n for n in names if (out / n).is_file()], join(settings.storage, STORAGE_OUTPUTS))


TRIALS_SCHEMA = pa.schema([
    ("experiment", pa.string()), ("run", pa.string()), ("cell", pa.string()),
    ("family", pa.string()), ("depth", pa.int32()), ("budget", pa.int64()),
    ("budget_kind", pa.string()), ("macs", pa.int64()),
    ("trial_id", pa.string()), ("status", pa.string()), ("config", pa.string()),
    ("spec", pa.string()), ("widths", pa.list_(pa.int32())), ("params", pa.int64()),
    ("params/budget", pa.float64()), ("val/acc", pa.float64()), ("val/loss", pa.float64()),
    ("test/acc", pa.float64()), ("epochs", pa.int32()), ("best_epoch", pa.int32()),
    ("wall_s", pa.float64()), ("checkpoint", pa.string()), ("seed", pa.int64()),
    ("loss", pa.string()), ("train", pa.string()), ("started_at", pa.float64()),
    ("ended_at", pa.float64()), ("gpu_ids", pa.string()), ("error", pa.string()),
    ("pruned", pa.bool_()), ("failures", pa.int32()),
])  # fmt: skip


def _trial_row(settings: SearchSettings, run: Mapping, trial: Any, history: Any) -> dict[str, Any]:
    cfg, last = trial.config, trial.last_result or {}
    spec = json.loads(last["spec"]) if isinstance(last.get("spec"), str) else None
    best = _best_epoch(history)
    return {
        "experiment": settings.experiment, "run": run["name"], "cell": cfg.get("cell"),
        "family": cfg.get("family"), "depth": cfg.get("depth"), "budget": cfg.get("budget"),
        "budget_kind": cfg.get("budget_kind", "params"), "macs": last.get("macs"),
        "trial_id": trial.trial_id, "status": _status(trial, last, frozenset(run.get("errored", []))),
        "config": json.dumps(sampled_values(cfg), sort_keys=True),
        "spec": json.dumps(spec) if spec else None,
        "widths": list(spec["widths"]) if spec else None, "params": last.get("params"),
        "params/budget": last.get("params/budget"),
        "val/acc": finite(last.get("best/val/acc")), "val/loss": best.get("val/loss"),
        "test/acc": finite(last.get("test/acc")), "epochs": last.get("epoch"),
        "best_epoch": best.get("epoch"), "wall_s": finite(last.get("time_total_s")),
        "checkpoint": _checkpoint_uri(settings, trial),
        "seed": settings.seed, "loss": cfg.get("settings", {}).get("train", {}).get("loss"),
        "train": json.dumps(trial_train_config(cfg).to_dict()) if "settings" in cfg else None,
        "started_at": finite(last.get("started_at")), "ended_at": finite(last.get("reported_at")),
        "gpu_ids": last.get("gpu_ids"), "error": _error_text(trial),
        "pruned": _pruned(trial, last), "failures": _failures(settings, run, trial),
    }  # fmt: skip


def _checkpoint_uri(settings: SearchSettings, trial: Any) -> str | None:
    """The trial's latest checkpoint as a storage URI that keeps its scheme (s3://...), or a
    path when the storage is one; read back with `raydistill.core.storage`."""
    if trial.checkpoint is None:
        return None
    return with_scheme(settings.storage, trial.checkpoint.path)


def _status(trial: Any, last: Mapping[str, Any], errored: frozenset[str] = frozenset()) -> str:
    """finished | stopped | diverged | error | running (the report's vocabulary).

    A trial ASHA stopped early is "stopped" (and `pruned` is True in its row); one that has not
    ended (an interrupted search) is "running".
    """
    if trial.status == "ERROR" or trial.trial_id in errored:
        return "error"
    if trial.status != "TERMINATED":
        return "running"
    reported = last.get("status")
    if reported is None:
        return "error"
    return "stopped" if reported == "running" else str(reported)


def _failures(settings: SearchSettings, run: Mapping[str, Any], trial: Any) -> int:
    # A trial that failed for good failed max_failures + 1 times, even when Tune's saved state
    # missed the last failure (the race noted in _execute).
    n = int(trial.run_metadata.num_failures)
    return max(n, settings.max_failures + 1) if trial.trial_id in run.get("errored", []) else n


def _pruned(trial: Any, last: Mapping[str, Any]) -> bool:
    return trial.status == "TERMINATED" and last.get("status") == "running"


def _best_epoch(history: Any) -> dict[str, Any]:
    """The epoch of the best val/acc (first one, as train.py keeps the first) and its val/loss."""
    if history is None or len(history) == 0 or METRIC not in history or "epoch" not in history:
        return {}
    acc = pd.to_numeric(history[METRIC], errors="coerce").to_numpy()
    if not np.isfinite(acc).any():
        return {}
    i = int(np.nanargmax(acc))
    loss = history["val/loss"].iloc[i] if "val/loss" in history else None
    return {"epoch": int(history["epoch"].iloc[i]), "val/loss": finite(loss)}


def _error_text(trial: Any) -> str | None:
    """The last line of the trial's error trace (its exception), if it failed."""
    if trial.status != "ERROR":
        return None
    try:
        text = trial.get_error()
    except Exception:  # the trace file is unreadable: say so rather than fail the table
        text = "error (trace unavailable)"
    lines = [ln for ln in str(text or "error").strip().splitlines() if ln.strip()]
    return lines[-1][:500] if lines else "error"


def _write_best(out: Path, frame: pd.DataFrame) -> None:
    """best/<cell>.json: each cell's best trial by the one rule (`raydistill.core.results`)."""
    for _, row in results.best(frame[frame["checkpoint"].notna()]).iterrows():
        cid = row["cell"]
        best = {
            "cell": cid, "experiment": row["experiment"], "run": row["run"],
            "trial_id": row["trial_id"], "status": row["status"], "family": row["family"],
            "depth": int(row["depth"]), "budget": int(row["budget"]),
            "budget_kind": row.get("budget_kind") or "params",
            "config": json.loads(row["config"]), "spec": json.loads(row["spec"]),
            "train": json.loads(row["train"]), "params": int(row["params"]),
            "params/budget": float(row["params/budget"]),
            "metrics": {k: finite(row[k]) for k in ("val/acc", "val/loss", "test/acc", "wall_s")}
            | {"epochs": int(row["epochs"]), "best_epoch": optional_int(row["best_epoch"])},
            "checkpoint": row["checkpoint"],
        }  # fmt: skip
        atomic_write_text(out / "best" / f"{cid}.json", json.dumps(best, indent=2) + "\n")


def _write_manifest(settings: SearchSettings, frame: pd.DataFrame, splits: Any, ts: Any) -> None:
    config = {k: v for k, v in asdict(settings).items() if k not in ("argv", "runs")}
    teachers = list(ts.meta.get("teacher_fingerprints") or []) if ts is not None else None
    transfer_sha = getattr(ts, "fingerprint", None) or None
    extra = {
        "argv": settings.argv, "experiment": settings.experiment, "runs": settings.runs,
        "cells": sorted(frame["cell"].dropna().unique().tolist()) if len(frame) else [],
        "trials": len(frame), "transfer_fingerprint": transfer_sha,
        "classes": list(splits.classes) if splits is not None else None,
        "dataset": describe_dataset(splits, source=settings.data, options=settings.data_options)
        if splits is not None else None,
        "transfer": describe_transfer(ts),
        "outputs": {"trials": TRIALS_FILE, "best": "best/", "tune": settings.storage,
                    "allocation": f"{ALLOCATION_DIR}/"},
    }  # fmt: skip
    manifest = build_manifest(
        "search",
        config,
        seeds=[settings.seed],
        dataset_fingerprint=getattr(splits, "fingerprint", None),
        teacher_fingerprints=teachers,
        extra=extra,
    )
    write_manifest(settings.out, manifest)


def load_trials(out: str | Path) -> pd.DataFrame:
    """DIR/trials.parquet as a DataFrame (one row per trial of every run)."""
    path = Path(out) / TRIALS_FILE
    if not path.is_file():
        raise UserError(f"{path} does not exist; run `raydistill search ... --out {out}` first")
    return pq.read_table(path).to_pandas()


def summarize(frame: pd.DataFrame) -> str:
    """One line per cell: trials by status, the best trial's val/acc (`raydistill.core.results`)
    and its params."""
    if frame.empty:
        return "no trials"
    lines = [f"{'cell':22s} {'trials':>6s} {'best val/acc':>12s} {'params':>10s}  statuses"]
    for cid, rows in frame.groupby("cell", sort=True):
        ok = results.rank(rows)
        best = ok.iloc[0] if not ok.empty else None
        acc = f"{best['val/acc']:.4f}" if best is not None else "-"
        params = f"{int(best['params']):,}" if best is not None else "-"
        counts = ", ".join(
            f"{k} {v}" for k, v in rows["status"].value_counts().sort_index().items()
        )
        lines.append(f"{cid:22s} {len(rows):6d} {acc:>12s} {params:>10s}  {counts}")
    return "\n".join(lines)
