"""Shared storage (issue 12): searches whose Tune storage is a URI, read back through it.

- A 2-node `ray.cluster_utils.Cluster` on 127.0.0.1 (tests/storage_drill.py, a subprocess with
  its own RAY_TMPDIR) runs 2 tiny cells against a real S3 server on 127.0.0.1 (moto's
  `ThreadedMotoServer`, fake keys; the endpoint reaches pyarrow and Tune as AWS_ENDPOINT_URL).
  Then every node-local Ray folder is deleted and the best students are exported from the S3
  URIs the trials table recorded: a step that read a worker's local path would fail.
- A `file://` URI outside the experiment directory; export re-rooted with `storage=`.
- Bad input: unreachable storage and a GPU share no node has are refused, exit 2, one line.
- Checkpoints: atomic, rng listed, the optimizer only while the run can resume.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import pytest
import torch
import yaml

from raydistill.cli import main
from raydistill.core import storage as st
from raydistill.core.errors import UserError
from raydistill.core.resources import largest_node_gpus, pending_cap
from raydistill.training.checkpoint import FILES, load_tensors, read_checkpoint, save_checkpoint

REPO = Path(__file__).resolve().parents[1]
DRILL = REPO / "tests" / "storage_drill.py"
_spec = importlib.util.spec_from_file_location("fault_drill", REPO / "scripts" / "fault_drill.py")
fd = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(fd)
_spec = importlib.util.spec_from_file_location("storage_drill", DRILL)
sd = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(sd)

BUCKET = "raydistill-test"


@pytest.fixture(scope="module")
def s3():
    """A moto S3 server on 127.0.0.1 with one versioned bucket (versions: every byte written
    stays countable); its endpoint and fake keys in the environment for this module only."""
    pytest.importorskip("moto.server", reason="pip install 'moto[server]' (the dev extra)")
    import boto3
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    env = {"AWS_ENDPOINT_URL": f"http://{host}:{port}", "AWS_ACCESS_KEY_ID": "testing",
           "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1"}  # fmt: skip
    with pytest.MonkeyPatch.context() as mp:
        for k, v in env.items():
            mp.setenv(k, v)
        client = boto3.client("s3")
        client.create_bucket(Bucket=BUCKET)
        client.put_bucket_versioning(Bucket=BUCKET, VersioningConfiguration={"Status": "Enabled"})
        yield {"env": env, "client": client}
    server.stop()


def _objects(client, prefix: str) -> dict[str, int]:
    pages = client.get_paginator("list_objects_v2").paginate(Bucket=BUCKET, Prefix=prefix)
    return {o["Key"]: o["Size"] for p in pages for o in p.get("Contents", [])}


def _bytes_written(client) -> int:
    pages = client.get_paginator("list_object_versions").paginate(Bucket=BUCKET)
    return sum(v["Size"] for p in pages for v in p.get("Versions", []))


# ---------------------------------------------------------------- multi-node, S3
@pytest.mark.slow
def test_two_node_search_on_s3_then_export_without_worker_disks(s3, tmp_path):
    from raydistill.export.exporter import export_cells
    from raydistill.report import make_report
    from raydistill.search import load_trials

    out, uri = tmp_path / "search", f"s3://{BUCKET}/study"
    ray_tmp = tempfile.mkdtemp(prefix="rdst-", dir="/tmp")  # every node's local folders
    tag = uuid.uuid4().hex[:12]
    env = {**fd.drill_env(tag, ray_tmp), **s3["env"]}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    t0 = time.perf_counter()
    try:
        proc = subprocess.run([sys.executable, str(DRILL), str(out), uri], env=env, text=True,
                              capture_output=True, timeout=300, start_new_session=True)  # fmt: skip
    finally:
        left = fd.tagged_pids(tag)
        fd.stop_pids(left)
        shutil.rmtree(ray_tmp, ignore_errors=True)  # the workers' disks are gone from here on
    wall = time.perf_counter() - t0
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-4000:]
    assert left == {}, f"processes left behind (stopped by PID): {left}"
    figures = json.loads(
        next(ln for ln in proc.stdout.splitlines() if ln.startswith("FIGURES "))[8:]
    )
    assert figures["nodes"] == 2 and figures["trial_nodes"] == 2  # trials ran on both nodes

    df = load_trials(out)
    assert len(df) == 2 * sd.TRIALS and (df["status"] == "finished").all(), df
    assert df["best_epoch"].notna().all()  # every trial's history was read back from S3
    assert df["checkpoint"].str.startswith(f"{uri}/").all(), df["checkpoint"].tolist()
    # Epochs 1..3 with a checkpoint every 2 epochs: epoch 2 and the last one, nothing else.
    assert df["checkpoint"].str.endswith("/checkpoint_000001").all(), df["checkpoint"].tolist()
    assert not [p for p in out.rglob("checkpoint_*")], "a checkpoint landed on the driver's disk"
    objects = _objects(s3["client"], "study/")
    for ckpt in df["checkpoint"]:
        prefix = ckpt.split(f"s3://{BUCKET}/", 1)[1] + "/"
        names = {k[len(prefix) :] for k in objects if k.startswith(prefix)} - {""}  # "dir/" marker
        assert names == set(FILES), names  # an ended run: no optimizer buffers

    _check_wandb_runs(out, df, objects)

    repeats = {f"study/repeats/{r['trial_id']}-{r['seed']}.json" for r in figures["repeats"]}
    assert len(repeats) == 2 and repeats <= set(objects), sorted(objects)
    assert {r["status"] for r in figures["repeats"]} == {"finished"}

    # Export and report as on another machine: DIR's outputs and the checkpoints from S3 only.
    shutil.rmtree(out)
    fresh = tmp_path / "elsewhere"
    results = export_cells(fresh, None, tmp_path / "export", splits=sd.drill_splits(), storage=uri)
    assert sorted(r.cell for r in results) == ["cnn-d1@20k", "mlp-d1@20k"]
    assert all(r.test_verified for r in results), [r.note for r in results]
    assert make_report(fresh).paths
    written = _bytes_written(s3["client"])
    print(f"\nFIGURES two-node S3 study: wall {wall:.1f} s (search {figures['search_s']} s), "
          f"{len(df)} trials, {written:,} bytes written to the server, "
          f"{sum(objects.values()):,} bytes stored in {len(objects)} objects")  # fmt: skip


def _check_wandb_runs(out: Path, df, objects: dict[str, int]) -> None:
    """Every trial, on either node, left its offline W&B run in the S3 storage beside its
    checkpoints (`<experiment>/<trial>/wandb/offline-run-*/`), and the search gathered them
    complete into DIR/wandb: summary, status and all 3 epochs, read from the gathered copy."""
    from wandb_log import read_offline_run

    from raydistill.tracking.tracker import run_id

    rids = {run_id(out.name, c, t) for c, t in zip(df["cell"], df["trial_id"], strict=True)}
    logs = {k for k in objects if "/wandb/offline-run-" in k and k.endswith(".wandb")}
    assert {k.rsplit("/", 1)[1] for k in logs} == {f"run-{r}.wandb" for r in rids}, sorted(logs)
    for key in logs:  # study/<experiment>/<trial dir>/wandb/<run>/run-<id>.wandb
        trial_dir = key.split("/wandb/", 1)[0]
        assert any(c.startswith(f"s3://{BUCKET}/{trial_dir}/") for c in df["checkpoint"]), key
    for rid in rids:
        run = read_offline_run(out, rid)
        assert run.summary["status"] == "finished" and run.exit_codes[-1] == 0
        assert [h["epoch"] for h in run.history] == list(range(1, sd.EPOCHS + 1))


# ---------------------------------------------------------------- file:// outside DIR
def test_file_uri_outside_the_experiment_and_export_rerooted(ray_local, tiny_splits, tmp_path):
    from raydistill.export.exporter import export_cells
    from raydistill.search import SearchSettings, load_trials, run_search

    elsewhere = tmp_path / "shared" / "tune"
    space = {"family": "mlp", "depths": [1], "train": {"lr": 0.01, "momentum": 0.9,
             "batch_size": 64, "max_epochs": 1, "schedule": "cosine", "augment": "none"}}  # fmt: skip
    settings = SearchSettings(
        spaces=[space], budgets="10k", trials=1, out=str(tmp_path / "exp"),
        storage=f"file://{elsewhere}", device="cpu", wandb="off",
    )  # fmt: skip
    out = run_search(settings, data=tiny_splits, verbose=0)
    ckpt = load_trials(out)["checkpoint"].iloc[0]
    assert ckpt.startswith(f"file://{elsewhere}/"), ckpt
    assert not (out / "tune").exists()
    assert export_cells(out, None, tmp_path / "e1", splits=tiny_splits)[0].test_verified

    moved = tmp_path / "moved"
    elsewhere.rename(moved)
    with pytest.raises(UserError, match="cannot be read"):
        export_cells(out, None, tmp_path / "e2", splits=tiny_splits)
    assert not (tmp_path / "e2" / "mlp-d1@10k").exists()
    res = export_cells(out, None, tmp_path / "e3", splits=tiny_splits, storage=str(moved))
    assert res[0].test_verified and (tmp_path / "e3" / "mlp-d1@10k" / "model.pt2").is_file()
    # A DIR that is not on this machine: its outputs come from <storage>/_search/.
    assert (moved / "_search" / "trials.parquet").is_file()
    res = export_cells(tmp_path / "fresh", None, tmp_path / "e4", splits=tiny_splits,
                       storage=f"file://{moved}")  # fmt: skip
    assert res[0].test_verified and (tmp_path / "fresh" / "best" / "mlp-d1@10k.json").is_file()
    assert main(["report", str(tmp_path / "fresh2"), "--storage", str(moved)]) == 0
    assert (tmp_path / "fresh2" / "report").is_dir()
    with pytest.raises(UserError, match="holds nothing to read"):
        export_cells(tmp_path / "none", None, tmp_path / "e5", storage=str(tmp_path / "nowhere"))


# ---------------------------------------------------------------- bad input
def _search_argv(tmp_path: Path, *extra: str) -> list[str]:
    space = tmp_path / "mlp.yaml"
    space.write_text(yaml.safe_dump({"family": "mlp", "depths": [1], "train": {"max_epochs": 1}}))
    return ["search", str(space), "--budgets", "10k", "--trials", "1", "--data",
            "synthetic-sep:256", "--val-size", "64", "--out", str(tmp_path / "s"),
            "--wandb", "off", *extra]  # fmt: skip


def test_unreachable_storage_is_refused_before_any_trial(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9")  # nothing listens there
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    assert main(_search_argv(tmp_path, "--storage", "s3://nobucket/x")) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("raydistill: error: storage 's3://nobucket/x' cannot be written")
    assert len(err.splitlines()) == 1
    assert not (tmp_path / "s").exists()


def test_unwritable_path_storage_is_refused(tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    assert main(_search_argv(tmp_path, "--storage", f"file://{blocker}/tune")) == 2
    err = capsys.readouterr().err.strip()
    assert "cannot be written" in err and len(err.splitlines()) == 1
    assert not (tmp_path / "s").exists()


def test_gpu_share_larger_than_any_node_is_refused(ray_local, tmp_path, capsys):
    assert main(_search_argv(tmp_path, "--gpus-per-trial", "2")) == 2  # ray_local: 1 GPU
    err = capsys.readouterr().err.strip()
    assert err == ("raydistill: error: --gpus-per-trial 2 asks for more GPUs per task than a "
                   "local Ray has (this machine has 1); use --gpus-per-trial 0 (CPUs), or "
                   "--address of a cluster with GPU nodes")  # fmt: skip
    assert not (tmp_path / "s" / "trials.parquet").exists()


def test_largest_node_and_pending_cap_do_not_depend_on_nodes_at_start():
    nodes = [{"Alive": True, "Resources": {"CPU": 4.0}},
             {"Alive": True, "Resources": {"GPU": 4.0}}, {"Alive": False, "Resources": {"GPU": 8.0}}]  # fmt: skip
    assert largest_node_gpus(nodes) == 4.0 and largest_node_gpus([]) == 0.0
    assert pending_cap(24, None) == 24 and pending_cap(24, 6) == 6 and pending_cap(0, None) == 1


# ---------------------------------------------------------------- URIs and checkpoints
def test_uri_join_and_scheme_keep_the_query():
    assert (
        st.join("s3://b/p?endpoint_override=h:1", "run", "/t/")
        == "s3://b/p/run/t?endpoint_override=h:1"
    )
    assert st.join("/a/b", "c") == "/a/b/c"
    assert (
        st.with_scheme("s3://b/p", "b/p/run/checkpoint_000001") == "s3://b/p/run/checkpoint_000001"
    )
    assert st.with_scheme("file:///x/tune", "/x/tune/r/c") == "file:///x/tune/r/c"
    assert st.with_scheme("/x/tune", "/x/tune/r/c") == "/x/tune/r/c"


def _tensors() -> dict[str, torch.Tensor]:
    return {"w": torch.arange(6.0).reshape(2, 3)}


def test_checkpoint_is_atomic_lists_rng_and_keeps_optimizer_only_while_resumable(tmp_path):
    d = tmp_path / "ckpt"
    save_checkpoint(d, meta={"status": "running", "epoch": 1}, model=_tensors(), best=_tensors(),
                    optim={"momentum_buffer/w": torch.ones(2, 3)})  # fmt: skip
    assert "rng.safetensors" in FILES and (d / "optim.safetensors").is_file()
    assert read_checkpoint(d)["epoch"] == 1
    save_checkpoint(d, meta={"status": "finished", "epoch": 2}, model=_tensors(), best=_tensors(),
                    optim={"momentum_buffer/w": torch.ones(2, 3)})  # fmt: skip
    assert sorted(p.name for p in d.iterdir()) == sorted(FILES)  # replaced whole: no stale optim
    assert read_checkpoint(d)["epoch"] == 2 and load_tensors(d, "optim") == {}
    assert not [p for p in tmp_path.iterdir() if p.name != "ckpt"]  # no temporary left
    (d / "rng.safetensors").unlink()
    with pytest.raises(UserError, match=r"missing rng\.safetensors"):
        read_checkpoint(d)


def test_resumable_checkpoint_without_optimizer_is_incomplete(tmp_path):
    d = tmp_path / "ckpt"
    save_checkpoint(d, meta={"status": "running"}, model=_tensors(), best=_tensors(), optim={})
    (d / "optim.safetensors").unlink()
    with pytest.raises(UserError, match=r"missing optim\.safetensors"):
        read_checkpoint(d)


def test_checkpoint_write_that_fails_leaves_the_previous_one(tmp_path):
    d = tmp_path / "ckpt"
    save_checkpoint(d, meta={"status": "running", "epoch": 1}, model=_tensors(), best=_tensors(),
                    optim={})  # fmt: skip
    with pytest.raises(TypeError):  # a meta value JSON cannot write: fails after the tensors
        save_checkpoint(d, meta={"status": "running", "epoch": object()}, model=_tensors(),
                        best=_tensors(), optim={})  # fmt: skip
    assert read_checkpoint(d)["epoch"] == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt"]


# ---------------------------------------------------------------- seed repeats
def test_seed_repeat_rows_go_through_storage(ray_local, tiny_splits, tmp_path):
    from raydistill.students import data_spec_keys
    from raydistill.students.budget import solve_budget
    from raydistill.study.repeats import run_repeats

    spec = solve_budget("mlp", 1, 10_000, None, **data_spec_keys(tiny_splits)).spec
    train = {"loss": "hard", "max_epochs": 1, "batch_size": 64, "lr": 0.01, "augment": "none"}
    job = {"row": "mlp-d1", "cell": "mlp-d1@10k", "family": "mlp", "depth": 1, "budget": 10_000,
           "twin": True, "trial_id": "t1", "spec": spec, "train": train, "seed": 1000}  # fmt: skip
    shared = tmp_path / "shared"
    runs = run_repeats([job], tiny_splits, None, storage=f"file://{shared}", log=lambda _: None)
    written = json.loads((shared / "repeats" / "t1-1000.json").read_text())
    assert runs.to_dict("records") == [written]
    assert written["status"] == "finished" and 0 <= written["test_acc"] <= 1


def test_status_reads_a_search_from_s3_on_another_machine(ray_local, s3, tmp_path, capsys):
    """`raydistill status DIR --storage s3://...`: a search's cells, read from its storage alone
    (its Tune state copied to the S3 server, every local copy deleted), best val/acc by the
    one best-trial rule."""
    import pyarrow.fs as pafs

    from raydistill.core import results
    from raydistill.search import load_trials

    local, out = tmp_path / "tune-storage", tmp_path / "search"
    argv = ["search", "mlp", "--budgets", "5k", "--depths", "1,2", "--trials", "2",
            "--data", "synthetic-sep:256:8:2", "--max-epochs", "1", "--device", "cpu",
            "--wandb", "off", "--storage", f"file://{local}", "--out", str(out)]  # fmt: skip
    assert main(argv) == 0
    df = load_trials(out)
    fs, path = st.filesystem(f"s3://{BUCKET}/moved")
    pafs.copy_files(str(local), path, source_filesystem=pafs.LocalFileSystem(),
                    destination_filesystem=fs)  # fmt: skip
    shutil.rmtree(local)
    shutil.rmtree(out)
    capsys.readouterr()
    assert main(["status", str(tmp_path / "elsewhere"), "--storage", f"s3://{BUCKET}/moved"]) == 0
    printed = capsys.readouterr().out
    assert "4/4 trials done, 0 running, 0 pending; ETA done" in printed
    for _, best in results.best(df).iterrows():
        line = next(ln for ln in printed.splitlines() if ln.startswith(best["cell"]))
        assert line.split()[1:5] == ["2/2", "0", "0", f"{100 * best['val/acc']:.2f}%"], line
    assert main(["status", str(tmp_path / "elsewhere"), "--storage", f"s3://{BUCKET}/none"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "holds no search or study" in err
