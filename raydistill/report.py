"""The paper's Table 2 and Figure 1, and Pareto fronts, for any search directory.

Reads `DIR/trials.parquet` (one row per trial) and, when present, `DIR/manifest.json` (the
teacher ensemble's accuracy). Writes into `DIR/report/`:

- `table2.md`, `table2.csv`: rows = family and depth (hard-label twins as their own rows,
  "cnn-d2 (hard)"), columns = budgets; a cell is the mean test accuracy of the 5 best trials by
  validation accuracy (the paper's rule; finished and stopped trials only) and, in parentheses,
  the test accuracy of the best trial by validation accuracy. The teacher ensemble is a
  reference row.
- `cells.csv`: every (row, budget) with its trial counts by status and the numbers above.
- `figure1.png`: accuracy vs parameters (log x), one line per family and depth, the band between
  the best and the 5th best trial, the teacher as a horizontal line; `pareto.png` / `pareto.csv`:
  the per-family Pareto front (fewest parameters for the accuracy) from the per-budget bests.
- `compare_paper.md` (with `compare_paper=True`): the published numbers side by side with ours,
  from `raydistill/paper_table2.yaml` (only numbers with a verified source are shipped there).

An unfinished experiment is reported as far as it goes; the counts of running and errored
trials per cell say what is missing.
"""

from __future__ import annotations

import io
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from raydistill.budget import format_budget, parse_budget
from raydistill.errors import UserError
from raydistill.manifest import atomic_write_bytes, atomic_write_text
from raydistill.results import STATUSES, rank

TOP_K = 5  # the paper averages the 5 best trials (by validation accuracy) of each experiment
HARD = "hard"  # the loss of the hard-label twins
REQUIRED = ("cell", "family", "depth", "budget", "trial_id", "status", "val/acc", "test/acc")
PAPER_TABLE = Path(__file__).with_name("urban2017.yaml")  # the paper's numbers, with source


@dataclass
class Report:
    """Everything `make_report` computed and the files it wrote."""

    experiment: str
    trials: pd.DataFrame
    stats: pd.DataFrame  # one row per (row label, budget): counts and accuracies
    table2: pd.DataFrame  # wide: row label x budget label, formatted text
    best_configs: pd.DataFrame  # the best trial (by val/acc) of each cell and loss
    pareto: pd.DataFrame
    teacher: dict[str, float] | None
    markdown: str
    paths: dict[str, Path] = field(default_factory=dict)

    @property
    def cells(self) -> list[str]:
        """Cell ids with at least one trial the best-trial rule admits."""
        return sorted(self.best_configs["cell"].unique().tolist())


# ---------------------------------------------------------------- loading
def load_results(directory: str | Path) -> pd.DataFrame:
    """`DIR/trials.parquet` as a DataFrame with a `row` label column (UserError if unusable)."""
    path = Path(directory) / "trials.parquet"
    if not path.is_file():
        raise UserError(f"{path} does not exist; is {directory} a search directory?")
    try:
        df = pd.read_parquet(path)
    except Exception as exc:
        raise UserError(f"{path} is not a readable Parquet file: {exc}") from exc
    missing = [c for c in REQUIRED if c not in df.columns]
    if missing:
        raise UserError(f"{path} lacks column(s) {missing}; a results table needs {list(REQUIRED)}")
    df = df.copy()
    if "loss" not in df.columns:
        df["loss"] = None
    bad = sorted(set(df["status"]) - set(STATUSES))
    if bad:
        raise UserError(f"{path}: unknown trial status {bad[0]!r}; valid: {list(STATUSES)}")
    df["budget"] = df["budget"].astype("int64")
    df["depth"] = df["depth"].astype("int64")
    # Hard-label twins: "hard" trials of an experiment that also distils (an experiment that
    # only trains on labels has no twins: its hard trials are its main rows).
    df["twin"] = (df["loss"] == HARD) & bool((df["loss"] != HARD).any())
    df["row"] = [
        row_label(f, d, t) for f, d, t in zip(df["family"], df["depth"], df["twin"], strict=True)
    ]
    return df


def row_label(family: str, depth: int, twin: bool = False) -> str:
    """'cnn-d2', or 'cnn-d2 (hard)' for a hard-label twin."""
    return f"{family}-d{int(depth)}" + (f" ({HARD})" if twin else "")


