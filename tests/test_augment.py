"""Per-view augmentation parameters, their vectorised application, preprocessing and device
batches (raydistill.data.augment / raydistill.data.batches)."""

from __future__ import annotations

import colorsys
import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from raydistill.core.errors import UserError
from raydistill.core.vocab import AUG_NAMES
from raydistill.data import (
    AUG_KEYS,
    AugConfig,
    DeviceSplit,
    HSVJitter,
    Preprocess,
    apply_aug,
    dataset_stats,
    epoch_plan,
    hsv_to_rgb,
    identity_params,
    iterate,
    make_synthetic_sep,
    named_aug,
    rgb_to_hsv,
    sample_aug,
    to_float,
)
from raydistill.data.augment import (
    _warp,
    aug_grid,
    aug_theta,
    hsv_jitter,
    whole_pixels,
)

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _images(n: int = 6, seed: int = 0) -> torch.Tensor:
    return torch.rand(n, 3, 32, 32, generator=_gen(seed))


def _params(n: int, **over) -> dict[str, torch.Tensor]:
    p = identity_params(n)
    for k, v in over.items():
        p[k] = torch.as_tensor(v, dtype=p[k].dtype).expand(n).clone()
    return p


# ---------------------------------------------------------------------------------- config


def test_sample_aug_keys_ranges_and_determinism():
    cfg = AugConfig(mirror=True, crop_min=24, crop_max=32, translate=3, hsv=HSVJitter())
    p = sample_aug(4000, _gen(1), cfg)
    assert tuple(p) == AUG_KEYS and all(
        v.shape == (4000,) and v.device.type == "cpu" for v in p.values()
    )
    assert p["flip"].dtype == torch.int64 and set(p["flip"].tolist()) == {0, 1}
    assert set(p["crop"].tolist()) == set(range(24, 33))
    assert set(p["tx"].tolist()) == set(range(-3, 4))
    assert p["crop_x"].min() >= 0 and p["crop_x"].max() < 1
    assert p["hue"].abs().max() <= 0.06 and p["hue"].abs().max() > 0.05
    assert (p["sat_scale"] - 1).abs().max() <= 0.21 and p["val_shift"].abs().max() <= 0.20
    again = sample_aug(4000, _gen(1), cfg)
    assert all(torch.equal(p[k], again[k]) for k in AUG_KEYS)
    assert not torch.equal(p["crop"], sample_aug(4000, _gen(2), cfg)["crop"])


def test_off_transforms_hold_the_identity_and_hsv_keeps_geometry():
    none = sample_aug(50, _gen(0), AugConfig.none())
    ident = identity_params(50)
    for k in ("flip", "crop", "tx", "ty", "hue", "sat_scale", "val_shift"):
        assert torch.equal(none[k], ident[k]), k
    paper, paper_hsv = (
        sample_aug(50, _gen(5), c) for c in (AugConfig.paper(), AugConfig.paper_hsv())
    )
    for k in ("flip", "crop", "crop_x", "crop_y"):
        assert torch.equal(paper[k], paper_hsv[k]), k
    assert torch.equal(paper["hue"], ident["hue"]) and not torch.equal(
        paper_hsv["hue"], ident["hue"]
    )


def test_config_round_trips_through_json_and_rejects_bad_values():
    for cfg in (AugConfig.paper(), AugConfig.paper_hsv(), AugConfig.none(), AugConfig(translate=4)):
        assert AugConfig.from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg
    assert AugConfig.paper_hsv().to_dict()["hsv"] == {
        "dh": 0.06,
        "ds": 0.26,
        "dv": 0.2,
        "a_s": 0.21,
        "a_v": 0.13,
    }
    with pytest.raises(UserError, match="crop_min=30, crop_max=24"):
        AugConfig(crop_min=30, crop_max=24)
    with pytest.raises(UserError, match="translate=-1"):
        AugConfig(translate=-1)
    with pytest.raises(UserError, match=r"\['rotate'\] are unknown"):
        AugConfig.from_dict({"rotate": 10})
    with pytest.raises(UserError, match="HSV jitter"):
        AugConfig.from_dict({"hsv": {"dh": 2.0}})


