"""`vgg8`: the paper's teacher layout c²-mp-c²-mp-c⁴-mp-fc² (Urban et al., 2017, Section 3).

Eight 3×3 'same' conv layers in groups of 2, 2 and 4, each group followed by a 2×2 max-pool,
then two ReLU fully-connected layers with dropout and the linear output layer. The paper's best
member was 76c²-mp-126c²-mp-148c⁴-mp-1200fc² (5.3M params, 92.78 % on CIFAR-10).

widths = [group-1 channels, group-2 channels, group-3 channels, fc units]. The paper's teachers
had no batch normalisation (`batchnorm=False`); it is an option because it makes short runs
(few epochs, large learning rates) far more forgiving.
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import nn

from raydistill.students.layers import check_widths, maybe_dropout
from raydistill.students.registry import register_family

GROUPS = (2, 2, 4)  # conv layers per group; a 2×2 max-pool follows each group


def _slots(depth: int) -> int:
    return len(GROUPS) + 1


def _conv(c_in: int, c_out: int, batchnorm: bool) -> list[nn.Module]:
    # A conv followed by BN needs no bias (BN's shift replaces it; an unused bias gets no grad).
    conv = nn.Conv2d(c_in, c_out, 3, padding=1, bias=not batchnorm)
    return [conv, nn.BatchNorm2d(c_out), nn.ReLU()] if batchnorm else [conv, nn.ReLU()]


@register_family("vgg8", depths=(8,), width_slots=_slots, kind="teacher")
def vgg8(
    depth: int = 8,
    widths: Sequence[int] = (76, 126, 148, 1200),
    dropout: float = 0.5,
    batchnorm: bool = False,
    in_shape: Sequence[int] = (3, 32, 32),
    num_classes: int = 10,
) -> nn.Module:
    """Paper's teacher: c²-mp-c²-mp-c⁴-mp-fc² with 3×3 convs, dropout, optional BatchNorm."""
    widths = check_widths("vgg8", widths, _slots(depth))
    feats: list[nn.Module] = []
    c_in = int(in_shape[0])
    for n_convs, w in zip(GROUPS, widths[:3], strict=True):
        for _ in range(n_convs):
            feats += _conv(c_in, w, bool(batchnorm))
            c_in = w
        feats.append(nn.MaxPool2d(2))
    h, w_ = int(in_shape[1]) // 8, int(in_shape[2]) // 8  # three 2×2 pools: 32×32 → 4×4
    fc = widths[3]
    return nn.Sequential(
        nn.Sequential(*feats),
        nn.Flatten(),
        nn.Linear(c_in * h * w_, fc),
        nn.ReLU(),
        *maybe_dropout(dropout),
        nn.Linear(fc, fc),
        nn.ReLU(),
        *maybe_dropout(dropout),
        nn.Linear(fc, num_classes),
    )
