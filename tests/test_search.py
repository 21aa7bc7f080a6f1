"""The Ray Tune search, end to end on a real local Ray (the `ray_local` fixture: 2 CPUs, 1 GPU that
is only scheduled, never used) with the small synthetic task: cells, concurrency, outputs,
divergence, --extend, interrupt + --resume, --dry-run, and the per-cell searcher and scheduler."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml

from raydistill.cli import main
from raydistill.core.errors import UserError
from raydistill.search import spaces as sp
from raydistill.students import data_spec_keys

DOCUMENTED = ["experiment", "cell", "family", "depth", "budget", "trial_id", "status", "config",
              "spec", "widths", "params", "params/budget", "val/acc", "val/loss", "test/acc",
              "epochs", "best_epoch", "wall_s", "checkpoint", "seed", "loss"]  # fmt: skip


def small_space(family: str, **train) -> dict:
    """A fast space: short cosine runs on the synthetic task, no augmentation."""
    base = {"lr": {"log_float": [0.002, 0.02]}, "momentum": {"float": [0.8, 0.95]},
            "batch_size": 64, "max_epochs": 2, "schedule": "cosine", "augment": "none"}  # fmt: skip
    return {"family": family, "depths": [1, 2], "train": {**base, **train}}


def max_overlap(intervals: list[tuple[float, float]]) -> int:
    events = sorted([(a, 1) for a, _ in intervals] + [(b, -1) for _, b in intervals])
    live = best = 0
    for _, step in events:
        live += step
        best = max(best, live)
    return best


def test_search_runs_cells_concurrently_and_writes_outputs(ray_local, tiny_splits, tmp_path):
    out = tmp_path / "exp"
    space = small_space("cnn", max_epochs=4)
    path = sp_run(
        [space, small_space("mlp")], budgets="20k", depths=[2], trials=3, data=tiny_splits,
        out=out, gpus_per_trial=0.25, cpus_per_trial=0.5,
    )  # fmt: skip
    assert path == out.resolve()
    table = pq.read_table(out / "trials.parquet")
    assert set(DOCUMENTED) <= set(table.column_names)
    widths_type = table.schema.field("widths").type
    assert pa.types.is_list(widths_type) and widths_type.value_type == pa.int32()
    df = table.to_pandas()
    assert sorted(df["cell"].value_counts().items()) == [("cnn-d2@20k", 3), ("mlp-d2@20k", 3)]
    assert (df["status"] == "finished").all() and df["trial_id"].is_unique
    assert (df["params"] <= df["budget"]).all() and (df["params/budget"] > 0.9).all()
    assert (df["val/acc"].between(0, 1)).all() and df["test/acc"].notna().all()
    assert (df["loss"] == "hard").all()  # no transfer set: hard labels forced
    for _, row in df.iterrows():
        spec = json.loads(row["spec"])
        assert list(row["widths"]) == spec["widths"] and spec["family"] == row["family"]
        ratios = {f"r{i}" for i in range(1, len(spec["widths"]))}  # one per width slot but r0
        # but those that cannot move this cell's widths (mlp-d2@20k: r1, 3,073-param units)
        cell = sp.Cell(row["family"], int(row["depth"]), int(row["budget"]))
        space = sp.load_space(small_space(row["family"]))
        inert = sp.inert_ratios(space, cell, data_spec_keys(tiny_splits))
        assert inert == ({"r1"} if row["family"] == "mlp" else set()), (cell.id, inert)
        assert set(json.loads(row["config"])) == (ratios - inert) | {"lr", "momentum"}
        assert (Path(row["checkpoint"]) / "best.safetensors").is_file()
        assert row["epochs"] == (4 if row["family"] == "cnn" else 2)
    # Four 0.25-GPU, 0.5-CPU trials fit at once on the fixture's 1 GPU and 2 CPUs.
    overlap = max_overlap(list(zip(df["started_at"], df["ended_at"], strict=True)))
    assert 2 <= overlap <= 4, overlap
    assert set(df["gpu_ids"]) == {"0"}  # scheduled on the (only) GPU 0
    for cell in ("cnn-d2@20k", "mlp-d2@20k"):
        best = json.loads((out / "best" / f"{cell}.json").read_text())
        rows = df[df["cell"] == cell]
        assert best["metrics"]["val/acc"] == rows["val/acc"].max()
        assert best["params"] <= best["budget"] and best["checkpoint"] in set(rows["checkpoint"])
    manifest = json.loads((out / "manifest.json").read_text())
    assert (
        manifest["kind"] == "search" and manifest["dataset_fingerprint"] == tiny_splits.fingerprint
    )
    assert manifest["seeds"] == [0] and manifest["trials"] == 6 and "argv" in manifest
    assert manifest["classes"] == list(tiny_splits.classes)  # exports name their classes from it
    assert (out / "tune" / "exp").is_dir()
    with pytest.raises(UserError, match="already holds a search"):
        sp_run([space], budgets="20k", depths=[2], trials=1, data=tiny_splits, out=out)


def sp_run(spaces, *, data, **kw):
    """A search of `spaces` on in-memory `data`: CPU, quiet, no W&B unless `kw` says."""
    from raydistill.search import SearchSettings, run_search

    kw = {"device": "cpu", "wandb": "off", "cpus_per_trial": 1, **kw}
    return run_search(SearchSettings(spaces=list(spaces), **kw), data=data, verbose=0)


def test_diverging_trial_ends_diverged_and_cell_completes(ray_local, tiny_splits, tmp_path):
    path = tmp_path / "diverge.yaml"
    doc = small_space("mlp", lr=1.0e6)
    path.write_text(yaml.safe_dump(doc))
    out = sp_run([path], budgets="10k", depths=[1], trials=2, data=tiny_splits, out=tmp_path / "d",
                 wandb="offline")  # fmt: skip
    from wandb_log import read_offline_run

    from raydistill.search import load_trials
    from raydistill.tracking.tracker import run_id

    df = load_trials(out)
    assert len(df) == 2 and (df["status"] == "diverged").all()
    assert (df["epochs"] == 1).all()  # ended at the first epoch: non-finite loss
    assert df["val/acc"].fillna(0).le(1).all()
    # The best-trial rule (raydistill.core.results) never picks a diverged trial: no best here.
    assert not (out / "best" / "mlp-d1@10k.json").exists()
    # Each trial logged its own offline W&B run (tracking.make_tracker), read back from disk.
    for trial_id in df["trial_id"]:
        run = read_offline_run(out, run_id("d", "mlp-d1@10k", trial_id))
        assert run.summary["status"] == "diverged" and run.config["cell"] == "mlp-d1@10k"
        assert run.config["train"]["lr"] == 1.0e6 and [h["epoch"] for h in run.history] == [1]
        assert run.history[0]["objective"] == 0.0 and run.group == "d@synthetic-sep"


def test_extend_adds_warm_started_trials(ray_local, tiny_splits, tmp_path):
    from raydistill.search import SearchSettings, extend_search, load_trials

    out = sp_run([small_space("mlp")], budgets="10k", depths=[1], trials=2, data=tiny_splits,
                 out=tmp_path / "e", searcher="tpe")  # fmt: skip
    first = load_trials(out)
    with pytest.raises(UserError, match="is not a cell"):
        extend_search(out, 2, cells=["mlp-d9@10k"], data=tiny_splits)
    extend_search(out, 3, cells=["mlp-d1@10k"], data=tiny_splits, verbose=0)
    df = load_trials(out)
    assert len(df) == 5 and df["trial_id"].is_unique
    assert sorted(df["run"].value_counts().items()) == [("e", 2), ("e-extend1", 3)]
    assert set(first["trial_id"]) < set(df["trial_id"])
    assert df["config"].is_unique  # new samples, not repeats of the finished ones
    runs = SearchSettings.load(out).runs
    assert [r["complete"] for r in runs] == [True, True] and runs[1]["cells"] == {"mlp-d1@10k": 3}
    assert (out / "tune" / "e-extend1").is_dir()


@pytest.mark.slow
def test_interrupted_search_resumes_to_full_count(ray_local, tmp_path, capsys):
    """Ctrl-C a CLI search in a subprocess after its first trial finished, then --resume."""
    from raydistill.search import SearchSettings, load_trials, resume_search

    space = tmp_path / "cnn.yaml"
    space.write_text(yaml.safe_dump(small_space("cnn", max_epochs=4)))
    out = tmp_path / "r"
    cmd = [sys.executable, "-m", "raydistill", "search", str(space), "--budgets", "10k",
           "--depths", "2", "--trials", "6", "--data", "synthetic-sep:512", "--val-size", "128",
           "--cpus-per-trial", "1", "--out", str(out), "--device", "cpu", "--wandb", "off"]  # fmt: skip
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=_user_env(tmp_path))  # fmt: skip
    try:
        _wait_for_finished_trial(out / "tune" / "r", proc, timeout=180)
        proc.send_signal(signal.SIGINT)
        stdout, err = proc.communicate(timeout=180)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, err[-2000:]
    # Our progress bar and our resume line; none of Ray's own advice, warnings or tables
    assert f"raydistill search --resume {out}" in err and "trial" in err
    for noise in ("Tuner.restore", "FileNotFoundError", "Token authentication", "Stop signal"):
        assert noise not in err, err[-2000:]
    assert "== Status ==" not in stdout and "Result logdir" not in stdout
    before = load_trials(out)
    done = before[before["status"] == "finished"]
    assert 1 <= len(done) < 6 and not SearchSettings.load(out).runs[0]["complete"]
    capsys.readouterr()
    assert main(["status", str(out)]) == 0  # where the interrupted search stands
    ended = len(before[before["status"] != "running"])
    line = next(ln for ln in capsys.readouterr().out.splitlines() if ln.startswith("cnn-d2@10k"))
    cells = line.split()
    assert cells[1] == f"{ended}/6" and ended + int(cells[2]) + int(cells[3]) == 6, line
    resume_search(out, verbose=0)
    df = load_trials(out)
    assert len(df) == 6 and df["trial_id"].is_unique and df["config"].is_unique
    assert (df["status"] == "finished").all() and (df["epochs"] == 4).all()
    kept = df.set_index("trial_id").loc[done["trial_id"], "ended_at"]
    assert list(kept) == list(done["ended_at"])  # finished trials were not run again
    assert SearchSettings.load(out).runs[0]["complete"]


def _user_env(tmp_path: Path) -> dict[str, str]:
    """A user's environment: Ray's own token-auth default (no RAY_AUTH_MODE), a fresh HOME
    (Ray writes the token it generates to ~/.ray/auth_token)."""
    env = {k: v for k, v in os.environ.items() if k != "RAY_AUTH_MODE"}
    (tmp_path / "home").mkdir(exist_ok=True)
    return {**env, "HOME": str(tmp_path / "home")}


def test_ray_speaks_only_at_higher_verbosity(tmp_path):
    """`raydistill search` shows our progress; `-v` adds Ray's messages and Tune's tables."""
    cmd = [sys.executable, "-m", "raydistill", "search", "mlp", "--budgets", "5k", "--depths",
           "1", "--trials", "1", "--max-epochs", "1", "--data", "synthetic-sep:256:8:2",
           "--cpus-per-trial", "1", "--device", "cpu", "--wandb", "off"]  # fmt: skip
    runs = {}
    for flags in ((), ("-v",)):
        out = tmp_path / f"s{len(flags)}"
        res = subprocess.run([*cmd, *flags, "--out", str(out)], capture_output=True, text=True,
                             env=_user_env(tmp_path), timeout=300)  # fmt: skip
        assert res.returncode == 0, res.stderr[-2000:]
        runs[flags] = res.stdout + res.stderr
    quiet, loud = runs[()], runs[("-v",)]
    assert "1/1" in quiet and "best val" in quiet  # our tqdm bar
    assert "mlp-d1@5k" in quiet  # our summary of the cells
    for noise in ("Token authentication", "== Status ==", "Result logdir"):
        assert noise not in quiet and noise in loud, noise


@pytest.mark.slow
def test_failed_trial_is_retried_from_its_last_checkpoint(ray_local, tiny_splits, tmp_path):
    """SIGKILL the trial's worker after epoch 2: FailureConfig retries it from its checkpoint."""
    from raydistill.search import load_trials

    exp = tmp_path / "f" / "tune" / "f"
    killed: list[int] = []

    def killer() -> None:
        t0 = time.time()
        while time.time() - t0 < 120 and not killed:
            for result in exp.glob("*/result.json"):
                rows = [json.loads(x) for x in result.read_text().splitlines() if x.strip()]
                if rows and rows[-1]["epoch"] >= 2:
                    os.kill(rows[-1]["pid"], signal.SIGKILL)  # the trial's Ray worker
                    killed.append(rows[-1]["pid"])
                    return
            time.sleep(0.05)

    thread = threading.Thread(target=killer, daemon=True)
    thread.start()
    out = sp_run([small_space("cnn", max_epochs=5)], budgets="10k", depths=[2], trials=1,
                 data=tiny_splits, out=tmp_path / "f")  # fmt: skip
    thread.join(5)
    assert killed
    row = load_trials(out).iloc[0]
    assert row["status"] == "finished" and row["epochs"] == 5 and row["failures"] == 1
    (result,) = exp.glob("*/result.json")
    epochs = [json.loads(x)["epoch"] for x in result.read_text().splitlines() if x.strip()]
    assert epochs == sorted(set(epochs)) and epochs[-1] == 5  # resumed, not restarted at 1
    assert len({json.loads(x)["pid"] for x in result.read_text().splitlines() if x.strip()}) == 2


