"""`airbench`: a fast, accurate CIFAR teacher (after Keller Jordan's airbench, 2024).

    whiten: 2×2 conv (w0 channels, no padding), fixed to the training patches' whitening
    3 groups: conv(w_i) 3×3, max-pool 2, BN, GELU, conv(w_i) 3×3, BN, GELU
    global max-pool, linear (no bias), logits × scale

The whitening layer is set from data (`data_init`, called by the training loop before the first
step): its filters are the eigenvectors of the 2×2 patch covariance of the (preprocessed)
training images, scaled by 1/√(eigenvalue + ε), each used with both signs (so w0/2 eigenvectors
are kept, at most 4·C of them; wider layers repeat them). It is then frozen. Whitening makes the first steps well-conditioned, which
is what lets a short, high-learning-rate schedule converge: airbench reaches 94 % on CIFAR-10
in ~10 epochs at widths [24, 64, 256, 256]; the narrower widths the CPU scales use trade
accuracy for speed (see `raydistill/study/scales/`).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from raydistill.students.layers import check_widths
from raydistill.students.registry import register_family
from raydistill.students.teachers.resnet import Scale

BN_MOMENTUM = 0.4  # running statistics follow recent batches: the runs are only a few epochs
WHITEN_EPS = 5e-4


def _slots(depth: int) -> int:
    return 4


class ConvGroup(nn.Module):
    """conv → max-pool → BN → GELU → conv → BN → GELU (airbench's block; pooling early halves
    the second conv's cost)."""

    def __init__(self, c_in: int, c_out: int) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(c_in, c_out, 3, padding=1, bias=False),
            nn.MaxPool2d(2),
            nn.BatchNorm2d(c_out, momentum=BN_MOMENTUM),
            nn.GELU(),
            nn.Conv2d(c_out, c_out, 3, padding=1, bias=False),
            nn.BatchNorm2d(c_out, momentum=BN_MOMENTUM),
            nn.GELU(),
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.body(x)


class AirbenchNet(nn.Module):
    """Whitening conv, three conv groups, global max-pool, scaled linear head."""

    def __init__(
        self,
        widths: Sequence[int],
        in_channels: int,
        num_classes: int,
        scale: float,
        head_pool: str = "max",
    ) -> None:
        super().__init__()
        if head_pool not in ("max", "avg"):
            raise ValueError(f"airbench: head_pool {head_pool!r} is invalid; valid: max, avg")
        w0, w1, w2, w3 = widths
        self.whiten = nn.Conv2d(in_channels, w0, 2, padding=0, bias=True)
        self.layers = nn.Sequential(
            nn.GELU(), ConvGroup(w0, w1), ConvGroup(w1, w2), ConvGroup(w2, w3)
        )
        self.head = nn.Sequential(
            nn.AdaptiveMaxPool2d(1) if head_pool == "max" else nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
            nn.Linear(w3, num_classes, bias=False),
        )
        self.scale = Scale(scale)

    def forward(self, x: Tensor) -> Tensor:
        return self.scale(self.head(self.layers(self.whiten(x))))

    @torch.no_grad()
    def data_init(self, x: Tensor) -> None:
        """Set the whitening filters from preprocessed training images x (N, C, H, W), freeze them."""
        c = x.shape[1]
        patches = x.float().unfold(2, 2, 1).unfold(3, 2, 1)  # (N, C, H-1, W-1, 2, 2)
        patches = patches.permute(0, 2, 3, 1, 4, 5).reshape(-1, c * 4)
        patches = patches - patches.mean(0)
        cov = patches.T @ patches / len(patches)
        eigvals, eigvecs = torch.linalg.eigh(cov)  # ascending
        w = self.whiten.weight
        k = min((len(w) + 1) // 2, 4 * c)  # the k strongest directions, each with both signs
        vals, vecs = eigvals.flip(0)[:k], eigvecs.flip(1)[:, :k].T
        filters = (vecs / (vals.clamp(min=0) + WHITEN_EPS).sqrt()[:, None]).reshape(k, c, 2, 2)
        both = torch.cat([filters, -filters])
        reps = -(-len(w) // len(both))  # more channels than 8·C directions: repeat them
        w.copy_(both.repeat(reps, 1, 1, 1)[: len(w)].to(w.device, w.dtype))
        self.whiten.bias.zero_()
        self.whiten.weight.requires_grad_(False)


@register_family("airbench", depths=(7,), width_slots=_slots, kind="teacher")
def airbench(
    depth: int = 7,
    widths: Sequence[int] = (24, 64, 256, 256),
    scale: float = 1 / 9,
    head_pool: str = "max",
    in_shape: Sequence[int] = (3, 32, 32),
    num_classes: int = 10,
) -> nn.Module:
    """Fast teacher: data-whitened 2×2 conv, 3 pooled conv groups (BN, GELU), scaled linear head.

    `head_pool`: "max" (airbench's) or "avg" (global average: for tasks that sum a local feature
    over the image, such as `synthetic-sep`'s channel norms)."""
    widths = check_widths("airbench", widths, _slots(depth))
    return AirbenchNet(widths, int(in_shape[0]), num_classes, scale, head_pool)