# ---------------------------------------------------------------------------------- geometry


@pytest.mark.parametrize("name", AUG_NAMES)
def test_every_augmentation_name_builds_at_any_image_side(name):
    from raydistill.distill.transfer.aug import transfer_aug
    from raydistill.training.config import TrainConfig

    for side in (8, 32):
        cfg = named_aug(name, side)
        assert cfg.crop_max == side and cfg.crop_min >= 1 and cfg.translate <= side // 4
    assert TrainConfig(augment=name).augment == name  # the train config takes the same names
    # and so does a transfer set, sized to its images (synthetic-sep: 32 px; whether HSV jitter
    # suits the data is `check_aug`'s to say, not the name's)
    assert transfer_aug(name, make_synthetic_sep(8, 4, 4, seed=0)) == named_aug(name, 32)


def test_named_augmentations_at_32_px():
    assert named_aug("paper", 32) == AugConfig.paper() == AugConfig(crop_min=24, crop_max=32)
    assert named_aug("paper_hsv", 32).hsv == HSVJitter()
    assert named_aug("flip_translate", 32).translate == 4  # the usual CIFAR teacher recipe
    assert named_aug("flip_translate", 8).translate == 1
    assert named_aug("none", 32) == AugConfig.none() and not AugConfig.none().mirror
    with pytest.raises(UserError, match="'jitter' is unknown; valid: paper, paper_hsv"):
        named_aug("jitter", 32)


@pytest.mark.parametrize("device", DEVICES)
def test_identity_params_return_the_input(device):
    x = _images().to(device)
    p = identity_params(len(x))
    torch.testing.assert_close(apply_aug(x, p, geometric=True, color=True), x, atol=2e-6, rtol=0)
    assert apply_aug(x, p) is x  # nothing to do: skipped


def test_mirror_of_a_gradient():
    ramp = torch.arange(32.0).view(1, 1, 1, 32).expand(2, 3, 32, 32).contiguous()
    out = apply_aug(ramp, _params(2, flip=1))
    torch.testing.assert_close(out, torch.flip(ramp, dims=[-1]), atol=1e-4, rtol=0)
    assert out[0, 0, 0, 0] == pytest.approx(31.0, abs=1e-4)


def test_crops_resize_like_interpolate_per_sample_in_one_batch():
    x = _images(5, seed=3)
    crop = torch.tensor([24, 16, 32, 27, 30])
    cx = torch.tensor([0.0, 0.5, 0.3, 0.999, 0.2])
    cy = torch.tensor([0.99, 0.0, 0.0, 0.4, 0.7])
    flip = torch.tensor([0, 1, 1, 0, 1])
    p = _params(5)
    p.update(crop=crop, crop_x=cx, crop_y=cy, flip=flip)
    out = apply_aug(x, p)
    offsets = []
    for i in range(5):
        s = int(crop[i])
        ox, oy = int(cx[i] * (33 - s)), int(cy[i] * (33 - s))
        offsets.append((ox, oy))
        want = F.interpolate(
            x[i : i + 1, :, oy : oy + s, ox : ox + s],
            size=(32, 32),
            mode="bilinear",
            align_corners=False,
        )
        want = torch.flip(want, dims=[-1]) if flip[i] else want
        torch.testing.assert_close(out[i : i + 1], want, atol=1e-5, rtol=0, msg=f"view {i}")
    assert offsets == [(0, 8), (8, 0), (0, 0), (5, 2), (0, 2)]  # both edges reached


