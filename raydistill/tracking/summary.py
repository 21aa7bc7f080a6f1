"""The W&B summary run of a search, fed by its caller: the report and the exported students
(tracking sits below report and export in the pipeline and imports neither).

`log_summary(DIR, mode, report=make_report(DIR), models={cell: export dir})`: one W&B run (job
type "summary", in the experiment's group, with the dataset and transfer set the search's
manifest recorded) holding the best config per cell, Table 2, the Pareto table and Figure 1
of the report, and each given student (an export directory: spec.json, model.safetensors) as
a `model` artifact aliased `best`. Artifact staging folders are kept inside DIR for the
duration of the run.
"""

from __future__ import annotations

import contextlib
import json
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Protocol

from raydistill.core.env import scoped_env
from raydistill.core.errors import UserError
from raydistill.tracking.tracker import make_tracker, resolve_mode, scrub


class ReportLike(Protocol):
    """What the summary run reads from a report (`raydistill.report.Report`)."""

    experiment: str
    cells: list[str]
    best_configs: Any
    table2: Any
    pareto: Any
    paths: Mapping[str, Path]


def log_summary(
    directory: str | Path,
    mode: str | None = None,
    *,
    report: ReportLike | None = None,
    models: Mapping[str, str | Path] | None = None,
    project: str | None = None,
) -> str | None:
    """After a search: one W&B run with the best config per cell, Table 2, Figure 1 and models,
    from `report` (`raydistill.report.make_report(directory)`, required unless mode is "off").

    `models`: {cell: export directory} of the students to log, each as a `model` artifact
    aliased `best` (`raydistill.export.exporter.export_cells` writes them). Returns the run id
    (None when mode is "off").
    """
    mode = resolve_mode(mode)
    if mode == "off":
        return None
    if report is None:
        raise UserError("the W&B summary run needs the report (make_report(DIR)) to log")
    d = Path(directory).resolve()
    result = report
    experiment = result.experiment
    tracker = make_tracker(
        mode,
        root=d,
        experiment=experiment,
        cell="summary",
        trial_id="summary",
        config={"experiment": experiment, "cells": result.cells},
        tags=["summary"],
        job_type="summary",
        project=project,
        context=_context(d, experiment),
    )
    run = tracker.run
    if run is None:
        raise UserError(f"W&B summary run for {d} could not start (see the warning above)")
    logged, status = 0, "error"
    try:
        with _artifact_dirs_inside(d):
            _log_tables(run, result)
            logged = _log_models(run, experiment, models or {})
        status = "finished"
    finally:  # an error still closes the run (exit code 1) before it propagates
        tracker.finish({"cells": len(result.cells), "models": logged}, status=status)
    return tracker.run_id


def _context(d: Path, experiment: str) -> dict[str, Any] | None:
    """The run context the search recorded in its manifest (dataset, split, transfer set)."""
    from raydistill.tracking.context import run_context

    try:
        manifest = json.loads((d / "manifest.json").read_text())
    except (OSError, ValueError):
        return None
    dataset = manifest.get("dataset") if isinstance(manifest, dict) else None
    return run_context(experiment, dataset, manifest.get("transfer")) if dataset else None


def _log_tables(run: Any, result: Any) -> None:
    import wandb

    best = result.best_configs
    run.log(
        {
            "best_configs": wandb.Table(dataframe=best.astype(str)),
            "table2": wandb.Table(dataframe=result.table2.reset_index().astype(str)),
            "pareto": wandb.Table(dataframe=result.pareto.astype(str)),
            "figure1": wandb.Image(str(result.paths["figure1"])),
        }
    )


def _log_models(run: Any, experiment: str, models: Mapping[str, str | Path]) -> int:
    import wandb

    for cell, path in models.items():
        meta = json.loads((Path(path) / "spec.json").read_text())
        name = re.sub(r"[^A-Za-z0-9_.-]", "_", f"{experiment}-{cell}")
        art = wandb.Artifact(name, type="model", metadata=scrub(meta))
        for f in ("model.safetensors", "spec.json"):
            art.add_file(str(Path(path) / f), name=f, policy="immutable")
        run.log_artifact(art, aliases=["best"])
    return len(models)


def _artifact_dirs_inside(d: Path) -> contextlib.AbstractContextManager[None]:
    # W&B stages artifact files under WANDB_DATA_DIR / WANDB_CACHE_DIR (default ~/.local/share,
    # ~/.cache): keep them inside the experiment directory for the duration of the summary run.
    dirs = {"WANDB_DATA_DIR": d / "wandb" / "data", "WANDB_CACHE_DIR": d / "wandb" / "cache"}
    return scoped_env({k: str(v) for k, v in dirs.items()})
