"""The Ray Tune function trainable: one trial of one cell, from sampled values to a trained student.

A trial's config (built by `raydistill.search.CellSearcher`) is self-contained:

    {"cell": "cnn-d2@1M", "family": "cnn", "depth": 2, "budget": 1000000, "budget_kind": "params",
     "lr": 0.004, "r0": 0.3, ...,                                   # the sampled values
     "settings": {"spec": {...}, "ratios": [...], "train": {...}},  # fixed + sampled, split
     "run": {"experiment", "root", "storage", "seed", "wandb", "device", "max_epochs",
             "threads", "checkpoint_every"}}

`train_trial` solves the widths from the budget (no trial is ever rejected for size), trains
with `raydistill.training.loop.train_student`, and at every epoch end reports the metrics plus `params`,
`macs`, `params/budget` (the share of the budget used, in its kind's unit) and the solved `spec`, with a checkpoint (`tune.report(..., checkpoint=...)`)
every `checkpoint_every` epochs and at the run's end (finished, stopped by its schedule,
diverged): the recorded checkpoint of an ended trial always holds its best weights.
A retried or restored trial resumes from `tune.get_checkpoint()`. Its W&B run is written in
the trial's own directory on its node and reaches the storage with the trial's files
(`raydistill.tracking.runs`). The dataset and transfer set
arrive through `tune.with_parameters` (one read-only copy per node in the object store).
Ray is imported here and in `raydistill.search` only.
"""

from __future__ import annotations

import json
import tempfile
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from ray import tune

from raydistill.core.device import gpu_ids as visible_gpu_ids
from raydistill.core.numbers import finite
from raydistill.core.storage import join
from raydistill.students import data_spec_keys
from raydistill.students.budget import Budget, solve_budget
from raydistill.students.cost import count_macs
from raydistill.tracking.context import describe_dataset, describe_transfer, run_context
from raydistill.tracking.runs import earlier_runs, publish_run
from raydistill.tracking.tracker import Tracker, make_tracker
from raydistill.training.config import TrainConfig
from raydistill.training.loop import train_student

if TYPE_CHECKING:
    from raydistill.data import Splits
    from raydistill.distill.transfer.format import TransferSet

# Trial-config keys that are not sampled values (everything else is).
META_KEYS = ("cell", "family", "depth", "budget", "budget_kind", "settings", "run")
OBJECTIVE = "objective"  # the metric each cell's searcher maximises (see `objective`)


TrackerFactory = Callable[..., Tracker]


def objective(result: Mapping[str, Any] | None) -> float | None:
    """A trial's score for its cell's searcher: its best val/acc so far; 0 once it diverged.

    A diverged configuration is a failed one (lr too high), whatever it reached before.
    """
    if not result:
        return None
    if result.get("status") == "diverged":
        return 0.0
    value = result.get("best/val/acc", result.get("val/acc"))
    return finite(value)


def sampled_values(config: Mapping[str, Any]) -> dict[str, Any]:
    """The searcher's sampled values of a trial config (r0.., lr, ...)."""
    return {k: v for k, v in config.items() if k not in META_KEYS}


def trial_train_config(config: Mapping[str, Any]) -> TrainConfig:
    """The TrainConfig of a trial: its settings plus the experiment's seed, device, epoch cap."""
    run = config["run"]
    train = {**config["settings"]["train"], "seed": int(run["seed"]), "device": run["device"]}
    cap = run.get("max_epochs")
    if cap:
        train["max_epochs"] = min(int(train.get("max_epochs", TrainConfig.max_epochs)), int(cap))
    return TrainConfig.from_dict(train)


def solve_trial(config: Mapping[str, Any], data: Splits) -> Any:
    """The budget solver's Solution for a trial (widths from its ratios, shape from the data)."""
    s = config["settings"]
    return solve_budget(
        config["family"],
        int(config["depth"]),
        trial_budget(config),
        s["ratios"],
        **s["spec"],
        **data_spec_keys(data),
    )


def trial_budget(config: Mapping[str, Any]) -> Budget:
    """A trial config's budget (configs of searches before budget kinds carry no kind: params)."""
    return Budget(str(config.get("budget_kind", "params")), int(config["budget"]))


