"""`allconv`: all-convolutional students (Springenberg et al., 2015, "Striving for Simplicity").

Each of `depth` stages is a 3×3 conv and a 3×3 stride-2 conv (strided convolution in place
of max-pooling); then a 1×1 conv, a 1×1 conv to the classes and global average pooling.
No fully-connected layer. widths = one channel count per stage, then the 1×1 conv's.
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import nn

from raydistill.students.layers import check_widths, conv_relu, maybe_dropout
from raydistill.students.registry import register_family


def _slots(depth: int) -> int:
    return depth + 1


@register_family("allconv", depths=(1, 2, 3, 4), width_slots=_slots)
def allconv(
    depth: int = 3,
    widths: Sequence[int] = (96, 192, 192, 192),
    dropout: float = 0.0,
    in_shape: Sequence[int] = (3, 32, 32),
    num_classes: int = 10,
) -> nn.Module:
    """All-convolutional net: `depth` stages of conv + stride-2 conv, 1×1 convs, global avg pool."""
    widths = check_widths("allconv", widths, _slots(depth))
    layers: list[nn.Module] = []
    c_in = int(in_shape[0])
    for w in widths[:depth]:
        layers += conv_relu(c_in, w, 3) + conv_relu(w, w, 3, stride=2)
        layers += maybe_dropout(dropout, spatial=True)
        c_in = w
    layers += conv_relu(c_in, widths[depth], 1)
    layers += [
        nn.Conv2d(widths[depth], num_classes, 1),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
    ]
    return nn.Sequential(*layers)
