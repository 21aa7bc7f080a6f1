"""The transfer set's augmentation by name (`vocab.TransferAugName`: "auto" or one of
`named_aug`'s), the dataset's default ("auto"), their checks against a dataset, and which parts
of an augmentation are not the identity (`aug_parts`). Re-exported by `raydistill.distill.transfer.writer`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from raydistill.core.errors import UserError
from raydistill.core.vocab import TRANSFER_AUG_NAMES
from raydistill.data import AugConfig
from raydistill.data.augment import named_aug

if TYPE_CHECKING:
    from raydistill.data import Splits


def default_aug(splits: Splits) -> AugConfig:
    """The transfer set's augmentation for a dataset (`resolve_aug_name` of "auto")."""
    return transfer_aug("auto", splits)


def resolve_aug_name(name: str, splits: Splits) -> str:
    """The named augmentation "auto" stands for on this dataset: the paper's (mirror, 24–32 px
    crops resized, HSV jitter) for colour images, without the jitter for grey or multispectral
    ones; mirror only for non-image float data (`synthetic-sep`): its features are N(0, 1), not
    colours in [0, 1], and a crop would change what they mean."""
    if name != "auto":
        return name
    if splits.train_x.dtype == np.uint8:
        return "paper_hsv" if splits.image_shape[0] == 3 else "paper"
    return "mirror"


def transfer_aug(name: str, splits: Splits) -> AugConfig:
    """A transfer set's augmentation by name (`vocab.TransferAugName`): "auto"
    (`resolve_aug_name`) or one of `named_aug`'s, sized to the dataset's images."""
    if name not in TRANSFER_AUG_NAMES:
        raise UserError(
            f"transfer augmentation {name!r} is unknown; valid: {', '.join(TRANSFER_AUG_NAMES)}"
        )
    return named_aug(resolve_aug_name(name, splits), int(min(splits.image_shape[1:])))


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
