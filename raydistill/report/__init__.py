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
  the best and the 5th best trial, the teacher as a horizontal line, each row's accuracy-vs-size
  law (`sizelaw`) and its extrapolation to the next budget dashed; `sizelaw.md`: the laws, their
  predictions at the next budget and the leave-largest-out check; `pareto.png` / `pareto.csv`:
  the per-family Pareto front (fewest parameters for the accuracy) from the per-budget bests.
- `compare_paper.md` (with `compare_paper=True`): the published numbers side by side with ours,
  from `raydistill/report/urban2017.yaml` (only numbers with a verified source are shipped there).

An unfinished experiment is reported as far as it goes; the counts of running and errored
trials per cell say what is missing.

The package: `tables` (loading, the top-k rule, Table 2, Pareto fronts), `figures` (the PNGs),
`paper` (the published numbers side by side); `make_report` here ties them together.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from raydistill.core.errors import UserError
from raydistill.core.manifest import atomic_write_text
from raydistill.report.figures import figure1, figure_pareto
from raydistill.report.paper import PAPER_TABLE, compare_paper, is_paper_task, load_paper_table
from raydistill.report.sizelaw import fit_all, law_markdown, points
from raydistill.report.tables import (
    HARD,
    REQUIRED,
    TOP_K,
    allocation_markdown,
    best_configs,
    cell_stats,
    load_results,
    markdown,
    pareto,
    progress_lines,
    rank_done,
    read_teacher,
    row_label,
    table2,
    table2_csv,
)

__all__ = [
    "HARD", "PAPER_TABLE", "REQUIRED", "TOP_K", "Report",
    "allocation_markdown", "best_configs",
    "cell_stats", "compare_paper", "figure1", "figure_pareto", "is_paper_task", "load_paper_table",
    "load_results", "make_report", "markdown", "pareto", "progress_lines", "rank_done",
    "read_teacher", "row_label", "table2", "table2_csv",
]  # fmt: skip


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
    laws: str = ""  # the size-law section (sizelaw.md)

    @property
    def cells(self) -> list[str]:
        """Cell ids with at least one trial the best-trial rule admits."""
        return sorted(self.best_configs["cell"].unique().tolist())


# ---------------------------------------------------------------- entry point
def make_report(
    directory: str | Path,
    *,
    top_k: int = TOP_K,
    compare_with_paper: bool = False,
    repeats: pd.DataFrame | None = None,
    budget_kind: str = "params",
    paper_task: bool | None = None,
    pareto_x: str = "params",
) -> Report:
    """Compute Table 2, Figure 1 and the Pareto fronts of a search directory and write them.
    The size laws are fitted to `repeats` (a study's seed repeats) when given, else to each
    cell's top-k trials; with `compare_with_paper` they are set against the published numbers
    when the task is the paper's (`paper_task`; None: the manifest's data source says)."""
    d = Path(directory)
    df = load_results(d)
    if df.empty:
        raise UserError(f"{d / 'trials.parquet'} has no trials yet")
    experiment = str(df["experiment"].iloc[0]) if "experiment" in df else d.resolve().name
    teacher = read_teacher(d)
    stats = cell_stats(df, top_k)
    wide = table2(stats, teacher)
    md = markdown(wide, stats, experiment, top_k)
    front = pareto(stats, pareto_x)
    out = d / "report"
    pts = points(repeats if repeats is not None and not repeats.empty else stats)
    laws = fit_all(pts)
    source = "seed repeats" if repeats is not None and not repeats.empty else f"top-{top_k} trials"
    if paper_task is None:
        paper_task = is_paper_task(_data_source(d))
    paper = load_paper_table() if compare_with_paper and paper_task else None
    law_md = law_markdown(pts, kind=budget_kind, paper=paper, source=source)
    alloc = allocation_markdown(d)
    md = md + "\n" + alloc if alloc else md
    paths = {
        "table2_md": atomic_write_text(out / "table2.md", md),
        "table2_csv": atomic_write_text(out / "table2.csv", table2_csv(stats, teacher).to_csv()),
        "cells_csv": atomic_write_text(out / "cells.csv", stats.to_csv(index=False)),
        "pareto_csv": atomic_write_text(out / "pareto.csv", front.to_csv(index=False)),
        "figure1": figure1(stats, teacher, out / "figure1.png", experiment, laws),
        "sizelaw_md": atomic_write_text(out / "sizelaw.md", law_md),
        "pareto_png": figure_pareto(front, teacher, out / "pareto.png", experiment, pareto_x),
    }
    if compare_with_paper:  # the paper's numbers only beside numbers of the paper's task
        text = compare_paper(stats, load_paper_table()) if paper_task else (
            "# Ours vs the paper\n\nNot compared: the paper measured CIFAR-10; this study's "
            f"task is {_task_name(d)}, whose accuracies are not comparable.\n"
        )  # fmt: skip
        paths["compare_paper"] = atomic_write_text(out / "compare_paper.md", text)
    return Report(
        experiment, df, stats, wide, best_configs(df), front, teacher, md, paths, laws=law_md
    )


def _task_name(directory: Path) -> str:
    """The dataset a search's manifest names (its description, else its source)."""
    from raydistill.core.manifest import read_manifest

    try:
        manifest = read_manifest(directory)
    except (OSError, ValueError, UserError):
        return "another dataset"
    dataset = manifest.get("dataset") or {}
    return str(
        dataset.get("name") or (manifest.get("config") or {}).get("data") or "another dataset"
    )


def _data_source(directory: Path) -> str | None:
    """The data source a search's manifest records (None: unknown or in-memory data)."""
    from raydistill.core.manifest import read_manifest

    try:
        return (read_manifest(directory).get("config") or {}).get("data")
    except (OSError, ValueError, UserError):
        return None
