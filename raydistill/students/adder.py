"""`adder`: AdderNet students (Chen et al., CVPR 2020, "AdderNet: Do We Really Need
Multiplications in Deep Learning?") in the `cnn` family's layouts.

An adder layer replaces the cross-correlation of a conv by the negative L1 distance between
each input window X and each filter F:  Y = −Σ |X − F|  (over the C·k·k window elements).

Its backward pass is the paper's, not the true derivative of |·|:
    ∂Y/∂F = X − F            (full precision, Eq. 5, instead of sign(X − F))
    ∂Y/∂X = HT(F − X)        (HardTanh: clipped to [−1, 1], Eq. 7)
and every adder layer's weight gradient is rescaled by the adaptive learning rate (Eq. 12)
    α_l = η·√k / ‖∂L/∂F_l‖₂       (k = number of elements of F_l, η = 0.2 by default)
inside that backward pass, so the optimizer's step is γ·α_l·∂L/∂F_l with γ the usual
(scheduled) learning rate: for SGD with or without momentum this is exactly the paper's rule,
and train.py needs to know nothing about adder layers.

Layouts: as `cnn` (see raydistill/students/cnn.py), but only the first conv and the classifier
stay multiplicative (as in the paper); every other conv and fully-connected layer is an adder
layer followed by BatchNorm (adder outputs are large and all negative; BN rescales them).

Memory: the forward uses `torch.cdist(p=1)` on unfolded windows, the backward recomputes the
windows, and both walk the batch in chunks (`ROWS` window rows at a time; the clipped input
gradient in blocks of `BLOCK` elements), so a CIFAR-size batch needs tens of MB, not GB.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from raydistill.students.cnn import KERNEL, LAYOUTS, conv_slots
from raydistill.students.layers import check_widths, maybe_dropout
from raydistill.students.registry import register_family

ETA = 0.2  # the paper's η for the adaptive learning rate
ROWS = 16_384  # unfolded window rows per chunk: ROWS × C·k·k floats (e.g. 16k × 1600 = 100 MB)
BLOCK = 1 << 22  # elements of one (rows, O, C·k·k) block of the clipped input gradient: 16 MB


def _out_size(n: int, k: int, stride: int, padding: int) -> int:
    return (n + 2 * padding - k) // stride + 1


def _windows(x: Tensor, k: int, stride: int, padding: int) -> Tensor:
    """(n, C, H, W) → (n·L, C·k·k): one row per output position (L = Ho·Wo)."""
    cols = F.unfold(x, k, padding=padding, stride=stride)  # (n, C·k·k, L)
    return cols.transpose(1, 2).reshape(-1, cols.shape[1])


def _clipped_input_grad(cols: Tensor, wf: Tensor, g: Tensor) -> Tensor:
    """Σ_o g[r, o] · HardTanh(F[o, i] − X[r, i]) for every row r and window element i.

    cols (R, I), wf (O, I), g (R, O) → (R, I). The (R, O, I) differences are formed in
    blocks of ≤ BLOCK elements; the clip makes them impossible to factor into matmuls.
    """
    rows = max(1, BLOCK // (wf.shape[0] * wf.shape[1]))
    out = torch.empty_like(cols)
    for a in range(0, cols.shape[0], rows):
        d = (wf.unsqueeze(0) - cols[a : a + rows].unsqueeze(1)).clamp_(-1.0, 1.0)  # (r, O, I)
        out[a : a + rows] = torch.bmm(g[a : a + rows].unsqueeze(1), d).squeeze(1)
    return out


def _no_autocast(x: Tensor) -> contextlib.AbstractContextManager:
    """Autocast off for x's device type while it is on (untouched otherwise: export traces;
    the meta device, where MACs are counted, has no autocast)."""
    if x.device.type != "meta" and torch.is_autocast_enabled(x.device.type):
        return torch.autocast(x.device.type, enabled=False)
    return contextlib.nullcontext()


def _compute_dtype(x: Tensor, weight: Tensor) -> torch.dtype:
    """float32, or float64 when an operand is (bf16 / fp16 operands are computed in float32)."""
    return torch.promote_types(torch.promote_types(x.dtype, weight.dtype), torch.float32)


class AdderFunction(torch.autograd.Function):
    """Y = −Σ|X − F| over conv windows, with the paper's gradients (see the module docstring)."""

    @staticmethod
    def forward(ctx, x: Tensor, weight: Tensor, stride: int, padding: int, eta: float | None):
        ctx.save_for_backward(x, weight)
        ctx.conf = (stride, padding, eta)
        # float32 whatever the autocast: Σ|X − F| over C·k·k elements in bf16 (8-bit mantissa)
        # loses the differences between filters, and the backward's bmm needs one dtype.
        dt = _compute_dtype(x, weight)
        with _no_autocast(x):
            return _adder_forward(x.to(dt), weight.to(dt), stride, padding)

    @staticmethod
    def backward(ctx, grad_out: Tensor):
        x, weight = ctx.saved_tensors
        dt = _compute_dtype(x, weight)
        with _no_autocast(x):
            grad_x, grad_w = _adder_backward(x.to(dt), weight.to(dt), grad_out.to(dt), ctx.conf)
        return grad_x.to(x.dtype), grad_w.to(weight.dtype), None, None, None


