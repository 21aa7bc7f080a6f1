"""Running a search: `run_search` (a new search), `resume_search` (Tuner.restore of an
interrupted run), `extend_search` (a new warm-started run in the same DIR), and the Tuner wiring
they share (trainable with its resources, Tune's environment settings, progress reporter,
which trials failed for good, whether a run is complete). Ray lives here, in
`raydistill.search.cells` and in `raydistill.search.trainable`.
"""

from __future__ import annotations

import contextlib
import json
import math
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from ray import tune

from raydistill.core.cluster import ray_session
from raydistill.core.env import scoped_env
from raydistill.core.errors import UserError
from raydistill.core.resources import check_gpu_request, least_request, pending_cap
from raydistill.core.results import DONE
from raydistill.core.storage import check_shared, probe
from raydistill.search import spaces as sp
from raydistill.search.cells import CellSearcher, trial_dirname, trial_id_from_dirname, trial_name
from raydistill.search.plan import describe_plan, longest_first
from raydistill.search.progress import SearchProgress
from raydistill.search.scheduler import CellScheduler
from raydistill.search.settings import (
    ALLOCATION_DIR,
    METRIC,
    MODE,
    SEARCH_FILE,
    SearchInterrupted,
    SearchSettings,
    check_allocation,
    check_choices,
    load_data,
    load_transfer,
    parse_budget_list,
    parse_gpus,
    recorded_source,
    reload_inputs,
    run_total,
    storage_path,
)
from raydistill.search.sizing import resident_bytes, trial_resources
from raydistill.search.table import load_trials, publish, summarize, write_outputs
from raydistill.search.trainable import train_trial
from raydistill.students import data_spec_keys
from raydistill.students.budget import Budget
from raydistill.tracking.tracker import make_tracker

# Experiment-state snapshot period (s): small, so a killed driver resumes trials from their
# checkpoints instead of from scratch (see the shared Ray notes).
STATE_SNAPSHOT_S = "1"


def run_search(
    settings: SearchSettings,
    *,
    data: Any = None,
    transfer: Any = None,
    dry_run: bool = False,
    samples: int = 3,
    verbose: int = 1,
) -> Path:
    """Run the search `settings` describe; returns DIR. `data` / `transfer`: in-memory inputs
    (a `Splits`, a `TransferSet`) in place of `settings.data` / `settings.transfer`; no
    transfer set: hard labels, loss "hard" forced. `settings.storage`: where Tune writes
    trials and checkpoints (`raydistill.core.storage`; default DIR/tune), probed before
    anything runs. Raises `SearchInterrupted` if stopped before all trials finished."""
    s = settings
    check_choices(s.searcher, s.scheduler, s.wandb, s.trials, s.gpus_per_trial, s.cpus_per_trial)
    check_shared(s.storage, s.address)  # a multi-node run on a local path: refused before anything
    data = data if data is not None else s.data
    transfer = transfer if transfer is not None else s.transfer
    budgets = parse_budget_list(s.budgets)
    out = Path(s.out).expanduser().resolve()
    loaded = _load_spaces(s.spaces, hard_labels=transfer is None, verbose=verbose)
    plans = sp.plan_cells(loaded, budgets, s.depths)
    check_allocation(s.allocate, s.total_trials, len(plans))
    splits = load_data(data, s.data_options)
    if dry_run:
        load_transfer(transfer, splits)  # a transfer set made for other splits: refused here too
        kind = s.searcher
        print(describe_plan(plans, s.trials, splits, seed=s.seed, samples=samples, searcher=kind))
        return out
    if (out / SEARCH_FILE).exists():
        raise UserError(
            f"{out} already holds a search; use --resume {out}, --extend, or another --out"
        )
    if int(s.checkpoint_every) < 1:
        raise UserError(f"--checkpoint-every {s.checkpoint_every}: must be ≥ 1 (epochs)")
    tune_storage = storage_path(s.storage, out)
    probe(tune_storage)  # unreachable / unwritable / no credentials: refused before any trial
    saved = _normalised(s, loaded, budgets, out, tune_storage, data, transfer, splits)
    cells = {c.id: int(s.trials) for c, _ in plans}
    saved.runs.append({"name": saved.experiment, "index": 0, "cells": cells, "complete": False})
    out.mkdir(parents=True, exist_ok=True)
    saved.save()
    return _execute(saved, splits, load_transfer(transfer, splits), restore=False, verbose=verbose)


