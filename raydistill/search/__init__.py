"""The Ray Tune search of student architectures, by cell (family × depth × budget).

One experiment = cells, each searched by its own seeded Optuna study (TPE by default, GP, or
random as the baseline) with its own trial count, all in ONE Tuner: one progress table, one
restore, and natural sharing of the cluster (every cell's trials queue for the same resources).

- `settings`: `SearchSettings` (DIR/search.json), option vocabularies, loading the inputs.
- `cells`: `CellSearcher` (one Optuna study per cell), `CellScheduler` (one ASHA per cell),
  trial names, the --dry-run plan.
- `run`: `run_search`, `resume_search`, `extend_search` and the Tuner wiring.
- `table`: `trials.parquet`, `best/<cell>.json`, `manifest.json`, `load_trials`, `summarize`.

Outputs in DIR: `search.json`, `tune/<name>/` (Tune's experiment; `--storage` moves it),
`trials.parquet`, `best/<cell>.json`, `manifest.json`. Ray lives in this package and in
`raydistill.search.trainable`.

Importing this package imports no Ray: the public names below load their module on first use
(PEP 562), so `raydistill.search.spaces` (no Ray) serves the CLI's help and refusals fast.
"""

from __future__ import annotations

from typing import Any

_WHERE = {
    "CellScheduler": "raydistill.search.scheduler",
    "CellSearcher": "raydistill.search.cells",
    "_CellState": "raydistill.search.cells",  # pickled searcher state of searches made before the split
    "describe_plan": "raydistill.search.plan",
    "trial_dirname": "raydistill.search.cells",
    "trial_id_from_dirname": "raydistill.search.cells",
    "trial_name": "raydistill.search.cells",
    "STATE_SNAPSHOT_S": "raydistill.search.run",
    "extend_search": "raydistill.search.run",
    "resume_search": "raydistill.search.run",
    "run_search": "raydistill.search.run",
    "space_ratio_names": "raydistill.search.run",
    "METRIC": "raydistill.search.settings",
    "MODE": "raydistill.search.settings",
    "SEARCH_FILE": "raydistill.search.settings",
    "TRIALS_FILE": "raydistill.search.settings",
    "SearchInterrupted": "raydistill.search.settings",
    "SearchSettings": "raydistill.search.settings",
    "parse_budget_list": "raydistill.search.settings",
    "TRIALS_SCHEMA": "raydistill.search.table",
    "load_trials": "raydistill.search.table",
    "summarize": "raydistill.search.table",
    "write_outputs": "raydistill.search.table",
    "META_KEYS": "raydistill.search.trainable",
    "OBJECTIVE": "raydistill.search.trainable",
    "objective": "raydistill.search.trainable",
}


def __getattr__(name: str) -> Any:
    if name not in _WHERE:
        raise AttributeError(f"module 'raydistill.search' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(_WHERE[name]), name)
    globals()[name] = value  # later look-ups skip __getattr__
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_WHERE])


__all__ = sorted(n for n in _WHERE if not n.startswith("_"))
