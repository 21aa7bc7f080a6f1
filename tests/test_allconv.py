"""All-CNN-C: the published settings rebuild the published layer list and parameter count."""

from __future__ import annotations

import torch
from torch import nn

from raydistill.students import build
from raydistill.students.allconv import ALL_CNN_C, ALL_CNN_C_PARAMS
from raydistill.students.budget import count_params


def test_all_cnn_c_parameter_count() -> None:
    assert ALL_CNN_C_PARAMS == 1_369_738
    assert count_params(ALL_CNN_C) == ALL_CNN_C_PARAMS
    assert sum(p.numel() for p in build(ALL_CNN_C).parameters()) == ALL_CNN_C_PARAMS


def test_all_cnn_c_layer_list() -> None:
    model = build(ALL_CNN_C)
    # (kernel, out channels, stride, padding) of each conv, Springenberg et al. Table 2 "C".
    convs = [
        (m.kernel_size[0], m.out_channels, m.stride[0], m.padding[0])
        for m in model
        if isinstance(m, nn.Conv2d)
    ]
    assert convs == [
        (3, 96, 1, 1), (3, 96, 1, 1), (3, 96, 2, 1),
        (3, 192, 1, 1), (3, 192, 1, 1), (3, 192, 2, 1),
        (3, 192, 1, 0), (1, 192, 1, 0), (1, 10, 1, 0),
    ]  # fmt: skip
    assert not any(isinstance(m, (nn.MaxPool2d, nn.Linear)) for m in model.modules())
    assert isinstance(model[0], nn.Dropout) and model[0].p == 0.2  # input dropout
    assert sum(isinstance(m, nn.Dropout2d) and m.p == 0.5 for m in model) == 2
    # 32 → 16 → 8 → 6 (valid 3×3) before the global average.
    features = model[:-2]
    assert features.eval()(torch.zeros(1, 3, 32, 32)).shape == (1, 10, 6, 6)


def test_defaults_keep_the_compact_students() -> None:
    spec = {"family": "allconv", "depth": 3, "widths": [8, 8, 8, 8]}
    kernels = [m.kernel_size[0] for m in build(spec) if isinstance(m, nn.Conv2d)]
    assert kernels == [3, 3, 3, 3, 3, 3, 1, 1]
