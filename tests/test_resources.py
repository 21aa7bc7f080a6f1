"""The one resource policy (raydistill.core.resources, issue 22): what every Ray task asks for
comes from what the user declared and the student's size, never from the cluster at call time.

- Multi-node (tests/gpu_drill.py in a subprocess): on a `ray.cluster_utils.Cluster` on
  127.0.0.1 whose head has 0 GPUs, teacher members and seed repeats submitted with GPU settings
  stay pending until a node with a logical GPU joins, then run there; without GPU settings they
  run on the CPU at once.
- Bad input, one line, exit 2, before anything starts: GPU options on a machine without a
  GPU (every command that takes one: issue 23.3), a multi-node run on non-shared storage.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
import tempfile
import uuid
from pathlib import Path

import pytest

from raydistill.cli import main
from raydistill.core.errors import UserError
from raydistill.core.resources import (
    check_gpus,
    gpus_in_use,
    member_gpus,
    share_for,
    task_options,
)
from raydistill.core.storage import check_shared

REPO = Path(__file__).resolve().parents[1]
DRILL = REPO / "tests" / "gpu_drill.py"
TEACH = ["teach", "--data", "synthetic-sep:64", "--family", "vgg8", "--epochs", "1"]
_spec = importlib.util.spec_from_file_location("fault_drill", REPO / "scripts" / "fault_drill.py")
fd = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(fd)


# ---------------------------------------------------------------- the policy in numbers
def test_task_options_come_from_the_declared_share() -> None:
    assert task_options(0.0) == {"num_cpus": 1.0}
    assert task_options(0.25, 2) == {"num_cpus": 2, "num_gpus": 0.25}
    assert task_options(2) == {"num_cpus": 1.0, "num_gpus": 2.0}
    with pytest.raises(UserError, match="a share above 1 must be a whole number of GPUs"):
        check_gpus(1.5, "--gpus-per-trial")
    with pytest.raises(UserError, match="--gpu-fraction -1"):
        check_gpus(-1, "--gpu-fraction")
    assert member_gpus(3, 1) == pytest.approx(1 / 3) and gpus_in_use(3, 1 / 3) == 1
    assert gpus_in_use(4, 1.0) == 4 and gpus_in_use(2, 0.0) == 0


def test_share_for_is_a_power_of_two_between_a_sixteenth_and_one() -> None:
    assert share_for(0, 0, 80) == 1 / 16  # launch-bound: sixteen per GPU
    assert share_for(0, 2e12, 80) == 1.0  # a step that fills a GPU on its own
    assert share_for(30 * 2**30, 0, 80) == 1 / 2  # 30 GiB + a context of 80 GiB
    assert share_for(30 * 2**30, 0, 40) == 1.0  # the node type's memory, not the driver's


# ---------------------------------------------------------------- one-line refusals
def _refused(argv: list[str], capsys, match: str) -> None:
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("raydistill: error: "), err
    assert match in err, err


@pytest.mark.parametrize(
    ("argv", "match"),
    [
        (
            [*TEACH, "--gpu-fraction", "2"],
            "--gpu-fraction 2 asks for more GPUs per task than a local Ray has",
        ),
        (
            [
                "search",
                "SPACE",
                "--budgets",
                "1k",
                "--data",
                "synthetic-sep:64",
                "--gpus-per-trial",
                "2",
            ],
            "--gpus-per-trial 2 asks for more GPUs per task",
        ),
        (
            [
                "search",
                "SPACE",
                "--budgets",
                "1k",
                "--data",
                "synthetic-sep:64",
                "--device",
                "cuda",
            ],
            "--device 'cuda': no CUDA GPU is visible here",
        ),
        (
            ["transfer", "--teacher", "TEACHER", "--epochs", "1", "--device", "cuda"],
            "--device 'cuda': no CUDA GPU is visible here",
        ),
        (
            ["transfer", "--teacher", "TEACHER", "--epochs", "1", "--gpus", "2"],
            "--gpus 2 asks for more GPUs per task than a local Ray has",
        ),
        (
            ["prune", "SOURCE", "--budget", "1k", "--device", "cuda:0"],
            "--device 'cuda:0': no CUDA GPU is visible here",
        ),
    ],
    ids=["teach", "search-gpus", "search-device", "transfer-device", "transfer-gpus", "prune"],
)
def test_gpu_options_on_a_machine_without_a_gpu_are_one_line(argv, match, tmp_path, capsys):
    """Issue 23.3: every command that takes a GPU option refuses what this machine (a local
    Ray: it never gains a GPU) cannot serve, in one line, exit 2, before anything starts."""
    pytest.importorskip("torch")
    import torch

    if torch.cuda.device_count() > 1:
        pytest.skip("this machine has GPUs")
    space = tmp_path / "mlp.yaml"
    space.write_text("family: mlp\ndepths: [1]\ntrain: {lr: 0.01}\n")
    teacher = tmp_path / "teacher"
    teacher.mkdir()
    (teacher / "manifest.json").write_text("{}")
    source = tmp_path / "ckpt"
    source.mkdir()
    (source / "checkpoint.json").write_text("{}")
    names = {"SPACE": str(space), "TEACHER": str(teacher), "SOURCE": str(source)}
    argv = [names.get(a, a) for a in argv]
    out = tmp_path / ("out.parquet" if argv[0] == "transfer" else "out")
    _refused([*argv, "--out", str(out)], capsys, match)
    assert not out.exists()


def test_teach_gpu_fraction_one_without_a_gpu_does_not_hang(tmp_path) -> None:
    """The issue's own case, in a fresh process (no Ray running): `teach --gpu-fraction 1`
    hung with no message on a machine without a GPU."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
    env["CUDA_VISIBLE_DEVICES"] = ""  # this machine, as one without a GPU
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "raydistill",
            *TEACH,
            "--gpu-fraction",
            "1",
            "--out",
            str(tmp_path / "t"),
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert proc.stderr.strip().splitlines() == [
        "raydistill: error: --gpu-fraction 1 asks for more GPUs per task than a local Ray has "
        "(this machine has no GPU); use --gpu-fraction 0 (CPUs), or --address of a cluster "
        "with GPU nodes"
    ]
    assert not (tmp_path / "t").exists()


