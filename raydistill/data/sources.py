"""Dataset sources → decoded uint8 arrays (decoded once, cached on disk) → seeded `Splits`.

Sources for CIFAR-10-like data (all give NCHW uint8 `(N, C, H, W)` arrays and int64 labels;
C = 1 when every image is grayscale, else 3 — grayscale images among colour ones become RGB,
alpha is dropped; every image must have the same size):

- torchvision's pickled layout `cifar-10-batches-py` (`data_batch_1..5`, `test_batch`,
  `batches.meta`), read with a restricted unpickler (numpy arrays, lists, dicts only);
  `"cifar10"` looks for it in the cache root and downloads it there with
  `torchvision.datasets.CIFAR10(root, download=True)` when `download=True`;
- a Parquet file with `split` ("train" | "test"), `label` (int) and an encoded-image column
  (`jpeg`, `png`, `image` or `bytes`: binary, or a struct with a `bytes` field); JPEG and PNG
  bytes are both accepted, told apart by their magic bytes; an optional `name` column
  `<class>/<file>` names the classes;
- an ImageFolder tree `train/<class>/*.jpg|jpeg|png` and `test/<class>/...`.

Decoding: JPEG bytes go through `torchvision.io.decode_jpeg` on a list of tensors (the fast
path, ~2 s for CIFAR-10's 60k images on 2 cores); other formats (PNG) through PIL.

Cache: `<cache root>/decoded/<kind>-<source key>/` holds `train_x.npy`, `train_y.npy`,
`test_x.npy`, `test_y.npy` and `meta.json`; the cache root is `cache_dir`, else
`$RAYDISTILL_CACHE`, else `~/.cache/raydistill`. The *source key* decides whether a cache
entry can be reused:
- Parquet files and `cifar-10-batches-py`: sha256 of the files' bytes (a handful of files,
  ≤ 0.3 s for 180 MB, so any change to the bytes is caught);
- ImageFolder trees: sha256 of every image's relative name, size and mtime (tens of thousands
  of small files: reading them all would cost as much as decoding them). Rewriting an image
  changes its mtime, so the key changes; a copy that keeps sizes and mtimes (`cp -p`, rsync -a)
  keeps the cache entry, as it should.
The *content hash* stored in `meta.json` is sha256 of the decoded arrays and class names, so
the same pixels read from different formats or places share a dataset fingerprint.
`Splits.fingerprint` = sha256 of (content hash, val_size, seed, train_subset), 16 hex digits.

Validation split: `val_size` images of the training pool; by default (None) min(10,000, 20 % of
the pool) — the paper's 10,000 on CIFAR-10, and a usable split on smaller datasets.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import pickle
import re
import shutil
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import numpy as np

from raydistill.errors import UserError

CIFAR10_CLASSES = (
    "airplane",
    "automobile",
    "bird",
    "cat",
    "deer",
    "dog",
    "frog",
    "horse",
    "ship",
    "truck",
)
SYNTHETIC_CLASSES = ("ch1>=ch0", "ch0>ch1")
SYNTHETIC_DEFAULT_N = 10_000
SYNTHETIC_DEFAULT_SIZE, SYNTHETIC_DEFAULT_CHANNELS = 32, 3  # 3×32×32, CIFAR-10's shape
CACHE_VERSION = 2  # 2: grayscale sources keep one channel
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")
IMAGE_COLUMNS = ("jpeg", "png", "image", "bytes")
CIFAR_TRAIN_FILES = tuple(f"data_batch_{i}" for i in range(1, 6))
CIFAR_FILES = (*CIFAR_TRAIN_FILES, "test_batch", "batches.meta")
EXPECTED = (
    "expected 'cifar10', 'synthetic-sep[:N[:S[:C]]]', a .parquet file (split/label/jpeg columns), "
    "a cifar-10-batches-py folder (or its parent) or an ImageFolder root with train/ and test/"
)

# Counts real decodes (source → arrays), so tests and users can see the cache being used.
DECODE_STATS = {"decodes": 0, "cache_hits": 0}
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


@dataclass(frozen=True, eq=False)
class Decoded:
    """A source decoded: the 50k-style training pool and the test set, before splitting."""

    classes: tuple[str, ...]
    train_x: np.ndarray
    train_y: np.ndarray
    test_x: np.ndarray
    test_y: np.ndarray
    content: str  # sha256 hex of the arrays and class names


# ---------------------------------------------------------------------------------- entry


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
        n, size, channels = _synthetic_args(text)
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


def default_val_size(pool: int) -> int:
    """The validation split taken from a training pool of `pool` images when none is given."""
    return min(DEFAULT_VAL_SIZE, int(DEFAULT_VAL_SHARE * pool))


def check_source(
    source: str | os.PathLike, *, cache_dir: str | os.PathLike | None = None, download: bool = False
) -> None:
    """Refuse (UserError) a source that cannot be loaded, without decoding it (no torch).

    The CLI calls this before any heavy import, so a typo costs a fraction of a second.
    """
    text = os.fspath(source)
    if re.fullmatch(r"synthetic-sep(:.*)?", text):
        _synthetic_n(text)
    elif text == "cifar10":
        if not download:
            _cifar10_dir(cache_root(cache_dir), download=False)
    else:
        detect_source(Path(text).expanduser())


def fetch_cifar10(cache_dir: str | os.PathLike | None = None) -> Path:
    """Download CIFAR-10 into the cache root unless it is already there; its folder."""
    return _cifar10_dir(cache_root(cache_dir), download=True)


def cache_root(cache_dir: str | os.PathLike | None = None) -> Path:
    """`cache_dir`, else $RAYDISTILL_CACHE, else ~/.cache/raydistill."""
    if cache_dir is not None:
        return Path(cache_dir).expanduser()
    env = os.environ.get("RAYDISTILL_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "raydistill"


def _synthetic_n(text: str) -> int:
    """N of a "synthetic-sep[:N[:S[:C]]]" source string."""
    return _synthetic_args(text)[0]


def _synthetic_args(text: str) -> tuple[int, int, int]:
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
        return "imagefolder", path
    raise UserError(f"dataset folder {str(path)!r} is not a recognised layout; {EXPECTED}")


# ---------------------------------------------------------------------------------- cache

_READERS: dict[str, Callable[[Path], tuple[tuple[str, ...], dict[str, np.ndarray]]]] = {}


def load_decoded(kind: str, path: Path, root: Path) -> Decoded:
    """The decoded arrays of a source: from the cache when its source key matches, else decoded
    (once) and written to the cache."""
    entry = root / "decoded" / f"{kind}-{source_key(kind, path)[:24]}"
    cached = _read_cache(entry)
    if cached is not None:
        DECODE_STATS["cache_hits"] += 1
        return cached
    classes, arrays = _READERS[kind](path)
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
        for f in _image_files(path):
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
    tmp = entry.parent / f".tmp-{entry.name}-{os.getpid()}"
    try:
        _write_entry(tmp, decoded, source)
    except OSError as e:
        shutil.rmtree(tmp, ignore_errors=True)
        warnings.warn(
            f"raydistill: cannot cache decoded data in {entry.parent} ({e}); set RAYDISTILL_CACHE",
            stacklevel=3,
        )
        return
    try:
        os.rename(tmp, entry)
    except OSError:  # another process cached the same source first: keep theirs
        shutil.rmtree(tmp, ignore_errors=True)


def _write_entry(tmp: Path, decoded: Decoded, source: str) -> None:
    tmp.parent.mkdir(parents=True, exist_ok=True)
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    for key in _ARRAYS:
        np.save(tmp / f"{key}.npy", getattr(decoded, key), allow_pickle=False)
    meta = {"version": CACHE_VERSION, "classes": list(decoded.classes), "content": decoded.content}
    (tmp / "meta.json").write_text(json.dumps({**meta, "source": source}, indent=1))


# ---------------------------------------------------------------------------------- decoding


def decode_images(blobs: Sequence[bytes], where: str) -> np.ndarray:
    """Encoded images → (N, C, H, W) uint8. JPEGs in one batched torchvision call; PNG etc. by PIL.

    C is 1 when every image is grayscale, else 3 (grayscale images among colour ones are
    repeated to RGB; alpha is dropped).

    `where` names the source in the error raised for undecodable or differently sized images.
    """
    if not blobs:
        return np.zeros((0, 3, 32, 32), np.uint8)
    is_jpeg = np.array([b[:3] == b"\xff\xd8\xff" for b in blobs], dtype=bool)
    out: list[np.ndarray | None] = [None] * len(blobs)
    jpeg_idx = np.flatnonzero(is_jpeg)
    if len(jpeg_idx):
        for i, img in zip(
            jpeg_idx, _decode_jpegs([blobs[i] for i in jpeg_idx], where), strict=True
        ):
            out[i] = img
    for i in np.flatnonzero(~is_jpeg):
        out[i] = _decode_pil(blobs[i], f"{where} image {i}")
    if len({a.shape[0] for a in out}) > 1:  # grayscale among colour images: make them RGB
        out = [np.repeat(a, 3, axis=0) if a.shape[0] == 1 else a for a in out]
    _check_same_size(out, where)
    shapes = {out[0].shape}
    # Copy into one C-contiguous NCHW array: decoders hand out HWC memory seen as CHW, and
    # np.stack would keep that layout (np.save then writes it 10× slower).
    stacked = np.empty((len(out), *shapes.pop()), np.uint8)
    for i, img in enumerate(out):
        stacked[i] = img
    return stacked


def _check_same_size(images: Sequence[np.ndarray], where: str) -> None:
    """One-line refusal naming the first image whose size differs from the first one's."""
    first = images[0].shape[1:]
    for i, img in enumerate(images):
        if img.shape[1:] != first:
            n = sum(a.shape[1:] != first for a in images)
            raise UserError(
                f"{where}: images have mixed sizes: image 0 is {first[1]}×{first[0]} px, image {i} "
                f"is {img.shape[2]}×{img.shape[1]} px ({n} of {len(images)} differ); resize them "
                "to one size"
            )


