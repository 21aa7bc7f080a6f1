"""Exact parameter counts as quadratic forms in the widths, kept in memory and on disk.

Every family here is built from layers whose parameter count is a product of two widths (a
conv or linear layer between two width slots), one width times a constant (a layer between a
slot and the input, the classes or a fixed size; biases and BatchNorm) or a constant. So at a
given depth and fixed spec keys (dropout, in_shape, num_classes, ...) the count is a quadratic
form in the widths w, written over x = w − 1:

    params(w) = c + Σ_i b_i x_i + Σ_{i≤j} A_ij x_i x_j

Its 1 + 2n + n(n−1)/2 coefficients come from exact counts on the meta device at w = 1 + e_i,
1 + 2e_i and 1 + e_i + e_j (finite differences, integers), and the form is checked against
exact counts at seeded random widths; a family whose count is not such a form (the check fails)
is counted by building each spec (`Shape.form` is None). The budget solver then counts in
microseconds instead of building a module per step.

The forms, with each shape's number of width slots, are kept on disk in the cache root
(`param-counts/<hash of the family sources>.json`): `raydistill budget` answers without
importing torch once a shape has been counted on this machine, and a changed family file
starts a new file.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

_HERE = Path(__file__).resolve().parent
_CHECKS = 3  # seeded random width vectors the fitted form must count exactly


@dataclass(frozen=True)
class Shape:
    """A (family, depth, fixed spec keys): its width slots and its count's quadratic form."""

    slots: int
    form: tuple[int, tuple[int, ...], tuple[tuple[int, ...], ...]] | None  # (c, b, A) or None

    def count(self, base: Mapping[str, Any], widths: Sequence[int]) -> int:
        if self.form is None:
            return build_count({**base, "widths": list(widths)})
        c, b, a = self.form
        x = [int(w) - 1 for w in widths]
        total = c + sum(bi * xi for bi, xi in zip(b, x, strict=True))
        for i, row in enumerate(a):
            total += x[i] * sum(row[j - i] * x[j] for j in range(i, len(x)))
        return total


def shape_of(base: Mapping[str, Any]) -> Shape:
    """The Shape of a spec without its widths (family, depth and the fixed keys)."""
    return _shape(json.dumps(dict(base), sort_keys=True))


@lru_cache(maxsize=4096)
def _shape(key: str) -> Shape:
    stored = _read_disk().get(key)
    if stored is not None:
        form = stored["form"]
        return Shape(int(stored["slots"]), None if form is None else _as_form(form))
    shape = _fit(json.loads(key))
    _write_disk(key, shape)
    return shape


@lru_cache(maxsize=65536)
def _count_json(spec_json: str) -> int:
    import torch  # here, not at module import: see raydistill.students.budget

    from raydistill.students.registry import build

    with torch.device("meta"):
        module = build(json.loads(spec_json))
    return sum(p.numel() for p in module.parameters())


def build_count(spec: Mapping[str, Any]) -> int:
    """The exact count of the module `spec` builds, built on the meta device."""
    return _count_json(json.dumps(spec, sort_keys=True))


def _fit(base: dict[str, Any]) -> Shape:
    from raydistill.students.registry import get_family

    fam = get_family(base["family"])
    n = fam.width_slots(int(base.get("depth", fam.defaults().get("depth"))))

    def f(x: Sequence[int]) -> int:
        return build_count({**base, "widths": [1 + v for v in x]})

    unit = [[int(i == k) for k in range(n)] for i in range(n)]
    g0 = f([0] * n)
    g1 = [f(u) for u in unit]
    g2 = [f([2 * v for v in u]) for u in unit]
    diag = [(g2[i] - 2 * g1[i] + g0) // 2 for i in range(n)]
    b = tuple(g1[i] - g0 - diag[i] for i in range(n))
    a = []
    for i in range(n):
        row = [diag[i]]
        for j in range(i + 1, n):
            both = f([u + v for u, v in zip(unit[i], unit[j], strict=True)])
            row.append(both - g1[i] - g1[j] + g0)
        a.append(tuple(row))
    shape = Shape(n, (g0, b, tuple(a)))
    rng = random.Random(0)
    for _ in range(_CHECKS):  # the form must count exactly where it was not fitted
        widths = [rng.randint(1, 97) for _ in range(n)]
        if shape.count(base, widths) != build_count({**base, "widths": widths}):
            return Shape(n, None)
    return shape


def _as_form(raw: Any) -> tuple[int, tuple[int, ...], tuple[tuple[int, ...], ...]]:
    c, b, a = raw
    return int(c), tuple(int(v) for v in b), tuple(tuple(int(v) for v in row) for row in a)


# ---------------------------------------------------------------- on disk
@lru_cache(maxsize=1)
def _disk_path() -> Path:
    from raydistill.data.cache import cache_root

    sources = sorted([*_HERE.glob("*.py"), *(_HERE / "teachers").glob("*.py")])
    digest = hashlib.sha256()
    for path in sources:
        digest.update(path.name.encode() + b"\0" + path.read_bytes())
    return cache_root() / "param-counts" / f"{digest.hexdigest()[:16]}.json"


def _read_disk() -> dict[str, Any]:
    try:
        return json.loads(_disk_path().read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}


def _write_disk(key: str, shape: Shape) -> None:
    """Add one shape to the file (concurrent writers may drop each other's entries: they are
    counted again, never wrong)."""
    from raydistill.core.manifest import atomic_write_text

    table = {**_read_disk(), key: {"slots": shape.slots, "form": shape.form}}
    with contextlib.suppress(OSError):  # a read-only cache root: the forms stay in memory
        atomic_write_text(_disk_path(), json.dumps(table, sort_keys=True))
