"""`raydistill status DIR`: where a running or finished search (or a study's searches) stands,
read from its Tune storage, so it works while the search runs and from another machine
(`--storage s3://...`: the search publishes its search.json to `<storage>/_search/` when it
starts).

Per cell: trials done (ended: finished, stopped, diverged or errored) / running / pending of
those planned, the best validation accuracy so far by the one best-trial rule
(`raydistill.core.results`: ended trials only, so it is the number the search will report) and
an ETA. The ETA assumes trials keep their measured pace: a pending trial takes the mean
duration of the ended trials (or, before any ended, of the running ones projected to their last
epoch), a running trial its remaining epochs at its own pace, and the running trials' slots are
shared evenly among the cells that still have work.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import pandas as pd

from raydistill.core import results
from raydistill.core.errors import UserError
from raydistill.search.settings import SEARCH_FILE, STORAGE_OUTPUTS, SearchSettings

_PENDING = ("PENDING", "PAUSED")


@dataclass
class CellStatus:
    cell: str
    planned: int
    done: int
    running: int
    pending: int
    best_val: float | None
    eta_s: float | None


def search_dirs(directory: str | Path, storage: str | None = None) -> list[tuple[Path, str | None]]:
    """(search DIR, its storage) of DIR: DIR itself when it holds a search, else the searches of
    a study in it (`search/`, `twins/`; with `storage`, `<storage>/<name>` each)."""
    from raydistill.core.storage import exists, join, resolve

    d = Path(directory)
    base = resolve(storage, ".") if storage else None
    if (d / SEARCH_FILE).is_file() or (base and exists(join(base, STORAGE_OUTPUTS, SEARCH_FILE))):
        return [(d, base)]
    found = []
    for name in ("search", "twins"):
        sub = join(base, name) if base else None
        if (d / name / SEARCH_FILE).is_file() or (
            sub and exists(join(sub, STORAGE_OUTPUTS, SEARCH_FILE))
        ):
            found.append((d / name, sub))
    if not found:
        where = f" or under --storage {storage}" if storage else ""
        raise UserError(f"{d} holds no search or study ({SEARCH_FILE} not found{where})")
    return found


def load_settings(directory: Path, storage: str | None) -> SearchSettings:
    """The search's settings: DIR/search.json, else `<storage>/_search/search.json`; with
    `storage`, its Tune runs are read there (the search's own storage may be another path)."""
    from raydistill.core.storage import join, read_bytes

    if (directory / SEARCH_FILE).is_file():
        settings = SearchSettings.load(directory)
    else:
        assert storage is not None
        raw = json.loads(read_bytes(join(storage, STORAGE_OUTPUTS, SEARCH_FILE)))
        settings = SearchSettings(**raw)
    return replace(settings, storage=storage) if storage else settings


def cell_status(settings: SearchSettings, now: float | None = None) -> list[CellStatus]:
    """Each planned cell's progress (see the module docstring)."""
    from raydistill.core.cluster import quiet_ray
    from raydistill.search.table import trial_rows

    quiet_ray()  # Tune's look-ups of trials that have not reported yet are not news here
    now = time.time() if now is None else now
    pairs = trial_rows(settings)
    df = pd.DataFrame([{**row, "pending": t.status in _PENDING} for t, row in pairs])
    planned: dict[str, int] = {}
    for run in settings.runs:
        for cid, n in run["cells"].items():
            planned[cid] = planned.get(cid, 0) + int(n)
    if df.empty:
        df = pd.DataFrame(columns=["cell", "status", "pending", "val/acc", "test/acc", "trial_id"])
    pace = _pace(df, now)
    open_cells = 0
    out = []
    for cid, n in planned.items():
        rows = df[df["cell"] == cid]
        pending_rows = rows[rows["pending"].astype(bool)]
        running_rows = rows[(rows["status"] == "running") & ~rows["pending"].astype(bool)]
        done = len(rows) - len(pending_rows) - len(running_rows)
        pending = n - done - len(running_rows)
        best = results.best(rows) if len(rows) else rows
        work = _remaining(running_rows, pending, pace, now)
        open_cells += work is None or work > 0
        out.append(
            CellStatus(
                cid,
                n,
                done,
                len(running_rows),
                pending,
                float(best["val/acc"].iloc[0]) if len(best) else None,
                work,
            )
        )
    slots = max(1, int(((df["status"] == "running") & ~df["pending"].astype(bool)).sum()))
    for c in out:  # remaining work → wall time with the slots shared among the open cells
        if c.eta_s is not None:
            c.eta_s = c.eta_s * max(open_cells, 1) / slots
    return out


def _pace(df: pd.DataFrame, now: float) -> float | None:
    """Seconds one trial takes: the mean of the ended ones, else the running ones projected."""
    if df.empty:
        return None
    ended = df[(df["status"] != "running") & df["wall_s"].notna()] if "wall_s" in df else df[:0]
    if len(ended):
        return float(ended["wall_s"].mean())
    running = df[(df["status"] == "running") & ~df["pending"].astype(bool)]
    guesses = [_per_epoch(r, now) * _max_epochs(r) for _, r in running.iterrows()]
    guesses = [g for g in guesses if g is not None and math.isfinite(g)]
    return sum(guesses) / len(guesses) if guesses else None


def _remaining(running: pd.DataFrame, pending: int, pace: float | None, now: float) -> float | None:
    """Trial-seconds of work left in one cell (None: not known yet)."""
    if pending == 0 and running.empty:
        return 0.0
    if pace is None:
        return None
    left = pending * pace
    for _, r in running.iterrows():
        per = _per_epoch(r, now)
        epochs = int(r["epochs"]) if _known(r.get("epochs")) else 0
        left += pace if per is None else max(0.0, (_max_epochs(r) - epochs) * per)
    return left


def _per_epoch(row: pd.Series, now: float) -> float | None:
    if not (_known(row.get("epochs")) and _known(row.get("started_at")) and int(row["epochs"])):
        return None
    return (float(row["ended_at"] or now) - float(row["started_at"])) / int(row["epochs"])


def _max_epochs(row: pd.Series) -> int:
    train = json.loads(row["train"]) if isinstance(row.get("train"), str) else {}
    return int(train.get("max_epochs") or 1)


def _known(v: Any) -> bool:
    return v is not None and not (isinstance(v, float) and math.isnan(v))


def planned_total(settings: SearchSettings) -> int:
    """Trials the search hands out in all (adaptive allocation: its total, moved between cells
    as it runs, so the cells' own counts are their first shares)."""
    from raydistill.search.settings import run_total

    return sum(run_total(settings, run) for run in settings.runs)


def format_status(title: str, cells: list[CellStatus], total: int | None = None) -> str:
    """The console table of one search."""
    total = total if total is not None else sum(c.planned for c in cells)
    done = sum(c.done for c in cells)
    etas = [c.eta_s for c in cells]
    eta = "unknown" if None in etas else _duration(max(etas, default=0.0))
    lines = [
        f"{title}: {done}/{total} trials done, "
        f"{sum(c.running for c in cells)} running, {sum(c.pending for c in cells)} pending; "
        f"ETA {eta}",
        f"{'cell':22s} {'done':>9s} {'running':>7s} {'pending':>7s} {'best val/acc':>12s} {'ETA':>9s}",
    ]
    for c in cells:
        best = "–" if c.best_val is None else f"{100 * c.best_val:.2f}%"
        lines.append(
            f"{c.cell:22s} {f'{c.done}/{c.planned}':>9s} {c.running:>7d} {c.pending:>7d} "
            f"{best:>12s} {_duration(c.eta_s):>9s}"
        )
    return "\n".join(lines)


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "?"
    if seconds <= 0:
        return "done"
    m, s = divmod(round(seconds), 60)
    h, m = divmod(m, 60)
    return f"{h}h{m:02d}m" if h else f"{m}m{s:02d}s"