def _decode_jpegs(blobs: list[bytes], where: str) -> list[np.ndarray]:
    import torch
    from torchvision.io import ImageReadMode, decode_jpeg

    tensors = [torch.frombuffer(bytearray(b), dtype=torch.uint8) for b in blobs]
    try:
        images = decode_jpeg(tensors, mode=ImageReadMode.UNCHANGED)  # grayscale stays 1 channel
    except RuntimeError as e:
        raise UserError(
            f"{where}: a JPEG could not be decoded ({str(e).splitlines()[0]})"
        ) from None
    # CMYK and other >3-channel JPEGs are rare: decode just those again as RGB
    odd = [i for i, img in enumerate(images) if img.shape[0] not in (1, 3)]
    for i in odd:
        images[i] = decode_jpeg(tensors[i], mode=ImageReadMode.RGB)
    return [img.numpy() for img in images]


def _decode_pil(blob: bytes, where: str) -> np.ndarray:
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(blob)) as im:
            gray = im.mode in ("1", "L", "LA", "I", "I;16", "F") or (
                im.mode == "P" and im.palette is not None and im.palette.mode == "L"
            )
            pixels = np.asarray(im.convert("L" if gray else "RGB"))
    except (UnidentifiedImageError, OSError) as e:
        raise UserError(f"{where}: not a decodable JPEG/PNG image ({e})") from None
    if pixels.ndim == 2:
        return np.ascontiguousarray(pixels[None])  # (1, H, W)
    return np.ascontiguousarray(pixels.transpose(2, 0, 1))  # HWC → CHW


