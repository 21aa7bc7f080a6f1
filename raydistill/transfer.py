"""The transfer set: pre-generated augmented epochs with the teacher ensemble's logits (Parquet).

Urban et al. pre-generated 160 augmented epochs of the training split and stored the teacher
ensemble's logits for each view; every student then trains on exactly the same views, in the
same order. Images are not stored twice: a row holds the view's image index into the train
split, its epoch, its augmentation parameters (one column per `raydistill.data.AUG_KEYS`) and
the ensemble's averaged logits; a student replays the view on its device with `replay_batch`.

File layout (`write_transfer_set`, one row group per epoch, rows in the epoch's seeded order):

    index   int64                        image index into the train split
    epoch   int32                        0-based
    flip crop tx ty                      int16 (int64 in memory)
    crop_x crop_y hue sat_* val_*        float32
    logits  fixed_size_list<float32, C>  the members' mean logits for the view

The schema metadata `raydistill.transfer` (JSON) holds the format version, dataset and teacher
fingerprints, the ensemble's val / test accuracy, the augmentation settings, epochs, views per
epoch, seed and number of classes. `load_transfer_set` checks all of it and refuses (one-line
UserError) a file made for another dataset or teacher, or one that is truncated or corrupt.
`TransferSet.fingerprint` is the sha256 of the file's bytes.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import Tensor

from raydistill.data import AUG_KEYS, AugConfig, DeviceSplit, epoch_plan
from raydistill.data.augment import HSVJitter
from raydistill.data.replay import replay_batch, replay_epoch
from raydistill.errors import UserError
from raydistill.manifest import sha256_file, temp_path_for

if TYPE_CHECKING:
    import pyarrow as pa

    from raydistill.data import Splits
    from raydistill.teachers import Ensemble

FORMAT_VERSION = 1
META_KEY = b"raydistill.transfer"
INT_PARAMS = ("flip", "crop", "tx", "ty")  # stored as int16, int64 in memory (as sample_aug)
BASE_COLUMNS = ("index", "epoch", "logits")


# ----------------------------------------------------------------------------- replay


def replay(transfer: TransferSet, images: Tensor, rows: slice | Tensor | np.ndarray) -> Tensor:
    """The views of transfer-set rows `rows` (a slice or row indices), on `images`' device."""
    dev = images.device
    index = torch.as_tensor(transfer.index[rows], device=dev)
    params = {k: torch.as_tensor(v[rows], device=dev) for k, v in transfer.params.items()}
    geometric, color = transfer.aug_parts
    return replay_batch(images, index, params, geometric=geometric, color=color)


# ----------------------------------------------------------------------------- the set


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
        return _parts(self.aug, int(self.meta.get("image_size", 32)))

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


# ----------------------------------------------------------------------------- writing


def _schema(num_classes: int, meta: Mapping[str, Any]) -> pa.Schema:
    import pyarrow as pa

    cols = [pa.field("index", pa.int64()), pa.field("epoch", pa.int32())]
    cols += [pa.field(k, pa.int16() if k in INT_PARAMS else pa.float32()) for k in AUG_KEYS]
    cols.append(pa.field("logits", pa.list_(pa.float32(), num_classes)))
    return pa.schema(cols, metadata={META_KEY: json.dumps(meta, sort_keys=True).encode()})


def _epoch_table(
    schema: pa.Schema, epoch: int, order: Tensor, params: Mapping[str, Tensor], logits: np.ndarray
) -> pa.Table:
    import pyarrow as pa

    n, c = logits.shape
    arrays = [pa.array(order.numpy().astype(np.int64)), pa.array(np.full(n, epoch, np.int32))]
    for k in AUG_KEYS:
        dtype = np.int16 if k in INT_PARAMS else np.float32
        arrays.append(pa.array(params[k].numpy().astype(dtype)))
    flat = pa.array(np.ascontiguousarray(logits, dtype=np.float32).reshape(-1))
    arrays.append(pa.FixedSizeListArray.from_arrays(flat, c))
    return pa.Table.from_arrays(arrays, schema=schema)


@torch.no_grad()
def epoch_logits(
    ensemble: Ensemble,
    images: Tensor,
    order: Tensor,
    params: Mapping[str, Tensor],
    *,
    batch_size: int,
    parts: tuple[bool, bool],
) -> np.ndarray:
    """(n, C) ensemble logits of one epoch's views (view p = image order[p], params[·][p])."""
    out = [ensemble.logits(ensemble.preprocess(x)).float().cpu()
           for _, _, x in replay_epoch(images, order, params, batch_size, parts=parts)]  # fmt: skip
    return torch.cat(out).numpy()


