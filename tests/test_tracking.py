"""W&B tracking with real offline runs, read back from their `.wandb` transaction logs.

Covers the mode resolution (key in the environment or a netrc entry → online, else offline),
the null tracker, one run per trial with a deterministic id that a retried trial resumes (same
id, history continuing by epoch), secrets never reaching any file, and the summary run with
Table 2, Figure 1 and a `model` artifact aliased `best` per cell.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from wandb_log import read_offline_run, run_dirs

from raydistill.core.errors import UserError
from raydistill.export.exporter import export_cells
from raydistill.report import make_report
from raydistill.tracking.summary import log_summary
from raydistill.tracking.tracker import (
    REDACTED,
    NullTracker,
    Tracker,
    make_tracker,
    resolve_mode,
    run_id,
    scrub,
)

CONFIG = {"lr": 0.01, "widths": [64, 128, 512], "params": 998_123, "kd_temperature": 4.0}


def _tracker(root: Path, trial: str = "t0", mode: str = "offline", **kw) -> Tracker:
    return make_tracker(
        mode,
        root=root,
        experiment="exp",
        cell="cnn-d2@1M",
        trial_id=trial,
        config={**CONFIG, **kw},
        tags=["seed0"],
    )


@pytest.fixture()
def no_wandb_env(monkeypatch, tmp_path: Path) -> Path:
    """No mode, no key, and an empty netrc: the machine of someone without a W&B account."""
    for var in ("WANDB_MODE", "WANDB_API_KEY", "WANDB_IDENTITY_TOKEN_FILE", "WANDB_BASE_URL"):
        monkeypatch.delenv(var, raising=False)
    netrc = tmp_path / "netrc"
    netrc.write_text("")
    netrc.chmod(0o600)
    monkeypatch.setenv("NETRC", str(netrc))
    return netrc


def test_mode_resolution(no_wandb_env: Path, monkeypatch) -> None:
    assert resolve_mode(None) == "offline"
    no_wandb_env.write_text("machine api.wandb.ai\n  login user\n  password " + "a" * 40 + "\n")
    assert resolve_mode(None) == "online"
    no_wandb_env.write_text("machine example.org\n  login user\n  password secret\n")
    assert resolve_mode(None) == "offline"
    monkeypatch.setenv("WANDB_API_KEY", "b" * 40)
    assert resolve_mode(None) == "online"
    monkeypatch.setenv("WANDB_MODE", "offline")
    assert resolve_mode(None) == "offline"
    monkeypatch.setenv("WANDB_MODE", "disabled")
    assert resolve_mode(None) == "off"
    assert resolve_mode("online") == "online" and resolve_mode("disabled") == "off"
    with pytest.raises(UserError, match="W&B mode 'sometimes' is invalid"):
        resolve_mode("sometimes")


def test_off_gives_a_null_tracker(tmp_path: Path) -> None:
    tr = _tracker(tmp_path, mode="off")
    assert isinstance(tr, NullTracker)
    tr.log({"val/acc": 0.5}, step=1)
    tr.finish({"best/val/acc": 0.5})
    assert not (tmp_path / "wandb").exists()


def test_scrub_redacts_keys_and_known_values() -> None:
    cfg = {"lr": 0.1, "api_key": "x", "nested": {"Token": 1, "ok": [1, "has s3cr3t inside"]}}
    out = scrub(cfg, secrets=("s3cr3t",))
    assert out == {
        "lr": 0.1,
        "api_key": REDACTED,
        "nested": {"Token": REDACTED, "ok": [1, REDACTED]},
    }


def test_run_ids_are_deterministic_and_valid() -> None:
    a = run_id("exp", "cnn-d2@1M", "t0")
    assert a == run_id("exp", "cnn-d2@1M", "t0") and a.isalnum() and len(a) == 24
    assert len({a, run_id("exp", "cnn-d2@1M", "t1"), run_id("exp2", "cnn-d2@1M", "t0")}) == 3


def test_offline_run_is_written_inside_the_experiment_and_read_back(tmp_path: Path) -> None:
    tr = _tracker(tmp_path)
    assert isinstance(tr, Tracker) and tr.mode == "offline"
    assert tr.run_dir.parent == tmp_path.resolve() / "wandb"
    for epoch in (1, 2, 3):
        tr.log(
            {"train/loss": 1.0 / epoch, "val/acc": 0.5 + epoch / 10, "status": "running"},
            step=epoch,
        )
    tr.finish({"best/val/acc": 0.8, "test/acc": 0.77}, status="finished")
    run = read_offline_run(tmp_path, tr.run_id)
    assert run.config == CONFIG
    assert (run.group, run.job_type, run.project) == ("exp", "cnn-d2@1M", "raydistill")
    assert run.tags == ["cnn", "d2", "1M", "seed0"]
    assert [h["epoch"] for h in run.history] == [1, 2, 3]
    assert [h["val/acc"] for h in run.history] == pytest.approx([0.6, 0.7, 0.8])
    assert all("status" not in h for h in run.history)  # strings stay out of the history
    assert run.summary["best/val/acc"] == 0.8 and run.summary["test/acc"] == 0.77
    assert run.summary["status"] == "finished" and run.exit_codes == [0]


def test_a_retried_trial_continues_its_own_run(tmp_path: Path) -> None:
    first = _tracker(tmp_path)
    first.log({"val/acc": 0.5}, step=1)
    first.log({"val/acc": 0.6}, step=2)
    first.finish(status="error")  # the attempt failed; Tune retries from the epoch-2 checkpoint
    second = _tracker(tmp_path)
    assert second.run_id == first.run_id
    second.log({"val/acc": 0.7}, step=3)
    second.log({"val/acc": 0.8}, step=4)
    second.finish({"best/val/acc": 0.8}, status="finished")
    other = _tracker(tmp_path, trial="t1")
    other.finish()
    assert other.run_id != first.run_id

    dirs = run_dirs(tmp_path, first.run_id)
    assert [d.name.rsplit("-", 1)[-1] for d in dirs] == ["a0", "a1"]  # one per attempt, in order
    run = read_offline_run(tmp_path, first.run_id)
    assert [h["epoch"] for h in run.history] == [1, 2, 3, 4]
    assert [h["val/acc"] for h in run.history] == pytest.approx([0.5, 0.6, 0.7, 0.8])
    assert run.exit_codes == [1, 0] and run.summary["status"] == "finished"


def test_no_secret_reaches_any_file(tmp_path: Path, monkeypatch) -> None:
    secret = "Zq" + "9" * 38  # looks like a 40-character W&B key
    monkeypatch.setenv("WANDB_API_KEY", secret)
    tr = _tracker(
        tmp_path,
        mode="offline",
        wandb_api_key=secret,
        note=f"copied {secret} here",
        password="hunter2",
    )
    tr.log({"val/acc": 0.5}, step=1)
    tr.finish({"token": secret, "remark": secret})
    run = read_offline_run(tmp_path, tr.run_id)
    assert run.config["wandb_api_key"] == run.config["note"] == run.config["password"] == REDACTED
    assert run.summary["token"] == run.summary["remark"] == REDACTED
    files = [p for p in (tmp_path / "wandb").rglob("*") if p.is_file()]
    assert files
    for path in files:
        data = path.read_bytes()
        assert secret.encode() not in data and b"hunter2" not in data, path


def _trained_search_dir(d: Path, splits) -> Path:
    """A one-cell search directory with a real 1-epoch checkpoint (mlp-d1 at 12k)."""
    from raydistill.core.manifest import build_manifest, write_manifest
    from raydistill.students.budget import solve_budget
    from raydistill.training.config import TrainConfig
    from raydistill.training.loop import train_student

    spec = solve_budget("mlp", 1, 12_000, in_shape=[3, 32, 32], num_classes=2).spec
    ckpt = d / "ckpt"
    cfg = TrainConfig(batch_size=128, max_epochs=1, loss="hard", lr=0.01, device="cpu")
    res = train_student(spec, splits, None, cfg, report=lambda m, save: save(ckpt))
    row = {
        "experiment": "exp-w", "cell": "mlp-d1@12k", "family": "mlp", "depth": 1,
        "budget": 12_000, "trial_id": "t0", "status": res.status,
        "config": json.dumps(res.config), "spec": json.dumps(res.spec), "widths": spec["widths"],
        "params": res.params, "params/budget": res.params / 12_000, "val/acc": res.best_val_acc,
        "val/loss": res.best_val_loss, "test/acc": res.test_acc, "epochs": res.epochs,
        "best_epoch": res.best_epoch, "wall_s": res.wall_s, "checkpoint": str(ckpt), "seed": 0,
        "loss": "hard",
    }  # fmt: skip
    pq.write_table(pa.Table.from_pylist([row]), d / "trials.parquet")
    extra = {"teacher": {"val_acc": 0.9, "test_acc": 0.9}}
    write_manifest(
        d,
        build_manifest(
            "search", {}, seeds=[0], dataset_fingerprint=splits.fingerprint, extra=extra
        ),
    )
    return d


def test_summary_run_holds_tables_figure_and_best_models(tmp_path: Path, tiny_splits) -> None:
    d = _trained_search_dir(tmp_path / "exp-w", tiny_splits)
    before = os.environ.get("WANDB_DATA_DIR")
    exported = export_cells(d, None, d / "export", verify_test=False)
    models = {r.cell: r.path for r in exported}
    rid = log_summary(d, "offline", report=make_report(d), models=models)
    assert os.environ.get("WANDB_DATA_DIR") == before  # restored after the run
    run = read_offline_run(d, rid)
    assert run.job_type == "summary" and run.group == "exp-w"
    assert run.config["cells"] == ["mlp-d1@12k"]
    logged = run.history[0]
    assert (
        logged["table2"]["_type"] == "table-file"
        and logged["best_configs"]["_type"] == "table-file"
    )
    assert logged["figure1"]["_type"] == "image-file"
    media = [p.name for p in (run.dirs[-1] / "files").rglob("*.png")]
    assert media, "Figure 1 was not stored with the run"
    table = json.loads(next((run.dirs[-1] / "files").rglob("table2*.table.json")).read_text())
    assert "mlp-d1" in json.dumps(table["data"])
    models = [a for a in run.artifacts if a["type"] == "model"]
    assert {a["name"] for a in run.artifacts if a["type"] == "run_table"} >= {
        f"run-{rid}-table2",
        f"run-{rid}-best_configs",
    }
    assert [(a["name"], a["files"]) for a in models] == [
        ("exp-w-mlp-d1_12k", ["model.safetensors", "spec.json"])
    ]
    assert "best" in models[0]["aliases"]
    assert (d / "export" / "mlp-d1@12k" / "model.safetensors").is_file()
    assert log_summary(d, "off") is None


def test_the_private_wandb_names_tracking_uses_are_still_there() -> None:
    """tracking.tracker.wandb_internals is the one door to W&B's private names; this fails
    (AttributeError / ImportError) when a wandb release moves or drops one of them."""
    import wandb

    from raydistill.tracking.tracker import PRIVATE_SETTINGS, wandb_internals

    names = wandb_internals()
    assert callable(names.read_netrc_auth) and names.Record().WhichOneof("record_type") is None
    wandb.Settings(**{k: v for k, v in zip(PRIVATE_SETTINGS, (False, "a0", 1.0), strict=True)})
    assert wandb.__version__.split(".")[0] == "0"  # pyproject: wandb <1


def test_a_run_folder_that_cannot_be_made_is_a_warning(tmp_path: Path) -> None:
    """A node where the W&B folder cannot be created: the trial goes on untracked, warned."""
    from raydistill.tracking.tracker import NullTracker, make_tracker

    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    with pytest.warns(UserWarning, match="not logged"):
        tr = make_tracker(
            "offline", root=blocker, experiment="e", cell="mlp-d1@1k", trial_id="t", config={}
        )
    assert isinstance(tr, NullTracker)
