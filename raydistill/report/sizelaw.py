"""The accuracy-vs-size law of each row of Table 2 (family and depth, hard-label twins apart):
fitting it, its uncertainty, the leave-largest-out check, and predictions at unrun budgets.

The law (error = 1 − accuracy, size = the study's budget in its own kind: parameters, MACs, ...):

    saturating   error = a · (size / s0)^(−b) + c      (3 parameters; with ≥ 3 budgets)
    power        error = a · (size / s0)^(−b)          (2 parameters; with 2 budgets)

s0 is the row's smallest size (a conditions the fit; b is unit-free). Each point is a mean
accuracy with its standard error: a study's seed repeats (mean, std / √n), a search's top-k
trials (`cell_stats`); the fit weights by those errors and its parameter covariance is taken
as absolute (`curve_fit(..., absolute_sigma=True)`), so it exists even when the law has as many
parameters as there are budgets. A prediction at a new size carries the fit's uncertainty (delta
method: J Σ Jᵀ) plus the noise of one measured point there (the median of the row's squared
errors): `PI_Z` standard deviations either side, an approximate 95 % prediction interval.

The leave-largest-out check predicts each row's largest budget from its other budgets only: with
≥ 2 others its own fit; with 1 other a power law through that point with the median exponent of
the same family's other rows (fitted on their own budgets; the row's largest is never used).
No torch, no Ray; scipy only.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from raydistill.core.numbers import pct

PI_Z = 1.96  # ± standard deviations of a prediction interval (≈ 95 %)
MIN_SE = 0.002  # an error bar below 0.2 points (a cell with one seed, or equal seeds) is unknown
COLUMNS = ("row", "family", "depth", "twin", "budget", "mean", "sd", "se")


@dataclass(frozen=True)
class SizeLaw:
    """One row's fitted law: error(size) = a · (size / s0)^(−b) + c, with the covariance of
    (a, b[, c])."""

    row: str
    kind: str  # "saturating" | "power"
    a: float
    b: float
    c: float
    s0: float
    cov: np.ndarray
    noise: float  # one measured point's standard error (the row's median), for predictions
    sizes: tuple[float, ...]  # the budgets it was fitted on

    def error(self, size: float | np.ndarray) -> np.ndarray:
        return self.a * (np.asarray(size, float) / self.s0) ** (-self.b) + self.c

    def predict(self, size: float) -> tuple[float, float, float]:
        """(accuracy, low, high) at `size`: the approximate 95 % prediction interval."""
        x = float(size) / self.s0
        grad = [x ** (-self.b), -self.a * x ** (-self.b) * math.log(x), 1.0][: len(self.cov)]
        var = float(np.asarray(grad) @ self.cov @ np.asarray(grad)) + self.noise**2
        acc = 1.0 - float(self.error(size))
        half = PI_Z * math.sqrt(max(var, 0.0))
        return acc, max(acc - half, 0.0), min(acc + half, 1.0)


def points(table: pd.DataFrame) -> pd.DataFrame:
    """The law's input from a study's seed repeats (`row, family, depth, twin, budget, n, mean,
    std`) or a report's `cell_stats` (`mean_test_acc`, `sd_test_acc`, `top_k`): one row per
    (row, budget) with `mean` accuracy and its standard error `se`."""
    if table is None or table.empty:
        return pd.DataFrame(columns=list(COLUMNS))
    if "mean_test_acc" in table:
        t = table[table["top_k"] > 0]
        mean, sd, n = t["mean_test_acc"], t["sd_test_acc"], t["top_k"]
    else:
        t = table.dropna(subset=["mean"])
        mean, sd, n = t["mean"], t["std"], t["n"]
    se = (sd.fillna(0.0).astype(float) / np.sqrt(n.astype(float).clip(lower=1))).clip(lower=MIN_SE)
    out = t[["row", "family", "depth", "twin", "budget"]].copy()
    out["mean"], out["sd"], out["se"] = mean.astype(float).to_numpy(), sd.to_numpy(), se.to_numpy()
    return out.sort_values(["row", "budget"]).reset_index(drop=True)


def fit(
    row: str, sizes: Sequence[float], accs: Sequence[float], ses: Sequence[float]
) -> SizeLaw | None:
    """The row's law on ≥ 2 sizes (saturating with ≥ 3, power with 2); None with fewer."""
    x, err, se = (np.asarray(v, float) for v in (sizes, [1 - a for a in accs], ses))
    if len(x) < 2 or len(set(x.tolist())) < 2:
        return None
    s0, noise = float(x.min()), float(np.median(se))
    if len(x) >= 3:
        law = _saturating(row, x, err, se, s0, noise)
        if law is not None:
            return law
    return _power(row, x, err, se, s0, noise)


