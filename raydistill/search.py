"""The Ray Tune search: cells, per-cell searchers and schedulers, the Tuner, and its outputs.

One experiment = cells (family × depth × budget), each searched by its own seeded Optuna study
(TPE by default, GP, or random as the baseline) with its own trial count. Design: ONE Tuner
whose searcher is `CellSearcher`, a `Searcher` holding one `OptunaSearch` per cell and routing
`suggest` / `on_trial_complete` by cell. One Tune experiment gives one progress table, one
restore, and natural sharing of the cluster (every cell's trials queue for the same resources);
N Tuners in threads would each block in `fit`, fight over Ctrl-C, and need N restores. ASHA
(`--scheduler asha`) is per cell too (`CellScheduler`: one ASHA per cell), because a plain ASHA
would stop a trial of a large-budget cell for being worse than a small cell's trials.

Outputs in DIR: `search.json` (settings; the input of --resume and --extend), `tune/<name>/`
(Tune's experiment; `--storage` moves it), `trials.parquet` (one row per trial, all runs),
`best/<cell>.json`, `manifest.json`. Ray lives here and in `raydistill.trainable`.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import pickle
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from ray import tune
from ray.tune.schedulers import AsyncHyperBandScheduler, FIFOScheduler
from ray.tune.search import Searcher
from ray.tune.search.optuna import OptunaSearch

from raydistill import spaces as sp
from raydistill.budget import format_budget, parse_budget
from raydistill.errors import UserError
from raydistill.manifest import (
    atomic_write_text,
    build_manifest,
    temp_path_for,
    write_manifest,
)
from raydistill.tracking import make_tracker
from raydistill.trainable import (
    META_KEYS,
    OBJECTIVE,
    objective,
    sampled_values,
    solve_trial,
    train_trial,
    trial_train_config,
)

METRIC, MODE = "val/acc", "max"
SEARCH_FILE, TRIALS_FILE = "search.json", "trials.parquet"
SCHEDULERS = ("asha", "none")
WANDB_MODES = ("online", "offline", "off")
# Experiment-state snapshot period (s): small, so a killed driver resumes trials from their
# checkpoints instead of from scratch (see the shared Ray notes).
STATE_SNAPSHOT_S = "1"


class SearchInterrupted(KeyboardInterrupt):
    """The search stopped before every trial finished (Ctrl-C); `--resume DIR` continues it."""


# ------------------------------------------------------------------ settings (search.json)
@dataclass
class SearchSettings:
    """Everything a search needs besides the arrays; saved as DIR/search.json."""

    experiment: str
    out: str
    storage: str
    spaces: list[dict[str, Any]]
    budgets: list[int]
    depths: list[int] | None
    trials: int
    data: str | None
    data_options: dict[str, Any]
    transfer: str | None
    searcher: str = "tpe"
    scheduler: str = "none"
    gpus_per_trial: float = 0.0
    cpus_per_trial: float = 1.0
    address: str = "local"
    max_epochs: int | None = None
    seed: int = 0
    wandb: str = "off"
    max_concurrent: int | None = None
    device: str = "auto"
    max_failures: int = 2
    dataset_fingerprint: str | None = None
    argv: list[str] = field(default_factory=list)
    runs: list[dict[str, Any]] = field(default_factory=list)

    def save(self) -> None:
        atomic_write_text(Path(self.out) / SEARCH_FILE, json.dumps(asdict(self), indent=2) + "\n")

    @classmethod
    def load(cls, out: str | Path) -> SearchSettings:
        path = Path(out) / SEARCH_FILE
        if not path.is_file():
            raise UserError(f"{out} holds no search ({SEARCH_FILE} is missing); run a search first")
        return cls(**json.loads(path.read_text(encoding="utf-8")))

    def cell_plans(self) -> list[tuple[sp.Cell, sp.SearchSpace]]:
        spaces = [sp.parse_space(raw, f"{self.out}/{SEARCH_FILE}") for raw in self.spaces]
        return sp.plan_cells(spaces, self.budgets, self.depths)

    def run_path(self, run: Mapping[str, Any]) -> str:
        return _join(self.storage, run["name"])


def _join(storage: str, name: str) -> str:
    return f"{storage.rstrip('/')}/{name}" if "://" in storage else str(Path(storage) / name)


# ------------------------------------------------------------------ searcher and scheduler
@dataclass
class _CellState:
    cell: sp.Cell
    space: sp.SearchSpace
    trials: int
    suggested: int = 0
    optuna: OptunaSearch | None = None  # None: nothing to sample (every value fixed)


class CellSearcher(Searcher):
    """One Optuna study per cell; exactly `trials` suggestions per cell, cells interleaved."""

    def __init__(
        self,
        cells: Sequence[tuple[sp.Cell, sp.SearchSpace, int]],
        *,
        kind: str = "tpe",
        seed: int = 0,
        run_index: int = 0,
        warm: Mapping[str, tuple[list[dict], list[float]]] | None = None,
    ) -> None:
        super().__init__(metric=OBJECTIVE, mode="max")
        import optuna

        optuna.logging.set_verbosity(optuna.logging.WARNING)  # no line per study created
        self._states: dict[str, _CellState] = {}
        self._trial_cell: dict[str, str] = {}
        for cell, space, n in cells:
            dists = sp.to_optuna(space, cell.depth)
            points, rewards = (warm or {}).get(cell.id, ([], []))
            searcher = None
            if dists:
                searcher = OptunaSearch(
                    space=dists, metric=OBJECTIVE, mode="max",
                    sampler=sp.make_sampler(kind, sp.cell_seed(seed, cell.id, run_index)),
                    points_to_evaluate=points or None, evaluated_rewards=rewards or None,
                )  # fmt: skip
            self._states[cell.id] = _CellState(cell, space, int(n), 0, searcher)

    def set_search_properties(
        self, metric: str | None, mode: str | None, config: dict, **spec: Any
    ) -> bool:
        return True  # the cells carry their own spaces; the Tuner's metric is for display

    def suggest(self, trial_id: str) -> dict[str, Any] | str | None:
        open_cells = [s for s in self._states.values() if s.suggested < s.trials]
        if not open_cells:
            return Searcher.FINISHED
        state = min(open_cells, key=lambda s: s.suggested)  # round robin over the cells
        sampled = state.optuna.suggest(trial_id) if state.optuna is not None else {}
        if sampled is None:
            return None
        state.suggested += 1
        self._trial_cell[trial_id] = state.cell.id
        cell, settings = state.cell, sp.settings(state.space, state.cell.depth, sampled)
        return {"cell": cell.id, "family": cell.family, "depth": cell.depth,
                "budget": cell.budget, **sampled, "settings": asdict(settings)}  # fmt: skip

    def on_trial_complete(
        self, trial_id: str, result: dict | None = None, error: bool = False
    ) -> None:
        state = self._states.get(self._trial_cell.get(trial_id, ""))
        if state is None or state.optuna is None:
            return
        value = None if error or not result else result.get(OBJECTIVE, objective(result))
        if value is not None and not math.isfinite(value):
            value = None
        state.optuna.on_trial_complete(
            trial_id,
            {OBJECTIVE: value} if value is not None else None,
            error=error or value is None,
        )

    def counts(self) -> dict[str, int]:
        """Suggestions made so far, per cell."""
        return {cid: s.suggested for cid, s in self._states.items()}

    # Tune snapshots searchers with pickle (as OptunaSearch itself does); this is search state,
    # never model weights (those are safetensors checkpoints).
    def save(self, checkpoint_path: str) -> None:
        with open(checkpoint_path, "wb") as f:
            pickle.dump(self.__dict__.copy(), f)

    def restore(self, checkpoint_path: str) -> None:
        with open(checkpoint_path, "rb") as f:
            self.__dict__.update(pickle.load(f))


class CellScheduler(FIFOScheduler):
    """ASHA within each cell (epochs as the resource): a trial is compared with its cell only."""

    def __init__(self, max_t: int, grace_period: int = 1, reduction_factor: float = 3) -> None:
        super().__init__()
        self._metric, self._mode = METRIC, MODE
        self._kw = {"max_t": max(1, max_t), "grace_period": max(1, min(grace_period, max_t)),
                    "reduction_factor": reduction_factor}  # fmt: skip
        self._ashas: dict[str, AsyncHyperBandScheduler] = {}

    def set_search_properties(self, metric: str | None, mode: str | None, **spec: Any) -> bool:
        return True

    def _asha(self, trial: Any) -> AsyncHyperBandScheduler:
        cid = str(trial.config.get("cell"))
        if cid not in self._ashas:
            self._ashas[cid] = AsyncHyperBandScheduler(
                time_attr="training_iteration", metric=METRIC, mode=MODE, **self._kw
            )
        return self._ashas[cid]

    def on_trial_add(self, tune_controller: Any, trial: Any) -> None:
        self._asha(trial).on_trial_add(tune_controller, trial)

    def on_trial_result(self, tune_controller: Any, trial: Any, result: dict) -> str:
        return self._asha(trial).on_trial_result(tune_controller, trial, result)

    def on_trial_complete(self, tune_controller: Any, trial: Any, result: dict) -> None:
        asha = self._asha(trial)
        if trial.trial_id in asha._trial_info:
            asha.on_trial_complete(tune_controller, trial, result)

    def on_trial_remove(self, tune_controller: Any, trial: Any) -> None:
        self._asha(trial)._trial_info.pop(trial.trial_id, None)

    def debug_string(self) -> str:
        stopped = {cid: a._num_stopped for cid, a in self._ashas.items()}
        return f"Using per-cell AsyncHyperBand: stopped {stopped}"


def trial_dirname(trial: Any) -> str:
    """`<cell>_<trial_id>` with the cell id made path-friendly (cnn-d2_1M_ab12c_00003)."""
    return f"{str(trial.config.get('cell', 'trial')).replace('@', '_')}_{trial.trial_id}"


def trial_name(trial: Any) -> str:
    return f"{trial.config.get('cell', 'trial')}/{trial.trial_id}"


# ------------------------------------------------------------------ public API
def run_search(
    spaces: Sequence[str | Path | Mapping[str, Any]],
    *,
    budgets: Sequence[int | str] | str,
    depths: Sequence[int] | None = None,
    trials: int = 16,
    data: Any = "cifar10",
    transfer: Any = None,
    out: str | Path = "search",
    name: str | None = None,
    searcher: str = "tpe",
    scheduler: str = "none",
    gpus_per_trial: float = 0.0,
    cpus_per_trial: float = 1.0,
    address: str = "local",
    max_epochs: int | None = None,
    seed: int = 0,
    storage: str | None = None,
    wandb: str = "off",
    max_concurrent: int | None = None,
    device: str = "auto",
    max_failures: int = 2,
    data_options: Mapping[str, Any] | None = None,
    dry_run: bool = False,
    samples: int = 3,
    verbose: int = 1,
    argv: Sequence[str] | None = None,
) -> Path:
    """Run a search; returns DIR. `data`: a source (see `raydistill.data.load_dataset`) or a
    `Splits`; `transfer`: a transfer-set path, a `TransferSet`, or None (hard labels, loss
    "hard" forced). Raises `SearchInterrupted` if stopped before all trials finished."""
    _check_choices(searcher, scheduler, wandb, trials, gpus_per_trial, cpus_per_trial)
    budgets = parse_budget_list(budgets)
    out = Path(out).expanduser().resolve()
    loaded = [sp.load_space(s) for s in spaces]
    if not loaded:
        raise UserError("no search space given; e.g. search_spaces/cnn.yaml")
    if transfer is None:
        if verbose:
            print("raydistill: no --transfer: trials train on hard labels (loss 'hard' forced)")
        loaded = [s.with_train(loss="hard") for s in loaded]
    plans = sp.plan_cells(loaded, budgets, depths)
    splits = _load_data(data, data_options or {})
    if dry_run:
        print(describe_plan(plans, trials, splits, seed=seed, samples=samples, searcher=searcher))
        return out
    if (out / SEARCH_FILE).exists():
        raise UserError(
            f"{out} already holds a search; use --resume {out}, --extend, or another --out"
        )
    settings = SearchSettings(
        experiment=name or out.name, out=str(out), storage=_storage(storage, out),
        spaces=[dict(s.raw) for s in loaded], budgets=budgets,
        depths=list(depths) if depths is not None else None, trials=int(trials),
        data=_source(data), data_options=dict(data_options or {}),
        transfer=_source(transfer), searcher=searcher,
        scheduler=scheduler, gpus_per_trial=float(gpus_per_trial),
        cpus_per_trial=float(cpus_per_trial), address=address, max_epochs=max_epochs,
        seed=int(seed), wandb=wandb, max_concurrent=max_concurrent, device=device,
        max_failures=int(max_failures), dataset_fingerprint=splits.fingerprint,
        argv=list(argv if argv is not None else sys.argv),
    )  # fmt: skip
    cells = {c.id: int(trials) for c, _ in plans}
    settings.runs.append(
        {"name": settings.experiment, "index": 0, "cells": cells, "complete": False}
    )
    out.mkdir(parents=True, exist_ok=True)
    settings.save()
    ts = _load_transfer(transfer, splits)
    return _execute(settings, splits, ts, restore=False, verbose=verbose)


def resume_search(
    out: str | Path, *, data: Any = None, transfer: Any = None, verbose: int = 1
) -> Path:
    """Continue an interrupted search in DIR to its full trial count (Tuner.restore)."""
    settings = SearchSettings.load(Path(out).expanduser().resolve())
    splits, ts = _reload_inputs(settings, data, transfer)
    if all(r["complete"] for r in settings.runs):
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
    if not all(r["complete"] for r in settings.runs):
        raise UserError(f"{settings.out} has an unfinished run; finish it with --resume first")
    known = [c.id for c, _ in settings.cell_plans()]
    chosen = list(cells) if cells else known
    bad = [c for c in chosen if c not in known]
    if bad:
        raise UserError(
            f"--cell {bad[0]!r} is not a cell of {settings.out}; valid: {', '.join(known)}"
        )
    splits, ts = _reload_inputs(settings, data, transfer)
    index = max(r["index"] for r in settings.runs) + 1
    run = {"name": f"{settings.experiment}-extend{index}", "index": index,
           "cells": {c: int(n) for c in chosen}, "complete": False}  # fmt: skip
    settings.runs.append(run)
    settings.save()
    return _execute(settings, splits, ts, restore=False, verbose=verbose)


def load_trials(out: str | Path) -> pd.DataFrame:
    """DIR/trials.parquet as a DataFrame (one row per trial of every run)."""
    path = Path(out) / TRIALS_FILE
    if not path.is_file():
        raise UserError(f"{path} does not exist; run `raydistill search ... --out {out}` first")
    return pq.read_table(path).to_pandas()


def parse_budget_list(budgets: Sequence[int | str] | str) -> list[int]:
    """'1M,3.16M' or ["1M", 3160000] → [1000000, 3160000] (duplicates dropped, order kept)."""
    if isinstance(budgets, str):
        budgets = [b for b in budgets.split(",") if b.strip()]
    return list(dict.fromkeys(parse_budget(b) for b in budgets))


# ------------------------------------------------------------------ execution
def _execute(
    settings: SearchSettings, splits: Any, ts: Any, *, restore: bool, verbose: int
) -> Path:
    """Run (or restore) the newest run of `settings`, then write the outputs."""
    run = settings.runs[-1]
    started_ray = _ensure_ray(settings.address)
    try:
        trainable = _trainable(settings, splits, ts)
        with _tune_env(settings):
            path = settings.run_path(run)
            if restore and tune.Tuner.can_restore(path):
                tuner = tune.Tuner.restore(path, trainable=trainable, resume_errored=True)
            else:  # a fresh run, or one stopped before Tune saved any state
                tuner = _new_tuner(settings, run, trainable, ts, verbose)
            t0 = time.time()
            grid = tuner.fit()
            run["wall_s"] = run.get("wall_s", 0.0) + time.time() - t0
            # Tune can persist a trial that died on its last allowed retry as RUNNING (its
            # actor-died callback races the task-failed one); the in-memory result is right.
            run["errored"] = sorted(set(run.get("errored", [])) | _errored_trial_ids(grid))
    finally:
        if started_ray:
            import ray

            ray.shutdown()
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


@contextlib.contextmanager
def _tune_env(settings: SearchSettings) -> Iterator[None]:
    """Tune's settings that only environment variables reach, for this fit (the user's win).

    Pending trials: Tune lets a custom searcher keep ONE trial pending, so trial actors would
    start one after another (~2.5 s each here); allow as many as fit on the cluster at once.
    """
    values = {
        "TUNE_GLOBAL_CHECKPOINT_S": STATE_SNAPSHOT_S,
        "TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S": "0",
        "RAY_AIR_NEW_OUTPUT": "0",  # the legacy reporter: it honours our table columns
        "TUNE_MAX_PENDING_TRIALS_PG": str(_slots(settings)),
    }
    saved = {k: os.environ.get(k) for k in values}
    os.environ.update({k: v for k, v in values.items() if saved[k] is None})
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)


def _slots(settings: SearchSettings) -> int:
    """How many trials the cluster runs at once with the per-trial resources (≥ 1)."""
    import ray

    res = ray.cluster_resources()
    slots = res.get("CPU", 1.0) / settings.cpus_per_trial
    if settings.gpus_per_trial > 0:
        slots = min(slots, res.get("GPU", 0.0) / settings.gpus_per_trial)
    if settings.max_concurrent:
        slots = min(slots, settings.max_concurrent)
    return max(1, int(slots + 1e-9))


def _new_tuner(
    settings: SearchSettings, run: Mapping[str, Any], trainable: Any, ts: Any, verbose: int
) -> Any:
    plans = {c.id: (c, s) for c, s in settings.cell_plans()}
    cells = [(*plans[cid], n) for cid, n in run["cells"].items()]
    warm = _warm_start(settings, run["cells"]) if run["index"] > 0 else None
    searcher = CellSearcher(cells, kind=settings.searcher, seed=settings.seed,
                            run_index=run["index"], warm=warm)  # fmt: skip
    scheduler = None
    if settings.scheduler == "asha":
        max_t = _max_epochs([s for _, s, _ in cells], settings.max_epochs, ts)
        scheduler = CellScheduler(max_t, grace_period=max(1, max_t // 8))
    return tune.Tuner(
        trainable,
        param_space={"run": _run_constants(settings)},
        tune_config=tune.TuneConfig(
            search_alg=searcher, scheduler=scheduler, metric=METRIC, mode=MODE,
            num_samples=sum(n for *_, n in cells), max_concurrent_trials=settings.max_concurrent,
            reuse_actors=True, trial_name_creator=trial_name, trial_dirname_creator=trial_dirname,
        ),
        run_config=tune.RunConfig(
            name=run["name"], storage_path=settings.storage, verbose=verbose,
            checkpoint_config=tune.CheckpointConfig(num_to_keep=1),
            failure_config=tune.FailureConfig(max_failures=settings.max_failures),
            progress_reporter=_reporter(cells) if verbose else None,
        ),
    )  # fmt: skip


def _trainable(settings: SearchSettings, splits: Any, ts: Any) -> Any:
    """train_trial with the arrays in the object store (once) and the trial's resources."""
    fn = tune.with_parameters(train_trial, data=splits, transfer=ts,
                              tracker_factory=make_tracker)  # fmt: skip
    return tune.with_resources(fn, {"cpu": settings.cpus_per_trial, "gpu": settings.gpus_per_trial})


