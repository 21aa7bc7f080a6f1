"""Search spaces: the YAML schema, its validation, cells, and the one translation to Optuna.

A search space is a data-only YAML file (`search_spaces/<family>.yaml`, read with
`yaml.safe_load`; YAML tags are rejected) with these top-level keys:

    family: cnn                       # a registered student family (required)
    description: "..."                # optional
    depths: [1, 2, 3, 4]              # default depths (the CLI's --depths intersects them)
    width_ratios: {float: [0, 1]}     # one ratio per width slot of the family at the depth
    spec:  {dropout: 0.0}             # the family builder's other arguments
    train: {lr: {log_float: [0.0013, 0.016]}, momentum: ..., max_epochs: 30}  # TrainConfig

Every value is a fixed value or one primitive: `{int: [lo, hi]}`, `{log_int: [lo, hi]}`,
`{float: [lo, hi]}`, `{log_float: [lo, hi]}`, `{choice: [a, b, ...]}`. A *cell* is one
(family, depth, budget) and is searched on its own. No Ray here.

This module owns loading (files, shipped names), cells and trial settings, and re-exports the
rest: the schema and its validation (`raydistill.search.spaces.schema`, pydantic) and the one
translation to Optuna (`raydistill.search.spaces.samplers`).
"""

from __future__ import annotations

import zlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from raydistill.core.errors import UserError, first_line
from raydistill.search.spaces.schema import (
    FIRST_RATIO,
    Param,
    SearchSpace,
    parse_space,
)
from raydistill.students.budget import Budget, min_cost, parse_budget

__all__ = [
    "Cell",
    "TrialSettings",
    "cell_seed",
    "inert_ratios",
    "load_space",
    "plan_cells",
    "read_yaml",
    "settings",
    "shipped_spaces",
    "space_dir",
]


@dataclass(frozen=True)
class Cell:
    """One searched unit: a family at a depth under a budget (of a `Budget` kind)."""

    family: str
    depth: int
    budget: int  # in the kind's unit: parameters, MACs per image, µs per image
    budget_kind: str = "params"  # "params", "macs", "latency-cpu-b1" (students.budget.Budget)

    @property
    def id(self) -> str:
        """`<family>-d<depth>@<budget label>`, e.g. `cnn-d2@1M`, `resnet-d3@40M-macs`."""
        return f"{self.family}-d{self.depth}@{self.budget_spec.label}"

    @property
    def budget_spec(self) -> Budget:
        return Budget(self.budget_kind, self.budget)


@dataclass(frozen=True)
class TrialSettings:
    """What one trial trains: builder arguments (without widths), width ratios, TrainConfig dict."""

    spec: dict[str, Any]
    ratios: list[float]
    train: dict[str, Any]


# ------------------------------------------------------------------ loading and validation
def space_dir() -> Path:
    """The folder of the shipped spaces: in a checkout (and an editable install) the top-level
    `search_spaces/`, the source of truth; in a wheel the copy the build hook (setup.py) puts in
    the package, `raydistill/search_spaces/`."""
    package = Path(__file__).resolve().parents[2]  # raydistill/ (this is search/spaces/load.py)
    checkout = package.parent / "search_spaces"
    if (package.parent / "pyproject.toml").is_file() and checkout.is_dir():
        return checkout
    return package / "search_spaces"


def shipped_spaces() -> dict[str, Path]:
    """The shipped YAML files by stem (one per student family)."""
    return {p.stem: p for p in sorted(space_dir().glob("*.yaml"))}


def load_space(source: str | Path | Mapping[str, Any] | SearchSpace) -> SearchSpace:
    """A validated space from a YAML path, a shipped space's name ("cnn"), or a mapping."""
    if isinstance(source, SearchSpace):
        return source
    if isinstance(source, Mapping):
        return parse_space(source, "<dict>")
    path = Path(source)
    if not path.exists() and str(source) in shipped_spaces():
        path = shipped_spaces()[str(source)]
    if not path.is_file():
        raise UserError(
            f"search space {str(source)!r} is not a file nor a shipped space "
            f"({', '.join(shipped_spaces())})"
        )
    return parse_space(read_yaml(path), str(path))


def read_yaml(path: Path) -> Any:
    """`yaml.safe_load` of a data-only file: a YAML tag (`!!python/...`, `!foo`) is an error."""
    text = path.read_text(encoding="utf-8")
    try:
        for token in yaml.scan(text, Loader=yaml.SafeLoader):
            if isinstance(token, yaml.TagToken):
                line = token.start_mark.line + 1
                raise UserError(f"{path}:{line}: YAML tags are not allowed (data only)")
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f":{mark.line + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or first_line(exc)
        raise UserError(f"{path}{where}: invalid YAML: {problem}") from None


