"""Budgets and the width solver: parameter counts, MACs per image, latency per image.

A budget is a `Budget(kind, value)`, written as a string the CLI takes:

    "1M", "300k", "250000"      parameters (counted exactly on the meta device)
    "40M-macs"                  multiply-accumulates per image (meta device, `students.cost`)
    "2ms", "500us"              latency per image on this machine's CPU at batch 1 (measured)
    "2ms-cuda-b64"              latency per image on the GPU at batch 64 (measured there)

A family's *shape* is its depth and one width ratio r_i ∈ [0, 1] per width slot; a ratio sets
the slot's relative width shape_i·WIDTH_SPAN**r_i (shape_i: the family's own proportions, e.g.
ResNet's 1:2:4 stages; 1 for the paper's families), so r = 0 is 8× narrower than r = 1,
log-spaced like widths one would search by hand. The solver (`fit_widths`, also used by
pruning) finds the common scale s and integer widths w_i ≈ s·rel_i whose cost is ≤ the budget:
bisection on s, then — for exact costs (params, MACs) — a greedy pass adding single units while
they still fit. A measured latency is noisy: bisection only, on the median of repeated runs.

Importing this module imports neither torch nor the family registry (which imports torch):
budget strings are parsed and refused in a fraction of a second (the CLI's refusals); counting,
measuring and solving import them on first use.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from raydistill.core.errors import UserError
from raydistill.core.numbers import jsonable
from raydistill.students.counts import build_count, shape_of

WIDTH_SPAN = 8.0
KINDS = ("params", "macs", "latency")  # a latency kind names its target: "latency-cpu-b1"
DEFAULT_TARGET = "cpu-b1"  # this machine's CPU at batch 1
EXACT_STEPS, MEASURED_STEPS = 60, 14  # at most (exact costs stop at half a width unit)
_SUFFIX = {"": 1, "k": 10**3, "K": 10**3, "m": 10**6, "M": 10**6, "g": 10**9, "G": 10**9}
_NUM = r"([0-9]*\.?[0-9]+(?:[eE][+-]?[0-9]+)?)"
_COUNT_RE = re.compile(rf"^\s*{_NUM}\s*([kKmMgG]?)\s*(-macs)?\s*$")
_TIME_RE = re.compile(rf"^\s*{_NUM}\s*(ms|us|µs)(?:-(cpu|cuda)(?:-b([0-9]+))?)?\s*$")
_VALID = "a number like 300k or 1M (parameters), 40M-macs (MACs per image) or 2ms, 500us, 2ms-cuda-b64 (latency per image)"  # fmt: skip


@dataclass(frozen=True, order=True)
class Budget:
    """A budget: its kind and value (parameters, MACs per image, or µs per image)."""

    kind: str
    value: int

    @property
    def unit(self) -> str:
        """ "params", "macs" or "latency" (the kind without its target)."""
        return self.kind.split("-", 1)[0]

    @property
    def target(self) -> tuple[str, int]:
        """A latency budget's (device, batch): ("cpu", 1) for "latency-cpu-b1"."""
        device, batch = self.kind.split("-")[1:]
        return device, int(batch[1:])

    @property
    def label(self) -> str:
        """The string the CLI takes and cell ids carry: "1M", "40M-macs", "2ms", "2ms-cuda-b64"."""
        if self.unit == "params":
            return format_count(self.value)
        if self.unit == "macs":
            return f"{format_count(self.value)}-macs"
        target = self.kind.removeprefix("latency-")
        ms = f"{self.value / 1000:.3g}ms" if self.value >= 100 else f"{self.value}us"
        return ms if target == DEFAULT_TARGET else f"{ms}-{target}"

    def __str__(self) -> str:
        return self.label

    def cost(self, spec: Mapping[str, Any]) -> float:
        """The spec's cost in this budget's unit (exact counts; latency measured, in µs)."""
        if self.unit == "params":
            return count_params(spec)
        from raydistill.students import cost

        if self.unit == "macs":
            return cost.count_macs(spec)
        return cost.measure_latency(spec, *self.target)

    @property
    def exact(self) -> bool:
        """Whether the cost is counted (params, MACs) rather than measured (latency)."""
        return self.unit != "latency"


