"""A trained student with its input pipeline: raw images in, logits out.

Training feeds a student preprocessed floats: uint8 images / 255, standardised (`Preprocess`:
per image, with dataset statistics, or not at all), times `input_scale`. An exported student
must do the same by itself, or `load_student(p)(images)` answers wrongly. `RawImageStudent`
wraps the bare network (`.net`, whose weights are the export's safetensors) with exactly the
training loop's own functions (`to_float`, `Preprocess`), so the exported module, its
`torch.export` program and its ONNX graph all take raw images: uint8 NCHW, or float in [0, 1]
(the dataset's own float values for float datasets such as synthetic-sep).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from raydistill.data.batches import Preprocess, to_float


class RawImageStudent(nn.Module):
    """`net` behind the preprocessing it was trained with; forward(images) → logits."""

    def __init__(
        self,
        net: nn.Module,
        preprocess: Mapping[str, Any] | None = None,
        input_scale: float = 1.0,
        channels_last: bool = False,
    ) -> None:
        super().__init__()
        self.net = net
        self.preprocess = Preprocess.from_dict(preprocess or {"mode": "none"})
        self.input_scale = float(input_scale)
        # the memory layout the net was trained and verified with (conv nets on the CPU)
        self.channels_last = bool(channels_last)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = to_float(images)
        x = per_image(x) if self.preprocess.mode == "per_image" else self.preprocess(x)
        if self.input_scale != 1.0:
            x = x * self.input_scale
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        return self.net(x)

    def inputs(self) -> dict[str, Any]:
        """What spec.json records of the input pipeline."""
        return {
            "preprocess": self.preprocess.to_dict(),
            "input_scale": self.input_scale,
            "channels_last": self.channels_last,
        }


def per_image(x: torch.Tensor) -> torch.Tensor:
    """`Preprocess("per_image")` with the same operations in the same order, written without
    `len(x)` (torch.export would fix the batch size to the example's) and without in-place ops.
    The export's self-check compares its test accuracy with training's, so a drift would show."""
    flat = x.flatten(1)
    centred = flat - flat.mean(1, keepdim=True)
    std = centred.square().mean(1, keepdim=True).sqrt()
    return (centred / std.clamp(min=1.0 / math.sqrt(flat.shape[1]))).view_as(x)


def wrap(net: nn.Module, inputs: Mapping[str, Any]) -> RawImageStudent:
    """`net` with the input pipeline `inputs` (spec.json's "inputs") in front of it."""
    conv = any(isinstance(m, nn.Conv2d) for m in net.modules())
    channels_last = bool(inputs.get("channels_last", False)) and conv
    if channels_last:
        net = net.to(memory_format=torch.channels_last)
    model = RawImageStudent(
        net, inputs.get("preprocess"), float(inputs.get("input_scale", 1.0)), channels_last
    )
    return model.eval()
