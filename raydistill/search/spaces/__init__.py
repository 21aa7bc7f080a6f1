"""Search spaces (no Ray): data-only YAML files validated on load, cells, trial settings, and the
one translation to Optuna.

- `load`: loading (files, shipped names), `Cell`, `plan_cells`, `settings`, `cell_seed`;
- `schema`: the pydantic schema of a space file (`Param`, `SearchSpace`, `parse_space`);
- `samplers`: `to_optuna` (the one translation), `make_sampler`, `sample_configs` (--dry-run).

Callers use the package (`from raydistill.search import spaces as sp`; `sp.load_space(...)`).
"""

from raydistill.search.spaces.load import (
    Cell,
    TrialSettings,
    cell_seed,
    inert_ratios,
    load_space,
    plan_cells,
    read_yaml,
    settings,
    shipped_spaces,
    space_dir,
)
from raydistill.search.spaces.samplers import (
    STARTUP_TRIALS,
    make_sampler,
    sample_configs,
    to_optuna,
)
from raydistill.search.spaces.schema import (
    FIRST_RATIO,
    PRIMITIVES,
    RATIO_PREFIX,
    RESERVED_SPEC,
    RESERVED_TRAIN,
    TOP_KEYS,
    Param,
    SearchSpace,
    parse_space,
)

__all__ = [
    "FIRST_RATIO", "PRIMITIVES", "RATIO_PREFIX", "RESERVED_SPEC", "RESERVED_TRAIN",
    "STARTUP_TRIALS", "TOP_KEYS", "Cell", "Param", "SearchSpace", "TrialSettings", "cell_seed",
    "inert_ratios",
    "load_space", "make_sampler", "parse_space", "plan_cells", "read_yaml", "sample_configs",
    "settings", "shipped_spaces", "space_dir", "to_optuna",
]  # fmt: skip
