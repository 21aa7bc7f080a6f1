"""The data layer: sources → decoded uint8 arrays (cached) → splits → device batches + augmentation.

- `sources`: `load_dataset`, `check_source`, `fetch_cifar10` (recognising a source, the path
  from source to splits; numpy only: importing it does not import torch, so the CLI can check
  `--data` cheaply);
- `readers` (one reader per format: Parquet, cifar-10-batches-py, ImageFolder), `decode`
  (JPEG / PNG bytes → arrays), `cache` (the decode cache), `splits` (`Splits`, the seeded
  validation split, subsets, fingerprints), `synthetic` (synthetic-sep);
- `augment`: `AugConfig`, `HSVJitter`, `named_aug`, `sample_aug`, `apply_aug` (per-view
  parameters);
- `batches`: `DeviceSplit`, `iterate`, `epoch_plan`, `Preprocess`, `dataset_stats`, `to_float`;
- `views`: `ViewGather` (mirror + translate views gathered straight from the image table, the
  CPU's fast path), `replay`: `replay_batch`, `replay_epoch` (a transfer set's views).

Names are loaded from their module on first use (PEP 562), so `raydistill.data.sources` can be
imported without torch.
"""

from __future__ import annotations

from typing import Any

_MODULES = {
    "augment": (
        "AUG_KEYS", "AugConfig", "HSVJitter", "apply_aug", "hsv_to_rgb", "identity_params",
        "named_aug", "rgb_to_hsv", "sample_aug",
    ),
    "batches": (
        "DeviceSplit", "Preprocess", "dataset_stats", "epoch_generator", "epoch_plan", "iterate",
        "to_float",
    ),
    "cache": ("DECODE_STATS", "cache_root"),
    "readers": ("CIFAR10_CLASSES",),
    "sources": ("check_source", "load_dataset"),
    "splits": ("Splits",),
    "synthetic": ("SYNTHETIC_CLASSES", "make_synthetic_sep", "synthetic_sep_labels"),
}  # fmt: skip
_WHERE = {name: module for module, names in _MODULES.items() for name in names}


def __getattr__(name: str) -> Any:
    if name not in _WHERE:
        raise AttributeError(f"module 'raydistill.data' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(f"raydistill.data.{_WHERE[name]}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_WHERE])


__all__ = sorted(_WHERE)
