"""W&B runs of the stages before the search: the teacher members and the transfer set.

- `log_teachers(root, manifest, mode, context)`: one run per teacher member (job type
  "teacher", named `teacher/member-K`), its per-epoch curves (train loss, val accuracy, ...)
  from the member's training history in the ensemble manifest, its spec, recipe and seed in
  the config and its val / test accuracy in the summary; the ensemble's accuracies join every
  member's summary.
- `log_transfer(root, meta, sha256, mode, context)`: one run (job type "transfer") whose
  config holds what made the transfer set (teachers, augmentation, epochs, views) and whose
  summary holds its sha256 and the ensemble's accuracy on the images and on the views.

Both are written after the stage ends (the histories are complete then, and a stage reused on
resume logs nothing twice: run ids are deterministic and resumed). Every run carries the run
context (`raydistill.tracking.context`): group and tags by experiment and dataset, and the
dataset, split settings and transfer set in its config.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from raydistill.tracking.tracker import make_tracker, resolve_mode

_TRANSFER_SUMMARY = (
    "ensemble_val_acc",
    "ensemble_test_acc",
    "ensemble_test_view_acc",
    "ensemble_train_view_acc",
)


def log_teachers(
    root: str | Path, manifest: Mapping[str, Any], mode: str | None, context: Mapping[str, Any]
) -> list[str]:
    """One W&B run per member of the teacher ensemble `manifest` (its manifest.json); their ids."""
    if resolve_mode(mode) == "off":
        return []
    cfg = manifest.get("config") or {}
    ensemble = {f"ensemble/{k}": v for k, v in (manifest.get("ensemble") or {}).items()}
    ids = []
    for k, member in enumerate(manifest.get("members") or []):
        config = {
            "stage": "teacher",
            "member": k,
            "seed": member.get("seed"),
            "spec": manifest.get("spec"),
            "train": cfg.get("train"),
            "params": member.get("params"),
        }
        tracker = make_tracker(
            mode,
            root=root,
            experiment=context["experiment"],
            cell="teacher",
            trial_id=f"member-{k}",
            config=config,
            tags=["teacher"],
            job_type="teacher",
            context=context,
        )
        for row in member.get("history") or []:
            tracker.log(row, step=int(row.get("epoch", 0)))
        summary = {key: member.get(key) for key in ("val/acc", "test/acc", "epochs", "wall_s")}
        tracker.finish({**summary, **ensemble}, status=str(member.get("status", "finished")))
        ids.append(tracker.run_id or "")
    return ids


def log_transfer(
    root: str | Path,
    meta: Mapping[str, Any],
    sha256: str,
    mode: str | None,
    context: Mapping[str, Any],
    path: str | Path | None = None,
) -> str | None:
    """One W&B run describing the transfer set (its file's metadata `meta`); its id."""
    if resolve_mode(mode) == "off":
        return None
    config = {
        "stage": "transfer",
        "path": str(path) if path else None,
        **{k: v for k, v in meta.items() if k not in _TRANSFER_SUMMARY},
    }
    tracker = make_tracker(
        mode,
        root=root,
        experiment=context["experiment"],
        cell="transfer",
        trial_id=sha256[:16],
        config=config,
        tags=["transfer"],
        job_type="transfer",
        context=context,
    )
    summary = {"sha256": sha256, **{k: meta[k] for k in _TRANSFER_SUMMARY if k in meta}}
    tracker.finish(summary, status="finished")
    return tracker.run_id
