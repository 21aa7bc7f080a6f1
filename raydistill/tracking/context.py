"""What every W&B run of an experiment carries so that runs can be told apart by dataset.

A run context is a plain dict, built once per stage and passed to `make_tracker(context=...)`:

    {"experiment": "demo-search",
     "dataset": {"name", "source", "fingerprint", "classes", "num_classes", "image_shape",
                 "sizes", "val_size", "split_seed", "train_subset"},
     "transfer": {"sha256", "epochs", "views_per_epoch", "aug", "ensemble_*_acc"} | None}

Every run (trials, teacher members, the transfer set, the summary run) puts `dataset` and
`transfer` in its config, joins the group `<experiment>@<dataset name>` (two experiments with
the same `--out` name on two datasets no longer share a group) and is tagged
`dataset:<name>` and `experiment:<experiment>`. No wandb import here: plain data only.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

_SPLIT_KEYS = {"val_size": "val_size", "seed": "split_seed", "train_subset": "train_subset"}
_TRANSFER_KEYS = (
    "epochs",
    "views_per_epoch",
    "aug",
    "teacher_fingerprints",
    "ensemble_val_acc",
    "ensemble_test_acc",
    "ensemble_test_view_acc",
)


def describe_dataset(
    splits: Any, *, source: str | None = None, options: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """The dataset and split settings of `splits` (a `raydistill.data.Splits`); `options`:
    load_dataset's split keywords as given (val_size, seed, train_subset)."""
    # the split settings the splits carry (`Splits.settings`), else as given
    given = {k: v for k, v in (options or {}).items() if v is not None}
    opts = {**(getattr(splits, "settings", None) or {}), **given}
    out = {
        "name": str(splits.name), "source": str(source) if source else str(splits.name),
        "fingerprint": str(splits.fingerprint), "classes": [str(c) for c in splits.classes],
        "num_classes": int(splits.num_classes),
        "image_shape": [int(s) for s in splits.image_shape], "sizes": splits.sizes(),
    }  # fmt: skip
    out.update({name: opts.get(key) for key, name in _SPLIT_KEYS.items()})
    if out["val_size"] is None:  # the default (min(10000, 20 % of the pool)), as it came out
        out["val_size"] = out["sizes"]["val"]
    return out


def describe_transfer(transfer: Any) -> dict[str, Any] | None:
    """The transfer set's sha256 and what it holds (a `TransferSet`, or None: hard labels)."""
    if transfer is None:
        return None
    meta = getattr(transfer, "meta", {}) or {}
    return {
        "sha256": getattr(transfer, "fingerprint", None) or None,
        **{k: meta[k] for k in _TRANSFER_KEYS if k in meta},
    }


def run_context(
    experiment: str, dataset: Mapping[str, Any], transfer: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """The context of every run of `experiment` (see the module docstring)."""
    return {
        "experiment": str(experiment),
        "dataset": dict(dataset),
        "transfer": dict(transfer) if transfer else None,
    }


def group_of(context: Mapping[str, Any]) -> str:
    """The W&B group: `<experiment>@<dataset name>` (W&B allows 128 characters)."""
    return f"{context['experiment']}@{context['dataset']['name']}"[:128]


def tags_of(context: Mapping[str, Any]) -> list[str]:
    """`dataset:<name>`, `experiment:<experiment>` (W&B allows 64 characters a tag)."""
    return [
        f"dataset:{context['dataset']['name']}"[:64],
        f"experiment:{context['experiment']}"[:64],
    ]


def config_of(context: Mapping[str, Any]) -> dict[str, Any]:
    """The run-config keys of the context: experiment, dataset (+ split settings), transfer."""
    return {k: context.get(k) for k in ("experiment", "dataset", "transfer")}
