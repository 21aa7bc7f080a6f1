"""Table 2's numbers: the trials table loaded, the top-k rule per cell, Table 2 (Markdown and
CSV), the progress of unfinished cells, and the per-family Pareto fronts (data, no plotting).

The package docstring (`raydistill.report`) says which files these become.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from raydistill.core.errors import UserError
from raydistill.core.numbers import optional_int, pct
from raydistill.core.results import rank
from raydistill.core.vocab import STATUSES
from raydistill.students.budget import format_budget

TOP_K = 5  # the paper averages the 5 best trials (by validation accuracy) of each experiment
HARD = "hard"  # the loss of the hard-label twins
REQUIRED = ("cell", "family", "depth", "budget", "trial_id", "status", "val/acc", "test/acc")


# ---------------------------------------------------------------- loading
def load_results(directory: str | Path) -> pd.DataFrame:
    """`DIR/trials.parquet` as a DataFrame with a `row` label column (UserError if unusable)."""
    path = Path(directory) / "trials.parquet"
    if not path.is_file():
        raise UserError(f"{path} does not exist; is {directory} a search directory?")
    try:
        df = pd.read_parquet(path)
    except Exception as exc:
        raise UserError(f"{path} is not a readable Parquet file: {exc}") from exc
    missing = [c for c in REQUIRED if c not in df.columns]
    if missing:
        raise UserError(f"{path} lacks column(s) {missing}; a results table needs {list(REQUIRED)}")
    df = df.copy()
    if "loss" not in df.columns:
        df["loss"] = None
    bad = sorted(set(df["status"]) - set(STATUSES))
    if bad:
        raise UserError(f"{path}: unknown trial status {bad[0]!r}; valid: {list(STATUSES)}")
    df["budget"] = df["budget"].astype("int64")
    # Tables of searches before budget kinds carry no kind: every budget is a parameter count.
    kinds = df["budget_kind"] if "budget_kind" in df.columns else pd.Series(None, index=df.index)
    df["budget_kind"] = kinds.fillna("params").astype(str)
    df["depth"] = df["depth"].astype("int64")
    # Hard-label twins: "hard" trials of an experiment that also distils (an experiment that
    # only trains on labels has no twins: its hard trials are its main rows).
    df["twin"] = (df["loss"] == HARD) & bool((df["loss"] != HARD).any())
    df["row"] = [
        row_label(f, d, t) for f, d, t in zip(df["family"], df["depth"], df["twin"], strict=True)
    ]
    return df


def row_label(family: str, depth: int, twin: bool = False) -> str:
    """'cnn-d2', or 'cnn-d2 (hard)' for a hard-label twin."""
    return f"{family}-d{int(depth)}" + (f" ({HARD})" if twin else "")


def read_teacher(directory: str | Path) -> dict[str, float] | None:
    """{val_acc, test_acc} of the teacher ensemble: the manifest's `teacher`, else the ensemble
    accuracies stored in the metadata of the transfer set the manifest names (`config.transfer`)."""
    path = Path(directory) / "manifest.json"
    try:
        manifest = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None
    teacher = manifest.get("teacher") if isinstance(manifest, dict) else None
    if isinstance(teacher, dict) and teacher.get("test_acc") is not None:
        return {k: float(v) for k, v in teacher.items() if isinstance(v, (int, float))}
    transfer = (
        (manifest.get("config") or {}).get("transfer") if isinstance(manifest, dict) else None
    )
    return _transfer_teacher(Path(transfer)) if transfer else None


def _transfer_teacher(path: Path) -> dict[str, float] | None:
    import pyarrow.parquet as pq

    from raydistill.distill.transfer.format import META_KEY

    try:
        meta = json.loads((pq.read_schema(path).metadata or {})[META_KEY])
        return {
            "val_acc": float(meta["ensemble_val_acc"]),
            "test_acc": float(meta["ensemble_test_acc"]),
        }
    except (OSError, KeyError, TypeError, ValueError):  # no file, not a transfer set: no reference
        return None


# ---------------------------------------------------------------- the top-k rule
def rank_done(df: pd.DataFrame) -> pd.DataFrame:
    """The trials the best-trial rule admits (`raydistill.core.results`), best validation accuracy
    first within each (row, budget kind, budget)."""
    return rank(df, BUDGET_KEYS)


def cell_stats(df: pd.DataFrame, top_k: int = TOP_K) -> pd.DataFrame:
    """One row per (row label, budget): status counts and the paper's accuracies."""
    keys = list(BUDGET_KEYS)
    counts = df.groupby(keys)["status"].value_counts().unstack(fill_value=0)
    counts = counts.reindex(columns=list(STATUSES), fill_value=0).add_prefix("n_")
    ident = df.groupby(keys)[["cell", "family", "depth", "loss", "twin"]].first()
    rows = [_top_k_stats(key, g.head(top_k)) for key, g in rank_done(df).groupby(keys, sort=True)]
    acc = pd.DataFrame(rows, columns=[*keys, *_ACC_COLS]).set_index(keys)
    out = counts.join(ident).join(acc, how="left").reset_index()
    out["top_k"] = out["top_k"].fillna(0).astype("int64")
    out["budget_label"] = [
        format_budget(int(b), k) for b, k in zip(out["budget"], out["budget_kind"], strict=True)
    ]
    return out.sort_values(keys).reset_index(drop=True)


