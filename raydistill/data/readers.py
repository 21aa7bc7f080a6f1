"""One reader per source format, each → (class names, {train_x, train_y, test_x, test_y}):

- `read_parquet`: a Parquet file with `split` ("train" | "test"), `label` (int) and an
  encoded-image column (`jpeg`, `png`, `image` or `bytes`: binary, or a struct with a `bytes`
  field); JPEG and PNG bytes are both accepted, told apart by their magic bytes; an optional
  `name` column `<class>/<file>` names the classes;
- `read_cifar_batches`: torchvision's pickled layout `cifar-10-batches-py` (`data_batch_1..5`,
  `test_batch`, `batches.meta`), read with a restricted unpickler (numpy arrays, lists, dicts);
- `read_imagefolder`: `train/<class>/*.jpg|jpeg|png` and `test/<class>/...`.

`READERS` maps a source kind ("parquet" | "cifar-batches" | "imagefolder") to its reader.
"""

from __future__ import annotations

import pickle
from collections.abc import Callable
from pathlib import Path
from typing import ClassVar

import numpy as np

from raydistill.core.errors import UserError
from raydistill.data.decode import decode_images

Reader = Callable[[Path], tuple[tuple[str, ...], dict[str, np.ndarray]]]

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
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")
IMAGE_COLUMNS = ("jpeg", "png", "image", "bytes")
CIFAR_TRAIN_FILES = tuple(f"data_batch_{i}" for i in range(1, 6))
CIFAR_FILES = (*CIFAR_TRAIN_FILES, "test_batch", "batches.meta")


def read_parquet(path: Path) -> tuple[tuple[str, ...], dict[str, np.ndarray]]:
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


def read_cifar_batches(path: Path) -> tuple[tuple[str, ...], dict[str, np.ndarray]]:
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


def image_files(root: Path) -> list[Path]:
    """Every image under train/<class>/ and test/<class>/, sorted (class, then file name)."""
    files = []
    for part in ("train", "test"):
        for cls in sorted(p for p in (root / part).iterdir() if p.is_dir()):
            files += sorted(f for f in cls.iterdir() if f.suffix.lower() in IMAGE_SUFFIXES)
    return files


def read_imagefolder(root: Path) -> tuple[tuple[str, ...], dict[str, np.ndarray]]:
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


READERS: dict[str, Reader] = {
    "parquet": read_parquet,
    "cifar-batches": read_cifar_batches,
    "imagefolder": read_imagefolder,
}
