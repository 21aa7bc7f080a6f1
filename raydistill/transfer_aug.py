"""The transfer set's augmentations by name ("auto", "paper", "paper_hsv", "flip_translate",
"mirror", "none"), the dataset's default, their checks against a dataset, and which parts of an
augmentation are not the identity (`aug_parts`). Re-exported by `raydistill.transfer`.
"""

from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING

import numpy as np

from raydistill.data import AugConfig
from raydistill.data.augment import HSVJitter
from raydistill.errors import UserError

if TYPE_CHECKING:
    from raydistill.data import Splits


def default_aug(splits: Splits) -> AugConfig:
    """The transfer set's augmentation for a dataset: the paper's (mirror, 24–32 px crops
    resized, HSV jitter) for images; mirror only for non-image float data (`synthetic-sep`):
    its features are N(0, 1), not colours in [0, 1], and a crop would change what they mean."""
    size = int(min(splits.image_shape[1:]))
    if splits.train_x.dtype == np.uint8 and splits.image_shape[0] == 3:
        return default_aug_for_images(size)
    if splits.train_x.dtype == np.uint8:  # grey or multispectral images: no colour jitter
        return replace(default_aug_for_images(size), hsv=None)
    return AugConfig(mirror=True, crop_min=size, crop_max=size, translate=0, hsv=None)


def resolve_aug_name(name: str, splits: Splits) -> str:
    """The named augmentation "auto" stands for on this dataset (see `default_aug`)."""
    if name != "auto":
        return name
    if splits.train_x.dtype == np.uint8:
        return "paper_hsv" if splits.image_shape[0] == 3 else "paper"
    return "mirror"


def transfer_aug(name: str, splits: Splits) -> AugConfig:
    """A transfer set's augmentation by name: "auto" (`default_aug`), "paper", "paper_hsv",
    "mirror" (mirror only) or "none"."""
    size = int(min(splits.image_shape[1:]))
    named = {
        "auto": lambda: default_aug(splits),
        "paper": lambda: replace(default_aug_for_images(size), hsv=None),
        "paper_hsv": lambda: default_aug_for_images(size),
        # The teachers' own training augmentation (`TrainConfig.augment` "flip_translate"):
        # the ensemble labels views like the ones it learned from.
        "flip_translate": lambda: AugConfig(
            mirror=True, crop_min=size, crop_max=size, translate=max(1, size // 8)
        ),
        "mirror": lambda: AugConfig(mirror=True, crop_min=size, crop_max=size),
        "none": lambda: AugConfig(mirror=False, crop_min=size, crop_max=size),
    }
    if name not in named:
        raise UserError(f"transfer augmentation {name!r} is unknown; valid: {', '.join(named)}")
    return named[name]()


def default_aug_for_images(size: int) -> AugConfig:
    """The paper's: mirror, an S×S crop with S in [¾·size, size] resized back, HSV jitter."""
    lo = max(1, round(size * 0.75))  # 24 of 32 px
    return AugConfig(mirror=True, crop_min=lo, crop_max=size, translate=0, hsv=HSVJitter())


def check_aug(aug: AugConfig, splits: Splits) -> None:
    if aug.hsv is not None and splits.train_x.dtype != np.uint8:
        raise UserError(
            f"HSV jitter needs images (uint8, colours in [0, 1]); dataset {splits.name!r} is "
            f"{splits.train_x.dtype} data: use an augmentation without hsv"
        )
    if aug.hsv is not None and splits.image_shape[0] != 3:
        raise UserError(
            f"HSV jitter needs 3-channel RGB images; dataset {splits.name!r} has "
            f"{splits.image_shape[0]} channel(s): use an augmentation without hsv"
        )


def aug_parts(aug: AugConfig, size: int) -> tuple[bool, bool]:
    """(geometric, color) parts of `aug` that are not the identity on size×size images."""
    return (aug.mirror or aug.crop_min < size or aug.translate > 0, aug.hsv is not None)
