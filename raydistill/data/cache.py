"""The decode cache: a source is decoded once and its arrays kept on disk (numpy only).

`<cache root>/decoded/<kind>-<source key>/` holds `train_x.npy`, `train_y.npy`, `test_x.npy`,
`test_y.npy` and `meta.json`; the cache root is `cache_dir`, else `$RAYDISTILL_CACHE`, else
`~/.cache/raydistill`. The *source key* decides whether a cache entry can be reused:
- Parquet files and `cifar-10-batches-py`: sha256 of the files' bytes (a handful of files,
  ≤ 0.3 s for 180 MB, so any change to the bytes is caught);
- ImageFolder trees: sha256 of every image's relative name, size and mtime (tens of thousands
  of small files: reading them all would cost as much as decoding them). Rewriting an image
  changes its mtime, so the key changes; a copy that keeps sizes and mtimes (`cp -p`, rsync -a)
  keeps the cache entry, as it should.
The *content hash* stored in `meta.json` is sha256 of the decoded arrays and class names, so
the same pixels read from different formats or places share a dataset fingerprint.
An entry is written in a temporary folder and renamed into place (`raydistill.core.manifest.atomic_dir`).
"""

from __future__ import annotations

import hashlib
import json
import os
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from raydistill.core.errors import UserError
from raydistill.core.manifest import atomic_dir
from raydistill.data.readers import CIFAR_FILES, READERS, image_files

CACHE_VERSION = 2  # 2: grayscale sources keep one channel
# Counts real decodes (source → arrays), so tests and users can see the cache being used.
DECODE_STATS = {"decodes": 0, "cache_hits": 0}


@dataclass(frozen=True, eq=False)
class Decoded:
    """A source decoded: the 50k-style training pool and the test set, before splitting."""

    classes: tuple[str, ...]
    train_x: np.ndarray
    train_y: np.ndarray
    test_x: np.ndarray
    test_y: np.ndarray
    content: str  # sha256 hex of the arrays and class names


def cache_root(cache_dir: str | os.PathLike | None = None) -> Path:
    """`cache_dir`, else $RAYDISTILL_CACHE, else ~/.cache/raydistill."""
    if cache_dir is not None:
        return Path(cache_dir).expanduser()
    env = os.environ.get("RAYDISTILL_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "raydistill"


def load_decoded(kind: str, path: Path, root: Path) -> Decoded:
    """The decoded arrays of a source: from the cache when its source key matches, else decoded
    (once) and written to the cache."""
    entry = root / "decoded" / f"{kind}-{source_key(kind, path)[:24]}"
    cached = _read_cache(entry)
    if cached is not None:
        DECODE_STATS["cache_hits"] += 1
        return cached
    classes, arrays = READERS[kind](path)
    _check_train_test_shapes(arrays, str(path))
    DECODE_STATS["decodes"] += 1
    decoded = Decoded(classes=classes, content=content_hash(classes, arrays), **arrays)
    _write_cache(entry, decoded, source=str(path))
    return decoded


def _check_train_test_shapes(arrays: dict[str, np.ndarray], where: str) -> None:
    train, test = arrays["train_x"].shape[1:], arrays["test_x"].shape[1:]
    if train[1:] != test[1:]:
        raise UserError(
            f"dataset {where!r}: train images are {train[2]}×{train[1]} px, test images "
            f"{test[2]}×{test[1]} px; both splits must have one size"
        )
    if train[0] != test[0]:  # one split all grayscale, the other colour: colour for both
        for key in ("train_x", "test_x"):
            if arrays[key].shape[1] == 1:
                arrays[key] = np.repeat(arrays[key], 3, axis=1)


def source_key(kind: str, path: Path) -> str:
    """sha256 hex identifying a source's current content (see the module docstring)."""
    h = hashlib.sha256(f"raydistill-source-v{CACHE_VERSION}:{kind}\n".encode())
    if kind == "parquet":
        _hash_file(h, path)
    elif kind == "cifar-batches":
        for name in CIFAR_FILES:
            if (path / name).is_file():
                h.update(name.encode() + b"\n")
                _hash_file(h, path / name)
    else:
        for f in image_files(path):
            st = f.stat()
            h.update(f"{f.relative_to(path).as_posix()}\t{st.st_size}\t{st.st_mtime_ns}\n".encode())
    return h.hexdigest()


def _hash_file(h, path: Path) -> None:
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 22), b""):
            h.update(block)


def content_hash(classes: Sequence[str], arrays: dict[str, np.ndarray]) -> str:
    """sha256 hex of the decoded arrays (shape, dtype and bytes) and the class names."""
    h = hashlib.sha256(json.dumps(list(classes)).encode())
    for key in ("train_x", "train_y", "test_x", "test_y"):
        a = np.ascontiguousarray(arrays[key])
        h.update(f"{key}:{a.dtype.str}:{a.shape}\n".encode())
        h.update(memoryview(a).cast("B"))
    return h.hexdigest()


_ARRAYS = ("train_x", "train_y", "test_x", "test_y")


def _read_cache(entry: Path) -> Decoded | None:
    try:
        meta = json.loads((entry / "meta.json").read_text())
        if meta.get("version") != CACHE_VERSION:
            return None
        arrays = {
            k: np.load(entry / f"{k}.npy", mmap_mode="r", allow_pickle=False) for k in _ARRAYS
        }
    except (OSError, ValueError):
        return None  # missing or half-written entry: decode again
    return Decoded(classes=tuple(meta["classes"]), content=meta["content"], **arrays)


def _write_cache(entry: Path, decoded: Decoded, source: str) -> None:
    """Write into a temporary sibling folder, then rename it into place (atomic). A cache that
    cannot be written costs a decode per load, not the run: warn and go on."""
    try:
        # replace=False: when another process cached the same source first, keep theirs
        with atomic_dir(entry, replace=False) as tmp:
            _write_entry(tmp, decoded, source)
    except OSError as e:
        warnings.warn(
            f"raydistill: cannot cache decoded data in {entry.parent} ({e}); set RAYDISTILL_CACHE",
            stacklevel=3,
        )


def _write_entry(tmp: Path, decoded: Decoded, source: str) -> None:
    for key in _ARRAYS:
        np.save(tmp / f"{key}.npy", getattr(decoded, key), allow_pickle=False)
    meta = {"version": CACHE_VERSION, "classes": list(decoded.classes), "content": decoded.content}
    (tmp / "meta.json").write_text(json.dumps({**meta, "source": source}, indent=1))