def parse_budget(value: str | int | float | Budget) -> Budget:
    """'300k' → 300000 parameters, '40M-macs' → 4e7 MACs, '2ms' → 2000 µs on the CPU at batch 1.

    A plain number is a parameter count (250000, 1e6). Refused in one line naming the value.
    """
    if isinstance(value, Budget):
        return value
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        out = Budget("params", int(value))
    else:
        text = str(value).strip()
        if text.startswith("-") and _is_budget(text[1:]):  # "-5k": a budget but for its sign
            raise UserError(f"budget {value!r} must be positive")
        out = _parse_text(text)
    if out.value <= 0:
        raise UserError(f"budget {value!r} must be positive")
    return out


def _is_budget(text: str) -> bool:
    try:
        _parse_text(text)
    except UserError:
        return False
    return True


def _parse_text(text: str) -> Budget:
    m = _COUNT_RE.match(text)
    if m:
        n = round(float(m.group(1)) * _SUFFIX[m.group(2)])
        return Budget("macs" if m.group(3) else "params", n)
    m = _TIME_RE.match(text)
    if m:
        us = round(float(m.group(1)) * (1000 if m.group(2) == "ms" else 1))
        target = f"{m.group(3) or 'cpu'}-b{int(m.group(4) or 1)}"
        if target.endswith("-b0"):
            raise UserError(f"budget {text!r}: the batch must be at least 1")
        return Budget(f"latency-{target}", us)
    raise UserError(f"budget {text!r} is not {_VALID}")


def parse_budgets(text: str) -> list[Budget]:
    """'1M,40M-macs' → [Budget('params', 1000000), Budget('macs', 40000000)]."""
    return [parse_budget(part) for part in str(text).split(",") if part.strip()]


def parse_param_count(value: str | int | float) -> int:
    """A budget that must be a parameter count (pruning): its value, or a one-line refusal."""
    budget = parse_budget(value)
    if budget.unit != "params":
        raise UserError(f"budget {value!r} must be a parameter count here, like 100k or 1M")
    return budget.value


def format_count(n: int) -> str:
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


def format_budget(budget: int | Budget, kind: str = "params") -> str:
    """A budget's label: 3160000 → '3.16M'; (40000000, 'macs') → '40M-macs'; 2000 µs → '2ms'."""
    if isinstance(budget, Budget):
        return budget.label
    return Budget(kind, int(budget)).label


def spec_key(spec: Mapping[str, Any]) -> str:
    """A spec as canonical JSON (sorted keys, tuples as lists): the key of the cost caches."""
    return json.dumps(jsonable(spec), sort_keys=True)


@dataclass(frozen=True)
class Solution:
    """A solved spec: integer widths whose cost (`used`, in the budget's unit) is ≤ the budget."""

    spec: dict[str, Any]
    params: int
    budget: Budget
    used: float  # parameters, MACs per image, or measured µs per image

    @property
    def widths(self) -> list[int]:
        return list(self.spec["widths"])

    @property
    def share(self) -> float:
        """used / budget (≤ 1 for counted budgets; a measured latency can land just above)."""
        return self.used / self.budget.value


def _rel_widths(family: str, depth: int, ratios: Sequence[float] | None, n: int) -> list[float]:
    """Each slot's relative width: the family's shape × WIDTH_SPAN**ratio (`n` slots)."""
    from raydistill.students import has_width_shape

    shape = [1.0] * n
    if has_width_shape(family):  # the registry (and torch) only for a family that has one
        from raydistill.students.registry import get_family

        shape = [float(v) for v in get_family(family).width_shape(depth)]
    if ratios is None:
        return shape
    ratios = [float(r) for r in ratios]
    if len(ratios) < n:
        raise UserError(f"family {family!r} depth {depth} needs {n} width ratios, got {ratios}")
    ratios = ratios[:n]
    bad = [r for r in ratios if not 0.0 <= r <= 1.0]
    if bad:
        raise UserError(f"width ratio {bad[0]} is outside [0, 1]")
    return [s * WIDTH_SPAN**r for s, r in zip(shape, ratios, strict=True)]