def test_translate_shifts_with_zero_fill_on_raw_floats():
    x = torch.randn(3, 3, 32, 32, generator=_gen(4)) + 5.0  # synthetic-like, no [0, 1] range
    p = _params(3)
    p.update(tx=torch.tensor([3, -2, 0]), ty=torch.tensor([0, 1, -4]))
    out = apply_aug(x, p)
    torch.testing.assert_close(out[0, :, :, 3:], x[0, :, :, :-3], atol=1e-5, rtol=0)
    assert out[0, :, :, :3].abs().max() == 0
    torch.testing.assert_close(out[1, :, 1:, :-2], x[1, :, :-1, 2:], atol=1e-5, rtol=0)
    assert out[1, :, 0, :].abs().max() == 0 and out[1, :, :, -2:].abs().max() == 0
    torch.testing.assert_close(out[2, :, :-4, :], x[2, :, 4:, :], atol=1e-5, rtol=0)


@pytest.mark.parametrize(("h", "w"), [(32, 32), (16, 32), (24, 32), (32, 20)])
def test_whole_pixel_views_are_the_grid_samples(h, w):
    """Mirror + translate views (the flip_translate transfer set) take a gather instead of
    grid_sample on the CPU: bit for bit grid_sample's views at power-of-two sides (CIFAR's 32),
    within its float rounding elsewhere; views that crop still go through grid_sample."""
    cfg = AugConfig(mirror=True, crop_min=max(h, w), crop_max=max(h, w), translate=4)
    p = sample_aug(96, _gen(11), cfg)
    x = torch.randn(96, 3, h, w, generator=_gen(12)) + 2.0  # finite values of either sign
    assert whole_pixels(x, p) and p["tx"].abs().max() == 4 and p["flip"].any()
    if h & (h - 1) == 0 and w & (w - 1) == 0:  # pixel centres exact in binary
        assert torch.equal(apply_aug(x, p), _warp(x, p))
    torch.testing.assert_close(apply_aug(x, p), _warp(x, p), atol=1e-5, rtol=0)
    cropped = sample_aug(96, _gen(13), AugConfig(mirror=True, crop_min=h - 4, crop_max=h))
    assert not whole_pixels(x, cropped)


def test_separable_grid_equals_affine_grid_of_theta():
    """aug_grid builds per axis what F.affine_grid(theta) gives, then clamps to the crop's
    pixel centres and sends translated-in pixels outside [-1, 1]."""
    cfg = AugConfig(mirror=True, crop_min=12, crop_max=32, translate=5)
    p = sample_aug(64, _gen(9), cfg)
    h, w = 32, 28  # not square: axes must not be mixed up
    theta = aug_theta(p, h, w)
    ref = F.affine_grid(theta, [64, 1, h, w], align_corners=False)
    bounds = []  # per axis: crop side clamped to that axis, offset floor(u·(size − S + 1))
    for size, key in ((w, "crop_x"), (h, "crop_y")):
        s = p["crop"].clamp(max=size).float()
        o = torch.minimum(torch.floor(p[key] * (size - s + 1)), size - s)
        bounds.append((-1 + (2 * o + 1) / size, -1 + (2 * (o + s) - 1) / size))
    gx = torch.clamp(ref[..., 0], bounds[0][0].view(-1, 1, 1), bounds[0][1].view(-1, 1, 1))
    gy = torch.clamp(ref[..., 1], bounds[1][0].view(-1, 1, 1), bounds[1][1].view(-1, 1, 1))
    cols = torch.arange(w).view(1, 1, w) - p["tx"].view(-1, 1, 1)
    rows = torch.arange(h).view(1, h, 1) - p["ty"].view(-1, 1, 1)
    gx = torch.where((cols >= 0) & (cols < w), gx, 4.0)
    gy = torch.where((rows >= 0) & (rows < h), gy, 4.0)
    torch.testing.assert_close(aug_grid(p, h, w), torch.stack((gx, gy), -1), atol=1e-6, rtol=0)


# ---------------------------------------------------------------------------------- colour


