"""Distillation losses: pure functions of logits (B, C) and labels (B,).

- `l2_logits`: the paper's loss (Ba & Caruana, 2014; Urban et al., 2017): ½‖s − t‖² between
  student and teacher logit vectors, summed over the C classes and averaged over the batch.
  The reduction is part of the definition: the paper's learning-rate range (0.0013–0.016) is
  for this loss; a mean over batch × classes would scale every gradient by 2/C.
- `kd`: Hinton et al. (2015): soft cross-entropy at temperature T, scaled by T² so its gradient
  does not shrink with T, mixed with the hard-label cross-entropy by weight α.
- `hard`: cross-entropy on labels only, for the paper's hard-label twins (and teachers).
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor

from raydistill.core.errors import UserError
from raydistill.core.vocab import LOSSES

__all__ = ["check_loss", "compute_loss", "hard", "kd", "l2_logits"]


def l2_logits(student: Tensor, teacher: Tensor) -> Tensor:
    """½ Σ_c (student − teacher)², averaged over the batch: (B, C), (B, C) → scalar."""
    return 0.5 * (student - teacher).square().sum(dim=1).mean()


def kd(
    student: Tensor, teacher: Tensor, labels: Tensor, temperature: float = 4.0, alpha: float = 0.9
) -> Tensor:
    """α·T²·CE(softmax(t/T), softmax(s/T)) + (1 − α)·CE(labels, s)."""
    soft_targets = F.softmax(teacher / temperature, dim=1)
    soft = -(soft_targets * F.log_softmax(student / temperature, dim=1)).sum(dim=1).mean()
    return alpha * temperature**2 * soft + (1.0 - alpha) * F.cross_entropy(student, labels)


def hard(student: Tensor, labels: Tensor, label_smoothing: float = 0.0) -> Tensor:
    """Cross-entropy with the true labels (optionally label-smoothed, for teachers)."""
    return F.cross_entropy(student, labels, label_smoothing=label_smoothing)


def compute_loss(
    name: str,
    student: Tensor,
    teacher: Tensor | None,
    labels: Tensor,
    *,
    temperature: float = 4.0,
    alpha: float = 0.9,
    label_smoothing: float = 0.0,
) -> Tensor:
    """Dispatch by loss name; `teacher` may be None only for "hard"."""
    if name == "hard":
        return hard(student, labels, label_smoothing)
    if teacher is None:
        raise UserError(f"loss {name!r} needs teacher logits (a transfer set); use loss 'hard'")
    if name == "l2_logits":
        return l2_logits(student, teacher)
    if name == "kd":
        return kd(student, teacher, labels, temperature, alpha)
    raise UserError(f"unknown loss {name!r}; valid: {', '.join(LOSSES)}")


def check_loss(name: str) -> str:
    """Validate a loss name early (config load) rather than at the first batch."""
    if name not in LOSSES:
        raise UserError(f"unknown loss {name!r}; valid: {', '.join(LOSSES)}")
    return name
