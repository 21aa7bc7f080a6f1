"""What a researcher finds in W&B after teach → transfer → search → report, read back from the
real offline runs (`tests/wandb_log.py`): every run grouped and tagged by experiment and
dataset, with the dataset, the split settings and the transfer set's sha256 in its config;
teacher members with their per-epoch curves; the transfer set with its sha256 and the
ensemble's accuracy on the views."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
from wandb_log import read_offline_run, run_id

from raydistill.cli import main
from raydistill.core.manifest import sha256_file
from raydistill.data.synthetic import SYNTHETIC_CLASSES

DATA = ["--data", "synthetic-sep:256:8:2", "--val-size", "64", "--split-seed", "3"]


@pytest.fixture(scope="module")
def stages(ray_local, tmp_path_factory) -> Path:
    """teach (2 members, 2 epochs), transfer (1 epoch), a 1-trial search and its report, all
    with --wandb offline."""
    root = tmp_path_factory.mktemp("runs")
    teach = [
        "teach",
        *DATA,
        "--family",
        "resnet9",
        "--widths",
        "4,8,8,8",
        "--members",
        "2",
        "--epochs",
        "2",
        "--batch-size",
        "64",
        "--out",
        str(root / "teach"),
        "--wandb",
        "offline",
    ]
    assert main(teach) == 0
    transfer = [
        "transfer",
        "--teacher",
        str(root / "teach"),
        "--epochs",
        "1",
        "--device",
        "cpu",
        "--out",
        str(root / "sets" / "ts.parquet"),
        "--wandb",
        "offline",
    ]
    assert main(transfer) == 0
    search = [
        "search",
        "mlp",
        "--budgets",
        "5k",
        "--depths",
        "1",
        "--trials",
        "1",
        *DATA,
        "--transfer",
        str(root / "sets" / "ts.parquet"),
        "--max-epochs",
        "1",
        "--device",
        "cpu",
        "--wandb",
        "offline",
        "--out",
        str(root / "search"),
    ]
    assert main(search) == 0
    assert main(["report", str(root / "search"), "--wandb", "offline"]) == 0
    return root


def _dataset_keys(run, fingerprint: str) -> None:
    d = run.config["dataset"]
    assert d["name"] == "synthetic-sep" and d["fingerprint"] == fingerprint
    assert (d["val_size"], d["split_seed"], d["num_classes"]) == (64, 3, 2)
    assert d["classes"] == list(SYNTHETIC_CLASSES) and d["sizes"]["val"] == 64


def test_teacher_members_are_runs_with_their_epoch_curves(stages: Path) -> None:
    manifest = json.loads((stages / "teach" / "manifest.json").read_text())
    for k, member in enumerate(manifest["members"]):
        run = read_offline_run(stages / "teach", run_id("teach", "teacher", f"member-{k}"))
        assert run.job_type == "teacher" and run.group == "teach@synthetic-sep"
        assert {"teacher", "dataset:synthetic-sep", "experiment:teach"} <= set(run.tags)
        _dataset_keys(run, manifest["dataset_fingerprint"])
        assert run.config["seed"] == member["seed"] and run.config["spec"]["family"] == "resnet9"
        assert [h["epoch"] for h in run.history] == [1, 2]
        curve = [h["val/acc"] for h in member["history"]]
        assert [h["val/acc"] for h in run.history] == pytest.approx(curve)
        assert run.summary["val/acc"] == pytest.approx(member["val/acc"])
        assert run.summary["ensemble/test/acc"] == pytest.approx(manifest["ensemble"]["test/acc"])


def test_the_transfer_set_is_a_run_with_its_sha256_and_view_accuracy(stages: Path) -> None:
    path = stages / "sets" / "ts.parquet"
    sha = sha256_file(path)
    run = read_offline_run(stages / "sets", run_id("ts", "transfer", sha[:16]))
    assert run.job_type == "transfer" and run.group == "ts@synthetic-sep"
    assert run.summary["sha256"] == sha and run.config["transfer"]["sha256"] == sha
    assert 0.0 <= run.summary["ensemble_test_view_acc"] <= 1.0
    assert run.summary["ensemble_test_acc"] == pytest.approx(
        run.config["transfer"]["ensemble_test_acc"]
    )
    teacher = json.loads((stages / "teach" / "manifest.json").read_text())
    _dataset_keys(run, teacher["dataset_fingerprint"])


def test_trial_and_summary_runs_carry_dataset_split_and_transfer_hash(stages: Path) -> None:
    sha = sha256_file(stages / "sets" / "ts.parquet")
    df = pd.read_parquet(stages / "search" / "trials.parquet")
    manifest = json.loads((stages / "search" / "manifest.json").read_text())
    row = df.iloc[0]
    trial = read_offline_run(
        stages / "search", run_id(row["experiment"], row["cell"], row["trial_id"])
    )
    summary = read_offline_run(stages / "search", run_id("search", "summary", "summary"))
    for run in (trial, summary):
        assert run.group == "search@synthetic-sep"
        assert {"dataset:synthetic-sep", "experiment:search"} <= set(run.tags)
        _dataset_keys(run, manifest["dataset_fingerprint"])
        assert run.config["transfer"]["sha256"] == sha == manifest["transfer"]["sha256"]
    assert trial.job_type == "mlp-d1@5k" and trial.config["cell"] == "mlp-d1@5k"
    assert summary.job_type == "summary"
