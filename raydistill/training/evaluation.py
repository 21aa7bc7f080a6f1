"""THE evaluation: a network's (or an ensemble's members') logits over a split, batch by batch
in eval mode, and accuracy / mean cross-entropy from them.

Training (`train.evaluate`, each epoch's val/acc and the final test/acc), the teacher
ensemble (`Ensemble.accuracy`, `ensemble.evaluate_members`) and the GPU shards of an ensemble
evaluation (`raydistill.distill.shards`) all go through `logits_over`, so an image is preprocessed the
same way everywhere: raw images (uint8 or float, N×C×H×W) → `to_float` → `Preprocess` → ×
`input_scale` → channels_last (conv nets) → forward.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import torch
from torch import Tensor, nn

from raydistill.data.batches import DeviceSplit, Preprocess, to_float
from raydistill.training.accel import autocast


def eval_batches(
    x: Tensor,
    *,
    preprocess: Preprocess | None,
    batch_size: int = 1000,
    input_scale: float = 1.0,
    channels_last: bool = False,
    device: torch.device | None = None,
) -> Iterator[Tensor]:
    """Network inputs for consecutive batches of raw images x (N, C, H, W), in order."""
    for s in range(0, len(x), batch_size):
        xb = x[s : s + batch_size]
        xb = to_float(xb.to(device) if device is not None else xb)
        if preprocess is not None:
            xb = preprocess(xb)
        if input_scale != 1.0:
            xb = xb * input_scale
        if channels_last and xb.dim() == 4:
            xb = xb.contiguous(memory_format=torch.channels_last)
        yield xb


@torch.no_grad()
def logits_over(
    forward: Callable[[Tensor], Tensor],
    x: Tensor,
    *,
    preprocess: Preprocess | None,
    batch_size: int = 1000,
    input_scale: float = 1.0,
    channels_last: bool = False,
    device: torch.device | None = None,
    amp: str | bool = False,
) -> Tensor:
    """float32 outputs of `forward` for every image of x, concatenated along dim -2 (the batch
    dim: (N, C) for one network, (M, N, C) for M stacked members), on the inputs' device.
    `amp`: the mixed-precision mode (`accel.autocast`; True: bf16 on CUDA)."""
    outs = []
    for xb in eval_batches(
        x,
        preprocess=preprocess,
        batch_size=batch_size,
        input_scale=input_scale,
        channels_last=channels_last,
        device=device,
    ):
        with autocast(xb.device, amp):
            outs.append(forward(xb).float())
    return torch.cat(outs, dim=-2) if outs else torch.zeros(0, 0)


def accuracy_of(logits: Tensor, y: Tensor) -> float:
    """Top-1 accuracy of (N, C) logits against labels y (N,); 0 for an empty split."""
    if len(y) == 0:
        return 0.0
    return float((logits.argmax(-1) == y.to(logits.device)).sum()) / len(y)


@torch.no_grad()
def evaluate(
    model: nn.Module,
    split: DeviceSplit,
    *,
    preprocess: Preprocess,
    input_scale: float = 1.0,
    batch_size: int = 1000,
    channels_last: bool = False,
    amp: str | bool = False,
) -> tuple[float, float]:
    """(accuracy, mean cross-entropy) of `model` on a resident split, in eval mode (the model's
    train/eval mode is restored afterwards)."""
    if len(split.y) == 0:
        return 0.0, 0.0
    was_training = model.training
    model.eval()
    try:
        logits = logits_over(
            model,
            split.x,
            preprocess=preprocess,
            batch_size=batch_size,
            input_scale=input_scale,
            channels_last=channels_last,
            amp=amp,
        )
    finally:
        model.train(was_training)
    loss = nn.functional.cross_entropy(logits, split.y, reduction="sum")
    return accuracy_of(logits, split.y), float(loss) / len(split.y)
