"""A trial's GPU share sized to its student (`--gpus-per-trial auto`); the rule itself is
`raydistill.core.resources.share_for` (the project's one resource policy), this module measures.

A student is measured on the meta device (no memory, no compute): its parameters, the
activations its forward pass produces per image (the leaf modules' outputs) and its forward
FLOPs per image (`torch.utils.flop_counter`). One training step at batch B then needs about

    memory  = 4 copies of the parameters (weights, gradients, momentum, best weights) × 4 B
              + activations × B × 4 B × 2 (kept for backward, and their gradients)
              + the splits the trial keeps on the GPU (raw images, bytes)
              + a CUDA context (`resources.CUDA_CONTEXT_BYTES`)
    compute = 3 × forward FLOPs × B (forward + backward)

measured against the GPU memory of the node type the trials run on (declared: the scale's
`search.gpu_memory_gib` or `--gpu-memory`; default 80 GiB), never the driver's GPU.

At batch 128 on CIFAR shapes: a 1M CNN (depth 2, 1.6e8 FLOPs/image) gets 1/16, a 31.6M CNN
(depth 2, 4.7e9 FLOPs/image) a whole GPU, MLPs up to 31.6M 1/16.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from raydistill.core.resources import check_gpus, share_for

DEFAULT_BATCH = 128  # TrainConfig.batch_size's default


@dataclass(frozen=True)
class StudentSize:
    """What one image costs a student: parameters, activations (floats), forward FLOPs."""

    params: int
    activations: int
    flops: float

    def memory_bytes(self, batch: int) -> float:
        return 16.0 * self.params + 8.0 * self.activations * batch

    def step_flops(self, batch: int) -> float:
        return 3.0 * self.flops * batch


def measure(spec: Mapping[str, Any]) -> StudentSize:
    """Parameters, per-image activations and forward FLOPs of a complete spec (meta device)."""
    return _measure(json.dumps(dict(spec), sort_keys=True))


@functools.lru_cache(maxsize=256)
def _measure(spec_json: str) -> StudentSize:
    from torch.utils.flop_counter import FlopCounterMode

    from raydistill.students import build

    spec = json.loads(spec_json)
    with torch.device("meta"):
        model = build(spec)
    acts = [0]

    def count(_m: nn.Module, _i: Any, out: Any) -> None:
        if isinstance(out, torch.Tensor):
            acts[0] += out[0].numel()  # one image's share of the batch

    leaves = [m for m in model.modules() if not any(True for _ in m.children())]
    hooks = [m.register_forward_hook(count) for m in leaves]
    x = torch.zeros(1, *spec.get("in_shape", (3, 32, 32)), device="meta")
    with FlopCounterMode(display=False) as flops, torch.no_grad():
        model(x)
    for h in hooks:
        h.remove()
    params = sum(p.numel() for p in model.parameters())
    return StudentSize(params=params, activations=acts[0], flops=float(flops.get_total_flops()))


def gpu_share(
    spec: Mapping[str, Any],
    batch: int = DEFAULT_BATCH,
    gpu_memory_gib: float | None = None,
    resident_bytes: float = 0.0,
) -> float:
    """The power-of-two fraction of one GPU a task training `spec` at `batch` gets, on a node
    type with `gpu_memory_gib` per GPU, keeping `resident_bytes` of data on the GPU."""
    size = measure(spec)
    memory = size.memory_bytes(batch) + float(resident_bytes)
    return share_for(memory, size.step_flops(batch), gpu_memory_gib)


def trial_share(
    config: Mapping[str, Any],
    data_keys: Mapping[str, Any],
    gpu_memory_gib: float | None = None,
    resident_bytes: float = 0.0,
) -> float:
    """`gpu_share` of a search trial's config (its cell's student at its batch size);
    `data_keys`: the dataset's spec keys (`students.data_spec_keys(splits)`)."""
    from raydistill.students.budget import Budget, solve_budget

    s = config["settings"]
    budget = Budget(str(config.get("budget_kind", "params")), int(config["budget"]))
    sol = solve_budget(config["family"], int(config["depth"]), budget,
                       s["ratios"], **s["spec"], **data_keys)  # fmt: skip
    batch = int(s.get("train", {}).get("batch_size", DEFAULT_BATCH))
    return gpu_share({**sol.spec, **data_keys}, batch, gpu_memory_gib, resident_bytes)


def resident_bytes(splits: Any) -> float:
    """Bytes of the splits a training task keeps on its device (train, val, then test)."""
    return float(sum(getattr(splits, k).nbytes for k in ("train_x", "val_x", "test_x")))


def task_share(
    gpus: float | str,
    spec: Mapping[str, Any],
    batch: int,
    gpu_memory_gib: float | None = None,
    resident: float = 0.0,
) -> float:
    """A training task's GPUs: the declared share, or for "auto" the student's `gpu_share`
    (repeats and pruning fine-tunes use this: the share their search trial got)."""
    if gpus == "auto":
        return gpu_share(spec, batch, gpu_memory_gib, resident)
    return check_gpus(gpus, "--gpus-per-trial")


def trial_resources(
    gpus_per_trial: float | str,
    cpus: float,
    data_keys: Mapping[str, Any],
    gpu_memory_gib: float | None = None,
    resident: float = 0.0,
) -> Any:
    """The `resources` of `tune.with_resources`: a fixed dict, or for "auto" a function of the
    trial's config giving a placement group with that trial's `trial_share` of a GPU."""
    if gpus_per_trial != "auto":
        return {"cpu": cpus, "gpu": check_gpus(gpus_per_trial, "--gpus-per-trial")}
    from ray import tune

    keys = dict(data_keys)

    def resources(config: dict[str, Any]) -> Any:
        share = trial_share(config, keys, gpu_memory_gib, resident)
        return tune.PlacementGroupFactory([{"CPU": cpus, "GPU": share}])

    return resources
