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
"""

from raydistill.core.vocab import SCHEDULERS, WANDB_MODES
from raydistill.search.cells import (
    CellScheduler,
    CellSearcher,
    _CellState,  # noqa: F401  (pickled searcher state of searches made before the split)
    describe_plan,
    trial_dirname,
    trial_id_from_dirname,
    trial_name,
)
from raydistill.search.run import (
    STATE_SNAPSHOT_S,
    extend_search,
    resume_search,
    run_search,
    space_ratio_names,
)
from raydistill.search.settings import (
    METRIC,
    MODE,
    SEARCH_FILE,
    TRIALS_FILE,
    SearchInterrupted,
    SearchSettings,
    parse_budget_list,
)
from raydistill.search.table import TRIALS_SCHEMA, load_trials, summarize, write_outputs
from raydistill.search.trainable import META_KEYS, OBJECTIVE, objective

__all__ = [
    "META_KEYS",
    "METRIC",
    "MODE",
    "OBJECTIVE",
    "SCHEDULERS",
    "SEARCH_FILE",
    "STATE_SNAPSHOT_S",
    "TRIALS_FILE",
    "TRIALS_SCHEMA",
    "WANDB_MODES",
    "CellScheduler",
    "CellSearcher",
    "SearchInterrupted",
    "SearchSettings",
    "describe_plan",
    "extend_search",
    "load_trials",
    "objective",
    "parse_budget_list",
    "resume_search",
    "run_search",
    "space_ratio_names",
    "summarize",
    "trial_dirname",
    "trial_id_from_dirname",
    "trial_name",
    "write_outputs",
]
