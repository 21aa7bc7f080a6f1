"""Each loss against a straightforward reference computation (plain Python / NumPy loops)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from raydistill.core.errors import UserError
from raydistill.training.losses import compute_loss, hard, kd, l2_logits

rng = np.random.default_rng(0)
S = rng.normal(size=(6, 5)).astype(np.float64) * 3
T = rng.normal(size=(6, 5)).astype(np.float64) * 3
Y = rng.integers(0, 5, size=6)


def _softmax(v: np.ndarray) -> np.ndarray:
    e = np.exp(v - v.max())
    return e / e.sum()


def _ce(logits: np.ndarray, label: int) -> float:
    return -math.log(_softmax(logits)[label])


def test_l2_logits_is_half_squared_distance_summed_over_classes_mean_over_batch() -> None:
    ref = sum(0.5 * (S[i, j] - T[i, j]) ** 2 for i in range(6) for j in range(5)) / 6
    assert l2_logits(torch.tensor(S), torch.tensor(T)).item() == pytest.approx(ref, rel=1e-12)


def test_l2_logits_is_zero_when_the_student_equals_the_teacher() -> None:
    t = torch.tensor(T, requires_grad=True)
    loss = l2_logits(t, torch.tensor(T))
    loss.backward()
    assert loss.item() == 0.0
    assert torch.count_nonzero(t.grad).item() == 0


def test_hard_is_cross_entropy() -> None:
    ref = sum(_ce(S[i], Y[i]) for i in range(6)) / 6
    assert hard(torch.tensor(S), torch.tensor(Y)).item() == pytest.approx(ref, rel=1e-12)


@pytest.mark.parametrize(("temperature", "alpha"), [(1.0, 1.0), (4.0, 0.9), (2.5, 0.3), (3.0, 0.0)])
def test_kd_matches_hinton_formula(temperature: float, alpha: float) -> None:
    soft = 0.0
    for i in range(6):
        p, q = _softmax(T[i] / temperature), _softmax(S[i] / temperature)
        soft += -sum(p[j] * math.log(q[j]) for j in range(5))
    soft /= 6
    hard_ref = sum(_ce(S[i], Y[i]) for i in range(6)) / 6
    ref = alpha * temperature**2 * soft + (1 - alpha) * hard_ref
    got = kd(torch.tensor(S), torch.tensor(T), torch.tensor(Y), temperature, alpha).item()
    assert got == pytest.approx(ref, rel=1e-10)


def test_kd_gradient_scale_is_temperature_independent_at_high_t() -> None:
    # The T² factor keeps the soft gradient ~ (s - t)/C for large T (Hinton et al., 2015).
    s = torch.tensor(S[:1], requires_grad=True)
    kd(s, torch.tensor(T[:1]), torch.tensor(Y[:1]), temperature=100.0, alpha=1.0).backward()
    approx = (S[:1] - S[:1].mean()) - (T[:1] - T[:1].mean())
    np.testing.assert_allclose(s.grad.numpy(), approx / 5, atol=2e-2)  # C = 5 classes


def test_compute_loss_dispatch_and_errors() -> None:
    s, t, y = torch.tensor(S), torch.tensor(T), torch.tensor(Y)
    assert compute_loss("l2_logits", s, t, y).item() == l2_logits(s, t).item()
    assert compute_loss("hard", s, None, y).item() == hard(s, y).item()
    with pytest.raises(UserError, match="transfer set"):
        compute_loss("kd", s, None, y)
    with pytest.raises(UserError, match="valid: l2_logits, kd, hard"):
        compute_loss("mse", s, t, y)
