"""What a student costs per image beyond its parameters: MACs (counted) and latency (measured).

`count_macs(spec)`: multiply-accumulates of one image's forward pass, counted exactly on the
meta device (no memory, no compute) by forward hooks: every layer with a weight of ≥ 2 dims
(convolutions — depthwise and grouped included —, linear layers, AdderNet's adder layers, whose
"MAC" is a subtract-accumulate) costs its output elements × the weight elements per output
channel (C_in/groups·k·k for a conv, C_in for a linear layer). Biases, BatchNorm, activations,
pooling and residual adds are not counted (the usual convention, as in MLPerf Tiny's figures);
for conv/linear-only nets this is exactly torch.utils.flop_counter's FLOPs / 2 (tested).

`measure_latency(spec, device, batch)`: µs per image of the eval-mode forward pass of the
spec's network (freshly initialised: weights do not change its time) on `device` at `batch`,
under no_grad: the median of REPEATS timed runs after WARMUP untimed ones. "cpu" is this
machine's CPU with CPU_THREADS torch threads whatever the process uses, so the budget solved in
a trial (one CPU, one thread), by `raydistill budget`, in a report and in an export's spec.json
is one figure (measured with the process's threads, an export on a 2-core driver recorded
335 µs for a student solved at ≤ 300 µs in its trial); "cuda" the visible GPU (synchronised
around each run), refused in one line when there is none.
"""

from __future__ import annotations

import contextlib
import functools
import json
import statistics
import time
from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from raydistill.core.errors import UserError
from raydistill.students.budget import spec_key
from raydistill.students.registry import build

WARMUP, REPEATS = 5, 25
CPU_THREADS = 1  # torch threads of a CPU latency: one core, as a search trial runs
DEFAULT_SHAPE = (3, 32, 32)


def count_macs(spec: Mapping[str, Any]) -> int:
    """Exact multiply-accumulates of one image's forward pass (see the module docstring)."""
    return _macs(spec_key(spec))


def layer_positions(module: nn.Module, out: torch.Tensor) -> int | None:
    """Output positions of one weighted layer for one image (H·W of a conv, 1 of a linear
    layer), or None for a layer without a ≥ 2-d weight: its MACs are positions × weight size."""
    weight = getattr(module, "weight", None)
    if not isinstance(weight, torch.Tensor) or weight.dim() < 2:
        return None
    return int(out[0].numel()) // int(weight.shape[0])


@functools.lru_cache(maxsize=65536)
def _macs(key: str) -> int:
    # A layer's output positions do not depend on the widths, so one meta forward per
    # architecture (the spec without its widths, and the weighted layers' names) serves every
    # width the solver tries; each then costs a meta build (no forward).
    spec = json.loads(key)
    with torch.device("meta"):
        model = build(spec)
    weighted = {n: m.weight for n, m in _leaves(model) if _weight_dims(m) >= 2}
    arch = json.dumps({**spec, "widths": None, "layers": list(weighted)}, sort_keys=True)
    positions = _positions(arch, key)
    return sum(positions[n] * w.numel() for n, w in weighted.items())


@functools.lru_cache(maxsize=1024)
def _positions(arch: str, key: str) -> dict[str, int]:
    spec = json.loads(key)  # the first spec of this architecture: any widths will do
    with torch.device("meta"):
        model = build(spec)
    found: dict[str, int] = {}
    handles = []
    for name, m in _leaves(model):

        def hook(m: nn.Module, _i: Any, out: Any, name: str = name) -> None:
            pos = layer_positions(m, out) if isinstance(out, torch.Tensor) else None
            if pos is not None:
                found[name] = pos

        handles.append(m.register_forward_hook(hook))
    x = torch.zeros(1, *spec.get("in_shape", DEFAULT_SHAPE), device="meta")
    with torch.no_grad():
        model.eval()(x)
    for h in handles:
        h.remove()
    return found


def _leaves(model: nn.Module) -> list[tuple[str, nn.Module]]:
    return [(n, m) for n, m in model.named_modules() if not any(True for _ in m.children())]


def _weight_dims(m: nn.Module) -> int:
    weight = getattr(m, "weight", None)
    return weight.dim() if isinstance(weight, torch.Tensor) else 0


def measure_latency(spec: Mapping[str, Any], device: str = "cpu", batch: int = 1) -> float:
    """µs per image of the spec's eval forward pass on `device` at `batch` (median of runs)."""
    return _latency(spec_key(spec), device, int(batch))


@functools.lru_cache(maxsize=4096)
def _latency(key: str, device: str, batch: int) -> float:
    if device == "cuda" and not torch.cuda.is_available():
        raise UserError("a latency budget on cuda needs a GPU; this machine has none (use cpu)")
    spec = json.loads(key)
    dev = torch.device(device)
    torch.manual_seed(0)
    model = build(spec).to(dev).eval()
    x = torch.randn(batch, *spec.get("in_shape", DEFAULT_SHAPE), device=dev)
    with _threads(CPU_THREADS) if dev.type == "cpu" else contextlib.nullcontext():
        return time_forward(model, x) / batch


@contextlib.contextmanager
def _threads(n: int):
    """torch's intra-op threads set to n for the block, the process's own restored after."""
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def time_forward(model: nn.Module, x: torch.Tensor) -> float:
    """Median µs of one `model(x)` (no_grad), after WARMUP untimed runs."""
    sync = torch.cuda.synchronize if x.device.type == "cuda" else (lambda: None)
    times = []
    with torch.no_grad():
        for i in range(WARMUP + REPEATS):
            sync()
            start = time.perf_counter()
            model(x)
            sync()
            if i >= WARMUP:
                times.append(time.perf_counter() - start)
    return statistics.median(times) * 1e6
