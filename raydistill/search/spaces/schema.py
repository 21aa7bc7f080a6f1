"""The search-space schema: `Param`, `SearchSpace`, and `parse_space`, which validates a space
mapping with pydantic models (the file's keys, each primitive's shape and bounds, each value's
type from its key's default) and then against the code (TrainConfig's rules, the builder).

Every mistake is one `UserError` line naming the file, the key, the value and what is valid,
through `raydistill.core.validation` (the one conversion of pydantic's errors). The file format is
described in `raydistill.search.spaces.load`; that module re-exports everything here.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from functools import lru_cache
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, StrictInt, StrictStr, model_validator

from raydistill.core.errors import UserError, first_line
from raydistill.core.validation import defaults_model, validate
from raydistill.students.budget import min_params

PRIMITIVES = ("int", "log_int", "float", "log_float", "choice")
TOP_KEYS = ("family", "description", "depths", "width_ratios", "spec", "train")
# Spec keys the search sets itself: depth (the cell), widths (the solver), shape (the data).
RESERVED_SPEC = {
    "depth": "the cell's depth",
    "widths": "the budget solver",
    "in_shape": "the dataset",
    "num_classes": "the dataset",
}
RESERVED_TRAIN = {"seed": "--seed", "device": "the trial's resources"}
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
        from raydistill.students import get_family

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
        source: str | None = None,
    ) -> SearchSpace:
        """A copy with some train / spec entries (and the width ratios) replaced — a scale's
        settings, `--set` — re-validated (errors name `source`, default: the space's file)."""
        raw = {
            **self.raw,
            "depths": list(self.depths),
            "train": {**_raw_section(self.train), **(train or {})},
            "spec": {**_raw_section(self.spec), **(spec or {})},
        }
        if width_ratios is not None:
            raw["width_ratios"] = width_ratios
        return parse_space(raw, source or self.source)


# ------------------------------------------------------------------ the schema
class SpaceFile(BaseModel):
    """The top level of a space file."""

    model_config = ConfigDict(extra="forbid")
    family: StrictStr
    description: str = ""
    depths: list[StrictInt] | None = Field(default=None, min_length=1)
    width_ratios: Any = Field(default_factory=lambda: {"float": [0.0, 1.0]})
    spec: dict[str, Any] = Field(default_factory=dict)
    train: dict[str, Any] = Field(default_factory=dict)


_Bounds = list[float] | None  # strict: an int bound is taken as a float, a string is refused


class Primitive(BaseModel):
    """A sampled entry: exactly one of {int | log_int | float | log_float: [lo, hi]} or
    {choice: [a, b, ...]}."""

    model_config = ConfigDict(extra="forbid", strict=True)
    int_: list[StrictInt] | None = Field(default=None, alias="int", min_length=2, max_length=2)
    log_int: list[StrictInt] | None = Field(default=None, min_length=2, max_length=2)
    float_: _Bounds = Field(default=None, alias="float", min_length=2, max_length=2)
    log_float: _Bounds = Field(default=None, min_length=2, max_length=2)
    choice: list[Any] | None = Field(default=None, min_length=1)

    @model_validator(mode="after")
    def _one_kind(self) -> Primitive:
        given = [(k, v) for k, v in self.items() if v is not None]
        if len(given) != 1:
            raise ValueError(f"give exactly one of {', '.join(PRIMITIVES)}")
        kind, arg = given[0]
        if kind != "choice":
            lo, hi = arg
            if not all(math.isfinite(v) for v in arg):
                raise ValueError(f"{kind} range [{lo}, {hi}] must be finite")
            if lo > hi:
                raise ValueError(f"{kind} range [{lo}, {hi}] has lo > hi")
            if kind.startswith("log") and lo <= 0:
                raise ValueError(f"{kind} range [{lo}, {hi}] must be > 0")
        return self

    def items(self) -> list[tuple[str, Any]]:
        values = (self.int_, self.log_int, self.float_, self.log_float, self.choice)
        return list(zip(PRIMITIVES, values, strict=True))

    def param(self) -> Param:
        kind, arg = next((k, v) for k, v in self.items() if v is not None)
        return Param(kind, tuple(arg))


@lru_cache(maxsize=64)
def _section_model(name: str, family: str) -> type[BaseModel]:
    """The strict model of a section's values: TrainConfig's fields, or the builder's."""
    from raydistill.students import get_family
    from raydistill.training.schema import train_config_model

    if name == "train":
        return train_config_model()
    return defaults_model("spec", get_family(family).defaults())


# ------------------------------------------------------------------ parse_space
def parse_space(raw: Any, source: str = "<dict>") -> SearchSpace:
    """Validate a space mapping; a UserError names `source` and the offending key."""
    from raydistill.students import families, get_family

    if not isinstance(raw, Mapping):
        raise UserError(
            f"{source}: a search space must be a mapping with keys {', '.join(TOP_KEYS)}"
        )
    top: SpaceFile = validate(SpaceFile, dict(raw), source, valid={"family": families("student")})  # type: ignore[assignment]
    try:
        fam = get_family(top.family)
    except UserError as exc:
        raise UserError(f"{source}: family: {exc}") from None
    depths = top.depths or list(fam.depths)
    bad = [d for d in depths if d not in fam.depths]
    if bad:
        raise UserError(
            f"{source}: depths: {fam.name!r} has no depth {bad[0]}; valid: {list(fam.depths)}"
        )
    ratios = _entry(top.width_ratios, "width_ratios", None, source)
    bad = [v for v in ratios.candidates() if isinstance(v, bool) or not 0.0 <= v <= 1.0]
    if bad:
        raise UserError(f"{source}: width_ratios: {bad[0]!r} is outside [0, 1]")
    spec = _section(top.spec, "spec", fam.name, RESERVED_SPEC, source)
    train = _section(top.train, "train", fam.name, RESERVED_TRAIN, source)
    both = sorted(set(spec) & set(train))
    if both:
        raise UserError(f"{source}: key {both[0]!r} is in both spec and train; keep one")
    space = SearchSpace(
        fam.name,
        tuple(sorted(set(depths))),
        ratios,
        spec,
        train,
        source,
        top.description,
        dict(raw),
    )
    _check_train_values(space)
    _check_spec_values(space)
    return space


def _section(
    section: Mapping[str, Any], name: str, family: str, reserved: Mapping[str, str], source: str
) -> dict[str, Param]:
    model = _section_model(name, family)
    valid = ", ".join(n for n in model.model_fields if n not in reserved)
    out: dict[str, Param] = {}
    for key, value in section.items():
        if key in reserved:
            raise UserError(
                f"{source}: {name}.{key} is set by {reserved[key]}, not by a search space"
            )
        if key not in model.model_fields:
            raise UserError(f"{source}: {name}.{key}: unknown key; valid: {valid}")
        out[str(key)] = _entry(value, f"{name}.{key}", model, source)
    return out


def _entry(value: Any, path: str, model: type[BaseModel] | None, source: str) -> Param:
    """A fixed value or one primitive; every candidate value typed by the key's model field."""
    if isinstance(value, Mapping):
        param = validate(Primitive, dict(value), source, prefix=f"{path}.").param()  # type: ignore[attr-defined]
    else:
        param = Param("fixed", value)
    if model is None:  # the width ratios: numbers
        model = defaults_model("width_ratios", {"width_ratios": 0.0})
        key = "width_ratios"
    else:
        key = path.partition(".")[2]
    default = model.model_fields[key].default
    if param.kind in ("float", "log_float") and type(default) is int:
        raise UserError(f"{source}: {path}: takes integers; use int or log_int, not {param.kind}")
    prefix = path.rpartition(".")[0]
    values = [
        validate(model, {key: v}, source, prefix=f"{prefix}." if prefix else "").model_dump()[key]  # type: ignore[attr-defined]
        for v in param.candidates()
    ]
    return Param("fixed", values[0]) if param.kind == "fixed" else Param(param.kind, tuple(values))


def _check_train_values(space: SearchSpace) -> None:
    """Every fixed value, choice and bound must make a valid TrainConfig (loss names, ...)."""
    from raydistill.training.config import TrainConfig

    base = {k: p.value for k, p in space.train.items() if not p.searched}
    base.update({k: p.candidates()[0] for k, p in space.train.items() if p.searched})
    alone = [({key: v}, key, v) for key, p in space.train.items() for v in p.candidates()]
    together = [
        ({**base, key: v}, key, v) for key, p in space.train.items() for v in p.candidates()
    ]
    for values, key, v in alone + together:  # each value on its own first: blame the right key
        try:
            TrainConfig.from_dict(values)
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
                raise UserError(f"{space.source}: spec.{key}={v!r}: {first_line(exc)}") from None


def _raw_section(section: Mapping[str, Param]) -> dict[str, Any]:
    """Back to the YAML form (for records: search.json, the manifest)."""
    return {
        k: p.value if p.kind == "fixed" else {p.kind: list(p.value)} for k, p in section.items()
    }
