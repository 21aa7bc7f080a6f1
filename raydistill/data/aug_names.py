"""The augmentation vocabulary: the names a train config, a transfer set, a scale file and the
CLI accept (`AugName`, `TransferAugName`). Torch-free, so the CLI and the scale files type their
options with it without importing torch; `raydistill.data.augment.named_aug` turns a name into
an `AugConfig`.
"""

from __future__ import annotations

from typing import Literal, get_args

# paper: mirror + S×S crop, S in [¾·side, side], resized back (Urban et al.); paper_hsv: the
# same plus HSV jitter; flip_translate: mirror + up to side/8 px translation (4 px at 32 px,
# the usual CIFAR teacher recipe); mirror: mirror only; none: the images themselves.
AugName = Literal["paper", "paper_hsv", "flip_translate", "mirror", "none"]
# A transfer set may also ask for "auto": the dataset's default (`transfer_aug.default_aug`).
TransferAugName = Literal["auto", AugName]

AUG_NAMES: tuple[str, ...] = get_args(AugName)
TRANSFER_AUG_NAMES: tuple[str, ...] = get_args(TransferAugName)
