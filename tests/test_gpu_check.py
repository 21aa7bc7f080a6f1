"""scripts/gpu_check.py: the one prepared script for a machine with one GPU (issue 22).

It must run where only torch, numpy, pyarrow, safetensors and pyyaml are installed: every
module it uses imports without Ray, W&B, Optuna, pydantic or jsonargparse (a subprocess whose
meta-path refuses them). CI runs the script itself with `--device cpu --quick` (slow).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "scripts" / "gpu_check.py"
BLOCKER = """
import importlib.abc, sys
REFUSED = {"ray", "wandb", "optuna", "pydantic", "jsonargparse"}
class Refuse(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name.split(".")[0] in REFUSED:
            raise ImportError(f"gpu_check must not need {name}")
sys.meta_path.insert(0, Refuse())
"""
MODULES = ("raydistill.students", "raydistill.training.loop", "raydistill.distill.teachers",
           "raydistill.distill.ensemble", "raydistill.distill.transfer.writer",
           "raydistill.distill.transfer.format", "raydistill.export.exporter")  # fmt: skip


def _python(code: str, *args: str, timeout: float) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.run([sys.executable, "-c", BLOCKER + code, *args], env=env, text=True,
                          capture_output=True, timeout=timeout, cwd=REPO)  # fmt: skip


def test_what_gpu_check_uses_imports_without_ray_wandb_optuna_pydantic() -> None:
    code = ("import importlib, runpy\n"
            f"for m in {MODULES!r}: importlib.import_module(m)\n"
            "runpy.run_path(sys.argv[1], run_name='gpu_check')\n"
            "from raydistill.students import families; assert families()\n"
            "print('IMPORTED')")  # fmt: skip
    proc = _python(code, str(SCRIPT), timeout=300)
    assert proc.returncode == 0 and "IMPORTED" in proc.stdout, proc.stderr[-3000:]
    refused = _python("import raydistill.search.run", timeout=300)  # the blocker works
    assert refused.returncode != 0 and "must not need" in refused.stderr


@pytest.mark.slow
def test_gpu_check_passes_on_the_cpu_quick() -> None:
    code = ("import runpy\nsys.argv = [sys.argv[1], '--device', 'cpu', '--quick']\n"
            "runpy.run_path(sys.argv[0], run_name='__main__')")  # fmt: skip
    proc = _python(code, str(SCRIPT), timeout=1500)
    print(proc.stdout)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-4000:]
    lines = [
        ln
        for ln in proc.stdout.splitlines()
        if ln.startswith(("step:", "teacher", "export", "bench"))
    ]
    from raydistill.students import families

    steps = [ln.split()[0] for ln in lines if ln.startswith("step:")]
    assert len(steps) == sum(
        len(f.depths) if f.kind == "student" else 1 for f in families().values()
    )  # every registered family
    assert not [ln for ln in lines if " FAILED " in ln], lines
    assert " ok " in next(ln for ln in lines if ln.startswith("export"))
