"""The one registry of network families (students and teachers).

A family is a builder function whose keyword arguments are the architecture spec
(`depth`, `widths`, `dropout`, ...), registered with `@register_family(...)`. A spec is a
plain JSON-able dict: ``{"family": "cnn", "depth": 2, "widths": [64, 128, 512], ...}``;
`build(spec)` rebuilds the module from it (export and checkpoints rely on this).
`complete_spec(spec, data)` fills the keys a dataset decides (`in_shape`, `num_classes`;
`data_spec_keys`), and `has_conv(model)` says whether a network has a 2-d convolution.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from torch import nn

from raydistill.core.errors import UserError

Builder = Callable[..., nn.Module]


@dataclass(frozen=True)
class Family:
    """A registered family: its builder and what the budget solver needs to know of its shape."""

    name: str
    builder: Builder
    kind: str  # "student" or "teacher"
    depths: tuple[int, ...]  # valid values of the `depth` argument
    width_slots: Callable[[int], int]  # depth -> number of integer widths the builder takes
    summary: str
    # depth -> each slot's relative width at equal ratios (ResNet's 1:2:4 stages); None: equal
    width_shape: Callable[[int], tuple[float, ...]] | None = None

    @property
    def spec_keys(self) -> tuple[str, ...]:
        """The builder's keyword arguments: the keys a spec (and a search space) may set."""
        return tuple(inspect.signature(self.builder).parameters)

    def defaults(self) -> dict[str, Any]:
        """Default values of the builder's keyword arguments that have one."""
        params = inspect.signature(self.builder).parameters.values()
        return {p.name: p.default for p in params if p.default is not inspect.Parameter.empty}


_FAMILIES: dict[str, Family] = {}


def register_family(
    name: str,
    *,
    depths: tuple[int, ...],
    width_slots: Callable[[int], int],
    kind: str = "student",
    width_shape: Callable[[int], tuple[float, ...]] | None = None,
) -> Callable[[Builder], Builder]:
    """Register a builder as family `name`; its docstring's first line is the summary.

    `width_shape(depth)` gives the slots' proportions the budget solver keeps at equal width
    ratios (a family designed with widening stages); without it every slot is equally wide.
    """

    def decorate(builder: Builder) -> Builder:
        if name in _FAMILIES:
            raise ValueError(f"family {name!r} is registered twice")
        summary = (inspect.getdoc(builder) or "").splitlines()[0] if builder.__doc__ else ""
        _FAMILIES[name] = Family(
            name, builder, kind, tuple(depths), width_slots, summary, width_shape
        )
        return builder

    return decorate


def families(kind: str | None = None) -> dict[str, Family]:
    """All registered families (of one kind, if given), by name."""
    _load_builtin()
    return {n: f for n, f in sorted(_FAMILIES.items()) if kind is None or f.kind == kind}


def get_family(name: str) -> Family:
    """The family called `name`, or a UserError listing the valid names."""
    known = families()
    if name not in known:
        raise UserError(f"unknown family {name!r}; valid: {', '.join(known)}")
    return known[name]


def check_spec(spec: Mapping[str, Any]) -> tuple[Family, dict[str, Any]]:
    """Split a spec into its family and the builder's keyword arguments, validating both."""
    if "family" not in spec:
        raise UserError(f"spec has no 'family' key: {dict(spec)}")
    fam = get_family(str(spec["family"]))
    kwargs = {k: v for k, v in spec.items() if k != "family"}
    unknown = sorted(set(kwargs) - set(fam.spec_keys))
    if unknown:
        raise UserError(
            f"family {fam.name!r} has no spec key {unknown[0]!r}; valid: {', '.join(fam.spec_keys)}"
        )
    depth = kwargs.get("depth", fam.defaults().get("depth"))
    if depth is not None and int(depth) not in fam.depths:
        raise UserError(f"family {fam.name!r} depth {depth} is invalid; valid: {list(fam.depths)}")
    if "widths" in kwargs and depth is not None:
        need = fam.width_slots(int(depth))
        if len(kwargs["widths"]) != need:
            raise UserError(
                f"family {fam.name!r} depth {depth} takes {need} widths, got {len(kwargs['widths'])}"
            )
    return fam, kwargs


def build(spec: Mapping[str, Any]) -> nn.Module:
    """Build the module a spec describes (on the current default device)."""
    fam, kwargs = check_spec(spec)
    return fam.builder(**kwargs)


def _load_builtin() -> None:
    # Importing the package's family modules runs their @register_family decorators.
    import importlib

    from raydistill.students import family_modules

    for module in family_modules():
        importlib.import_module(f"raydistill.students.{module}")


def data_spec_keys(data: Any) -> dict[str, Any]:
    """The spec keys a dataset decides (a `raydistill.data.Splits`): input shape and classes."""
    return {"in_shape": list(data.image_shape), "num_classes": data.num_classes}


def complete_spec(spec: Mapping[str, Any], data: Any) -> dict[str, Any]:
    """A copy of `spec` with the data-dependent keys (`data_spec_keys`) filled in when absent."""
    full = dict(spec)
    for key, value in data_spec_keys(data).items():
        full.setdefault(key, value)
    return full


def has_conv(model: nn.Module) -> bool:
    """Whether `model` has a 2-d convolution (channels-last memory helps only then)."""
    return any(isinstance(m, nn.Conv2d) for m in model.modules())
