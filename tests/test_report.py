"""Table 2, Figure 1 and the Pareto fronts on a results table generated here with pyarrow.

The cnn-d2@1M cell is built so that the best trial by validation accuracy is not the best by
test accuracy, and the 6th trial by validation has the best test accuracy: the paper's rule
(mean test accuracy of the 5 best by *validation*, finished/stopped trials only) gives 89.20,
any other rule a different number. Running, errored and diverged trials must not count.
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from raydistill.cli import main
from raydistill.core.errors import UserError
from raydistill.core.manifest import build_manifest, write_manifest
from raydistill.report import compare_paper, load_paper_table, make_report

M1, M3 = 1_000_000, 3_160_000

# (family, depth, budget, loss, [(status, val/acc, test/acc), ...]); params = budget - 1000·depth
TRIALS = [
    ("cnn", 2, M1, "l2_logits", [
        ("finished", 0.95, 0.80),  # best by validation, poor on test
        ("finished", 0.94, 0.90),
        ("stopped", 0.93, 0.91),
        ("finished", 0.92, 0.92),
        ("finished", 0.91, 0.93),  # 5th by validation
        ("finished", 0.90, 0.99),  # 6th by validation, best on test: outside the top 5
        ("running", 0.99, 0.99),
        ("diverged", 0.98, 0.98),
        ("error", None, None),
    ]),
    ("cnn", 2, M1, "hard", [("finished", 0.70, 0.71), ("finished", 0.60, 0.65)]),
    ("cnn", 1, M1, "l2_logits", [("finished", 0.86, 0.85), ("finished", 0.84, 0.86)]),
    ("cnn", 1, M3, "l2_logits", [("finished", 0.84, 0.83)]),
    ("cnn", 2, M3, "l2_logits", [("finished", 0.89, 0.88), ("stopped", 0.85, 0.90)]),
    ("mlp", 1, M1, "l2_logits", [("finished", 0.60, 0.61)]),
    ("mlp", 1, M3, "l2_logits", [("running", None, None), ("running", 0.5, None), ("error", None, None)]),
]  # fmt: skip


def results_rows(trials=TRIALS, experiment: str = "exp-r") -> list[dict]:
    """trials.parquet rows with the search's schema (checkpoint paths are not needed here)."""
    from raydistill.students.budget import format_budget

    rows = []
    for family, depth, budget, loss, runs in trials:
        cell = f"{family}-d{depth}@{format_budget(budget)}"
        for i, (status, val, test) in enumerate(runs):
            params = budget - 1000 * depth
            rows.append({
                "experiment": experiment, "cell": cell, "family": family, "depth": depth,
                "budget": budget, "trial_id": f"{cell}-{loss}-{i}", "status": status,
                "config": json.dumps({"lr": 0.01 * (i + 1), "loss": loss}),
                "spec": json.dumps({"family": family, "depth": depth}), "widths": [8, 16],
                "params": params, "params/budget": params / budget, "val/acc": val,
                "val/loss": None if val is None else 1 - val, "test/acc": test, "epochs": 10,
                "best_epoch": 7, "wall_s": 1.5, "checkpoint": f"/nowhere/{cell}/{i}", "seed": i,
                "loss": loss,
            })  # fmt: skip
    return rows


def write_results(d: Path, rows: list[dict], teacher: dict | None = None) -> Path:
    d.mkdir(parents=True, exist_ok=True)
    schema = pa.schema([
        ("experiment", pa.string()), ("cell", pa.string()), ("family", pa.string()),
        ("depth", pa.int64()), ("budget", pa.int64()), ("trial_id", pa.string()),
        ("status", pa.string()), ("config", pa.string()), ("spec", pa.string()),
        ("widths", pa.list_(pa.int32())), ("params", pa.int64()), ("params/budget", pa.float64()),
        ("val/acc", pa.float64()), ("val/loss", pa.float64()), ("test/acc", pa.float64()),
        ("epochs", pa.int64()), ("best_epoch", pa.int64()), ("wall_s", pa.float64()),
        ("checkpoint", pa.string()), ("seed", pa.int64()), ("loss", pa.string()),
    ])  # fmt: skip
    pq.write_table(pa.Table.from_pylist(rows, schema=schema), d / "trials.parquet")
    extra = {"teacher": teacher} if teacher else None
    write_manifest(
        d, build_manifest("search", {}, seeds=[0], dataset_fingerprint="f" * 16, extra=extra)
    )
    return d


@pytest.fixture()
def search_dir(tmp_path: Path) -> Path:
    return write_results(tmp_path / "exp-r", results_rows(), {"val_acc": 0.96, "test_acc": 0.95})