def _run_constants(settings: SearchSettings) -> dict[str, Any]:
    return {
        "experiment": settings.experiment, "root": settings.out, "seed": settings.seed,
        "wandb": settings.wandb, "device": settings.device, "max_epochs": settings.max_epochs,
        "threads": max(1, int(settings.cpus_per_trial)),
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


def _ensure_ray(address: str) -> bool:
    """Connect to (or start) Ray unless it is already up; True when this call started it."""
    import ray

    if ray.is_initialized():
        return False
    kwargs: dict[str, Any] = {"log_to_driver": False}
    if address in ("local", "", None):
        ray.init(address="local", include_dashboard=False, **kwargs)
    else:
        ray.init(address=address, **kwargs)
    return True


def _errored_trial_ids(grid: Any) -> set[str]:
    """Ids of the trials a fit's ResultGrid reports as failed for good."""
    ids = set()
    for result in grid:
        if result.error is not None:
            tid = (result.metrics or {}).get("trial_id")
            # Trial dirs are "<cell>_<trial id>" (see trial_dirname); cell ids have no "_" at end.
            ids.add(tid or Path(result.path).name.rsplit("_", 1)[1])
    return ids


def _run_complete(settings: SearchSettings, run: Mapping[str, Any]) -> bool:
    """Every planned trial of `run` exists and has ended (terminated or errored)."""
    try:
        analysis = tune.ExperimentAnalysis(settings.run_path(run))
    except ValueError:  # no experiment state yet
        return False
    planned = sum(run["cells"].values())
    errored = set(run.get("errored", []))
    ended = [t for t in analysis.trials
             if t.status in ("TERMINATED", "ERROR") or t.trial_id in errored]  # fmt: skip
    return len(analysis.trials) >= planned and len(ended) == len(analysis.trials)


def _max_epochs(spaces: Sequence[sp.SearchSpace], cap: int | None, ts: Any) -> int:
    from raydistill.train import TrainConfig

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
        points, rewards = [], []
        for _, row in rows.iterrows():
            value = 0.0 if row["status"] == "diverged" else row["val/acc"]
            if value is not None and math.isfinite(value):
                points.append(json.loads(row["config"]))
                rewards.append(float(value))
        warm[cid] = (points, rewards)
    return warm


_SCORED = ("finished", "stopped", "diverged")


# ------------------------------------------------------------------ inputs
def _check_choices(
    searcher: str, scheduler: str, wandb: str, trials: int, gpus: float, cpus: float
) -> None:
    for label, value, valid in (("--searcher", searcher, sp.SEARCHERS),
                                ("--scheduler", scheduler, SCHEDULERS),
                                ("--wandb", wandb, WANDB_MODES)):  # fmt: skip
        if value not in valid:
            raise UserError(f"{label} {value!r} is invalid; valid: {', '.join(valid)}")
    if int(trials) < 1:
        raise UserError(f"--trials {trials}: need at least 1 trial per cell")
    if gpus < 0 or cpus <= 0:
        raise UserError(
            f"--gpus-per-trial {gpus} / --cpus-per-trial {cpus}: need gpus ≥ 0, cpus > 0"
        )


def _source(value: Any) -> str | None:
    """A data / transfer source as recorded for --resume: an absolute path when it is one."""
    if not isinstance(value, (str, Path)):
        return None  # in-memory data: resume needs it passed again
    path = Path(value).expanduser()
    return str(path.resolve()) if path.exists() else str(value)


def _storage(storage: str | None, out: Path) -> str:
    if storage is None:
        return str(out / "tune")
    if "://" in storage:
        return storage
    return str(Path(storage).expanduser().resolve())  # Tune needs an absolute path


def _load_data(data: Any, options: Mapping[str, Any]) -> Any:
    if not isinstance(data, (str, Path)):
        return data  # already a Splits
    from raydistill.data import load_dataset

    return load_dataset(str(data), **options)


def _load_transfer(transfer: Any, splits: Any) -> Any:
    if transfer is None or not isinstance(transfer, (str, Path)):
        return transfer
    from raydistill.transfer import load_transfer_set

    return load_transfer_set(transfer, splits=splits)


def _reload_inputs(settings: SearchSettings, data: Any, transfer: Any) -> tuple[Any, Any]:
    if data is None and settings.data is None:
        raise UserError(
            f"{settings.out}: the search ran on in-memory data; pass it again (data=...)"
        )
    splits = _load_data(data if data is not None else settings.data, settings.data_options)
    if settings.dataset_fingerprint and splits.fingerprint != settings.dataset_fingerprint:
        raise UserError(
            f"{settings.out}: dataset fingerprint {splits.fingerprint} differs from the search's "
            f"{settings.dataset_fingerprint}; pass the same data"
        )
    return splits, _load_transfer(transfer if transfer is not None else settings.transfer, splits)


# ------------------------------------------------------------------ outputs
def write_outputs(settings: SearchSettings, splits: Any, ts: Any) -> pd.DataFrame:
    """trials.parquet (every run), best/<cell>.json and manifest.json in DIR."""
    out = Path(settings.out)
    rows = []
    for run in settings.runs:
        try:
            analysis = tune.ExperimentAnalysis(settings.run_path(run))
        except ValueError:
            continue  # a run that never started
        rows += [_trial_row(settings, run, t, analysis.trial_dataframes.get(t.trial_id))
                 for t in analysis.trials]  # fmt: skip
    table = pa.Table.from_pylist(rows, schema=TRIALS_SCHEMA)
    tmp = temp_path_for(out / TRIALS_FILE)
    pq.write_table(table, tmp)
    os.replace(tmp, out / TRIALS_FILE)
    frame = table.to_pandas()
    _write_best(out, frame)
    _write_manifest(settings, frame, splits, ts)
    return frame


TRIALS_SCHEMA = pa.schema([
    ("experiment", pa.string()), ("run", pa.string()), ("cell", pa.string()),
    ("family", pa.string()), ("depth", pa.int32()), ("budget", pa.int64()),
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
        "trial_id": trial.trial_id, "status": _status(trial, last, frozenset(run.get("errored", []))),
        "config": json.dumps(sampled_values(cfg), sort_keys=True),
        "spec": json.dumps(spec) if spec else None,
        "widths": list(spec["widths"]) if spec else None, "params": last.get("params"),
        "params/budget": last.get("params/budget"),
        "val/acc": _num(last.get("best/val/acc")), "val/loss": best.get("val/loss"),
        "test/acc": _num(last.get("test/acc")), "epochs": last.get("epoch"),
        "best_epoch": best.get("epoch"), "wall_s": _num(last.get("time_total_s")),
        "checkpoint": trial.checkpoint.path if trial.checkpoint is not None else None,
        "seed": settings.seed, "loss": cfg.get("settings", {}).get("train", {}).get("loss"),
        "train": json.dumps(trial_train_config(cfg).to_dict()) if "settings" in cfg else None,
        "started_at": _num(last.get("started_at")), "ended_at": _num(last.get("reported_at")),
        "gpu_ids": last.get("gpu_ids"), "error": _error_text(trial),
        "pruned": _pruned(trial, last), "failures": _failures(settings, run, trial),
    }  # fmt: skip


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
    return {"epoch": int(history["epoch"].iloc[i]), "val/loss": _num(loss)}


def _num(v: Any) -> float | None:
    try:
        f = float(v)
    except (TypeError, ValueError):
        return None
    return f if math.isfinite(f) else None


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
    """best/<cell>.json: the cell's best trial by val/acc (diverged trials only if nothing else)."""
    for cid, rows in frame.groupby("cell", sort=True):
        rows = rows[rows["val/acc"].notna() & rows["checkpoint"].notna()]
        if rows.empty:
            continue
        good = rows[rows["status"] != "diverged"]
        row = (good if not good.empty else rows).sort_values("val/acc", ascending=False).iloc[0]
        best = {
            "cell": cid, "experiment": row["experiment"], "run": row["run"],
            "trial_id": row["trial_id"], "status": row["status"], "family": row["family"],
            "depth": int(row["depth"]), "budget": int(row["budget"]),
            "config": json.loads(row["config"]), "spec": json.loads(row["spec"]),
            "train": json.loads(row["train"]), "params": int(row["params"]),
            "params/budget": float(row["params/budget"]),
            "metrics": {k: _num(row[k]) for k in ("val/acc", "val/loss", "test/acc", "wall_s")}
            | {"epochs": int(row["epochs"]), "best_epoch": _int(row["best_epoch"])},
            "checkpoint": row["checkpoint"],
        }  # fmt: skip
        atomic_write_text(out / "best" / f"{cid}.json", json.dumps(best, indent=2) + "\n")


def _int(v: Any) -> int | None:
    return None if v is None or (isinstance(v, float) and math.isnan(v)) else int(v)


def _write_manifest(settings: SearchSettings, frame: pd.DataFrame, splits: Any, ts: Any) -> None:
    config = {k: v for k, v in asdict(settings).items() if k not in ("argv", "runs")}
    teachers = list(ts.meta.get("teacher_fingerprints") or []) if ts is not None else None
    transfer_sha = getattr(ts, "fingerprint", None) or None
    extra = {
        "argv": settings.argv, "experiment": settings.experiment, "runs": settings.runs,
        "cells": sorted(frame["cell"].dropna().unique().tolist()) if len(frame) else [],
        "trials": len(frame), "transfer_fingerprint": transfer_sha,
        "outputs": {"trials": TRIALS_FILE, "best": "best/", "tune": settings.storage},
    }  # fmt: skip
    manifest = build_manifest("search", config, seeds=[settings.seed],
                              dataset_fingerprint=getattr(splits, "fingerprint", None),
                              teacher_fingerprints=teachers, extra=extra)  # fmt: skip
    write_manifest(settings.out, manifest)


# ------------------------------------------------------------------ text
def summarize(frame: pd.DataFrame) -> str:
    """One line per cell: trials by status, best val/acc and its params."""
    if frame.empty:
        return "no trials"
    lines = [f"{'cell':22s} {'trials':>6s} {'best val/acc':>12s} {'params':>10s}  statuses"]
    for cid, rows in frame.groupby("cell", sort=True):
        ok = rows[rows["val/acc"].notna()]
        best = ok.sort_values("val/acc", ascending=False).iloc[0] if not ok.empty else None
        acc = f"{best['val/acc']:.4f}" if best is not None else "-"
        params = f"{int(best['params']):,}" if best is not None else "-"
        counts = ", ".join(
            f"{k} {v}" for k, v in rows["status"].value_counts().sort_index().items()
        )
        lines.append(f"{cid:22s} {len(rows):6d} {acc:>12s} {params:>10s}  {counts}")
    return "\n".join(lines)


def describe_plan(
    plans: Sequence[tuple[sp.Cell, sp.SearchSpace]],
    trials: int,
    splits: Any,
    *,
    seed: int = 0,
    samples: int = 3,
    searcher: str = "tpe",
) -> str:
    """The --dry-run text: cells, and sample configs with their solved widths and params."""
    lines = [f"{len(plans)} cells × {trials} trials = {len(plans) * trials} trials "
             f"(searcher {searcher}; data {getattr(splits, 'name', '?')})"]  # fmt: skip
    for cell, space in plans:
        names = list(sp.to_optuna(space, cell.depth))
        lines.append(f"cell {cell.id}: {space.source}; searched: {', '.join(names) or '(none)'}")
        samples_ = sp.sample_configs(space, cell.depth, samples, sp.cell_seed(seed, cell.id))
        for i, sampled in enumerate(samples_):
            config = {"family": cell.family, "depth": cell.depth, "budget": cell.budget,
                      "settings": asdict(sp.settings(space, cell.depth, sampled))}  # fmt: skip
            sol = solve_trial(config, splits)
            shown = " ".join(f"{k}={_fmt(v)}" for k, v in sampled.items())
            lines.append(f"  sample {i + 1}: widths {sol.widths} params {sol.params:,} "
                         f"({100 * sol.share:.1f}% of {format_budget(cell.budget)}) {shown}")  # fmt: skip
    return "\n".join(lines)


def _fmt(v: Any) -> str:
    return f"{v:.4g}" if isinstance(v, float) else str(v)


__all__ = [
    "META_KEYS",
    "CellScheduler",
    "CellSearcher",
    "SearchInterrupted",
    "SearchSettings",
    "describe_plan",
    "extend_search",
    "load_trials",
    "objective",
    "resume_search",
    "run_search",
    "summarize",
    "write_outputs",
]
