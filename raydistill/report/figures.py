"""Figure 1 (accuracy vs parameters, one line per row of Table 2) and the Pareto-front plot,
written as PNG files with the shared atomic write (matplotlib's Agg backend, imported on use).
"""

from __future__ import annotations

import io
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from raydistill.core.manifest import atomic_write_bytes
from raydistill.report.sizelaw import SizeLaw, next_budget
from raydistill.report.tables import HARD, TOP_K, row_order
from raydistill.students.budget import format_budget


def pyplot() -> Any:
    """matplotlib's pyplot on the file-only Agg backend (no display needed): every figure of
    the project is drawn through it."""
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def figure1(
    stats: pd.DataFrame,
    teacher: dict[str, float] | None,
    path: Path,
    experiment: str,
    laws: Mapping[str, SizeLaw] | None = None,
) -> Path:
    """Accuracy (%) vs parameters (log x): mean of top-5, best/5th-best band, teacher line;
    with `laws` (`raydistill.report.sizelaw`), each row's fitted law over its budgets (thin)
    and extrapolated to the next budget (dashed)."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(7.0, 4.6), dpi=100)
    done = stats[stats["top_k"] > 0]
    # One budget kind per axis: the parameter budgets (the paper's), else the first kind run.
    kinds = sorted(set(done["budget_kind"]), key=lambda k: (k != "params", k))
    kind = kinds[0] if kinds else "params"
    done = done[done["budget_kind"] == kind]
    nxt = next_budget(done["budget"].tolist())
    for i, (row, g) in enumerate(sorted(done.groupby("row"), key=lambda kv: row_order(kv[0]))):
        g = g.sort_values("budget")
        x = g["budget"].to_numpy(float)
        color = f"C{i % 10}"
        hard = row.endswith(f"({HARD})")
        ax.plot(
            x,
            100 * g["mean_test_acc"],
            ("x" if hard else "o") + ("--" if hard else "-"),
            color=color,
            label=row,
            ms=5,
            lw=1.4,
        )
        lo = 100 * np.minimum(g["best_test_acc"], g["kth_test_acc"])
        hi = 100 * np.maximum(g["best_test_acc"], g["kth_test_acc"])
        ax.fill_between(x, lo, hi, color=color, alpha=0.15, lw=0)
        if laws and row in laws:
            _draw_law(ax, laws[row], nxt, color)
    if teacher:
        ax.axhline(100 * teacher["test_acc"], color="k", ls=":", lw=1.2, label="teacher ensemble")
    _budget_axis(ax, sorted(done["budget"].unique()), nxt if laws else None, kind)
    ax.set_xlabel(f"{_BUDGET_AXIS.get(kind.split('-')[0], kind)} (budget)")
    ax.set_ylabel("test accuracy (%)")
    ax.set_title(f"{experiment}: mean of top-{TOP_K} by val (band: best to 5th best)", fontsize=9)
    ax.grid(True, which="both", alpha=0.3)
    _legend(ax, fontsize=7, ncol=2, loc="best")
    return save_png(fig, path)


def _draw_law(ax: Any, law: SizeLaw, nxt: float | None, color: str) -> None:
    """The law over its fitted sizes (thin) and on to the next budget (dashed)."""
    lo, hi = min(law.sizes), max(law.sizes)
    inside = np.geomspace(lo, hi, 32)
    ax.plot(inside, 100 * (1 - law.error(inside)), "-", color=color, lw=0.8, alpha=0.6)
    if nxt is not None and nxt > hi:
        beyond = np.geomspace(hi, nxt, 16)
        ax.plot(beyond, 100 * (1 - law.error(beyond)), "--", color=color, lw=1.0, alpha=0.8)


_BUDGET_AXIS = {"params": "number of parameters", "macs": "multiply-accumulates per image",
                "latency": "latency per image (µs)"}  # fmt: skip


def _budget_axis(
    ax: Any, budgets: list[int], nxt: float | None = None, kind: str = "params"
) -> None:
    """Log x axis ticked at the budgets (and the next one a law extrapolates to), labelled like
    the paper ("1M", "3.16M")."""
    ax.set_xscale("log")
    ticks = [*budgets, round(nxt)] if nxt else list(budgets)
    if ticks:
        ax.set_xticks([float(b) for b in ticks], [format_budget(int(b), kind) for b in ticks])
        ax.minorticks_off()
        lo, hi = float(min(ticks)), float(max(ticks))
        ax.set_xlim(lo / 1.25, hi * 1.25)


_AXIS_LABELS = {"params": "number of parameters", "macs": "multiply-accumulates per image",
                "latency_us": "latency per image (µs, CPU, batch 1)"}  # fmt: skip


def figure_pareto(
    front: pd.DataFrame, teacher: dict[str, float] | None, path: Path, experiment: str,
    x: str = "params",
) -> Path:  # fmt: skip
    """Per family: every per-budget best (dots) and the Pareto front (step line) against `x`
    (a cost column of `report.tables.pareto`: params, macs or latency_us)."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6.0, 4.0), dpi=100)
    for i, (fam, g) in enumerate(front[front[x].notna()].groupby("family")):
        color = f"C{i % 10}"
        ax.plot(g[x], 100 * g["test_acc"], "o", color=color, alpha=0.4, ms=4)
        f = g[g["on_front"]].sort_values(x)
        ax.step(f[x], 100 * f["test_acc"], where="post", color=color, lw=1.5)
        ax.plot(f[x], 100 * f["test_acc"], "o", color=color, ms=5, label=f"{fam} front")
    if teacher:
        ax.axhline(100 * teacher["test_acc"], color="k", ls=":", lw=1.2, label="teacher ensemble")
    ax.set_xscale("log")
    ax.set_xlabel(f"{_AXIS_LABELS.get(x, x)} (best trial of each cell)")
    ax.set_ylabel("test accuracy (%)")
    ax.set_title(f"{experiment}: Pareto front per family", fontsize=9)
    ax.grid(True, which="both", alpha=0.3)
    _legend(ax, fontsize=8)
    return save_png(fig, path)


def _legend(ax: Any, **kwargs: Any) -> None:
    """The legend, or a note on an empty plot (an experiment with nothing finished yet)."""
    if ax.get_legend_handles_labels()[0]:
        ax.legend(**kwargs)
    if not ax.lines:
        ax.text(0.5, 0.5, "no finished trial yet", transform=ax.transAxes, ha="center")


def save_png(fig: Any, path: Path) -> Path:
    """Write `fig` to `path` as PNG atomically, then close it."""
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buf, format="png", metadata={"Software": None})
    plt.close(fig)
    return atomic_write_bytes(path, buf.getvalue())
