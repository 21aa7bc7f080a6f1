"""`raydistill reproduce`: scale files validated; the demo study end to end, and its students learn."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml

from raydistill.core.errors import UserError
from raydistill.study.reproduce import prepare
from raydistill.study.scale import SCALES_DIR, load_scale


@pytest.mark.parametrize("name", sorted(p.stem for p in SCALES_DIR.glob("*.yaml")))
def test_every_shipped_scale_validates(name: str) -> None:
    from raydistill.search.spaces.load import load_space
    from raydistill.students import get_family

    sc = load_scale(name)
    assert sc.name == name
    for space in [*sc.search.spaces, sc.hard_twins.space]:
        load_space(space)
    assert get_family(sc.teacher.family).kind == "teacher"
    assert sc.seeds >= 2  # findings are judged against the noise over seeds
    prepare(sc)  # the spaces with the scale's overrides validate too


def test_the_paper_scale_puts_the_twins_at_10m() -> None:
    assert load_scale("paper").hard_twins.budget == "10M"


def _write(tmp_path: Path, mutate) -> Path:
    raw = yaml.safe_load((SCALES_DIR / "tiny.yaml").read_text())
    mutate(raw)
    path = tmp_path / "scale.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


@pytest.mark.parametrize(
    ("mutate", "match"),
    [
        (lambda r: r.update(extra=1), "extra: unknown key; valid: name, description, data"),
        (lambda r: r["search"].update(budget="1M"), "search.budget"),
        (lambda r: r["search"].pop("trials"), "search.trials: Field required"),
        (lambda r: r["search"].update(budgets=["1X"]), "1X"),
        (lambda r: r["teacher"].update(members=0), "teacher.members"),
        (lambda r: r["search"].update(searcher="grid"), "search.searcher.*'tpe', 'gp' or 'random'"),
        (lambda r: r.update(seeds=0), "seeds"),
    ],
)
def test_bad_scale_files_are_one_line_errors(tmp_path: Path, mutate, match: str) -> None:
    with pytest.raises(UserError, match=match) as info:
        load_scale(_write(tmp_path, mutate))
    assert "scale.yaml" in str(info.value) and "\n" not in str(info.value)


def test_unknown_scale_name_lists_the_shipped_ones() -> None:
    with pytest.raises(UserError, match="valid: demo, extended, paper, small, tiny"):
        load_scale("huge")


def test_a_missing_space_is_refused_before_anything_runs(tmp_path: Path) -> None:
    path = _write(tmp_path, lambda r: r["search"].update(spaces=["mlp", "nope"]))
    with pytest.raises(UserError, match="nope"):
        prepare(path)


def test_command_line_overrides_reach_the_scale() -> None:
    sc = prepare("tiny", split_seed=7, seeds=3)
    assert (sc.data.seed, sc.seeds) == (7, 3)
    with pytest.raises(UserError, match="--seeds 0"):
        prepare("tiny", seeds=0)


@pytest.mark.slow
def test_demo_study_end_to_end_students_learn(tmp_path: Path) -> None:
    out = tmp_path / "study"
    cmd = [
        sys.executable,
        "-m",
        "raydistill",
        "reproduce",
        "--scale",
        "demo",
        "--out",
        str(out),
        "--wandb",
        "off",
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=1200)
    assert proc.returncode == 0, proc.stderr[-3000:]
    for rel in [
        "REPORT.md",
        "timings.json",
        "transfer.parquet",
        "teacher/manifest.json",
        "search/trials.parquet",
        "twins/trials.parquet",
        "study/trials.parquet",
        "study/seeds.csv",
        "study/repeats.csv",
        "study/report/table2.md",
        "study/report/figure1.png",
        "study/report/compare_paper.md",
    ]:
        assert (out / rel).is_file(), rel
    repeats = pd.read_csv(out / "study" / "repeats.csv")
    assert (repeats["n"] == 2).all()
    # Students learn: the convolutional rows (cnn, all-conv, the hard-label twin) well above
    # chance (50 %).
    conv = repeats[repeats["family"].isin(["cnn", "allconv"])]
    assert len(conv) == 3 and (conv["mean"] > 0.7).all(), conv.to_string()
    report = (out / "REPORT.md").read_text()
    assert "Rule: A comparison A > B is clear" in report
    for claim in ["every MLP student below every CNN", "rises with conv depth", "hard labels"]:
        assert claim in report
    # Finding 1 is testable here (MLP and CNN rows at one budget), judged with its noise
    finding1 = next(ln for ln in report.splitlines() if "every MLP student below" in ln)
    assert "not testable" not in finding1 and "noise" in report.split(finding1, 1)[1][:400]
    # Synthetic task: no paper numbers beside ours; no stray line from the search's table
    assert "Not compared: the paper measured CIFAR-10" in report
    assert "All trials have ended." not in report
    exported = [p for p in (out / "export").iterdir() if (p / "spec.json").is_file()]
    assert len(exported) == 4  # mlp-d1, cnn-d1, allconv-d1 and the all-conv hard-label twin


@pytest.mark.parametrize("value", ["auto", 0.5])
def test_a_scale_takes_a_gpu_share_or_auto(tmp_path: Path, value) -> None:
    path = _write(tmp_path, lambda r: r["search"].update(gpus_per_trial=value))
    assert load_scale(str(path)).search.gpus_per_trial == value


@pytest.mark.parametrize("value", [-1, "lots", True])
def test_a_bad_gpu_share_is_one_line(tmp_path: Path, value) -> None:
    path = _write(tmp_path, lambda r: r["search"].update(gpus_per_trial=value))
    with pytest.raises(
        UserError, match=r"search.gpus_per_trial=.*valid: a share of one GPU ≥ 0, or 'auto'"
    ):
        load_scale(str(path))
