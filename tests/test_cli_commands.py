"""`raydistill prune`, `raydistill study sample-efficiency` and `reproduce --wandb auto`.

`--help` and refusals of bad input import neither torch nor Ray (read from `-X importtime`, as
in tests/test_cli.py); prune runs for real on a tiny trained MLP and synthetic-sep.
"""

from __future__ import annotations

import ast
import inspect
import json
import re
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest

HEAVY = re.compile(r"\|\s+(torch|ray)(\.|$)")
DATA = "synthetic-sep:256:8"  # 256 training images of 3×8×8, 2 classes


def run_cli(*argv: str, cwd: Path | None = None) -> tuple[int, str, str, bool]:
    """(exit status, stdout, stderr without import times, whether torch/ray was imported)."""
    res = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "raydistill", *argv],
        capture_output=True,
        text=True,
        cwd=cwd,
        timeout=120,
    )
    lines = res.stderr.splitlines()
    heavy = any(HEAVY.search(line) for line in lines if line.startswith("import time:"))
    err = "\n".join(line for line in lines if not line.startswith("import time:"))
    return res.returncode, res.stdout, err, heavy


def call_keywords(func, callee: str) -> set[str]:
    """The keyword names `func`'s source passes to `callee(...)` (read with ast, not run)."""
    tree = ast.parse(inspect.getsource(func))
    calls = [
        n
        for n in ast.walk(tree)
        if isinstance(n, ast.Call) and getattr(n.func, "id", None) == callee
    ]
    assert len(calls) == 1, callee
    return {k.arg for k in calls[0].keywords}