BUDGET_KEYS = ("row", "budget_kind", "budget")  # a cell's budget: its kind and value
_ACC_COLS = ("top_k", "mean_test_acc", "sd_test_acc", "best_test_acc", "kth_test_acc",
             "best_val_acc", "best_trial", "best_params", "best_macs", "best_spec")  # fmt: skip


def _top_k_stats(key: tuple[str, str, int], top: pd.DataFrame) -> tuple[Any, ...]:
    # `top` is sorted by validation accuracy, best first: rank 1 is the paper's "best",
    # the last row the k-th best (the lower edge of Figure 1's band).
    first = top.iloc[0]
    params, macs = (optional_int(first[c]) if c in top else None for c in ("params", "macs"))
    return (
        key[0], str(key[1]), int(key[2]), len(top), float(top["test/acc"].mean()),
        float(top["test/acc"].std()) if len(top) > 1 else 0.0, float(top["test/acc"].iloc[0]),
        float(top["test/acc"].iloc[-1]), float(top["val/acc"].iloc[0]), str(first["trial_id"]), params, macs, first["spec"] if "spec" in top else None,
    )  # fmt: skip


def best_configs(df: pd.DataFrame) -> pd.DataFrame:
    """The best trial by validation accuracy of each (cell, loss): what export and W&B keep."""
    ranked = rank_done(df)
    best = ranked.groupby(list(BUDGET_KEYS), sort=True).head(1)
    cols = [c for c in ("cell", "row", "family", "depth", "budget", "budget_kind", "loss", "twin", "trial_id", "val/acc",
                        "test/acc", "params", "widths", "config", "checkpoint") if c in best]  # fmt: skip
    out = best[cols].reset_index(drop=True)
    if "widths" in out:
        out["widths"] = [list(map(int, w)) if w is not None else None for w in out["widths"]]
    return out


# ---------------------------------------------------------------- Table 2
def table2(stats: pd.DataFrame, teacher: dict[str, float] | None) -> pd.DataFrame:
    """Wide Table 2: row labels x budget labels, "mean (best) n=k" in percent (k trials)."""
    labels = budget_labels(stats)
    order = sorted(stats["row"].unique(), key=row_order)
    table = pd.DataFrame(index=order, columns=labels, data="")
    for r in stats.itertuples(index=False):
        col = r.budget_label
        if r.top_k:
            table.loc[r.row, col] = (
                f"{pct(r.mean_test_acc)} ({pct(r.best_test_acc)}) n={int(r.top_k)}"
            )
        else:
            table.loc[r.row, col] = "–"
    if teacher:
        table.loc["teacher ensemble"] = pct(teacher["test_acc"])
    table.index.name = "model"
    return table


