"""synthetic-sep (Li, Zhang & Arora, ICLR 2021): Gaussian images labelled by which of the first
two channels has the larger L2 norm; the source string "synthetic-sep[:N[:S[:C]]]". numpy only.
"""

from __future__ import annotations

import re

import numpy as np

from raydistill.core.errors import UserError
from raydistill.data.splits import Splits, settings_fingerprint, split_settings

SYNTHETIC_CLASSES = ("ch1>=ch0", "ch0>ch1")
SYNTHETIC_DEFAULT_N = 10_000
SYNTHETIC_DEFAULT_SIZE, SYNTHETIC_DEFAULT_CHANNELS = 32, 3  # 3×32×32, CIFAR-10's shape


def synthetic_n(text: str) -> int:
    """N of a "synthetic-sep[:N[:S[:C]]]" source string."""
    return synthetic_args(text)[0]


def synthetic_args(text: str) -> tuple[int, int, int]:
    """(N, S, C) of "synthetic-sep[:N[:S[:C]]]": N training images of C×S×S (C ≥ 2)."""
    m = re.fullmatch(r"synthetic-sep(?::(\d+)(?::(\d+)(?::(\d+))?)?)?", text)
    defaults = (SYNTHETIC_DEFAULT_N, SYNTHETIC_DEFAULT_SIZE, SYNTHETIC_DEFAULT_CHANNELS)
    values = [int(g) if g else d for g, d in zip(m.groups(), defaults, strict=True)] if m else []
    if not m or values[0] < 1 or values[1] < 1 or values[2] < 2:
        raise UserError(
            f"dataset {text!r} is invalid; expected 'synthetic-sep' or 'synthetic-sep:N' (N ≥ 1), "
            "optionally 'synthetic-sep:N:S' / 'synthetic-sep:N:S:C' (S ≥ 1 image side, C ≥ 2 "
            "channels)"
        )
    return values[0], values[1], values[2]


def make_synthetic_sep(
    n_train: int,
    n_val: int,
    n_test: int,
    seed: int = 0,
    *,
    size: int = SYNTHETIC_DEFAULT_SIZE,
    channels: int = SYNTHETIC_DEFAULT_CHANNELS,
) -> Splits:
    """Li, Zhang & Arora (ICLR 2021): x ~ N(0, 1)^(C×S×S) float32; y = 1 iff ‖x[0]‖₂ > ‖x[1]‖₂.

    `size` S (image side) and `channels` C ≥ 2 set the input dimension d = C·S²; channels past
    the first two carry noise only. Each split has its own random stream (spawned from `seed`),
    so the test set does not depend on n_train. The default 3×32×32 keeps its fingerprint.
    """
    sizes = {"train": n_train, "val": n_val, "test": n_test}
    bad = {k: v for k, v in sizes.items() if int(v) < 0}
    if bad:
        raise UserError(f"synthetic-sep sizes must be ≥ 0, got {bad}")
    if int(size) < 1 or int(channels) < 2:
        raise UserError(f"synthetic-sep needs size ≥ 1 and channels ≥ 2, got {size}, {channels}")
    shape = (int(channels), int(size), int(size))
    streams = np.random.SeedSequence([int(seed), 0x5E9]).spawn(3)
    arrays = {}
    for (part, n), ss in zip(sizes.items(), streams, strict=True):
        x = np.random.default_rng(ss).standard_normal((int(n), *shape), dtype=np.float32)
        arrays[f"{part}_x"] = x
        arrays[f"{part}_y"] = synthetic_sep_labels(x)
    settings = {"dataset": "synthetic-sep", "v": 1, **sizes, "seed": int(seed)}
    if shape != (SYNTHETIC_DEFAULT_CHANNELS, SYNTHETIC_DEFAULT_SIZE, SYNTHETIC_DEFAULT_SIZE):
        settings["shape"] = list(shape)  # only when not the default: old fingerprints hold
    data = f"synthetic-sep:{n_train}:{shape[1]}:{shape[0]}"  # its test size follows val_size
    return Splits(
        name="synthetic-sep",
        fingerprint=settings_fingerprint(settings),
        settings=split_settings(data, n_val, seed, None),
        classes=SYNTHETIC_CLASSES,
        **arrays,
    )


def synthetic_sep_labels(x: np.ndarray) -> np.ndarray:
    """The synthetic-sep rule on (N, C≥2, H, W): 1 where channel 0's L2 norm exceeds channel 1's."""
    sq = np.square(x[:, :2], dtype=np.float64).reshape(len(x), 2, -1).sum(-1)
    return (sq[:, 0] > sq[:, 1]).astype(np.int64)
