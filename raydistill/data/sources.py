"""Dataset sources: `load_dataset(source)` → seeded `Splits`, and `check_source` (no decoding).

A source is "cifar10" (torchvision's layout in the cache root; downloaded there with
`torchvision.datasets.CIFAR10(root, download=True)` when `download=True`), "synthetic-sep[:N[:S
[:C]]]", or a path: a Parquet file, a `cifar-10-batches-py` folder (or its parent), or an
ImageFolder root. All give NCHW `(N, C, H, W)` arrays and int64 labels; real images are uint8
(C = 1 when every image is grayscale, else 3), synthetic-sep float32.

This module owns recognising a source and the path from source to splits; the pieces are:
`readers` (one reader per format), `decode` (JPEG / PNG bytes → arrays), `cache` (decoded once,
kept on disk, keyed by the source's content), `splits` (`Splits`, the seeded class-balanced
validation split and subsets, fingerprints) and `synthetic` (synthetic-sep). Their public names
are re-exported here. numpy only: importing it does not import torch, so the CLI can check
`--data` cheaply.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from raydistill.core.errors import UserError
from raydistill.data.cache import (
    cache_root,
    load_decoded,
)
from raydistill.data.readers import (
    READERS,
)
from raydistill.data.splits import (
    DEFAULT_VAL_SIZE,
    Splits,
    check_classes,
    default_val_size,
    split_decoded,
    subset_train,
)
from raydistill.data.synthetic import (
    make_synthetic_sep,
    synthetic_args,
    synthetic_n,
)

_READERS = READERS  # the same dict (tests replace a reader in it)

EXPECTED = (
    "expected 'cifar10', 'synthetic-sep[:N[:S[:C]]]', a .parquet file (split/label/jpeg columns), "
    "a cifar-10-batches-py folder (or its parent) or an ImageFolder root with train/ and test/"
)

__all__ = ["EXPECTED", "check_source", "detect_source", "fetch_cifar10", "load_dataset"]


def load_dataset(
    source: str | os.PathLike,
    *,
    cache_dir: str | os.PathLike | None = None,
    val_size: int | None = None,
    seed: int = 0,
    train_subset: int | None = None,
    download: bool = False,
) -> Splits:
    """Load `source` as seeded, class-balanced train / val / test splits.

    `source`: "cifar10" (torchvision's layout in the cache root, downloaded there if
    `download`), "synthetic-sep" / "synthetic-sep:N[:S[:C]]" (N training images of C×S×S,
    default 3×32×32; val and test get min(val_size, N) each), or a path (Parquet file, cifar-10-batches-py folder or its parent,
    ImageFolder root). `val_size` images of the training pool become the validation split;
    `train_subset` keeps a class-balanced subset of the rest (for CPU runs). `val_size` None:
    min(10,000, 20 % of the training pool) (`default_val_size`).
    """
    text = os.fspath(source)
    if val_size is None and re.fullmatch(r"synthetic-sep(:.*)?", text):
        val_size = DEFAULT_VAL_SIZE  # synthetic-sep sizes val and test as min(val_size, N)
    if re.fullmatch(r"synthetic-sep(:.*)?", text):
        n, size, channels = synthetic_args(text)
        m = min(val_size, n)
        splits = make_synthetic_sep(n, m, m, seed, size=size, channels=channels)
        return subset_train(splits, train_subset, seed)
    root = cache_root(cache_dir)
    if text == "cifar10":
        name, kind, path = "cifar10", "cifar-batches", _cifar10_dir(root, download)
    else:
        kind, path = detect_source(Path(text).expanduser())
        name = "cifar10" if kind == "cifar-batches" else path.stem
    decoded = load_decoded(kind, path, root)
    if val_size is None:
        val_size = default_val_size(len(decoded.train_y))
    return split_decoded(name, decoded, val_size=val_size, seed=seed, train_subset=train_subset)


def check_source(
    source: str | os.PathLike, *, cache_dir: str | os.PathLike | None = None, download: bool = False
) -> None:
    """Refuse (UserError) a source that cannot be loaded, without decoding it (no torch).

    The CLI calls this before any heavy import, so a typo costs a fraction of a second.
    """
    text = os.fspath(source)
    if re.fullmatch(r"synthetic-sep(:.*)?", text):
        synthetic_n(text)
    elif text == "cifar10":
        if not download:
            _cifar10_dir(cache_root(cache_dir), download=False)
    else:
        detect_source(Path(text).expanduser())


def fetch_cifar10(cache_dir: str | os.PathLike | None = None) -> Path:
    """Download CIFAR-10 into the cache root unless it is already there; its folder."""
    return _cifar10_dir(cache_root(cache_dir), download=True)


def _cifar10_dir(root: Path, download: bool) -> Path:
    for cand in (root / "cifar-10-batches-py", root / "cifar10" / "cifar-10-batches-py"):
        if (cand / "data_batch_1").is_file():
            return cand
    if not download:
        raise UserError(
            f"dataset 'cifar10' is not in the cache root {root} (no cifar-10-batches-py); pass "
            "download=True (--download) on a machine with internet, set RAYDISTILL_CACHE / "
            "cache_dir to a folder holding it, or give a path to a .parquet file, a "
            "cifar-10-batches-py folder or an ImageFolder root"
        )
    import torchvision  # heavy; only when downloading

    root.mkdir(parents=True, exist_ok=True)
    for train in (True, False):  # torchvision verifies the archive's md5 and unpacks it
        torchvision.datasets.CIFAR10(str(root), train=train, download=True)
    return root / "cifar-10-batches-py"


def detect_source(path: Path) -> tuple[str, Path]:
    """("parquet" | "cifar-batches" | "imagefolder", path) for a path, or UserError."""
    if not path.exists():
        raise UserError(f"dataset path {str(path)!r} does not exist; {EXPECTED}")
    if path.is_file():
        with open(path, "rb") as f:
            magic = f.read(4)
        if path.suffix.lower() == ".parquet" or magic == b"PAR1":
            return "parquet", path
        raise UserError(f"dataset file {str(path)!r} is not a Parquet file; {EXPECTED}")
    if (path / "data_batch_1").is_file():
        return "cifar-batches", path
    if (path / "cifar-10-batches-py" / "data_batch_1").is_file():
        return "cifar-batches", path / "cifar-10-batches-py"
    if (path / "train").is_dir() and (path / "test").is_dir():
        # before any image is decoded: a one-class tree is refused in a fraction of a second
        classes = sorted(p.name for p in (path / "train").iterdir() if p.is_dir())
        check_classes(str(path), len(classes), classes)
        return "imagefolder", path
    raise UserError(f"dataset folder {str(path)!r} is not a recognised layout; {EXPECTED}")
