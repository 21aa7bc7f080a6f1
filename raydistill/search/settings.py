"""A search's settings and inputs: `SearchSettings` (DIR/search.json, the input of --resume and
--extend), the output file names, the option vocabularies and their checks, and loading the
data / transfer set a search runs on (again, for --resume / --extend). No Ray.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from raydistill.core.errors import UserError
from raydistill.core.manifest import atomic_write_text
from raydistill.core.resources import check_gpus
from raydistill.core.storage import join as join_storage
from raydistill.core.storage import resolve as resolve_storage
from raydistill.core.vocab import (
    ALLOCATIONS,
    SCHEDULERS,
    SEARCHERS,
    WANDB_MODES,
    AllocationName,
    SchedulerName,
    WandbMode,
)
from raydistill.search import spaces as sp
from raydistill.students.budget import Budget, parse_budget, parse_budgets

METRIC, MODE = "val/acc", "max"
SEARCH_FILE, TRIALS_FILE = "search.json", "trials.parquet"
ALLOCATION_DIR = "allocation"  # DIR/allocation/<run>.json: each cell's trials and estimates
# A search with its own --storage also keeps its small outputs (search.json, trials.parquet,
# manifest.json, best/) there, so report / export run from any machine that reaches it.
STORAGE_OUTPUTS = "_search"


class SearchInterrupted(KeyboardInterrupt):
    """The search stopped before every trial finished (Ctrl-C); `--resume DIR` continues it."""


@dataclass
class SearchSettings:
    """A search's settings: what the CLI, `reproduce` and the studies build and hand to
    `raydistill.search.run.run_search`, which saves them normalised as DIR/search.json (the
    input of --resume and --extend).

    On input `spaces` may hold YAML paths, shipped names, mappings or `SearchSpace`s and
    `budgets` a string ("1M,40M-macs") or a list; saved, they are the validated raw mappings
    and budget labels ("1M", "40M-macs", "2ms"; ints in older searches: parameters), `out` and `storage` absolute, `experiment` filled in (default: DIR's name).
    In-memory data / transfer sets are passed to `run_search` beside the settings.
    """

    spaces: list[Any]
    budgets: list[int | str] | str
    depths: list[int] | None = None
    trials: int = 16
    out: str = "search"
    experiment: str | None = None
    storage: str | None = None  # where Tune writes: a path or a URI (default DIR/tune)
    data: str | None = "cifar10"  # a source (raydistill.data.load_dataset)
    data_options: dict[str, Any] = field(default_factory=dict)
    transfer: str | None = None  # a transfer-set path; None: hard labels (loss "hard" forced)
    searcher: str = "tpe"
    scheduler: SchedulerName = "none"
    gpus_per_trial: float | str = 0.0  # a share of one GPU, or "auto" (raydistill.search.sizing)
    cpus_per_trial: float = 1.0
    # GPU memory of the node type trials run on (GiB; None: 80), for --gpus-per-trial auto
    gpu_memory_gib: float | None = None
    address: str = "local"
    max_epochs: int | None = None
    seed: int = 0
    wandb: WandbMode = "off"
    max_concurrent: int | None = None
    device: str = "auto"
    # How the first run spreads its trials (raydistill.search.allocation): "uniform" (`trials`
    # per cell) or "adaptive" (`total_trials`, default trials × cells, moved to the cells that
    # can reach the front); warm_start: each cell seeded by its next-smaller budget's best.
    allocate: AllocationName = "uniform"
    warm_start: bool = False
    total_trials: int | None = None
    max_failures: int = 2
    dataset_fingerprint: str | None = None
    checkpoint_every: int = 1  # epochs between a trial's checkpoints (and one at its end)
    argv: list[str] = field(default_factory=list)  # default: sys.argv
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
        return join_storage(self.storage, run["name"])

    def cell_ids(self) -> list[str]:
        """Every cell of the search in plan order, read from its runs (the first holds them
        all), so a `--cell` is checked without building a model."""
        ids = list(dict.fromkeys(c for r in self.runs for c in r["cells"]))
        return ids or [c.id for c, _ in self.cell_plans()]

    def chosen_cells(self, cells: Sequence[str] | None) -> list[str]:
        """`cells` (or every cell when none is named); a UserError names one that is not a
        cell of this search and lists the valid ones."""
        known = self.cell_ids()
        bad = [c for c in cells or () if c not in known]
        if bad:
            raise UserError(
                f"--cell {bad[0]!r} is not a cell of {self.out}; valid: {', '.join(known)}"
            )
        return list(cells) if cells else known

    @property
    def complete(self) -> bool:
        """Whether every run of the search has ended (nothing for --resume to continue)."""
        return all(r["complete"] for r in self.runs)


def pull_search(storage: str, out: str | Path) -> Path:
    """Copy a search's outputs from its storage (`<storage>/_search/`) into DIR `out` when DIR
    has no trials table (report / export on a machine other than the search's driver)."""
    from raydistill.core.storage import download_tree, join, resolve

    out = Path(out)
    if not (out / TRIALS_FILE).is_file():
        download_tree(join(resolve(storage, "."), STORAGE_OUTPUTS), out)
    return out


def parse_budget_list(budgets: Sequence[int | str | Budget] | str) -> list[Budget]:
    """'1M,40M-macs' or ["1M", 3160000] → Budgets (duplicates dropped, order kept)."""
    parsed = parse_budgets(budgets) if isinstance(budgets, str) else map(parse_budget, budgets)
    return list(dict.fromkeys(parsed))


def check_choices(
    searcher: str, scheduler: str, wandb: str, trials: int, gpus: float | str, cpus: float
) -> None:
    for label, value, valid in (
        ("--searcher", searcher, SEARCHERS),
        ("--scheduler", scheduler, SCHEDULERS),
        ("--wandb", wandb, WANDB_MODES),
    ):
        if value not in valid:
            raise UserError(f"{label} {value!r} is invalid; valid: {', '.join(valid)}")
    if int(trials) < 1:
        raise UserError(f"--trials {trials}: need at least 1 trial per cell")
    if parse_gpus(gpus) == "auto" and cpus > 0:
        return
    check_gpus(float(gpus), "--gpus-per-trial")
    if cpus <= 0:
        raise UserError(
            f"--gpus-per-trial {gpus} / --cpus-per-trial {cpus}: need gpus ≥ 0, cpus > 0"
        )


def run_total(settings: SearchSettings, run: Mapping[str, Any]) -> int:
    """The trials a run hands out: adaptive's total on the first run, else its cells' counts."""
    first = run["index"] == 0 and settings.allocate == "adaptive"
    return (
        int(settings.total_trials)
        if first and settings.total_trials
        else sum(run["cells"].values())
    )


def check_allocation(allocate: str, total: int | None, cells: int) -> None:
    """--allocate / --total-trials against the number of cells (one line on a bad value)."""
    if allocate not in ALLOCATIONS:
        raise UserError(f"--allocate {allocate!r} is invalid; valid: {', '.join(ALLOCATIONS)}")
    if total is None:
        return
    if allocate != "adaptive":
        raise UserError(f"--total-trials {total}: needs --allocate adaptive (uniform: --trials)")
    if int(total) < cells:
        raise UserError(
            f"--total-trials {total} is invalid: the search has {cells} cells, each needs ≥ 1"
        )


def parse_gpus(value: float | str) -> float | str:
    """--gpus-per-trial: a share of one GPU (≥ 0), or "auto": each trial's share sized to its
    student (`raydistill.search.sizing.trial_share`)."""
    if value == "auto":
        return "auto"
    try:
        return float(value)
    except (TypeError, ValueError):
        raise UserError(
            f"--gpus-per-trial {value!r} is invalid; valid: a number ≥ 0 or 'auto'"
        ) from None


def recorded_source(value: Any) -> str | None:
    """A data / transfer source as recorded for --resume: an absolute path when it is one."""
    if not isinstance(value, (str, Path)):
        return None  # in-memory data: resume needs it passed again
    path = Path(value).expanduser()
    return str(path.resolve()) if path.exists() else str(value)


def storage_path(storage: str | None, out: Path) -> str:
    """Where Tune writes: the URI as given, a path made absolute (Tune needs one), DIR/tune."""
    return resolve_storage(storage, out / "tune")


def load_data(data: Any, options: Mapping[str, Any]) -> Any:
    if not isinstance(data, (str, Path)):
        return data  # already a Splits
    from raydistill.data import load_dataset

    return load_dataset(str(data), **options)


def load_transfer(transfer: Any, splits: Any) -> Any:
    if transfer is None or not isinstance(transfer, (str, Path)):
        return transfer
    from raydistill.distill.transfer.format import load_transfer_set

    return load_transfer_set(transfer, splits=splits)


def reload_inputs(settings: SearchSettings, data: Any, transfer: Any) -> tuple[Any, Any]:
    if data is None and settings.data is None:
        raise UserError(
            f"{settings.out}: the search ran on in-memory data; pass it again (data=...)"
        )
    splits = load_data(data if data is not None else settings.data, settings.data_options)
    if settings.dataset_fingerprint and splits.fingerprint != settings.dataset_fingerprint:
        raise UserError(
            f"{settings.out}: dataset fingerprint {splits.fingerprint} differs from the search's "
            f"{settings.dataset_fingerprint}; pass the same data"
        )
    return splits, load_transfer(transfer if transfer is not None else settings.transfer, splits)
