"""The paper's three findings, judged against the noise measured over seeds (no Ray, no torch).

Input: one row per (row label, budget) with the seed repeats of that cell's best configuration:
`row` ("cnn-d2", or "cnn-d2 (hard)" for a hard-label twin), `family`, `depth`, `budget`,
`twin`, `n` (seeds), `mean`, `std` (sample std over the seeds; accuracies in [0, 1]).

The rule (stated in every report, `RULE`): a comparison "A > B" is *clear* when
mean_A − mean_B > Z · SE with SE = √(s_A²/n_A + s_B²/n_B), and *reversed* when
mean_B − mean_A > Z · SE. Each cell's s is its own std over seeds, but never below the median
std of all cells: with 2–3 seeds one cell's std can come out near 0 by chance. (The median, not
the root-mean-square: one unstable cell — a bimodal cnn-d2 with std 11 points in the tiny
study — would otherwise set every comparison's noise; its own comparisons keep its own std.)
A finding **holds** when every comparison it makes is clear, **does not hold** when any
comparison is reversed, and is **inconclusive** otherwise (some margin within the noise); it is
**not testable** when a row it needs is missing.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

import pandas as pd

from raydistill.students.budget import format_budget

Z = 2.0
HARD = "hard"  # the hard-label twins' row suffix: "cnn-d2 (hard)"
Verdict = Literal["holds", "does not hold", "inconclusive", "not testable"]
RULE = (
    f"A comparison A > B is clear when mean(A) − mean(B) > {Z:g} × SE, SE = √(s_A²/n_A + "
    "s_B²/n_B), with s each cell's std over its seeds floored at the median std of all cells; "
    "reversed when mean(B) − mean(A) > that; otherwise within the noise. A finding holds when "
    "every comparison is clear, does not hold when any is reversed, and is inconclusive otherwise."
)


@dataclass(frozen=True)
class Estimate:
    """A mean accuracy over n seeds with its (floored) std."""

    mean: float
    std: float
    n: int

    @property
    def se2(self) -> float:
        """Squared standard error of the mean."""
        return self.std**2 / max(self.n, 1)


@dataclass
class Finding:
    """One claim, its verdict and one line per comparison (margins and noise in points)."""

    claim: str
    verdict: Verdict
    details: list[str] = field(default_factory=list)


def compare(a: Estimate, b: Estimate, se2: float | None = None) -> tuple[str, float, float]:
    """("clear" | "reversed" | "within noise", margin a − b, Z·SE) for the claim a > b."""
    margin = a.mean - b.mean
    noise = Z * math.sqrt(a.se2 + b.se2 if se2 is None else se2)
    state = "clear" if margin > noise else "reversed" if -margin > noise else "within noise"
    return state, margin, noise


def _line(label: str, state: str, margin: float, noise: float) -> str:
    return f"{label}: margin {100 * margin:+.2f} points vs noise {100 * noise:.2f} ({state})"


def _verdict(states: Iterable[str]) -> Verdict:
    states = list(states)
    if not states:
        return "not testable"
    if "reversed" in states:
        return "does not hold"
    return "holds" if all(s == "clear" for s in states) else "inconclusive"


def estimates(cells: pd.DataFrame) -> dict[tuple[str, int], Estimate]:
    """(row, budget) → Estimate, each std floored at the median std of all cells."""
    ok = cells.dropna(subset=["mean"])
    stds = sorted(float(s) for s in ok["std"] if pd.notna(s))
    floor = float(pd.Series(stds).median()) if stds else 0.0
    return {
        (str(r.row), int(r.budget)): Estimate(
            float(r.mean), max(float(r.std) if pd.notna(r.std) else 0.0, floor), int(r.n)
        )
        for r in ok.itertuples(index=False)
    }


def mlp_below_cnn(est: Mapping[tuple[str, int], Estimate], budgets: Iterable[int]) -> Finding:
    """Finding 1: at every budget the best MLP is below the worst CNN (distilled rows: the
    hard-label twins are the baselines of finding 3, not students of this comparison)."""
    states, details = [], []
    main = {k: e for k, e in est.items() if not k[0].endswith(f"({HARD})")}
    for b in budgets:
        mlp = {r: e for (r, bb), e in main.items() if bb == b and r.startswith("mlp-d")}
        cnn = {r: e for (r, bb), e in main.items() if bb == b and r.startswith("cnn-d")}
        if not mlp or not cnn:
            continue
        best_mlp = max(mlp, key=lambda r: mlp[r].mean)
        worst_cnn = min(cnn, key=lambda r: cnn[r].mean)
        state, margin, noise = compare(cnn[worst_cnn], mlp[best_mlp])
        states.append(state)
        details.append(
            _line(
                f"{format_budget(b)}: worst CNN {worst_cnn} {100 * cnn[worst_cnn].mean:.2f} − best MLP {best_mlp} {100 * mlp[best_mlp].mean:.2f}",
                state,
                margin,
                noise,
            )
        )
    return Finding(
        "every MLP student below every CNN student at equal budget", _verdict(states), details
    )


def cnn_rises_with_depth(
    est: Mapping[tuple[str, int], Estimate],
    budgets: Iterable[int],
    depths: tuple[int, ...] = (1, 2, 3),
) -> Finding:
    """Finding 2: CNN accuracy rises from each depth to the next (1 < 2 < 3) at every budget."""
    states, details = [], []
    for b in budgets:
        rows = [est.get((f"cnn-d{d}", b)) for d in depths]
        if any(r is None for r in rows):
            continue
        for d, lo, hi in zip(depths, rows, rows[1:], strict=False):
            state, margin, noise = compare(hi, lo)
            states.append(state)
            details.append(
                _line(
                    f"{format_budget(b)}: cnn-d{d + 1} {100 * hi.mean:.2f} − cnn-d{d} {100 * lo.mean:.2f}",
                    state,
                    margin,
                    noise,
                )
            )
    claim = "CNN accuracy rises with conv depth " + " < ".join(map(str, depths))
    return Finding(claim, _verdict(states), details)


def distillation_gains(
    est: Mapping[tuple[str, int], Estimate],
) -> dict[int, dict[int, tuple[float, float]]]:
    """budget → depth → (gain distilled − hard, SE² of the gain) for every CNN twin."""
    gains: dict[int, dict[int, tuple[float, float]]] = {}
    for (row, b), hard in est.items():
        if row.startswith("cnn-d") and row.endswith(f"({HARD})"):
            depth = int(row.split("-d")[1].split(" ")[0])
            dist = est.get((f"cnn-d{depth}", b))
            if dist is not None:
                gains.setdefault(b, {})[depth] = (dist.mean - hard.mean, dist.se2 + hard.se2)
    return gains


def distillation_helps_shallow_most(est: Mapping[tuple[str, int], Estimate]) -> Finding:
    """Finding 3: distillation beats hard labels, and by most for the shallowest CNN, at every
    budget with hard-label twins of at least two depths (the paper: 10M only)."""
    states: list[str] = []
    details: list[str] = []
    for b, by_depth in sorted(distillation_gains(est).items()):
        if len(by_depth) < 2:
            continue
        shallow = min(by_depth)
        g1, v1 = by_depth[shallow]
        state, margin, noise = compare(Estimate(g1, 0.0, 1), Estimate(0.0, 0.0, 1), se2=v1)
        states.append(state)
        where = format_budget(b)
        details.append(_line(f"{where}: cnn-d{shallow} distilled − hard", state, margin, noise))
        for d, (g, v) in sorted(by_depth.items()):
            if d == shallow:
                continue
            state, margin, noise = compare(Estimate(g1, 0.0, 1), Estimate(g, 0.0, 1), se2=v1 + v)
            states.append(state)
            details.append(
                _line(
                    f"{where}: gain at d{shallow} ({100 * g1:+.2f}) − gain at d{d} ({100 * g:+.2f})",
                    state,
                    margin,
                    noise,
                )
            )
    return Finding(_CLAIM3, _verdict(states), details)


_CLAIM3 = "distillation beats hard labels, and by most for the shallowest CNN"


def judge(cells: pd.DataFrame) -> list[Finding]:
    """The three findings on a table of seed repeats (see the module docstring)."""
    est = estimates(cells)
    budgets = sorted({b for _, b in est})
    return [
        mlp_below_cnn(est, budgets),
        cnn_rises_with_depth(est, budgets),
        distillation_helps_shallow_most(est),
    ]


def as_dicts(found: Iterable[Finding]) -> list[dict[str, Any]]:
    """JSON-able findings (for the study's findings.json)."""
    return [{"claim": f.claim, "verdict": f.verdict, "details": f.details} for f in found]
