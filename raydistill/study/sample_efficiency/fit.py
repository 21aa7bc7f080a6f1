"""The sample-efficiency study's numbers: curves, the n to reach a target, the fitted exponent,
and the findings judged against the noise measured over seeds. Pure numpy / pandas (no Ray).

Inputs are a results table with one row per trained student: `family`, `d` (input dimension),
`n` (training-set size), `seed`, `test_acc`. A seed is the unit of noise: it draws the training
set, the test set and the initialisation, so every bootstrap below resamples whole seeds.

- `curves`: mean ± std (over seeds) of test accuracy per (family, d, n).
- `n_to_target`: the smallest n whose accuracy reaches `target`, interpolated linearly in log n
  between the grid points that straddle it; censored "below" (reached at the smallest n: the
  value is an upper bound) or "above" (never reached: NaN, the largest n is a lower bound).
- `fit_power_law`: log n* = a + b·log d by least squares, with the regression's standard error.
- `bootstrap_fit`: b re-fitted on mean curves of seeds resampled with replacement per (family, d).
- `judge`: the rule every finding uses (see `RULE`).

Also the renderings of these numbers: the Markdown tables and the two-panel figure.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pandas as pd

Z = 2.0  # a finding holds when its margin exceeds Z × its noise (≈ a 95% two-sided interval)
NEAR_TOL = 0.5  # "b is near b0" means |b − b0| < NEAR_TOL (exponent units)
RULE = (
    f"A finding **holds** when its margin exceeds {Z:g}× its noise, **does not hold** when the "
    f"margin is below −{Z:g}× the noise, and is **inconclusive** otherwise. Noise is measured "
    "over seeds: the standard error of a difference of seed means (accuracies), or the standard "
    "deviation over bootstrap resamples of the seeds (n to target, exponents). For 'exponent "
    f"near b0' the margin is {NEAR_TOL:g} − |b − b0|."
)


@dataclass(frozen=True)
class Crossing:
    """n* (the n that reaches the target) of one curve; `censored` "", "below" or "above"."""

    n: float
    censored: str


@dataclass(frozen=True)
class PowerFit:
    """log10 n* = a + b·log10 d over `points` sizes; `se_b` the regression's standard error."""

    a: float
    b: float
    se_b: float
    points: int


@dataclass(frozen=True)
class Finding:
    """One judged statement: margin and noise in the statement's own units."""

    claim: str
    margin: float
    noise: float
    verdict: str
    detail: str = ""

    def to_dict(self) -> dict:
        return asdict(self)


def curves(results: pd.DataFrame) -> pd.DataFrame:
    """Mean, std and count of test accuracy over seeds per (family, d, n), sorted."""
    g = results.groupby(["family", "d", "n"])["test_acc"]
    out = g.agg(mean="mean", std="std", seeds="count").reset_index()
    out["std"] = out["std"].fillna(0.0)  # one seed: no spread measured
    return out.sort_values(["family", "d", "n"]).reset_index(drop=True)


def n_to_target(ns: Sequence[float], accs: Sequence[float], target: float) -> Crossing:
    """Where the accuracy curve first reaches `target` (linear in log n between grid points)."""
    ns_, acc = np.asarray(ns, float), np.asarray(accs, float)
    order = np.argsort(ns_)
    ns_, acc = ns_[order], acc[order]
    hit = np.flatnonzero(acc >= target)
    if len(hit) == 0:
        return Crossing(math.nan, "above")
    i = int(hit[0])
    if i == 0:
        return Crossing(float(ns_[0]), "below")
    lo, hi = math.log(ns_[i - 1]), math.log(ns_[i])
    frac = (target - acc[i - 1]) / (acc[i] - acc[i - 1])  # in (0, 1]: acc[i-1] < t ≤ acc[i]
    return Crossing(math.exp(lo + frac * (hi - lo)), "")


def fit_power_law(ds: Sequence[float], nstars: Sequence[float]) -> PowerFit:
    """Least squares of log10 n* on log10 d over the finite points (NaN fit with < 2)."""
    x, y = np.log10(np.asarray(ds, float)), np.log10(np.asarray(nstars, float))
    keep = np.isfinite(x) & np.isfinite(y)
    x, y = x[keep], y[keep]
    if len(x) < 2 or np.ptp(x) == 0:
        return PowerFit(math.nan, math.nan, math.nan, len(x))
    b, a = np.polyfit(x, y, 1)
    se = math.nan
    if len(x) > 2:  # residual variance needs a degree of freedom
        resid = y - (a + b * x)
        se = math.sqrt(float(resid @ resid) / (len(x) - 2) / float(((x - x.mean()) ** 2).sum()))
    return PowerFit(float(a), float(b), se, len(x))


