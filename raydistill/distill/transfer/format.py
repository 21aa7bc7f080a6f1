"""The transfer set's file format and its reading: the Parquet schema (`schema`), the loaded
`TransferSet` and `load_transfer_set`, which checks the metadata, the layout and the provenance
(dataset and teacher fingerprints) and refuses (one-line UserError) a file made for another
dataset or teacher, or one that is truncated or corrupt. See `raydistill.distill.transfer.writer` for the
layout; that module writes the file and re-exports these names.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from raydistill.core.errors import UserError, first_line
from raydistill.core.manifest import sha256_file
from raydistill.data import AUG_KEYS, AugConfig
from raydistill.data.splits import matching_flags, split_differences
from raydistill.distill.transfer.aug import aug_parts

if TYPE_CHECKING:
    import pyarrow as pa

    from raydistill.data import Splits

FORMAT_VERSION = 1
META_KEY = b"raydistill.distill.transfer.writer"
INT_PARAMS = ("flip", "crop", "tx", "ty")  # stored as int16, int64 in memory (as sample_aug)
BASE_COLUMNS = ("index", "epoch", "logits")


def schema(num_classes: int, meta: Mapping[str, Any]) -> pa.Schema:
    import pyarrow as pa

    cols = [pa.field("index", pa.int64()), pa.field("epoch", pa.int32())]
    cols += [pa.field(k, pa.int16() if k in INT_PARAMS else pa.float32()) for k in AUG_KEYS]
    cols.append(pa.field("logits", pa.list_(pa.float32(), num_classes)))
    return pa.schema(cols, metadata={META_KEY: json.dumps(meta, sort_keys=True).encode()})


@dataclass(frozen=True, eq=False)
class TransferSet:
    """A loaded transfer set: flat arrays over all views V = epochs × views_per_epoch."""

    path: Path
    index: np.ndarray  # (V,) int64 into the train split
    epoch: np.ndarray  # (V,) int32
    params: dict[str, np.ndarray]  # AUG_KEYS → (V,) int64 / float32
    logits: np.ndarray  # (V, C) float32
    meta: dict[str, Any] = field(repr=False)
    fingerprint: str = ""  # sha256 of the file's bytes

    @property
    def num_epochs(self) -> int:
        return int(self.meta["epochs"])

    @property
    def views_per_epoch(self) -> int:
        return int(self.meta["views_per_epoch"])

    @property
    def num_classes(self) -> int:
        return int(self.meta["num_classes"])

    @property
    def aug(self) -> AugConfig:
        return AugConfig.from_dict(self.meta["aug"])

    @property
    def aug_parts(self) -> tuple[bool, bool]:
        """(geometric, color): whether the stored views change geometry / colour at all."""
        return aug_parts(self.aug, int(self.meta.get("image_size", 32)))

    def epoch_rows(self, epoch: int) -> slice:
        """The rows of epoch `epoch` (0-based) as a slice."""
        if not 0 <= epoch < self.num_epochs:
            raise UserError(
                f"transfer set {self.path} has epochs 0..{self.num_epochs - 1}, not {epoch}"
            )
        v = self.views_per_epoch
        return slice(epoch * v, (epoch + 1) * v)

    def views(self, epoch: int) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """(index, params) of one epoch's views, in their stored order."""
        rows = self.epoch_rows(epoch)
        return self.index[rows], {k: v[rows] for k, v in self.params.items()}


# ----------------------------------------------------------------------------- loading


def load_transfer_set(
    path: str | Path,
    *,
    splits: Splits | None = None,
    teacher_fingerprints: Sequence[str] | None = None,
) -> TransferSet:
    """Read and validate a transfer set; UserError (one line) when it does not fit `splits` /
    `teacher_fingerprints` or is not a complete raydistill transfer set."""
    path = Path(path)
    pf = _open_parquet(path)
    meta = _read_meta(path, pf)
    _check_layout(path, pf, meta)
    _check_provenance(path, meta, splits, teacher_fingerprints)
    table = _read_table(path, pf)
    index = _column(table, "index", np.int64)
    if splits is not None and len(index) and index.max() >= len(splits.train_y):
        raise UserError(
            f"transfer set {path} indexes image {int(index.max())}, but the train split of "
            f"{splits.name!r} has {len(splits.train_y)} images"
        )
    # One copy per column, from the row groups' chunks straight into writable numpy arrays.
    logits = np.concatenate(
        [c.flatten().to_numpy() for c in table.column("logits").chunks] or [np.zeros(0)]
    ).astype(np.float32, copy=False)
    params = {k: _column(table, k, np.int64 if k in INT_PARAMS else np.float32) for k in AUG_KEYS}
    return TransferSet(
        path=path,
        index=index,
        epoch=_column(table, "epoch", np.int32),
        params=params,
        logits=logits.reshape(-1, int(meta["num_classes"])),
        meta=meta,
        fingerprint=sha256_file(path),
    )


def _column(table, name: str, dtype) -> np.ndarray:
    """A column as one writable numpy array of `dtype` (int64 for indices and int params)."""
    chunks = [c.to_numpy() for c in table.column(name).chunks]
    return np.concatenate(chunks).astype(dtype, copy=False) if chunks else np.zeros(0, dtype)


