"""The sample-efficiency study: the fit on synthetic curves with known exponents (no Ray), the
judging rule, and a 2×2 grid of 1-epoch cells end to end on a real local Ray (`ray_local`)."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest

from raydistill.core.errors import UserError
from raydistill.study.sample_efficiency import fit


def synthetic_results(exponents: dict[str, float], *, seeds: int = 4, noise: float = 0.0):
    """Accuracy curves acc = 1 − ½·exp(−n / (c·d^b)) per family; n* at 75% is c·ln2·d^b (c = 30)."""
    rng = np.random.default_rng(0)
    ds, ns = [16, 32, 64, 128], np.unique(np.round(np.logspace(1, 7, 49)).astype(int))
    rows = []
    for fam, b in exponents.items():
        for d in ds:
            for seed in range(seeds):
                scale = 30.0 * d**b * math.exp(noise * rng.standard_normal())  # per-seed jitter
                acc = 1 - 0.5 * np.exp(-ns / scale)
                rows += [
                    {"family": fam, "d": d, "n": int(n), "seed": seed, "test_acc": a}
                    for n, a in zip(ns, acc, strict=True)
                ]
    return pd.DataFrame(rows)


def test_fit_recovers_known_exponents():
    results = synthetic_results({"cnn": 0.0, "mlp": 2.0, "mid": 1.0})
    cross = fit.crossings(fit.curves(results), target=0.75)
    for fam, b in (("cnn", 0.0), ("mlp", 2.0), ("mid", 1.0)):
        g = cross[cross["family"] == fam]
        assert (g["censored"] == "").all()
        est = fit.fit_power_law(g["d"], g["n_star"])
        assert est.points == 4 and abs(est.b - b) < 0.05, (fam, est)
        # n* = 30·ln2·d^b: the intercept too (interpolation in log n on a factor-1.33 grid).
        assert abs(est.a - math.log10(30 * math.log(2))) < 0.06


def test_fit_noise_from_seeds_and_findings():
    results = synthetic_results({"cnn": 0.0, "mlp": 2.0}, noise=0.2)
    an = fit.analyse(results, 0.75, conv="cnn", fc="mlp", reps=60)
    assert abs(an.fits["mlp"].b - 2.0) < 0.3 and abs(an.fits["cnn"].b) < 0.3
    assert 0 < an.b_sd["mlp"] < 0.5 and an.b_ci["mlp"][0] < an.fits["mlp"].b < an.b_ci["mlp"][1]
    verdicts = {f.claim: f.verdict for f in an.findings}
    assert verdicts["exponent of mlp exceeds that of cnn (gap grows with d)"] == "holds"
    assert verdicts["exponent of mlp is near 2"] == "holds"
    assert verdicts["exponent of cnn is near 0"] == "holds"
    assert verdicts["d=128: cnn needs fewer samples than mlp"] == "holds"
    # The reverse claim on the same numbers does not hold; equal curves are inconclusive.
    swapped = fit.analyse(results, 0.75, conv="mlp", fc="cnn", reps=20)
    assert {f.verdict for f in swapped.findings if "exceeds" in f.claim} == {"does not hold"}
    same = synthetic_results({"a": 1.0, "b": 1.0}, noise=0.2)
    same.loc[same["family"] == "b", "seed"] += 10  # other seeds, same law
    eq = fit.analyse(same, 0.75, conv="a", fc="b", reps=40)
    assert next(f for f in eq.findings if "exceeds" in f.claim).verdict == "inconclusive"


def test_crossing_censoring_and_judge():
    assert fit.n_to_target([10, 100], [0.8, 0.9], 0.75) == fit.Crossing(10.0, "below")
    assert math.isnan(fit.n_to_target([10, 100], [0.5, 0.6], 0.75).n)
    mid = fit.n_to_target([100, 10], [0.9, 0.7], 0.8)  # unsorted input; halfway in log n
    assert mid.censored == "" and abs(mid.n - math.sqrt(1000)) < 1e-9
    assert math.isnan(fit.fit_power_law([10, 20], [5.0, math.nan]).b)
    assert fit.judge(0.3, 0.1) == "holds" and fit.judge(-0.3, 0.1) == "does not hold"
    assert fit.judge(0.1, 0.1) == "inconclusive" and fit.judge(0.5, math.nan) == "inconclusive"


def test_study_validates_arguments(tmp_path):
    from raydistill.study.sample_efficiency.run import sample_efficiency_study

    for kw in (
        {"sizes": [4]},
        {"ns": [64]},
        {"families": ["mlp", "cnn"]},
        {"target": 0.4},
        {"wandb": "maybe"},
    ):
        with pytest.raises(UserError):
            sample_efficiency_study(tmp_path / "x", **kw)


@pytest.mark.slow
def test_two_by_two_grid_end_to_end(ray_local, tmp_path):
    """2 sizes × 2 n × 1 seed, 1 epoch: 4 Tune runs of 2 cells; report, PNG, W&B summary."""
    from wandb_log import read_offline_run

    from raydistill.study.sample_efficiency.run import sample_efficiency_study
    from raydistill.tracking.tracker import run_id

    out = tmp_path / "se"
    kw = {
        "sizes": (3, 4),
        "ns": (32, 64),
        "seeds": (0,),
        "epochs": 1,
        "min_samples": 0,
        "families": ("cnn", "mlp"),
        "budget": "5k",
        "verbose": 0,
    }
    report = sample_efficiency_study(out, wandb="offline", **kw)
    assert report == out.resolve() / "REPORT.md"
    results = pd.read_csv(out / "results.csv")
    assert len(results) == 8 and set(results["family"]) == {"cnn", "mlp"}
    assert sorted(results["d"].unique()) == [18, 32] and sorted(results["n"].unique()) == [32, 64]
    assert (results["status"] == "finished").all() and (results["epochs"] == 1).all()
    assert (results["params"] <= 5000).all() and results["test_acc"].between(0, 1).all()
    text = report.read_text()
    assert "| cnn | 18 |" in text and fit.RULE in text and "exponent of mlp" in text
    # One seed: no noise measured, so no finding can hold or fail.
    findings = pd.read_csv(out / "findings.csv")
    assert set(findings["verdict"]) == {"inconclusive"}
    assert (out / "sample_efficiency.png").read_bytes()[:4] == b"\x89PNG"
    assert json.loads((out / "manifest.json").read_text())["kind"] == "sample-efficiency"
    summary = read_offline_run(out, run_id("sample-efficiency", "summary", "summary"))
    assert summary.summary["status"] == "finished"
    # Run again: every cell is reused (no new trials), the numbers are the same.
    sample_efficiency_study(out, wandb="off", **kw)
    again = pd.read_csv(out / "results.csv")
    pd.testing.assert_frame_equal(again, results)
