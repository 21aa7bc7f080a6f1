"""`cnn`: the paper's convolutional students with 1–4 conv layers (Urban et al., 2017, Table 2).

Layouts (5×5 'same' convs with ReLU, 2×2 max-pooling, then one ReLU fully-connected layer
and the linear output layer):

    depth 1: c-mp-lfc-fc          (3×3 max-pool, stride 3, then a linear bottleneck)
    depth 2: c-mp-c-mp-fc
    depth 3: c-mp-c-mp-c-mp-fc
    depth 4: c-mp-c-c-mp-c-mp-fc

widths = conv channels in order, then [bottleneck,] fc units.
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import nn

from raydistill.students.layers import (
    check_widths,
    conv_relu,
    fc_relu,
    flat_features,
    maybe_dropout,
)
from raydistill.students.registry import register_family

# Per depth: the conv layers, "mp" marking a max-pool after the preceding conv.
LAYOUTS: dict[int, tuple[str, ...]] = {
    1: ("c", "mp3"),
    2: ("c", "mp", "c", "mp"),
    3: ("c", "mp", "c", "mp", "c", "mp"),
    4: ("c", "mp", "c", "c", "mp", "c", "mp"),
}
KERNEL = 5


def conv_slots(depth: int) -> int:
    return depth + (2 if depth == 1 else 1)


@register_family("cnn", depths=(1, 2, 3, 4), width_slots=conv_slots)
def cnn(
    depth: int = 2,
    widths: Sequence[int] = (64, 128, 512),
    dropout: float = 0.0,
    batchnorm: bool = False,
    in_shape: Sequence[int] = (3, 32, 32),
    num_classes: int = 10,
) -> nn.Module:
    """Convolutional student: `depth` 5×5 conv layers in the paper's layout, one ReLU FC layer.

    `batchnorm` (not in the paper) puts BatchNorm after each conv and in the ReLU FC layer: a
    short CPU-scale run then trains its deeper students as fast as its shallow ones, and the
    narrow FC layer of a 10k-parameter student keeps its units (see raydistill/study/scales/tiny.yaml)."""
    widths = check_widths("cnn", widths, conv_slots(depth))
    convs, head = widths[:depth], widths[depth:]
    feats: list[nn.Module] = []
    c_in, i = int(in_shape[0]), 0
    for op in LAYOUTS[depth]:
        if op == "c":
            feats += conv_relu(c_in, convs[i], KERNEL, batchnorm=batchnorm)
            c_in, i = convs[i], i + 1
        else:  # max-pool before the conv's ReLU: the same outputs and gradients (ReLU is
            # monotonic, so relu(max(x)) == max(relu(x))) with the ReLU on k² × fewer values:
            # the 2-conv block's forward + backward 16 % faster (scripts/bench_train.py)
            k = 3 if op == "mp3" else 2
            feats[-1:-1] = [nn.MaxPool2d(k, stride=k)]
            feats += maybe_dropout(dropout, spatial=True)
    features = nn.Sequential(*feats)
    n_in = flat_features(features, in_shape)
    layers: list[nn.Module] = [features, nn.Flatten()]
    if depth == 1:
        layers.append(nn.Linear(n_in, head[0]))  # linear bottleneck (no ReLU): the "lfc"
        n_in, head = head[0], head[1:]
    layers += [*fc_relu(n_in, head[0], batchnorm), *maybe_dropout(dropout)]
    layers.append(nn.Linear(head[0], num_classes))
    return nn.Sequential(*layers)
