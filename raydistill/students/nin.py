"""`nin`: Network-in-Network students (Lin, Chen & Yan, 2014, "Network In Network").

`depth` (1–3) mlpconv blocks. A block is a k×k 'same' conv and two 1×1 convs ("cccp"
layers), each with ReLU; a 3×3 stride-2 max-pool (32×32 → 16×16) and dropout follow every
block but the last. The last block's second 1×1 conv has C (= num_classes) channels and is
followed by global average pooling: no fully-connected layer.

widths = [k×k, 1×1] channels of each block (both 1×1 convs of a non-final block share the
second; the final block's second 1×1 is the C-channel classifier): 2·depth slots, which keeps
every depth within the six width ratios a search space samples. The paper's CIFAR-10 net is
depth 3, k×k/1×1/1×1 = 192/160/96, 192/192/192, 192/192/C with kernels 5, 5, 3; the nearest
spec here is widths [192, 96, 192, 192, 192, 192] (`PAPER_WIDTHS`; 160 and 96 become one
width of 96; 948,490 params vs 966,986) with `kernel=0`, which picks the paper's kernels (5×5 for every block but a 3×3
last one; any positive `kernel` sets all blocks). The paper uses dropout 0.5 after each pool
(off by default here, like the other students; searchable).

Unlike the paper, the C-channel conv has no ReLU: students regress teacher logits, which are
negative as often as positive.
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import nn

from raydistill.students.layers import check_widths, conv_relu, maybe_dropout
from raydistill.students.registry import register_family

PAPER_WIDTHS = (192, 96, 192, 192, 192, 192)


def _slots(depth: int) -> int:
    return 2 * depth


def _kernel(kernel: int, block: int, depth: int) -> int:
    if int(kernel) > 0:
        return int(kernel)
    return 3 if block == depth - 1 else 5


@register_family("nin", depths=(1, 2, 3), width_slots=_slots)
def nin(
    depth: int = 3,
    widths: Sequence[int] = PAPER_WIDTHS,
    kernel: int = 0,
    dropout: float = 0.0,
    batchnorm: bool = False,
    in_shape: Sequence[int] = (3, 32, 32),
    num_classes: int = 10,
) -> nn.Module:
    """Network-in-Network: `depth` mlpconv blocks (k×k + two 1×1 convs), max-pool, GAP.

    `batchnorm` (not in Lin et al.) puts BatchNorm before each hidden ReLU, as `cnn`'s does."""
    widths = check_widths("nin", widths, _slots(depth))
    layers: list[nn.Module] = []
    c_in = int(in_shape[0])
    for block in range(depth):
        w_k, w_1 = widths[2 * block], widths[2 * block + 1]
        k = _kernel(kernel, block, depth)
        layers += conv_relu(c_in, w_k, k, batchnorm=batchnorm) + conv_relu(
            w_k, w_1, 1, batchnorm=batchnorm
        )
        if block == depth - 1:
            layers.append(nn.Conv2d(w_1, num_classes, 1))  # C channels: the class maps
        else:
            layers += conv_relu(w_1, w_1, 1, batchnorm=batchnorm)
            layers += [nn.MaxPool2d(3, stride=2, padding=1), *maybe_dropout(dropout)]
            c_in = w_1
    layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten()]
    return nn.Sequential(*layers)
