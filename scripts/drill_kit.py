"""The drill toolkit of scripts/fault_drill.py: processes found and stopped by tag, a watcher of
what trials report, a 2-node Ray cluster on 127.0.0.1, node kills, kill-to-restart figures.

Network and processes: every process of a drill runs with RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0
(`drill_env`), so all nodes sit on 127.0.0.1 and Ray listens on the loopback only (checked:
`listening`), and with its own RAY_TMPDIR, so no other Ray on the machine is touched. Every
process a drill starts inherits RAYDISTILL_DRILL=<tag>; whatever is left of a drill at its end
is found by that tag in /proc/PID/environ (`tagged_pids`) and stopped by PID (`stop_pids`:
SIGTERM, then SIGKILL). tests/test_fault_tolerance.py and tests/test_storage.py use the same
helpers for the drills they run in subprocesses.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

TAG_VAR = "RAYDISTILL_DRILL"
POLL_S = 0.05  # watcher period (s): epochs here take ~0.1-1 s, trials several seconds


# ---------------------------------------------------------------- environment and processes
def drill_env(tag: str, ray_tmp: str) -> dict[str, str]:
    """The environment of a drill and of every process it starts (Ray, W&B, Tune settings)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RAY_", "WANDB_"))}
    env.update({
        TAG_VAR: tag,
        "RAY_TMPDIR": ray_tmp,  # sessions, sockets, ray_current_cluster: private to the drill
        # Single-machine mode: nodes on 127.0.0.1 and every Ray server on the loopback only.
        "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",
        # Token auth protects a cluster reachable from other machines; these clusters listen on
        # 127.0.0.1 only and live for one drill, and a drill's CLI resume must rejoin nothing.
        "RAY_AUTH_MODE": "disabled",
        "RAY_USAGE_STATS_ENABLED": "0",
        "WANDB_MODE": "offline", "WANDB_SILENT": "true",
        "TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S": "0",
    })  # fmt: skip
    return env


def short_tmp() -> str:
    """A short private folder: Ray's unix socket paths under it must stay under 108 bytes."""
    return tempfile.mkdtemp(prefix="rdft-", dir="/tmp")


def _stat(pid: int) -> list[str] | None:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(") ", 1)[1].split()
    except (OSError, IndexError):
        return None


def parent_of(pid: int) -> int | None:
    stat = _stat(pid)
    return int(stat[1]) if stat else None


def lingering(tag: str, exclude: tuple[int, ...] = (), grace_s: float = 30.0) -> dict[int, str]:
    """The tagged processes still alive `grace_s` after their session ended: Ray's workers exit
    asynchronously after `ray.shutdown()` (seconds on a loaded 2-core machine), so a process
    counts as left behind only once that grace has passed."""
    t0 = time.monotonic()
    while (left := tagged_pids(tag, exclude)) and time.monotonic() - t0 < grace_s:
        time.sleep(0.5)
    return left


def tagged_pids(tag: str, exclude: tuple[int, ...] = ()) -> dict[int, str]:
    """{pid: name} of live processes whose environment holds RAYDISTILL_DRILL=<tag>."""
    needle = f"{TAG_VAR}={tag}".encode()
    found = {}
    for d in Path("/proc").iterdir():
        if not d.name.isdigit() or int(d.name) in exclude:
            continue
        try:
            if needle not in (d / "environ").read_bytes().split(b"\0"):
                continue
            stat = _stat(int(d.name))
            if stat is None or stat[0] == "Z":  # a zombie is gone; its parent reaps it
                continue
            found[int(d.name)] = (d / "cmdline").read_bytes().split(b"\0")[0].decode()[:60]
        except OSError:
            continue
    return found


def stop_pids(pids: dict[int, str] | list[int], grace_s: float = 5.0) -> None:
    """SIGTERM, then SIGKILL after `grace_s`, each pid (ours, found by tag), until gone."""
    for sig, wait in ((signal.SIGTERM, grace_s), (signal.SIGKILL, 10.0)):
        live = [p for p in pids if alive(p)]
        for p in live:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(p, sig)
        deadline = time.monotonic() + wait
        while any(alive(p) for p in live) and time.monotonic() < deadline:
            time.sleep(0.1)


def alive(pid: int) -> bool:
    stat = _stat(pid)
    return stat is not None and stat[0] != "Z"


