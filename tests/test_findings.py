"""The findings against their noise, and the one best-trial rule, on hand-built tables."""

from __future__ import annotations

import pandas as pd
import pytest

from raydistill.core import results
from raydistill.report import cell_stats, load_results
from raydistill.study.findings import Estimate, compare, judge
from raydistill.study.repeats import repeat_jobs, summarize


def _cells(rows: list[tuple[str, float, float]], n: int = 2, budget: int = 100_000) -> pd.DataFrame:
    out = []
    for row, mean, std in rows:
        fam, depth = row.split("-d")[0], int(row.split("-d")[1].split(" ")[0])
        out.append(
            {
                "row": row,
                "family": fam,
                "depth": depth,
                "budget": budget,
                "twin": row.endswith("(hard)"),
                "n": n,
                "mean": mean,
                "std": std,
            }
        )
    return pd.DataFrame(out)


PAPER_LIKE = [
    ("mlp-d1", 0.40, 0.005), ("mlp-d2", 0.42, 0.005), ("cnn-d1", 0.55, 0.005),
    ("cnn-d2", 0.62, 0.005), ("cnn-d3", 0.66, 0.005), ("cnn-d1 (hard)", 0.45, 0.005),
    ("cnn-d2 (hard)", 0.58, 0.005), ("cnn-d3 (hard)", 0.63, 0.005),
]  # fmt: skip


def test_compare_is_clear_reversed_or_within_noise() -> None:
    a, b = Estimate(0.60, 0.01, 2), Estimate(0.55, 0.01, 2)
    state, margin, noise = compare(a, b)
    assert state == "clear" and margin == pytest.approx(0.05)
    assert noise == pytest.approx(2 * (0.01**2 / 2 * 2) ** 0.5)
    assert compare(b, a)[0] == "reversed"
    assert compare(Estimate(0.56, 0.02, 2), b)[0] == "within noise"


def test_paper_like_numbers_hold() -> None:
    assert [f.verdict for f in judge(_cells(PAPER_LIKE))] == ["holds"] * 3


def test_reversals_do_not_hold_and_small_margins_are_inconclusive() -> None:
    flipped = dict((r, (m, s)) for r, m, s in PAPER_LIKE)
    flipped["mlp-d2"] = (0.60, 0.005)  # above cnn-d1 by far more than the noise
    flipped["cnn-d3"] = (0.58, 0.005)  # below cnn-d2
    flipped["cnn-d1 (hard)"] = (0.545, 0.005)  # d1 gains least
    found = judge(_cells([(r, m, s) for r, (m, s) in flipped.items()]))
    assert [f.verdict for f in found] == ["does not hold"] * 3
    # The same ordering as the paper's, but every margin inside a large noise: inconclusive.
    noisy = [(r, m, 0.2) for r, m, _ in PAPER_LIKE]
    assert [f.verdict for f in judge(_cells(noisy))] == ["inconclusive"] * 3


def test_the_median_std_floors_every_cell_and_one_noisy_cell_keeps_its_own() -> None:
    rows = [(r, m, 0.0) for r, m, _ in PAPER_LIKE]
    assert [f.verdict for f in judge(_cells(rows))] == ["holds"] * 3
    # Most cells at std 0.03 (the median): cnn-d1 → cnn-d2 (+0.07) and cnn-d2 → cnn-d3 (+0.04)
    # have noise 2·√(2·0.03²/2) = 0.06: the second is within it.
    rows = [(r, m, 0.03) for r, m, _ in PAPER_LIKE]
    assert judge(_cells(rows))[1].verdict == "inconclusive"
    # One unstable cell does not set the noise of the others (a root-mean-square floor would).
    rows = [(r, m, 0.005) for r, m, _ in PAPER_LIKE]
    rows[0] = ("mlp-d1", 0.40, 0.25)
    found = judge(_cells(rows))
    assert found[1].verdict == "holds"  # CNN depths: compared at the median std
    assert found[0].verdict == "holds"  # the best MLP by mean is mlp-d2, a steady cell


def test_hard_label_twins_are_not_students_of_the_mlp_cnn_comparison() -> None:
    rows = dict((r, (m, s)) for r, m, s in PAPER_LIKE)
    rows["cnn-d1 (hard)"] = (0.30, 0.005)  # a twin below every MLP: finding 3's business only
    found = judge(_cells([(r, m, s) for r, (m, s) in rows.items()]))
    assert found[0].verdict == "holds"
    assert "cnn-d1 55.00" in found[0].details[0]