def transfer_meta(
    ensemble: Ensemble, splits: Splits, epochs: int, seed: int, aug: AugConfig
) -> dict[str, Any]:
    """The metadata a transfer set carries (ensemble accuracies are measured on `splits`:
    taken from the teacher manifest when it was measured on the same splits, else measured)."""
    measured = ensemble.manifest.get("ensemble") or {}
    if ensemble.manifest.get("dataset_fingerprint") == splits.fingerprint and measured:
        val, test = float(measured["val/acc"]), float(measured["test/acc"])
    else:
        val = ensemble.accuracy(*(torch.as_tensor(a) for a in splits.split("val")))
        test = ensemble.accuracy(*(torch.as_tensor(a) for a in splits.split("test")))
    return {
        "format_version": FORMAT_VERSION,
        "dataset": splits.name,
        "dataset_fingerprint": splits.fingerprint,
        "teacher_fingerprints": list(ensemble.fingerprints),
        "teacher_dataset_fingerprint": ensemble.manifest.get("dataset_fingerprint"),
        "ensemble_val_acc": val,
        "ensemble_test_acc": test,
        "aug": aug.to_dict(),
        "epochs": int(epochs),
        "views_per_epoch": len(splits.train_y),
        "seed": int(seed),
        "num_classes": splits.num_classes,
        "image_size": int(min(splits.image_shape[1:])),
        "preprocess": ensemble.preprocess.to_dict(),
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }


def write_transfer_set(
    path: str | Path,
    ensemble: Ensemble,
    splits: Splits,
    epochs: int,
    *,
    seed: int = 0,
    aug: AugConfig | None = None,
    batch_size: int = 1000,
    device: str | torch.device | None = None,
    log: Callable[[str], None] | None = None,
) -> Path:
    """Write `epochs` augmented epochs of the train split with the ensemble's logits to `path`
    (Parquet, one row group per epoch; a temporary file renamed into place at the end).

    Epoch e's order and views are `epoch_plan(n, seed=seed, epoch=e, aug=aug)`: CPU generators,
    so the file does not depend on the device or the batch size. `aug` defaults to
    `default_aug(splits)` (the paper's with HSV jitter for images); the ensemble sees each view
    with its own preprocessing. The metadata records the ensemble's accuracy on the test
    images under this augmentation (`ensemble_test_view_acc`). `device` defaults to the ensemble's (the members are moved there)."""
    import pyarrow.parquet as pq

    if epochs < 1:
        raise UserError(f"transfer set epochs {epochs} is invalid; must be ≥ 1")
    aug = aug if aug is not None else default_aug(splits)
    _check_aug(aug, splits)
    dev = torch.device(device) if device is not None else ensemble.device
    if dev != ensemble.device:
        ensemble.members = [m.to(dev) for m in ensemble.members]
    meta = transfer_meta(ensemble, splits, epochs, seed, aug)
    # Resident on the device (uint8 stays uint8: 4× smaller); batches are gathered by index.
    images = DeviceSplit.from_numpy(splits.train_x, splits.train_y, dev).x
    n = len(splits.train_y)
    parts = _parts(aug, meta["image_size"])
    # The ensemble's accuracy on the views it labels: on test images under the same
    # augmentation (how good the targets are on unseen data), then on the stored train views.
    meta["ensemble_test_view_acc"] = view_accuracy(
        ensemble, splits.test_x, splits.test_y, aug, seed=seed, batch_size=batch_size
    )
    labels = np.asarray(splits.train_y)
    hits = 0
    path = Path(path)
    tmp = temp_path_for(path)
    try:
        with pq.ParquetWriter(tmp, _schema(splits.num_classes, meta), compression="zstd") as w:
            from tqdm import tqdm

            bar = tqdm(range(epochs), desc="transfer set (epochs)", unit="ep", disable=log is None)
            for e in bar:
                t0 = time.perf_counter()
                order, params = epoch_plan(n, seed=seed, epoch=e, aug=aug)
                logits = epoch_logits(
                    ensemble, images, order, params, batch_size=batch_size, parts=parts
                )
                hits += int((logits.argmax(1) == labels[order.numpy()]).sum())
                w.write_table(_epoch_table(w.schema, e, order, params, logits), n)
                bar.set_postfix_str(f"{n} views, {time.perf_counter() - t0:.1f} s/epoch")
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    if log is not None:
        log(
            f"ensemble accuracy: test {100 * meta['ensemble_test_acc']:.2f}%, test views "
            f"{100 * meta['ensemble_test_view_acc']:.2f}%, stored train views "
            f"{100 * hits / max(n * epochs, 1):.2f}%"
        )
    return path


