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

The schema metadata `raydistill.distill.transfer.writer` (JSON) holds the format version, dataset and teacher
fingerprints, the ensemble's val / test accuracy, the augmentation settings, epochs, views per
epoch, seed and number of classes. `load_transfer_set` checks all of it and refuses (one-line
UserError) a file made for another dataset or teacher, or one that is truncated or corrupt.
`TransferSet.fingerprint` is the sha256 of the file's bytes.

The pieces: `raydistill.distill.transfer.format` (schema, `TransferSet`, `load_transfer_set`),
`raydistill.distill.transfer.aug` (augmentations by name), `raydistill.distill.shards` (the ensemble's logits
for the views, split across GPU workers when the Ray cluster has GPUs). This module writes the
file and re-exports the public names of the other two.
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Callable, Mapping
from contextlib import ExitStack
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import Tensor

from raydistill.core.errors import UserError
from raydistill.core.manifest import atomic_path
from raydistill.data import AUG_KEYS, AugConfig
from raydistill.data.replay import replay_batch
from raydistill.distill.shards import member_logits, view_logits
from raydistill.distill.transfer.aug import (
    aug_parts,
    check_aug,
    default_aug,
    teacher_augment,
    view_gap,
)
from raydistill.distill.transfer.format import (
    FORMAT_VERSION,
    INT_PARAMS,
    TransferSet,
    schema,
)
from raydistill.training.evaluation import accuracy_of

if TYPE_CHECKING:
    import pyarrow as pa

    from raydistill.data import Splits
    from raydistill.distill.ensemble import Ensemble

__all__ = ["check_fit", "replay", "transfer_meta", "view_accuracy", "write_transfer_set"]

# ----------------------------------------------------------------------------- replay


def replay(transfer: TransferSet, images: Tensor, rows: slice | Tensor | np.ndarray) -> Tensor:
    """The views of transfer-set rows `rows` (a slice or row indices), on `images`' device."""
    dev = images.device
    index = torch.as_tensor(transfer.index[rows], device=dev)
    params = {k: torch.as_tensor(v[rows], device=dev) for k, v in transfer.params.items()}
    geometric, color = transfer.aug_parts
    return replay_batch(images, index, params, geometric=geometric, color=color)


# ----------------------------------------------------------------------------- writing


def _epoch_table(
    table_schema: pa.Schema,
    epoch: int,
    order: Tensor,
    params: Mapping[str, Tensor],
    logits: np.ndarray,
) -> pa.Table:
    import pyarrow as pa

    n, c = logits.shape
    arrays = [pa.array(order.numpy().astype(np.int64)), pa.array(np.full(n, epoch, np.int32))]
    for k in AUG_KEYS:
        dtype = np.int16 if k in INT_PARAMS else np.float32
        arrays.append(pa.array(params[k].numpy().astype(dtype)))
    flat = pa.array(np.ascontiguousarray(logits, dtype=np.float32).reshape(-1))
    arrays.append(pa.FixedSizeListArray.from_arrays(flat, c))
    return pa.Table.from_arrays(arrays, schema=table_schema)


def transfer_meta(
    ensemble: Ensemble, splits: Splits, epochs: int, seed: int, aug: AugConfig
) -> dict[str, Any]:
    """The metadata a transfer set carries (ensemble accuracies are measured on `splits`:
    taken from the teacher manifest when it was measured on the same splits, else measured)."""
    measured = ensemble.manifest.get("ensemble") or {}
    if ensemble.manifest.get("dataset_fingerprint") == splits.fingerprint and measured:
        val, test = float(measured["val/acc"]), float(measured["test/acc"])
    else:
        val, test = (_ensemble_accuracy(ensemble, splits, part) for part in ("val", "test"))
    return {
        "format_version": FORMAT_VERSION,
        "dataset": splits.name,
        "dataset_fingerprint": splits.fingerprint,
        "split": dict(splits.settings),  # what the fingerprint covers: a mismatch names the setting
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
        # external teachers: each one's source, kind, sha256 and declared input
        **({"teachers": ensemble.manifest["teachers"]} if "teachers" in ensemble.manifest else {}),
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }


