"""Which trial an export selector names: `cnn-d2@1M` (the best trial of that cell by validation
accuracy), `cnn@1M` (the best over every depth of the family at that budget), `:hard` for the
hard-label twins; and the directory name an exported trial gets (`export_name`)."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from raydistill.core.errors import UserError

if TYPE_CHECKING:
    import pandas as pd

    from raydistill.students.budget import Budget

_CELL_RE = re.compile(r"^(?P<family>[A-Za-z0-9_]+?)(?:-d(?P<depth>\d+))?$")


def parse_selector(selector: str) -> tuple[str, int | None, Budget, bool]:
    """'cnn-d2@1M' → ('cnn', 2, Budget('params', 1000000), False); 'cnn@40M-macs:hard' →
    ('cnn', None, Budget('macs', 40000000), True)."""
    from raydistill.students.budget import parse_budget

    text = selector.strip()
    hard = text.endswith(":hard")
    text = text.removesuffix(":hard")
    left, at, budget = text.partition("@")
    m = _CELL_RE.match(left)
    if not at or not m:
        raise UserError(
            f"cell {selector!r} is invalid; use FAMILY-dDEPTH@BUDGET (cnn-d2@1M) or FAMILY@BUDGET (cnn@1M), optionally with :hard"
        )
    depth = int(m["depth"]) if m["depth"] else None
    return m["family"], depth, parse_budget(budget), hard


def select_trial(df: pd.DataFrame, selector: str) -> pd.Series:
    """The best trial (`raydistill.core.results`' rule) that `selector` names."""
    from raydistill.core.results import eligible

    family, depth, budget, hard = parse_selector(selector)
    kinds = df["budget_kind"].fillna("params") if "budget_kind" in df else "params"
    ok = eligible(df) & (df["family"] == family) & (df["budget"] == budget.value)
    ok &= kinds == budget.kind
    if depth is not None:
        ok &= df["depth"] == depth
    ok &= df["twin"] if hard else ~df["twin"]
    cand = df[ok]
    if cand.empty:
        have = sorted(set(df.loc[eligible(df), "cell"]))
        raise UserError(
            f"no finished trial matches {selector!r}; cells with finished trials: {have}"
        )
    return cand.sort_values(["val/acc", "trial_id"], ascending=[False, True]).iloc[0]


def export_name(row: Mapping[str, Any]) -> str:
    """Directory name of an exported trial: its cell id, '-hard' for a hard-label twin."""
    return str(row["cell"]) + ("-hard" if row.get("twin") else "")
