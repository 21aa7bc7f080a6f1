"""The transfer set's augmentation by name (`vocab.TransferAugName`: "auto" or one of
`named_aug`'s), the default ("auto": the teachers' own augmentation), their checks against a
dataset, which parts of an augmentation are not the identity (`aug_parts`), and the rule that
flags views the ensemble labels much worse than the images (`view_gap`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import numpy as np

from raydistill.core.errors import UserError
from raydistill.core.vocab import AUG_NAMES, TRANSFER_AUG_NAMES
from raydistill.data import AugConfig
from raydistill.data.augment import named_aug

if TYPE_CHECKING:
    from raydistill.data import Splits


def teacher_augment(manifest: Mapping[str, Any]) -> str | None:
    """The augmentation a teacher ensemble was trained on (its manifest's `config.train`)."""
    name = ((manifest.get("config") or {}).get("train") or {}).get("augment")
    return str(name) if name in AUG_NAMES else None


def default_aug(splits: Splits, teacher_aug: str | None = None) -> AugConfig:
    """The transfer set's augmentation for a dataset (`resolve_aug_name` of "auto")."""
    return transfer_aug("auto", splits, teacher_aug)


def resolve_aug_name(name: str, splits: Splits, teacher_aug: str | None = None) -> str:
    """The named augmentation "auto" stands for: the teachers' own (`teacher_aug`, what they
    were trained on). They label those views as well as the images themselves, so the
    students learn from targets as good as the ensemble: on the tiny scale's CIFAR-10 ensemble,
    its own flips and shifts were labelled at 81.7 % against 81.5 % on the images, the paper's
    24–32 px crops with HSV jitter at 68.9 %. Without a record of it (a teacher trained
    elsewhere): flip_translate for images, mirror only for non-image float data
    (`synthetic-sep`: its features are N(0, 1), not pixels, and a shift changes them)."""
    if name != "auto":
        return name
    if teacher_aug is not None:
        return teacher_aug
    return "flip_translate" if splits.train_x.dtype == np.uint8 else "mirror"


def transfer_aug(name: str, splits: Splits, teacher_aug: str | None = None) -> AugConfig:
    """A transfer set's augmentation by name (`vocab.TransferAugName`): "auto"
    (`resolve_aug_name`) or one of `named_aug`'s, sized to the dataset's images."""
    if name not in TRANSFER_AUG_NAMES:
        raise UserError(
            f"transfer augmentation {name!r} is unknown; valid: {', '.join(TRANSFER_AUG_NAMES)}"
        )
    resolved = resolve_aug_name(name, splits, teacher_aug)
    return named_aug(resolved, int(min(splits.image_shape[1:])))


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


VIEW_GAP = 0.03  # a few points: the views' labels are worse than the images' beyond noise


def view_gap(image_acc: float, view_acc: float, n: int) -> str | None:
    """A warning when the ensemble labels augmented views much worse than the images (by more
    than `VIEW_GAP` and more than twice the binomial noise of n test images), else None: the
    students would learn the augmentation's errors."""
    noise = 2 * math.sqrt(max(image_acc * (1 - image_acc), 1e-12) / max(n, 1))
    if image_acc - view_acc <= max(VIEW_GAP, noise):
        return None
    return (
        f"the ensemble labels the augmented views at {100 * view_acc:.1f} % against "
        f"{100 * image_acc:.1f} % on the images themselves: the students would learn the "
        "augmentation's errors; the teachers' own augmentation (--aug auto) keeps their accuracy"
    )
