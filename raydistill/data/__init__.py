"""The data layer: sources → decoded uint8 arrays (cached) → splits → device batches + augmentation.

- `sources`: `load_dataset`, `make_synthetic_sep`, `Splits`, the decode cache;
- `augment`: `AugConfig`, `HSVJitter`, `sample_aug`, `apply_aug` (per-view parameters);
- `batches`: `DeviceSplit`, `iterate`, `epoch_plan`, `Preprocess`, `dataset_stats`, `to_float`.
"""

from __future__ import annotations

from raydistill.data.augment import (
    AUG_KEYS,
    AugConfig,
    HSVJitter,
    apply_aug,
    hsv_to_rgb,
    identity_params,
    rgb_to_hsv,
    sample_aug,
)
from raydistill.data.batches import (
    DeviceSplit,
    Preprocess,
    dataset_stats,
    epoch_generator,
    epoch_plan,
    iterate,
    to_float,
)
from raydistill.data.sources import (
    CIFAR10_CLASSES,
    DECODE_STATS,
    SYNTHETIC_CLASSES,
    Splits,
    cache_root,
    load_dataset,
    make_synthetic_sep,
    synthetic_sep_labels,
)

__all__ = [
    "AUG_KEYS",
    "CIFAR10_CLASSES",
    "DECODE_STATS",
    "SYNTHETIC_CLASSES",
    "AugConfig",
    "DeviceSplit",
    "HSVJitter",
    "Preprocess",
    "Splits",
    "apply_aug",
    "cache_root",
    "dataset_stats",
    "epoch_generator",
    "epoch_plan",
    "hsv_to_rgb",
    "identity_params",
    "iterate",
    "load_dataset",
    "make_synthetic_sep",
    "rgb_to_hsv",
    "sample_aug",
    "synthetic_sep_labels",
    "to_float",
]