def read_teacher(directory: str | Path) -> dict[str, float] | None:
    """{val_acc, test_acc} of the teacher ensemble: the manifest's `teacher`, else the ensemble
    accuracies stored in the metadata of the transfer set the manifest names (`config.transfer`)."""
    path = Path(directory) / "manifest.json"
    try:
        manifest = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None
    teacher = manifest.get("teacher") if isinstance(manifest, dict) else None
    if isinstance(teacher, dict) and teacher.get("test_acc") is not None:
        return {k: float(v) for k, v in teacher.items() if isinstance(v, (int, float))}
    transfer = (
        (manifest.get("config") or {}).get("transfer") if isinstance(manifest, dict) else None
    )
    return _transfer_teacher(Path(transfer)) if transfer else None


def _transfer_teacher(path: Path) -> dict[str, float] | None:
    import pyarrow.parquet as pq

    from raydistill.transfer import META_KEY

    try:
        meta = json.loads((pq.read_schema(path).metadata or {})[META_KEY])
        return {
            "val_acc": float(meta["ensemble_val_acc"]),
            "test_acc": float(meta["ensemble_test_acc"]),
        }
    except (OSError, KeyError, TypeError, ValueError):  # no file, not a transfer set: no reference
        return None


# ---------------------------------------------------------------- the top-k rule
def rank_done(df: pd.DataFrame) -> pd.DataFrame:
    """The trials the best-trial rule admits (`raydistill.results`), best validation accuracy
    first within each (row, budget)."""
    return rank(df, ("row", "budget"))


def cell_stats(df: pd.DataFrame, top_k: int = TOP_K) -> pd.DataFrame:
    """One row per (row label, budget): status counts and the paper's accuracies."""
    keys = ["row", "budget"]
    counts = df.groupby(keys)["status"].value_counts().unstack(fill_value=0)
    counts = counts.reindex(columns=list(STATUSES), fill_value=0).add_prefix("n_")
    ident = df.groupby(keys)[["cell", "family", "depth", "loss", "twin"]].first()
    rows = [_top_k_stats(key, g.head(top_k)) for key, g in rank_done(df).groupby(keys, sort=True)]
    acc = pd.DataFrame(rows, columns=[*keys, *_ACC_COLS]).set_index(keys)
    out = counts.join(ident).join(acc, how="left").reset_index()
    out["top_k"] = out["top_k"].fillna(0).astype("int64")
    out["budget_label"] = [format_budget(int(b)) for b in out["budget"]]
    return out.sort_values(keys).reset_index(drop=True)


_ACC_COLS = ("top_k", "mean_test_acc", "best_test_acc", "kth_test_acc", "best_val_acc",
             "best_trial", "best_params")  # fmt: skip


def _top_k_stats(key: tuple[str, int], top: pd.DataFrame) -> tuple[Any, ...]:
    # `top` is sorted by validation accuracy, best first: rank 1 is the paper's "best",
    # the last row the k-th best (the lower edge of Figure 1's band).
    params = _int_or_none(top["params"].iloc[0]) if "params" in top else None
    return (
        key[0], int(key[1]), len(top), float(top["test/acc"].mean()), float(top["test/acc"].iloc[0]),
        float(top["test/acc"].iloc[-1]), float(top["val/acc"].iloc[0]), str(top["trial_id"].iloc[0]),
        params,
    )  # fmt: skip


def _int_or_none(v: Any) -> int | None:
    return None if v is None or (isinstance(v, float) and math.isnan(v)) else int(v)


def best_configs(df: pd.DataFrame) -> pd.DataFrame:
    """The best trial by validation accuracy of each (cell, loss): what export and W&B keep."""
    ranked = rank_done(df)
    best = ranked.groupby(["row", "budget"], sort=True).head(1)
    cols = [c for c in ("cell", "row", "family", "depth", "budget", "loss", "twin", "trial_id", "val/acc",
                        "test/acc", "params", "widths", "config", "checkpoint") if c in best]  # fmt: skip
    out = best[cols].reset_index(drop=True)
    if "widths" in out:
        out["widths"] = [list(map(int, w)) if w is not None else None for w in out["widths"]]
    return out


# ---------------------------------------------------------------- Table 2
def _pct(x: float) -> str:
    return "–" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{100 * x:.2f}"


def table2(stats: pd.DataFrame, teacher: dict[str, float] | None) -> pd.DataFrame:
    """Wide Table 2: row labels x budget labels, "mean (best) n=k" in percent (k trials)."""
    budgets = sorted(stats["budget"].unique())
    labels = [format_budget(int(b)) for b in budgets]
    order = sorted(stats["row"].unique(), key=_row_order)
    table = pd.DataFrame(index=order, columns=labels, data="")
    for r in stats.itertuples(index=False):
        col = format_budget(int(r.budget))
        if r.top_k:
            table.loc[r.row, col] = (
                f"{_pct(r.mean_test_acc)} ({_pct(r.best_test_acc)}) n={int(r.top_k)}"
            )
        else:
            table.loc[r.row, col] = "–"
    if teacher:
        table.loc["teacher ensemble"] = _pct(teacher["test_acc"])
    table.index.name = "model"
    return table


