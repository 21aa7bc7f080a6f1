"""Augmentation as data: per-view parameters drawn on the CPU, applied vectorised on any device.

A *view* is one augmented image. `sample_aug(n, generator, cfg)` draws the parameters of n
views on the CPU (so a seed gives the same views on every device); `apply_aug(x, params)`
applies them to a float batch (B, C, H, W) on x's device with no per-sample Python. The
transfer set stores these parameters per view and replays them, so the key set `AUG_KEYS` is
fixed: every key is present even when its transform is off (then it holds the identity).

Parameters per view (all (n,) CPU tensors):

| key | dtype | meaning | identity |
| --- | --- | --- | --- |
| flip | int64 | 1: mirror left-right | 0 |
| crop | int64 | side S of the square crop, in pixels (≥ image side: whole image) | 32 |
| crop_x, crop_y | float32 | crop position in [0, 1): offset = floor(u·(W − S + 1)) px | 0 |
| tx, ty | int64 | translation in pixels (right, down), zero fill | 0 |
| hue | float32 | hue shift dh, added mod 1 | 0 |
| sat_scale, sat_shift | float32 | s' = clamp(s·sat_scale + sat_shift, 0, 1) | 1, 0 |
| val_scale, val_shift | float32 | v' = clamp(v·val_scale + val_shift, 0, 1) | 1, 0 |

Order of application: HSV jitter (on RGB in [0, 1]), then one batched `F.grid_sample`
(bilinear, align_corners=False) with a per-view affine `aug_theta` doing crop → resize back to
H×W → mirror → translate (`aug_grid` equals `F.affine_grid(theta)`, built per axis since theta
is diagonal: 0.1 ms instead of ~1 ms for 128 views on 2 CPU cores). Sampling coordinates are clamped to the crop's pixel centres, so a crop-resize
equals `F.interpolate(crop, (H, W), mode="bilinear", align_corners=False)` (edge pixels
replicate; the image border is never blended with zeros); pixels translated in from outside
the frame are 0.

Draw order in `sample_aug` is flip, crop, crop position, translation, HSV, so turning HSV on
(`AugConfig.paper_hsv()`) leaves the geometric parameters of the same generator state unchanged.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields
from typing import Any

import torch
import torch.nn.functional as F

from raydistill.core.errors import UserError
from raydistill.core.vocab import AUG_NAMES

GEOMETRIC_KEYS = ("flip", "crop", "crop_x", "crop_y", "tx", "ty")
COLOR_KEYS = ("hue", "sat_scale", "sat_shift", "val_scale", "val_shift")
AUG_KEYS = GEOMETRIC_KEYS + COLOR_KEYS
INT_KEYS = frozenset({"flip", "crop", "tx", "ty"})
IDENTITY = {"flip": 0, "crop": 32, "crop_x": 0.0, "crop_y": 0.0, "tx": 0, "ty": 0, "hue": 0.0}
IDENTITY.update({"sat_scale": 1.0, "sat_shift": 0.0, "val_scale": 1.0, "val_shift": 0.0})


@dataclass(frozen=True)
class HSVJitter:
    """Per-view HSV jitter ranges: dh ~ U(−dh, dh); sat_scale ~ U(1 − a_s, 1 + a_s),
    sat_shift ~ U(−ds, ds); val_scale ~ U(1 − a_v, 1 + a_v), val_shift ~ U(−dv, dv).
    The defaults are the project's frozen settings (Dh, Ds, Dv, As, Av)."""

    dh: float = 0.06
    ds: float = 0.26
    dv: float = 0.20
    a_s: float = 0.21
    a_v: float = 0.13

    def __post_init__(self) -> None:
        bad = {
            f.name: getattr(self, f.name)
            for f in fields(self)
            if not 0 <= getattr(self, f.name) <= 1
        }
        if bad:
            raise UserError(f"HSV jitter ranges {bad} are invalid; each must be in [0, 1]")