@torch.no_grad()
def view_accuracy(
    ensemble: Ensemble,
    x: np.ndarray,
    y: np.ndarray,
    aug: AugConfig,
    *,
    seed: int,
    batch_size: int = 1000,
) -> float:
    """The ensemble's accuracy on one augmented view of each image of (x, y) (seeded)."""
    dev = ensemble.device
    images = DeviceSplit.from_numpy(x, y, dev).x
    order, params = epoch_plan(len(y), seed=seed + 7919, epoch=0, aug=aug)  # not a train stream
    logits = epoch_logits(
        ensemble, images, order, params, batch_size=batch_size,
        parts=_parts(aug, int(min(x.shape[2:]))),
    )  # fmt: skip
    return float((logits.argmax(1) == np.asarray(y)[order.numpy()]).mean()) if len(y) else 0.0


def default_aug(splits: Splits) -> AugConfig:
    """The transfer set's augmentation for a dataset: the paper's (mirror, 24–32 px crops
    resized, HSV jitter) for images; mirror only for non-image float data (`synthetic-sep`):
    its features are N(0, 1), not colours in [0, 1], and a crop would change what they mean."""
    size = int(min(splits.image_shape[1:]))
    if splits.train_x.dtype == np.uint8 and splits.image_shape[0] == 3:
        return default_aug_for_images(size)
    if splits.train_x.dtype == np.uint8:  # grey or multispectral images: no colour jitter
        return replace(default_aug_for_images(size), hsv=None)
    return AugConfig(mirror=True, crop_min=size, crop_max=size, translate=0, hsv=None)


def resolve_aug_name(name: str, splits: Splits) -> str:
    """The named augmentation "auto" stands for on this dataset (see `default_aug`)."""
    if name != "auto":
        return name
    if splits.train_x.dtype == np.uint8:
        return "paper_hsv" if splits.image_shape[0] == 3 else "paper"
    return "mirror"


def transfer_aug(name: str, splits: Splits) -> AugConfig:
    """A transfer set's augmentation by name: "auto" (`default_aug`), "paper", "paper_hsv",
    "mirror" (mirror only) or "none"."""
    size = int(min(splits.image_shape[1:]))
    named = {
        "auto": lambda: default_aug(splits),
        "paper": lambda: replace(default_aug_for_images(size), hsv=None),
        "paper_hsv": lambda: default_aug_for_images(size),
        # The teachers' own training augmentation (`TrainConfig.augment` "flip_translate"):
        # the ensemble labels views like the ones it learned from.
        "flip_translate": lambda: AugConfig(
            mirror=True, crop_min=size, crop_max=size, translate=max(1, size // 8)
        ),
        "mirror": lambda: AugConfig(mirror=True, crop_min=size, crop_max=size),
        "none": lambda: AugConfig(mirror=False, crop_min=size, crop_max=size),
    }
    if name not in named:
        raise UserError(f"transfer augmentation {name!r} is unknown; valid: {', '.join(named)}")
    return named[name]()


def default_aug_for_images(size: int) -> AugConfig:
    """The paper's: mirror, an S×S crop with S in [¾·size, size] resized back, HSV jitter."""
    lo = max(1, round(size * 0.75))  # 24 of 32 px
    return AugConfig(mirror=True, crop_min=lo, crop_max=size, translate=0, hsv=HSVJitter())


def _check_aug(aug: AugConfig, splits: Splits) -> None:
    if aug.hsv is not None and splits.train_x.dtype != np.uint8:
        raise UserError(
            f"HSV jitter needs images (uint8, colours in [0, 1]); dataset {splits.name!r} is "
            f"{splits.train_x.dtype} data: use an augmentation without hsv"
        )
    if aug.hsv is not None and splits.image_shape[0] != 3:
        raise UserError(
            f"HSV jitter needs 3-channel RGB images; dataset {splits.name!r} has "
            f"{splits.image_shape[0]} channel(s): use an augmentation without hsv"
        )


def _parts(aug: AugConfig, size: int) -> tuple[bool, bool]:
    """(geometric, color) parts of `aug` that are not the identity on size×size images."""
    return (aug.mirror or aug.crop_min < size or aug.translate > 0, aug.hsv is not None)


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
        msg = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise UserError(f"transfer set {path} is corrupt ({msg}); write it again") from None


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
    need = ("dataset_fingerprint", "teacher_fingerprints", "epochs", "views_per_epoch",
            "num_classes", "aug")  # fmt: skip
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
        raise UserError(
            f"transfer set {path} was made for dataset fingerprint {meta['dataset_fingerprint']} "
            f"({meta.get('dataset')}), not {splits.fingerprint} ({splits.name}): regenerate it "
            "for this dataset / split settings"
        )
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


def _read_table(path: Path, pf):
    import pyarrow as pa

    try:
        return pf.read()
    except (pa.ArrowException, OSError) as exc:
        msg = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise UserError(f"transfer set {path} is corrupt ({msg}); write it again") from None


def size_summary(path: str | Path) -> str:
    """'123.4 MiB' for a file."""
    return f"{os.path.getsize(path) / 2**20:.1f} MiB"
