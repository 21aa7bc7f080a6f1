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
`{float: [lo, hi]}`, `{log_float: [lo, hi]}`, `{choice: [a, b, ...]}`. `to_optuna` is the only
place a primitive becomes a sampler distribution: Ray Tune's searchers (through OptunaSearch),
`--dry-run` and the searcher benchmark all go through it. A *cell* is one (family, depth, budget)
and is searched on its own. No Ray here.
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

import yaml

from raydistill.budget import format_budget, min_params
from raydistill.errors import UserError
from raydistill.students import Family, families, get_family

PRIMITIVES = ("int", "log_int", "float", "log_float", "choice")
TOP_KEYS = ("family", "description", "depths", "width_ratios", "spec", "train")
# Spec keys the search sets itself: depth (the cell), widths (the solver), shape (the data).
RESERVED_SPEC = {"depth": "the cell's depth", "widths": "the budget solver",
                 "in_shape": "the dataset", "num_classes": "the dataset"}  # fmt: skip
RESERVED_TRAIN = {"seed": "--seed", "device": "the trial's resources"}
SEARCHERS = ("tpe", "gp", "random")
RATIO_PREFIX = "r"  # sampled width ratios are named r1, r2, ... in trial configs
# Slot 0's ratio: fixed (see SearchSpace.searched), at the middle of [0, 1] so the other slots
# can be up to 8**0.5 ≈ 2.8× narrower or wider than slot 0, and up to 8× apart from each other.
FIRST_RATIO = 0.5


@dataclass(frozen=True)
class Param:
    """One space entry: `kind` "fixed" (value is the value) or a primitive (value: bounds/choices)."""

    kind: str
    value: Any

    @property
    def searched(self) -> bool:
        return self.kind != "fixed"

    def candidates(self) -> list[Any]:
        """Values that exercise validation: the fixed value, every choice, or both bounds."""
        return [self.value] if self.kind == "fixed" else list(self.value)

    def upper(self) -> Any:
        """The largest value this entry can take (numeric entries)."""
        return self.value if self.kind == "fixed" else max(self.value)


@dataclass(frozen=True)
class SearchSpace:
    """A validated search space for one student family."""

    family: str
    depths: tuple[int, ...]
    width_ratios: Param
    spec: Mapping[str, Param]
    train: Mapping[str, Param]
    source: str = "<dict>"
    description: str = ""
    raw: Mapping[str, Any] = field(default_factory=dict, compare=False)

    def ratio_names(self, depth: int) -> list[str]:
        """The names of every width slot's ratio at `depth`: r0, r1, ..."""
        return [f"{RATIO_PREFIX}{i}" for i in range(get_family(self.family).width_slots(depth))]

    def searched(self, depth: int) -> dict[str, Param]:
        """The sampled entries at `depth`, by their trial-config name (r1.., spec, train keys).

        r0 is never sampled: adding one constant to every ratio gives the same widths (the
        solver's common scale absorbs it), so slot 0 is fixed at `FIRST_RATIO` and d slots
        search d − 1 dimensions."""
        out: dict[str, Param] = {}
        if self.width_ratios.searched:
            out.update({n: self.width_ratios for n in self.ratio_names(depth)[1:]})
        for section in (self.spec, self.train):
            out.update({k: p for k, p in section.items() if p.searched})
        return out

    def with_depths(self, depths: Iterable[int]) -> SearchSpace:
        """A copy searching only `depths` (each must be one of the space's depths)."""
        depths = tuple(int(d) for d in depths)
        bad = [d for d in depths if d not in self.depths]
        if bad or not depths:
            raise UserError(
                f"{self.source}: depth {bad[0] if bad else depths} is invalid for family "
                f"{self.family!r}; valid: {list(self.depths)}"
            )
        return replace(self, depths=depths, raw={**self.raw, "depths": list(depths)})

    def with_train(self, **values: Any) -> SearchSpace:
        """A copy with train entries set to `values`: fixed values (loss="hard") or primitives
        ({log_float: [lo, hi]}), validated like the file's own entries."""
        return self.with_overrides(train=values)

    def with_overrides(
        self,
        *,
        train: Mapping[str, Any] | None = None,
        spec: Mapping[str, Any] | None = None,
        width_ratios: Any = None,
    ) -> SearchSpace:
        """A copy with some train / spec entries (and the width ratios) replaced — a scale's
        settings — re-validated."""
        raw = {
            **self.raw,
            "depths": list(self.depths),
            "train": {**_raw_section(self.train), **(train or {})},
            "spec": {**_raw_section(self.spec), **(spec or {})},
        }
        if width_ratios is not None:
            raw["width_ratios"] = width_ratios
        return parse_space(raw, self.source)


