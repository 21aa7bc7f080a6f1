"""The registered families read from the source of `raydistill/students/`, without importing it.

Importing the registry imports torch (every family is an `nn.Module` builder), which costs
seconds; listing families and refusing a bad `--family` / `--depth` should not. This reads the
`@register_family(name, depths=..., kind=...)` decorators of the family modules
(`raydistill.students.family_modules()`), with `ast` (nothing is executed). When a decorator
is not made of literals, `static_families` returns None and the caller imports the registry.
tests/test_cli.py checks that this index equals the registry.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path

STUDENTS = Path(__file__).resolve().parent.parent / "students"


@dataclass(frozen=True)
class FamilyInfo:
    """What `raydistill families` shows of a family."""

    name: str
    kind: str
    depths: tuple[int, ...]
    spec_keys: tuple[str, ...]
    summary: str


def static_families(kind: str | None = None) -> dict[str, FamilyInfo] | None:
    """{name: FamilyInfo} sorted by name (of one kind, if given), or None if not readable."""
    try:
        found = [info for mod in _family_modules() for info in _read_module(STUDENTS / f"{mod}.py")]
    except (OSError, SyntaxError, ValueError):
        return None
    if any(info is None for info in found):
        return None
    infos = sorted(found, key=lambda f: f.name)  # type: ignore[arg-type,return-value]
    return {f.name: f for f in infos if kind is None or f.kind == kind}


def _family_modules() -> list[str]:
    from raydistill.students import family_modules  # the package's __init__ imports no torch

    return [m.replace(".", "/") for m in family_modules()]


def _read_module(path: Path) -> list[FamilyInfo | None]:
    out: list[FamilyInfo | None] = []
    for node in ast.parse(path.read_text()).body:
        if not isinstance(node, ast.FunctionDef):
            continue
        for dec in node.decorator_list:
            if (
                isinstance(dec, ast.Call)
                and isinstance(dec.func, ast.Name)
                and dec.func.id == "register_family"
            ):
                out.append(_info(node, dec))
    return out


def _info(fn: ast.FunctionDef, dec: ast.Call) -> FamilyInfo | None:
    try:
        name = ast.literal_eval(dec.args[0])
        kw = {k.arg: k.value for k in dec.keywords}
        depths = tuple(int(d) for d in ast.literal_eval(kw["depths"]))
        kind = ast.literal_eval(kw["kind"]) if "kind" in kw else "student"
    except (ValueError, KeyError, IndexError, TypeError):
        return None
    a = fn.args
    keys = tuple(x.arg for x in (*a.posonlyargs, *a.args, *a.kwonlyargs))
    doc = ast.get_docstring(fn) or ""
    return FamilyInfo(str(name), str(kind), depths, keys, doc.splitlines()[0] if doc else "")