def crossings(curve: pd.DataFrame, target: float) -> pd.DataFrame:
    """n* per (family, d) of mean curves (columns family, d, n, mean)."""
    rows = []
    for (fam, d), g in curve.groupby(["family", "d"]):
        c = n_to_target(g["n"], g["mean"], target)
        rows.append({"family": fam, "d": int(d), "n_star": c.n, "censored": c.censored})
    return pd.DataFrame(rows, columns=["family", "d", "n_star", "censored"])


def _resampled_curve(results: pd.DataFrame, rng: np.random.Generator) -> pd.DataFrame:
    """Mean curves after resampling the seeds (with replacement) within each (family, d)."""
    parts = []
    for _, g in results.groupby(["family", "d"]):
        seeds = np.unique(g["seed"].to_numpy())
        pick = rng.choice(seeds, size=len(seeds), replace=True)
        parts.append(pd.concat([g[g["seed"] == s] for s in pick]))
    boot = pd.concat(parts)
    return boot.groupby(["family", "d", "n"])["test_acc"].mean().rename("mean").reset_index()


def bootstrap_fit(
    results: pd.DataFrame, target: float, *, reps: int = 300, seed: int = 0
) -> pd.DataFrame:
    """One row per (replicate, family): the exponent b and log10 n* per d of resampled seeds.

    Columns: rep, family, b, and `log_n@<d>` for each d (NaN where the target was not reached).
    """
    rng = np.random.default_rng([seed, 0xB007])
    rows = []
    for rep in range(reps):
        cross = crossings(_resampled_curve(results, rng), target)
        for fam, g in cross.groupby("family"):
            fit = fit_power_law(g["d"], g["n_star"])
            row = {"rep": rep, "family": fam, "b": fit.b}
            logs = np.log10(g["n_star"].to_numpy(float))
            row.update({f"log_n@{d}": v for d, v in zip(g["d"], logs, strict=True)})
            rows.append(row)
    return pd.DataFrame(rows)


def spread(values: pd.Series) -> float:
    """Std of the finite values (NaN with fewer than 2)."""
    v = values.to_numpy(float)
    v = v[np.isfinite(v)]
    return float(np.std(v, ddof=1)) if len(v) > 1 else math.nan


def judge(margin: float, noise: float, z: float = Z) -> str:
    """'holds' | 'does not hold' | 'inconclusive' by the rule in `RULE`."""
    if not (math.isfinite(margin) and math.isfinite(noise)):
        return "inconclusive"
    if margin > z * noise:
        return "holds"
    if margin < -z * noise:
        return "does not hold"
    return "inconclusive"


# ------------------------------------------------------------------ findings
@dataclass(frozen=True)
class Analysis:
    """Everything the report states: curves, n*, fits, bootstrap spreads and the findings."""

    target: float
    curve: pd.DataFrame
    cross: pd.DataFrame  # family, d, n_star, censored, log_n_sd
    fits: dict[str, PowerFit]
    b_sd: dict[str, float]  # bootstrap std of b per family
    b_ci: dict[str, tuple[float, float]]  # bootstrap 2.5–97.5 % interval of b
    findings: list[Finding]


def analyse(
    results: pd.DataFrame, target: float, *, conv: str, fc: str, reps: int = 300, seed: int = 0
) -> Analysis:
    """Curves, n* per (family, d), exponents with bootstrap noise, and the judged findings."""
    curve = curves(results)
    cross = crossings(curve, target)
    boot = bootstrap_fit(results, target, reps=reps, seed=seed)
    cross["log_n_sd"] = [
        spread(boot.loc[boot["family"] == f, f"log_n@{d}"]) if f"log_n@{d}" in boot else math.nan
        for f, d in zip(cross["family"], cross["d"], strict=True)
    ]
    if results.groupby(["family", "d"])["seed"].nunique().min() < 2:
        cross["log_n_sd"] = math.nan  # one seed: no noise measured, nothing can be judged
    fits, b_sd, b_ci = {}, {}, {}
    for fam, g in cross.groupby("family"):
        fits[fam] = fit_power_law(g["d"], g["n_star"].where(g["censored"] != "above"))
        bs = boot.loc[boot["family"] == fam, "b"].to_numpy(float)
        bs = bs[np.isfinite(bs)]
        b_sd[fam] = spread(pd.Series(bs)) if cross["log_n_sd"].notna().any() else math.nan
        b_ci[fam] = tuple(np.percentile(bs, [2.5, 97.5])) if len(bs) else (math.nan, math.nan)
    found = _sample_findings(cross, conv, fc, results["n"].max())
    found += _exponent_findings(fits, b_sd, conv, fc)
    found += _accuracy_findings(curve, conv, fc)
    return Analysis(target, curve, cross, fits, b_sd, b_ci, found)