def _normalised(
    s: SearchSettings,
    loaded: Sequence[sp.SearchSpace],
    budgets: list[Budget],
    out: Path,
    storage: str,
    data: Any,
    transfer: Any,
    splits: Any,
) -> SearchSettings:
    """The settings as DIR/search.json records them (the input of --resume and --extend)."""
    return replace(
        s,
        experiment=s.experiment or out.name,
        out=str(out),
        storage=storage,
        spaces=[dict(x.raw) for x in loaded],
        budgets=[b.label for b in budgets],
        depths=list(s.depths) if s.depths is not None else None,
        trials=int(s.trials),
        data=recorded_source(data),
        data_options=dict(s.data_options),
        transfer=recorded_source(transfer),
        gpus_per_trial=parse_gpus(s.gpus_per_trial),
        cpus_per_trial=float(s.cpus_per_trial),
        seed=int(s.seed),
        max_failures=int(s.max_failures),
        dataset_fingerprint=splits.fingerprint,
        checkpoint_every=int(s.checkpoint_every),
        argv=list(s.argv or sys.argv),
        runs=[],
    )


def _load_spaces(
    spaces: Sequence[str | Path | Mapping[str, Any]], *, hard_labels: bool, verbose: int
) -> list[sp.SearchSpace]:
    """The search spaces, validated; with loss "hard" forced when there is no transfer set."""
    loaded = [sp.load_space(s) for s in spaces]
    if not loaded:
        raise UserError("no search space given; e.g. search_spaces/cnn.yaml")
    if hard_labels:
        if verbose:
            print("raydistill: no --transfer: trials train on hard labels (loss 'hard' forced)")
        loaded = [s.with_train(loss="hard") for s in loaded]
    return loaded


def resume_search(
    out: str | Path, *, data: Any = None, transfer: Any = None, verbose: int = 1
) -> Path:
    """Continue an interrupted search in DIR to its full trial count (Tuner.restore)."""
    settings = SearchSettings.load(Path(out).expanduser().resolve())
    splits, ts = reload_inputs(settings, data, transfer)
    if settings.complete:
        if verbose:
            print(f"raydistill: {settings.out}: every trial has finished; outputs rewritten")
        write_outputs(settings, splits, ts)
        return Path(settings.out)
    return _execute(settings, splits, ts, restore=True, verbose=verbose)


def extend_search(
    out: str | Path,
    n: int,
    *,
    cells: Sequence[str] | None = None,
    data: Any = None,
    transfer: Any = None,
    verbose: int = 1,
) -> Path:
    """Add `n` trials to finished cells (all, or `cells`), warm-starting each cell's new study
    from its finished trials; a new Tune run in the same DIR."""
    settings = SearchSettings.load(Path(out).expanduser().resolve())
    if n < 1:
        raise UserError(f"--extend {n}: the number of trials to add must be ≥ 1")
    chosen = settings.chosen_cells(cells)
    if not settings.complete:
        raise UserError(
            f"{settings.out} has an unfinished run; `raydistill search --resume {settings.out} "
            f"--extend {n}` finishes it, then adds the trials"
        )
    splits, ts = reload_inputs(settings, data, transfer)
    index = max(r["index"] for r in settings.runs) + 1
    run = {"name": f"{settings.experiment}-extend{index}", "index": index,
           "cells": {c: int(n) for c in chosen}, "complete": False}  # fmt: skip
    settings.runs.append(run)
    settings.save()
    return _execute(settings, splits, ts, restore=False, verbose=verbose)


