"""Network-in-Network: mlpconv blocks, pooling between blocks, C-channel last block, GAP."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from raydistill.core.errors import UserError
from raydistill.students import build
from raydistill.students.budget import count_params, min_params, solve_budget
from raydistill.students.nin import PAPER_WIDTHS


@pytest.mark.parametrize("depth", [1, 2, 3])
def test_blocks_are_kxk_then_two_1x1_convs(depth: int) -> None:
    model = build(solve_budget("nin", depth, "100k").spec)
    convs = [m for m in model if isinstance(m, nn.Conv2d)]
    assert len(convs) == 3 * depth
    assert all(c.kernel_size == (1, 1) for i, c in enumerate(convs) if i % 3)
    assert convs[-1].out_channels == 10  # the last block ends in C channels
    assert sum(isinstance(m, nn.MaxPool2d) for m in model) == depth - 1
    assert isinstance(model[-2], nn.AdaptiveAvgPool2d)
    assert not any(isinstance(m, nn.Linear) for m in model.modules())


def test_paper_cifar10_net() -> None:
    spec = {"family": "nin", "depth": 3, "widths": list(PAPER_WIDTHS)}
    model = build(spec)
    kernels = [m.kernel_size[0] for m in model if isinstance(m, nn.Conv2d)]
    assert kernels == [5, 1, 1, 5, 1, 1, 3, 1, 1]
    # Lin et al.'s CIFAR-10 net has 966,986 weights + biases; its block-1 1×1 widths (160, 96)
    # become one width here, so the nearest spec is within 2 % of it.
    assert abs(count_params(spec) - 966_986) < 0.02 * 966_986
    assert model(torch.zeros(2, 3, 32, 32)).shape == (2, 10)


def test_dropout_is_searchable() -> None:
    base = {"family": "nin", "depth": 2, "widths": [4] * 4}
    assert not any(isinstance(m, nn.Dropout) for m in build(base).modules())
    assert sum(isinstance(m, nn.Dropout) for m in build({**base, "dropout": 0.5})) == 1


def test_infeasible_budget_is_a_one_line_error_naming_the_minimum() -> None:
    minimum = min_params("nin", 3)
    with pytest.raises(UserError, match=str(minimum)) as info:
        solve_budget("nin", 3, minimum - 1)
    assert "\n" not in str(info.value)