def test_table2_follows_the_top5_by_validation_rule(search_dir: Path) -> None:
    rep = make_report(search_dir)
    s = rep.stats.set_index(["row", "budget"])
    c = s.loc[("cnn-d2", M1)]
    assert c["top_k"] == 5
    assert c["mean_test_acc"] == pytest.approx((0.80 + 0.90 + 0.91 + 0.92 + 0.93) / 5)
    assert c["best_test_acc"] == pytest.approx(0.80) and c["kth_test_acc"] == pytest.approx(0.93)
    assert c["best_trial"] == "cnn-d2@1M-l2_logits-0"
    counts = {k: c[f"n_{k}"] for k in ("finished", "stopped", "running", "diverged", "error")}
    assert counts == {"finished": 5, "stopped": 1, "running": 1, "diverged": 1, "error": 1}
    assert s.loc[("cnn-d1", M1), "mean_test_acc"] == pytest.approx(0.855)  # fewer than 5: all
    assert s.loc[("cnn-d1", M1), "best_test_acc"] == pytest.approx(0.85)
    hard = s.loc[("cnn-d2 (hard)", M1)]
    assert hard["mean_test_acc"] == pytest.approx(0.68) and hard["best_test_acc"] == pytest.approx(
        0.71
    )

    t = rep.table2
    assert list(t.columns) == ["1M", "3.16M"]
    assert list(t.index) == ["cnn-d1", "cnn-d2", "cnn-d2 (hard)", "mlp-d1", "teacher ensemble"]
    assert t.loc["cnn-d2", "1M"] == "89.20 (80.00) n=5"
    assert t.loc["cnn-d2", "3.16M"] == "89.00 (88.00) n=2"  # finished + plateau-stopped
    assert t.loc["cnn-d2 (hard)", "3.16M"] == ""  # no twin at that budget
    assert t.loc["mlp-d1", "3.16M"] == "–"  # nothing finished yet
    assert t.loc["teacher ensemble", "1M"] == "95.00"
    md = (search_dir / "report" / "table2.md").read_text()
    assert "| cnn-d2 | 89.20 (80.00) n=5 | 89.00 (88.00) n=2 |" in md


def test_table2_csv_holds_the_numbers(search_dir: Path) -> None:
    make_report(search_dir)
    csv = pd.read_csv(search_dir / "report" / "table2.csv", index_col="model")
    assert csv.loc["cnn-d2", "1M mean"] == pytest.approx(0.892)
    assert csv.loc["cnn-d2", "1M best"] == pytest.approx(0.80)
    assert csv.loc["cnn-d2", "1M n"] == 5
    assert csv.loc["teacher ensemble", "3.16M mean"] == pytest.approx(0.95)
    cells = pd.read_csv(search_dir / "report" / "cells.csv")
    assert len(cells) == 7 and set(cells["budget_label"]) == {"1M", "3.16M"}


def test_unfinished_cells_are_reported(search_dir: Path) -> None:
    md = make_report(search_dir).markdown
    assert "## Not finished" in md
    assert "- mlp-d1 @ 3.16M: 2 running, 1 error (0 done)" in md
    assert "- cnn-d2 @ 1M: 1 running, 1 error, 1 diverged (6 done)" in md
    assert "- cnn-d1 @ 1M" not in md


def test_best_configs_and_pareto_front(search_dir: Path) -> None:
    rep = make_report(search_dir)
    best = rep.best_configs.set_index("row")
    assert best.loc["cnn-d2", "trial_id"].tolist() == [
        "cnn-d2@1M-l2_logits-0",
        "cnn-d2@3.16M-l2_logits-0",
    ]
    assert rep.cells == ["cnn-d1@1M", "cnn-d1@3.16M", "cnn-d2@1M", "cnn-d2@3.16M", "mlp-d1@1M"]
    front = pd.read_csv(search_dir / "report" / "pareto.csv")
    on = {(r.cell, bool(r.on_front)) for r in front.itertuples()}
    # cnn by params: d2@1M (998k, 80%) front; d1@1M (999k, 85%) front; d2@3.16M (88%) front;
    # d1@3.16M (83%) dominated. The hard twin is no point of the front.
    assert on == {
        ("cnn-d2@1M", True),
        ("cnn-d1@1M", True),
        ("cnn-d1@3.16M", False),
        ("cnn-d2@3.16M", True),
        ("mlp-d1@1M", True),
    }


def test_figures_are_small_valid_pngs(search_dir: Path) -> None:
    from PIL import Image

    rep = make_report(search_dir)
    for key in ("figure1", "pareto_png"):
        path = rep.paths[key]
        data = path.read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n"
        assert len(data) <= 200 * 1024
        with Image.open(path) as im:
            im.verify()
        with Image.open(path) as im:
            assert im.size[0] >= 500 and im.size[1] >= 350
            colors = im.convert("RGB").getcolors(maxcolors=1 << 16)
            assert colors is None or len(colors) > 10  # lines, band and text were drawn


