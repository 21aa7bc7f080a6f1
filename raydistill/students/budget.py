"""Exact parameter budgets: counting (on the meta device), budget strings, the width solver.

A family's *shape* is its depth and one width ratio r_i ∈ [0, 1] per width slot; a ratio sets
the slot's relative width WIDTH_SPAN**r_i (so r = 0 is 8× narrower than r = 1, log-spaced like
the widths one would search by hand). The solver finds the common scale s and the integer
widths w_i ≈ s·WIDTH_SPAN**r_i with params ≤ budget and as close to it as integers allow:
bisection on s, then a greedy pass that adds single units while they still fit.

Importing this module imports neither torch nor the family registry (which imports torch):
budget strings are parsed and refused in a fraction of a second (the CLI's refusals); counting
and solving import them on first use.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from raydistill.core.errors import UserError
from raydistill.core.numbers import jsonable
from raydistill.students.counts import build_count, shape_of

WIDTH_SPAN = 8.0
_SUFFIX = {"": 1, "k": 10**3, "K": 10**3, "m": 10**6, "M": 10**6, "g": 10**9, "G": 10**9}
_BUDGET_RE = re.compile(r"^\s*([0-9]*\.?[0-9]+(?:[eE][+-]?[0-9]+)?)\s*([kKmMgG]?)\s*$")


def parse_budget(value: str | int | float) -> int:
    """'300k' → 300000, '3.16M' → 3160000, '31.6M', '1e6', 250000 → an int parameter count."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        n = int(value)
    else:
        m = _BUDGET_RE.match(str(value))
        if not m:
            raise UserError(f"budget {value!r} is not a number like 300k, 1M, 3.16M or 250000")
        n = round(float(m.group(1)) * _SUFFIX[m.group(2)])
    if n <= 0:
        raise UserError(f"budget {value!r} must be positive")
    return n


def parse_budgets(text: str) -> list[int]:
    """'1M,3.16M' → [1000000, 3160000]."""
    return [parse_budget(part) for part in str(text).split(",") if part.strip()]


def format_budget(n: int) -> str:
    """3160000 → '3.16M', 300000 → '300k' (3 significant digits, the paper's style)."""
    for div, suffix in ((10**9, "G"), (10**6, "M"), (10**3, "k")):
        if n >= div:
            return f"{n / div:.3g}{suffix}"
    return str(n)


def count_params(spec: Mapping[str, Any]) -> int:
    """Exact number of parameters of the module a spec builds: through its shape's quadratic
    form in the widths (`raydistill.students.counts`; fitted from meta-device counts), or by
    building it on the meta device when the spec has no widths or they do not fit its shape."""
    spec = jsonable(spec)
    widths = spec.get("widths")
    if "family" not in spec or not isinstance(widths, list) or min(widths, default=0) < 1:
        return build_count(spec)
    base = {k: v for k, v in spec.items() if k != "widths"}
    shape = shape_of(base)
    return shape.count(base, widths) if len(widths) == shape.slots else build_count(spec)


@dataclass(frozen=True)
class Solution:
    """A solved spec: integer widths whose parameter count is ≤ the budget."""

    spec: dict[str, Any]
    params: int
    budget: int

    @property
    def widths(self) -> list[int]:
        return list(self.spec["widths"])

    @property
    def share(self) -> float:
        """params / budget (≤ 1)."""
        return self.params / self.budget


def _ratios(family: str, depth: int, n: int, ratios: Sequence[float] | None) -> list[float]:
    """One ratio per width slot (`n` of them): all 1 by default; a longer list is cut (a
    search space may carry ratios for its deepest member)."""
    if ratios is None:
        return [1.0] * n
    ratios = [float(r) for r in ratios]
    if len(ratios) < n:
        raise UserError(f"family {family!r} depth {depth} needs {n} width ratios, got {ratios}")
    ratios = ratios[:n]
    bad = [r for r in ratios if not 0.0 <= r <= 1.0]
    if bad:
        raise UserError(f"width ratio {bad[0]} is outside [0, 1]")
    return ratios


def min_params(family: str, depth: int, **fixed: Any) -> int:
    """The family's smallest model at this depth: every width 1."""
    base = jsonable({"family": family, "depth": depth, **fixed})
    return count_params({**base, "widths": [1] * shape_of(base).slots})


def solve_budget(
    family: str,
    depth: int,
    budget: int | str,
    ratios: Sequence[float] | None = None,
    **fixed: Any,
) -> Solution:
    """Integer widths for (family, depth, ratios) with params ≤ budget, as close as integers allow.

    `fixed` holds the other spec keys (dropout, in_shape, num_classes). Raises UserError naming
    the family's minimum when even width 1 everywhere does not fit.
    """
    budget = parse_budget(budget)
    base = jsonable({"family": family, "depth": depth, **fixed})
    rel = [WIDTH_SPAN**r for r in _ratios(family, depth, shape_of(base).slots, ratios)]

    def count(widths: Sequence[int]) -> int:
        return count_params({**base, "widths": list(widths)})

    def at_scale(s: float) -> list[int]:
        return [max(1, math.floor(s * r)) for r in rel]

    minimum = count([1] * len(rel))
    if minimum > budget:
        raise UserError(
            f"budget {format_budget(budget)} ({budget}) is below the minimum of family "
            f"{family!r} at depth {depth}: {minimum} params"
        )
    lo, hi = 0.0, 1.0
    while count(at_scale(hi)) <= budget:
        lo, hi = hi, hi * 2
    for _ in range(40):  # the scale to ~1e-12 relative: far finer than one width unit
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if count(at_scale(mid)) <= budget else (lo, mid)
    widths = at_scale(lo)
    widths = _fill(widths, rel, count, budget)
    return Solution({**base, "widths": widths}, count(widths), budget)


def _fill(widths: list[int], rel: Sequence[float], count, budget: int) -> list[int]:
    """Add single units while any fits, always to the slot furthest below its ratio's share.

    Keeps the shape the ratios ask for (w_i / rel_i as equal as integers allow) and stops only
    when no slot can grow by one unit without passing the budget.
    """
    while True:
        order = sorted(range(len(widths)), key=lambda i: (widths[i] / rel[i], i))
        for i in order:
            trial = widths.copy()
            trial[i] += 1
            if count(trial) <= budget:
                widths = trial
                break
        else:
            return widths
