"""The training loop's fast batch path equals the reference path bit for bit (issue 26):
`ViewGather` (mirror + translate views gathered straight from the image table) against
`shift_flip` of the gathered images, the in-place standardisation against `per_image`, and
`replay_epoch` / `iterate` (reused buffers, in-place preprocessing) against index_select →
float → `apply_aug` → `Preprocess`, on random data with both flips, shifts in every direction
(past the frame too) and the table's first and last images."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from raydistill.data import (
    AugConfig,
    DeviceSplit,
    Preprocess,
    apply_aug,
    identity_params,
    iterate,
    to_float,
)
from raydistill.data.augment import sample_aug, shift_flip
from raydistill.data.batches import epoch_plan, per_image, per_image_
from raydistill.data.replay import replay_batch, replay_epoch
from raydistill.data.views import ViewGather


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _bits(x: torch.Tensor) -> torch.Tensor:
    """The tensor's bytes as integers: equal bits, not just equal values (−0.0 ≠ 0.0)."""
    return x.contiguous().view({1: torch.uint8, 4: torch.int32, 8: torch.int64}[x.element_size()])


def _same(a: torch.Tensor, b: torch.Tensor) -> bool:
    return a.dtype == b.dtype and a.shape == b.shape and torch.equal(_bits(a), _bits(b))


def _table(dtype: torch.dtype, shape: tuple[int, ...], seed: int) -> torch.Tensor:
    if dtype == torch.uint8:
        return torch.randint(0, 256, shape, generator=_gen(seed), dtype=torch.uint8)
    return torch.randn(shape, generator=_gen(seed)) * 3  # either sign: a zero fill is +0.0


def _views(n: int, b: int, side: int, shift: int, seed: int) -> tuple[torch.Tensor, dict]:
    """b views: indices including the table's first and last images (twice each), random
    flips, shifts in [−shift, shift] px, the first rows shifted to each edge."""
    g = _gen(seed)
    index = torch.randint(0, n, (b,), generator=g)
    index[:4] = torch.tensor([0, 0, n - 1, n - 1])
    p = identity_params(b)  # every key, as a transfer set stores them
    p["flip"] = torch.randint(0, 2, (b,), generator=g)
    p["tx"] = torch.randint(-shift, shift + 1, (b,), generator=g)
    p["ty"] = torch.randint(-shift, shift + 1, (b,), generator=g)
    p["crop"] = torch.full((b,), side)
    p["tx"][:4], p["ty"][:4] = torch.tensor([3, -3, 3, -3]), torch.tensor([2, -2, -2, 2])
    p["flip"][:4] = torch.tensor([0, 1, 0, 1])
    return index, p


@pytest.mark.parametrize("dtype", [torch.uint8, torch.float32])
@pytest.mark.parametrize(
    ("shape", "shift"),
    [((40, 3, 32, 32), 4), ((9, 1, 5, 9), 6), ((4, 2, 8, 8), 12), ((1, 3, 4, 4), 2)],
)
def test_gathered_views_are_shift_flip_of_the_gathered_images(dtype, shape, shift):
    """Bit for bit, in the table's dtype; shifts past the frame give zero views; the first and
    last images shifted outward (their runs would leave the table) included."""
    images = _table(dtype, shape, seed=1)
    gather = ViewGather(images)
    for trial in range(6):
        index, p = _views(shape[0], 48, max(shape[2:]), shift, seed=10 + trial)
        assert ViewGather.fits(images, p, color=False)
        want = shift_flip(images.index_select(0, index), p)
        assert _same(gather(index, p), want)
    far = {**p, "tx": torch.full_like(p["tx"], 2 * shape[3]), "ty": -p["ty"]}
    assert _same(gather(index, far), shift_flip(images.index_select(0, index), far))
    assert not gather(index, far).any()


def test_gathered_views_into_reused_tensors_at_any_batch_size():
    """`out` and the mirror's scratch reused across calls of shrinking and growing batches;
    batches with no mirrored view and with every view mirrored."""
    images = _table(torch.uint8, (30, 3, 32, 32), seed=2)
    gather = ViewGather(images)
    out = torch.empty(64, 3, 32, 32, dtype=torch.uint8)
    for trial, (b, flips) in enumerate([(64, None), (7, 0), (33, 1), (64, 0), (5, None)]):
        index, p = _views(30, b, 32, 4, seed=20 + trial)
        if flips is not None:
            p["flip"] = torch.full_like(p["flip"], flips)
        got = gather(index, p, out=out[:b])
        assert got.data_ptr() == out.data_ptr()
        assert _same(got, shift_flip(images.index_select(0, index), p))


