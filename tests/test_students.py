"""Every registered family, at every depth: builds, runs forward and backward, all params learn."""

from __future__ import annotations

import pytest
import torch

from raydistill.core.errors import UserError
from raydistill.students import build, check_spec, families
from raydistill.students.budget import count_params, solve_budget

CASES = [(name, d) for name, f in families().items() for d in f.depths]


@pytest.mark.parametrize(("family", "depth"), CASES, ids=[f"{f}-d{d}" for f, d in CASES])
def test_forward_backward_every_param_gets_gradient(family: str, depth: int) -> None:
    fam = families()[family]
    spec = solve_budget(family, depth, 60_000 if fam.kind == "student" else 300_000).spec
    torch.manual_seed(0)
    model = build(spec)
    x = torch.randn(4, 3, 32, 32)
    out = model(x)
    assert out.shape == (4, 10)
    out.square().mean().backward()
    for name, p in model.named_parameters():
        assert p.grad is not None, name
        assert torch.isfinite(p.grad).all(), name
    assert count_params(spec) == sum(p.numel() for p in model.parameters())


def test_num_classes_and_in_shape_are_spec_keys() -> None:
    for name, fam in families(kind="student").items():
        spec = solve_budget(name, fam.depths[0], 50_000, num_classes=7, in_shape=[3, 24, 24]).spec
        assert build(spec)(torch.zeros(2, 3, 24, 24)).shape == (2, 7)


def test_mlp_one_hidden_layer_has_linear_bottleneck() -> None:
    model = build({"family": "mlp", "depth": 1, "widths": [16, 64]})
    kinds = [type(m).__name__ for m in model]
    assert kinds == ["Flatten", "Linear", "Linear", "ReLU", "Linear"]


@pytest.mark.parametrize(
    ("depth", "pools", "spatial"), [(1, 1, 10), (2, 2, 8), (3, 3, 4), (4, 3, 4)]
)
def test_cnn_layouts_match_the_paper(depth: int, pools: int, spatial: int) -> None:
    spec = {"family": "cnn", "depth": depth, "widths": [4] * (depth + (2 if depth == 1 else 1))}
    model = build(spec)
    features = model[0]
    convs = [m for m in features if isinstance(m, torch.nn.Conv2d)]
    assert len(convs) == depth and all(c.kernel_size == (5, 5) for c in convs)
    assert sum(isinstance(m, torch.nn.MaxPool2d) for m in features) == pools
    assert features(torch.zeros(1, 3, 32, 32)).shape[-1] == spatial


@pytest.mark.parametrize("depth", [1, 2, 3, 4])
def test_cnn_pools_before_relu_with_the_papers_outputs_and_gradients(depth: int) -> None:
    """The cnn max-pools before its conv ReLUs (a speed-up): outputs and gradients are bit for
    bit those of the paper's order (ReLU, then pool), and the state_dict keys are the same."""
    from torch import nn

    spec = solve_budget("cnn", depth, "30k", [0.5] * 6, batchnorm=True, dropout=0.0).spec
    torch.manual_seed(0)
    ours, paper = build(spec), build(spec)
    paper.load_state_dict(ours.state_dict())
    layers, swapped = list(paper[0]), 0
    for i in range(len(layers) - 1):
        if isinstance(layers[i], nn.MaxPool2d) and isinstance(layers[i + 1], nn.ReLU):
            layers[i], layers[i + 1] = layers[i + 1], layers[i]
            swapped += 1
    assert swapped == sum(isinstance(m, nn.MaxPool2d) for m in layers) > 0
    paper[0] = nn.Sequential(*layers)
    assert list(paper.state_dict()) == list(ours.state_dict())
    x = torch.randn(16, 3, 32, 32)
    y_ours, y_paper = ours(x), paper(x)
    (y_ours.square().sum() + y_paper.square().sum()).backward()
    assert torch.equal(y_ours, y_paper)
    for a, b in zip(ours.parameters(), paper.parameters(), strict=True):
        assert torch.equal(a.grad, b.grad)


def test_allconv_has_no_pooling_or_linear_layers() -> None:
    model = build(solve_budget("allconv", 3, 200_000).spec)
    assert not any(isinstance(m, (torch.nn.MaxPool2d, torch.nn.Linear)) for m in model.modules())


def test_dropout_is_optional_and_off_by_default() -> None:
    assert not any(isinstance(m, torch.nn.Dropout) for m in build({"family": "mlp"}).modules())
    with_dropout = build({"family": "mlp", "dropout": 0.3})
    assert any(isinstance(m, torch.nn.Dropout) for m in with_dropout.modules())


@pytest.mark.parametrize(
    "spec",
    [
        {"family": "nope"},
        {"family": "cnn", "depth": 9},
        {"family": "cnn", "width": 3},
        {"family": "cnn", "depth": 2, "widths": [3, 3]},
    ],
)
def test_bad_specs_are_one_line_user_errors(spec: dict) -> None:
    with pytest.raises(UserError) as info:
        check_spec(spec)
    assert "\n" not in str(info.value)