def _execute(
    settings: SearchSettings, splits: Any, ts: Any, *, restore: bool, verbose: int
) -> Path:
    """Run (or restore) the newest run of `settings`, then write the outputs."""
    run = settings.runs[-1]
    probe(settings.storage)
    publish(settings)  # search.json in the storage: `raydistill status --storage` from elsewhere
    with ray_session(settings.address), _tune_env(settings, run):
        check_gpu_request(least_request(settings.gpus_per_trial), settings.address,
                          "--gpus-per-trial")  # fmt: skip
        trainable = _trainable(settings, splits, ts)
        path = settings.run_path(run)
        if restore and tune.Tuner.can_restore(path):
            tuner = tune.Tuner.restore(path, trainable=trainable, resume_errored=True)
        else:  # a fresh run, or one stopped before Tune saved any state
            tuner = _new_tuner(settings, run, trainable, ts, verbose, data_spec_keys(splits))
        t0 = time.time()
        grid = tuner.fit()
        run["wall_s"] = run.get("wall_s", 0.0) + time.time() - t0
        # Tune can persist a trial that died on its last allowed retry as RUNNING (its
        # actor-died callback races the task-failed one); the in-memory result is right.
        run["errored"] = sorted(set(run.get("errored", [])) | _errored_trial_ids(grid))
    run["complete"] = _run_complete(settings, run)
    settings.save()
    frame = write_outputs(settings, splits, ts)
    if verbose:
        print(summarize(frame))
    if not run["complete"]:
        print(f"raydistill: search interrupted; continue with: raydistill search --resume {settings.out}",
              file=sys.stderr)  # fmt: skip
        raise SearchInterrupted(settings.out)
    return Path(settings.out)


def _tune_env(
    settings: SearchSettings, run: Mapping[str, Any]
) -> contextlib.AbstractContextManager[None]:
    """Tune's settings that only environment variables reach, for this fit (the user's win).

    Pending trials: Tune lets a custom searcher keep ONE trial pending, so trial actors would
    start one after another (~2.5 s each here) and an autoscaler would see one trial's demand
    at a time; allow every trial of the run (or --max-concurrent) to be pending.
    """
    values = {
        "TUNE_GLOBAL_CHECKPOINT_S": STATE_SNAPSHOT_S,
        "TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S": "0",
        "RAY_AIR_NEW_OUTPUT": "0",  # the legacy reporter: it honours our table columns
        "TUNE_MAX_PENDING_TRIALS_PG": str(
            pending_cap(run_total(settings, run), settings.max_concurrent)
        ),
    }
    return scoped_env(values, override=False)