def _ensemble_accuracy(ensemble: Ensemble, splits: Splits, part: str) -> float:
    x, y = (torch.as_tensor(a) for a in splits.split(part))
    return accuracy_of(member_logits(ensemble, x).mean(0), y)


def write_transfer_set(
    path: str | Path,
    ensemble: Ensemble | Any,
    splits: Splits,
    epochs: int,
    *,
    seed: int = 0,
    aug: AugConfig | None = None,
    batch_size: int = 1000,
    device: str | torch.device | None = None,
    address: str | None = None,
    gpus: int | None = None,
    log: Callable[[str], None] | None = None,
) -> Path:
    """Write `epochs` augmented epochs of the train split with the ensemble's logits to `path`
    (Parquet, one row group per epoch; a temporary file renamed into place at the end).

    Epoch e's order and views are `epoch_plan(n, seed=seed, epoch=e, aug=aug)`: CPU generators,
    so the file does not depend on the device, the batch size or the sharding. `aug` defaults
    to `default_aug` (the teachers' own augmentation); the ensemble sees each view with its own
    preprocessing. The metadata records the ensemble's accuracy on the test images under this
    augmentation (`ensemble_test_view_acc`); a warning says when it is well below the accuracy
    on the images (`view_gap`). A teacher made for other classes or image shapes is refused
    before anything is labelled (`check_fit`). `device` defaults to the
    ensemble's (the members are moved there). The labelling runs as `gpus` one-GPU Ray tasks
    (`raydistill.distill.shards`; default: the GPUs the teachers were declared to use, their
    manifest's) on the Ray session running in this process, else on the cluster at `address`,
    else at the teachers' (their manifest's), else on a local Ray; with 0 in this process."""
    if epochs < 1:
        raise UserError(f"transfer set epochs {epochs} is invalid; must be ≥ 1")
    ensemble = as_ensemble(ensemble, splits, device)
    check_fit(ensemble, splits)
    aug = aug if aug is not None else default_aug(splits, teacher_augment(ensemble.manifest))
    check_aug(aug, splits)
    dev = torch.device(device) if device is not None else ensemble.device
    if dev != ensemble.device:
        ensemble.members = [m.to(dev) for m in ensemble.members]
    config = ensemble.manifest.get("config") or {}
    ensemble.gpus = int(gpus if gpus is not None else config.get("gpus") or ensemble.gpus)
    with ExitStack() as stack:
        _join_cluster(stack, ensemble, address or config.get("address"))
        meta = transfer_meta(ensemble, splits, epochs, seed, aug)
        # The ensemble's accuracy on the views it labels: on test images under the same
        # augmentation (how good the targets are on unseen data), then on the stored views.
        meta["ensemble_test_view_acc"] = view_accuracy(
            ensemble, splits.test_x, splits.test_y, aug, seed=seed, batch_size=batch_size
        )
        hits = _write(Path(path), ensemble, splits, epochs, seed, aug, batch_size, meta, log)
    if log is not None:
        log(
            f"ensemble accuracy: test images {100 * meta['ensemble_test_acc']:.2f}%, their "
            f"augmented views {100 * meta['ensemble_test_view_acc']:.2f}%; stored train views "
            f"{100 * hits / max(len(splits.train_y) * epochs, 1):.2f}%"
        )
    gap = view_gap(meta["ensemble_test_acc"], meta["ensemble_test_view_acc"], len(splits.test_y))
    if gap is not None:
        warnings.warn(f"transfer set {path}: {gap}", UserWarning, stacklevel=2)
    return Path(path)