def _row_order(label: str) -> tuple[Any, ...]:
    # families in name order, then depth, then the main loss before its hard twin
    fam, _, rest = label.partition("-d")
    depth = int(rest.split(" ")[0]) if rest.split(" ")[0].isdigit() else 0
    return (fam, depth, label.endswith(f"({HARD})"))


def table2_csv(stats: pd.DataFrame, teacher: dict[str, float] | None) -> pd.DataFrame:
    """Numeric Table 2: one row per model, `<budget> mean` / `<budget> best` / `<budget> n`."""
    out = pd.DataFrame(index=sorted(stats["row"].unique(), key=_row_order))
    for b in sorted(stats["budget"].unique()):
        part = stats[stats["budget"] == b].set_index("row")
        label = format_budget(int(b))
        out[f"{label} mean"] = part["mean_test_acc"]
        out[f"{label} best"] = part["best_test_acc"]
        out[f"{label} n"] = part["top_k"].astype("Int64")
    if teacher:
        out.loc["teacher ensemble"] = {
            c: teacher["test_acc"] for c in out.columns if c.endswith(("mean", "best"))
        }
    out.index.name = "model"
    return out


def progress_lines(stats: pd.DataFrame) -> list[str]:
    """One line per cell that is not complete: its running / errored / diverged counts."""
    lines = []
    for r in stats.itertuples(index=False):
        open_ = {s: int(getattr(r, f"n_{s}")) for s in ("running", "error", "diverged")}
        if any(open_.values()):
            parts = ", ".join(f"{n} {s}" for s, n in open_.items() if n)
            lines.append(
                f"- {r.row} @ {r.budget_label}: {parts} ({int(r.n_finished + r.n_stopped)} done)"
            )
    return lines


def markdown(rep_table: pd.DataFrame, stats: pd.DataFrame, experiment: str, top_k: int) -> str:
    """table2.md: the table, how to read it, and the progress of unfinished cells."""
    header = "| " + " | ".join(["model", *rep_table.columns]) + " |"
    rule = "|" + "---|" * (len(rep_table.columns) + 1)
    body = ["| " + " | ".join([str(i), *map(str, r)]) + " |" for i, r in rep_table.iterrows()]
    n_trials = int(stats[[f"n_{s}" for s in STATUSES]].to_numpy().sum())
    lines = [
        f"# Table 2 — {experiment}",
        "",
        f"Test accuracy (%): mean of the (up to) {top_k} best trials by validation accuracy, "
        "in parentheses the best trial by validation accuracy, and n the trials averaged; the trials counted are those "
        "that finished or were stopped by their own schedule (ASHA-pruned, diverged and errored "
        f"trials never count; `table2.csv` has each cell's n). Columns are parameter budgets. "
        f"{n_trials} trials in all.",
        "",
        header,
        rule,
        *body,
    ]
    prog = progress_lines(stats)
    lines += ["", "## Not finished", "", *prog] if prog else ["", "All trials have ended."]
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------- Pareto fronts
def pareto(stats: pd.DataFrame) -> pd.DataFrame:
    """Per family, the per-budget best trials and whether each is on the accuracy/params front."""
    pts = stats[stats["top_k"] > 0].copy()
    pts = pts[~pts["twin"].astype(bool)]
    if pts.empty:
        return pd.DataFrame(
            columns=[
                "family",
                "row",
                "budget",
                "cell",
                "trial_id",
                "params",
                "test_acc",
                "val_acc",
                "on_front",
            ]
        )
    pts["params"] = [
        p if p is not None and not pd.isna(p) else b
        for p, b in zip(pts["best_params"], pts["budget"], strict=True)
    ]
    out = pts.rename(
        columns={"best_trial": "trial_id", "best_test_acc": "test_acc", "best_val_acc": "val_acc"}
    )
    out = out[
        ["family", "row", "budget", "cell", "trial_id", "params", "test_acc", "val_acc"]
    ].copy()
    out["params"] = out["params"].astype("int64")
    out["on_front"] = False
    for _fam, g in out.groupby("family"):
        best_so_far = -np.inf
        for idx in g.sort_values(["params", "test_acc"], ascending=[True, False]).index:
            if out.at[idx, "test_acc"] > best_so_far:  # strictly better than every smaller model
                out.at[idx, "on_front"] = True
                best_so_far = out.at[idx, "test_acc"]
    return out.sort_values(["family", "params"]).reset_index(drop=True)


