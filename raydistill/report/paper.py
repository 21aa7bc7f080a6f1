"""The paper's published numbers (`raydistill/report/urban2017.yaml`) and our Table 2 side by side."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd

from raydistill.core.errors import UserError
from raydistill.core.numbers import pct
from raydistill.report.tables import HARD, row_order
from raydistill.students.budget import parse_budget

PAPER_TABLE = Path(__file__).resolve().parent / "urban2017.yaml"  # with its source


def is_paper_task(source: str | None) -> bool:
    """Whether a data source is the paper's task, CIFAR-10 (`cifar10`, or a file or folder
    named cifar10...): only there are our numbers and the published ones comparable."""
    if not source:
        return False
    return Path(str(source)).name.lower().startswith(("cifar10", "cifar-10"))


def load_paper_table(path: str | Path = PAPER_TABLE) -> dict[str, Any]:
    """The published numbers (`urban2017.yaml`, transcribed from the paper's Table 2 and text)
    as {source, unit, teacher, rows: {row label: {budget label: accuracy %}}}: the distilled
    rows ("cnn-d2") at every budget and the hard-label rows ("cnn-d2 (hard)") at 10M."""
    import yaml

    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text())
        budgets = [str(b) for b in data["budgets"]]
        rows = {
            row: dict(zip(budgets, accs, strict=True)) for row, accs in data["distilled"].items()
        }
        for row, acc in (data.get("hard_labels_10M") or {}).items():
            rows[f"{row} ({HARD})"] = {"10M": acc}
    except (OSError, yaml.YAMLError, KeyError, TypeError, ValueError, AttributeError) as exc:
        raise UserError(
            f"{path} is not a paper table (budgets, distilled rows, hard_labels_10M): {exc}"
        ) from None
    teacher = (data.get("teacher") or {}).get("ensemble_test_acc")
    return {
        "source": data.get("source"),
        "unit": data.get("unit"),
        "rows": rows,
        "teacher": teacher,
        "findings": data.get("findings") or [],
    }


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
    for row in sorted(set(paper["rows"]) | set(ours), key=row_order):
        pub = [paper["rows"].get(row, {}).get(b) for b in paper_budgets]
        mine = [ours.get(row, {}).get(b) for b in ours_budgets]
        cells = [f"{float(v):.2f}" if v is not None else "–" for v in pub]
        cells += [pct(v) for v in mine]
        lines.append(f"| {row} | " + " | ".join(cells) + " |")
    if paper.get("teacher") is not None:
        lines += ["", f"Teacher ensemble: paper {float(paper['teacher']):.2f} %."]
    return "\n".join(lines) + "\n"