def test_fits_only_whole_pixel_views_of_a_cpu_table_without_colour():
    images = _table(torch.uint8, (10, 3, 32, 32), seed=3)
    p = sample_aug(16, _gen(4), AugConfig(mirror=True, crop_min=32, translate=4))
    assert ViewGather.fits(images, p, color=False)
    assert not ViewGather.fits(images, p, color=True) and not ViewGather.fits(images, p, None)
    crops = sample_aug(16, _gen(4), AugConfig.paper())
    assert not ViewGather.fits(images, crops, color=False)
    assert not ViewGather.fits(images[:, :, :, :16], p, color=False)  # not contiguous


def test_to_float_into_a_tensor_is_to_float():
    every = torch.arange(256, dtype=torch.uint8).view(4, 1, 8, 8)
    assert _same(to_float(every, out=torch.empty(4, 1, 8, 8)), to_float(every))
    f = torch.randn(3, 2)
    out = torch.empty(3, 2)
    assert to_float(f, out=out) is out and _same(out, f)


def test_in_place_standardisation_is_per_image_bit_for_bit():
    g = _gen(5)
    x = torch.cat(
        [
            torch.randint(0, 256, (20, 3, 32, 32), generator=g).float() / 255,
            torch.randn(6, 3, 32, 32, generator=g) * 1e3 + 7,  # large offset: cancellation
            torch.full((2, 3, 32, 32), 0.3),  # constant: the std floor
        ]
    )
    want = per_image(x)
    assert _same(per_image_(x.clone()), want)
    assert _same(per_image_(x.clone(), torch.empty_like(x)), want)
    stats = Preprocess("dataset", (0.4, 0.5, 0.6), (0.2, 0.25, 0.3))
    for pre in (Preprocess("per_image"), stats, Preprocess("none")):
        y = x.clone()
        assert pre.apply_(y).data_ptr() == y.data_ptr() and _same(y, pre(x))


def _reference(images, index, params, pre: Preprocess) -> torch.Tensor:
    """The path before issue 26's change: index_select, to float, apply_aug, Preprocess."""
    x = apply_aug(to_float(images.index_select(0, index)), params, geometric=True, color=False)
    return pre(x)


@pytest.mark.parametrize("dtype", [torch.uint8, torch.float32])
def test_replayed_epoch_is_the_reference_path(dtype):
    """replay_epoch with in-place preprocessing and reused tensors yields, batch by batch,
    the reference path's views (last batch short); without them, the same; replay_batch too."""
    images = _table(dtype, (50, 3, 32, 32), seed=6)
    index, p = _views(50, 150, 32, 4, seed=7)
    pre = Preprocess("per_image")
    for reuse in (True, False):
        seen = 0
        for rows, idx, x in replay_epoch(
            images, index, p, 64, parts=(True, False), preprocess=pre, reuse=reuse
        ):
            view = {k: v[rows] for k, v in p.items()}
            assert _same(x, _reference(images, idx, view, pre))
            seen += len(x)
        assert seen == 150
    raw = replay_batch(images, index, p, geometric=True, color=False)
    assert _same(raw, to_float(shift_flip(images.index_select(0, index), p)))


def test_iterate_with_flip_translate_is_the_reference_path():
    rng = np.random.default_rng(8)
    split = DeviceSplit.from_numpy(
        rng.integers(0, 256, (70, 3, 32, 32), dtype=np.uint8), np.arange(70) % 10
    )
    aug, pre = AugConfig(mirror=True, crop_min=32, translate=4), Preprocess("per_image")
    order, params = epoch_plan(70, seed=3, epoch=1, aug=aug)
    start = 0
    for x, y, idx in iterate(split, 32, seed=3, epoch=1, aug=aug, preprocess=pre):
        view = {k: v[start : start + len(idx)] for k, v in params.items()}
        assert torch.equal(idx, order[start : start + len(idx)])
        assert _same(x, _reference(split.x, idx, view, pre)) and torch.equal(y, split.y[idx])
        start += len(idx)
    assert start == 70
