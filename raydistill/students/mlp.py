"""`mlp`: fully-connected students with 1–5 ReLU hidden layers (Urban et al., 2017).

With one hidden layer a linear bottleneck comes first (3072 → b → h → 10), as in the
paper, so the single wide ReLU layer is not paid for with a 3072×h weight matrix.
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import nn

from raydistill.students.layers import check_widths, fc_relu, maybe_dropout
from raydistill.students.registry import register_family


def _slots(depth: int) -> int:
    return depth + 1 if depth == 1 else depth


@register_family("mlp", depths=(1, 2, 3, 4, 5), width_slots=_slots)
def mlp(
    depth: int = 3,
    widths: Sequence[int] = (512, 512, 512),
    dropout: float = 0.0,
    batchnorm: bool = False,
    in_shape: Sequence[int] = (3, 32, 32),
    num_classes: int = 10,
) -> nn.Module:
    """MLP with `depth` ReLU hidden layers (widths[0] is a linear bottleneck when depth == 1).

    `batchnorm` (not in the paper) puts BatchNorm1d before each ReLU, as `cnn`'s does."""
    widths = check_widths("mlp", widths, _slots(depth))
    n_in = 1
    for d in in_shape:
        n_in *= int(d)
    layers: list[nn.Module] = [nn.Flatten()]
    if depth == 1:
        # Linear bottleneck: no nonlinearity, it factorises the first weight matrix.
        layers.append(nn.Linear(n_in, widths[0]))
        n_in, widths = widths[0], widths[1:]
    for w in widths:
        layers += [*fc_relu(n_in, w, batchnorm), *maybe_dropout(dropout)]
        n_in = w
    layers.append(nn.Linear(n_in, num_classes))
    return nn.Sequential(*layers)
