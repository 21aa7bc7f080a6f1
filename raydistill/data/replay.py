"""Epoch replay: the views a list of (image index, augmentation parameters) describes, batch by
batch, on the images' device. The one definition: training replays the transfer set's views
with it, and the transfer-set writer labels the very same batches with the ensemble's logits.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Protocol

import numpy as np
import torch
from torch import Tensor

from raydistill.data.augment import apply_aug
from raydistill.data.batches import Preprocess, to_float
from raydistill.data.views import ViewGather


class ReplayViews(Protocol):
    """What training replays of a transfer set (`raydistill.distill.transfer.format.TransferSet`
    is one): per view, V = epochs × views_per_epoch rows, the train image it shows, its
    augmentation parameters and the teachers' logits. Training depends on this, not on the
    teacher side that writes it."""

    index: np.ndarray  # (V,) int64 into the train split
    params: dict[str, np.ndarray]  # augmentation parameter → (V,)
    logits: np.ndarray  # (V, C) float32

    @property
    def num_epochs(self) -> int: ...

    @property
    def views_per_epoch(self) -> int: ...

    @property
    def aug_parts(self) -> tuple[bool, bool]: ...

    def epoch_rows(self, epoch: int) -> slice: ...


def replay_batch(
    images: Tensor,
    index: Tensor,
    params: Mapping[str, Tensor],
    *,
    geometric: bool | None = None,
    color: bool | None = None,
) -> Tensor:
    """The views `params` describes of images `images[index]`, as float (B, C, H, W) before
    preprocessing (uint8 images become [0, 1]; float images are used as they are).

    `images` (N, C, H, W) is a split resident on the device; `index` (B,) and `params[k]` (B,)
    are on the same device. `geometric` / `color`: skip the parts known to be identity
    (`TransferSet.aug_parts`); None works it out from the params (a host sync). Mirror +
    translate views on the CPU are gathered straight from the table (`ViewGather`)."""
    if geometric and ViewGather.fits(images, params, color):
        return to_float(ViewGather(images)(index, params))
    # index_select, not images[index]: the same rows, ~50x faster for uint8 on the CPU
    x = to_float(images.index_select(0, index))
    return apply_aug(x, params, geometric=geometric, color=color)


def replay_epoch(
    images: Tensor,
    index: np.ndarray | Tensor,
    params: Mapping[str, np.ndarray | Tensor],
    batch_size: int,
    *,
    parts: tuple[bool, bool] | None = None,
    preprocess: Preprocess | None = None,
    reuse: bool = False,
) -> Iterator[tuple[slice, Tensor, Tensor]]:
    """(rows, image indices, views) for consecutive batches of `batch_size` of one epoch's
    views; `index` (V,) and `params[k]` (V,) are copied to the device once (a few MB per
    epoch) and sliced per batch. `parts`: (geometric, color) as in `replay_batch`.

    `preprocess`: applied to the views in place (`Preprocess.apply_`, the same values).
    `reuse`: every batch is written into the same tensors, allocated once per epoch (fresh
    batch-sized temporaries cost allocation and first-touch page faults on every step): a
    batch's views are valid until the next batch is drawn (the training loop's use)."""
    dev = images.device
    index_d = torch.as_tensor(index, device=dev)
    params_d = {k: torch.as_tensor(v, device=dev) for k, v in params.items()}
    geometric, color = parts if parts is not None else (None, None)
    # checked once for the epoch's views, not per batch
    gather = ViewGather(images) if geometric and ViewGather.fits(images, params_d, color) else None
    buffers = _Buffers(images, batch_size, dev) if reuse else None
    for start in range(0, len(index_d), batch_size):
        rows = slice(start, start + batch_size)
        idx = index_d[rows]
        view = {k: v[rows] for k, v in params_d.items()}
        if gather is None:
            x = replay_batch(images, idx, view, geometric=geometric, color=color)  # a new tensor
        elif buffers is None:
            x = to_float(gather(idx, view))
        else:
            x = buffers.views(gather, idx, view)
        if preprocess is not None:
            x = preprocess.apply_(x, None if buffers is None else buffers.scratch[: len(idx)])
        yield rows, idx, x


class _Buffers:
    """One epoch's reused batch tensors: the views in the table's dtype, as floats, and the
    standardisation's scratch."""

    def __init__(self, images: Tensor, batch_size: int, device: torch.device) -> None:
        shape = (batch_size, *images.shape[1:])
        self.raw = torch.empty(shape, dtype=images.dtype, device=device)
        floats = images.dtype if images.is_floating_point() else torch.float32
        self.x = (
            self.raw if images.is_floating_point() else torch.empty_like(self.raw, dtype=floats)
        )
        self.scratch = torch.empty(shape, dtype=floats, device=device)

    def views(self, gather: ViewGather, index: Tensor, params: Mapping[str, Tensor]) -> Tensor:
        b = len(index)
        raw = gather(index, params, out=self.raw[:b])
        return raw if raw.is_floating_point() else to_float(raw, out=self.x[:b])