def _new_tuner(
    settings: SearchSettings,
    run: Mapping[str, Any],
    trainable: Any,
    ts: Any,
    verbose: int,
    data_keys: Mapping[str, Any],
) -> Any:
    plans = {c.id: (c, s) for c, s in settings.cell_plans()}
    cells = longest_first([(*plans[cid], n) for cid, n in run["cells"].items()], data_keys)
    warm = _warm_start(settings, run["cells"]) if run["index"] > 0 else None
    first = run["index"] == 0  # --extend runs: the N trials asked for, in every named cell
    searcher = CellSearcher(
        cells, kind=settings.searcher, seed=settings.seed, run_index=run["index"], warm=warm,
        allocate=settings.allocate if first else "uniform",
        warm_start=settings.warm_start and first,
        total=run_total(settings, run),
        journal=str(Path(settings.out) / ALLOCATION_DIR / f"{run['name']}.json"),
        data_keys=data_keys,
    )  # fmt: skip
    scheduler = None
    if settings.scheduler == "asha":
        max_t = _max_epochs([s for _, s, _ in cells], settings.max_epochs, ts)
        scheduler = CellScheduler(max_t, grace_period=max(1, max_t // 8))
    return tune.Tuner(
        trainable,
        param_space={"run": _run_constants(settings)},
        tune_config=tune.TuneConfig(
            search_alg=searcher, scheduler=scheduler, metric=METRIC, mode=MODE,
            num_samples=run_total(settings, run), max_concurrent_trials=settings.max_concurrent,
            reuse_actors=True, trial_name_creator=trial_name, trial_dirname_creator=trial_dirname,
        ),
        run_config=tune.RunConfig(
            name=run["name"], storage_path=settings.storage, verbose=tune_verbosity(verbose),
            checkpoint_config=tune.CheckpointConfig(num_to_keep=1),
            sync_config=tune.SyncConfig(sync_artifacts=True),  # trials' W&B runs, any node
            failure_config=tune.FailureConfig(max_failures=settings.max_failures),
            progress_reporter=_reporter(cells) if tune_verbosity(verbose) else None,
            callbacks=[SearchProgress(run_total(settings, run), run["name"])] if verbose else None,
        ),
    )  # fmt: skip


def tune_verbosity(verbose: int) -> int:
    """Tune's console verbosity (0–3): its status tables only at `raydistill -v` and above
    (`raydistill.core.env.verbosity`); our progress bar (`SearchProgress`) shows either way."""
    from raydistill.core.env import verbosity

    return min(verbosity(), 3) if verbose else 0


def _trainable(settings: SearchSettings, splits: Any, ts: Any) -> Any:
    """train_trial with the arrays in the object store (once) and the trial's resources."""
    fn = tune.with_parameters(train_trial, data=splits, transfer=ts,
                              tracker_factory=make_tracker)  # fmt: skip
    res = trial_resources(settings.gpus_per_trial, settings.cpus_per_trial, data_spec_keys(splits),
                          settings.gpu_memory_gib, resident_bytes(splits))  # fmt: skip
    return tune.with_resources(fn, res)


def _run_constants(settings: SearchSettings) -> dict[str, Any]:
    return {
        "experiment": settings.experiment, "root": settings.out, "storage": settings.storage,
        "seed": settings.seed,
        "wandb": settings.wandb, "device": settings.device, "max_epochs": settings.max_epochs,
        "threads": max(1, int(settings.cpus_per_trial)),
        "checkpoint_every": settings.checkpoint_every,
        "data": settings.data, "data_options": settings.data_options,  # W&B run configs
    }  # fmt: skip


def _reporter(cells: Sequence[tuple[sp.Cell, sp.SearchSpace, int]]) -> Any:
    # Only keys every trial has: the legacy reporter fails on a column a trial's config lacks.
    keys = [set(space.searched(cell.depth)) for cell, space, _ in cells]
    first = cells[0][1].searched(cells[0][0].depth)
    names = ["cell"] + [
        k for k in first if all(k in ks for ks in keys) and k not in space_ratio_names(first)
    ]
    metrics = {"epoch": "epoch", "params": "params", METRIC: METRIC, "best/val/acc": "best"}
    return tune.CLIReporter(parameter_columns=names[:5], metric_columns=metrics,
                            max_report_frequency=30, sort_by_metric=True)  # fmt: skip


def space_ratio_names(names: Mapping[str, Any]) -> set[str]:
    return {k for k in names if k.startswith(sp.RATIO_PREFIX) and k[1:].isdigit()}


def _errored_trial_ids(grid: Any) -> set[str]:
    """Ids of the trials a fit's ResultGrid reports as failed for good."""
    ids = set()
    for result in grid:
        if result.error is not None:
            tid = (result.metrics or {}).get("trial_id")
            cell = (result.config or {}).get("cell")  # its dir is trial_dirname: "<cell>_<id>"
            ids.add(tid or trial_id_from_dirname(Path(result.path).name, cell))
    return ids


def _run_complete(settings: SearchSettings, run: Mapping[str, Any]) -> bool:
    """Every planned trial of `run` exists and has ended (terminated or errored)."""
    try:
        analysis = tune.ExperimentAnalysis(settings.run_path(run))
    except ValueError:  # no experiment state yet
        return False
    planned = run_total(settings, run)
    errored = set(run.get("errored", []))
    ended = [t for t in analysis.trials
             if t.status in ("TERMINATED", "ERROR") or t.trial_id in errored]  # fmt: skip
    return len(analysis.trials) >= planned and len(ended) == len(analysis.trials)


def _max_epochs(spaces: Sequence[sp.SearchSpace], cap: int | None, ts: Any) -> int:
    from raydistill.training.config import TrainConfig

    most = 1
    for s in spaces:
        p = s.train.get("max_epochs")
        most = max(most, int(p.upper()) if p is not None else TrainConfig.max_epochs)
    if cap:
        most = min(most, int(cap))
    if ts is not None:
        most = min(most, int(ts.num_epochs))
    return most


def _warm_start(settings: SearchSettings, cells: Mapping[str, int]) -> dict[str, tuple[list, list]]:
    """Each extended cell's finished trials as (points, rewards) for its new Optuna study."""
    frame = load_trials(settings.out)
    warm: dict[str, tuple[list, list]] = {}
    for cid in cells:
        rows = frame[(frame["cell"] == cid) & frame["status"].isin(list(_SCORED))]
        rows = rows[~rows["pruned"].fillna(False).astype(bool)]  # truncated runs: no score
        points, rewards = [], []
        for _, row in rows.iterrows():
            value = 0.0 if row["status"] == "diverged" else row["val/acc"]
            if value is not None and math.isfinite(value):
                points.append(json.loads(row["config"]))
                rewards.append(float(value))
        warm[cid] = (points, rewards)
    return warm


_SCORED = (*DONE, "diverged")  # scored by the searcher (a diverged trial as 0)
