"""Reading what an export needs: a trial's checkpoint through its storage URI (never a path
opened on the driver as if it shared the workers' disks) and the dataset to re-verify on.

A recorded checkpoint is a URI (`s3://...`, `gs://...`, `file://...`) or a path, as the search
recorded it (`raydistill.search.table`); when it is gone, `storage=` (export's `--storage`)
re-roots it onto another copy of the search's Tune storage: Tune's layout is
`<storage>/<run name>/<trial dir>/checkpoint_NNNNNN`, so its last three parts are kept.
Only `checkpoint.json` and `best.safetensors` are fetched (no optimizer, no current weights).
"""

from __future__ import annotations

import contextlib
import tempfile
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from raydistill.core import storage as st
from raydistill.core.errors import UserError

if TYPE_CHECKING:
    from raydistill.data import Splits

EXPORT_FILES = ("checkpoint.json", "best.safetensors")


def checkpoint_location(row: Mapping[str, Any], storage: str | None = None) -> str:
    """Where a trial's checkpoint is: as recorded, or re-rooted onto `storage`."""
    recorded = str(row.get("checkpoint") or "")
    if not recorded or recorded == "None":
        raise UserError(f"trial {row['trial_id']} of {row['cell']} has no recorded checkpoint")
    if storage is None or _readable(recorded):  # re-rooted only when the recorded one is gone
        return recorded
    tail = recorded.partition("?")[0].rstrip("/").split("/")[-3:]
    return st.join(st.resolve(storage, "."), *tail)


def _readable(location: str) -> bool:
    try:
        return st.exists(location)
    except (OSError, UserError):  # unreachable or not a valid URI here
        return False


@contextlib.contextmanager
def fetched_checkpoint(row: Mapping[str, Any], storage: str | None = None) -> Iterator[Path]:
    """A local copy of the files export reads from the trial's checkpoint, for the block."""
    where = checkpoint_location(row, storage)
    with tempfile.TemporaryDirectory(prefix="raydistill-export-") as d:
        try:
            yield st.fetch(where, EXPORT_FILES, d)
        except UserError as exc:
            raise UserError(f"trial {row['trial_id']} of {row['cell']}: {exc}") from None


def resolve_splits(
    manifest: Mapping[str, Any], *, splits: Splits | None = None, data: str | None = None
) -> tuple[Splits | None, str]:
    """The dataset to re-verify test accuracy on, or (None, why not)."""
    from raydistill.data import load_dataset

    want = manifest.get("dataset_fingerprint")
    if splits is None:
        cfg = manifest.get("config") or {}
        source = data or data_source(cfg)
        if not source:
            return None, "no dataset given (--data) and none recorded in the search manifest"
        try:
            splits = load_dataset(source, **_split_options(cfg))
        except (UserError, OSError) as exc:
            return None, f"dataset {source!r} could not be loaded ({exc})"
    if want and splits.fingerprint != want:
        return None, f"dataset fingerprint {splits.fingerprint} differs from the search's {want}"
    return splits, ""


def data_source(cfg: Mapping[str, Any]) -> str | None:
    """The dataset source a search manifest's config recorded."""
    data = cfg.get("data")
    if isinstance(data, Mapping):
        data = data.get("source")
    return str(data) if data else None


def _split_options(cfg: Mapping[str, Any]) -> dict[str, Any]:
    """load_dataset's keyword arguments as the search recorded them (`config.data_options`)."""
    src = cfg.get("data_options")
    if not isinstance(src, Mapping):
        src = cfg.get("data") if isinstance(cfg.get("data"), Mapping) else {}
    keys = ("val_size", "seed", "train_subset", "cache_dir")
    return {k: src[k] for k in keys if src.get(k) is not None}
