"""`mobilenetv2`: inverted-residual students (Sandler et al., 2018, "MobileNetV2"), CIFAR-sized.

    stem: 3×3 conv(w0) + BN + ReLU6                                  32×32
    7 stages of inverted residual blocks (t = expansion, n = blocks, s = first stride):
        t  c(w1..w7)            n  s     (paper, ImageNet: c = 16 24 32 64 96 160 320,
        1  16                   1  1      n = 1 2 3 4 3 3 1, s = 1 2 2 2 1 2 1)
        6  24                   2  1     ← stride 1 here (and in the stem): 32×32 inputs, not
        6  32                   3  2       224×224, end at 4×4 like the paper's 7×7
        6  64                   4  2
        6  96                   3  1
        6  160                  3  2
        6  320                  1  1
    1×1 conv(w8) + BN + ReLU6, global average pool, dropout, linear

A block is 1×1 expansion to t·c_in (omitted when t = 1) + BN + ReLU6, 3×3 depthwise conv
(the block's stride) + BN + ReLU6, 1×1 linear projection to c + BN; the input is added when
stride and channels allow. `depth` (1–4) caps the blocks per stage (n_i → min(n_i, depth)):
depth 4 is the paper's 17 blocks. widths = the 9 channel counts above; the solver keeps the
paper's proportions (32, 16, 24, 32, 64, 96, 160, 320, 1280) at equal ratios, so a budget
solves the width multiplier α (2.24M parameters at α = 1, 10 classes) and then the last units.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from raydistill.students.layers import check_widths, maybe_dropout
from raydistill.students.registry import register_family

PAPER_WIDTHS = (32, 16, 24, 32, 64, 96, 160, 320, 1280)
STAGES = ((1, 1, 1), (6, 2, 1), (6, 3, 2), (6, 4, 2), (6, 3, 1), (6, 3, 2), (6, 1, 1))  # t, n, s


def _slots(depth: int) -> int:
    return len(PAPER_WIDTHS)


def _shape(depth: int) -> tuple[float, ...]:
    return tuple(w / PAPER_WIDTHS[0] for w in PAPER_WIDTHS)


def conv_bn_act(c_in: int, c_out: int, kernel: int, stride: int = 1, groups: int = 1,
                act: bool = True) -> list[nn.Module]:  # fmt: skip
    """Bias-free conv + BN (+ ReLU6): the paper's unit; `groups=c_in` is depthwise."""
    conv = nn.Conv2d(c_in, c_out, kernel, stride, kernel // 2, groups=groups, bias=False)
    return [conv, nn.BatchNorm2d(c_out), *([nn.ReLU6(inplace=True)] if act else [])]


class InvertedResidual(nn.Module):
    """1×1 expand (t·c_in) → 3×3 depthwise → 1×1 linear project, plus the input when it fits."""

    def __init__(self, c_in: int, c_out: int, stride: int, expand: int) -> None:
        super().__init__()
        hidden = c_in * expand
        layers = conv_bn_act(c_in, hidden, 1) if expand != 1 else []
        layers += conv_bn_act(hidden, hidden, 3, stride, groups=hidden)
        layers += conv_bn_act(hidden, c_out, 1, act=False)
        self.body = nn.Sequential(*layers)
        self.residual = stride == 1 and c_in == c_out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x) if self.residual else self.body(x)


@register_family("mobilenetv2", depths=(1, 2, 3, 4), width_slots=_slots, width_shape=_shape)
def mobilenetv2(
    depth: int = 4,
    widths: Sequence[int] = PAPER_WIDTHS,
    dropout: float = 0.0,
    in_shape: Sequence[int] = (3, 32, 32),
    num_classes: int = 10,
) -> nn.Module:
    """MobileNetV2 for 32×32 inputs: stem, 7 inverted-residual stages (≤ depth blocks), head."""
    widths = check_widths("mobilenetv2", widths, _slots(depth))
    layers = conv_bn_act(int(in_shape[0]), widths[0], 3)
    c_in = widths[0]
    for (expand, n, stride), c_out in zip(STAGES, widths[1:8], strict=True):
        for block in range(min(n, depth)):
            layers.append(InvertedResidual(c_in, c_out, stride if block == 0 else 1, expand))
            c_in = c_out
    layers += conv_bn_act(c_in, widths[8], 1)
    layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), *maybe_dropout(dropout)]
    layers.append(nn.Linear(widths[8], num_classes))
    return nn.Sequential(*layers)