def listening(pids: dict[int, str] | list[int]) -> list[str]:
    """Local addresses ("127.0.0.1:PORT") of every TCP socket in LISTEN state owned by `pids`."""
    inodes: set[str] = set()
    for p in pids:
        with contextlib.suppress(OSError):
            for fd in Path(f"/proc/{p}/fd").iterdir():
                with contextlib.suppress(OSError):
                    link = os.readlink(fd)
                    if link.startswith("socket:["):
                        inodes.add(link[8:-1])
    found = []
    for table in ("tcp", "tcp6"):
        with contextlib.suppress(OSError):
            for line in Path(f"/proc/net/{table}").read_text().splitlines()[1:]:
                cols = line.split()
                if cols[3] == "0A" and cols[9] in inodes:  # 0A: LISTEN
                    found.append(_address(cols[1]))
    return sorted(found)


def _address(hex_addr: str) -> str:
    """/proc/net/tcp{,6} "0100007F:1F90" → "127.0.0.1:8080" (IPv6 shown as hex groups)."""
    host, port = hex_addr.split(":")
    if len(host) == 8:
        ip = ".".join(str(int(host[i : i + 2], 16)) for i in (6, 4, 2, 0))
    else:  # four little-endian 32-bit words
        words = [bytes.fromhex(host[i : i + 8])[::-1].hex() for i in range(0, 32, 8)]
        ip = ":".join(w[i : i + 4] for w in words for i in (0, 4))
        ip = {
            "0000:0000:0000:0000:0000:ffff:7f00:0001": "127.0.0.1",
            "0000:0000:0000:0000:0000:0000:0000:0001": "::1",
        }.get(ip, ip)
    return f"{ip}:{int(port, 16)}"


# ---------------------------------------------------------------- what trials reported
def read_results(exp_dir: Path) -> dict[str, list[dict[str, Any]]]:
    """{trial dir name: [result, ...]} from Tune's result.json files (complete lines only)."""
    found = {}
    for path in sorted(exp_dir.glob("*/result.json")):
        rows = []
        with contextlib.suppress(OSError):
            for line in path.read_text().splitlines():
                with contextlib.suppress(ValueError):
                    rows.append(json.loads(line))
        found[path.parent.name] = rows
    return found


class Watcher:
    """Polls a running search: keeps every result each trial reported (Tune may rewrite
    result.json on a restore) and maps each reporting worker pid to its node via its parent,
    the node's raylet; `on_poll(self)` runs after each poll (the drills' fault injectors)."""

    KEEP = (
        "epoch",
        "status",
        "training_iteration",
        "iterations_since_restore",
        "pid",
        "reported_at",
        "time_this_iter_s",
        "trial_id",
    )

    def __init__(self, exp_dir: Path, raylets: dict[int, str], on_poll: Any = None) -> None:
        self.exp_dir, self.raylets, self.on_poll = exp_dir, raylets, on_poll
        self.seen: dict[str, list[dict[str, Any]]] = {}
        self.pid_node: dict[int, str] = {}
        self.error: str | None = None
        self.killed_at = float("inf")
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="drill-watcher", daemon=True)

    def __enter__(self) -> Watcher:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=30)
        self.poll()

    def _loop(self) -> None:
        while not self._stop.wait(POLL_S):
            try:
                self.poll()
                if self.on_poll is not None:
                    self.on_poll(self)
            except Exception as exc:  # a failed injector must fail the drill, not hang it
                self.error = f"{type(exc).__name__}: {exc}"
                return

    def poll(self) -> None:
        for name, rows in read_results(self.exp_dir).items():
            have = self.seen.setdefault(name, [])
            keys = {(r["pid"], r["training_iteration"]) for r in have}
            for r in rows:
                if (r.get("pid"), r.get("training_iteration")) not in keys:
                    have.append({k: r.get(k) for k in self.KEEP} | {"seen_at": time.time()})
            for r in have:
                if r["pid"] not in self.pid_node:
                    node = self.raylets.get(parent_of(r["pid"]) or -1)
                    if node is not None:
                        self.pid_node[r["pid"]] = node

    def latest(self, name: str) -> dict[str, Any] | None:
        rows = self.seen.get(name) or []
        return max(rows, key=lambda r: r["reported_at"]) if rows else None


