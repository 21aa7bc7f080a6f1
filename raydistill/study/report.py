"""REPORT.md of a study: what ran, on what, how long; Table 2 with ± std; the findings.

Fed by `raydistill.study.reproduce` with the report (`raydistill.report.Report`), the seed repeats'
summary (`raydistill.study.repeats.summarize`) and the stage times; the findings are judged here with
`raydistill.study.findings` (its rule is printed with them). No torch, no Ray.
"""

from __future__ import annotations

import os
import platform
from collections.abc import Mapping
from typing import Any

import pandas as pd

from raydistill.students.budget import format_budget
from raydistill.study.findings import RULE, judge


def seeds_table(repeats: pd.DataFrame) -> str:
    """Markdown: rows × budgets, "mean ± std (n)" in percent over the seed repeats."""
    if repeats is None or repeats.empty:
        return "No seed repeats."
    from raydistill.report.tables import row_order

    budgets = sorted(int(b) for b in repeats["budget"].unique())
    head = "| model | " + " | ".join(format_budget(b) for b in budgets) + " |"
    lines = [head, "|---|" + "---|" * len(budgets)]
    for row in sorted(repeats["row"].unique(), key=row_order):
        cells = []
        for b in budgets:
            hit = repeats[(repeats["row"] == row) & (repeats["budget"] == b)]
            if hit.empty:
                cells.append("–")
                continue
            r = hit.iloc[0]
            cells.append(f"{100 * r['mean']:.2f} ± {100 * r['std']:.2f} ({int(r['n'])})")
        lines.append(f"| {row} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _loss(train: dict) -> str:
    """The students' loss as the scale sets it (a fixed value, or a searched choice)."""
    loss = train.get("loss")
    if loss is None:
        return "as each space sets it (the shipped spaces: l2_logits, the paper's)"
    return loss if isinstance(loss, str) else f"searched over {loss}"


def _resources() -> str:
    try:
        import torch

        gpus = torch.cuda.device_count()
    except ImportError:  # the report needs no torch; say what is known
        gpus = 0
    return f"{platform.node()}, {os.cpu_count()} CPU cores, {gpus} GPU(s), {platform.platform()}"


def _header(sc: Any, times: Mapping[str, float], source: str) -> list[str]:
    t, s, d = sc.teacher, sc.search, sc.data
    total = sum(times.values())
    return [
        f"# raydistill reproduction of Urban et al. (2017), scale `{sc.name}`",
        "",
        f"- scale file: `{sc.source}` ({sc.description})",
        f"- data: `{source}` (validation {d.val_size}, train subset {d.train_subset or 'all'}, "
        f"split seed {d.seed})",
        f"- teacher: {t.members} × {t.family} ({t.widths or f'width × {t.width_scale}'}), "
        f"{t.epochs} epochs; transfer set: {sc.transfer.epochs} epochs, augmentation "
        f"{sc.transfer.aug}",
        f"- search: budgets {', '.join(map(str, s.budgets))}; {s.trials} trials per cell "
        f"({s.searcher}, scheduler {s.scheduler}), {s.max_epochs} epochs, loss "
        f"{_loss(s.train)}; hard-label twins at "
        f"{', '.join(map(str, sc.hard_twins.budgets))}; each cell's best configuration repeated with {sc.seeds} "
        "fresh seeds",
        f"- wall time: {total / 60:.1f} min ("
        + ", ".join(f"{k} {v:.0f} s" for k, v in times.items())
        + ")",
        f"- resources: {_resources()}",
    ]


def _teacher_lines(teacher: Mapping[str, float]) -> list[str]:
    names = {
        "ensemble_test_acc": "test set",
        "ensemble_test_view_acc": "test images under the transfer set's augmentation",
        "ensemble_val_acc": "validation",
    }
    parts = [f"{100 * v:.2f} % on the {names[k]}" for k, v in teacher.items() if k in names]
    return ["", "## Teacher ensemble", "", "- " + "; ".join(parts) if parts else "- (unknown)"]


def _search_table(markdown: str) -> str:
    """The search's table2.md as a section of REPORT.md (its standalone "All trials have
    ended." line says nothing inside a finished study)."""
    text = markdown.replace("# Table 2", "## Table 2 of the search (mean of the top 5 trials)", 1)
    return text.replace("\nAll trials have ended.\n", "\n")


def report_markdown(
    sc: Any,
    rep: Any,
    repeats: pd.DataFrame,
    times: Mapping[str, float],
    source: str,
    teacher: Mapping[str, float],
) -> str:
    """REPORT.md's text (see the module docstring)."""
    found = judge(repeats) if repeats is not None and not repeats.empty else []
    lines = [*_header(sc, times, source), *_teacher_lines(teacher)]
    lines += [
        "", f"## Table 2: best configuration of each cell, {sc.seeds} fresh seeds", "",
        "Test accuracy (%): mean ± sample std over the seeds (n seeds). The hard-label twins "
        "are the CNN rows trained on the labels of the same views.", "",
        seeds_table(repeats), "",
        _search_table(rep.markdown),
        "", "![Figure 1](study/report/figure1.png)", "",
        "## The paper's findings at this scale", "", f"Rule: {RULE}", "",
    ]  # fmt: skip
    for f in found:
        lines.append(f"- **{f.claim}**: {f.verdict}")
        lines += [f"  - {d}" for d in f.details]
    if getattr(rep, "laws", ""):
        lines += ["", rep.laws.rstrip("\n")]
        if "paper's numbers against" not in rep.laws:
            lines += [
                "",
                "The paper's numbers are set against the laws only on its task "
                "(CIFAR-10, budgets in parameters); this study's is not.",
            ]
    if "compare_paper" in rep.paths:
        text = rep.paths["compare_paper"].read_text()
        lines += ["", text.replace("# Ours vs", "## Ours vs", 1)]
    return "\n".join(lines) + "\n"