def check_fit(ensemble: Ensemble, splits: Splits) -> None:
    """Refuse (one line) a teacher made for another number of classes or image shape: its
    logits would label this dataset's images with another dataset's classes."""
    spec = ensemble.spec
    classes, shape = spec.get("num_classes"), spec.get("in_shape")
    fits_classes = classes is None or int(classes) == splits.num_classes
    fits_shape = shape is None or tuple(int(v) for v in shape) == tuple(splits.image_shape)
    if fits_classes and fits_shape:
        return
    config = ensemble.manifest.get("config") or {}
    made = config.get("data") or config.get("dataset")
    raise UserError(
        f"the teachers were made for {classes} classes of {_shape(shape)} images"
        f"{f' ({made})' if made else ''}, not {splits.num_classes} classes of "
        f"{_shape(splits.image_shape)} ({splits.name!r}): pass the teachers' --data, or train "
        "teachers on this dataset (raydistill teach)"
    )


def _shape(shape: Any) -> str:
    return "×".join(str(int(v)) for v in shape) if shape else "unknown"


def _join_cluster(stack: ExitStack, ensemble: Ensemble, address: str | None) -> None:
    """A Ray session for the labelling's GPU tasks when the ensemble is given GPUs and none is
    running in this process; a request no node can hold is refused in one line."""
    if ensemble.gpus < 1:
        return
    import ray

    from raydistill.core.cluster import ray_session
    from raydistill.core.resources import check_gpu_request

    if not ray.is_initialized():
        stack.enter_context(ray_session(address or "local"))
    check_gpu_request(1.0, address, "the transfer-set labelling (--gpus)")


def as_ensemble(teachers: Any, splits: Splits, device: Any = None) -> Ensemble:
    """An `Ensemble` as it is; anything else — an nn.Module, a callable, a source string
    (.pt2, .onnx, torchvision:ARCH=W, timm:ARCH=W, a teach directory) or a list of them — as
    one ensemble of external teachers (`raydistill.distill.external`), which take [0, 1] views."""
    from raydistill.distill.ensemble import Ensemble
    from raydistill.distill.external import external_ensemble

    if isinstance(teachers, Ensemble):
        return teachers
    items = list(teachers) if isinstance(teachers, (list, tuple)) else [teachers]
    return external_ensemble(items, splits, device if device is not None else "cpu")


def _write(
    path: Path,
    ensemble: Ensemble,
    splits: Splits,
    epochs: int,
    seed: int,
    aug: AugConfig,
    batch_size: int,
    meta: dict[str, Any],
    log: Callable[[str], None] | None,
) -> int:
    """Write the file (atomically); returns how many stored views the ensemble labels right."""
    import pyarrow.parquet as pq
    from tqdm import tqdm

    labels, n, hits = np.asarray(splits.train_y), len(splits.train_y), 0
    views = view_logits(
        ensemble,
        splits.train_x,
        seed=seed,
        epochs=range(epochs),
        aug=aug,
        batch_size=batch_size,
        parts=aug_parts(aug, meta["image_size"]),
    )
    with (
        atomic_path(path) as tmp,
        pq.ParquetWriter(tmp, schema(splits.num_classes, meta), compression="zstd") as w,
    ):
        bar = tqdm(total=epochs, desc="transfer set (epochs)", unit="ep", disable=log is None)
        t0 = time.perf_counter()
        for e, order, params, logits in views:
            hits += int((logits.argmax(1) == labels[order.numpy()]).sum())
            w.write_table(_epoch_table(w.schema, e, order, params, logits), n)
            bar.update(1)
            bar.set_postfix_str(f"{n} views, {time.perf_counter() - t0:.1f} s/epoch")
            t0 = time.perf_counter()
        bar.close()
    return hits


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
    if len(y) == 0:
        return 0.0
    parts = aug_parts(aug, int(min(x.shape[2:])))
    # seed + 7919: not a training stream
    _, order, _, logits = next(
        view_logits(
            ensemble,
            x,
            seed=seed + 7919,
            epochs=range(1),
            aug=aug,
            batch_size=batch_size,
            parts=parts,
        )
    )
    return float((logits.argmax(1) == np.asarray(y)[order.numpy()]).mean())
