"""The export's self-check: what an exported student must reproduce, and where it is measured.

`self_check(directory, reference, inputs, row, splits, ...)` runs before an export becomes
visible: the reloaded module's logits (`load_student`) and the torch.export program's must
match the checkpoint's to `LOGITS_ATOL` on a fixed batch of seeded raw images (in this
process: eight images), and, with a dataset, the test accuracy of both forms on the raw test
images must equal the recorded one, image for image (`round(acc · n)`). Both sides compute the
same thing: the recorded test/acc is measured in float32 without TF32
(`raydistill.training.accel.exact_fp32`), and so is the re-measurement here.

The whole-test-set measurement is the heavy part. By default it runs in this process
(`measure_files`: the plain-Python path of the API and the CLI). A study on Ray passes
`on_ray(splits, cpus)`: each measurement is then a Ray task with the resource policy's options
(`raydistill.core.resources.verification_options`), the splits go into the object store once
for all of a study's exports, and the task gets the exported files' bytes (spec.json,
model.safetensors, model.pt2), not a path: it may run on another node. It returns numbers;
the files and the manifest are written by the driver. The record in spec.json's
"verification" says where it was measured (`measured_by`: host, pid, the task's resources).
"""

from __future__ import annotations

import os
import socket
import sys
import tempfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from raydistill.core.errors import UserError
from raydistill.core.numbers import finite
from raydistill.export.inference import RawImageStudent, load_student

if TYPE_CHECKING:
    from raydistill.data import Splits

LOGITS_ATOL = 1e-5
FIXED_BATCH = 8  # images in the fixed comparison batch (seeded raw images)
MEASURED_FILES = ("spec.json", "model.safetensors", "model.pt2")  # what a measurement reads

# (directory of an export) → {"test_acc", "program_test_acc", "n", "measured_by"}
Measure = Callable[[Path], dict[str, Any]]


def fixed_batch(inputs: Mapping[str, Any]) -> torch.Tensor:
    """Seeded raw images of the export's input dtype and shape (the comparison batch)."""
    shape = (FIXED_BATCH, *(int(s) for s in inputs["shape"]))
    g = torch.Generator().manual_seed(0)
    if inputs["dtype"] == "uint8":
        return torch.randint(0, 256, shape, generator=g, dtype=torch.uint8)
    return torch.rand(shape, generator=g)


@torch.no_grad()
def raw_accuracy(model: Callable[[torch.Tensor], torch.Tensor], splits: Splits,
                 split: str = "test", batch_size: int = 1000) -> tuple[float, int]:  # fmt: skip
    """(accuracy, n) of an exported form on the split's raw images, as a user would call it."""
    x, y = splits.split(split)
    correct = 0
    for i in range(0, len(y), batch_size):
        logits = model(torch.from_numpy(np.ascontiguousarray(x[i : i + batch_size])))
        correct += int((logits.argmax(1).numpy() == y[i : i + batch_size]).sum())
    return correct / max(len(y), 1), len(y)


def measure_files(files: Mapping[str, bytes] | Path, splits: Splits) -> dict[str, Any]:
    """Test accuracy of an export's module and program on the raw test images, in float32
    without TF32; `files`: the export's directory, or its `MEASURED_FILES` as bytes (a Ray
    task's input, written into a temporary directory here)."""
    if isinstance(files, Path):
        return _measure_dir(files, splits)
    with tempfile.TemporaryDirectory(prefix="raydistill-verify-") as tmp:
        for name, blob in files.items():
            (Path(tmp) / name).write_bytes(blob)
        return _measure_dir(Path(tmp), splits)


@torch.no_grad()
def _measure_dir(directory: Path, splits: Splits) -> dict[str, Any]:
    from raydistill.training.accel import exact_fp32

    module = load_student(directory)
    program = torch.export.load(str(directory / "model.pt2")).module()
    with exact_fp32():
        acc, n = raw_accuracy(module, splits)
        program_acc = raw_accuracy(program, splits)[0]
    return {"test_acc": acc, "program_test_acc": program_acc, "n": n, "measured_by": _where()}


def _where() -> dict[str, Any]:
    """The process that measured: host, pid, and inside a Ray task the resources it holds."""
    out: dict[str, Any] = {"host": socket.gethostname(), "pid": os.getpid(), "resources": None}
    ray = sys.modules.get("ray")  # loaded in a Ray worker; never imported here for this
    if ray is not None and ray.is_initialized() and ray.get_runtime_context().get_task_id():
        out["resources"] = dict(ray.get_runtime_context().get_assigned_resources())
    return out


def in_process(splits: Splits) -> Measure:
    """The measurement in this process (the API's and the CLI's default)."""
    return lambda directory: measure_files(directory, splits)


def on_ray(splits: Splits, cpus: float = 1.0) -> Measure:
    """The measurement as a Ray task with the resource policy's verification options (Ray up in
    this process); `splits` go into the object store now, once for every export measured."""
    import ray

    from raydistill.core.resources import verification_options

    task = ray.remote(max_retries=1, **verification_options(cpus))(measure_files)
    splits_ref = ray.put(splits)

    def measure(directory: Path) -> dict[str, Any]:
        files = {name: (directory / name).read_bytes() for name in MEASURED_FILES}
        return ray.get(task.remote(files, splits_ref))

    return measure


@torch.no_grad()
def self_check(
    tmp: Path, reference: RawImageStudent, inputs: Mapping[str, Any], row: Mapping[str, Any],
    splits: Splits | None, no_data_reason: str, measure: Measure | None = None,
) -> dict[str, Any]:  # fmt: skip
    """spec.json's "verification" of the export in `tmp` (see the module docstring), or a
    one-line UserError when a form does not reproduce the checkpoint."""
    x = fixed_batch(inputs)
    want = reference(x)
    reloaded = load_student(tmp)
    program = torch.export.load(str(tmp / "model.pt2")).module()
    diff = float((reloaded(x) - want).abs().max())
    prog = float((program(x) - want).abs().max())
    if not (diff <= LOGITS_ATOL and prog <= LOGITS_ATOL):
        raise UserError(
            f"export of {row['cell']} failed its check: logits differ by {max(diff, prog):.3g} > {LOGITS_ATOL}"
        )
    out = {"logits_max_abs_diff": diff, "program_max_abs_diff": prog, "test_acc": None,
           "test_acc_recorded": finite(row.get("test/acc")), "test_verified": False}  # fmt: skip
    if splits is None:
        out["note"] = f"test accuracy not re-verified: {no_data_reason}"
        return out
    got = (measure or in_process(splits))(tmp)
    n = int(got["n"])
    out.update(test_acc=got["test_acc"], program_test_acc=got["program_test_acc"],
               measured_by=got["measured_by"])  # fmt: skip
    rec = out["test_acc_recorded"]
    if rec is None:
        out["note"] = "test accuracy measured; the results table recorded none to compare"
        return out
    for what, acc in (("module", got["test_acc"]), ("torch.export program", got["program_test_acc"])):  # fmt: skip
        if round(acc * n) != round(rec * n):
            raise UserError(
                f"export of {row['cell']} failed its check: the {what}'s test accuracy on raw "
                f"images {acc:.4f} != recorded {rec:.4f} ({n} images)"
            )
    out.update(test_verified=True, note=f"test accuracy re-verified on {n} raw images")
    return out
