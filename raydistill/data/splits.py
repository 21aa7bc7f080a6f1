"""Splits of a decoded dataset: the `Splits` arrays, the seeded class-balanced validation split
(`split_decoded`), class-balanced training subsets (`subset_train`) and the fingerprint of
content + split settings (16 hex digits). numpy only.

Validation split: `val_size` images of the training pool; by default (None) min(10,000, 20 % of
the pool) — the paper's 10,000 on CIFAR-10, and a usable split on smaller datasets.
`Splits.fingerprint` = sha256 of (content hash, val_size, seed, train_subset).
"""

from __future__ import annotations

import hashlib
import json
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from raydistill.core.errors import UserError

if TYPE_CHECKING:
    from raydistill.data.cache import Decoded

DEFAULT_VAL_SIZE = 10_000
DEFAULT_VAL_SHARE = 0.2


@dataclass(frozen=True, eq=False)
class Splits:
    """Train / validation / test arrays of one dataset. Images NCHW; labels int64.

    `uint8` images for real data, `float32` for `synthetic-sep`. `fingerprint` (16 hex digits)
    covers the decoded content and the split settings (val_size, seed, train_subset).
    """

    name: str
    fingerprint: str
    classes: tuple[str, ...]
    train_x: np.ndarray
    train_y: np.ndarray
    val_x: np.ndarray
    val_y: np.ndarray
    test_x: np.ndarray
    test_y: np.ndarray
    # What the fingerprint covers, readable: {"data": content id, "val_size", "seed",
    # "train_subset"}, so a mismatch can say which setting differs (`split_differences`).
    settings: dict[str, Any] = field(default_factory=dict)

    def split(self, name: str) -> tuple[np.ndarray, np.ndarray]:
        """(x, y) of "train" | "val" | "test"."""
        if name not in ("train", "val", "test"):
            raise UserError(f"split {name!r} is unknown; valid: 'train', 'val', 'test'")
        return getattr(self, f"{name}_x"), getattr(self, f"{name}_y")

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def image_shape(self) -> tuple[int, ...]:
        """(C, H, W) of one image."""
        return tuple(self.train_x.shape[1:])

    def sizes(self) -> dict[str, int]:
        """{"train": n, "val": n, "test": n}."""
        return {s: len(self.split(s)[1]) for s in ("train", "val", "test")}


def default_val_size(pool: int) -> int:
    """The validation split taken from a training pool of `pool` images when none is given."""
    return min(DEFAULT_VAL_SIZE, int(DEFAULT_VAL_SHARE * pool))


def balanced_take(y: np.ndarray, k: int, rng: np.random.Generator) -> np.ndarray:
    """k indices into y, class-balanced (per class ∝ its count, remainders to the largest
    fractional shares, ties to lower labels), random within each class; sorted."""
    classes, counts = np.unique(y, return_counts=True)
    exact = k * counts / counts.sum()
    take = np.floor(exact).astype(np.int64)
    order = np.lexsort((classes, -(exact - take)))  # largest remainder first
    take[order[: k - take.sum()]] += 1
    picked = [
        rng.permutation(np.flatnonzero(y == c))[:t] for c, t in zip(classes, take, strict=True)
    ]
    return np.sort(np.concatenate(picked)) if picked else np.zeros(0, np.int64)


def split_decoded(
    name: str, decoded: Decoded, *, val_size: int, seed: int, train_subset: int | None
) -> Splits:
    """Split the training pool into train / val (class-balanced, seeded); subset train if asked."""
    n = len(decoded.train_y)
    if not 0 <= val_size < n:
        raise UserError(
            f"val_size {val_size} is invalid for {name!r}: must be in 0..{n - 1} (training pool of {n})"
        )
    check_classes(name, len(np.unique(decoded.train_y)), decoded.classes)
    _warn_missing_classes(name, decoded)
    rng = np.random.default_rng([seed, 0x5EED])
    val_idx = balanced_take(decoded.train_y, val_size, rng)
    train_idx = np.setdiff1d(np.arange(n), val_idx)
    settings = {
        "content": decoded.content,
        "val_size": val_size,
        "seed": seed,
        "train_subset": train_subset,
    }
    splits = Splits(
        name=name,
        fingerprint=settings_fingerprint(settings),
        settings=split_settings(decoded.content, val_size, seed, train_subset),
        classes=decoded.classes,
        train_x=np.asarray(decoded.train_x[train_idx]),
        train_y=np.asarray(decoded.train_y[train_idx]),
        val_x=np.asarray(decoded.train_x[val_idx]),
        val_y=np.asarray(decoded.train_y[val_idx]),
        test_x=np.array(decoded.test_x),  # copies out of the cache's memory map
        test_y=np.array(decoded.test_y),
    )
    return subset_train(splits, train_subset, seed, refingerprint=False)