def _adder_forward(x: Tensor, weight: Tensor, stride: int, padding: int) -> Tensor:
    """−Σ|X − F| of x (N, C, H, W) and weight (O, C, k, k) → (N, O, Ho, Wo)."""
    n, _, h, w = x.shape
    o, k = weight.shape[0], weight.shape[-1]
    ho, wo = _out_size(h, k, stride, padding), _out_size(w, k, stride, padding)
    wf = weight.reshape(o, -1)
    if torch.compiler.is_compiling():
        # Traced by torch.export / compile: one piece, so the batch size stays symbolic
        # (the chunk loop below would fix it to the example's).
        out = torch.cdist(_windows(x, k, stride, padding), wf, p=1).reshape(n, ho * wo, o)
    else:
        per = max(1, ROWS // (ho * wo))  # samples per chunk
        out = x.new_empty(n, ho * wo, o)
        for s in range(0, n, per):
            cols = _windows(x[s : s + per], k, stride, padding)  # (n_c·L, I)
            out[s : s + per] = torch.cdist(cols, wf, p=1).reshape(-1, ho * wo, o)
    return out.neg_().transpose(1, 2).reshape(n, o, ho, wo)


def _adder_backward(
    x: Tensor, weight: Tensor, grad_out: Tensor, conf: tuple[int, int, float | None]
) -> tuple[Tensor, Tensor]:
    """(∂L/∂x, ∂L/∂F) with the paper's rules (module docstring), in x's dtype."""
    stride, padding, eta = conf
    n, _, h, w = x.shape
    o, k = weight.shape[0], weight.shape[-1]
    wf = weight.reshape(o, -1)
    g = grad_out.reshape(n, o, -1).transpose(1, 2)  # (n, L, O)
    per = max(1, ROWS // g.shape[1])
    grad_w = torch.zeros_like(wf)
    grad_x = torch.empty_like(x, memory_format=torch.contiguous_format)
    for s in range(0, n, per):
        cols = _windows(x[s : s + per], k, stride, padding)  # (R, I)
        gc = g[s : s + per].reshape(-1, o)  # (R, O)
        # Σ_r g[r, o]·(X[r, i] − F[o, i]) = (gᵀX)[o, i] − F[o, i]·Σ_r g[r, o]
        grad_w += gc.t() @ cols - wf * gc.sum(0).unsqueeze(1)
        gx = _clipped_input_grad(cols, wf, gc).reshape(len(cols) // g.shape[1], -1, wf.shape[1])
        grad_x[s : s + per] = F.fold(gx.transpose(1, 2), (h, w), k, padding=padding, stride=stride)
    if eta is not None:
        # Adaptive learning rate α = η·√k / ‖∂L/∂F‖₂ (k = weight.numel()), Eq. 12.
        grad_w *= eta * math.sqrt(wf.numel()) / grad_w.norm().clamp_min(1e-12)
    return grad_x, grad_w.reshape(weight.shape)


def adder2d(
    x: Tensor, weight: Tensor, stride: int = 1, padding: int = 0, eta: float | None = None
) -> Tensor:
    """Adder 'convolution' of x (N, C, H, W) with weight (O, C, k, k) → (N, O, Ho, Wo).

    eta=None gives the paper's raw gradients; a float also applies the adaptive learning rate.
    """
    return AdderFunction.apply(x, weight, int(stride), int(padding), eta)


class AdderConv2d(nn.Module):
    """k×k adder layer (no bias: the BatchNorm that follows has the shift)."""

    def __init__(
        self,
        c_in: int,
        c_out: int,
        kernel: int,
        stride: int = 1,
        padding: int = 0,
        eta: float | None = ETA,
    ) -> None:
        super().__init__()
        self.in_channels, self.out_channels, self.kernel_size = c_in, c_out, kernel
        self.stride, self.padding, self.eta = stride, padding, eta
        # Unit-normal filters, as in the authors' code (BN absorbs the output scale).
        self.weight = nn.Parameter(torch.randn(c_out, c_in, kernel, kernel))

    def forward(self, x: Tensor) -> Tensor:
        return adder2d(x, self.weight, self.stride, self.padding, self.eta)

    def extra_repr(self) -> str:
        return (
            f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, "
            f"stride={self.stride}, padding={self.padding}, eta={self.eta}"
        )


class AdderLinear(AdderConv2d):
    """Fully-connected adder layer: a 1×1 adder layer on (N, in, 1, 1)."""

    def __init__(self, n_in: int, n_out: int, eta: float | None = ETA) -> None:
        super().__init__(n_in, n_out, 1, eta=eta)

    def forward(self, x: Tensor) -> Tensor:
        # flatten + None-indexing, not reshape(len(x), ...): torch.export keeps the batch symbolic
        return super().forward(x.flatten(1)[:, :, None, None]).flatten(1)


def _slots(depth: int) -> int:
    return conv_slots(depth)


@register_family("adder", depths=(1, 2, 3, 4), width_slots=_slots)
def adder(
    depth: int = 2,
    widths: Sequence[int] = (64, 128, 512),
    eta: float = ETA,
    dropout: float = 0.0,
    in_shape: Sequence[int] = (3, 32, 32),
    num_classes: int = 10,
) -> nn.Module:
    """AdderNet student in the cnn layouts: multiplicative first conv and classifier, BN."""
    widths = check_widths("adder", widths, _slots(depth))
    convs, head = widths[:depth], widths[depth:]
    eta_ = float(eta) if eta and eta > 0 else None  # eta ≤ 0: plain gradients, no adaptive lr
    c_in, h, w = (int(v) for v in in_shape)
    feats: list[nn.Module] = []
    i = 0
    for op in LAYOUTS[depth]:
        if op == "c":
            if i == 0:  # the first layer stays multiplicative
                feats += [nn.Conv2d(c_in, convs[0], KERNEL, padding=KERNEL // 2), nn.ReLU()]
            else:
                layer = AdderConv2d(c_in, convs[i], KERNEL, padding=KERNEL // 2, eta=eta_)
                feats += [layer, nn.BatchNorm2d(convs[i]), nn.ReLU()]
            c_in, i = convs[i], i + 1
        else:
            k = 3 if op == "mp3" else 2
            feats += [nn.MaxPool2d(k, stride=k), *maybe_dropout(dropout, spatial=True)]
            h, w = h // k, w // k  # 'same' convs keep H×W; only the pools shrink it
    n_in = c_in * h * w
    layers: list[nn.Module] = [nn.Sequential(*feats), nn.Flatten()]
    if depth == 1:  # the linear bottleneck ("lfc"): adder + BN, no ReLU
        layers += [AdderLinear(n_in, head[0], eta=eta_), nn.BatchNorm1d(head[0])]
        n_in, head = head[0], head[1:]
    layers += [AdderLinear(n_in, head[0], eta=eta_), nn.BatchNorm1d(head[0]), nn.ReLU()]
    layers += [*maybe_dropout(dropout), nn.Linear(head[0], num_classes)]
    return nn.Sequential(*layers)
