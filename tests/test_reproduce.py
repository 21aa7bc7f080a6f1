"""`raydistill reproduce`: scale files validated; the tiny pipeline end to end on synthetic data."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml

from raydistill.errors import UserError
from raydistill.reproduce import SCALES_DIR, findings, load_scale


@pytest.mark.parametrize("name", sorted(p.stem for p in SCALES_DIR.glob("*.yaml")))
def test_every_shipped_scale_validates(name: str) -> None:
    from raydistill.spaces import load_space
    from raydistill.students import get_family

    sc = load_scale(name)
    assert sc.name == name
    for space in [*sc["search"]["spaces"], sc["hard_twins"]["space"]]:
        load_space(space)
    assert get_family(sc["teacher"]["family"]).kind == "teacher"


def _write(tmp_path: Path, mutate) -> Path:
    raw = yaml.safe_load((SCALES_DIR / "tiny.yaml").read_text())
    mutate(raw)
    path = tmp_path / "scale.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


@pytest.mark.parametrize(
    ("mutate", "match"),
    [
        (lambda r: r.update(extra=1), "unknown key 'extra'"),
        (lambda r: r["search"].update(budget="1M"), "search.budget"),
        (lambda r: r["search"].pop("trials"), "search.trials is missing"),
        (lambda r: r["search"].update(budgets=["1X"]), "1X"),
        (lambda r: r["teacher"].update(members=0), "teacher.members"),
    ],
)
def test_bad_scale_files_are_one_line_errors(tmp_path: Path, mutate, match: str) -> None:
    with pytest.raises(UserError, match=match) as info:
        load_scale(_write(tmp_path, mutate))
    assert "scale.yaml" in str(info.value) and "\n" not in str(info.value)


def test_unknown_scale_name_lists_the_shipped_ones() -> None:
    with pytest.raises(UserError, match="valid: paper, small, tiny"):
        load_scale("huge")


def _stats(rows: list[tuple[str, str, int, bool, float]]) -> pd.DataFrame:
    return pd.DataFrame(
        [
            {"row": r, "family": f, "depth": d, "twin": t, "budget": 100, "mean_test_acc": a}
            for r, f, d, t, a in rows
        ]
    )


def test_findings_follow_the_paper_claims() -> None:
    paper_like = _stats([
        ("mlp-d1", "mlp", 1, False, 0.50), ("mlp-d2", "mlp", 2, False, 0.55),
        ("cnn-d1", "cnn", 1, False, 0.60), ("cnn-d2", "cnn", 2, False, 0.70),
        ("cnn-d3", "cnn", 3, False, 0.75), ("cnn-d1 (hard)", "cnn", 1, True, 0.50),
        ("cnn-d2 (hard)", "cnn", 2, True, 0.66), ("cnn-d3 (hard)", "cnn", 3, True, 0.73),
    ])  # fmt: skip
    assert [f["verdict"] for f in findings(paper_like)] == ["holds"] * 3
    flipped = paper_like.copy()
    flipped.loc[flipped["row"] == "mlp-d2", "mean_test_acc"] = 0.65  # beats cnn-d1
    flipped.loc[flipped["row"] == "cnn-d3", "mean_test_acc"] = 0.68  # below cnn-d2
    flipped.loc[flipped["row"] == "cnn-d1 (hard)", "mean_test_acc"] = 0.59  # smallest gap
    assert [f["verdict"] for f in findings(flipped)] == ["does not hold"] * 3


@pytest.mark.slow
def test_tiny_pipeline_end_to_end_on_synthetic_data(tmp_path: Path) -> None:
    def shrink(r: dict) -> None:
        r["name"] = "ci"
        r["data"].update(source="synthetic-sep:300", val_size=60, train_subset=None)
        r["teacher"].update(members=2, epochs=1, width_scale=0.125)
        r["transfer"]["epochs"] = 1
        r["search"].update(budgets=["20k"], trials=2, max_epochs=1)
        r["hard_twins"].update(budget="20k", trials=2)

    scale = _write(tmp_path, shrink)
    out = tmp_path / "study"
    cmd = [
        sys.executable,
        "-m",
        "raydistill",
        "reproduce",
        "--scale",
        str(scale),
        "--out",
        str(out),
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    for rel in ["REPORT.md", "transfer.parquet", "teacher/manifest.json", "search/trials.parquet",
                "twins/trials.parquet", "study/trials.parquet", "study/report/table2.md",
                "study/report/table2.csv", "study/report/figure1.png", "study/report/pareto.csv",
                "study/report/compare_paper.md"]:  # fmt: skip
        assert (out / rel).is_file(), rel
    trials = pd.read_parquet(out / "study" / "trials.parquet")
    # 9 student rows (MLP 1–5, CNN 1–4) + 4 hard-label twins, 2 trials each, nothing lost.
    assert trials.groupby(["cell", "loss"]).size().eq(2).all()
    assert len(trials) == (9 + 4) * 2
    report = (out / "REPORT.md").read_text()
    for claim in ["MLP students below every CNN", "rises with conv depth", "hard-label twins"]:
        assert claim in report
    exported = [p for p in (out / "export").iterdir() if (p / "spec.json").is_file()]
    assert len(exported) >= 9
