"""Study scales: the schema of `raydistill/study/scales/*.yaml` and its loading (no torch, no Ray).

A scale is a data-only YAML file naming everything a study runs: the data and its split, the
teacher ensemble, the transfer set, the searches, the hard-label twins and the seed repeats.
`load_scale("tiny")` reads a shipped scale, `load_scale(path)` a user's copy; the schema
(pydantic, unknown keys refused) turns every mistake into one line naming the file, the key,
the value and what is valid.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, field_validator

from raydistill.core.errors import UserError
from raydistill.core.validation import validate
from raydistill.core.vocab import AllocationName, SchedulerName, SearcherName, TransferAugName
from raydistill.students.budget import parse_budget

SCALES_DIR = Path(__file__).with_name("scales")


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class DataSection(_Section):
    source: str
    val_size: int = Field(ge=1)
    train_subset: int | None = Field(default=None, ge=1)
    seed: int = 0


class TeacherSection(_Section):
    family: str
    members: int = Field(ge=1)
    epochs: int = Field(ge=1)
    width_scale: float = Field(default=1.0, gt=0)
    widths: list[int] | None = None  # explicit widths (overrides width_scale)
    spec: dict[str, Any] = Field(default_factory=dict)  # other builder keys (head_pool, ...)
    train: dict[str, Any] = Field(default_factory=dict)  # TrainConfig overrides of the recipe
    # GPUs per member task (a share, or a whole number). None: 1 when the search uses GPUs on
    # a cluster, this machine's GPUs shared by the members on a local Ray, else CPUs. The
    # transfer-set labelling and the ensemble's evaluation run on the GPUs the members used.
    gpus_per_member: float | None = Field(default=None, ge=0)


class TransferSection(_Section):
    epochs: int = Field(ge=1)
    seed: int = 0
    aug: TransferAugName = "auto"  # the teachers' own augmentation (resolve_aug_name)


def _budgets(values: list[Any]) -> list[Any]:
    for v in values:
        try:
            parse_budget(v)
        except UserError as exc:  # pydantic reports ValueErrors with the key's location
            raise ValueError(str(exc)) from None
    return values


def _gpus(value: Any) -> float | str:
    if value == "auto":
        return value
    if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
        raise ValueError("valid: a share of one GPU ≥ 0, or 'auto'")
    if value > 1 and not float(value).is_integer():
        raise ValueError(
            "a share above 1 must be a whole number of GPUs (Ray cannot split a task across GPUs)"
        )
    return float(value)


class SearchSection(_Section):
    spaces: list[str] = Field(min_length=1)
    depths: list[int] | dict[str, list[int]] | None = None  # per space name, or for all
    budgets: list[str | int] = Field(min_length=1)
    trials: int = Field(ge=1)
    max_epochs: int = Field(ge=1)
    searcher: SearcherName = "tpe"
    scheduler: SchedulerName = "none"
    # adaptive: the same total moved to the cells that can reach the front (the main search
    # only: the hard-label twins stay uniform, they are finding 3's baselines at every depth);
    # warm_start: each cell seeded by its next-smaller budget's best (the twins too).
    allocate: AllocationName = "uniform"
    warm_start: bool = False
    cpus_per_trial: float = Field(default=1, gt=0)
    # A share of one GPU, or "auto": each trial's share sized to its student (raydistill.search.sizing).
    gpus_per_trial: float | str = 0
    # GPU memory (GiB) of the node type trials run on, for "auto" (default 80: H100-class).
    gpu_memory_gib: float | None = Field(default=None, gt=0)
    max_concurrent: int | None = Field(default=None, ge=1)
    checkpoint_every: int = Field(default=1, ge=1)  # epochs between a trial's checkpoints
    train: dict[str, Any] = Field(default_factory=dict)  # TrainConfig entries for every space
    spec: dict[str, Any] = Field(default_factory=dict)  # builder entries (e.g. pin dropout)
    # Builder entries for one space only ({cnn: {batchnorm: true}}), on top of `spec`.
    spec_by_space: dict[str, dict[str, Any]] = Field(default_factory=dict)
    # The spaces' width ratios replaced: a value in [0, 1] pins them (every slot equal: the
    # solver's balanced widths), or a range {float: [lo, hi]}; null keeps the spaces' own.
    width_ratios: float | dict[str, list[float]] | None = None

    _check_budgets = field_validator("budgets")(classmethod(lambda cls, v: _budgets(v)))
    _check_gpus = field_validator("gpus_per_trial", mode="before")(
        classmethod(lambda cls, v: _gpus(v))
    )

    def trial_resources(self) -> dict[str, Any]:
        """What each search trial asks for: the seed repeats and the prune fine-tunes ask the
        same (`raydistill.study.repeats.training_options`)."""
        return {"gpus_per_trial": self.gpus_per_trial, "cpus_per_trial": self.cpus_per_trial,
                "gpu_memory_gib": self.gpu_memory_gib}  # fmt: skip

    def spec_for(self, space: str) -> dict[str, Any]:
        """The builder entries a scale sets for one space."""
        return {**self.spec, **self.spec_by_space.get(space, {})}

    def depths_for(self, space: str) -> list[int] | None:
        """The depths to search for one space (None: the space's own list)."""
        if isinstance(self.depths, dict):
            return self.depths.get(space)
        return self.depths


class TwinsSection(_Section):
    space: str
    # One budget (the paper: 10M) or several; finding 3 is judged at each of them.
    budget: str | int | list[str | int]
    trials: int = Field(ge=1)
    depths: list[int] | None = None
    # TrainConfig entries for the twins on top of search.train (cross-entropy wants another
    # learning-rate range than the L2 loss on logits: its gradients are ~10× smaller).
    train: dict[str, Any] = Field(default_factory=dict)

    @field_validator("budget")
    @classmethod
    def _check_budget(cls, v: Any) -> Any:
        if isinstance(v, list) and not v:
            raise ValueError("needs at least one budget")
        _budgets(v if isinstance(v, list) else [v])
        return v

    @property
    def budgets(self) -> list[str | int]:
        """The twins' budgets as a list (`budget` may be one value or a list)."""
        return list(self.budget) if isinstance(self.budget, list) else [self.budget]


class PruneSection(_Section):
    """Pruned rows (`raydistill.study.prune_stage`): one trained net pruned to each budget, then
    fine-tuned on the transfer set; cells `prune-<family>-d<depth>@<budget>`."""

    # "teacher" / "teacher:K" (member K of the ensemble) or a searched cell ("cnn-d3@30k":
    # its best distilled trial).
    source: str = Field(pattern=r"^(teacher(:[0-9]+)?|[a-z0-9_]+-d[0-9]+@[0-9.]+[kKmM]?)$")
    budgets: list[str | int] = Field(min_length=1)
    max_epochs: int | None = Field(default=None, ge=1)  # None: search.max_epochs (same epochs)
    # TrainConfig entries on top of search.train's fixed values (a cell source: on top of its
    # best trial's config); a key search.train searches needs one value here for "teacher".
    train: dict[str, Any] = Field(default_factory=dict)

    _check_budgets = field_validator("budgets")(classmethod(lambda cls, v: _budgets(v)))


class Scale(_Section):
    """A validated scale file."""

    name: str
    description: str = ""
    data: DataSection
    teacher: TeacherSection
    transfer: TransferSection
    search: SearchSection
    hard_twins: TwinsSection
    seeds: int = Field(default=2, ge=1)
    prune: PruneSection | None = None  # no pruned rows unless set (scales/extended.yaml)
    source: str = ""  # where it was read from (set by load_scale)


def shipped_scales() -> list[str]:
    """Names of the scales shipped with the package."""
    return sorted(p.stem for p in SCALES_DIR.glob("*.yaml"))


def load_scale(name_or_path: str | Path) -> Scale:
    """A shipped scale by name ("demo", "tiny", "small", "paper") or a YAML path, validated."""
    path = Path(name_or_path)
    if not path.suffix:
        path = SCALES_DIR / f"{name_or_path}.yaml"
        if not path.is_file():
            raise UserError(
                f"unknown scale {name_or_path!r}; valid: {', '.join(shipped_scales())} or a path"
            )
    if not path.is_file():
        raise UserError(f"scale file {path} does not exist")
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise UserError(f"{path}: not valid data-only YAML ({type(exc).__name__})") from None
    return parse_scale(raw, str(path))


def parse_scale(raw: Any, where: str) -> Scale:
    """Validate a scale mapping; UserError with one line on the first problem."""
    if not isinstance(raw, dict):
        raise UserError(
            f"{where}: a scale is a mapping of sections; see raydistill/study/scales/tiny.yaml"
        )
    scale = validate(Scale, {"name": Path(where).stem, **raw, "source": where}, where)
    _check_prune(scale, where)  # type: ignore[arg-type]
    return scale  # type: ignore[return-value]


def _check_prune(sc: Scale, where: str) -> None:
    """The prune source exists in this scale and is larger than every prune budget."""
    p = sc.prune
    if p is None:
        return
    bad = f"{where}: prune.source={p.source!r} is invalid:"
    if p.source.startswith("teacher"):
        k = int(p.source.partition(":")[2] or 0)
        if k >= sc.teacher.members:
            raise UserError(f"{bad} the ensemble has members 0–{sc.teacher.members - 1}")
        ranged = sorted(key for key, v in sc.search.train.items() if isinstance(v, dict))
        if missing := [key for key in ranged if key not in p.train]:
            raise UserError(
                f"{where}: prune.train needs {', '.join(missing)}: search.train searches "
                "it and a teacher source has no searched value"
            )
        return
    cell, _, budget = p.source.partition("@")
    space, _, depth = cell.rpartition("-d")
    depths = sc.search.depths_for(space)
    if space not in sc.search.spaces or (depths is not None and int(depth) not in depths):
        raise UserError(f"{bad} not a searched cell (search.spaces, search.depths)")
    if parse_budget(budget) not in {parse_budget(b) for b in sc.search.budgets}:
        raise UserError(f"{bad} its budget is not in search.budgets")
    if too_big := [b for b in p.budgets if parse_budget(b) >= parse_budget(budget)]:
        raise UserError(f"{where}: prune.budgets={too_big} must be below the source's {budget}")