def min_cost(family: str, depth: int, budget: int | str | Budget = 1, **fixed: Any) -> float:
    """The cost, in `budget`'s unit, of the family's smallest model at this depth: every width 1."""
    base = jsonable({"family": family, "depth": depth, **fixed})
    return parse_budget(budget).cost({**base, "widths": [1] * shape_of(base).slots})


def min_params(family: str, depth: int, **fixed: Any) -> int:
    """The family's smallest model at this depth (every width 1): its parameter count."""
    return int(min_cost(family, depth, 1, **fixed))


def solve_budget(
    family: str,
    depth: int,
    budget: int | str | Budget,
    ratios: Sequence[float] | None = None,
    **fixed: Any,
) -> Solution:
    """Integer widths for (family, depth, ratios) whose cost is ≤ budget, as close as integers
    allow (a latency: as close as its measurement allows).

    `fixed` holds the other spec keys (dropout, in_shape, num_classes). Raises UserError naming
    the family's minimum when even width 1 everywhere does not fit.
    """
    budget = parse_budget(budget)
    base = jsonable({"family": family, "depth": depth, **fixed})
    rel = _rel_widths(family, depth, ratios, shape_of(base).slots)

    def cost(widths: Sequence[int]) -> float:
        return budget.cost({**base, "widths": list(widths)})

    minimum = cost([1] * len(rel))
    if minimum > budget.value:
        unit = "µs per image" if budget.unit == "latency" else budget.unit
        raise UserError(
            f"budget {budget.label} ({budget.value} {unit}) is below the minimum of "
            f"family {family!r} at depth {depth}: {minimum:.6g} {unit}"
        )
    widths = fit_widths(rel, cost, budget.value, exact=budget.exact)
    spec = {**base, "widths": widths}
    return Solution(spec, count_params(spec), budget, cost(widths))


def fit_widths(
    rel: Sequence[float],
    cost: Callable[[Sequence[int]], float],
    limit: float,
    *,
    cap: Sequence[int] | None = None,
    exact: bool = True,
) -> list[int]:
    """Integer widths w_i ≈ s·rel_i (≥ 1, ≤ cap_i when given) with cost ≤ limit, s as large as fits.

    The one width fill of the budget solver and of pruning (`export.prune`, with `cap` = the
    trained widths). Bisection on s; with `exact` costs, single units are then added while any
    fits, always to the slot furthest below its share (w_i / rel_i as equal as integers allow).
    A measured cost (latency) is noisy: it is bisected on with fewer steps and not filled.
    """

    def at(s: float) -> list[int]:
        ws = [max(1, math.floor(s * r)) for r in rel]
        return ws if cap is None else [min(w, int(c)) for w, c in zip(ws, cap, strict=True)]

    lo, hi = 0.0, 1.0
    while cap is None and cost(at(hi)) <= limit:
        lo, hi = hi, hi * 2
    # Exact costs: bisect until s is within half a unit of every slot's width (the fill adds
    # the last units); a measured cost: a fixed number of steps.
    unit = 0.5 / max(rel)
    for _ in range(EXACT_STEPS if exact else MEASURED_STEPS):
        if exact and hi - lo < unit:
            break
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if cost(at(mid)) <= limit else (lo, mid)
    widths = at(lo)
    while exact:
        for i in sorted(range(len(widths)), key=lambda j: (widths[j] / rel[j], j)):
            trial = [*widths[:i], widths[i] + 1, *widths[i + 1 :]]
            if (cap is None or trial[i] <= cap[i]) and cost(trial) <= limit:
                widths = trial
                break
        else:
            return widths
    return widths
