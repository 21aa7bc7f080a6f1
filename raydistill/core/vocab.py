"""The project's vocabularies: every closed set of names that a config file, a scale file or
the CLI accepts, each a `Literal` with its tuple of values. A leaf module like `errors`
(typing only, no torch, no Ray), so the CLI and the scale files type their options with the
same definitions the code checks against; the modules that give the names meaning import them
from here (`losses`, `data.augment.named_aug`, `data.batches.Preprocess`, `spaces_optuna`,
`search.settings`, `results`, `tracking`).
"""

from __future__ import annotations

from typing import Literal, get_args

# Student losses: L2 on the teacher's logits (the paper's), Hinton's KD, 0/1 labels.
Loss = Literal["l2_logits", "kd", "hard"]

# Augmentations. paper: mirror + S×S crop, S in [¾·side, side], resized back (Urban et al.);
# paper_hsv: the same plus HSV jitter; flip_translate: mirror + up to side/8 px translation
# (4 px at 32 px, the usual CIFAR teacher recipe); mirror: mirror only; none: the images.
AugName = Literal["paper", "paper_hsv", "flip_translate", "mirror", "none"]
# A transfer set may also ask for "auto": the teachers' own (`transfer.aug.resolve_aug_name`).
TransferAugName = Literal["auto", AugName]

# Input preprocessing. per_image: each image standardised by its own mean and std (the
# paper's); dataset: by the training split's per-channel mean and std; none: [0, 1] pixels.
PreprocessName = Literal["per_image", "dataset", "none"]

# Search: Optuna samplers and trial schedulers.
SearcherName = Literal["tpe", "gp", "random"]
# How a search spreads its trials over its cells (raydistill.search.allocation).
AllocationName = Literal["uniform", "adaptive"]
SchedulerName = Literal["asha", "none"]

# A trial's status in the trials table (`results` holds the rule that reads it).
Status = Literal["finished", "stopped", "diverged", "error", "running"]

# Mixed precision of the training loop: auto = bf16 autocast on CUDA, float32 elsewhere; bf16 =
# bf16 autocast on any device (the CPU too: how CI runs the CUDA path); off = float32.
AmpMode = Literal["auto", "bf16", "off"]

# Weights & Biases: off is the null tracker.
WandbMode = Literal["online", "offline", "off"]

LOSSES: tuple[str, ...] = get_args(Loss)
AUG_NAMES: tuple[str, ...] = get_args(AugName)
TRANSFER_AUG_NAMES: tuple[str, ...] = get_args(TransferAugName)
PREPROCESS_MODES: tuple[str, ...] = get_args(PreprocessName)
SEARCHERS: tuple[str, ...] = get_args(SearcherName)
ALLOCATIONS: tuple[str, ...] = get_args(AllocationName)
SCHEDULERS: tuple[str, ...] = get_args(SchedulerName)
STATUSES: tuple[str, ...] = get_args(Status)
WANDB_MODES: tuple[str, ...] = get_args(WandbMode)
AMP_MODES: tuple[str, ...] = get_args(AmpMode)