def budget_labels(stats: pd.DataFrame) -> list[str]:
    """The budgets' labels, by kind (params first) then value: "1M", "3.16M", "40M-macs", "2ms"."""
    pairs = sorted(set(zip(stats["budget_kind"], stats["budget"], strict=True)),
                   key=lambda kb: (kb[0] != "params", kb[0], kb[1]))  # fmt: skip
    return [format_budget(int(b), k) for k, b in pairs]


def row_order(label: str) -> tuple[Any, ...]:
    # families in name order, then depth, then the main loss before its hard twin
    fam, _, rest = label.partition("-d")
    depth = int(rest.split(" ")[0]) if rest.split(" ")[0].isdigit() else 0
    return (fam, depth, label.endswith(f"({HARD})"))


def table2_csv(stats: pd.DataFrame, teacher: dict[str, float] | None) -> pd.DataFrame:
    """Numeric Table 2: one row per model, `<budget> mean` / `<budget> best` / `<budget> n`."""
    out = pd.DataFrame(index=sorted(stats["row"].unique(), key=row_order))
    for label in budget_labels(stats):
        part = stats[stats["budget_label"] == label].set_index("row")
        out[f"{label} mean"] = part["mean_test_acc"]
        out[f"{label} best"] = part["best_test_acc"]
        out[f"{label} n"] = part["top_k"].astype("Int64")
    if teacher:
        out.loc["teacher ensemble"] = {
            c: teacher["test_acc"] for c in out.columns if c.endswith(("mean", "best"))
        }
    out.index.name = "model"
    return out


def progress_lines(stats: pd.DataFrame) -> list[str]:
    """One line per cell that is not complete: its running / errored / diverged counts."""
    lines = []
    for r in stats.itertuples(index=False):
        open_ = {s: int(getattr(r, f"n_{s}")) for s in ("running", "error", "diverged")}
        if any(open_.values()):
            parts = ", ".join(f"{n} {s}" for s, n in open_.items() if n)
            lines.append(
                f"- {r.row} @ {r.budget_label}: {parts} ({int(r.n_finished + r.n_stopped)} done)"
            )
    return lines


def markdown(rep_table: pd.DataFrame, stats: pd.DataFrame, experiment: str, top_k: int) -> str:
    """table2.md: the table, how to read it, and the progress of unfinished cells."""
    header = "| " + " | ".join(["model", *rep_table.columns]) + " |"
    rule = "|" + "---|" * (len(rep_table.columns) + 1)
    body = ["| " + " | ".join([str(i), *map(str, r)]) + " |" for i, r in rep_table.iterrows()]
    n_trials = int(stats[[f"n_{s}" for s in STATUSES]].to_numpy().sum())
    lines = [
        f"# Table 2 — {experiment}",
        "",
        f"Test accuracy (%): mean of the (up to) {top_k} best trials by validation accuracy, "
        "in parentheses the best trial by validation accuracy, and n the trials averaged; the trials counted are those "
        "that finished or were stopped by their own schedule (ASHA-pruned, diverged and errored "
        f"trials never count; `table2.csv` has each cell's n). Columns are parameter budgets. "
        f"{n_trials} trials in all.",
        "",
        header,
        rule,
        *body,
    ]
    prog = progress_lines(stats)
    lines += ["", "## Not finished", "", *prog] if prog else ["", "All trials have ended."]
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------- Pareto fronts
PARETO_AXES = ("params", "macs", "latency_us")  # what a front's cost axis can be
_FRONT_COLS = ["family", "row", "budget_kind", "budget", "cell", "trial_id", "params", "macs",
               "latency_us", "test_acc", "val_acc", "on_front"]  # fmt: skip


