"""Fault drills of `raydistill search` on real Ray clusters on 127.0.0.1, with measured figures.

    python scripts/fault_drill.py node-kill   --out DIR   # the worker node dies mid-search
    python scripts/fault_drill.py trial-kill  --out DIR   # one trial's worker is killed, every attempt
    python scripts/fault_drill.py driver-kill --out DIR   # the driver is SIGKILLed; --resume finishes

node-kill and trial-kill build a head and a worker node with `ray.cluster_utils.Cluster` (one GCS,
one raylet per node, each node's workers its raylet's children) and run `run_search` in this
process. node-kill kills the worker node (SIGKILL of its raylet and every process under it at
once, as when its machine dies) once a trial running there has checkpointed two epochs. trial-kill SIGKILLs the
worker process of one trial after each of its attempts has reported an epoch, which is what
Ray's memory monitor or the kernel's OOM killer does to a trial that runs out of memory, until
its `max_failures` retries are spent. driver-kill runs the CLI (`--address local`) in its own
session, SIGKILLs the driver process alone (a crashed or OOM-killed driver), stops every Ray
process it leaves behind by PID, then runs `raydistill search --resume DIR` to the end.

Each drill writes DIR/drill.json (the results every trial reported, as seen while it ran, which
node each trial worker ran on, the kills) and prints one `FIGURES {...}` line: cluster start
time, kill-to-restart times, and trials finished / lost / duplicated.
tests/test_fault_tolerance.py runs the drills and checks their outputs.

The toolkit the drills share (processes found and stopped by their RAYDISTILL_DRILL tag, private
RAY_TMPDIR, loopback-only Ray, the watcher, the 2-node cluster, kill-to-restart figures) is
scripts/drill_kit.py; this module owns the three scenarios, their search and counts, and main.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import sys
import time
import uuid
from pathlib import Path
from typing import Any

# drill_kit.py is this file's sibling: importable when run as a script (its folder is sys.path[0])
# and when loaded by path (tests/test_fault_tolerance.py, tests/test_storage.py), hence the insert.
_HERE = str(Path(__file__).resolve().parent)
if _HERE not in sys.path:
    sys.path.insert(0, _HERE)

from drill_kit import (  # noqa: E402
    POLL_S,
    TAG_VAR,
    Watcher,
    alive,
    ancestors,
    drill_env,
    kill_node,
    lingering,
    own_session,
    restart_times,
    short_tmp,
    stop_pids,
    tagged_pids,
    tune_failures,
    two_node_cluster,
)

EXPERIMENT = "drill"
IMAGES, VAL, BUDGET = 512, 128, "10k"


# ---------------------------------------------------------------- the search
def write_space(path: Path, epochs: int) -> Path:
    """A tiny CNN space: 10k-parameter students, `epochs` epochs of 32 steps (batch 16 of 512
    images; ~0.2-0.8 s per epoch on a shared core), no augmentation."""
    import yaml

    doc = {"family": "cnn", "depths": [1, 2], "width_ratios": {"float": [0.2, 0.8]},
           "train": {"lr": {"log_float": [0.005, 0.02]}, "momentum": 0.9, "batch_size": 16,
                     "max_epochs": epochs, "schedule": "cosine", "augment": "none",
                     "loss": "hard"}}  # fmt: skip
    path.write_text(yaml.safe_dump(doc))
    return path


def search_kwargs(
    out: Path, space: Path, depths: list[int], trials: int, max_failures: int
) -> dict[str, Any]:
    return {"spaces": [str(space)], "budgets": BUDGET, "depths": depths,
            "trials": trials, "data": f"synthetic-sep:{IMAGES}",
            "data_options": {"val_size": VAL}, "out": str(out), "experiment": EXPERIMENT,
            "device": "cpu", "cpus_per_trial": 1, "max_failures": max_failures,
            "wandb": "off", "searcher": "random"}  # fmt: skip


def search(record: dict[str, Any], kwargs: dict[str, Any]) -> None:
    """run_search, timed; an early end (SearchInterrupted: not every trial ended) is recorded,
    not raised, so that the drill still reports what happened."""
    from raydistill.search import SearchInterrupted, SearchSettings, run_search

    t0 = time.perf_counter()
    record["search_interrupted"] = False
    try:
        run_search(SearchSettings(**kwargs), verbose=0)
    except SearchInterrupted:
        record["search_interrupted"] = True
    record["search_s"] = time.perf_counter() - t0


def counts(out: Path, cells: int, trials: int) -> dict[str, int]:
    """Trials finished / errored / lost (planned but absent) / duplicated (repeated ids or
    configs, or more rows than planned) in DIR/trials.parquet."""
    from raydistill.search import load_trials

    df = load_trials(out)
    planned = cells * trials
    duplicated = (len(df) - df["trial_id"].nunique()) + (len(df) - df["config"].nunique())
    per_cell = df.groupby("cell").size()
    duplicated += int((per_cell - trials).clip(lower=0).sum())
    return {"planned": planned, "rows": len(df),
            "finished": int((df["status"] == "finished").sum()),
            "error": int((df["status"] == "error").sum()),
            "lost": int(max(0, planned - df["trial_id"].nunique())),
            "duplicated": int(duplicated)}  # fmt: skip


# ---------------------------------------------------------------- node-kill
def node_kill(out: Path, tag: str, epochs: int, trials: int) -> dict[str, Any]:
    """Kill the worker node once trials have reported from both nodes and one on the worker
    has reported 2 epochs; the search goes on."""
    record: dict[str, Any] = {"drill": "node-kill", "tag": tag, "epochs": epochs}
    space = write_space(out.parent / "cnn.yaml", epochs)
    with two_node_cluster(record) as (cluster, worker, raylets):
        worker_raylet = next(p for p, n in raylets.items() if n == "worker")

        def inject(w: Watcher) -> None:
            if "killed_at" in record or set(w.pid_node.values()) != {"head", "worker"}:
                return  # not until trials have reported from both nodes
            running = {n: r for n in w.seen if (r := w.latest(n)) and r["status"] == "running"}
            on_worker = {n: r for n, r in running.items() if w.pid_node.get(r["pid"]) == "worker"}
            if not any(r["epoch"] >= 2 for r in on_worker.values()):
                return
            record["victims"] = {n: r["epoch"] for n, r in on_worker.items()}
            record["killed_at"] = time.time()
            record["killed_pids"] = kill_node(tag, worker_raylet)
            cluster.remove_node(worker, allow_graceful=False)  # its remaining daemons, if any
            record["remove_node_s"] = time.time() - record["killed_at"]

        with Watcher(out / "tune" / EXPERIMENT, raylets, inject) as w:
            search(record, search_kwargs(out, space, [1, 2], trials, max_failures=3))
    return _finish(record, w, out, cells=2, trials=trials)


def _finish(
    record: dict[str, Any], w: Watcher, out: Path, cells: int, trials: int
) -> dict[str, Any]:
    record.update(
        results=w.seen,
        pid_node={str(k): v for k, v in w.pid_node.items()},
        watcher_error=w.error,
        counts=counts(out, cells, trials),
        tune_failures=tune_failures(w.exp_dir),
    )
    record["restart_s"] = restart_times(
        w.seen, record.get("killed_at"), record.get("victims"), w.exp_dir
    )
    return record


# ---------------------------------------------------------------- trial-kill
def trial_kill(out: Path, tag: str, epochs: int, trials: int, max_failures: int) -> dict[str, Any]:
    """SIGKILL one trial's worker after each attempt reports an epoch, max_failures + 1 times."""
    record: dict[str, Any] = {
        "drill": "trial-kill",
        "tag": tag,
        "epochs": epochs,
        "max_failures": max_failures,
        "kills": [],
    }
    space = write_space(out.parent / "cnn.yaml", epochs)
    with two_node_cluster(record) as (_, _, raylets):

        def inject(w: Watcher) -> None:
            if len(record["kills"]) > max_failures:
                return
            victim = record.get("victim") or _first_at_epoch(w, 2)
            if victim is None:
                return
            record["victim"] = victim
            last = w.latest(victim)
            done = {k["pid"] for k in record["kills"]}
            if last["status"] != "running" or last["pid"] in done:
                return
            if not _kill_trial_worker(tag, victim, last["pid"]):
                return
            record["kills"].append({"pid": last["pid"], "epoch": last["epoch"], "at": time.time()})

        with Watcher(out / "tune" / EXPERIMENT, raylets, inject) as w:
            search(record, search_kwargs(out, space, [1], trials, max_failures=max_failures))
    record = _finish(record, w, out, cells=1, trials=trials)
    record["attempts"] = attempts(w.seen.get(record.get("victim", ""), []), record["kills"])
    return record