def _saturating(
    row: str, x: np.ndarray, err: np.ndarray, se: np.ndarray, s0: float, noise: float
) -> SizeLaw | None:
    from scipy.optimize import curve_fit

    def f(s: np.ndarray, a: float, b: float, c: float) -> np.ndarray:
        return a * (s / s0) ** (-b) + c

    c0 = max(float(err.min()) * 0.8, 0.0)
    p0 = [max(float(err.max()) - c0, 1e-3), 0.5, c0]
    try:
        p, cov = curve_fit(
            f,
            x,
            err,
            p0=p0,
            sigma=se,
            absolute_sigma=True,
            bounds=([0.0, 0.0, 0.0], [10.0, 5.0, 1.0]),
            maxfev=20000,
        )
    except (RuntimeError, ValueError):
        return None  # no saturating law fits (e.g. error rising with size): the power law
    if not np.all(np.isfinite(cov)):
        return None
    return SizeLaw(row, "saturating", *map(float, p), s0, cov, noise, tuple(x.tolist()))


def _power(
    row: str, x: np.ndarray, err: np.ndarray, se: np.ndarray, s0: float, noise: float
) -> SizeLaw:
    """log error = log a − b · log(size / s0), weighted least squares (σ_log = se / error);
    the covariance of (a, b) by the delta method from that of (log a, b)."""
    e = np.clip(err, 1e-6, None)
    sig = se / e
    design = np.stack([np.ones_like(x), -np.log(x / s0)], axis=1) / sig[:, None]
    cov_log = np.linalg.pinv(design.T @ design)
    la, b = cov_log @ design.T @ (np.log(e) / sig)
    a = math.exp(la)
    jac = np.array([[a, 0.0], [0.0, 1.0]])  # d(a, b) / d(log a, b)
    return SizeLaw(
        row, "power", a, float(b), 0.0, s0, jac @ cov_log @ jac.T, noise, tuple(x.tolist())
    )


def fit_all(pts: pd.DataFrame) -> dict[str, SizeLaw]:
    """row → its law, for every row with ≥ 2 budgets."""
    laws = {}
    for row, g in pts.groupby("row", sort=True):
        law = fit(str(row), g["budget"].tolist(), g["mean"].tolist(), g["se"].tolist())
        if law is not None:
            laws[str(row)] = law
    return laws


def next_budget(budgets: Sequence[float]) -> float | None:
    """The study's next budget: the largest times the last step (10k, 30k → 90k)."""
    b = sorted(set(float(v) for v in budgets))
    return b[-1] * b[-1] / b[-2] if len(b) >= 2 else None


@dataclass(frozen=True)
class LeftOut:
    """A row's largest budget predicted from its other budgets only, against the measurement."""

    row: str
    budget: float
    measured: float
    predicted: float
    low: float
    high: float
    sd: float  # the measured point's std over its seeds (or top-k trials)
    how: str  # "own fit on N budgets" | "family exponent (rows ...)"

    @property
    def error_points(self) -> float:
        return 100.0 * (self.predicted - self.measured)


def leave_largest_out(pts: pd.DataFrame) -> list[LeftOut]:
    """Each row with ≥ 2 budgets: its largest predicted without it (see the module docstring)."""
    out = []
    for row, g in pts.groupby("row", sort=True):
        g = g.sort_values("budget")
        if len(g) < 2:
            continue
        last, rest = g.iloc[-1], g.iloc[:-1]
        law, how = (
            fit(str(row), rest["budget"].tolist(), rest["mean"].tolist(), rest["se"].tolist()),
            f"own fit on {len(rest)} budgets",
        )
        if law is None:
            law, how = _family_exponent_law(pts, rest.iloc[0])
        if law is None:
            continue
        acc, lo, hi = law.predict(float(last["budget"]))
        out.append(
            LeftOut(
                str(row),
                float(last["budget"]),
                float(last["mean"]),
                acc,
                lo,
                hi,
                float(last["sd"]),
                how,
            )
        )
    return out


