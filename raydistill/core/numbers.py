"""Numbers as results tables, manifests and reports hold them: one rule each for what counts as
a number, for NaN / ±inf as missing (None), for strict JSON, and for a fraction shown as a
percentage. Plain Python (no numpy, no torch: a 0-d array or tensor is read through `.item()`).
"""

from __future__ import annotations

import math
from typing import Any

MISSING = "–"  # how a table shows a missing number


def scalar(v: Any) -> int | float | None:
    """`v` as a plain int / float when it is a number (or a 0-d numpy / torch scalar), else
    None; a bool is not a number here."""
    if hasattr(v, "item") and getattr(v, "ndim", 1) == 0:
        v = v.item()
    if isinstance(v, (int, float)) and not isinstance(v, bool):
        return v
    return None


def finite(v: Any) -> float | None:
    """`v` as a float when it converts to a finite one; None for None, NaN, ±inf and
    anything that is not a number."""
    try:
        f = float(v)
    except (TypeError, ValueError):
        return None
    return f if math.isfinite(f) else None


def optional_int(v: Any) -> int | None:
    """`v` as an int; None for None and NaN (a missing value in a pandas column)."""
    return None if v is None or (isinstance(v, float) and math.isnan(v)) else int(v)


def jsonable(value: Any) -> Any:
    """`value` as strict JSON holds it: NaN / ±inf → None, tuples → lists, keys → str."""
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def pct(fraction: float | None, suffix: str = "") -> str:
    """A fraction as a percentage with two decimals ("91.62" + suffix); `MISSING` for None /
    NaN."""
    if fraction is None or (isinstance(fraction, float) and math.isnan(fraction)):
        return MISSING
    return f"{100 * fraction:.2f}{suffix}"
