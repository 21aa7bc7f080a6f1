"""Whole-pixel views gathered straight from a resident image table: the CPU's fast path of
replay and `iterate` for mirror + translate views (the flip_translate transfer sets, the
teachers' on-the-fly augmentation).

A mirror and a whole-pixel translation move every image row as a unit: row y of a view is row
y − ty of its image read from column −tx on (mirrored: from column +tx, then reversed), and
the pixels brought in from outside the frame are 0. So a batch's views are B·C·H runs of W
consecutive values of the table, and `ViewGather` takes them with one `index_select` on the
table's overlapping W-wide windows (`Tensor.unfold`, a view: the table is not copied or
padded), in the table's dtype (uint8: a quarter of the bytes of floats), then reverses the
mirrored views' rows and zeroes what lies outside the frame with a 0/1 mask read by the same
windows trick from a 3H × 3W pattern. The values are `augment.shift_flip`'s (the reference
path: index_select, float, one per-pixel gather, zero fill) bit for bit, tested in
tests/test_views.py; a view whose runs would leave the table (the first or last image shifted
outward) is made by `shift_flip` itself.

CPU only, as `augment`'s whole-pixel path: on a GPU the fallback check below would be a host
sync per batch, and grid_sample there is cheap.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import Tensor

from raydistill.data.augment import shift_flip, whole_pixels


class ViewGather:
    """Mirror + translate views of a resident (N, C, H, W) image table, by table index."""

    def __init__(self, images: Tensor) -> None:
        if images.ndim != 4 or not images.is_contiguous():
            raise ValueError(
                f"ViewGather needs a contiguous (N, C, H, W) table, got {images.shape}"
            )
        self.images = images
        _, c, h, w = images.shape
        self.size = images.numel()
        self.windows = images.view(-1).unfold(0, w, 1)  # (L − W + 1, W), no copy
        pattern = torch.zeros(3 * h, 3 * w, dtype=torch.uint8, device=images.device)
        pattern[h : 2 * h, w : 2 * w] = 1  # the frame; the view's mask is a window of it
        self.keep_windows = pattern.view(-1).unfold(0, w, 1)
        self.row = torch.arange(h, device=images.device)
        channel_start = torch.arange(c, device=images.device) * (h * w)
        self.run_offset = (channel_start[:, None] + self.row[None, :] * w).view(1, -1)  # (1, C·H)
        self.keep_row = self.row[None, :] * (3 * w)  # (1, H): the pattern's row starts
        self._scratch: Tensor | None = None  # (2B, C·H·W) of the table's dtype, reused

    @staticmethod
    def fits(images: Tensor, params: Mapping[str, Tensor], color: bool | None) -> bool:
        """Whether `ViewGather` makes these views: CPU images, no colour jitter, every view a
        mirror and / or whole-pixel shift (no crop to resize)."""
        return (
            color is False
            and images.device.type == "cpu"
            and images.ndim == 4
            and images.is_contiguous()
            and whole_pixels(images, params)
        )

    def __call__(
        self, index: Tensor, params: Mapping[str, Tensor], out: Tensor | None = None
    ) -> Tensor:
        """(B, C, H, W) views in the table's dtype, written into `out` when given: image
        index[b] mirrored if params["flip"], then shifted by (params["tx"], params["ty"]) px
        with zero fill, as `shift_flip` makes them."""
        _, c, h, w = self.images.shape
        b = len(index)
        flip, tx, ty = params["flip"], params["tx"].clamp(-w, w), params["ty"].clamp(-h, h)
        # view b's row y of channel k is the run at first[b] + k·H·W + y·W: its image's row
        # y − ty from column −tx on (mirrored: +tx, reversed below); rows and columns from
        # outside the frame read a neighbour's pixels, zeroed below
        first = index * (c * h * w) - ty * w - tx * (1 - 2 * flip)
        outside = (first < 0) | (first > self.size - c * h * w)  # runs would leave the table
        fallback = bool(outside.any())
        if fallback:
            first = first.masked_fill(outside, 0)
        start = (first[:, None] + self.run_offset).view(-1)
        if out is None:
            out = torch.empty(b, c, h, w, dtype=self.images.dtype, device=self.images.device)
        mirrored = flip.nonzero()[:, 0]
        if len(mirrored) == 0:
            torch.index_select(self.windows, 0, start, out=out.view(-1, w))
        else:
            self._mirror(start, mirrored, out.view(b, -1))
        keep_start = ((h - ty) * (3 * w) + (w - tx))[:, None] + self.keep_row
        keep = self.keep_windows.index_select(0, keep_start.view(-1)).view(b, 1, h, w)
        if out.is_floating_point():  # masked_fill: a product would turn −x·0 into −0.0
            out.masked_fill_(keep == 0, 0)
        else:
            out.mul_(keep)
        if fallback:  # the first or last image shifted outward: made by the reference path
            for i in outside.nonzero()[:, 0].tolist():
                one = {k: params[k][i : i + 1] for k in ("flip", "tx", "ty")}
                out[i] = shift_flip(self.images[index[i] : index[i] + 1], one)[0]
        return out

    def _mirror(self, start: Tensor, mirrored: Tensor, out: Tensor) -> None:
        """out (B, C·H·W) ← the runs at `start`, the views `mirrored` reversed left-right: all
        runs into the first half of a scratch table, the mirrored views reversed into its
        second half, then every view taken from its half in one gather."""
        b, m, w = len(out), len(mirrored), self.images.shape[3]
        if self._scratch is None or len(self._scratch) < 2 * b:
            self._scratch = torch.empty(2 * b, out.shape[1], dtype=out.dtype, device=out.device)
        scratch = self._scratch
        torch.index_select(self.windows, 0, start, out=scratch[:b].view(-1, w))
        half = scratch[:b].index_select(0, mirrored).view(m, -1, w)
        scratch[b : b + m] = half.flip(-1).view(m, -1)
        take = torch.arange(b, device=out.device)
        take[mirrored] = torch.arange(b, b + m, device=out.device)
        torch.index_select(scratch, 0, take, out=out)
