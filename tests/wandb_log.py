"""Test helper: read an offline W&B run back from its `.wandb` transaction logs.

`read_offline_run(root, run_id)` merges the run's attempts (`root/wandb/offline-run-*-<id>-a<k>/`)
into one `OfflineRun`: config, summary, history rows, tags, group, job type, exit codes and
artifacts. The record framing (`iter_records`) is `raydistill.tracking.tracker`'s, which needs it to
wait for a run's exit record; everything here is only for checking what the tests logged.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from raydistill.core.errors import UserError
from raydistill.tracking.tracker import iter_records, run_id

__all__ = ["OfflineRun", "iter_records", "read_offline_run", "run_dirs", "run_id"]


@dataclass
class OfflineRun:
    """What an offline W&B run recorded, merged over its attempts (directories) in order."""

    run_id: str
    dirs: list[Path]
    config: dict[str, Any] = field(default_factory=dict)
    summary: dict[str, Any] = field(default_factory=dict)
    history: list[dict[str, Any]] = field(default_factory=list)
    tags: list[str] = field(default_factory=list)
    group: str = ""
    job_type: str = ""
    project: str = ""
    exit_codes: list[int] = field(default_factory=list)
    artifacts: list[dict[str, Any]] = field(default_factory=list)


def run_dirs(root: str | Path, rid: str) -> list[Path]:
    """The local directories of run `rid` under `root/wandb/`, oldest attempt first."""
    wdir = Path(root) / "wandb"
    pat = re.compile(rf"^(offline-)?run-(\d{{8}}_\d{{6}})-{re.escape(rid)}(-a(\d+))?$")
    found = [(m, p) for p in wdir.glob(f"*{rid}*") if (m := pat.match(p.name)) and p.is_dir()]
    return [p for m, p in sorted(found, key=lambda mp: (mp[0][2], int(mp[0][4] or 0)))]


def read_offline_run(root: str | Path, rid: str) -> OfflineRun:
    """Config, summary, history, tags, artifacts of run `rid` from its `.wandb` logs."""
    dirs = run_dirs(root, rid)
    if not dirs:
        raise UserError(f"no W&B run {rid!r} under {Path(root) / 'wandb'}")
    out = OfflineRun(rid, dirs)
    for d in dirs:
        for rec in iter_records(d / f"run-{rid}.wandb"):
            _apply_record(out, rec)
    return out


def _apply_record(out: OfflineRun, rec: Any) -> None:
    kind = rec.WhichOneof("record_type")
    if kind == "run":
        r = rec.run
        out.tags, out.group, out.job_type, out.project = (
            list(r.tags),
            r.run_group,
            r.job_type,
            r.project,
        )
        _update(out.config, r.config.update)
    elif kind == "config":
        _update(out.config, rec.config.update)
    elif kind == "summary":
        _update(out.summary, rec.summary.update)
    elif kind == "history":
        row: dict[str, Any] = {}
        _update(row, rec.history.item)
        out.history.append(row)
    elif kind == "exit":
        out.exit_codes.append(rec.exit.exit_code)
    elif kind == "artifact":
        a = rec.artifact
        files = [e.path for e in a.manifest.contents]
        out.artifacts.append(
            {"name": a.name, "type": a.type, "aliases": list(a.aliases), "files": files}
        )


def _update(target: dict[str, Any], items: Any) -> None:
    # A key is one name ("val/acc" stays whole) or a path into nested dicts (a logged Table
    # arrives as ["table2", "_type"], ["table2", "path"], ...).
    for it in items:
        path = list(it.nested_key) or [it.key]
        if path[0] == "_wandb":
            continue
        node = target
        for part in path[:-1]:
            node = node.setdefault(part, {})
        node[path[-1]] = json.loads(it.value_json)