# ---------------------------------------------------------------------------------- readers


def _read_parquet(path: Path) -> tuple[tuple[str, ...], dict[str, np.ndarray]]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        schema = pq.read_schema(path)
    except (pa.ArrowException, OSError) as e:
        raise UserError(
            f"dataset file {str(path)!r} is not a readable Parquet file ({e})"
        ) from None
    image_col = next((c for c in IMAGE_COLUMNS if c in schema.names), None)
    if image_col is None or "split" not in schema.names or "label" not in schema.names:
        raise UserError(
            f"Parquet file {str(path)!r} has columns {schema.names}; expected 'split', 'label' "
            f"and an image-bytes column (one of {list(IMAGE_COLUMNS)}), optionally 'name'"
        )
    cols = ["split", "label", image_col] + (["name"] if "name" in schema.names else [])
    table = pq.read_table(path, columns=cols)  # only the columns needed
    split = np.asarray(table.column("split").cast(pa.string()).to_numpy(zero_copy_only=False))
    labels = table.column("label").to_numpy().astype(np.int64)
    blobs = _binary_list(table.column(image_col), path, image_col)
    where = f"Parquet file {str(path)!r}"
    names = table.column("name").to_pylist() if "name" in cols else None
    arrays = {}
    for part in ("train", "test"):
        rows = np.flatnonzero(split == part)
        if len(rows) == 0:
            raise UserError(
                f"{where} has no rows with split == {part!r}; expected 'train' and 'test' rows"
            )
        arrays[f"{part}_x"] = decode_images([blobs[i] for i in rows], where)
        arrays[f"{part}_y"] = labels[rows]
    return _classes_from(labels, names, where), arrays


