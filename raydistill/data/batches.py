"""Device-resident batches: tensors held on the training device, batches drawn by index.

`DeviceSplit` keeps one split's images and labels on the device (uint8 images stay uint8 there,
4× smaller; a batch becomes float /255 after indexing). `iterate` yields `(x, y, idx)`: the
epoch's permutation and the views' augmentation parameters both come from CPU generators
seeded by (seed, epoch) (`epoch_plan`), so the same seed gives the same batches and views on
every device, and view p of an epoch does not depend on the batch size.
`Preprocess` standardises float batches per image (the paper) or with dataset statistics.

CPU note: a batch is a few dozen small tensor ops (~3 ms for 128 CIFAR images on one idle
core). On a CPU shared by more runnable processes than cores, `torch.set_num_threads(2)` made
each small op wait for both OpenMP threads (measured: 1.1k img/s with 2 threads vs 16k–49k
img/s with 1 thread, load average ≈ 10 on 2 cores); use one thread per trial there, as Ray's
default OMP_NUM_THREADS = num_cpus does.
"""

from __future__ import annotations

import hashlib
import math
import warnings
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from raydistill.core.errors import UserError
from raydistill.core.vocab import PREPROCESS_MODES
from raydistill.data.augment import AugConfig, apply_aug, aug_parts, sample_aug
from raydistill.data.splits import Splits
from raydistill.data.views import ViewGather


