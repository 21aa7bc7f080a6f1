"""Shared building blocks of the student and teacher families (no registry entries here)."""

from __future__ import annotations

from collections.abc import Sequence

from torch import nn


def conv_relu(
    c_in: int, c_out: int, kernel: int, stride: int = 1, batchnorm: bool = False
) -> list[nn.Module]:
    """A 'same'-padded convolution followed by ReLU (padding keeps H×W at stride 1); with
    `batchnorm`, BatchNorm between them (the conv then has no bias: BN's shift replaces it)."""
    pad = kernel // 2
    if not batchnorm:
        return [nn.Conv2d(c_in, c_out, kernel, stride=stride, padding=pad), nn.ReLU()]
    conv = nn.Conv2d(c_in, c_out, kernel, stride=stride, padding=pad, bias=False)
    return [conv, nn.BatchNorm2d(c_out), nn.ReLU()]


def fc_relu(n_in: int, n_out: int, batchnorm: bool = False) -> list[nn.Module]:
    """A fully-connected layer followed by ReLU; with `batchnorm`, BatchNorm1d between them
    (no bias then). Keeps a narrow ReLU layer (10–50 units at 10k–30k parameters) from losing
    its units in the first steps."""
    if not batchnorm:
        return [nn.Linear(n_in, n_out), nn.ReLU()]
    return [nn.Linear(n_in, n_out, bias=False), nn.BatchNorm1d(n_out), nn.ReLU()]


def maybe_dropout(p: float, spatial: bool = False) -> list[nn.Module]:
    """Dropout after a block when p > 0 (the paper's students use none: p = 0)."""
    if p <= 0:
        return []
    return [nn.Dropout2d(p) if spatial else nn.Dropout(p)]


def flat_features(features: nn.Sequential, in_shape: Sequence[int]) -> int:
    """Number of features `features` yields per sample (C·H·W), from the layers' shape rules.

    Walking the layers (rather than running a forward pass) leaves the module where it is and
    costs nothing, on any device.
    """
    c, h, w = (int(v) for v in in_shape)
    for m in features:
        if isinstance(m, (nn.Conv2d, nn.MaxPool2d)):
            k, s, p = (_pair(getattr(m, a)) for a in ("kernel_size", "stride", "padding"))
            h, w = (h + 2 * p[0] - k[0]) // s[0] + 1, (w + 2 * p[1] - k[1]) // s[1] + 1
            c = m.out_channels if isinstance(m, nn.Conv2d) else c
        elif not isinstance(m, (nn.ReLU, nn.Dropout, nn.Dropout2d, nn.Identity, nn.BatchNorm2d)):
            raise TypeError(f"flat_features does not know the shape rule of {type(m).__name__}")
    return c * h * w


def _pair(v: int | tuple[int, ...]) -> tuple[int, int]:
    return (v, v) if isinstance(v, int) else (int(v[0]), int(v[1]))


def check_widths(family: str, widths: Sequence[int], need: int) -> list[int]:
    """Validate a widths list: `need` positive integers."""
    widths = [int(w) for w in widths]
    if len(widths) != need or min(widths, default=1) < 1:
        raise ValueError(f"{family}: need {need} positive widths, got {widths}")
    return widths