@dataclass(frozen=True)
class AugConfig:
    """Which augmentations to draw: mirror, S×S crop with S uniform in crop_min..crop_max
    resized back (the paper's), integer translation up to `translate` px, HSV jitter."""

    mirror: bool = True
    crop_min: int = 24
    crop_max: int = 32
    translate: int = 0
    hsv: HSVJitter | None = None

    def __post_init__(self) -> None:
        if not 1 <= self.crop_min <= self.crop_max:
            raise UserError(
                f"augmentation crop_min={self.crop_min}, crop_max={self.crop_max} is invalid; "
                "need 1 ≤ crop_min ≤ crop_max"
            )
        if self.translate < 0:
            raise UserError(
                f"augmentation translate={self.translate} is invalid; must be ≥ 0 pixels"
            )

    @classmethod
    def paper(cls) -> AugConfig:
        """Urban et al.: random mirror and a random 24..32 px square crop resized to 32×32."""
        return named_aug("paper", 32)

    @classmethod
    def paper_hsv(cls) -> AugConfig:
        """The paper's augmentation plus HSV jitter with the frozen settings (for transfer sets)."""
        return named_aug("paper_hsv", 32)

    @classmethod
    def none(cls) -> AugConfig:
        """No augmentation (every view is the image itself)."""
        return named_aug("none", 32)

    def to_dict(self) -> dict[str, Any]:
        """JSON-able dict (for Parquet metadata and checkpoints)."""
        return asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> AugConfig:
        """Inverse of `to_dict`; unknown keys are a UserError."""
        known = {f.name for f in fields(cls)}
        extra = sorted(set(d) - known)
        if extra:
            raise UserError(f"augmentation keys {extra} are unknown; valid: {sorted(known)}")
        hsv = d.get("hsv")
        if isinstance(hsv, Mapping):
            extra = sorted(set(hsv) - {f.name for f in fields(HSVJitter)})
            if extra:
                raise UserError(f"HSV jitter keys {extra} are unknown; valid: dh, ds, dv, a_s, a_v")
            hsv = HSVJitter(**hsv)
        return cls(**{**d, "hsv": hsv})