def to_float(x: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
    """uint8 images → float32 in [0, 1]; floating tensors unchanged. `out`: a float32 tensor of
    x's shape to write the result into (floating x is copied there) instead of a new one."""
    if out is None:
        return x if x.is_floating_point() else x.to(torch.float32).div_(255.0)
    if x.is_floating_point():
        return out.copy_(x)
    return out.copy_(x).div_(255.0)  # the same ops; torch.div(x, 255, out=) is ~5× slower


def per_image(x: torch.Tensor) -> torch.Tensor:
    """(x − mean) / max(std, 1/√n) per image of (B, C, H, W) over its n = C·H·W values: the
    one definition, used by training (`Preprocess`) and by the exported module
    (`raydistill.export.inference`). Written out by hand (torch.std_mean over dims is ~10×
    slower on CPU for (128, 3072)), without `len(x)` (torch.export would fix the batch size
    to the example's) and without in-place ops (as fast here: 128×3×32×32, one thread)."""
    flat = x.flatten(1)
    centred = flat - flat.mean(1, keepdim=True)
    std = centred.square().mean(1, keepdim=True).sqrt()
    return (centred / std.clamp(min=1.0 / math.sqrt(flat.shape[1]))).view_as(x)


def per_image_(x: torch.Tensor, scratch: torch.Tensor | None = None) -> torch.Tensor:
    """`per_image` in x's own memory (contiguous x), bit for bit its values: the same
    reductions over the same values, without its three batch-sized temporaries (the training
    loop's batches; `scratch`, a float tensor of x's size, holds the squares)."""
    flat = x.view(len(x), -1)
    flat.sub_(flat.mean(1, keepdim=True))
    squares = torch.empty_like(flat) if scratch is None else scratch.view_as(flat)
    std = torch.square(flat, out=squares).mean(1, keepdim=True).sqrt_()
    flat.div_(std.clamp_(min=1.0 / math.sqrt(flat.shape[1])))
    return x


@dataclass(frozen=True)
class Preprocess:
    """Standardisation of float batches (B, C, H, W), applied after augmentation.

    - "per_image" (Urban et al.): (x − mean(x)) / max(std(x), 1/√(C·H·W)), statistics over all
      of one image's pixels and channels (tf.image.per_image_standardization);
    - "dataset": (x − mean[c]) / std[c] with per-channel `mean` / `std` (see `dataset_stats`);
    - "none": unchanged.
    """

    mode: str = "per_image"
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None
    _consts: dict = field(default_factory=dict, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.mode not in PREPROCESS_MODES:
            raise UserError(
                f"preprocess mode {self.mode!r} is unknown; valid: {list(PREPROCESS_MODES)}"
            )
        if self.mode == "dataset":
            if self.mean is None or self.std is None or len(self.mean) != len(self.std):
                raise UserError(
                    "preprocess mode 'dataset' needs per-channel mean and std of equal length"
                )
            if min(self.std) <= 0:
                raise UserError(f"preprocess std {self.std} is invalid; every entry must be > 0")
            object.__setattr__(self, "mean", tuple(float(m) for m in self.mean))
            object.__setattr__(self, "std", tuple(float(s) for s in self.std))

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if self.mode == "none":
            return x
        if self.mode == "per_image":
            return per_image(x)
        mean, std = self._on(x)
        return (x - mean) / std

    def apply_(self, x: torch.Tensor, scratch: torch.Tensor | None = None) -> torch.Tensor:
        """`self(x)` computed in x's own memory, bit for bit the same values; x must be a
        contiguous float tensor the caller owns. `scratch`: as in `per_image_`."""
        if self.mode == "none":
            return x
        if self.mode == "per_image":
            return per_image_(x, scratch)
        mean, std = self._on(x)
        return x.sub_(mean).div_(std)

    def _on(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """mean / std as (1, C, 1, 1) tensors on x's device, made once per (device, dtype)."""
        key = (x.device, x.dtype)
        if key not in self._consts:
            shape = (1, len(self.mean), 1, 1)
            self._consts[key] = tuple(
                torch.tensor(v, dtype=x.dtype, device=x.device).view(shape)
                for v in (self.mean, self.std)
            )
        return self._consts[key]

    def to_dict(self) -> dict[str, Any]:
        """JSON-able dict."""
        return {"mode": self.mode, "mean": self.mean, "std": self.std}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Preprocess:
        mean, std = d.get("mean"), d.get("std")
        return cls(
            d.get("mode", "per_image"), tuple(mean) if mean else None, tuple(std) if std else None
        )

    @classmethod
    def for_splits(cls, mode: str, splits: Splits) -> Preprocess:
        """`mode` with the train split's statistics filled in when mode is "dataset"."""
        if mode != "dataset":
            return cls(mode)
        mean, std = dataset_stats(splits)
        return cls(mode, mean, std)


def dataset_stats(splits: Splits, chunk: int = 4096) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel (mean, std) of the train split on the scale the model sees (uint8 → /255)."""
    x = splits.train_x
    if len(x) == 0:
        raise UserError(f"dataset {splits.name!r} has an empty train split; no statistics")
    scale = 255.0 if x.dtype == np.uint8 else 1.0
    c = x.shape[1]
    s1, s2 = np.zeros(c), np.zeros(c)
    for i in range(0, len(x), chunk):  # float64 in chunks: no 1 GB temporary for CIFAR-10
        part = x[i : i + chunk].astype(np.float64) / scale
        s1 += part.sum(axis=(0, 2, 3))
        s2 += np.square(part).sum(axis=(0, 2, 3))
    n = x.size / c
    mean = s1 / n
    std = np.sqrt(np.maximum(s2 / n - mean**2, 0.0))
    return tuple(float(m) for m in mean), tuple(float(s) for s in std)


@dataclass(frozen=True, eq=False)
class DeviceSplit:
    """One split resident on a device: x (N, C, H, W) uint8 or float32, y (N,) int64."""

    x: torch.Tensor
    y: torch.Tensor

    @classmethod
    def from_numpy(
        cls, x: np.ndarray, y: np.ndarray, device: str | torch.device = "cpu"
    ) -> DeviceSplit:
        """Move arrays to `device` once. On the CPU the tensors share the arrays' memory (never
        written to), so read-only arrays (Ray's object store, memory maps) are not copied."""
        if len(x) != len(y) or np.ndim(x) != 4:
            raise ValueError(
                f"DeviceSplit needs x (N, C, H, W) and y (N,), got {np.shape(x)} and {np.shape(y)}"
            )
        with warnings.catch_warnings():  # "array is not writable": we only read
            warnings.simplefilter("ignore", UserWarning)
            tx = torch.from_numpy(np.ascontiguousarray(x))
            ty = torch.from_numpy(np.ascontiguousarray(y, dtype=np.int64))
        return cls(tx.to(device), ty.to(device))

    @classmethod
    def from_splits(
        cls, splits: Splits, name: str, device: str | torch.device = "cpu"
    ) -> DeviceSplit:
        """`splits.split(name)` on `device`."""
        return cls.from_numpy(*splits.split(name), device=device)

    def __len__(self) -> int:
        return len(self.y)

    @property
    def device(self) -> torch.device:
        return self.x.device


def epoch_generator(seed: int, epoch: int, stream: str) -> torch.Generator:
    """A CPU generator for one (seed, epoch, stream); streams "perm" and "aug" are independent."""
    digest = hashlib.sha256(f"raydistill:{stream}:{int(seed)}:{int(epoch)}".encode()).digest()
    return torch.Generator().manual_seed(int.from_bytes(digest[:8], "little") & (2**63 - 1))


def epoch_plan(
    n: int, *, seed: int, epoch: int, aug: AugConfig | None, shuffle: bool = True
) -> tuple[torch.Tensor, dict[str, torch.Tensor] | None]:
    """(order, params) of one epoch on the CPU: order (n,) int64 indices into the split
    (a permutation when shuffling); params[k][p] is the augmentation of the view at position p
    (None without augmentation)."""
    order = (
        torch.randperm(n, generator=epoch_generator(seed, epoch, "perm"))
        if shuffle
        else torch.arange(n)
    )
    params = None if aug is None else sample_aug(n, epoch_generator(seed, epoch, "aug"), aug)
    return order, params


def iterate(
    split: DeviceSplit,
    batch_size: int,
    *,
    seed: int,
    epoch: int,
    aug: AugConfig | None = None,
    preprocess: Preprocess | None = None,
    shuffle: bool = True,
    drop_last: bool = False,
) -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
    """Batches `(x, y, idx)` of one epoch, all on the split's device: x float32 (B, C, H, W)
    augmented then preprocessed, y (B,) int64, idx (B,) int64 indices into the split."""
    if batch_size < 1:
        raise UserError(f"batch_size {batch_size} is invalid; must be ≥ 1")
    n = len(split)
    order, params = epoch_plan(n, seed=seed, epoch=epoch, aug=aug, shuffle=shuffle)
    parts = (False, False) if params is None else aug_parts(params, *split.x.shape[2:])
    device = split.device
    order = order.to(device)
    if params is not None and any(parts):
        params = {k: v.to(device) for k, v in params.items()}  # once per epoch, sliced below
    gather = None
    if params is not None and parts[0] and ViewGather.fits(split.x, params, parts[1]):
        gather = ViewGather(split.x)  # mirror + translate views straight from the table
    stop = n - n % batch_size if drop_last else n
    for start in range(0, stop, batch_size):
        idx = order[start : start + batch_size]
        view = {k: v[start : start + batch_size] for k, v in params.items()} if any(parts) else {}
        if gather is not None:
            x = to_float(gather(idx, view))
        else:
            x = to_float(split.x.index_select(0, idx))  # not split.x[idx]: ~50x slower on CPU
            if any(parts):
                x = apply_aug(x, view, geometric=parts[0], color=parts[1])
        if preprocess is not None:
            x = preprocess.apply_(x)  # x is a new tensor of this batch's
        yield x, split.y[idx], idx