@dataclass(frozen=True)
class Cell:
    """One searched unit: a family at a depth under a parameter budget."""

    family: str
    depth: int
    budget: int

    @property
    def id(self) -> str:
        """`<family>-d<depth>@<budget>`, e.g. `cnn-d2@1M`."""
        return f"{self.family}-d{self.depth}@{format_budget(self.budget)}"


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
    here = Path(__file__).resolve().parent
    checkout = here.parent / "search_spaces"
    if (here.parent / "pyproject.toml").is_file() and checkout.is_dir():
        return checkout
    return here / "search_spaces"


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
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise UserError(f"{path}{where}: invalid YAML: {problem}") from None


def parse_space(raw: Any, source: str = "<dict>") -> SearchSpace:
    """Validate a space mapping; a UserError names `source` and the offending key."""
    if not isinstance(raw, Mapping):
        raise UserError(
            f"{source}: a search space must be a mapping with keys {', '.join(TOP_KEYS)}"
        )
    unknown = sorted(set(raw) - set(TOP_KEYS), key=str)
    if unknown:
        raise UserError(f"{source}: unknown key {unknown[0]!r}; valid: {', '.join(TOP_KEYS)}")
    if "family" not in raw:
        raise UserError(f"{source}: missing key 'family'; valid: {', '.join(families('student'))}")
    try:
        fam = get_family(str(raw["family"]))
    except UserError as exc:
        raise UserError(f"{source}: family: {exc}") from None
    depths = _parse_depths(raw.get("depths", list(fam.depths)), fam, source)
    ratios = _parse_param(
        raw.get("width_ratios", {"float": [0.0, 1.0]}), "width_ratios", 0.0, source
    )
    _check_ratios(ratios, source)
    spec = _parse_section(raw.get("spec") or {}, "spec", fam.defaults(), RESERVED_SPEC, source)
    train = _parse_section(
        raw.get("train") or {}, "train", _train_defaults(), RESERVED_TRAIN, source
    )
    both = sorted(set(spec) & set(train))
    if both:
        raise UserError(f"{source}: key {both[0]!r} is in both spec and train; keep one")
    space = SearchSpace(fam.name, depths, ratios, spec, train, source,
                        str(raw.get("description", "")), dict(raw))  # fmt: skip
    _check_train_values(space)
    _check_spec_values(space)
    return space


def _train_defaults() -> dict[str, Any]:
    from raydistill.train import TrainConfig

    return {f.name: f.default for f in fields(TrainConfig)}


def _parse_depths(value: Any, fam: Family, source: str) -> tuple[int, ...]:
    if not isinstance(value, list) or not value or not all(_is_int(d) for d in value):
        raise UserError(
            f"{source}: depths must be a non-empty list of integers; valid: {list(fam.depths)}"
        )
    bad = [d for d in value if d not in fam.depths]
    if bad:
        raise UserError(
            f"{source}: depths: {fam.name!r} has no depth {bad[0]}; valid: {list(fam.depths)}"
        )
    return tuple(sorted(set(value)))


def _parse_section(
    section: Any, name: str, defaults: Mapping[str, Any], reserved: Mapping[str, str], source: str
) -> dict[str, Param]:
    if not isinstance(section, Mapping):
        raise UserError(f"{source}: {name} must be a mapping of keys to values or ranges")
    out: dict[str, Param] = {}
    for key, value in section.items():
        if key in reserved:
            raise UserError(
                f"{source}: {name}.{key} is set by {reserved[key]}, not by a search space"
            )
        if key not in defaults:
            valid = ", ".join(k for k in defaults if k not in reserved)
            raise UserError(f"{source}: unknown key {name}.{key}; valid: {valid}")
        out[str(key)] = _parse_param(value, f"{name}.{key}", defaults[key], source)
    return out