def test_multi_node_run_on_local_storage_is_refused(tmp_path, capsys) -> None:
    check_shared(None, "local")
    check_shared("s3://bucket/x", "auto")
    check_shared("file:///nfs/study", "10.0.0.1:6379")
    with pytest.raises(UserError, match="the default, DIR/tune, is on this machine's disk"):
        check_shared(None, "auto")
    space = tmp_path / "mlp.yaml"
    space.write_text("family: mlp\ndepths: [1]\ntrain: {lr: 0.01}\n")
    argv = [
        "search",
        str(space),
        "--budgets",
        "1k",
        "--data",
        "synthetic-sep:64",
        "--address",
        "127.0.0.1:1",
        "--storage",
        str(tmp_path / "st"),
        "--out",
        str(tmp_path / "s"),
    ]
    _refused(argv, capsys, f"--storage {tmp_path / 'st'} is a path on this machine's disk")
    assert not (tmp_path / "s").exists() and not (tmp_path / "st").exists()


# ---------------------------------------------------------------- multi-node
@pytest.mark.slow
def test_gpu_tasks_wait_for_a_gpu_node_and_cpu_tasks_do_not(tmp_path) -> None:
    ray_tmp = tempfile.mkdtemp(prefix="rdgp-", dir="/tmp")
    tag = uuid.uuid4().hex[:12]
    env = fd.drill_env(tag, ray_tmp)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env["PYTHONPATH"] = str(REPO)
    try:
        proc = subprocess.run(
            [sys.executable, str(DRILL)],
            env=env,
            text=True,
            capture_output=True,
            timeout=400,
            start_new_session=True,
        )
    finally:
        left = fd.lingering(tag, grace_s=20.0)  # Ray's workers exit after shutdown
        fd.stop_pids(left)
        shutil.rmtree(ray_tmp, ignore_errors=True)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-4000:]
    assert left == {}, f"processes left behind (stopped by PID): {left}"
    line = next(ln for ln in proc.stdout.splitlines() if ln.startswith("FIGURES "))
    fig = json.loads(line[8:])
    # No GPU settings: on the CPU at once, no GPU assigned.
    assert [m["gpu_ids"] for m in fig["cpu_members"]] == [[], []], fig
    assert [r["gpu_ids"] for r in fig["cpu_repeats"]] == [""], fig
    # GPU settings: pending while the cluster had no GPU, then on the GPU node's GPU.
    assert fig["pending_before_gpu_node"] == [True, True], fig
    assert [m["gpu_ids"] for m in fig["gpu_members"]] == [["0"], ["0"]], fig
    assert [r["gpu_ids"] for r in fig["gpu_repeats"]] == ["0"], fig
    assert {m["status"] for m in fig["gpu_members"] + fig["gpu_repeats"]} == {"finished"}
    print(
        f"\nFIGURES gpu drill: {fig['total_s']} s in all, CPU tasks {fig['cpu_s']} s, "
        f"GPU tasks {fig['gpu_s']} s after the GPU node joined"
    )
