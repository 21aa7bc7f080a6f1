"""`allconv`: all-convolutional students (Springenberg et al., 2015, "Striving for Simplicity").

Each of `depth` stages is `stage_convs` 3×3 'same' convs and a 3×3 stride-2 conv (strided
convolution in place of max-pooling); the head is an optional valid-padded `head_kernel`×
`head_kernel` conv, a 1×1 conv, a 1×1 conv to the classes and global average pooling. No
fully-connected layer. widths = one channel count per stage, then the head convs' (shared).

The defaults (stage_convs=1, head_kernel=0) are the compact students the search has always
used. `ALL_CNN_C` holds the published All-CNN-C settings (paper Table 1, model C; Table 2):

    input 32×32 RGB, dropout 0.2
    3×3 conv 96, 3×3 conv 96, 3×3 conv 96 stride 2, dropout 0.5       → 16×16
    3×3 conv 192, 3×3 conv 192, 3×3 conv 192 stride 2, dropout 0.5    → 8×8
    3×3 conv 192 (valid) → 6×6, 1×1 conv 192, 1×1 conv 10, global average → 10
    = 1,369,738 parameters

Unlike the paper, the class conv has no ReLU: the students regress teacher logits, which are
negative as often as positive.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from torch import nn

from raydistill.students.layers import check_widths, conv_relu, maybe_dropout
from raydistill.students.registry import register_family

ALL_CNN_C: dict[str, Any] = {
    "family": "allconv",
    "depth": 2,
    "widths": [96, 192, 192],
    "stage_convs": 2,
    "head_kernel": 3,
    "dropout": 0.5,
    "input_dropout": 0.2,
}
ALL_CNN_C_PARAMS = 1_369_738  # Springenberg et al. (2015), Table 2: "All-CNN-C … 1.4 M"


def _slots(depth: int) -> int:
    return depth + 1


@register_family("allconv", depths=(1, 2, 3, 4), width_slots=_slots)
def allconv(
    depth: int = 3,
    widths: Sequence[int] = (96, 192, 192, 192),
    stage_convs: int = 1,
    head_kernel: int = 0,
    dropout: float = 0.0,
    input_dropout: float = 0.0,
    batchnorm: bool = False,
    in_shape: Sequence[int] = (3, 32, 32),
    num_classes: int = 10,
) -> nn.Module:
    """All-convolutional net: `depth` stages of conv(s) + stride-2 conv, head convs, avg pool.

    `batchnorm` (not in Springenberg et al.) puts BatchNorm before each hidden ReLU, as `cnn`'s
    does for short CPU runs; the published All-CNN-C has none (the default)."""
    widths = check_widths("allconv", widths, _slots(depth))
    if int(stage_convs) < 1 or int(head_kernel) < 0:
        raise ValueError(
            f"allconv: stage_convs ≥ 1 and head_kernel ≥ 0, got {stage_convs}, {head_kernel}"
        )
    layers: list[nn.Module] = list(maybe_dropout(input_dropout))
    c_in = int(in_shape[0])
    for w in widths[:depth]:
        for _ in range(int(stage_convs)):
            layers += conv_relu(c_in, w, 3, batchnorm=batchnorm)
            c_in = w
        layers += conv_relu(w, w, 3, stride=2, batchnorm=batchnorm)
        layers += maybe_dropout(dropout, spatial=True)
    head = widths[depth]
    if int(head_kernel) > 0:
        # Valid padding, as in the paper: 8×8 → 6×6 before the global average.
        layers += [nn.Conv2d(c_in, head, int(head_kernel)), nn.ReLU()]
        c_in = head
    layers += conv_relu(c_in, head, 1, batchnorm=batchnorm)
    layers += [
        nn.Conv2d(head, num_classes, 1),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
    ]
    return nn.Sequential(*layers)