def named_aug(name: str, side: int) -> AugConfig:
    """The augmentation called `name` (`vocab.AugName`) for images `side` px square:
    the one table behind a train config's `augment`, a transfer set's `aug` and the CLI's."""
    lo = max(1, round(side * 0.75))  # the paper's smallest crop: 24 of 32 px
    whole = {"crop_min": side, "crop_max": side}
    named = {
        "paper": lambda: AugConfig(mirror=True, crop_min=lo, crop_max=side),
        "paper_hsv": lambda: AugConfig(mirror=True, crop_min=lo, crop_max=side, hsv=HSVJitter()),
        "flip_translate": lambda: AugConfig(mirror=True, translate=max(1, side // 8), **whole),
        "mirror": lambda: AugConfig(mirror=True, **whole),
        "none": lambda: AugConfig(mirror=False, **whole),
    }
    if name not in named:
        raise UserError(f"augmentation {name!r} is unknown; valid: {', '.join(AUG_NAMES)}")
    return named[name]()


def _uniform(n: int, g: torch.Generator, lo: float, hi: float) -> torch.Tensor:
    return torch.rand(n, generator=g) * (hi - lo) + lo


def sample_aug(n: int, generator: torch.Generator, cfg: AugConfig) -> dict[str, torch.Tensor]:
    """Parameters of n views, drawn on the CPU from `generator` (see the module's table)."""
    g, p = generator, {}
    zeros_i = torch.zeros(n, dtype=torch.int64)
    p["flip"] = torch.randint(0, 2, (n,), generator=g) if cfg.mirror else zeros_i
    p["crop"] = torch.randint(cfg.crop_min, cfg.crop_max + 1, (n,), generator=g)
    p["crop_x"] = torch.rand(n, generator=g)
    p["crop_y"] = torch.rand(n, generator=g)
    t = cfg.translate
    p["tx"] = torch.randint(-t, t + 1, (n,), generator=g) if t else zeros_i.clone()
    p["ty"] = torch.randint(-t, t + 1, (n,), generator=g) if t else zeros_i.clone()
    h = cfg.hsv
    if h is None:
        for k in COLOR_KEYS:
            p[k] = torch.full((n,), float(IDENTITY[k]))
    else:
        p["hue"] = _uniform(n, g, -h.dh, h.dh)
        p["sat_scale"] = _uniform(n, g, 1 - h.a_s, 1 + h.a_s)
        p["sat_shift"] = _uniform(n, g, -h.ds, h.ds)
        p["val_scale"] = _uniform(n, g, 1 - h.a_v, 1 + h.a_v)
        p["val_shift"] = _uniform(n, g, -h.dv, h.dv)
    return {k: p[k] for k in AUG_KEYS}


def identity_params(n: int) -> dict[str, torch.Tensor]:
    """Parameters of n views that leave 32×32 (or smaller) images unchanged."""
    return {
        k: torch.full((n,), IDENTITY[k], dtype=torch.int64 if k in INT_KEYS else torch.float32)
        for k in AUG_KEYS
    }


def aug_parts(params: Mapping[str, torch.Tensor], height: int, width: int) -> tuple[bool, bool]:
    """(geometric, color): whether any view changes geometry / colour. Syncs if params are on a
    GPU; `iterate` calls it once per epoch on the CPU parameters."""
    geometric = bool(
        params["flip"].any()
        or (params["crop"] < min(height, width)).any()
        or params["tx"].any()
        or params["ty"].any()
    )
    color = any(bool((params[k] != IDENTITY[k]).any()) for k in COLOR_KEYS)
    return geometric, color


def apply_aug(
    x: torch.Tensor,
    params: Mapping[str, torch.Tensor],
    *,
    geometric: bool | None = None,
    color: bool | None = None,
) -> torch.Tensor:
    """Augment a float batch (B, C, H, W) with per-view `params` (each (B,), any device).

    `x` is RGB in [0, 1] when HSV jitter is on; geometric transforms accept any floats
    (synthetic-sep's raw N(0, 1) inputs). `geometric` / `color` skip the parts known to be
    identity; None works it out from `params`.
    """
    missing = [k for k in AUG_KEYS if k not in params]
    if missing or x.ndim != 4:
        raise ValueError(
            f"apply_aug needs x (B, C, H, W) and params with keys {AUG_KEYS}; missing {missing}"
        )
    p = {k: params[k].to(x.device, non_blocking=True) for k in AUG_KEYS}
    if geometric is None or color is None:
        g_auto, c_auto = aug_parts(p, x.shape[2], x.shape[3])
        geometric = g_auto if geometric is None else geometric
        color = c_auto if color is None else color
    if color:
        x = hsv_jitter(x, p)
    if geometric:
        x = shift_flip(x, p) if whole_pixels(x, p) else _warp(x, p)
    return x


def whole_pixels(x: torch.Tensor, p: Mapping[str, torch.Tensor]) -> bool:
    """Whether every view of x is a mirror and / or a whole-pixel shift (no crop to resize), so
    `shift_flip` makes it exactly. On the CPU only: on a GPU the check would be a host sync
    per batch, and grid_sample there is cheap."""
    return x.device.type == "cpu" and bool((p["crop"] >= max(x.shape[2:])).all())


def shift_flip(x: torch.Tensor, p: Mapping[str, torch.Tensor]) -> torch.Tensor:
    """Mirror, then translate by (tx, ty) px with zero fill, as one gather: the pixels `_warp`
    samples for such views, bit for bit at power-of-two sides such as CIFAR's 32 (its bilinear
    weights are exactly 0 and 1 there; elsewhere they are off by float rounding, ≤ 1e-5), in
    about half its time on one CPU core (the flip_translate transfer set of the tiny study)."""
    b, c, h, w = x.shape
    col = torch.arange(w, device=x.device)[None, :] - p["tx"][:, None]  # (B, W) pre-shift
    row = torch.arange(h, device=x.device)[None, :] - p["ty"][:, None]  # (B, H)
    keep = (((row >= 0) & (row < h))[:, :, None] & ((col >= 0) & (col < w))[:, None, :]).view(
        b, 1, h * w
    )
    col = torch.where(p["flip"][:, None].bool(), w - 1 - col, col).clamp_(0, w - 1)
    src = (row.clamp_(0, h - 1)[:, :, None] * w + col[:, None, :]).view(b, 1, h * w)
    out = torch.gather(x.reshape(b, c, h * w), 2, src.expand(b, c, h * w))
    return out.masked_fill_(~keep, 0).view(b, c, h, w)


def _crop_box(
    p: Mapping[str, torch.Tensor], size: int, axis: str, dtype
) -> tuple[torch.Tensor, ...]:
    """Per view along one axis: crop side S (px) and offset o (px), as float tensors."""
    s = p["crop"].clamp(1, size)
    o = torch.floor(p[f"crop_{axis}"].to(dtype) * (size - s + 1)).clamp(min=0)
    o = torch.minimum(o, (size - s).to(dtype))
    return s.to(dtype), o


def aug_theta(
    params: Mapping[str, torch.Tensor], height: int, width: int, dtype=torch.float32
) -> torch.Tensor:
    """(B, 2, 3) affine matrices for `F.affine_grid` (align_corners=False): output coords →
    input coords for crop → resize → mirror → translate. Normalised coordinates: pixel i spans
    [-1 + 2i/W, -1 + 2(i+1)/W]."""
    b = len(params["crop"])
    sw, ow = _crop_box(params, width, "x", dtype)
    sh, oh = _crop_box(params, height, "y", dtype)
    ax = sw / width * (1.0 - 2.0 * params["flip"].to(dtype))  # scale; mirror flips x
    ay = sh / height
    cx, cy = -1 + (2 * ow + sw) / width, -1 + (2 * oh + sh) / height  # crop centres
    theta = torch.zeros(b, 2, 3, dtype=dtype, device=params["crop"].device)
    theta[:, 0, 0], theta[:, 0, 2] = ax, cx - ax * 2 * params["tx"].to(dtype) / width
    theta[:, 1, 1], theta[:, 1, 2] = ay, cy - ay * 2 * params["ty"].to(dtype) / height
    return theta


def _axis_coords(p, theta, size: int, axis: str, dtype) -> torch.Tensor:
    """(B, size) input coordinates along one axis, clamped to the crop, 4.0 where the
    translation brings in pixels from outside the frame (grid_sample then reads zeros)."""
    i = 0 if axis == "x" else 1
    base = (2 * torch.arange(size, dtype=dtype, device=theta.device) + 1) / size - 1  # centres
    coords = theta[:, i, i, None] * base + theta[:, i, 2, None]  # as F.affine_grid computes
    s, o = _crop_box(p, size, axis, dtype)
    lo, hi = -1 + (2 * o + 1) / size, -1 + (2 * (o + s) - 1) / size  # outermost crop centres
    coords = torch.clamp(coords, lo[:, None], hi[:, None])  # edge replicate, as F.interpolate
    shift = p["tx" if axis == "x" else "ty"].to(dtype)[:, None]
    src = torch.arange(size, dtype=dtype, device=theta.device) - shift  # pre-translation index
    return torch.where((src >= 0) & (src < size), coords, 4.0)


def aug_grid(
    params: Mapping[str, torch.Tensor], height: int, width: int, dtype=torch.float32
) -> torch.Tensor:
    """(B, H, W, 2) sampling grid of the views. The transform is axis-aligned (theta is
    diagonal), so the grid F.affine_grid(theta) would give is an outer product: built from
    per-axis coordinates in O(B·(H + W)), then clamped and masked per axis."""
    theta = aug_theta(params, height, width, dtype)
    gx = _axis_coords(params, theta, width, "x", dtype)
    gy = _axis_coords(params, theta, height, "y", dtype)
    grid = torch.empty(len(theta), height, width, 2, dtype=dtype, device=theta.device)
    grid[..., 0] = gx[:, None, :]  # broadcast copies: torch.stack of expanded views is ~100× slower
    grid[..., 1] = gy[:, :, None]
    return grid


def _warp(x: torch.Tensor, p: Mapping[str, torch.Tensor]) -> torch.Tensor:
    """Crop → resize → mirror → translate of the whole batch in one bilinear grid_sample."""
    dt = x.dtype if x.is_floating_point() else torch.float32
    grid = aug_grid(p, x.shape[2], x.shape[3], dt)
    return F.grid_sample(x.to(dt), grid, mode="bilinear", padding_mode="zeros", align_corners=False)


def rgb_to_hsv(x: torch.Tensor) -> torch.Tensor:
    """(…, 3, H, W) RGB in [0, 1] → HSV, each in [0, 1] (hue as a fraction of a turn)."""
    r, g, b = x.unbind(-3)
    maxc, minc = x.amax(-3), x.amin(-3)
    delta = maxc - minc
    gray = delta == 0
    s = delta / torch.where(maxc > 0, maxc, torch.ones_like(maxc))
    d = torch.where(gray, torch.ones_like(delta), delta)
    rc, gc, bc = (maxc - r) / d, (maxc - g) / d, (maxc - b) / d
    is_r = maxc == r
    is_g = (maxc == g) & ~is_r
    h = torch.where(is_r, bc - gc, torch.where(is_g, 2.0 + rc - bc, 4.0 + gc - rc))
    h = torch.where(gray, torch.zeros_like(h), h)
    h = torch.remainder(h / 6.0, 1.0)
    return torch.stack((h, s, maxc), dim=-3)


def hsv_to_rgb(hsv: torch.Tensor) -> torch.Tensor:
    """Inverse of `rgb_to_hsv`: f(n) = v − v·s·clamp(min(k, 4 − k), 0, 1), k = (n + 6h) mod 6,
    with (R, G, B) = (f(5), f(3), f(1))."""
    h, s, v = hsv.unbind(-3)
    n = torch.tensor([5.0, 3.0, 1.0], dtype=hsv.dtype, device=hsv.device).view(3, 1, 1)
    k = torch.remainder(n + 6.0 * h.unsqueeze(-3), 6.0)
    ramp = torch.clamp(torch.minimum(k, 4.0 - k), 0.0, 1.0)
    return v.unsqueeze(-3) * (1.0 - s.unsqueeze(-3) * ramp)


def hsv_jitter(x: torch.Tensor, p: Mapping[str, torch.Tensor]) -> torch.Tensor:
    """Per view: h' = (h + hue) mod 1, s' = clamp(s·sat_scale + sat_shift, 0, 1),
    v' = clamp(v·val_scale + val_shift, 0, 1); x is RGB (B, 3, H, W) in [0, 1]."""
    if x.shape[1] != 3:
        raise ValueError(f"HSV jitter needs RGB images (B, 3, H, W), got {tuple(x.shape)}")
    h, s, v = rgb_to_hsv(x.clamp(0.0, 1.0)).unbind(1)

    def col(k: str) -> torch.Tensor:
        return p[k].to(device=x.device, dtype=x.dtype).view(-1, 1, 1)

    h = torch.remainder(h + col("hue"), 1.0)
    s = torch.clamp(s * col("sat_scale") + col("sat_shift"), 0.0, 1.0)
    v = torch.clamp(v * col("val_scale") + col("val_shift"), 0.0, 1.0)
    return hsv_to_rgb(torch.stack((h, s, v), dim=1))
