"""How a search hands out its trials: `uniform` (every cell its `--trials`, today's rule) or
`adaptive` (the same total, in rounds, moved away from cells that cannot reach the front), and
warm starts across budgets. Pure functions over the results so far; `CellSearcher` calls them.
No Ray.

Adaptive allocation. The total is `--trials` × cells (or a given total, ≥ one per cell). A cell's
trials go out in rounds of `round_size(trials, quota)`; its next round starts once its last one ended
and no cell still in contention is a round behind.
After each result every cell with a score gets an optimistic estimate,

    optimistic = best val/acc + Z_OPT · s,   s = max(its own std over its scored trials,
                                                   the median of those stds over the cells)

(`PRIOR_SPREAD` before any cell has two scored trials). A cell whose optimistic estimate is
below the best val/acc of another cell at the same or a smaller size (the Pareto front of
accuracy vs size: size is the cell's budget, in the study's budget kind) is *dominated* and gets
no more trials. The other cells share the rest of the total by water-filling: one trial at a
time to the open cell with the smallest quota (ties: the most promising first), so a cell that
has run nothing always gets its first trial before any cell gets another, and the quotas sum to
the total exactly. Every cell runs at least one trial. Scores follow the best-trial rule
(`raydistill.core.results`): a diverged, errored or ASHA-pruned trial counts as run, never as a
score.

Warm start. A cell waits until the cell of its family and depth at the next-smaller budget has
finished (all its trials ended, none more to come), then its study is seeded with that cell's
best configurations (the top `warm_count(trials)` by the best-trial rule) as its first trials:
the same `points_to_evaluate` route `--extend` uses, widths re-solved at the new budget by the
trainable. A smaller cell that ended with no eligible trial leaves the larger one cold, noted.
"""

from __future__ import annotations

import itertools
import math
import statistics
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import pandas as pd

from raydistill.core import results
from raydistill.core.errors import UserError
from raydistill.core.numbers import finite

ROUNDS = 3  # a cell's --trials go out in about this many rounds
Z_OPT = 2.0  # standard deviations above a cell's best: its optimistic reach
# A within-cell std of val/acc (fraction) assumed before any cell has two scored trials: a cell
# is then stopped only 10 points under the front (wide on purpose: a guess, not a measurement).
PRIOR_SPREAD = 0.05


@dataclass(frozen=True)
class CellView:
    """What the allocation knows of one cell: its size, its scores, its trial counts."""

    id: str
    size: float  # the cell's budget, in the study's budget kind
    scores: tuple[float, ...] = ()  # val/acc of its trials the best-trial rule admits
    given: int = 0  # trials handed out
    ended: int = 0  # of those, ended (any status)
    frozen: bool = False  # takes no more trials (its larger-budget successor has started)
    kind: str = "params"  # the budget's kind: sizes compare only within one kind

    @property
    def best(self) -> float:
        return max(self.scores) if self.scores else -math.inf


def round_size(trials: int, quota: int = 0) -> int:
    """Trials a cell gets per round: about `ROUNDS` rounds of its `--trials`, or of its quota
    once trials moved to it (a lone cell in contention still fills the workers)."""
    return max(1, math.ceil(max(int(trials), int(quota)) / ROUNDS))


def warm_count(trials: int) -> int:
    """How many of the smaller cell's best configurations seed a warm-started cell: its first
    round (the rest of its trials are the searcher's own)."""
    return round_size(trials)


def spreads(cells: Iterable[CellView]) -> dict[str, float]:
    """Each scored cell's s: its own sample std, floored at the median of all measured stds."""
    cells = [c for c in cells if c.scores]
    own = {c.id: statistics.stdev(c.scores) for c in cells if len(c.scores) >= 2}
    floor = statistics.median(own.values()) if own else PRIOR_SPREAD
    return {c.id: max(own.get(c.id, 0.0), floor) for c in cells}


def optimistic(cells: Iterable[CellView]) -> dict[str, float]:
    """Each cell's optimistic val/acc (best + Z_OPT · s, at most 1: no accuracy is higher);
    +inf for a cell with no score."""
    cells = list(cells)
    s = spreads(cells)
    return {c.id: min(1.0, c.best + Z_OPT * s[c.id]) if c.scores else math.inf for c in cells}


