"""Where trials' W&B runs live, and how they reach the user from any node.

A trial writes its offline (or online-with-local-files) run under its own local working
directory, `<trial dir>/wandb/offline-run-<ts>-<id>-a<k>/`: a folder every node can create,
which no other trial touches. Tune copies that directory into the experiment's storage with the
trial's other files (`tune.SyncConfig(sync_artifacts=True)`: at each checkpointed report and when
the trial ends), so a run made on another node lands in `<storage>/<experiment>/<trial>/wandb/`.
Tune's last copy can start before a trial stopped by its schedule has closed its run, so the
trial also copies its closed run itself (`publish_run`). After each fit the driver gathers every
trial's runs into `DIR/wandb/` (`collect_runs`), beside the study's own runs, so that one
`wandb sync DIR/wandb/offline-run-*` uploads them all. A failure on either side is a warning:
W&B never fails a trial or a search.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from raydistill.core import storage
from raydistill.core.errors import first_line

RUNS_DIR = "wandb"  # under a trial's directory (local and in storage) and under DIR


def publish_run(tracker: Any, trial_location: str | None) -> str | None:
    """Copy the closed run of `tracker` (its local run folder) to `<trial_location>/wandb/`;
    the location written, or None (no run, no location, or a failure: a warning)."""
    run_dir = getattr(tracker, "run_dir", None) if getattr(tracker, "run_id", None) else None
    if run_dir is None or trial_location is None or not Path(run_dir).is_dir():
        return None
    names = [str(p.relative_to(run_dir.parent)) for p in sorted(run_dir.rglob("*")) if p.is_file()]
    dest = storage.join(trial_location, RUNS_DIR)
    try:
        return storage.upload(run_dir.parent, names, dest)
    except Exception as exc:  # a storage error must not fail a trial that has trained
        warnings.warn(
            f"W&B run {run_dir.name} not copied to {dest}: {first_line(exc)}", stacklevel=2
        )
        return None


def earlier_runs(trial_location: str | None) -> list[str]:
    """Names of the run folders a trial's earlier attempts left in its storage (a retry on
    another node, or after a restore, numbers its attempt after them)."""
    if trial_location is None:
        return []
    try:
        return list(storage.list_dirs(storage.join(trial_location, RUNS_DIR)))
    except Exception:  # unreadable storage: numbered from this node's folders alone
        return []


def collect_runs(experiments: Iterable[str], root: str | Path) -> list[Path]:
    """Copy every trial's W&B run folders found under the experiment locations (storage URIs or
    paths, `<experiment>/<trial>/wandb/<run>/`) into `root/wandb/`; the run folders there.

    Runs already gathered are copied again (a resumed trial's run grows)."""
    dest = Path(root) / RUNS_DIR
    out: list[Path] = []
    for location in experiments:
        try:
            trials = storage.list_dirs(location)
            runs = {
                n: r
                for t in trials.values()
                for n, r in storage.list_dirs(storage.join(t, RUNS_DIR)).items()
            }
        except Exception as exc:
            warnings.warn(
                f"W&B runs under {location} not gathered: {first_line(exc)}", stacklevel=2
            )
            continue
        for name, run in sorted(runs.items()):
            try:
                out.append(storage.download_tree(run, dest / name))
            except Exception as exc:
                warnings.warn(f"W&B run {run} not gathered: {first_line(exc)}", stacklevel=2)
    return out