def test_hsv_round_trip_and_colorsys_agreement():
    x = torch.rand(4, 3, 8, 8, generator=_gen(7))
    x[0, :, 0, 0] = 0.5  # a gray pixel
    x[0, :, 0, 1] = 0.0  # black
    hsv = rgb_to_hsv(x)
    torch.testing.assert_close(hsv_to_rgb(hsv), x, atol=1e-5, rtol=0)
    for b, i, j in ((1, 2, 3), (2, 0, 0), (3, 7, 5), (0, 0, 0)):
        want = colorsys.rgb_to_hsv(*x[b, :, i, j].tolist())
        assert hsv[b, :, i, j].tolist() == pytest.approx(want, abs=1e-5)
    zero = _params(4)
    torch.testing.assert_close(hsv_jitter(x, zero), x, atol=1e-5, rtol=0)


def test_hsv_jitter_formulas():
    red = torch.zeros(1, 3, 2, 2)
    red[:, 0] = 1.0
    green = hsv_jitter(red, _params(1, hue=1 / 3))
    torch.testing.assert_close(green[0, :, 0, 0], torch.tensor([0.0, 1.0, 0.0]), atol=1e-5, rtol=0)
    gray = torch.full((1, 3, 2, 2), 0.6)
    darker = hsv_jitter(gray, _params(1, val_scale=0.5, val_shift=0.1))  # v' = 0.6·0.5 + 0.1
    torch.testing.assert_close(darker, torch.full_like(gray, 0.4), atol=1e-5, rtol=0)
    pale = hsv_jitter(red, _params(1, sat_scale=0.5, sat_shift=-0.25))  # s' = 0.25
    torch.testing.assert_close(pale[0, :, 0, 0], torch.tensor([1.0, 0.75, 0.75]), atol=1e-5, rtol=0)
    x = _images(64)
    out = apply_aug(
        x, sample_aug(64, _gen(0), AugConfig(mirror=False, crop_min=32, hsv=HSVJitter()))
    )
    assert out.min() >= 0 and out.max() <= 1 and (out - x).abs().mean() > 0.01


# ---------------------------------------------------------------------------------- preprocess


def test_per_image_standardisation():
    x = _images(5) * torch.arange(1.0, 6.0).view(5, 1, 1, 1)
    x[4] = 0.3  # constant image: the std floor keeps it finite
    out = Preprocess("per_image")(x)
    flat = out[:4].flatten(1)
    torch.testing.assert_close(flat.mean(1), torch.zeros(4), atol=1e-5, rtol=0)
    torch.testing.assert_close(flat.std(1, correction=0), torch.ones(4), atol=1e-4, rtol=0)
    assert torch.equal(out[4], torch.zeros_like(out[4]))
    assert torch.equal(Preprocess("none")(x), x)


def test_dataset_statistics_and_mode():
    s = make_synthetic_sep(64, 8, 8, seed=0)
    mean, std = dataset_stats(s)
    x = s.train_x.astype(np.float64)
    np.testing.assert_allclose(mean, x.mean(axis=(0, 2, 3)), atol=1e-9)
    np.testing.assert_allclose(std, x.std(axis=(0, 2, 3)), atol=1e-9)
    pre = Preprocess.for_splits("dataset", s)
    out = pre(torch.from_numpy(s.train_x))
    torch.testing.assert_close(out.mean((0, 2, 3)), torch.zeros(3), atol=1e-5, rtol=0)
    torch.testing.assert_close(out.std((0, 2, 3), correction=0), torch.ones(3), atol=1e-4, rtol=0)
    assert Preprocess.from_dict(json.loads(json.dumps(pre.to_dict()))) == pre
    with pytest.raises(UserError, match="preprocess mode 'zca' is unknown"):
        Preprocess("zca")
    with pytest.raises(UserError, match="needs per-channel mean and std"):
        Preprocess("dataset")