# ---------------------------------------------------------------- figures
def _figure() -> Any:
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def figure1(
    stats: pd.DataFrame, teacher: dict[str, float] | None, path: Path, experiment: str
) -> Path:
    """Accuracy (%) vs parameters (log x): mean of top-5, best/5th-best band, teacher line."""
    plt = _figure()
    fig, ax = plt.subplots(figsize=(7.0, 4.6), dpi=100)
    done = stats[stats["top_k"] > 0]
    for i, (row, g) in enumerate(sorted(done.groupby("row"), key=lambda kv: _row_order(kv[0]))):
        g = g.sort_values("budget")
        x = g["budget"].to_numpy(float)
        color = f"C{i % 10}"
        hard = row.endswith(f"({HARD})")
        ax.plot(x, 100 * g["mean_test_acc"], ("x" if hard else "o") + ("--" if hard else "-"),
                color=color, label=row, ms=5, lw=1.4)  # fmt: skip
        lo = 100 * np.minimum(g["best_test_acc"], g["kth_test_acc"])
        hi = 100 * np.maximum(g["best_test_acc"], g["kth_test_acc"])
        ax.fill_between(x, lo, hi, color=color, alpha=0.15, lw=0)
    if teacher:
        ax.axhline(100 * teacher["test_acc"], color="k", ls=":", lw=1.2, label="teacher ensemble")
    _budget_axis(ax, sorted(done["budget"].unique()))
    ax.set_xlabel("number of parameters (budget)")
    ax.set_ylabel("test accuracy (%)")
    ax.set_title(f"{experiment}: mean of top-{TOP_K} by val (band: best to 5th best)", fontsize=9)
    ax.grid(True, which="both", alpha=0.3)
    _legend(ax, fontsize=7, ncol=2, loc="best")
    return _save_png(fig, path)


def _budget_axis(ax: Any, budgets: list[int]) -> None:
    """Log x axis ticked at the budgets, labelled like the paper ("1M", "3.16M")."""
    ax.set_xscale("log")
    if budgets:
        ax.set_xticks([float(b) for b in budgets], [format_budget(int(b)) for b in budgets])
        ax.minorticks_off()
        lo, hi = float(min(budgets)), float(max(budgets))
        ax.set_xlim(lo / 1.25, hi * 1.25)


def figure_pareto(
    front: pd.DataFrame, teacher: dict[str, float] | None, path: Path, experiment: str
) -> Path:
    """Per family: every per-budget best (dots) and the Pareto front (step line)."""
    plt = _figure()
    fig, ax = plt.subplots(figsize=(6.0, 4.0), dpi=100)
    for i, (fam, g) in enumerate(front.groupby("family")):
        color = f"C{i % 10}"
        ax.plot(g["params"], 100 * g["test_acc"], "o", color=color, alpha=0.4, ms=4)
        f = g[g["on_front"]].sort_values("params")
        ax.step(f["params"], 100 * f["test_acc"], where="post", color=color, lw=1.5)
        ax.plot(f["params"], 100 * f["test_acc"], "o", color=color, ms=5, label=f"{fam} front")
    if teacher:
        ax.axhline(100 * teacher["test_acc"], color="k", ls=":", lw=1.2, label="teacher ensemble")
    ax.set_xscale("log")
    ax.set_xlabel("number of parameters (best trial of each cell)")
    ax.set_ylabel("test accuracy (%)")
    ax.set_title(f"{experiment}: Pareto front per family", fontsize=9)
    ax.grid(True, which="both", alpha=0.3)
    _legend(ax, fontsize=8)
    return _save_png(fig, path)


def _legend(ax: Any, **kwargs: Any) -> None:
    """The legend, or a note on an empty plot (an experiment with nothing finished yet)."""
    if ax.get_legend_handles_labels()[0]:
        ax.legend(**kwargs)
    if not ax.lines:
        ax.text(0.5, 0.5, "no finished trial yet", transform=ax.transAxes, ha="center")


def _save_png(fig: Any, path: Path) -> Path:
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buf, format="png", metadata={"Software": None})
    plt.close(fig)
    return atomic_write_bytes(path, buf.getvalue())