def train_trial(
    config: dict[str, Any],
    *,
    data: Splits,
    transfer: TransferSet | None = None,
    tracker_factory: TrackerFactory | None = None,
) -> None:
    """The Tune trainable (wrap with `tune.with_parameters(train_trial, data=..., ...)`)."""
    run = config["run"]
    torch.set_num_threads(max(1, int(run.get("threads", 1))))
    sol = solve_trial(config, data)
    cfg = trial_train_config(config)
    ctx = tune.get_context()
    trial_id = ctx.get_trial_id() or "trial"
    factory = tracker_factory or make_tracker
    location = _trial_location(run)
    tracker = factory(
        run["wandb"],
        root=ctx.get_trial_dir(),  # this node's own folder, synced to the storage by Tune
        experiment=run["experiment"],
        cell=config["cell"],
        trial_id=trial_id,
        config=_tracker_config(config, sol),
        tags=[],
        context=_context(run, data, transfer),
        earlier=earlier_runs(location),
    )
    report = _make_report(config, sol, tracker)
    status = "error"
    try:
        result = _train(sol.spec, data, transfer, cfg, report)
        status = result.status
    except SystemExit:  # Tune stops a trial (ASHA) by raising SystemExit inside tune.report
        status = "stopped"
        raise
    finally:
        tracker.finish(_size_metrics(sol), status=status)
        publish_run(tracker, location)


def _trial_location(run: Mapping[str, Any]) -> str | None:
    """This trial's folder in the experiment's storage (where Tune syncs its files), or None
    for a search recorded before runs were synced (no `storage` in its run constants)."""
    if not run.get("storage"):
        return None
    ctx = tune.get_context()
    return join(str(run["storage"]), ctx.get_experiment_name(), Path(ctx.get_trial_dir()).name)


def _train(spec: dict, data: Splits, transfer: Any, cfg: TrainConfig, report: Callable) -> Any:
    ckpt = tune.get_checkpoint()
    if ckpt is None:
        return train_student(spec, data, transfer, cfg, report=report)
    with ckpt.as_directory() as d:  # local storage: the directory itself; remote: a download
        return train_student(spec, data, transfer, cfg, report=report, checkpoint=d)


def _make_report(config: Mapping[str, Any], sol: Any, tracker: Tracker) -> Callable:
    """The `report(metrics, save)` callback: Tune metrics + a checkpoint at each epoch end."""
    started = time.time()
    spec_json = json.dumps(sol.spec)
    gpu_ids = ",".join(visible_gpu_ids())
    node_id = _node_id()  # which Ray node ran it (all nodes of a test cluster share one IP)
    every = max(1, int(config["run"].get("checkpoint_every") or 1))

    def report(metrics: dict[str, Any], save: Callable[[Path], None]) -> None:
        m = dict(metrics)
        if m.get("status") == "diverged" or finite(m.get("val/acc", 0.0)) is None:
            # This epoch's weights are not finite: score it 0 so ASHA and the searcher see it.
            m["val/acc"] = 0.0
        m.update({**_size_metrics(sol), "spec": spec_json,
                  "started_at": started, "reported_at": time.time(),
                  "gpu_ids": gpu_ids, "node_id": node_id})  # fmt: skip
        m[OBJECTIVE] = objective(m) or 0.0
        tracker.log(m, step=int(m["epoch"]))
        if m.get("status", "running") == "running" and int(m["epoch"]) % every:
            tune.report(m)  # a retry resumes from the last checkpoint: ≤ every - 1 epochs lost
            return
        with tempfile.TemporaryDirectory(prefix="raydistill-ckpt-") as d:
            save(Path(d))
            tune.report(m, checkpoint=tune.Checkpoint.from_directory(d))

    return report


def _tracker_config(config: Mapping[str, Any], sol: Any) -> dict[str, Any]:
    return {
        "cell": config["cell"], "family": config["family"], "depth": config["depth"],
        "budget": config["budget"], **sampled_values(config), "widths": sol.widths,
        **_size_metrics(sol), "train": config["settings"]["train"],
        "seed": config["run"]["seed"],
    }  # fmt: skip


def _context(run: Mapping[str, Any], data: Splits, transfer: Any) -> dict[str, Any]:
    """The W&B run context of every trial of the search: dataset, split settings, transfer set."""
    dataset = describe_dataset(data, source=run.get("data"), options=run.get("data_options"))
    return run_context(run["experiment"], dataset, describe_transfer(transfer))


def _size_metrics(sol: Any) -> dict[str, Any]:
    """What the solved student costs: params, MACs per image, and the share of its budget used
    (`params/budget`: the cost in the budget's own unit over the budget, whatever its kind)."""
    return {"params": sol.params, "macs": count_macs(sol.spec), "params/budget": sol.share}


def _node_id() -> str:
    import ray

    try:
        return str(ray.get_runtime_context().get_node_id() or "")
    except Exception:  # not inside a Ray worker
        return ""
