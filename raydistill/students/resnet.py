"""`resnet`: CIFAR-style residual students (He et al., 2016, "Deep Residual Learning", §4.2).

    stem: 3×3 conv(w0) + BN + ReLU                               32×32
    stage 1: `depth` basic blocks at w0                          32×32
    stage 2: `depth` basic blocks at w1 (the first: stride 2)    16×16
    stage 3: `depth` basic blocks at w2 (the first: stride 2)     8×8
    global average pool, linear

A basic block is conv3×3-BN-ReLU-conv3×3-BN added to its input, then ReLU; where the shape
changes the shortcut is a 1×1 stride-2 conv + BN (the paper's option B). `depth` is the
number of blocks per stage, so the net has 6·depth + 2 layers: depth 1, 2, 3, 5, 9 are
ResNet-8, 14, 20, 32, 56. At widths [16, 32, 64] ResNet-20 has 272,474 parameters (the
paper's 0.27M; ≈ 92 % on CIFAR-10 trained from scratch) and ResNet-8 has 78,042 — MLPerf
Tiny's image-classification model (85 % target). The solver keeps the stages' 1:2:4
proportions at equal width ratios (`width_shape`).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from raydistill.students.layers import check_widths, maybe_dropout
from raydistill.students.registry import register_family

PAPER_WIDTHS = (16, 32, 64)


def _slots(depth: int) -> int:
    return 3


def _shape(depth: int) -> tuple[float, ...]:
    return (1.0, 2.0, 4.0)


def conv_bn(c_in: int, c_out: int, kernel: int = 3, stride: int = 1) -> nn.Sequential:
    """A bias-free conv ('same' padding at stride 1) followed by BatchNorm."""
    conv = nn.Conv2d(c_in, c_out, kernel, stride=stride, padding=kernel // 2, bias=False)
    return nn.Sequential(conv, nn.BatchNorm2d(c_out))


class BasicBlock(nn.Module):
    """Two 3×3 conv-BN layers with a ReLU between, plus the (projected) input, then ReLU."""

    def __init__(self, c_in: int, c_out: int, stride: int) -> None:
        super().__init__()
        self.body = nn.Sequential(
            conv_bn(c_in, c_out, 3, stride), nn.ReLU(inplace=True), conv_bn(c_out, c_out)
        )
        change = stride != 1 or c_in != c_out
        self.shortcut = conv_bn(c_in, c_out, 1, stride) if change else nn.Identity()
        self.act = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.body(x) + self.shortcut(x))


@register_family("resnet", depths=(1, 2, 3, 5, 9), width_slots=_slots, width_shape=_shape)
def resnet(
    depth: int = 3,
    widths: Sequence[int] = PAPER_WIDTHS,
    dropout: float = 0.0,
    in_shape: Sequence[int] = (3, 32, 32),
    num_classes: int = 10,
) -> nn.Module:
    """CIFAR ResNet (6·depth + 2 layers): 3 stages of `depth` basic blocks, GAP, linear."""
    widths = check_widths("resnet", widths, _slots(depth))
    layers: list[nn.Module] = [conv_bn(int(in_shape[0]), widths[0]), nn.ReLU(inplace=True)]
    c_in = widths[0]
    for stage, width in enumerate(widths):
        for block in range(depth):
            stride = 2 if stage > 0 and block == 0 else 1
            layers.append(BasicBlock(c_in, width, stride))
            c_in = width
    layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), *maybe_dropout(dropout)]
    layers.append(nn.Linear(c_in, num_classes))
    return nn.Sequential(*layers)
