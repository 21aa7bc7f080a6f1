"""How the training loop runs fast on its device: bf16 autocast (`autocast`, on CUDA by default,
on any device with amp="bf16"; float32 without TF32 for measurements: `exact_fp32`), the
channels_last layout for conv nets (`use_channels_last`), and an optional `torch.compile` that
falls back to eager on a compile error (`CompiledForward`). By default nothing here changes the
numerics on the CPU: "auto" autocasts on CUDA only and channels_last changes only the layout.

channels_last on the shared 2-core CPU (torch 2.14.1, `torch.set_num_threads(1)`, batch 128, our
loop with flip + translate, BatchNorm CNN students of ~30k parameters, `scripts/bench_gpu.py
--sections cl --device cpu --threads 1`, two runs under other users' load, images/s NCHW →
channels_last): depth 1 [17, 16, 52] 1,002 → 1,175 and 732 → 794; depth 2 [19, 18, 17]
494 → 544 and 166 → 337; depth 3 [21, 21, 20, 20] 320 → 610 and 224 → 328. Faster in every
case, so it is the default on the CPU too; the first-epoch loss agreed to ≤ 3e-5 relative.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Iterator
from typing import Any

import torch
from torch import Tensor, nn

from raydistill.core.errors import first_line

log = logging.getLogger(__name__)


def amp_dtype(device: torch.device | str, amp: str | bool) -> torch.dtype | None:
    """The autocast dtype of mixed-precision mode `amp` (`vocab.AmpMode`; True/False mean
    "auto"/"off") on `device`: bf16 for "bf16", and for "auto" on CUDA; None: float32."""
    mode = amp if isinstance(amp, str) else ("auto" if amp else "off")
    if mode == "bf16" or (mode == "auto" and torch.device(device).type == "cuda"):
        return torch.bfloat16
    return None


def autocast(device: torch.device | str, amp: str | bool) -> contextlib.AbstractContextManager:
    """bf16 autocast on `device` when `amp_dtype` says so (no GradScaler needed: bf16 has
    float32's range), else a no-op. One code path: CI runs it on the CPU with amp="bf16"."""
    dtype = amp_dtype(device, amp)
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(torch.device(device).type, dtype=dtype)


@contextlib.contextmanager
def exact_fp32() -> Iterator[None]:
    """float32 without TF32 for the block (cuDNN convolutions and CUDA matmuls use TF32 by
    default: a 10-bit mantissa). The test accuracy an export re-verifies on the CPU in float32
    is measured inside this, so both sides compute the same thing up to summation order."""
    cudnn, matmul = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = cudnn, matmul


def use_channels_last(model: nn.Module, wanted: bool) -> bool:
    """Whether `model` runs channels_last: asked for, the model has a conv layer, and (on the
    CPU) none of the convolutions that torch's CPU kernels break in that layout
    (`cpu_channels_last_breaks`)."""
    from raydistill.students import has_conv

    if not (bool(wanted) and has_conv(model)):
        return False
    on_cpu = all(p.device.type == "cpu" for p in model.parameters())
    return not (on_cpu and cpu_channels_last_breaks(model))


def cpu_channels_last_breaks(model: nn.Module) -> list[str]:
    """The convolutions of `model` whose channels_last backward corrupts the heap on the CPU.

    Seen with torch 2.14.1 (CPU, one thread, batch 128, 32×32): the backward of a 1×1,
    stride-2 `Conv2d` with 2–7 input channels in channels_last aborts the process ("double
    free or corruption") or hangs; 1 or ≥ 8 channels, 3×3 kernels, stride 1 or 3 run (any stride
    above 1 is guarded). A resnet student at ~12k parameters has such a shortcut (6 → 12
    channels). Those models train NCHW
    (same numbers, another layout; `tests/test_train.py` trains one).
    """
    return [
        name
        for name, m in model.named_modules()
        if isinstance(m, nn.Conv2d) and m.kernel_size == (1, 1)
        and max(m.stride) > 1 and 1 < m.in_channels < 8
    ]  # fmt: skip


class CompiledForward:
    """`model(x)`, through `torch.compile(model)` when `enabled`. Compilation happens on the
    first call; if it (or a later recompilation) raises, one warning is logged and this and
    every later call run eager. `model` keeps its own state_dict keys (no `_orig_mod.`)."""

    def __init__(
        self,
        model: nn.Module,
        enabled: bool,
        *,
        backend: str | Callable[..., Any] = "inductor",
        warn: Callable[[str], None] | None = None,
    ) -> None:
        self.model = model
        self.compiled = bool(enabled)
        self._warn = warn or log.warning
        self._fn: Callable[[Tensor], Tensor] = model
        if self.compiled:
            try:
                self._fn = torch.compile(model, backend=backend)
            except Exception as exc:  # an unknown backend is refused here, not on first call
                self._fall_back(exc)

    def __call__(self, x: Tensor) -> Tensor:
        if not self.compiled:
            return self.model(x)
        try:
            return self._fn(x)
        except Exception as exc:  # compile errors surface on the call that compiles
            self._fall_back(exc)
            return self.model(x)  # a genuine model error raises again here, eagerly

    def _fall_back(self, exc: BaseException) -> None:
        first = first_line(exc, 200)
        self._warn(f"torch.compile failed ({type(exc).__name__}: {first}); training eagerly")
        self.compiled = False
        self._fn = self.model