def test_without_twins_hard_trials_are_main_rows(tmp_path: Path) -> None:
    trials = [("mlp", 1, M1, "hard", [("finished", 0.5, 0.52)])]
    d = write_results(tmp_path / "labels-only", results_rows(trials))
    rep = make_report(d)
    assert list(rep.table2.index) == ["mlp-d1"]  # no teacher row: the manifest records none
    assert "teacher" not in rep.markdown


def test_compare_paper(search_dir: Path) -> None:
    shipped = load_paper_table()
    assert "1603.05691" in shipped["source"]
    for row in shipped["rows"].values():  # only numbers with a source, never placeholders
        assert all(0 < float(v) <= 100 for v in row.values())
    rep = make_report(search_dir, compare_with_paper=True, paper_task=True)
    assert "| cnn-d3 | 90.70 |" in rep.paths["compare_paper"].read_text()
    # Another task (here: a search whose data is not CIFAR-10): no paper numbers beside ours
    other = make_report(search_dir, compare_with_paper=True, paper_task=False)
    text = other.paths["compare_paper"].read_text()
    assert "Not compared: the paper measured CIFAR-10" in text and "90.70" not in text
    md = compare_paper(
        rep.stats, {"source": "test", "rows": {"cnn-d2": {"1M": 90.0, "31.6M": 91.0}}}
    )
    # Side by side: the paper's budgets, then ours; '–' where a row or budget was not run.
    assert "| model | paper 1M | paper 31.6M | ours 1M | ours 3.16M |" in md
    assert "| cnn-d2 | 90.00 | 91.00 | 89.20 | 89.00 |" in md
    assert "| mlp-d1 | – | – | 61.00 | – |" in md
    # The shipped file: the paper's distilled rows at 4 budgets, hard-label twins at 10M.
    assert shipped["rows"]["cnn-d3"] == {"1M": 90.7, "3.16M": 91.6, "10M": 91.9, "31.6M": 92.3}
    assert shipped["rows"]["cnn-d1 (hard)"] == {"10M": 84.6}
    assert shipped["teacher"] == 93.8


def test_bad_inputs(tmp_path: Path) -> None:
    with pytest.raises(UserError, match=r"trials\.parquet does not exist"):
        make_report(tmp_path)
    rows = results_rows()
    pq.write_table(
        pa.Table.from_pylist([{k: v for k, v in r.items() if k != "val/acc"} for r in rows]),
        tmp_path / "trials.parquet",
    )
    with pytest.raises(UserError, match=r"lacks column\(s\) \['val/acc'\]"):
        make_report(tmp_path)
    rows[0]["status"] = "paused"
    write_results(tmp_path, rows)
    with pytest.raises(UserError, match="unknown trial status 'paused'"):
        make_report(tmp_path)


def test_cli_report(search_dir: Path, tmp_path: Path, capsys) -> None:
    assert main(["report", str(search_dir), "--compare-paper"]) == 0
    out = capsys.readouterr().out
    assert "| cnn-d2 | 89.20 (80.00) n=5 |" in out and "figure1.png" in out
    assert main(["report", str(tmp_path / "missing")]) == 2
    assert "trials.parquet does not exist" in capsys.readouterr().err


def test_teacher_from_the_transfer_set_named_in_the_manifest(tmp_path: Path) -> None:
    from raydistill.distill.transfer.format import META_KEY

    ts = tmp_path / "transfer.parquet"
    meta = {"ensemble_val_acc": 0.93, "ensemble_test_acc": 0.925}
    table = pa.table({"x": [1]}).replace_schema_metadata({META_KEY: json.dumps(meta)})
    pq.write_table(table, ts)
    d = write_results(tmp_path / "e", results_rows(TRIALS[:1]))
    manifest = json.loads((d / "manifest.json").read_text())
    write_manifest(d, {**manifest, "config": {"transfer": str(ts)}})
    rep = make_report(d)
    assert rep.teacher == {"val_acc": 0.93, "test_acc": 0.925}
    assert rep.table2.loc["teacher ensemble", "1M"] == "92.50"


def test_nothing_finished_yet(tmp_path: Path) -> None:
    trials = [("cnn", 2, M1, "l2_logits", [("running", 0.5, None), ("error", None, None)])]
    d = write_results(tmp_path / "early", results_rows(trials))
    rep = make_report(d)
    assert rep.cells == [] and rep.pareto.empty
    assert rep.table2.loc["cnn-d2", "1M"] == "–"
    assert "- cnn-d2 @ 1M: 1 running, 1 error (0 done)" in rep.markdown
    assert rep.paths["figure1"].read_bytes()[:4] == b"\x89PNG"
