"""THE resource policy: what every Ray task of the project asks of the cluster.

Search trials, teacher members, labelling and evaluation shards, seed repeats, pruning
fine-tunes and export verification all take their Ray options from here. GPU requests come
from what the user declared (`--gpus-per-trial`, `--gpu-fraction`, `--gpus`, the scale file)
and, for "auto", from the student's size (`share_for`; `raydistill.search.sizing` measures the
student); never from what the cluster has at the moment a task is submitted. An autoscaling
cluster starts with no GPU node: a task that asked for CPUs only because none was up yet would
run on the CPU and the autoscaler would never add one. A task that asks for a GPU waits for it.

A cluster that has no GPU and never will (a private local Ray, this machine) refuses a GPU
request in one line before anything starts (`check_gpu_request`), instead of a task that waits
forever; a joined cluster without a GPU node yet only says the tasks wait for the autoscaler.

Plain numbers only: no torch, no Ray at import.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Mapping
from typing import Any

from raydistill.core.errors import UserError

MIN_SHARE, MAX_SHARE = 1 / 16, 1.0  # a trial's "auto" share: 1/16 … 1 GPU, powers of two
# A step that keeps one H100-class GPU busy on its own: 2e12 FLOPs, ~10 ms at 200 TFLOP/s (bf16).
REF_STEP_FLOPS = 2e12
GIB = 2**30
DEFAULT_GPU_MEMORY_GIB = 80.0  # H100-class, when neither the scale nor a flag names the node's
# Each process that touches CUDA holds a context plus cuDNN / cuBLAS workspaces before any
# tensor: ~0.3–0.6 GiB on recent drivers (nvidia-smi per process, A100 / H100); counted once
# per trial, since 16 trials sharing a GPU pay it 16 times.
CUDA_CONTEXT_BYTES = 0.6 * GIB


def check_gpus(value: float, label: str) -> float:
    """A declared GPU count or share: ≥ 0, and a whole number above 1 (Ray refuses 1.5 GPUs)."""
    v = float(value)
    if not math.isfinite(v) or v < 0:
        raise UserError(
            f"{label} {value!r} is invalid; valid: a share of one GPU in [0, 1], or a whole number of GPUs"
        )
    if v > 1 and not v.is_integer():
        raise UserError(
            f"{label} {value!r} is invalid: a share above 1 must be a whole number of GPUs (Ray cannot split a task across GPUs); use {math.floor(v)} or {math.ceil(v)}"
        )
    return v


def task_options(gpus: float = 0.0, cpus: float = 1.0) -> dict[str, Any]:
    """`ray.remote` options of one task asking for `gpus` (a checked share or count) and `cpus`."""
    gpus = check_gpus(gpus, "GPUs per task")
    return {"num_cpus": cpus, "num_gpus": gpus} if gpus > 0 else {"num_cpus": cpus}


def verification_options(cpus: float = 1.0) -> dict[str, Any]:
    """`ray.remote` options of an export-verification task: `cpus` CPUs (a study's trials'),
    no GPU. It measures the forms a user loads on the CPU in float32 (the torch.export program
    is traced on the CPU); the accuracy it must reproduce was recorded without TF32, so a GPU
    would add nothing to the comparison."""
    return task_options(0.0, cpus)


def share_for(memory_bytes: float, step_flops: float, gpu_memory_gib: float | None = None) -> float:
    """The power-of-two share of one GPU (1/16 … 1) a training task needs: the larger of its
    memory (plus a CUDA context) over the node type's GPU memory, and its step FLOPs over
    REF_STEP_FLOPS; below 1/16 a step is launch-bound, so sixteen such tasks share a GPU."""
    mem = float(gpu_memory_gib or DEFAULT_GPU_MEMORY_GIB) * GIB
    need = max((memory_bytes + CUDA_CONTEXT_BYTES) / mem, step_flops / REF_STEP_FLOPS)
    need = min(max(need, MIN_SHARE), MAX_SHARE)
    return float(2.0 ** math.ceil(math.log2(need)))


def least_request(gpus_per_trial: float | str) -> float:
    """The least GPU share a trial asks for: the number itself, or MIN_SHARE for "auto"."""
    return MIN_SHARE if gpus_per_trial == "auto" else float(gpus_per_trial)


def member_gpus(members: int, gpus: float) -> float:
    """GPUs per teacher-member task when the ensemble may use `gpus` GPUs (declared): a whole
    GPU each when there are enough, else an equal share (1/k: k members per GPU)."""
    if gpus <= 0:
        return 0.0
    if members <= gpus:
        return 1.0
    return 1.0 / -(-members // int(max(gpus, 1)))  # ceil(members / gpus) per GPU


def gpus_in_use(tasks: int, per_task: float) -> int:
    """Whole GPUs `tasks` tasks of `per_task` each occupy (0 for CPU tasks)."""
    return 0 if per_task <= 0 else max(1, math.ceil(tasks * per_task - 1e-9))


def pending_cap(planned_trials: int, max_concurrent: int | None) -> int:
    """TUNE_MAX_PENDING_TRIALS_PG: every trial of the run may be pending (≥ 1), so an
    autoscaler sees the whole demand at once; `--max-concurrent` caps it."""
    cap = int(planned_trials)
    if max_concurrent:
        cap = min(cap, int(max_concurrent))
    return max(1, cap)


def largest_node_gpus(nodes: list[Mapping[str, Any]]) -> float:
    """The most GPUs on one alive node (`ray.nodes()` entries)."""
    return max(
        (float(n.get("Resources", {}).get("GPU", 0.0)) for n in nodes if n.get("Alive")),
        default=0.0,
    )


def is_local(address: str | None) -> bool:
    """A private local Ray on this machine: its GPUs are this machine's, now and later."""
    return address in ("local", "", None)


def check_gpu_request(gpus: float, address: str | None, label: str) -> None:
    """Refuse (one line) a GPU request no node can hold, instead of tasks that wait forever.

    Call inside a Ray session. A local Ray never gains a GPU: a request above its largest node
    is refused. A joined cluster with no GPU node yet (an autoscaling cluster, GPU workers at
    0) is not refused: one line says the tasks wait for the autoscaler.
    """
    if gpus <= 0:
        return
    import ray

    most = largest_node_gpus(ray.nodes())
    if gpus <= most:
        return
    if most == 0 and not is_local(address):
        print(
            f"raydistill: no GPU node is up yet; {label} tasks wait for the autoscaler to "
            f"add one with ≥ {gpus:g} GPUs",
            file=sys.stderr,
        )
        return
    where = "this machine has no GPU" if most == 0 else f"the largest node has {most:g} GPUs"
    raise UserError(
        f"{label} asks for {gpus:g} GPUs per task, more than any node has ({where}); use at "
        f"most {most:g}, 0 for CPU tasks, or --address of a cluster with GPU nodes"
    )