def _wait_for_finished_trial(exp: Path, proc: subprocess.Popen, timeout: float) -> None:
    t0 = time.time()
    while time.time() - t0 < timeout:
        assert proc.poll() is None, proc.stderr.read()[-2000:] if proc.stderr else ""
        for result in exp.glob("*/result.json"):
            lines = [json.loads(x) for x in result.read_text().splitlines() if x.strip()]
            if any(r.get("status") == "finished" for r in lines):
                return
        time.sleep(0.2)
    raise AssertionError(f"no trial finished within {timeout}s")


def test_dry_run_prints_cells_and_trains_nothing(tmp_path, capsys):
    out = tmp_path / "dry"
    rc = main(["search", "cnn", "mlp", "--budgets", "20k,1M", "--depths", "1,2", "--trials", "4",
               "--data", "synthetic-sep:64", "--out", str(out), "--dry-run", "--samples", "2"])  # fmt: skip
    text = capsys.readouterr().out
    assert rc == 0 and not out.exists()
    assert "8 cells × 4 trials = 32 trials" in text and "loss 'hard' forced" in text
    for cell in ("cnn-d1@20k", "cnn-d2@1M", "mlp-d1@20k", "mlp-d2@1M"):
        assert f"cell {cell}:" in text
    samples = [line for line in text.splitlines() if line.strip().startswith("sample")]
    assert len(samples) == 16 and all("widths [" in s and "params" in s for s in samples)