def _sample_findings(cross: pd.DataFrame, conv: str, fc: str, n_max: float) -> list[Finding]:
    """Per d: the CNN reaches the target with fewer samples than the MLP (log10 n units)."""
    out = []
    for d in sorted(cross["d"].unique()):
        c = cross[(cross["family"] == conv) & (cross["d"] == d)].iloc[0]
        m = cross[(cross["family"] == fc) & (cross["d"] == d)].iloc[0]
        # A curve that never reaches the target counts at the largest n: a lower bound, so the
        # margin is conservative when the MLP is the censored one.
        log_c = math.log10(c["n_star"]) if c["censored"] != "above" else math.nan
        log_m = math.log10(m["n_star"] if m["censored"] != "above" else n_max)
        # A censored-above curve has no n* to vary: its share of the noise is 0.
        noise = math.sqrt(np.nansum([c["log_n_sd"] ** 2, m["log_n_sd"] ** 2]))
        if cross["log_n_sd"].isna().all():
            noise = math.nan
        margin = log_m - log_c
        detail = f"log10 n*: {conv} {_fmt_n(c)}, {fc} {_fmt_n(m)}"
        claim = f"d={d}: {conv} needs fewer samples than {fc}"
        out.append(Finding(claim, margin, noise, judge(margin, noise), detail))
    return out


def _exponent_findings(
    fits: dict[str, PowerFit], b_sd: dict[str, float], conv: str, fc: str
) -> list[Finding]:
    """The gap grows with d (b_fc > b_conv); b_fc near 2; b_conv near 0."""
    bc, bm = fits[conv].b, fits[fc].b
    noise = math.sqrt(b_sd[conv] ** 2 + b_sd[fc] ** 2)
    out = [Finding(f"exponent of {fc} exceeds that of {conv} (gap grows with d)", bm - bc, noise,
                   judge(bm - bc, noise), f"b: {fc} {bm:.2f}, {conv} {bc:.2f}")]  # fmt: skip
    for fam, b0 in ((fc, 2.0), (conv, 0.0)):
        b, sd = fits[fam].b, b_sd[fam]
        margin = NEAR_TOL - abs(b - b0)
        why = f"b = {b:.2f} ± {sd:.2f} from {fits[fam].points} sizes"
        out.append(Finding(f"exponent of {fam} is near {b0:g}", margin, sd, judge(margin, sd), why))
    return out


def _accuracy_findings(curve: pd.DataFrame, conv: str, fc: str) -> list[Finding]:
    """Per (d, n): the CNN's mean test accuracy exceeds the MLP's (accuracy units)."""
    c = curve[curve["family"] == conv].set_index(["d", "n"])
    m = curve[curve["family"] == fc].set_index(["d", "n"])
    out = []
    for key in c.index.intersection(m.index):
        rc, rm = c.loc[key], m.loc[key]
        noise = math.sqrt(rc["std"] ** 2 / rc["seeds"] + rm["std"] ** 2 / rm["seeds"])
        if min(rc["seeds"], rm["seeds"]) < 2:
            noise = math.nan  # one seed: the spread is unmeasured
        margin = rc["mean"] - rm["mean"]
        out.append(Finding(f"d={key[0]}, n={key[1]}: {conv} more accurate than {fc}", margin,
                           noise, judge(margin, noise)))  # fmt: skip
    return out


def _fmt_n(row: pd.Series) -> str:
    if row["censored"] == "above":
        return "not reached"
    prefix = "≤ " if row["censored"] == "below" else ""
    return f"{prefix}{math.log10(row['n_star']):.2f}"


# ------------------------------------------------------------------ Markdown tables
def curve_table(curve: pd.DataFrame, ns: Sequence[int]) -> list[str]:
    head = "| family | d | " + " | ".join(f"n={n}" for n in ns) + " |"
    rows = [head, "|" + "---|" * (len(ns) + 2)]
    for (fam, d), g in curve.groupby(["family", "d"]):
        by_n = g.set_index("n")
        cells = [f"{100 * by_n.at[n, 'mean']:.1f} ± {100 * by_n.at[n, 'std']:.1f}"
                 if n in by_n.index else "–" for n in ns]  # fmt: skip
        rows.append(f"| {fam} | {d} | " + " | ".join(cells) + " |")
    return rows