def _family_exponent_law(pts: pd.DataFrame, only: pd.Series) -> tuple[SizeLaw | None, str]:
    """A power law through the row's one remaining point with the median exponent of the same
    family's other rows (same twin flag), each fitted on all its budgets."""
    fam, twin = only["family"], bool(only["twin"])
    others = pts[
        (pts["family"] == fam) & (pts["twin"].astype(bool) == twin) & (pts["row"] != only["row"])
    ]
    fitted = fit_all(others)
    if not fitted:
        return None, ""
    b = float(np.median([f.b for f in fitted.values()]))
    var_b = float(np.median([f.cov[1, 1] for f in fitted.values()]))
    err, se = 1.0 - float(only["mean"]), float(only["se"])
    cov = np.diag([se**2, var_b])  # a is the point's error (s0 = its size), b borrowed
    law = SizeLaw(
        str(only["row"]),
        "power",
        err,
        b,
        0.0,
        float(only["budget"]),
        cov,
        se,
        (float(only["budget"]),),
    )
    return law, f"family exponent b={b:.2f} ({', '.join(sorted(fitted))})"


# ---------------------------------------------------------------- Markdown
def law_markdown(
    pts: pd.DataFrame, *, kind: str = "params", paper: dict | None = None, source: str = "seeds"
) -> str:
    """The size-law section of a report: each row's law and its prediction at the next budget,
    the leave-largest-out check, and (`paper`: `report.paper.load_paper_table()`, given only
    where the task is the paper's) where the published numbers fall against the laws."""
    from raydistill.students.budget import format_budget

    laws = fit_all(pts)
    lines = [
        "## Accuracy vs size: a law per row",
        "",
        f"Error = a·(size/s0)^−b + c (saturating, ≥ 3 budgets) or a·(size/s0)^−b (power, 2 "
        f"budgets), size in {kind}, fitted to each row's mean accuracy ({source}) weighted by "
        f"its standard error; intervals are ≈95 % prediction intervals "
        "(`raydistill.report.sizelaw`).",
        "",
    ]
    nxt = next_budget(pts["budget"].tolist()) if len(pts) else None
    if not laws or nxt is None:
        return "\n".join([*lines, "No row has two budgets: no law to fit.", ""])
    label = format_budget(round(nxt))
    lines += [
        f"| model | law | b | c (%) | predicted at {label} (%) | interval (%) |",
        "|---|---|---|---|---|---|",
    ]
    for row, law in laws.items():
        acc, lo, hi = law.predict(nxt)
        lines.append(
            f"| {row} | {law.kind} | {law.b:.2f} | {pct(law.c)} | {pct(acc)} | "
            f"{pct(lo)}–{pct(hi)} |"
        )
    lines += [
        "",
        "### Leave-largest-out: each row's largest budget predicted from its others",
        "",
        "| model | budget | measured (%) | predicted (%) | interval (%) | error (points) "
        "| std (points) | from |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for lo_ in leave_largest_out(pts):
        lines.append(
            f"| {lo_.row} | {format_budget(int(lo_.budget))} | {pct(lo_.measured)} | "
            f"{pct(lo_.predicted)} | {pct(lo_.low)}–{pct(lo_.high)} | "
            f"{lo_.error_points:+.2f} | {100 * lo_.sd:.2f} | {lo_.how} |"
        )
    if paper is not None and kind == "params":
        lines += ["", *paper_lines(laws, paper)]
    return "\n".join(lines) + "\n"


def paper_lines(laws: dict[str, SizeLaw], paper: dict) -> list[str]:
    """Where each published number (Urban et al., CIFAR-10) falls against our law extrapolated
    to its budget: inside, above or below the prediction interval."""
    from raydistill.students.budget import parse_budget

    lines = [
        "### The paper's numbers against the laws (CIFAR-10, parameters)",
        "",
        "| model | budget | paper (%) | our law (%) | interval (%) | the paper is |",
        "|---|---|---|---|---|---|",
    ]
    for row, law in laws.items():
        for budget, value in (paper["rows"].get(row) or {}).items():
            acc, lo, hi = law.predict(float(parse_budget(budget).value))
            pub = float(value) / 100.0
            where = "inside" if lo <= pub <= hi else "above" if pub > hi else "below"
            lines.append(
                f"| {row} | {budget} | {float(value):.2f} | {pct(acc)} | "
                f"{pct(lo)}–{pct(hi)} | {where} |"
            )
    return lines if len(lines) > 4 else [*lines[:2], "No row of the paper's table was fitted."]
