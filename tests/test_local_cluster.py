"""scripts/local_cluster.sh and scripts/submit.sh, run for real.

The slow test starts a real Ray head on 127.0.0.1 with the script, connects a separate driver
process with the token the script made, runs a remote task, checks that a driver without the
token is refused and that nothing the script started listens beyond the loopback, then stops
the cluster by PID and checks every recorded process is gone. The cluster is stopped in a
`finally`, so a failing assertion never leaves Ray processes behind.

The fast tests run submit.sh up to the submission (--print, argument and secret handling, and
the reachability check); an actual `ray job submit` needs a cluster with ray[default], which
this environment does not have.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import re
import shlex
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from raydistill.cli import _parser

REPO = Path(__file__).resolve().parents[1]
LOCAL = REPO / "scripts" / "local_cluster.sh"
SUBMIT = REPO / "scripts" / "submit.sh"
PYTHON = sys.executable

# A driver in its own process: connects by explicit address and runs one task.
CLIENT = """
import os, sys, ray
ray.init(address=sys.argv[1], log_to_driver=False)
@ray.remote
def double(x):
    return 2 * x, os.getpid()
value, pid = ray.get(double.remote(21))
print("RESULT", value, pid)
ray.shutdown()
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _clean_env(**extra: str) -> dict[str, str]:
    """The caller's environment without Ray or W&B settings (conftest sets some), plus extra."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RAY_", "WANDB_"))}
    env["PATH"] = f"{Path(PYTHON).parent}{os.pathsep}{env.get('PATH', '')}"
    env["PYTHON"] = PYTHON
    env.update(extra)
    return env


def _run(cmd: list[str], env: dict[str, str], timeout: float) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(c) for c in cmd], env=env, capture_output=True, text=True, timeout=timeout
    )


def _exports(env_file: Path) -> dict[str, str]:
    """`export K=V` lines of the script's env file."""
    pairs = re.findall(r"^export (\w+)=(.*)$", env_file.read_text(), flags=re.M)
    return dict(pairs)


def _recorded(state: Path, name: str = "pids") -> list[tuple[int, str, str]]:
    rows = [line.split(maxsplit=2) for line in (state / name).read_text().splitlines()]
    return [(int(pid), start, comm) for pid, start, comm in rows]


def _same_process_alive(pid: int, start: str) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(") ", 1)[1].split()[19] == start


def _listening(pids: set[int]) -> list[tuple[str, int]]:
    """(local address, pid) of every TCP listener owned by `pids`, from `ss -ltnp`."""
    out = subprocess.run(["ss", "-ltnpH"], capture_output=True, text=True, check=True).stdout
    found = []
    for line in out.splitlines():
        local = line.split()[3]
        found += [(local, int(p)) for p in re.findall(r"pid=(\d+)", line) if int(p) in pids]
    return found


def _is_loopback(local: str) -> bool:
    host = local.rsplit(":", 1)[0].strip("[]")
    return host in ("127.0.0.1", "::1", "::ffff:127.0.0.1")


# ---------------------------------------------------------------- local_cluster.sh
@pytest.mark.slow
def test_local_cluster_start_status_connect_stop():
    # A short state path: Ray's unix sockets live under it and must stay under 108 bytes.
    state = Path(tempfile.mkdtemp(prefix="rdl-", dir="/tmp"))
    port = _free_port()
    env = _clean_env(RAYDISTILL_RAY_STATE=str(state))
    stop = None
    try:
        t0 = time.monotonic()
        start = _run([LOCAL, "start", "--port", port, "--num-cpus", 1], env, 180)
        start_s = time.monotonic() - t0
        assert start.returncode == 0, start.stdout + start.stderr
        _check_running_cluster(state, port, env, start.stdout + start.stderr)
    finally:
        if (state / "pids").exists():
            t0 = time.monotonic()
            stop = _run([LOCAL, "stop"], env, 120)
            stop_s = time.monotonic() - t0
    assert stop is not None and stop.returncode == 0, stop and stop.stdout + stop.stderr
    recorded = _recorded(state, "pids.stopped")
    assert [r for r in recorded if _same_process_alive(r[0], r[1])] == []
    assert _run([LOCAL, "status"], env, 30).returncode == 3
    print(f"\nlocal cluster: start {start_s:.1f} s, stop {stop_s:.1f} s, {len(recorded)} processes")
    shutil.rmtree(state, ignore_errors=True)


