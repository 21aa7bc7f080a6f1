"""Fault tolerance of `raydistill search` on real Ray clusters, all on 127.0.0.1 (issue 6).

Each scenario is one run of scripts/fault_drill.py in a subprocess of its own session, so no
Ray state reaches this pytest process (these tests never use the session `ray_local` fixture):

- node-kill: a head and a worker node (`ray.cluster_utils.Cluster`, one raylet process each,
  1 CPU each); once a trial on the worker has checkpointed 2 epochs, the worker node dies (its
  raylet, agents and trial workers SIGKILLed at once). Its trial restarts on the head from its
  last checkpoint and the search ends with every trial finished, none lost or duplicated.
- trial-kill: the worker process of one trial is SIGKILLed (as Ray's memory monitor or the
  kernel's OOM killer kills a worker that runs out of memory) after each of its attempts reports
  an epoch: it is retried from its checkpoint `max_failures` times, then fails alone.
- driver-kill: a CLI search (`--address local`, `--wandb offline`) has its driver SIGKILLed
  mid-search; every Ray / W&B process it leaves is stopped by PID; `raydistill search --resume`
  ends it with exactly the requested trials, resumed trials continuing from their checkpoints
  under the same W&B run ids.

Each drill runs with its own RAY_TMPDIR (a fresh short folder) and a unique RAYDISTILL_DRILL tag
in the environment of every process it starts; after each drill, passed or failed, whatever
still carries the tag is stopped by PID and the test checks that nothing was left.
RAY_AUTH_MODE=disabled (see `drill_kit.drill_env`): these clusters listen on 127.0.0.1 only
(checked below) and live for one test.

The drills print their figures (cluster start, kill-to-restart times, trials finished / lost /
duplicated); run with `-s` to see them.
"""

from __future__ import annotations

import importlib.util
import itertools
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[1]
DRILL = REPO / "scripts" / "fault_drill.py"
_spec = importlib.util.spec_from_file_location("drill_kit", REPO / "scripts" / "drill_kit.py")
kit = importlib.util.module_from_spec(_spec)  # drill_env, tagged_pids, stop_pids
_spec.loader.exec_module(kit)

EPOCHS = {"node-kill": 8, "trial-kill": 10, "driver-kill": 14}
TRIALS = 3  # per cell
MAX_FAILURES = 2  # trial-kill
pytestmark = pytest.mark.slow


@dataclass
class Drill:
    rc: int
    output: str
    record: dict[str, Any]
    left: list[str]  # processes carrying the drill's tag after it ended (stopped by PID here)
    out: Path  # the search directory

    def tail(self) -> str:
        return self.output[-4000:]