def check_classes(name: str, found: int, classes: tuple[str, ...] | list[str]) -> None:
    """Refuse a dataset whose training images have fewer than 2 classes: a classifier of one
    class learns nothing (its teacher scores 100 %, its logits carry no information)."""
    if found < 2:
        shown = f" ({', '.join(map(repr, classes[:1]))})" if found == 1 and classes else ""
        raise UserError(
            f"dataset {name!r} has {found} class{'' if found == 1 else 'es'}{shown} in its "
            "training images; classification needs at least 2 (an ImageFolder: one folder per "
            "class under train/)"
        )


def _warn_missing_classes(name: str, decoded: Decoded) -> None:
    """A test split without some class makes its accuracy incomparable: say so (not fatal)."""
    missing = sorted(set(range(len(decoded.classes))) - set(np.unique(decoded.test_y).tolist()))
    if missing:
        names = ", ".join(decoded.classes[i] for i in missing[:5]) + (
            " …" if len(missing) > 5 else ""
        )
        warnings.warn(
            f"dataset {name!r}: the test split has no image of {len(missing)} of "
            f"{len(decoded.classes)} classes ({names}); its test accuracy covers the others only",
            UserWarning,
            stacklevel=3,
        )


def subset_train(
    splits: Splits, train_subset: int | None, seed: int, *, refingerprint: bool = True
) -> Splits:
    """Keep a seeded, class-balanced subset of `train_subset` training images (None: all)."""
    if train_subset is None:
        return splits
    n = len(splits.train_y)
    if not 1 <= train_subset <= n:
        raise UserError(
            f"train_subset {train_subset} is invalid for {splits.name!r}: must be in 1..{n}"
        )
    idx = balanced_take(splits.train_y, train_subset, np.random.default_rng([seed, 0x5B5E7]))
    fp = splits.fingerprint
    if refingerprint:
        fp = settings_fingerprint({"base": fp, "train_subset": train_subset, "seed": seed})
    return Splits(
        name=splits.name,
        fingerprint=fp,
        settings={**splits.settings, "train_subset": train_subset} if splits.settings else {},
        classes=splits.classes,
        train_x=splits.train_x[idx],
        train_y=splits.train_y[idx],
        val_x=splits.val_x,
        val_y=splits.val_y,
        test_x=splits.test_x,
        test_y=splits.test_y,
    )


def settings_fingerprint(settings: dict) -> str:
    return hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:16]


# The CLI option that sets each split setting (the study's scale files use the same words).
SPLIT_FLAGS = {"val_size": "--val-size", "seed": "--split-seed", "train_subset": "--train-subset"}


def split_settings(data: str, val_size: int, seed: int, train_subset: int | None) -> dict[str, Any]:
    """`Splits.settings`: the data's content id and the split settings, JSON-able."""
    subset = None if train_subset is None else int(train_subset)
    return {"data": str(data), "val_size": int(val_size), "seed": int(seed), "train_subset": subset}


def split_differences(made: Mapping[str, Any], here: Mapping[str, Any]) -> list[str]:
    """How split settings `made` (recorded with an output) differ from `here` (the splits in
    use), as flags: ["--val-size 2000 (here 10000)", ...]; ["the data"] first when the
    content differs; [] when they agree or either is unknown."""
    if not made or not here:
        return []
    out = ["the data"] if made.get("data") != here.get("data") else []
    for key, flag in SPLIT_FLAGS.items():
        if made.get(key) != here.get(key):
            out.append(f"{flag} {_shown(made.get(key))} (here {_shown(here.get(key))})")
    return out


def matching_flags(made: Mapping[str, Any], here: Mapping[str, Any]) -> str:
    """The flags that select `made`'s split settings where they differ from `here`'s."""
    flags = []
    for key, flag in SPLIT_FLAGS.items():
        if made.get(key) != here.get(key) and made.get(key) is not None:
            flags.append(f"{flag} {made[key]}")
        elif made.get(key) != here.get(key):
            flags.append(f"without {flag}")
    return " ".join(flags)


def _shown(value: Any) -> str:
    return "none" if value is None else str(value)