def _check_running_cluster(state: Path, port: int, env: dict[str, str], start_out: str) -> None:
    token_file = state / "auth_token"
    assert token_file.stat().st_mode & 0o777 == 0o600
    assert token_file.read_text() not in start_out  # the token is never printed

    status = _run([LOCAL, "status"], env, 30)
    assert status.returncode == 0 and f"127.0.0.1:{port}" in status.stdout, status.stdout

    recorded = _recorded(state)
    names = {comm for _, _, comm in recorded}
    assert {"gcs_server", "raylet"} <= names, names
    if shutil.which("ss"):
        listeners = _listening({pid for pid, _, _ in recorded})
        assert any(local.endswith(f":{port}") for local, _ in listeners), listeners
        assert [lp for lp in listeners if not _is_loopback(lp[0])] == []

    client_env = _clean_env(**_exports(state / "env"))
    assert client_env["RAY_AUTH_MODE"] == "token"
    ok = _run([PYTHON, "-c", CLIENT, f"127.0.0.1:{port}"], client_env, 120)
    assert ok.returncode == 0 and "RESULT 42" in ok.stdout, ok.stdout + ok.stderr[-2000:]

    # Same address, no token: the GCS refuses the driver (Ray gives up after ~20 s).
    no_token = dict(client_env, RAY_AUTH_MODE="disabled")
    no_token.pop("RAY_AUTH_TOKEN_PATH")
    refused = _run([PYTHON, "-c", CLIENT, f"127.0.0.1:{port}"], no_token, 120)
    assert refused.returncode != 0 and "RESULT" not in refused.stdout


def test_status_and_stop_of_a_cluster_never_started(tmp_path):
    env = _clean_env(RAYDISTILL_RAY_STATE=str(tmp_path / "state"))
    status = _run([LOCAL, "status"], env, 30)
    assert status.returncode == 3 and "down" in status.stdout
    stop = _run([LOCAL, "stop"], env, 30)
    assert stop.returncode == 0 and "not running" in stop.stdout
    bad = _run([LOCAL, "start", "--bogus"], env, 30)
    assert bad.returncode == 2 and "--bogus" in bad.stderr


# ---------------------------------------------------------------- submit.sh
SECRETS = {"WANDB_API_KEY": "wandb-secret-8d1f", "RAY_AUTH_TOKEN": "ray-token-5c2e"}
SEARCH = [
    "search_spaces/cnn.yaml",
    "--budgets",
    "1M",
    "--depths",
    "1,2",
    "--trials",
    "4",
    "--storage",
    "s3://bucket/raydistill/tune",
    "--out",
    "/tmp/runs/cnn",
]


def _submit(*args: object, **env: str) -> subprocess.CompletedProcess:
    return _run([SUBMIT, *args], _clean_env(**env), 60)


def _printed(out: str) -> tuple[dict, list[str]]:
    """The runtime env and the entrypoint of the `ray job submit` command submit.sh prints."""
    argv = shlex.split(out)
    assert argv[:3] == ["ray", "job", "submit"], argv[:3]
    renv = json.loads(argv[argv.index("--runtime-env-json") + 1])
    return renv, argv[argv.index("--") + 1 :]


def test_submit_print_builds_the_job_without_secrets():
    out = _submit("--print", "--", *SEARCH, WANDB_PROJECT="distill", **SECRETS)
    assert out.returncode == 0, out.stderr
    for secret in SECRETS.values():
        assert secret not in out.stdout + out.stderr
    renv, entry = _printed(out.stdout)
    assert renv["working_dir"] == str(REPO)
    assert renv["env_vars"]["WANDB_PROJECT"] == "distill"
    assert not set(renv["env_vars"]) & set(SECRETS)
    assert {".git", "*.parquet", ".ray-local"} <= set(renv["excludes"])
    assert entry[:2] == ["raydistill", "search"]
    assert entry[2:] == [*SEARCH, "--address", "auto"]  # passed through, driver attaches


def test_submit_entrypoint_parses_as_a_search():
    _, entry = _printed(_submit("--print", *SEARCH, "--address", "10.0.0.5:6379").stdout)
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        try:
            args = _parser().parse_args(entry[1:])
        except SystemExit:
            pytest.fail(f"{shlex.join(entry)} does not parse: {err.getvalue()}")
    assert args.command == "search" and args.address == "10.0.0.5:6379"  # user's address kept
    assert args.storage == "s3://bucket/raydistill/tune"


def test_submit_refuses_secrets_in_the_runtime_env():
    out = _submit("--env", "WANDB_API_KEY=abc123def", "--print", *SEARCH)
    assert out.returncode == 2
    assert "WANDB_API_KEY" in out.stderr and "abc123def" not in out.stdout + out.stderr


def test_submit_fails_fast_without_a_job_api():
    address = f"http://127.0.0.1:{_free_port()}"
    out = _submit("--job-address", address, *SEARCH, **SECRETS)
    assert out.returncode == 2
    assert f"no Ray job API at {address}" in out.stderr
    assert "token from $RAY_AUTH_TOKEN (value not shown)" in out.stderr
    for secret in SECRETS.values():
        assert secret not in out.stdout + out.stderr


def test_submit_needs_search_arguments():
    out = _submit()
    assert out.returncode == 2 and "no search arguments" in out.stderr