def _open_parquet(path: Path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    if not path.is_file():
        raise UserError(f"transfer set {path} does not exist")
    with open(path, "rb") as f:
        head = f.read(4)
        f.seek(max(os.path.getsize(path) - 4, 0))
        tail = f.read(4)
    if head != b"PAR1":
        raise UserError(f"transfer set {path} is not a Parquet file (no PAR1 magic bytes)")
    if tail != b"PAR1":
        raise UserError(f"transfer set {path} is truncated (no Parquet footer); write it again")
    try:
        return pq.ParquetFile(path)
    except (pa.ArrowException, OSError) as exc:
        raise UserError(
            f"transfer set {path} is corrupt ({first_line(exc)}); write it again"
        ) from None


def read_meta(path: str | Path) -> dict[str, Any]:
    """A transfer set's metadata alone (the Parquet footer; no column is read)."""
    return _read_meta(Path(path), _open_parquet(Path(path)))


def _read_meta(path: Path, pf) -> dict[str, Any]:
    raw = (pf.schema_arrow.metadata or {}).get(META_KEY)
    if raw is None:
        raise UserError(f"{path} is a Parquet file but not a raydistill transfer set (no metadata)")
    try:
        meta = json.loads(raw)
    except json.JSONDecodeError:
        raise UserError(f"transfer set {path} has corrupt metadata (not JSON)") from None
    if meta.get("format_version") != FORMAT_VERSION:
        raise UserError(
            f"transfer set {path} has format version {meta.get('format_version')!r}; this "
            f"raydistill reads version {FORMAT_VERSION}"
        )
    need = (
        "dataset_fingerprint",
        "teacher_fingerprints",
        "epochs",
        "views_per_epoch",
        "num_classes",
        "aug",
    )
    missing = [k for k in need if k not in meta]
    if missing:
        raise UserError(f"transfer set {path} metadata lacks {missing}")
    return meta


def _check_layout(path: Path, pf, meta: Mapping[str, Any]) -> None:
    import pyarrow as pa

    schema = pf.schema_arrow
    missing = [c for c in (*BASE_COLUMNS, *AUG_KEYS) if c not in schema.names]
    if missing:
        raise UserError(f"transfer set {path} lacks columns {missing}")
    c = int(meta["num_classes"])
    ltype = schema.field("logits").type
    if not pa.types.is_fixed_size_list(ltype) or ltype.list_size != c:
        raise UserError(
            f"transfer set {path}: column 'logits' is {ltype}, expected fixed_size_list<float, {c}>"
        )
    expected = int(meta["epochs"]) * int(meta["views_per_epoch"])
    rows = pf.metadata.num_rows
    if rows != expected:
        raise UserError(
            f"transfer set {path} has {rows} rows, expected epochs × views_per_epoch = "
            f"{meta['epochs']} × {meta['views_per_epoch']} = {expected} (truncated?)"
        )


def _check_provenance(
    path: Path,
    meta: Mapping[str, Any],
    splits: Splits | None,
    teacher_fingerprints: Sequence[str] | None,
) -> None:
    if splits is not None and meta["dataset_fingerprint"] != splits.fingerprint:
        raise UserError(_other_splits(path, meta, splits))
    if splits is not None and meta["num_classes"] != splits.num_classes:
        raise UserError(
            f"transfer set {path} has {meta['num_classes']} classes, dataset {splits.name!r} "
            f"has {splits.num_classes}"
        )
    if teacher_fingerprints is not None and list(meta["teacher_fingerprints"]) != list(
        teacher_fingerprints
    ):
        got = ",".join(f[:12] for f in meta["teacher_fingerprints"])
        want = ",".join(f[:12] for f in teacher_fingerprints)
        raise UserError(
            f"transfer set {path} was made by teachers {got}, not the given teachers {want}"
        )


def _other_splits(path: Path, meta: Mapping[str, Any], splits: Splits) -> str:
    """Why a transfer set does not fit `splits`: which setting differs and how to match it."""
    made = meta.get("split") or {}
    diff = split_differences(made, splits.settings)
    if diff and diff[0] == "the data":
        return (
            f"transfer set {path} was made for other data ({meta.get('dataset')!r}), not "
            f"{splits.name!r}: give the data it was made for, or make one for this data "
            "(raydistill transfer --teacher DIR --data SOURCE)"
        )
    if diff:
        return (
            f"transfer set {path} was made for other split settings of {splits.name!r}: "
            f"{', '.join(diff)}; pass {matching_flags(made, splits.settings)} to use it, or make "
            "one for these settings (raydistill transfer with the same split options)"
        )
    return (  # a file made before the settings were recorded: only the fingerprints to show
        f"transfer set {path} was made for dataset fingerprint {meta['dataset_fingerprint']} "
        f"({meta.get('dataset')}), not {splits.fingerprint} ({splits.name}): regenerate it "
        "for this dataset / split settings (--val-size, --split-seed, --train-subset)"
    )


def _read_table(path: Path, pf):
    import pyarrow as pa

    try:
        return pf.read()
    except (pa.ArrowException, OSError) as exc:
        raise UserError(
            f"transfer set {path} is corrupt ({first_line(exc)}); write it again"
        ) from None


def size_summary(path: str | Path) -> str:
    """'123.4 MiB' for a file."""
    return f"{os.path.getsize(path) / 2**20:.1f} MiB"