def pareto(stats: pd.DataFrame, x: str = "params") -> pd.DataFrame:
    """Per family, the per-budget best trials and whether each is on the accuracy/`x` front.

    `x`: "params" (recorded), "macs" (recorded, or counted from the spec on the meta device)
    or "latency_us" (measured here: this machine's CPU at batch 1, median of repeated runs;
    only then are the students built)."""
    if x not in PARETO_AXES:
        raise UserError(f"Pareto axis {x!r} is invalid; valid: {', '.join(PARETO_AXES)}")
    pts = stats[stats["top_k"] > 0].copy()
    pts = pts[~pts["twin"].astype(bool)]
    if pts.empty:
        return pd.DataFrame(columns=_FRONT_COLS)
    pts["params"] = [
        p if p is not None and not pd.isna(p) else b
        for p, b in zip(pts["best_params"], pts["budget"], strict=True)
    ]
    pairs = zip(pts["best_macs"], pts["best_spec"], strict=True)
    pts["macs"] = [_macs(m, spec, count=x == "macs") for m, spec in pairs]
    pts["latency_us"] = [_latency(spec) if x == "latency_us" else None for spec in pts["best_spec"]]
    out = pts.rename(
        columns={"best_trial": "trial_id", "best_test_acc": "test_acc", "best_val_acc": "val_acc"}
    )
    out = out[_FRONT_COLS[:-1]].copy()
    out["params"] = out["params"].astype("int64")
    out["on_front"] = False
    for _fam, g in out[out[x].notna()].groupby("family"):
        best_so_far = -np.inf
        for idx in g.sort_values([x, "test_acc"], ascending=[True, False]).index:
            if out.at[idx, "test_acc"] > best_so_far:  # strictly better than every cheaper model
                out.at[idx, "on_front"] = True
                best_so_far = out.at[idx, "test_acc"]
    return out.sort_values(["family", x]).reset_index(drop=True)


# ---------------------------------------------------------------- allocation and warm starts
def allocation_markdown(directory: str | Path) -> str:
    """What `DIR/allocation/<run>.json` (written by the search's `CellSearcher`) records: each
    cell's trials and state under the run's allocation, and where warm-started cells were
    seeded from (empty when no run recorded one)."""
    lines = []
    for path in sorted((Path(directory) / "allocation").glob("*.json")):
        try:
            rec = json.loads(path.read_text())
            cells = rec["cells"]
        except (OSError, json.JSONDecodeError, KeyError, TypeError):
            continue  # a journal from another version: the trials table still says it all
        warm = "warm start across budgets" if rec.get("warm_start") else "no warm start"
        lines += [
            f"### Run `{path.stem}`: {rec.get('allocate')} allocation, {warm}, "
            f"{rec.get('total')} trials",
            "",
            "| cell | trials | state | best val (%) | optimistic (%) | front (%) | warm start |",
            "|---|---|---|---|---|---|---|",
        ]
        for cid, c in sorted(cells.items()):
            note = c.get("note") or ("–" if not c.get("warm_from") else "waiting")
            lines.append(
                f"| {cid} | {c['trials']} | {c['state']} | {pct(c.get('best'))} | "
                f"{pct(c.get('optimistic'))} | {pct(c.get('front'))} | {note} |"
            )
        lines.append("")
    if not lines:
        return ""
    head = [
        "## Trials per cell and warm starts",
        "",
        "`raydistill.search.allocation`: adaptive allocation stops a cell whose best "
        "validation accuracy plus twice its spread is below the best of a cell no larger; "
        "a warm-started cell's first trials are its next-smaller budget's best "
        "configurations.",
        "",
    ]
    return "\n".join(head + lines)


def _macs(recorded: Any, spec: Any, count: bool) -> int | None:
    # Tables written before MACs were recorded: counted from the spec when the axis needs them.
    if recorded is not None and not pd.isna(recorded):
        return int(recorded)
    if not count or not isinstance(spec, str):
        return None
    from raydistill.students.cost import count_macs

    return count_macs(json.loads(spec))


def _latency(spec: Any) -> float | None:
    if not isinstance(spec, str):
        return None
    from raydistill.students.cost import measure_latency

    return round(measure_latency(json.loads(spec)), 1)