def attempts(rows: list[dict[str, Any]], kills: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """A trial's results cut at each kill: per attempt its pid, first and last epoch, status."""
    cuts = [k["at"] for k in kills] + [float("inf")]
    out, start = [], 0.0
    for end in cuts:
        part = sorted(
            (r for r in rows if start < r["reported_at"] <= end), key=lambda r: r["reported_at"]
        )
        if part:
            out.append(
                {
                    "pids": sorted({r["pid"] for r in part}),
                    "first": part[0]["epoch"],
                    "last": part[-1]["epoch"],
                    "status": part[-1]["status"],
                    "since_restore": part[0]["iterations_since_restore"],
                }
            )
        start = end
    return out


def _first_at_epoch(w: Watcher, epoch: int) -> str | None:
    for name in sorted(w.seen):
        last = w.latest(name)
        if last and last["status"] == "running" and last["epoch"] >= epoch:
            return name
    return None


def _kill_trial_worker(tag: str, trial_dir: str, pid: int) -> bool:
    """SIGKILL `pid` if it is this drill's worker running `trial_dir` (Tune makes the trial's
    working directory, named like its storage folder, the worker's cwd)."""
    if pid not in tagged_pids(tag):
        return False
    try:
        if Path(os.readlink(f"/proc/{pid}/cwd")).name != trial_dir:
            return False
        os.kill(pid, signal.SIGKILL)
    except (OSError, ProcessLookupError):
        return False
    return True


# ---------------------------------------------------------------- driver-kill
def driver_kill(
    out: Path, tag: str, epochs: int, trials: int, timeout: float, orphan_wait: float = 2.0
) -> dict[str, Any]:
    """SIGKILL a CLI search's driver mid-search, stop what it leaves by PID, --resume it."""
    record: dict[str, Any] = {"drill": "driver-kill", "tag": tag, "epochs": epochs}
    space = write_space(out.parent / "cnn.yaml", epochs)
    cmd = [sys.executable, "-m", "raydistill", "search", str(space), "--budgets", BUDGET,
           "--depths", "1,2", "--trials", str(trials), "--data", f"synthetic-sep:{IMAGES}",
           "--val-size", str(VAL), "--cpus-per-trial", "1", "--out", str(out),
           "--name", EXPERIMENT, "--device", "cpu", "--wandb", "offline", "--searcher",
           "random", "--address", "local"]  # fmt: skip
    w = Watcher(out / "tune" / EXPERIMENT, {})
    t0 = time.perf_counter()
    with own_session(cmd, out.parent / "driver.log", timeout) as proc:
        while not all((held := _mid_search(w, epochs)).values()):
            if proc.poll() is not None or time.perf_counter() - t0 > timeout:
                raise RuntimeError(f"search ended (rc {proc.poll()}) before the kill point")
            time.sleep(POLL_S)
            w.poll()
        record["before"] = {n: r for n in w.seen if (r := w.latest(n))}
        record["snapshot_holds"] = held
        record["killed_at"] = w.killed_at = time.time()
        os.kill(proc.pid, signal.SIGKILL)  # the driver alone, as a crash or OOM kill would
        proc.wait(timeout=30)
    record["orphans"] = watch_orphans(tag, orphan_wait, w)
    left = tagged_pids(tag, exclude=(os.getpid(), *ancestors()))
    record["left_after_kill"] = sorted(left.values())
    stop_pids(left)
    resume = [sys.executable, "-m", "raydistill", "search", "--resume", str(out)]
    t1 = time.perf_counter()
    with own_session(resume, out.parent / "resume.log", timeout) as proc:
        record["resume_rc"] = proc.wait(timeout=timeout)
    record["resume_s"] = time.perf_counter() - t1
    record["left_after_resume"] = sorted(lingering(tag, (os.getpid(), *ancestors())).values())
    w.poll()
    return _finish(record, w, out, cells=2, trials=trials) | {
        "victims_restart_s": restart_times(w.seen, record["killed_at"], record["before"], w.exp_dir)
    }


def watch_orphans(tag: str, wait_s: float, w: Watcher) -> dict[str, Any]:
    """What outlives a SIGKILLed driver: {name: seconds it lived after the kill (None: still
    alive after `wait_s`)} and results its trials reported meanwhile (epochs after death)."""
    t0, first = time.monotonic(), tagged_pids(tag, exclude=(os.getpid(), *ancestors()))
    ended: dict[int, float] = {}
    while len(ended) < len(first) and time.monotonic() - t0 < wait_s:
        ended |= {p: time.monotonic() - t0 for p in first if p not in ended and not alive(p)}
        w.poll()
        time.sleep(0.1)
    lived = {f"{n} ({p})": ended.get(p) for p, n in first.items()}
    return {
        "lived_s": lived,
        "reports_after_kill": sum(
            1 for rows in w.seen.values() for r in rows if r["reported_at"] > w.killed_at
        ),
    }


def _mid_search(w: Watcher, epochs: int) -> dict[str, list[str]]:
    """The trials whose state the newest experiment-state snapshot already holds: "finished"
    ones (their last epoch seen before it) and "running" ones with 2 to epochs - 2 epochs (their
    2nd epoch seen before it). The kill point is when both lists are non-empty."""
    states = list(w.exp_dir.glob("experiment_state-*.json"))
    snapshot = max((p.stat().st_mtime for p in states), default=0.0)
    held: dict[str, list[str]] = {"finished": [], "running": []}
    for name, rows in w.seen.items():
        last = w.latest(name) or {"status": None}
        if last["status"] == "finished" and last["seen_at"] < snapshot:
            held["finished"].append(name)
        elif (
            last["status"] == "running"
            and 2 <= last["epoch"] <= epochs - 2
            and any(r["epoch"] == 2 and r["seen_at"] < snapshot for r in rows)
        ):
            held["running"].append(name)
    return held


# ---------------------------------------------------------------- main
def _args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("drill", choices=["node-kill", "trial-kill", "driver-kill"])
    p.add_argument("--out", required=True, help="folder for the search (DIR/search) and drill.json")
    p.add_argument("--epochs", type=int, default=8, help="epochs per trial")
    p.add_argument("--trials", type=int, default=3, help="trials per cell")
    p.add_argument("--max-failures", type=int, default=2, help="trial-kill: retries per trial")
    p.add_argument("--timeout", type=float, default=240.0, help="driver-kill: per subprocess (s)")
    p.add_argument(
        "--orphan-wait",
        type=float,
        default=2.0,
        help="driver-kill: seconds to let orphans of the killed driver end by themselves",
    )
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = _args(argv)
    root = Path(args.out).resolve()
    root.mkdir(parents=True, exist_ok=True)
    tag = os.environ.get(TAG_VAR) or uuid.uuid4().hex[:12]
    own_tmp = "RAY_TMPDIR" not in os.environ
    ray_tmp = os.environ.get("RAY_TMPDIR") or short_tmp()
    env = drill_env(tag, ray_tmp)
    os.environ.clear()  # no RAY_* / WANDB_* of the caller's; set before Ray is imported
    os.environ.update(env)
    out = root / "search"
    drills = {
        "node-kill": lambda: node_kill(out, tag, args.epochs, args.trials),
        "trial-kill": lambda: trial_kill(out, tag, args.epochs, args.trials, args.max_failures),
        "driver-kill": lambda: driver_kill(
            out, tag, args.epochs, args.trials, args.timeout, args.orphan_wait
        ),
    }
    try:
        record = drills[args.drill]()
    finally:
        stop_pids(tagged_pids(tag, exclude=(os.getpid(), *ancestors())))
        if own_tmp:
            shutil.rmtree(ray_tmp, ignore_errors=True)
    (root / "drill.json").write_text(json.dumps(record, indent=1))
    print("FIGURES " + json.dumps(figures(record)), flush=True)
    return 0


def figures(record: dict[str, Any]) -> dict[str, Any]:
    keep = (
        "drill",
        "cluster_start_s",
        "search_s",
        "search_interrupted",
        "remove_node_s",
        "resume_s",
        "restart_s",
        "victims_restart_s",
        "attempts",
        "counts",
        "orphans",
        "left_after_kill",
        "left_after_shutdown",
    )
    return {k: record[k] for k in keep if k in record}


if __name__ == "__main__":
    sys.exit(main())