# ---------------------------------------------------------------- the paper's numbers
def load_paper_table(path: str | Path = PAPER_TABLE) -> dict[str, Any]:
    """The published numbers (`urban2017.yaml`, transcribed from the paper's Table 2 and text)
    as {source, unit, teacher, rows: {row label: {budget label: accuracy %}}}: the distilled
    rows ("cnn-d2") at every budget and the hard-label rows ("cnn-d2 (hard)") at 10M."""
    import yaml

    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text())
        budgets = [str(b) for b in data["budgets"]]
        rows = {row: dict(zip(budgets, accs, strict=True))
                for row, accs in data["distilled"].items()}  # fmt: skip
        for row, acc in (data.get("hard_labels_10M") or {}).items():
            rows[f"{row} ({HARD})"] = {"10M": acc}
    except (OSError, yaml.YAMLError, KeyError, TypeError, ValueError, AttributeError) as exc:
        raise UserError(
            f"{path} is not a paper table (budgets, distilled rows, hard_labels_10M): {exc}"
        ) from None
    teacher = (data.get("teacher") or {}).get("ensemble_test_acc")
    return {"source": data.get("source"), "unit": data.get("unit"), "rows": rows,
            "teacher": teacher, "findings": data.get("findings") or []}  # fmt: skip


def compare_paper(stats: pd.DataFrame, paper: dict[str, Any]) -> str:
    """Markdown: published accuracy vs ours (mean of top-5) where rows and budgets match."""
    lines = [
        "# Ours vs the paper (Urban et al., ICLR 2017, Table 2)",
        "",
        f"Source: {paper.get('source', '?')}",
        "",
    ]
    ours: dict[str, dict[str, float]] = {}
    for r in stats.itertuples(index=False):
        ours.setdefault(r.row, {})[r.budget_label] = r.mean_test_acc
    ours_budgets = sorted({b for v in ours.values() for b in v}, key=parse_budget)
    paper_budgets = sorted({b for v in paper["rows"].values() for b in v}, key=parse_budget)
    lines += [
        "The paper's students are at 1M–31.6M parameters (hard-label twins at 10M); ours at "
        "the budgets of this experiment. Same row, side by side; '–' where a row or budget "
        "was not run.",
        "",
        "| model | "
        + " | ".join(f"paper {b}" for b in paper_budgets)
        + " | "
        + " | ".join(f"ours {b}" for b in ours_budgets)
        + " |",
        "|---|" + "---|" * (len(paper_budgets) + len(ours_budgets)),
    ]
    for row in sorted(set(paper["rows"]) | set(ours), key=_row_order):
        pub = [paper["rows"].get(row, {}).get(b) for b in paper_budgets]
        mine = [ours.get(row, {}).get(b) for b in ours_budgets]
        cells = [f"{float(v):.2f}" if v is not None else "–" for v in pub]
        cells += [_pct(v) if v is not None else "–" for v in mine]
        lines.append(f"| {row} | " + " | ".join(cells) + " |")
    if paper.get("teacher") is not None:
        lines += ["", f"Teacher ensemble: paper {float(paper['teacher']):.2f} %."]
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------- entry point
def make_report(
    directory: str | Path, *, top_k: int = TOP_K, compare_with_paper: bool = False
) -> Report:
    """Compute Table 2, Figure 1 and the Pareto fronts of a search directory and write them."""
    d = Path(directory)
    df = load_results(d)
    if df.empty:
        raise UserError(f"{d / 'trials.parquet'} has no trials yet")
    experiment = str(df["experiment"].iloc[0]) if "experiment" in df else d.resolve().name
    teacher = read_teacher(d)
    stats = cell_stats(df, top_k)
    wide = table2(stats, teacher)
    md = markdown(wide, stats, experiment, top_k)
    front = pareto(stats)
    out = d / "report"
    paths = {
        "table2_md": atomic_write_text(out / "table2.md", md),
        "table2_csv": atomic_write_text(out / "table2.csv", table2_csv(stats, teacher).to_csv()),
        "cells_csv": atomic_write_text(out / "cells.csv", stats.to_csv(index=False)),
        "pareto_csv": atomic_write_text(out / "pareto.csv", front.to_csv(index=False)),
        "figure1": figure1(stats, teacher, out / "figure1.png", experiment),
        "pareto_png": figure_pareto(front, teacher, out / "pareto.png", experiment),
    }
    if compare_with_paper:
        paths["compare_paper"] = atomic_write_text(
            out / "compare_paper.md", compare_paper(stats, load_paper_table())
        )
    return Report(experiment, df, stats, wide, best_configs(df), front, teacher, md, paths)