def run_drill(root: Path, name: str, *args: str, timeout: float) -> Drill:
    """Run one drill in its own session; stop by PID whatever of it survives, however it ends."""
    ray_tmp = tempfile.mkdtemp(prefix="rdft-", dir="/tmp")  # short: unix sockets < 108 bytes
    tag = uuid.uuid4().hex[:12]
    env = kit.drill_env(tag, ray_tmp)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    cmd = [sys.executable, str(DRILL), name, "--out", str(root), *args]
    proc = subprocess.Popen(
        cmd,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    try:
        output, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        kit.stop_pids(kit.tagged_pids(tag))  # what left the group, so nothing holds the pipe
        output = proc.communicate(timeout=60)[0] + f"\n[test] drill killed after {timeout} s"
    finally:
        left = kit.tagged_pids(tag)
        kit.stop_pids(left)
        shutil.rmtree(ray_tmp, ignore_errors=True)
    path = root / "drill.json"
    record = json.loads(path.read_text()) if path.is_file() else {}
    for line in output.splitlines():
        if line.startswith("FIGURES "):
            print(f"\n[{name}] {line}")
    return Drill(proc.returncode, output, record, sorted(left.values()), root / "search")


def check_ran_cleanly(d: Drill) -> None:
    assert d.rc == 0, d.tail()
    assert d.left == [], f"processes left behind (stopped by PID): {d.left}"
    assert d.record.get("watcher_error") is None, d.record.get("watcher_error")


def check_trials(d: Drill, cells: int, epochs: int, *, errored: int = 0) -> Any:
    """trials.parquet: exactly TRIALS per cell, unique ids and configs, all finished (but
    `errored`), the finished ones with every epoch."""
    from raydistill.search import load_trials

    df = load_trials(d.out)
    assert len(df) == cells * TRIALS and (df.groupby("cell").size() == TRIALS).all(), df
    assert df["trial_id"].is_unique and df["config"].is_unique
    done = df[df["status"] == "finished"]
    assert len(done) == len(df) - errored, df[["trial_id", "status", "epochs"]]
    assert (done["epochs"] == epochs).all()
    assert d.record["counts"]["lost"] == 0 and d.record["counts"]["duplicated"] == 0
    return df


def ordered(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return sorted(rows, key=lambda r: r["reported_at"])


def check_continues(rows: list[dict[str, Any]], last_before: int, epochs: int) -> None:
    """After a restart the epochs go on from a checkpoint up to `epochs`, each once."""
    assert rows, "never restarted"
    first = rows[0]
    assert 1 <= first["epoch"] <= last_before + 1, (first, last_before)
    assert first["iterations_since_restore"] == 1  # a new attempt
    assert [r["epoch"] for r in rows] == list(range(first["epoch"], epochs + 1))
    assert rows[-1]["status"] == "finished"


# ---------------------------------------------------------------- fixtures (one drill each)
@pytest.fixture(scope="module")
def node_kill(tmp_path_factory) -> Drill:
    root = tmp_path_factory.mktemp("node-kill")
    args = ("--epochs", str(EPOCHS["node-kill"]), "--trials", str(TRIALS))
    return run_drill(root, "node-kill", *args, timeout=420)


@pytest.fixture(scope="module")
def trial_kill(tmp_path_factory) -> Drill:
    root = tmp_path_factory.mktemp("trial-kill")
    args = (
        "--epochs",
        str(EPOCHS["trial-kill"]),
        "--trials",
        str(TRIALS),
        "--max-failures",
        str(MAX_FAILURES),
    )
    return run_drill(root, "trial-kill", *args, timeout=420)


@pytest.fixture(scope="module")
def driver_kill(tmp_path_factory) -> Drill:
    root = tmp_path_factory.mktemp("driver-kill")
    args = ("--epochs", str(EPOCHS["driver-kill"]), "--trials", str(TRIALS), "--timeout", "300")
    return run_drill(root, "driver-kill", *args, timeout=720)


# ---------------------------------------------------------------- node-kill
def test_worker_node_death_restarts_its_trials_on_the_head(node_kill):
    d, epochs = node_kill, EPOCHS["node-kill"]
    check_ran_cleanly(d)
    rec = d.record
    assert rec["listening"] and all(a.startswith("127.0.0.1:") for a in rec["listening"])
    assert not rec["search_interrupted"]
    assert rec.get("victims"), "the worker node was never killed mid-trial"
    results, node = rec["results"], rec["pid_node"]
    before = [r for rows in results.values() for r in rows if r["reported_at"] < rec["killed_at"]]
    assert {node.get(str(r["pid"])) for r in before} == {"head", "worker"}  # spread over both
    for name in rec["victims"]:
        rows = ordered(results[name])
        pre = [r for r in rows if r["reported_at"] < rec["killed_at"]]
        post = [r for r in rows if r["reported_at"] > rec["killed_at"]]
        assert pre and {node[str(r["pid"])] for r in pre} == {"worker"}
        assert post and {node.get(str(r["pid"])) for r in post} == {"head"}
        check_continues(post, pre[-1]["epoch"], epochs)
        assert post[0]["epoch"] > 1  # from its checkpoint, not from scratch
        assert rec["tune_failures"].get(name) == 1  # one failure, one restart
    others = set(results) - set(rec["victims"])
    assert all(not rec["tune_failures"].get(n) for n in others)
    df = check_trials(d, cells=2, epochs=epochs)
    failures = df.set_index("trial_id")["failures"].to_dict()
    assert failures == {n.rsplit("_", 1)[1]: int(n in rec["victims"]) for n in results}


# ---------------------------------------------------------------- trial-kill
def test_killed_trial_is_retried_from_its_checkpoint_then_fails_alone(trial_kill):
    d, epochs = trial_kill, EPOCHS["trial-kill"]
    check_ran_cleanly(d)
    rec = d.record
    victim, kills, tries = rec.get("victim"), rec["kills"], rec["attempts"]
    assert victim and len(kills) == MAX_FAILURES + 1, kills
    assert len({k["pid"] for k in kills}) == len(kills)  # each attempt ran in a new worker
    assert len(tries) == MAX_FAILURES + 1, tries  # no attempt after the last kill
    assert tries[0]["first"] == 1
    for prev, cur in itertools.pairwise(tries):
        assert 1 < cur["first"] <= prev["last"] + 1, tries  # resumed from its checkpoint
        assert cur["since_restore"] == 1
    assert all(t["status"] == "running" for t in tries) and tries[-1]["last"] < epochs
    assert rec["tune_failures"] == {victim: MAX_FAILURES + 1}  # nobody else failed
    for name, rows in rec["results"].items():  # every other trial ran once, to the end
        if name != victim:
            assert [r["epoch"] for r in ordered(rows)] == list(range(1, epochs + 1))
    df = check_trials(d, cells=1, epochs=epochs, errored=1)
    assert df.loc[df["status"] != "finished", "trial_id"].tolist() == [victim.rsplit("_", 1)[1]]


# Ray Tune 2.60 can save a trial whose actor died on its last allowed attempt as RUNNING (its
# actor-died callback runs before the task-failure one); search.py takes the final statuses from
# the ResultGrid of tuner.fit(), so the trial must still end as an error.
def test_trial_out_of_retries_is_an_error_not_an_interrupted_search(trial_kill):
    from raydistill.search import load_trials

    check_ran_cleanly(trial_kill)
    df = load_trials(trial_kill.out)
    victim = trial_kill.record["victim"].rsplit("_", 1)[1]
    assert df.set_index("trial_id").loc[victim, "status"] == "error"
    assert df.set_index("trial_id").loc[victim, "failures"] == MAX_FAILURES + 1
    assert not trial_kill.record["search_interrupted"]


# ---------------------------------------------------------------- driver-kill
def test_killed_driver_resumes_with_every_trial_once_and_same_wandb_runs(driver_kill):
    d, epochs = driver_kill, EPOCHS["driver-kill"]
    check_ran_cleanly(d)
    rec = d.record
    assert rec["resume_rc"] == 0, (d.out.parent / "resume.log").read_text()[-4000:]
    assert rec["left_after_resume"] == []
    before, held = rec["before"], rec["snapshot_holds"]
    running = {n for n, r in before.items() if r["status"] == "running"}
    assert held["finished"] and held["running"], held  # the kill came mid-search
    df = check_trials(d, cells=2, epochs=epochs)
    assert {n.rsplit("_", 1)[1] for n in before} <= set(df["trial_id"])  # same trial ids
    cut = rec["killed_at"]
    pre = {n: [r for r in rows if r["reported_at"] < cut] for n, rows in rec["results"].items()}
    after = {
        n: [r for r in ordered(rows) if r["reported_at"] > cut]
        for n, rows in rec["results"].items()
    }
    for name in held["finished"]:  # finished before the last snapshot: not trained again
        assert after[name] == [], after[name]
    for name in running:  # every interrupted trial resumed and ran each epoch once
        check_continues(after[name], max(r["epoch"] for r in pre[name]), epochs)
    for name in held["running"]:  # the snapshot held a checkpoint of epoch ≥ 2
        assert after[name][0]["epoch"] >= 3, after[name][0]
    check_wandb_runs(d.out, df, running, after)


def check_wandb_runs(out: Path, df: Any, resumed: set[str], after: dict[str, list]) -> None:
    """One W&B run id per trial (tracking.run_id), the same before and after the resume: the
    resumed trials' attempts share it, and nothing else is under DIR/wandb."""
    from wandb_log import read_offline_run, run_dirs

    from raydistill.tracking.tracker import run_id

    rids = {
        tid: run_id("drill", cell, tid)
        for cell, tid in zip(df["cell"], df["trial_id"], strict=True)
    }
    on_disk = {
        m[1]
        for p in (out / "wandb").iterdir()
        if (m := re.match(r"^offline-run-\d{8}_\d{6}-([0-9a-f]{24})-a\d+$", p.name))
    }
    assert on_disk == set(rids.values())
    lost = {}
    for name in resumed:
        rid = rids[name.rsplit("_", 1)[1]]
        dirs = run_dirs(out, rid)
        assert len(dirs) >= 2 and [p.name[-3:] for p in dirs][:2] == ["-a0", "-a1"], dirs
        run = read_offline_run(out, rid)
        assert run.summary["status"] == "finished" and run.exit_codes[-1] == 0
        epochs = [h["epoch"] for h in run.history]
        assert epochs[-len(after[name]) :] == [r["epoch"] for r in after[name]]
        lost[name] = after[name][0]["epoch"] - 1 - len(epochs[: -len(after[name])])
    # Epochs of the killed attempts missing from W&B (wandb flushes its offline log every
    # 15 s by default; see the report): printed, not asserted.
    print(f"\n[driver-kill] W&B epochs lost by killed attempts: {lost}")