def test_missing_rows_are_not_testable() -> None:
    found = judge(_cells([("mlp-d1", 0.4, 0.01), ("cnn-d1", 0.5, 0.01)]))
    assert found[0].verdict == "holds"
    assert [f.verdict for f in found[1:]] == ["not testable"] * 2


def _trials(tmp_path) -> pd.DataFrame:
    """A hand-built trials table: finished, plateau-stopped, ASHA-pruned, diverged, errored."""
    rows = [
        # trial, status, pruned, val, test
        ("t1", "finished", False, 0.60, 0.58),
        ("t2", "stopped", False, 0.62, 0.61),  # the plateau rule stopped it: counts
        ("t3", "stopped", True, 0.70, None),  # pruned by ASHA: never counts, even with best val
        ("t4", "diverged", False, 0.65, 0.10),
        ("t5", "error", False, None, None),
        ("t6", "finished", False, 0.55, 0.50),
    ]
    df = pd.DataFrame([{
        "experiment": "x", "cell": "cnn-d1@100k", "family": "cnn", "depth": 1, "budget": 100_000,
        "trial_id": t, "status": s, "pruned": p, "val/acc": v, "test/acc": te, "loss": "l2_logits",
        "params": 99_000, "spec": '{"family": "cnn"}', "train": '{"lr": 0.01}',
    } for t, s, p, v, te in rows])  # fmt: skip
    df.to_parquet(tmp_path / "trials.parquet", index=False)
    return load_results(tmp_path)


def test_best_trial_rule_excludes_pruned_diverged_and_errored(tmp_path) -> None:
    df = _trials(tmp_path)
    assert results.rank(df)["trial_id"].tolist() == ["t2", "t1", "t6"]
    assert results.best(df)["trial_id"].tolist() == ["t2"]


def test_table2_counts_only_eligible_trials(tmp_path) -> None:
    stats = cell_stats(_trials(tmp_path), top_k=5).iloc[0]
    assert stats["top_k"] == 3  # n: t2, t1, t6
    assert stats["mean_test_acc"] == pytest.approx((0.61 + 0.58 + 0.50) / 3)
    assert stats["best_test_acc"] == pytest.approx(0.61)
    assert (stats["n_finished"], stats["n_stopped"], stats["n_diverged"], stats["n_error"]) == (
        2,
        2,
        1,
        1,
    )


def test_repeats_use_the_best_trial_and_summarise_mean_and_std(tmp_path) -> None:
    jobs = repeat_jobs(_trials(tmp_path), seeds=2)
    assert [(j["trial_id"], j["seed"]) for j in jobs] == [("t2", 1000), ("t2", 1001)]
    runs = pd.DataFrame(
        [
            {**{k: jobs[0][k] for k in ("row", "family", "depth", "budget", "twin")}, "test_acc": a}
            for a in (0.60, 0.64)
        ]
    )
    s = summarize(runs).iloc[0]
    assert (s["n"], s["mean"]) == (2, pytest.approx(0.62))
    assert s["std"] == pytest.approx(0.0282842712, rel=1e-6)


def test_finding_three_is_judged_at_every_budget_with_twins() -> None:
    at_10k = _cells(PAPER_LIKE, budget=10_000)
    assert "10k: cnn-d1 distilled − hard" in judge(at_10k)[2].details[0]
    # At 30k the deepest CNN gains most from the teacher: one reversed budget is enough.
    rows = dict((r, (m, s)) for r, m, s in PAPER_LIKE)
    rows["cnn-d1 (hard)"], rows["cnn-d3 (hard)"] = (0.545, 0.005), (0.60, 0.005)
    at_30k = _cells([(r, m, s) for r, (m, s) in rows.items()], budget=30_000)
    found = judge(pd.concat([at_10k, at_30k], ignore_index=True))[2]
    assert found.verdict == "does not hold"
    assert len(found.details) == 6
    assert "30k: gain at d1 (+0.50) − gain at d3 (+6.00)" in found.details[-1]
    assert found.details[-1].endswith("(reversed)")