def _binary_list(column, path: Path, name: str) -> list[bytes]:
    import pyarrow as pa

    if pa.types.is_struct(column.type):  # Hugging Face's Image feature: {bytes, path}
        column = column.combine_chunks().field("bytes")
    if not (pa.types.is_binary(column.type) or pa.types.is_large_binary(column.type)):
        raise UserError(
            f"Parquet file {str(path)!r}: column {name!r} is {column.type}, expected binary image bytes"
        )
    return column.to_pylist()


def _classes_from(labels: np.ndarray, names: list[str] | None, where: str) -> tuple[str, ...]:
    """Class names: from `name` = '<class>/<file>' when present, CIFAR-10's for 10 labels, else digits."""
    if labels.size and labels.min() < 0:
        raise UserError(f"{where}: label {labels.min()} is negative; labels are 0..K-1")
    k = int(labels.max()) + 1 if labels.size else 0
    if names is not None:
        found: dict[int, str] = {}
        for lab, nm in zip(labels.tolist(), names, strict=True):
            if nm and "/" in nm:
                found.setdefault(lab, nm.split("/")[0])
        if len(found) == k:
            return tuple(found[i] for i in range(k))
    return CIFAR10_CLASSES if k == 10 else tuple(str(i) for i in range(k))


class _ArraysOnly(pickle.Unpickler):
    """Unpickles CIFAR-10 batch files only: numpy arrays and plain containers, nothing callable."""

    ALLOWED: ClassVar[frozenset[tuple[str, str]]] = frozenset(
        {
            ("numpy.core.multiarray", "_reconstruct"),
            ("numpy._core.multiarray", "_reconstruct"),
            ("numpy.core.numeric", "_frombuffer"),
            ("numpy._core.numeric", "_frombuffer"),
            ("numpy", "ndarray"),
            ("numpy", "dtype"),
            ("_codecs", "encode"),
        }
    )

    def find_class(self, module: str, name: str):
        if (module, name) not in self.ALLOWED:
            raise pickle.UnpicklingError(f"global {module}.{name} is not allowed")
        return super().find_class(module, name)


def _unpickle(path: Path) -> dict:
    try:
        with open(path, "rb") as f:
            obj = _ArraysOnly(f, encoding="latin1").load()
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError) as e:
        raise UserError(f"{str(path)!r} is not a CIFAR-10 python batch file ({e})") from None
    if not isinstance(obj, dict):
        raise UserError(f"{str(path)!r} is not a CIFAR-10 python batch file (no dict inside)")
    return {k.decode() if isinstance(k, bytes) else k: v for k, v in obj.items()}