def _parse_param(value: Any, key: str, default: Any, source: str) -> Param:
    """A fixed value or one primitive, type-checked against the key's default value."""
    if not isinstance(value, Mapping):
        _check_type(value, default, key, source)
        return Param("fixed", value)
    if len(value) != 1 or next(iter(value)) not in PRIMITIVES:
        raise UserError(
            f"{source}: {key}: expected a value or one of {{{', '.join(PRIMITIVES)}: ...}}, got {dict(value)}"
        )
    kind, arg = next(iter(value.items()))
    if kind == "choice":
        if not isinstance(arg, list) or not arg:
            raise UserError(f"{source}: {key}: choice needs a non-empty list, got {arg!r}")
        for v in arg:
            _check_type(v, default, key, source)
        return Param("choice", tuple(arg))
    return Param(kind, _parse_range(kind, arg, default, key, source))


def _parse_range(kind: str, arg: Any, default: Any, key: str, source: str) -> tuple:
    is_int = kind.endswith("int")
    ok = (
        isinstance(arg, list)
        and len(arg) == 2
        and all(_is_int(v) if is_int else _is_number(v) for v in arg)
    )
    if not ok:
        what = "integers" if is_int else "numbers"
        raise UserError(f"{source}: {key}: {kind} needs [lo, hi] with two {what}, got {arg!r}")
    if isinstance(default, bool) or not _is_number(default) or (is_int and not _is_int(default)):
        raise UserError(f"{source}: {key}: a {kind} range does not fit a value like {default!r}")
    if _is_int(default) and not is_int:
        raise UserError(f"{source}: {key}: takes integers; use int or log_int, not {kind}")
    lo, hi = arg
    if lo > hi:
        raise UserError(f"{source}: {key}: {kind} range [{lo}, {hi}] has lo > hi")
    if kind.startswith("log") and lo <= 0:
        raise UserError(f"{source}: {key}: {kind} range [{lo}, {hi}] must be > 0")
    if not all(math.isfinite(v) for v in arg):
        raise UserError(f"{source}: {key}: {kind} range [{lo}, {hi}] must be finite")
    return (int(lo), int(hi)) if is_int else (float(lo), float(hi))


def _check_type(value: Any, default: Any, key: str, source: str) -> None:
    if default is None:
        return
    if isinstance(default, bool):
        ok = isinstance(value, bool)
    elif isinstance(default, int):
        ok = _is_int(value)
    elif isinstance(default, float):
        ok = _is_number(value)
    elif isinstance(default, str):
        ok = isinstance(value, str)
    else:  # sequences and other structured defaults: accept lists as given
        ok = isinstance(value, (list, tuple, type(default)))
    if not ok:
        raise UserError(
            f"{source}: {key}: {value!r} is not a {type(default).__name__} (like {default!r})"
        )


def _check_ratios(p: Param, source: str) -> None:
    bad = [v for v in p.candidates() if not (_is_number(v) and 0.0 <= v <= 1.0)]
    if bad:
        raise UserError(f"{source}: width_ratios: {bad[0]!r} is outside [0, 1]")


def _check_train_values(space: SearchSpace) -> None:
    """Every fixed value, choice and bound must make a valid TrainConfig (loss names, ...)."""
    from raydistill.train import TrainConfig

    base = {k: p.value for k, p in space.train.items() if not p.searched}
    base.update({k: p.candidates()[0] for k, p in space.train.items() if p.searched})
    for key, p in space.train.items():
        for v in p.candidates():
            try:
                TrainConfig.from_dict({**base, key: v})
            except (UserError, TypeError, ValueError) as exc:
                raise UserError(f"{space.source}: train.{key}={v!r}: {exc}") from None


def _check_spec_values(space: SearchSpace) -> None:
    """Every fixed value / bound must build (on the meta device) at the smallest widths."""
    base = {k: p.candidates()[0] for k, p in space.spec.items()}
    for key, p in space.spec.items():
        for v in p.candidates():
            try:
                min_params(space.family, space.depths[0], **{**base, key: v})
            except Exception as exc:  # the builder's own error: bad value, wrong type
                msg = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
                raise UserError(f"{space.source}: spec.{key}={v!r}: {msg}") from None