# ------------------------------------------------------------------ cells
def plan_cells(
    spaces: Sequence[SearchSpace],
    budgets: Iterable[int | str | Budget],
    depths: Iterable[int] | None = None,
) -> list[tuple[Cell, SearchSpace]]:
    """Cells (family × depth × budget) in order; `depths` intersects each space's own depths.

    A budget below a cell's smallest model (every width 1) is a UserError naming the cell.
    """
    budgets = [parse_budget(b) for b in budgets]
    if not budgets:
        raise UserError("no budgets given; e.g. --budgets 1M,3.16M")
    wanted = None if depths is None else set(depths)
    seen: dict[str, str] = {}
    cells: list[tuple[Cell, SearchSpace]] = []
    for space in spaces:
        if space.family in seen:
            raise UserError(
                f"family {space.family!r} is in two spaces: {seen[space.family]}, {space.source}"
            )
        seen[space.family] = space.source
        use = [d for d in space.depths if wanted is None or d in wanted]
        if not use:
            raise UserError(
                f"{space.source}: none of --depths {sorted(wanted or [])} is a depth of this space "
                f"{list(space.depths)}"
            )
        for depth in use:
            fixed = {k: p.value for k, p in space.spec.items() if not p.searched}
            for budget in budgets:
                cell = Cell(space.family, depth, budget.value, budget.kind)
                # A measured latency floor is left to the solver (a trial's one-line refusal):
                # timing every cell's smallest net here would cost seconds and vary with load.
                floor = min_cost(space.family, depth, budget, **fixed) if budget.exact else 0
                if floor > budget.value:
                    raise UserError(
                        f"cell {cell.id}: budget {budget.value} {budget.unit} is below the "
                        f"family's minimum {floor:.6g}"
                    )
                cells.append((cell, space))
    return cells


def settings(space: SearchSpace, depth: int, sampled: Mapping[str, Any]) -> TrialSettings:
    """Fixed values + one sample (`sampled`: names as in `searched(depth)`) → what to train."""
    names = space.ratio_names(depth)
    if space.width_ratios.searched:  # an inert ratio (not sampled) sits at its range's middle
        mid = _middle(space.width_ratios)
        ratios = [FIRST_RATIO, *(float(sampled.get(n, mid)) for n in names[1:])]
    else:
        ratios = [float(space.width_ratios.value)] * len(names)

    def pick(section: Mapping[str, Param]) -> dict[str, Any]:
        return {k: sampled[k] if p.searched else p.value for k, p in section.items()}

    return TrialSettings(pick(space.spec), ratios, pick(space.train))


def inert_ratios(space: SearchSpace, cell: Cell, data_keys: Mapping[str, Any]) -> frozenset[str]:
    """The sampled width ratios of `cell` that cannot change its widths: a dimension with no
    effect only wastes the searcher's samples (mlp-d1 at 10k: the 3,073-parameter units of its
    bottleneck leave it 3 wide whatever the ratio, and the solver fills the rest: [3, 55]).

    Probed with the budget solver on the data's shape (`data_keys`): a ratio is inert when
    its lowest, middle and highest values give the same widths with the other ratios at their
    lowest and at their highest. Spec keys the space searches are probed at their first value.
    """
    from raydistill.students.budget import solve_budget

    names = space.ratio_names(cell.depth)[1:]
    if not space.width_ratios.searched or not names:
        return frozenset()
    values = _levels(space.width_ratios)
    spec = {k: (p.candidates()[0] if p.searched else p.value) for k, p in space.spec.items()}

    def widths(ratios: Sequence[float]) -> list[int]:
        return solve_budget(cell.family, cell.depth, cell.budget, [FIRST_RATIO, *ratios],
                            **spec, **data_keys).widths  # fmt: skip

    def moves(i: int) -> bool:
        """Whether ratio i changes the widths, the others all at their lowest or highest."""
        for other in (values[0], values[-1]):
            rest = [other] * len(names)
            if len({tuple(widths([*rest[:i], v, *rest[i + 1 :]])) for v in values}) > 1:
                return True
        return False

    try:
        return frozenset(name for i, name in enumerate(names) if not moves(i))
    except UserError:  # a budget below the cell's minimum: plan_cells says so
        return frozenset()


def _levels(p: Param) -> list[float]:
    """A ratio entry's lowest, middle and highest values (every choice of a choice)."""
    if p.kind == "choice":
        return sorted(float(v) for v in p.value)
    lo, hi = (float(v) for v in p.value)
    return [lo, (lo + hi) / 2, hi]


def _middle(p: Param) -> float:
    levels = _levels(p)
    return levels[len(levels) // 2]


def cell_seed(seed: int, cell_id: str, run: int = 0) -> int:
    """A stable 31-bit seed per (experiment seed, cell, run) for the cell's searcher."""
    return zlib.crc32(f"{seed}:{cell_id}:{run}".encode()) & 0x7FFFFFFF