def test_to_float():
    u = torch.tensor([0, 51, 255], dtype=torch.uint8)
    torch.testing.assert_close(to_float(u), torch.tensor([0.0, 0.2, 1.0]))
    f = torch.randn(3)
    assert to_float(f) is f


# ---------------------------------------------------------------------------------- batches


def _uint8_split(n: int = 50, device: str = "cpu") -> DeviceSplit:
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (n, 3, 32, 32), dtype=np.uint8)
    return DeviceSplit.from_numpy(x, np.arange(n) % 10, device)


PAPER = AugConfig.paper()


def _epoch(split, bs, epoch, aug=PAPER, **kw):
    batches = list(
        iterate(split, bs, seed=7, epoch=epoch, aug=aug, preprocess=Preprocess("per_image"), **kw)
    )
    return (torch.cat([b[i] for b in batches]) for i in range(3))


def test_iterate_is_reproducible_per_seed_and_epoch():
    split = _uint8_split()
    assert split.x.dtype == torch.uint8 and split.y.dtype == torch.int64
    x, y, idx = _epoch(split, 16, epoch=0)
    assert sorted(idx.tolist()) == list(range(50))  # every image once
    assert torch.equal(y, split.y[idx]) and x.dtype == torch.float32
    x2, _, idx2 = _epoch(split, 16, epoch=0)
    assert torch.equal(idx, idx2) and torch.equal(x, x2)
    x3, _, idx3 = _epoch(split, 7, epoch=0)  # views do not depend on the batch size
    assert torch.equal(idx, idx3)
    torch.testing.assert_close(x, x3)
    x4, _, idx4 = _epoch(split, 16, epoch=1)
    assert not torch.equal(idx, idx4)
    order = torch.argsort(idx4)[torch.argsort(torch.argsort(idx))]  # epoch 1 rows in epoch 0 order
    assert not torch.allclose(x4[order], x)  # same images, different views


def test_iterate_matches_epoch_plan_and_options():
    split = _uint8_split()
    order, params = epoch_plan(50, seed=7, epoch=3, aug=AugConfig.paper())
    x, _, idx = _epoch(split, 10, epoch=3)
    assert torch.equal(idx, order)
    want = Preprocess("per_image")(apply_aug(to_float(split.x[order]), params))
    torch.testing.assert_close(x, want)
    plain, _, pidx = _epoch(split, 64, epoch=0, aug=None, shuffle=False)
    assert torch.equal(pidx, torch.arange(50))
    torch.testing.assert_close(plain, Preprocess("per_image")(to_float(split.x)))
    batches = list(iterate(split, 16, seed=0, epoch=0, drop_last=True))
    assert [len(b[0]) for b in batches] == [16, 16, 16]
    with pytest.raises(UserError, match="batch_size 0"):
        next(iterate(split, 0, seed=0, epoch=0))


def test_device_split_from_read_only_float_arrays():
    s = make_synthetic_sep(20, 4, 4, seed=0)
    s.train_x.flags.writeable = False  # as Ray's object store hands them out
    split = DeviceSplit.from_splits(s, "train")
    assert split.x.dtype == torch.float32 and len(split) == 20
    x, y, _ = next(iterate(split, 20, seed=0, epoch=0, aug=AugConfig(crop_min=32), shuffle=False))
    assert torch.equal(y, torch.from_numpy(s.train_y))
    assert x.shape == (20, 3, 32, 32)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_views_are_the_same_on_cpu_and_cuda():
    cpu, gpu = _uint8_split(), _uint8_split(device="cuda")
    cfg = AugConfig.paper_hsv()
    xc, yc, ic = _epoch(cpu, 16, epoch=2, aug=cfg)
    xg, yg, ig = _epoch(gpu, 16, epoch=2, aug=cfg)
    assert xg.device.type == "cuda" and torch.equal(ic, ig.cpu()) and torch.equal(yc, yg.cpu())
    torch.testing.assert_close(xg.cpu(), xc, atol=1e-4, rtol=1e-4)