def test_cli_reports_bad_input_in_one_line(tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text("family: cnn\ntrain: {lr: {log_float: [0.1, 0.01]}}\n")
    assert (
        main(["search", str(bad), "--budgets", "20k", "--out", str(tmp_path / "o"), "--dry-run"])
        == 2
    )
    err = capsys.readouterr().err.strip()
    assert err.startswith("raydistill: error:") and str(bad) in err and "\n" not in err
    assert main(["search", "cnn", "--budgets", "20k", "--dry-run", "--searcher", "tpe",
                 "--data", "synthetic-sep:64", "--depths", "9"]) == 2  # fmt: skip
    assert "none of --depths [9]" in capsys.readouterr().err
    assert main(["search", "--extend", "2"]) == 2
    assert "--extend N needs the search: --resume DIR --extend N" in capsys.readouterr().err


def test_cell_searcher_gives_each_cell_exactly_n_trials():
    """The router: round robin over cells, N suggestions each, then FINISHED; results reach the
    right cell's Optuna study; state survives save / restore."""
    from ray.tune.search import Searcher

    from raydistill.search import CellSearcher

    space = sp.parse_space(small_space("cnn"))
    plans = sp.plan_cells([space], [20_000, 50_000], depths=[1, 2])
    searcher = CellSearcher([(c, s, 2) for c, s in plans], kind="tpe", seed=3)
    configs = [searcher.suggest(f"t{i}") for i in range(8)]
    assert searcher.suggest("t8") == Searcher.FINISHED
    assert [c["cell"] for c in configs[:4]] == [c.id for c, _ in plans]  # interleaved
    assert sorted(searcher.counts().values()) == [2, 2, 2, 2]
    for i, config in enumerate(configs):
        depth = config["depth"]
        assert len(config["settings"]["ratios"]) == len(space.ratio_names(depth))
        assert config["settings"]["train"]["lr"] == config["lr"]
        searcher.on_trial_complete(f"t{i}", {"objective": 0.1 * i, "status": "finished"})
    study = searcher._states[configs[0]["cell"]].optuna._ot_study
    assert sorted(t.value for t in study.trials) == [0.0, 0.4]
    # A diverged trial scores 0 for its cell (the objective the trainable reports).
    from raydistill.search.trainable import objective

    assert objective({"status": "diverged", "best/val/acc": 0.9}) == 0.0
    assert objective({"status": "finished", "best/val/acc": 0.7}) == 0.7


def test_cell_searcher_warm_start_seeds_the_cell_study():
    """--extend: the new study starts with the cell's finished trials as completed trials."""
    from raydistill.search import CellSearcher

    ((cell, space),) = sp.plan_cells([sp.parse_space(small_space("mlp"))], [10_000], depths=[1])
    done = [{"r1": 0.9, "lr": 0.005, "momentum": 0.9},
            {"r1": 0.1, "lr": 0.01, "momentum": 0.85}]  # fmt: skip
    # A point from a search made before r0 was fixed carries r0: it is fitted, not refused.
    old = [{"r0": 0.2, **done[0]}, {**done[1], "r0": 0.7}]
    searcher = CellSearcher([(cell, space, 2)], warm={cell.id: (old, [0.61, 0.42])})
    study = searcher._states[cell.id].optuna._ot_study
    assert [t.params for t in study.trials] == done
    assert [t.value for t in study.trials] == [0.61, 0.42]
    config = searcher.suggest("n1")
    assert {k: config[k] for k in done[0]} not in done  # a new point, sampled after the warm ones
    assert len(study.trials) == 3


def test_cell_searcher_save_restore(tmp_path):
    from raydistill.search import CellSearcher

    plans = sp.plan_cells([sp.parse_space(small_space("mlp"))], [10_000], depths=[1])
    a = CellSearcher([(c, s, 3) for c, s in plans], seed=1)
    a.suggest("x1")
    a.on_trial_complete("x1", {"objective": 0.5})
    a.suggest("x2")
    a.save(str(tmp_path / "s.pkl"))
    b = CellSearcher([(c, s, 3) for c, s in plans], seed=99)
    b.restore(str(tmp_path / "s.pkl"))
    assert b.counts() == {"mlp-d1@10k": 2}
    assert b.suggest("x3")["cell"] == "mlp-d1@10k" and b.suggest("x4") == "FINISHED"


def test_cell_scheduler_compares_trials_within_their_cell():
    """A weak trial of one cell is not stopped for being worse than another cell's trials."""
    from ray.tune.experiment import Trial
    from ray.tune.schedulers import AsyncHyperBandScheduler, TrialScheduler

    from raydistill.search import CellScheduler

    def trial(cell: str) -> Trial:
        return Trial("t", config={"cell": cell}, stub=True)

    def feed(sched, trials, accs):
        for t in trials:
            sched.on_trial_add(None, t)
        return [sched.on_trial_result(None, t, {"training_iteration": 1, "val/acc": a})
                for t, a in zip(trials, accs, strict=True)]  # fmt: skip

    strong = [trial("big") for _ in range(4)]
    weak = trial("small")
    per_cell = CellScheduler(max_t=9, grace_period=1, reduction_factor=3)
    decisions = feed(per_cell, [*strong, weak], [0.9, 0.91, 0.92, 0.93, 0.3])
    assert decisions[-1] == TrialScheduler.CONTINUE  # first of its own cell
    assert set(per_cell._ashas) == {"big", "small"}
    glob = AsyncHyperBandScheduler(metric="val/acc", mode="max", max_t=9, grace_period=1,
                                   reduction_factor=3)  # fmt: skip
    assert feed(glob, [trial("big") for _ in range(4)] + [trial("small")],
                [0.9, 0.91, 0.92, 0.93, 0.3])[-1] == TrialScheduler.STOP  # fmt: skip


@pytest.mark.slow
def test_asha_search_runs_per_cell(ray_local, tiny_splits, tmp_path):
    from raydistill.search import load_trials

    out = sp_run([small_space("mlp", max_epochs=4)], budgets="10k,20k", depths=[1], trials=3,
                 data=tiny_splits, out=tmp_path / "a", scheduler="asha")  # fmt: skip
    df = load_trials(out)
    assert sorted(df["cell"].value_counts().items()) == [("mlp-d1@10k", 3), ("mlp-d1@20k", 3)]
    assert set(df["status"]) <= {"finished", "stopped"}
    assert ((df["status"] == "stopped") == df["pruned"]).all()  # cosine: only ASHA stops early
    assert (df.loc[df["pruned"], "epochs"] < 4).all()


def test_run_search_rejects_bad_arguments(tiny_splits, tmp_path):
    with pytest.raises(UserError, match="--searcher 'bo'"):
        sp_run(["cnn"], budgets="20k", data=tiny_splits, out=tmp_path, searcher="bo")
    with pytest.raises(UserError, match="--trials 0"):
        sp_run(["cnn"], budgets="20k", data=tiny_splits, out=tmp_path, trials=0)
    with pytest.raises(UserError, match="holds no search"):
        from raydistill.search import resume_search

        resume_search(tmp_path)
    assert not os.listdir(tmp_path)