def nstar_table(an: Analysis, families: Sequence[str]) -> list[str]:
    ds = sorted(an.cross["d"].unique())
    rows = ["| family | " + " | ".join(f"n* at d={d}" for d in ds) + " | b (OLS ± se) | "
            "b bootstrap sd | b 95% bootstrap |", "|" + "---|" * (len(ds) + 4)]  # fmt: skip
    for fam in families:
        g = an.cross[an.cross["family"] == fam].set_index("d")
        cells = [nstar_cell(g.loc[d]) for d in ds]
        f, (lo, hi) = an.fits[fam], an.b_ci[fam]
        rows.append(f"| {fam} | " + " | ".join(cells) + f" | {f.b:.2f} ± {f.se_b:.2f} | "
                    f"{an.b_sd[fam]:.2f} | [{lo:.2f}, {hi:.2f}] |")  # fmt: skip
    return rows


def nstar_cell(row: pd.Series) -> str:
    if row["censored"] == "above":
        return "not reached"
    prefix = "≤ " if row["censored"] == "below" else ""
    sd = row["log_n_sd"]
    return f"{prefix}{row['n_star']:.0f}" + (f" (×/÷ {10**sd:.2f})" if math.isfinite(sd) else "")


def findings_table(findings: list[Finding]) -> list[str]:
    rows = ["| claim | margin | noise | verdict | detail |", "|---|---|---|---|---|"]
    rows += [f"| {f.claim} | {f.margin:+.3f} | {f.noise:.3f} | **{f.verdict}** | {f.detail} |"
             for f in findings]  # fmt: skip
    return rows


# ------------------------------------------------------------------ figure
def figure(an: Analysis, families: Sequence[str], seeds: int, path: Path) -> Path:
    """Left: test accuracy vs n (log x), mean ± std over seeds per (family, d). Right: n* vs d
    (log-log) per family with the fitted line log10 n* = a + b·log10 d."""
    from raydistill.report.figures import pyplot, save_png

    plt = pyplot()
    fig, (ax, bx) = plt.subplots(1, 2, figsize=(11.0, 4.4), dpi=100)
    styles = {families[0]: "o-", families[1]: "s--"}
    for j, d in enumerate(sorted(an.curve["d"].unique())):
        for fam in families:
            g = an.curve[(an.curve["family"] == fam) & (an.curve["d"] == d)]
            ax.errorbar(g["n"], 100 * g["mean"], yerr=100 * g["std"], fmt=styles[fam],
                        color=f"C{j}", ms=4, lw=1.2, capsize=3, label=f"{fam} d={d}")  # fmt: skip
    ax.axhline(100 * an.target, color="k", ls=":", lw=1, label=f"target {an.target:.0%}")
    ax.set_xscale("log")
    ax.set_xlabel("training-set size n")
    ax.set_ylabel("test accuracy (%)")
    ax.set_title(f"synthetic-sep: mean ± std over {seeds} seeds", fontsize=9)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7, ncol=2)
    for i, fam in enumerate(families):
        g = an.cross[(an.cross["family"] == fam) & (an.cross["censored"] != "above")]
        if g.empty:
            continue
        bx.errorbar(g["d"], g["n_star"], fmt=styles[fam][0], color=f"C{i}", ms=6,
                    yerr=_log_err(g), capsize=3)  # fmt: skip
        f = an.fits[fam]
        if math.isfinite(f.b):
            xs = pd.Series(sorted(an.cross["d"].unique()), dtype=float)
            bx.plot(xs, 10 ** (f.a + f.b * xs.map(math.log10)), styles[fam][1:] or "-",
                    color=f"C{i}", label=f"{fam}: b = {f.b:.2f} ± {an.b_sd[fam]:.2f}")  # fmt: skip
    if bx.lines:  # log axes need data: no family may have reached the target
        bx.set_xscale("log")
        bx.set_yscale("log")
    else:
        bx.text(0.5, 0.5, "target not reached", transform=bx.transAxes, ha="center")
    bx.set_xlabel("input dimension d")
    bx.set_ylabel(f"n to reach {an.target:.0%} test accuracy")
    bx.set_title("n* ∝ d^b (error bars: bootstrap over seeds)", fontsize=9)
    bx.grid(True, which="both", alpha=0.3)
    if bx.get_legend_handles_labels()[0]:
        bx.legend(fontsize=8)
    return save_png(fig, path)


def _log_err(g: pd.DataFrame) -> list[list[float]]:
    """Asymmetric error bars of n* from the bootstrap std of log10 n* (NaN → none)."""
    sd = g["log_n_sd"].fillna(0.0).to_numpy(float)
    n = g["n_star"].to_numpy(float)
    return [list(n - n / 10**sd), list(n * 10**sd - n)]