def _read_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    if not path.is_file():
        raise UserError(
            f"CIFAR-10 folder is missing {str(path)!r}; expected {list(CIFAR_FILES[:-1])}"
        )
    d = _unpickle(path)
    data, labels = d.get("data"), d.get("labels", d.get("fine_labels"))
    if not isinstance(data, np.ndarray) or labels is None or data.ndim != 2 or data.shape[1] % 3:
        raise UserError(f"{str(path)!r}: expected keys 'data' (N×3072 uint8) and 'labels'")
    side = round((data.shape[1] // 3) ** 0.5)
    if 3 * side * side != data.shape[1] or len(labels) != len(data):
        raise UserError(
            f"{str(path)!r}: 'data' is {data.shape}, expected N×(3·H·W) with H = W and N labels"
        )
    return data.astype(np.uint8).reshape(-1, 3, side, side), np.asarray(labels, np.int64)


def _read_cifar_batches(path: Path) -> tuple[tuple[str, ...], dict[str, np.ndarray]]:
    train = [_read_batch(path / name) for name in CIFAR_TRAIN_FILES]
    test_x, test_y = _read_batch(path / "test_batch")
    classes = CIFAR10_CLASSES
    if (path / "batches.meta").is_file():
        names = _unpickle(path / "batches.meta").get("label_names")
        if names:
            classes = tuple(n.decode() if isinstance(n, bytes) else str(n) for n in names)
    arrays = {
        "train_x": np.concatenate([x for x, _ in train]),
        "train_y": np.concatenate([y for _, y in train]),
        "test_x": test_x,
        "test_y": test_y,
    }
    return classes, arrays


def _image_files(root: Path) -> list[Path]:
    """Every image under train/<class>/ and test/<class>/, sorted (class, then file name)."""
    files = []
    for part in ("train", "test"):
        for cls in sorted(p for p in (root / part).iterdir() if p.is_dir()):
            files += sorted(f for f in cls.iterdir() if f.suffix.lower() in IMAGE_SUFFIXES)
    return files


def _read_imagefolder(root: Path) -> tuple[tuple[str, ...], dict[str, np.ndarray]]:
    classes = tuple(sorted(p.name for p in (root / "train").iterdir() if p.is_dir()))
    if not classes:
        raise UserError(
            f"ImageFolder {str(root)!r}: train/ has no class folders; expected train/<class>/*.png|jpg"
        )
    arrays = {}
    for part in ("train", "test"):
        extra = sorted({p.name for p in (root / part).iterdir() if p.is_dir()} - set(classes))
        if extra:
            raise UserError(
                f"ImageFolder {str(root)!r}: {part}/ has classes {extra} that train/ lacks"
            )
        files, labels = [], []
        for k, cls in enumerate(classes):
            folder = root / part / cls
            found = (
                sorted(f for f in folder.iterdir() if f.suffix.lower() in IMAGE_SUFFIXES)
                if folder.is_dir()
                else []
            )
            files += found
            labels += [k] * len(found)
        if not files:
            raise UserError(f"ImageFolder {str(root)!r}: {part}/ holds no .jpg/.jpeg/.png images")
        arrays[f"{part}_x"] = decode_images(
            [f.read_bytes() for f in files], f"ImageFolder {str(root)!r}"
        )
        arrays[f"{part}_y"] = np.asarray(labels, np.int64)
    return classes, arrays


_READERS.update(
    {
        "parquet": _read_parquet,
        "cifar-batches": _read_cifar_batches,
        "imagefolder": _read_imagefolder,
    }
)


# ---------------------------------------------------------------------------------- splits


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
        fingerprint=_fingerprint(settings),
        classes=decoded.classes,
        train_x=np.asarray(decoded.train_x[train_idx]),
        train_y=np.asarray(decoded.train_y[train_idx]),
        val_x=np.asarray(decoded.train_x[val_idx]),
        val_y=np.asarray(decoded.train_y[val_idx]),
        test_x=np.array(decoded.test_x),  # copies out of the cache's memory map
        test_y=np.array(decoded.test_y),
    )
    return subset_train(splits, train_subset, seed, refingerprint=False)


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
        fp = _fingerprint({"base": fp, "train_subset": train_subset, "seed": seed})
    return Splits(
        name=splits.name,
        fingerprint=fp,
        classes=splits.classes,
        train_x=splits.train_x[idx],
        train_y=splits.train_y[idx],
        val_x=splits.val_x,
        val_y=splits.val_y,
        test_x=splits.test_x,
        test_y=splits.test_y,
    )


def _fingerprint(settings: dict) -> str:
    return hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:16]


# ---------------------------------------------------------------------------------- synthetic


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
    return Splits(
        name="synthetic-sep",
        fingerprint=_fingerprint(settings),
        classes=SYNTHETIC_CLASSES,
        **arrays,
    )


def synthetic_sep_labels(x: np.ndarray) -> np.ndarray:
    """The synthetic-sep rule on (N, C≥2, H, W): 1 where channel 0's L2 norm exceeds channel 1's."""
    sq = np.square(x[:, :2], dtype=np.float64).reshape(len(x), 2, -1).sum(-1)
    return (sq[:, 0] > sq[:, 1]).astype(np.int64)
