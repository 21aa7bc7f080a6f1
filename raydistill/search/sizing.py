"""A trial's GPU share sized to its student (`--gpus-per-trial auto`).

A student is measured on the meta device (no memory, no compute): its parameters, the
activations its forward pass produces per image (the leaf modules' outputs) and its forward
FLOPs per image (`torch.utils.flop_counter`). One training step at batch B then needs about

    memory  = 4 copies of the parameters (weights, gradients, momentum, best weights) × 4 B
              + activations × B × 4 B × 2 (kept for backward, and their gradients)
    compute = 3 × forward FLOPs × B (forward + backward)

and the share of one GPU is clamp(max(memory / GPU memory, compute / REF_STEP_FLOPS),
1/16, 1), rounded up to a power-of-two fraction (1/16, 1/8, 1/4, 1/2, 1), so Ray packs whole
numbers of trials per GPU. REF_STEP_FLOPS is a step that keeps one H100-class GPU busy on its
own: 2e12 FLOPs, ~10 ms at 200 TFLOP/s (bf16). Below a sixteenth of that a step is bound by
kernel launches and the Python loop, not by the GPU, so sixteen such trials share it.

At batch 128 on CIFAR shapes: a 1M CNN (depth 2, 1.6e8 FLOPs/image) gets 1/16, a 31.6M CNN
(depth 2, 4.7e9 FLOPs/image) a whole GPU, MLPs up to 31.6M 1/16.
"""

from __future__ import annotations

import functools
import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

REF_STEP_FLOPS = 2e12
GPU_MEMORY_BYTES = 80 * 2**30  # H100-class, used when no GPU is visible to measure
MIN_SHARE, MAX_SHARE = 1 / 16, 1.0
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


def gpu_memory_bytes() -> float:
    """Memory of the visible GPU 0, or GPU_MEMORY_BYTES when none is visible (the driver)."""
    if torch.cuda.is_available():
        return float(torch.cuda.get_device_properties(0).total_memory)
    return float(GPU_MEMORY_BYTES)


def gpu_share(
    spec: Mapping[str, Any], batch: int = DEFAULT_BATCH, gpu_memory: float | None = None
) -> float:
    """The power-of-two fraction of one GPU a trial training `spec` at `batch` gets."""
    size = measure(spec)
    mem = gpu_memory if gpu_memory is not None else gpu_memory_bytes()
    need = max(size.memory_bytes(batch) / mem, size.step_flops(batch) / REF_STEP_FLOPS)
    need = min(max(need, MIN_SHARE), MAX_SHARE)
    return float(2.0 ** math.ceil(math.log2(need)))


def trial_share(
    config: Mapping[str, Any], data_keys: Mapping[str, Any], gpu_memory: float | None = None
) -> float:
    """`gpu_share` of a search trial's config (its cell's student at its batch size);
    `data_keys`: the dataset's spec keys (`students.data_spec_keys(splits)`)."""
    from raydistill.students.budget import solve_budget

    s = config["settings"]
    sol = solve_budget(config["family"], int(config["depth"]), int(config["budget"]),
                       s["ratios"], **s["spec"], **data_keys)  # fmt: skip
    batch = int(s.get("train", {}).get("batch_size", DEFAULT_BATCH))
    return gpu_share({**sol.spec, **data_keys}, batch, gpu_memory)


def gpu_request(gpus_per_trial: float | str) -> float:
    """The least GPU share a trial asks for: the number itself, or MIN_SHARE for "auto" (what
    a node must hold at least, checked before a search starts)."""
    return MIN_SHARE if gpus_per_trial == "auto" else float(gpus_per_trial)


def trial_resources(gpus_per_trial: float | str, cpus: float, data_keys: Mapping[str, Any]) -> Any:
    """The `resources` of `tune.with_resources`: a fixed dict, or for "auto" a function of the
    trial's config giving a placement group with that trial's `trial_share` of a GPU."""
    if gpus_per_trial != "auto":
        return {"cpu": cpus, "gpu": float(gpus_per_trial)}
    from ray import tune

    keys = dict(data_keys)

    def resources(config: dict[str, Any]) -> Any:
        return tune.PlacementGroupFactory([{"CPU": cpus, "GPU": trial_share(config, keys)}])

    return resources
