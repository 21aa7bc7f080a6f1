"""`resnet9`: a fast residual teacher (ResNet-9 of the DAWNBench / airbench line).

    prep: conv(w0)                                   32×32
    stage 1: conv(w1), max-pool, residual(w1)        16×16
    stage 2: conv(w2), max-pool                       8×8
    stage 3: conv(w3), max-pool, residual(w3)         4×4
    global max-pool, linear (no bias), logits × scale

Every conv is 3×3 + BatchNorm + ReLU; a residual block is two of them added to their input.
At widths [64, 128, 256, 512] (6.6M params) this is the DAWNBench ResNet-9, published at ~94 %
on CIFAR-10 after ~24 epochs on one GPU (not yet measured with this package); narrower widths
trade accuracy for speed. The output scale (0.125) keeps the initial logits small, which lets
the net train with large learning rates from the first step.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from raydistill.students.layers import check_widths
from raydistill.students.registry import register_family


def _slots(depth: int) -> int:
    return 4


def conv_bn(c_in: int, c_out: int) -> nn.Sequential:
    """3×3 'same' conv (no bias: BN's shift replaces it), BatchNorm, ReLU."""
    return nn.Sequential(
        nn.Conv2d(c_in, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU()
    )


class Residual(nn.Module):
    """x + f(x) with f = two conv_bn blocks of the same width."""

    def __init__(self, width: int) -> None:
        super().__init__()
        self.body = nn.Sequential(conv_bn(width, width), conv_bn(width, width))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


class Scale(nn.Module):
    """Multiplies by a constant (no parameters)."""

    def __init__(self, scale: float) -> None:
        super().__init__()
        self.scale = float(scale)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.scale

    def extra_repr(self) -> str:
        return f"scale={self.scale}"


@register_family("resnet9", depths=(9,), width_slots=_slots, kind="teacher")
def resnet9(
    depth: int = 9,
    widths: Sequence[int] = (64, 128, 256, 512),
    scale: float = 0.125,
    in_shape: Sequence[int] = (3, 32, 32),
    num_classes: int = 10,
) -> nn.Module:
    """Fast residual teacher: prep conv, 3 pooled stages (2 residual), global max-pool, BN."""
    w0, w1, w2, w3 = check_widths("resnet9", widths, _slots(depth))
    return nn.Sequential(
        conv_bn(int(in_shape[0]), w0),
        nn.Sequential(conv_bn(w0, w1), nn.MaxPool2d(2), Residual(w1)),
        nn.Sequential(conv_bn(w1, w2), nn.MaxPool2d(2)),
        nn.Sequential(conv_bn(w2, w3), nn.MaxPool2d(2), Residual(w3)),
        nn.AdaptiveMaxPool2d(1),
        nn.Flatten(),
        nn.Linear(w3, num_classes, bias=False),
        Scale(scale),
    )