def front(cells: Iterable[CellView], cell: CellView) -> float:
    """The best val/acc among the other cells no larger than `cell` (−inf: none)."""
    return max(
        (c.best for c in cells if c.id != cell.id and c.kind == cell.kind and c.size <= cell.size),
        default=-math.inf,
    )


def dominated(cells: Sequence[CellView]) -> set[str]:
    """Cells whose optimistic estimate cannot reach the front at their size."""
    opt = optimistic(cells)
    return {c.id for c in cells if c.scores and opt[c.id] < front(cells, c)}


def quotas(cells: Sequence[CellView], total: int) -> dict[str, int]:
    """Adaptive: each cell's trial count now (see the module docstring); sums to `total`."""
    if total < len(cells):
        raise UserError(f"a total of {total} trials cannot give each of {len(cells)} cells one")
    stop = dominated(cells) | {c.id for c in cells if c.frozen}
    quota = {c.id: max(c.given, 1) if c.id in stop else c.given for c in cells}
    open_ = [c for c in cells if c.id not in stop]
    free = total - sum(quota.values())
    opt = optimistic(cells)
    if not open_:  # nothing left in contention: the rest to the best cells that can still run
        open_ = [c for c in cells if not c.frozen] or list(cells)
    order = {c.id: (-opt[c.id], c.size, c.id) for c in open_}  # most promising, smallest first
    for _ in range(max(free, 0)):
        pick = min(open_, key=lambda c: (quota[c.id], order[c.id]))
        quota[pick.id] += 1
    return quota


def ready(cell: CellView, quota: int, round_end: int, caught_up: bool = True) -> bool:
    """Whether `cell` may get a trial now: under its quota, and inside its current round (it
    has handed out fewer than `round_end` trials), or with that round ended and (`caught_up`)
    no cell still in contention a round behind it: no cell is judged before every cell has its
    first results."""
    if cell.given >= quota:
        return False
    if cell.given < round_end:
        return True
    return cell.given == cell.ended and caught_up


def finished(cell: CellView, quota: int) -> bool:
    """All its trials handed out and ended: a warm-started successor may start."""
    return cell.given >= quota and cell.ended >= cell.given


def predecessors(cells: Iterable[tuple[Any, ...]]) -> dict[str, str]:
    """cell id → the id of the cell of the same family, depth and budget kind at the next-smaller
    budget (`cells`: (id, family, depth, budget[, kind]); no kind: parameters)."""
    by_row: dict[tuple[str, int, str], list[tuple[float, str]]] = {}
    for cid, fam, depth, budget, *kind in cells:
        key = (fam, int(depth), kind[0] if kind else "params")
        by_row.setdefault(key, []).append((float(budget), cid))
    out = {}
    for row in by_row.values():
        row.sort()
        out.update({big: small for (_, small), (_, big) in itertools.pairwise(row)})
    return out


def record(
    trial_id: str, result: Mapping | None, error: bool
) -> dict[str, str | float | bool | None]:
    """One ended trial as a row the best-trial rule reads (`raydistill.core.results`)."""
    r = dict(result or {})
    status = "error" if error or not r else str(r.get("status", "error"))
    pruned = status == "running"  # ended while still running: stopped by ASHA
    return {
        "trial_id": trial_id,
        "status": "stopped" if pruned else status,
        "pruned": pruned,
        "val/acc": finite(r.get("best/val/acc")),
        "test/acc": finite(r.get("test/acc")),
    }


def scores(rows: Sequence[Mapping]) -> tuple[float, ...]:
    """The val/acc of the rows the best-trial rule admits, best first."""
    if not rows:
        return ()
    frame = pd.DataFrame(list(rows)).assign(cell="c")
    return tuple(float(v) for v in results.rank(frame)["val/acc"])


def best_trials(rows: Sequence[Mapping], k: int) -> list[str]:
    """The ids of the (up to) k best trials by the best-trial rule."""
    if not rows:
        return []
    frame = pd.DataFrame(list(rows)).assign(cell="c")
    return results.rank(frame)["trial_id"].head(k).tolist()