def _raw_section(section: Mapping[str, Param]) -> dict[str, Any]:
    """Back to the YAML form (for records: search.json, the manifest)."""
    return {
        k: p.value if p.kind == "fixed" else {p.kind: list(p.value)} for k, p in section.items()
    }


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


# ------------------------------------------------------------------ cells
def plan_cells(
    spaces: Sequence[SearchSpace], budgets: Iterable[int], depths: Iterable[int] | None = None
) -> list[tuple[Cell, SearchSpace]]:
    """Cells (family × depth × budget) in order; `depths` intersects each space's own depths.

    A budget below a cell's smallest model (every width 1) is a UserError naming the cell.
    """
    budgets = list(budgets)
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
            floor = min_params(space.family, depth, **fixed)
            for budget in budgets:
                cell = Cell(space.family, depth, int(budget))
                if floor > budget:
                    raise UserError(
                        f"cell {cell.id}: budget {budget} is below the family's minimum {floor}"
                    )
                cells.append((cell, space))
    return cells


def settings(space: SearchSpace, depth: int, sampled: Mapping[str, Any]) -> TrialSettings:
    """Fixed values + one sample (`sampled`: names as in `searched(depth)`) → what to train."""
    names = space.ratio_names(depth)
    if space.width_ratios.searched:
        ratios = [FIRST_RATIO, *(float(sampled[n]) for n in names[1:])]
    else:
        ratios = [float(space.width_ratios.value)] * len(names)

    def pick(section: Mapping[str, Param]) -> dict[str, Any]:
        return {k: sampled[k] if p.searched else p.value for k, p in section.items()}

    return TrialSettings(pick(space.spec), ratios, pick(space.train))


def cell_seed(seed: int, cell_id: str, run: int = 0) -> int:
    """A stable 31-bit seed per (experiment seed, cell, run) for the cell's searcher."""
    return zlib.crc32(f"{seed}:{cell_id}:{run}".encode()) & 0x7FFFFFFF


# ------------------------------------------------------------------ Optuna
def to_optuna(space: SearchSpace, depth: int) -> dict[str, Any]:
    """The sampled entries at `depth` as Optuna distributions (the one translation)."""
    import optuna.distributions as od

    def dist(p: Param) -> od.BaseDistribution:
        if p.kind == "choice":
            return od.CategoricalDistribution(list(p.value))
        lo, hi = p.value
        if p.kind in ("int", "log_int"):
            return od.IntDistribution(lo, hi, log=p.kind == "log_int")
        return od.FloatDistribution(lo, hi, log=p.kind == "log_float")

    return {name: dist(p) for name, p in space.searched(depth).items()}


# Random trials before the model-based samplers take over. Optuna's default (10) spends most of
# a cell's budget at the paper's scale (16–32 trials per cell) on random draws.
STARTUP_TRIALS = 6


def make_sampler(kind: str, seed: int) -> Any:
    """The Optuna sampler behind `--searcher`: TPE (default), GP, or random (the baseline).

    TPE is multivariate (lr and momentum interact) with the constant liar, so concurrent trials
    of one cell do not all land on the same point.
    """
    import optuna

    if kind == "tpe":
        return optuna.samplers.TPESampler(
            seed=seed, n_startup_trials=STARTUP_TRIALS, multivariate=True, constant_liar=True
        )
    if kind == "gp":
        return optuna.samplers.GPSampler(seed=seed, n_startup_trials=STARTUP_TRIALS)
    if kind == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    raise UserError(f"unknown searcher {kind!r}; valid: {', '.join(SEARCHERS)}")


def sample_configs(space: SearchSpace, depth: int, n: int, seed: int = 0) -> list[dict[str, Any]]:
    """`n` random samples of the space at `depth` (the --dry-run preview), via `to_optuna`."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    dists = to_optuna(space, depth)
    study = optuna.create_study(direction="maximize", sampler=make_sampler("random", seed))
    return [study.ask(fixed_distributions=dists).params for _ in range(n)]
