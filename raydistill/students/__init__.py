"""Student (and teacher) network families: one registry, one file per family, and budgets.

A family is one module here (students) or in `teachers/` (teacher architectures), found by
`family_modules()`, plus one `search_spaces/<family>.yaml`; the tests pick it up from the
registry. `budget` (budget strings, exact counts, the width solver) and `cost` (MACs and
latency per image) live beside them.

Importing this package imports neither torch nor the families: the public names below load
the registry (and with it every family module, which registers itself) on first use (PEP 562),
so `raydistill.students.budget.parse_budget` and the CLI's refusals stay fast.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

_HERE = Path(__file__).resolve().parent
_NOT_FAMILIES = {
    "__init__",
    "registry",
    "layers",
    "budget",
    "counts",
    "cost",
}  # the package's other modules
_PUBLIC = (
    "Family",
    "build",
    "check_spec",
    "complete_spec",
    "data_spec_keys",
    "families",
    "get_family",
    "has_conv",
    "register_family",
)


def family_modules() -> list[str]:
    """The family modules, relative to this package ("cnn", "teachers.vgg"), in a fixed order."""
    found = [p.stem for p in _HERE.glob("*.py") if p.stem not in _NOT_FAMILIES]
    found += [
        f"teachers.{p.stem}" for p in (_HERE / "teachers").glob("*.py") if p.stem != "__init__"
    ]
    return sorted(found)


def has_width_shape(family: str) -> bool:
    """Whether family `family` registers a `width_shape` (its slots' proportions), read from
    the family modules' source (no import: the budget CLI answers without torch)."""
    import re

    # the decorator's arguments, up to the builder's `def`
    pattern = re.compile(
        rf"register_family\(\s*\"{re.escape(family)}\"(?:(?!\ndef ).)*?width_shape=", re.S
    )
    for module in family_modules():
        path = _HERE.joinpath(*module.split(".")).with_suffix(".py")
        if pattern.search(path.read_text()):
            return True
    return False


def __getattr__(name: str) -> Any:
    if name not in _PUBLIC:
        raise AttributeError(f"module 'raydistill.students' has no attribute {name!r}")
    from raydistill.students import registry

    value = getattr(registry, name)
    globals()[name] = value  # later look-ups skip __getattr__
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_PUBLIC])


__all__ = ["family_modules", "has_width_shape", *_PUBLIC]