@pytest.fixture(scope="module")
def source(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A training checkpoint of an MLP trained for one epoch on DATA (~20k params)."""
    from raydistill.data import load_dataset
    from raydistill.students.budget import solve_budget
    from raydistill.training.checkpoint import save_checkpoint
    from raydistill.training.config import TrainConfig
    from raydistill.training.loop import train_student

    splits = load_dataset(DATA, val_size=64)
    spec = solve_budget(
        "mlp", 1, 20_000, in_shape=list(splits.image_shape), num_classes=splits.num_classes
    ).spec
    cfg = TrainConfig(max_epochs=1, batch_size=64, lr=0.01, loss="hard", device="cpu")
    trained = train_student(spec, splits, None, cfg, evaluate_test=False)
    d = tmp_path_factory.mktemp("source") / "ckpt"
    meta = {"spec": trained.spec, "status": "finished"}
    state = trained.state_dict
    save_checkpoint(d, meta=meta, model=state, best=state, optim={})
    return d


def _params(source: Path) -> int:
    from raydistill.export.prune import load_source
    from raydistill.students.budget import count_params

    return count_params(load_source(source)[0])


def test_help_of_the_new_commands_is_light() -> None:
    for argv in (
        ["prune", "--help"],
        ["study", "--help"],
        ["study", "sample-efficiency", "--help"],
    ):
        code, out, err, heavy = run_cli(*argv)
        assert code == 0 and not err, (argv, err)
        assert not heavy, f"raydistill {' '.join(argv)} imported torch or ray"
        assert "--config" in out
    code, out, *_ = run_cli("reproduce", "--help")
    assert code == 0 and "auto" in out


def test_prune_fine_tunes_writes_and_appends_to_trials(source: Path, tmp_path: Path) -> None:
    out, trials = tmp_path / "pruned", tmp_path / "table" / "trials.parquet"
    code, stdout, err, _ = run_cli(
        "prune", str(source), "--budget", "5k", "--data", DATA, "--val-size", "64",
        "--max-epochs", "1", "--lr", "0.01", "--loss", "hard", "--seed", "1", "--device", "cpu",
        "--out", str(out), "--trials", str(trials),
    )  # fmt: skip
    assert code == 0, err
    assert "prune-mlp-d1@5k" in stdout and "val/acc" in stdout and "params/budget" in stdout
    row = json.loads((out / "prune.json").read_text())
    assert row["cell"] == "prune-mlp-d1@5k" and 0.99 * 5000 <= row["params"] <= 5000
    assert row["status"] == "finished" and row["val/acc"] is not None and row["seed"] == 1
    assert f"test/acc      {100 * row['test/acc']:.2f}%" in stdout
    assert sorted(p.name for p in out.iterdir()) == [
        "checkpoint",
        "manifest.json",
        "model.pt2",
        "model.safetensors",
        "prune.json",
        "spec.json",
    ]  # a student: the export layout, with its fine-tuning checkpoint
    assert (out / "checkpoint" / "checkpoint.json").is_file()
    from raydistill.search import TRIALS_SCHEMA
    from raydistill.training.checkpoint import load_checkpoint_weights

    spec, _ = load_checkpoint_weights(out / "checkpoint")
    assert spec["widths"] == row["widths"]
    table = pq.read_table(trials)
    assert table.schema.names == TRIALS_SCHEMA.names and table.num_rows == 1
    assert table.column("cell").to_pylist() == ["prune-mlp-d1@5k"]
    assert not [p.name for p in trials.parent.iterdir() if p.name.startswith(".")]  # no temp left

    # Without --data: prune only; the row is appended to the same table.
    code, stdout, err, _ = run_cli("prune", str(source), "--budget", "8k", "--trials", str(trials))
    assert code == 0, err
    assert "prune-mlp-d1@8k" in stdout and "test/acc" not in stdout  # nothing was measured
    rows = pq.read_table(trials).to_pylist()
    assert [r["cell"] for r in rows] == ["prune-mlp-d1@5k", "prune-mlp-d1@8k"]
    assert rows[1]["status"] == "pruned-only" and rows[1]["checkpoint"] is None


def test_prune_refusals_are_one_line_and_write_nothing(source: Path, tmp_path: Path) -> None:
    work = tmp_path / "work"
    work.mkdir()
    above = str(_params(source) + 1)
    mismatched = tmp_path / "mismatched"
    from raydistill.students import build
    from raydistill.training.checkpoint import save_checkpoint

    spec = {
        "family": "mlp",
        "depth": 1,
        "widths": [16, 16],
        "in_shape": [3, 8, 8],
        "num_classes": 2,
    }
    other = build({**spec, "widths": [16, 17]}).state_dict()
    save_checkpoint(
        mismatched, meta={"spec": spec, "status": "finished"}, model=other, best=other, optim={}
    )
    outs = ["--out", "out", "--trials", "t/trials.parquet"]
    cases = [
        (["prune", str(source), "--budget", above, *outs], "is above the network's size", True),
        (["prune", str(source), "--budget", above, "--data", DATA, *outs], "is above", True),
        (["prune", str(mismatched), "--budget", "1k", *outs], "does not match its spec", True),
        (["prune", str(tmp_path / "nope"), "--budget", "1k", *outs], "does not exist", False),
        (["prune", str(source), "--budget", "1k", "--data", DATA], "--data needs --out", False),
        (["prune", str(source), "--budget", "1k", "--loss", "kd", *outs], "needs --transfer", False),
    ]  # fmt: skip
    for argv, message, torch_needed in cases:
        code, _, err, heavy = run_cli(*argv, cwd=work)
        assert code == 2, (argv, err)
        assert err.startswith("raydistill: error: ") and "\n" not in err.strip(), (argv, err)
        assert message in err, (argv, err)
        assert torch_needed or not heavy, f"refusing {argv} imported torch or ray"
    assert list(work.iterdir()) == []  # nothing written


def test_study_refusals_are_light_and_one_line(tmp_path: Path) -> None:
    cases = {
        ("--target", "2"): "--target 2.0 is invalid",
        ("--sizes", "3"): "need ≥ 2 distinct image sides",
        ("--families", "mlp,allconv"): "--families mlp,allconv",
        ("--grid", "huge"): "--grid: invalid choice 'huge'; valid: default, large",
    }
    for extra, message in cases.items():
        argv = ["study", "sample-efficiency", "--out", "study", *extra]
        code, _, err, heavy = run_cli(*argv, cwd=tmp_path)
        assert code == 2, (argv, err)
        assert err.startswith("raydistill: error: ") and "\n" not in err.strip(), (argv, err)
        assert message in err, (argv, err)
        assert not heavy, f"refusing {argv} imported torch or ray"
    assert list(tmp_path.iterdir()) == []


def test_study_arguments_reach_the_function(tmp_path: Path) -> None:
    """The grid presets equal the module's, and the CLI passes every parameter of the study."""
    from argparse import Namespace

    from raydistill.cli import parse
    from raydistill.cli.studies import CONV_FAMILIES, GRIDS, study_check, study_run
    from raydistill.study.sample_efficiency import run as se

    assert {k: {n: list(v) for n, v in g.items()} for k, g in se.GRIDS.items()} == GRIDS
    assert CONV_FAMILIES == se.CONV_FAMILIES
    _, kwargs = parse(
        [
            "study",
            "sample-efficiency",
            "--out",
            str(tmp_path / "s"),
            "--grid",
            "large",
            "--ns",
            "64,128",
            "--quiet",
        ]
    )
    args = Namespace(**kwargs)
    assert study_check(args) == [(tmp_path / "s", False)] and not (tmp_path / "s").exists()
    assert (args.sizes, args.ns, args.seeds) == ([3, 4, 6, 8], [64, 128], [0, 1, 2, 3, 4])
    params = set(inspect.signature(se.sample_efficiency_study).parameters) - {"out"}
    assert call_keywords(study_run, "sample_efficiency_study") == params


def test_reproduce_wandb_defaults_to_auto_and_passes_reproduces_parameters() -> None:
    from raydistill.cli import parse
    from raydistill.cli.students import reproduce_run
    from raydistill.study.reproduce import reproduce

    assert parse(["reproduce"])[1]["wandb"] == "auto"
    for mode in ("auto", "online", "offline", "off"):
        assert parse(["reproduce", "--wandb", mode])[1]["wandb"] == mode
    assert inspect.signature(reproduce).parameters["wandb"].default == "auto"
    params = set(inspect.signature(reproduce).parameters) - {"scale", "log"}
    assert call_keywords(reproduce_run, "reproduce") == params