# ---------------------------------------------------------------- the cluster, kills
@contextlib.contextmanager
def two_node_cluster(record: dict[str, Any]) -> Iterator[tuple[Any, Any, dict[int, str]]]:
    """A head and a worker node of 1 CPU each, this process connected as the driver; shut
    down (and anything of this drill left over stopped by PID) however the block ends."""
    import ray
    from ray.cluster_utils import Cluster

    t0 = time.perf_counter()
    cluster = Cluster()
    try:
        head = cluster.add_node(num_cpus=1, include_dashboard=False)
        worker = cluster.add_node(num_cpus=1)
        cluster.wait_for_nodes()
        ray.init(address=cluster.address, log_to_driver=False)
        record["cluster_start_s"] = time.perf_counter() - t0
        raylets = {_raylet_pid(head): "head", _raylet_pid(worker): "worker"}
        record["nodes"] = {"head": head.node_id, "worker": worker.node_id}
        record["listening"] = listening(tagged_pids(record["tag"], (os.getpid(),)))
        yield cluster, worker, raylets
    finally:
        ray.shutdown()
        cluster.shutdown()
        left = lingering(record["tag"], exclude=(os.getpid(), *ancestors()))
        record["left_after_shutdown"] = sorted(left.values())
        stop_pids(left)


def _raylet_pid(node: Any) -> int:
    return node.all_processes["raylet"][0].process.pid


def ancestors(pid: int | None = None) -> list[int]:
    """The parent, grandparent, ... of `pid` (default: this process), up to init."""
    out, pid = [], parent_of(pid) if pid is not None else os.getppid()
    while pid and pid > 1:
        out.append(pid)
        pid = parent_of(pid) or 0
    return out


def kill_node(tag: str, raylet: int) -> dict[int, str]:
    """SIGKILL a node's raylet and every process under it (trial workers, agents) at once, as
    when its machine dies: a worker process outliving its raylet would otherwise keep training
    and reporting to the driver for a moment."""
    procs = tagged_pids(tag)
    doomed = {p: n for p, n in procs.items() if p == raylet or raylet in ancestors(p)}
    for p in doomed:
        with contextlib.suppress(ProcessLookupError):
            os.kill(p, signal.SIGKILL)
    return doomed


# ---------------------------------------------------------------- kill-time figures
def tune_failures(exp_dir: Path) -> dict[str, int]:
    """{trial dir: failures Tune logged in its error.txt ("Failure # N (occurred at ...)")}."""
    found = {}
    for path in exp_dir.glob("*/error.txt"):
        text = path.read_text(errors="replace")
        found[path.parent.name] = sum(ln.startswith("Failure # ") for ln in text.splitlines())
    return found


def restart_times(
    seen: dict[str, list[dict]], killed_at: float | None, victims: Any, exp_dir: Path
) -> dict[str, dict[str, float]]:
    """Per trial hit by a kill, seconds from the kill to: Tune recording its failure (at most;
    error.txt stamps it to the second; absent after a driver kill), its restarted attempt
    starting (its first result's report time minus that epoch's duration), and that result."""
    out: dict[str, dict[str, float]] = {}
    for name in victims or []:
        after = [r for r in seen.get(name, []) if killed_at and r["reported_at"] > killed_at]
        if not after:
            continue
        first = min(after, key=lambda r: r["reported_at"])
        out[name] = {
            "to_start": first["reported_at"] - first["time_this_iter_s"] - killed_at,
            "to_first_epoch": first["reported_at"] - killed_at,
            "first_epoch": first["epoch"],
        }
        stamps = failure_times(exp_dir / name / "error.txt")
        if stamps:
            out[name]["to_detect_max"] = stamps[0] + 1.0 - killed_at
    return out


def failure_times(error_txt: Path) -> list[float]:
    """Epoch seconds of Tune's "Failure # N (occurred at 2026-11-22_08-13-12)" lines (local
    time, truncated to the second); [] without the file."""
    if not error_txt.is_file():
        return []
    found = re.findall(r"^Failure # \d+ \(occurred at ([\d_-]+)\)", error_txt.read_text(), re.M)
    return [time.mktime(time.strptime(t, "%Y-%m-%d_%H-%M-%S")) for t in found]


# ---------------------------------------------------------------- subprocesses
@contextlib.contextmanager
def own_session(cmd: list[str], log: Path, timeout: float) -> Iterator[subprocess.Popen]:
    """Run `cmd` in its own session (its own process group); killed as a group on the way out."""
    with open(log, "ab") as f:
        proc = subprocess.Popen(cmd, stdout=f, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            yield proc
        finally:
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=timeout)
