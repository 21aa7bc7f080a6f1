"""The accuracy-vs-size law (`raydistill.report.sizelaw`) on hand-built tables: it recovers known
(a, b, c), its intervals cover the truth at their stated rate, the leave-largest-out prediction
is computed from the other budgets only, and the reports carry it (sizelaw.md, Figure 1,
REPORT.md with the paper's numbers only on the paper's task)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from test_report import results_rows, write_results

from raydistill.report import load_paper_table, make_report
from raydistill.report.sizelaw import fit_all, law_markdown, leave_largest_out, next_budget, points

SIZES = [10_000, 30_000, 100_000, 300_000, 1_000_000]


def law_table(rows: dict[str, tuple[float, float, float]], sizes=SIZES, std=0.004, n=5, noise=None):
    """Seed-repeat summaries (row, family, depth, twin, budget, n, mean, std) that follow
    error = a · (size / sizes[0])^(−b) + c exactly (or plus `noise`: a numpy Generator)."""
    out = []
    for row, (a, b, c) in rows.items():
        fam, depth = row.split("-d")
        for s in sizes:
            err = a * (s / sizes[0]) ** (-b) + c
            if noise is not None:
                err += noise.normal(0, std / np.sqrt(n))
            out.append(
                {
                    "row": row,
                    "family": fam,
                    "depth": int(depth),
                    "twin": False,
                    "budget": s,
                    "n": n,
                    "mean": 1 - err,
                    "std": std,
                }
            )
    return pd.DataFrame(out)


def test_saturating_law_recovers_known_a_b_c() -> None:
    truth = {"cnn-d1": (0.40, 0.50, 0.10), "mlp-d2": (0.25, 0.30, 0.35)}
    laws = fit_all(points(law_table(truth)))
    for row, (a, b, c) in truth.items():
        law = laws[row]
        assert law.kind == "saturating"
        assert (law.a, law.b, law.c) == pytest.approx((a, b, c), abs=1e-4)
        sd = np.sqrt(np.diag(law.cov))
        assert np.all(sd > 0) and np.all(sd < 0.05)  # a real, finite uncertainty
        acc, lo, hi = law.predict(3_000_000)
        assert acc == pytest.approx(1 - (a * 300 ** (-b) + c), abs=1e-4) and lo < acc < hi


def test_two_budgets_give_a_plain_power_law() -> None:
    laws = fit_all(points(law_table({"cnn-d1": (0.5, 0.3, 0.0)}, sizes=[10_000, 30_000])))
    law = laws["cnn-d1"]
    assert law.kind == "power" and law.c == 0.0
    assert (law.a, law.b) == pytest.approx((0.5, 0.3), rel=1e-6)
    assert next_budget([10_000, 30_000]) == pytest.approx(90_000)
    _, lo, hi = law.predict(90_000)
    assert hi - lo > 0.01  # two points, errors of ~0.2 points each: a wide extrapolation


def test_intervals_cover_the_left_out_truth_at_about_their_rate() -> None:
    """Noisy means from a known law: the left-out 95 % interval holds the true value in most
    of 200 draws (delta method on an absolute-sigma fit; not far from its nominal rate)."""
    rng = np.random.default_rng(0)
    a, b, c = 0.4, 0.5, 0.1
    truth = 1 - (a * 100 ** (-b) + c)
    hits = 0
    for _ in range(200):
        table = law_table({"cnn-d1": (a, b, c)}, std=0.01, noise=rng)
        (lo_,) = leave_largest_out(points(table))
        hits += lo_.low <= truth <= lo_.high
    assert 0.8 <= hits / 200 <= 1.0, hits


def test_left_out_prediction_uses_only_the_other_budgets() -> None:
    table = law_table({"cnn-d1": (0.4, 0.5, 0.1), "cnn-d2": (0.35, 0.45, 0.08)})
    (first, _) = leave_largest_out(points(table))
    assert first.row == "cnn-d1" and first.budget == 1_000_000 and "own fit on 4" in first.how
    assert first.predicted == pytest.approx(first.measured, abs=1e-4)  # an exact law
    moved = table.copy()
    moved.loc[(moved["row"] == "cnn-d1") & (moved["budget"] == 1_000_000), "mean"] -= 0.2
    (again, _) = leave_largest_out(points(moved))
    assert again.predicted == pytest.approx(first.predicted, abs=1e-12)  # not fitted on it
    assert again.error_points == pytest.approx(20.0, abs=0.01)


def test_two_budget_rows_borrow_the_family_exponent_not_their_own_largest() -> None:
    # Three CNN rows at 10k and 30k (tiny's budgets): each row's 30k is predicted from its 10k
    # and the median exponent of the other two rows, never from its own 30k.
    truth = {"cnn-d1": (0.5, 0.2, 0.0), "cnn-d2": (0.45, 0.25, 0.0), "cnn-d3": (0.4, 0.3, 0.0)}
    table = law_table(truth, sizes=[10_000, 30_000])
    found = {lo.row: lo for lo in leave_largest_out(points(table))}
    d1 = found["cnn-d1"]
    assert d1.how == "family exponent b=0.27 (cnn-d2, cnn-d3)"  # median of 0.25 and 0.3
    assert d1.predicted == pytest.approx(1 - 0.5 * 3 ** (-0.275), abs=1e-6)
    moved = table.copy()
    moved.loc[(moved["row"] == "cnn-d1") & (moved["budget"] == 30_000), "mean"] = 0.99
    assert {lo.row: lo for lo in leave_largest_out(points(moved))}["cnn-d1"].predicted == (
        pytest.approx(d1.predicted, abs=1e-12)
    )


def test_law_markdown_predicts_the_next_budget_and_places_the_paper() -> None:
    # Rows near the paper's CIFAR-10 numbers at 1M-10M: the paper's 31.6M is inside the
    # interval for cnn-d2 (drawn from a law through it) and above it for an MLP far below.
    table = law_table(
        {"cnn-d2": (0.04, 0.35, 0.09), "mlp-d1": (0.10, 0.30, 0.50)},
        sizes=[1_000_000, 3_160_000, 10_000_000],
    )
    md = law_markdown(points(table), paper=load_paper_table())
    assert "predicted at 31.6M" in md or "predicted at 31.5M" in md
    rows = {
        ln.split("|")[1].strip() + "@" + ln.split("|")[2].strip(): ln
        for ln in md.splitlines()
        if ln.startswith("| ") and "M |" in ln
    }
    assert rows["mlp-d1@31.6M"].rstrip(" |").endswith("above")
    assert "Leave-largest-out" in md and "own fit on 2 budgets" in md
    assert "paper's numbers against" not in law_markdown(points(table))  # not given: not placed


def test_reports_carry_the_law_and_figure1_its_extrapolation(tmp_path: Path) -> None:
    from test_report import TRIALS

    d = write_results(tmp_path / "exp-law", results_rows(TRIALS))
    rep = make_report(d, compare_with_paper=True, paper_task=True)
    md = (d / "report" / "sizelaw.md").read_text()
    assert rep.laws == md and "| cnn-d2 | power |" in md and "predicted at 9.99M" in md
    assert "paper's numbers against" in md  # CIFAR-10 said: placed against the paper
    assert (d / "report" / "figure1.png").stat().st_size > 0
    assert "paper's numbers against" not in make_report(d, compare_with_paper=True).laws


@pytest.mark.parametrize("source", ["cifar10", "synthetic-sep:8000:16:2"])
def test_study_report_gives_the_next_budget_and_the_paper_only_on_cifar10(
    tmp_path: Path, source: str
) -> None:
    from raydistill.report import is_paper_task
    from raydistill.study.report import report_markdown
    from raydistill.study.scale import load_scale

    d = write_results(tmp_path / "study", results_rows())
    repeats = law_table(
        {"cnn-d1": (0.3, 0.4, 0.05), "cnn-d2": (0.25, 0.4, 0.04)}, sizes=[1_000_000, 3_160_000]
    )
    rep = make_report(d, compare_with_paper=True, repeats=repeats, paper_task=is_paper_task(source))
    text = report_markdown(load_scale("tiny"), rep, repeats, {"search": 1.0}, source, {})
    assert "seed repeats" in text and "predicted at 9.99M" in text
    line = next(ln for ln in text.splitlines() if ln.startswith("| cnn-d1 | power |"))
    acc = float(line.split("|")[5])
    e1, e2 = 0.35, 0.3 * 3.16 ** (-0.4) + 0.05  # the power law through the two points
    b = np.log(e1 / e2) / np.log(3.16)
    assert acc == pytest.approx(100 * (1 - e1 * 9.99 ** (-b)), abs=0.02)
    placed = "paper's numbers against the laws (CIFAR-10" in text
    assert placed == (source == "cifar10")
    assert ("this study's is not" in text) == (source != "cifar10")
