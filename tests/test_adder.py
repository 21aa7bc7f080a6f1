"""AdderNet layers: forward and both custom gradients against the paper's formulas, computed
directly (a loop over output positions) on tiny tensors; the adaptive learning rate; the family."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from raydistill.core.errors import UserError
from raydistill.students import adder as adder_mod
from raydistill.students import build
from raydistill.students.adder import AdderConv2d, AdderLinear, adder2d
from raydistill.students.budget import min_params, solve_budget


def direct(x: torch.Tensor, w: torch.Tensor, g: torch.Tensor, stride: int, padding: int):
    """(Y, ∂/∂F, ∂/∂X) by the paper's definitions, one output position at a time."""
    xp = F.pad(x, [padding] * 4)
    k = w.shape[-1]
    ho, wo = g.shape[-2:]
    y = torch.zeros_like(g)
    gw, gxp = torch.zeros_like(w), torch.zeros_like(xp)
    for i in range(ho):
        for j in range(wo):
            rows, cols = slice(i * stride, i * stride + k), slice(j * stride, j * stride + k)
            patch = xp[:, None, :, rows, cols]  # (N, 1, C, k, k)
            diff = patch - w[None]  # (N, O, C, k, k)
            y[:, :, i, j] = -diff.abs().sum((2, 3, 4))
            gij = g[:, :, i, j, None, None, None]  # (N, O, 1, 1, 1)
            gw += (gij * diff).sum(0)  # ∂Y/∂F = X − F
            gxp[:, :, rows, cols] += (gij * (-diff).clamp(-1, 1)).sum(1)  # ∂Y/∂X = HT(F − X)
    h, wd = x.shape[-2:]
    return y, gw, gxp[:, :, padding : padding + h, padding : padding + wd]


@pytest.mark.parametrize(("stride", "padding", "k"), [(1, 1, 3), (2, 1, 3), (1, 0, 2), (1, 2, 5)])
def test_forward_and_both_gradients_match_the_formulas(stride: int, padding: int, k: int) -> None:
    torch.manual_seed(0)
    x = torch.randn(2, 3, 6, 5, dtype=torch.float64, requires_grad=True)
    w = torch.randn(4, 3, k, k, dtype=torch.float64, requires_grad=True)
    y = adder2d(x, w, stride, padding)
    g = torch.randn_like(y)
    y.backward(g)
    y_ref, gw_ref, gx_ref = direct(x.detach(), w.detach(), g, stride, padding)
    torch.testing.assert_close(y, y_ref)
    torch.testing.assert_close(w.grad, gw_ref)
    torch.testing.assert_close(x.grad, gx_ref)


def test_chunked_paths_agree(monkeypatch: pytest.MonkeyPatch) -> None:
    # Tiny chunks force several batch chunks and several clipped-gradient blocks.
    torch.manual_seed(1)
    x = torch.randn(5, 2, 7, 7, dtype=torch.float64)
    w = torch.randn(3, 2, 3, 3, dtype=torch.float64)
    g = torch.randn(5, 3, 7, 7, dtype=torch.float64)

    def grads() -> tuple[torch.Tensor, ...]:
        xr, wr = x.clone().requires_grad_(), w.clone().requires_grad_()
        y = adder2d(xr, wr, 1, 1)
        y.backward(g)
        return y.detach(), xr.grad, wr.grad

    whole = grads()
    monkeypatch.setattr(adder_mod, "ROWS", 60)
    monkeypatch.setattr(adder_mod, "BLOCK", 100)
    for a, b in zip(whole, grads(), strict=True):
        torch.testing.assert_close(a, b)


def test_adaptive_learning_rate_sets_the_gradient_norm() -> None:
    torch.manual_seed(2)
    layer = AdderConv2d(3, 4, 3, padding=1, eta=0.2)
    layer(torch.randn(2, 3, 8, 8)).square().sum().backward()
    k = layer.weight.numel()
    assert layer.weight.grad.norm().item() == pytest.approx(0.2 * k**0.5, rel=1e-5)


def test_adder_linear_is_negative_l1_distance() -> None:
    torch.manual_seed(3)
    lin = AdderLinear(6, 4, eta=None)
    x = torch.randn(5, 6)
    torch.testing.assert_close(lin(x), -torch.cdist(x, lin.weight.reshape(4, 6), p=1))


@pytest.mark.parametrize("depth", [1, 2, 3, 4])
def test_first_layer_and_classifier_stay_multiplicative(depth: int) -> None:
    model = build(solve_budget("adder", depth, "100k").spec)
    mods = list(model.modules())
    convs = [m for m in mods if isinstance(m, (torch.nn.Conv2d, AdderConv2d))]
    assert isinstance(convs[0], torch.nn.Conv2d)
    assert all(isinstance(m, AdderConv2d) for m in convs[1:])  # includes the adder FC layers
    assert isinstance(mods[-1], torch.nn.Linear)
    adders = [m for m in mods if isinstance(m, AdderConv2d)]
    bns = [m for m in mods if isinstance(m, (torch.nn.BatchNorm1d, torch.nn.BatchNorm2d))]
    assert len(adders) == len(bns) == depth - 1 + (2 if depth == 1 else 1)


def test_infeasible_budget_is_a_one_line_error_naming_the_minimum() -> None:
    minimum = min_params("adder", 3)
    with pytest.raises(UserError, match=str(minimum)) as info:
        solve_budget("adder", 3, minimum - 1)
    assert "\n" not in str(info.value)


def test_a_few_sgd_steps_fit_a_fixed_batch() -> None:
    # The custom gradients and the adaptive lr must actually train: loss falls on one batch.
    torch.manual_seed(4)
    model = build({"family": "adder", "depth": 2, "widths": [8, 8, 16], "in_shape": [3, 16, 16]})
    x, y = torch.randn(32, 3, 16, 16), torch.randint(0, 10, (32,))
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    losses = []
    for _ in range(30):
        loss = F.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0]
