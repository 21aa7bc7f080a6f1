"""The prune stage of a study: one trained net pruned to each of the scale's prune budgets.

`prune_stage(scale, out, splits, transfer, repeats, address=...)` runs after the seed repeats of
`raydistill.study.reproduce` when the scale has a `prune` section (`raydistill/study/scales/extended.yaml`):

- the source is teacher member K (`OUT/teacher/member-K.safetensors`) or the best distilled
  trial of a searched cell (its checkpoint in `OUT/study/trials.parquet`);
- for each budget the source is pruned (`raydistill.export.prune`: whole channels, ≤ budget, ≥ 99 %)
  and fine-tuned on the transfer set for `prune.max_epochs` (default: the search's epochs, so
  pruned and searched students see the same number of epochs) with the study's split seed.
  That run is the cell's row, `prune-<family>-d<depth>@<budget>`, appended to
  `OUT/study/trials.parquet`: Table 2, Figure 1, the Pareto fronts and export show "pruned to
  the budget" next to "searched at the budget" at equal parameters;
- the repeats (REPORT.md's ± std): fine-tuning pruned weights on a stored transfer set is
  deterministic (no random init, the views in their stored order: seeds 0 and 1 gave the same
  accuracy to 4 digits), so new seeds alone would report a false std of 0. A pruned cell's
  repeats are its *sources* instead: teacher members K, K+1, ... (up to `seeds` of them, as
  many as the ensemble has), each pruned and fine-tuned the same way with seed 1000 + j
  (`raydistill.study.repeats.SEED_OFFSET`); a searched-cell source has one repeat (n = 1). They
  join `seeds.csv` and `repeats.csv`.

Where the fine-tunes run: with an `address` (a study on Ray) each is a Ray task asking for
what the study's search trials asked for (`raydistill.study.repeats.training_options`: the
scale's cpus_per_trial and declared GPU share, for "auto" the pruned student's share; never
what the cluster has now), all submitted at once; the splits and the transfer set go into the
object store once, the source's weights travel as bytes (its path is on the driver's disk). A
task returns its student's files and row; the driver writes them under `OUT/prune/`. Without an
address (the API's plain path) they run one after another in this process.

Outputs: `OUT/prune/<cell>/<source>-seed-<n>/`: a student (`raydistill.export.prune`: the export
layout, `checkpoint/`, `prune.json`; `load_student` loads it). A run whose `prune.json` names
the same source is reused, so a resumed study does not fine-tune again.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pandas as pd

from raydistill.core.errors import UserError
from raydistill.study.scale import Scale


def prune_stage(
    sc: Scale,
    out: Path,
    splits: Any,
    transfer: Path,
    repeats: pd.DataFrame,
    log: Callable[[str], None] = print,
    address: str | None = None,
) -> pd.DataFrame:
    """Add the pruned cells to `out/study` (trials, seeds.csv, repeats.csv); returns the seed
    repeats' summary with the pruned rows added (unchanged when the scale has no prune).
    `address`: run the fine-tunes as Ray tasks there (see the module docstring)."""
    if sc.prune is None:
        return repeats
    from raydistill.distill.transfer.format import load_transfer_set
    from raydistill.export.prune import load_source, prune_spec
    from raydistill.study.repeats import SEED_OFFSET

    study = out / "study"
    sources, base = prune_sources(sc, out)
    # Every refusal (budget above the net, ...) before any run; the pruned specs size the tasks.
    specs = [prune_spec(*load_source(sources[0]), b)[0] for b in sc.prune.budgets]
    ts = load_transfer_set(transfer, splits=splits)
    pairs = [(sources[0], sc.data.seed)]  # the trials row, then the repeats
    pairs += [(src, SEED_OFFSET + j) for j, src in enumerate(sources)]
    rows: dict[tuple[int, int], dict[str, Any]] = {}
    todo: list[tuple[tuple[int, int], dict[str, Any]]] = []
    for b, budget in enumerate(sc.prune.budgets):
        for i, (source, seed) in enumerate(pairs):
            job = _job(sc, source, budget, seed, base, out / "prune", specs[b], log)
            if "row" in job:
                rows[b, i] = job["row"]
            else:
                todo.append(((b, i), job))
    rows.update(_run_jobs(todo, splits, ts, sc, address, log))
    keys = sorted(rows)
    _append_trials(study, [rows[k] for k in keys if k[1] == 0], experiment=f"{sc.name}-prune")
    return _add_repeats(study, [rows[k] for k in keys if k[1] > 0])


def prune_sources(sc: Scale, out: Path) -> tuple[list[Path], dict[str, Any]]:
    """(the nets to prune: the row's first, then the other repeats' sources; the fine-tune's
    TrainConfig entries before `prune.train`)."""
    p = sc.prune
    assert p is not None
    fixed = {k: v for k, v in sc.search.train.items() if not isinstance(v, dict)}
    if p.source.startswith("teacher"):
        k, n = int(p.source.partition(":")[2] or 0), sc.teacher.members
        members = [(k + j) % n for j in range(min(sc.seeds, n))]
        return [out / "teacher" / f"member-{m}.safetensors" for m in members], fixed
    from raydistill.core import results
    from raydistill.report import load_results

    df = load_results(out / "study")
    best = results.best(df[(df["cell"] == p.source) & ~df["twin"]])
    if best.empty or not best["checkpoint"].iloc[0]:
        raise UserError(f"prune.source {p.source!r}: the study has no finished trial of that cell")
    return [_local_copy(best.iloc[0], out)], json.loads(best["train"].iloc[0])


def _local_copy(row: Any, out: Path) -> Path:
    """The searched trial's checkpoint files, read through its storage URI (s3://, gs://,
    file:// or a path: the driver need not share the worker's disk) into out/prune/sources/."""
    from raydistill.core import storage
    from raydistill.export.fetch import EXPORT_FILES, checkpoint_location

    dest = out / "prune" / "sources" / str(row["trial_id"])
    if not all((dest / name).is_file() for name in EXPORT_FILES):
        storage.fetch(checkpoint_location(row), EXPORT_FILES, dest)
    return dest


def _job(
    sc: Scale,
    source: Path,
    budget: Any,
    seed: int,
    base: dict[str, Any],
    root: Path,
    spec: dict[str, Any],
    log: Callable[[str], None],
) -> dict[str, Any]:
    """One prune + fine-tune to run, or (`row`) its earlier result when `prune.json` there
    names the same source."""
    from raydistill.export.prune import load_source, pruned_cell, read_prune_row
    from raydistill.students.budget import parse_param_count
    from raydistill.training.config import TrainConfig

    p = sc.prune
    assert p is not None
    cell = pruned_cell(load_source(source)[0], parse_param_count(budget))
    where = root / cell.replace("@", "_") / f"{source.stem}-seed-{seed}"
    done = where / "prune.json"
    if done.is_file() and (where / "spec.json").is_file():
        row = read_prune_row(done)
        if json.loads(row["config"]).get("source") == str(source):
            log(f"   reusing {cell} seed {seed}: test {row['test/acc']}")
            return {"row": {**row, "experiment": f"{sc.name}-prune", "seed": seed}}
    shutil.rmtree(where, ignore_errors=True)  # an interrupted run, or another source's
    epochs = p.max_epochs or sc.search.max_epochs
    cfg = TrainConfig.from_dict(
        {**base, **p.train, "max_epochs": epochs, "seed": seed, "device": "auto"}
    )
    return {"source": str(source), "budget": budget, "seed": seed, "cell": cell,
            "where": str(where), "config": cfg.to_dict(), "spec": spec,
            "experiment": f"{sc.name}-prune"}  # fmt: skip


def fine_tune_job(
    job: dict[str, Any], splits: Any, ts: Any, weights: dict[str, Any] | None = None
) -> dict[str, Any]:
    """Prune and fine-tune one job; {"row": its trials row}. In this process (no `weights`)
    the student is written in place; in a Ray task `weights` holds the source's spec and
    safetensors bytes, the student is written to a temporary directory and its files come
    back as {"files": {relative path: bytes}} for the driver to write."""
    from raydistill.export.prune import prune_to_budget, trials_row
    from raydistill.training.config import TrainConfig

    cfg = TrainConfig.from_dict(job["config"])
    run = {"data": splits, "transfer": ts, "config": cfg}
    if weights is None:
        res = prune_to_budget(job["source"], job["budget"], out_dir=job["where"], **run)
        return {"row": trials_row(res, experiment=job["experiment"], seed=job["seed"])}
    import tempfile

    from safetensors.torch import load

    with tempfile.TemporaryDirectory(prefix="raydistill-prune-") as tmp:
        staged = Path(tmp) / "student"
        source = (weights["spec"], load(weights["state"]))
        res = prune_to_budget(job["source"], job["budget"], out_dir=staged, weights=source,
                              moved_to=job["where"], **run)  # fmt: skip
        files = {str(f.relative_to(staged)): f.read_bytes()
                 for f in sorted(staged.rglob("*")) if f.is_file()}  # fmt: skip
    return {"row": trials_row(res, experiment=job["experiment"], seed=job["seed"]), "files": files}


def _run_jobs(
    todo: list[tuple[Any, dict[str, Any]]],
    splits: Any,
    ts: Any,
    sc: Scale,
    address: str | None,
    log: Callable[[str], None],
) -> dict[Any, dict[str, Any]]:
    """Each job's row, by key: in this process one after another, or as Ray tasks at
    `address` with the search trials' resources (the module docstring)."""
    if not todo:
        return {}
    if address is None:
        return {key: _logged(fine_tune_job(job, splits, ts)["row"], log) for key, job in todo}
    from raydistill.core.cluster import ray_session
    from raydistill.core.resources import check_gpu_request, least_request
    from raydistill.study.repeats import training_options

    resources = sc.search.trial_resources()
    with ray_session(address) as ray:
        check_gpu_request(least_request(sc.search.gpus_per_trial), address,
                          "search.gpus_per_trial")  # fmt: skip
        task = ray.remote(max_retries=1)(fine_tune_job)
        data_ref, ts_ref = ray.put(splits), ray.put(ts)  # once for every fine-tune
        weights = {s: ray.put(_source_payload(s)) for s in {job["source"] for _, job in todo}}
        pending = {
            task.options(
                **training_options(job["spec"], job["config"], splits, **resources)
            ).remote(job, data_ref, ts_ref, weights[job["source"]]): (key, job)
            for key, job in todo
        }
        out = {}
        while pending:
            done, _ = ray.wait(list(pending), num_returns=1)
            key, job = pending.pop(done[0])
            result = ray.get(done[0])
            _write_student(Path(job["where"]), result["files"])
            out[key] = _logged(result["row"], log)
    return out


def _source_payload(source: str) -> dict[str, Any]:
    """A prune source as a task reads it: its spec and its weights as safetensors bytes."""
    from safetensors.torch import save

    from raydistill.export.prune import load_source

    spec, state = load_source(source)
    return {"spec": spec, "state": save({k: v.contiguous() for k, v in state.items()})}


def _write_student(where: Path, files: dict[str, bytes]) -> None:
    """A task's student files into `where` (replaced as a whole, atomically)."""
    from raydistill.core.manifest import atomic_dir

    with atomic_dir(where) as tmp:
        for name, blob in files.items():
            (tmp / name).parent.mkdir(parents=True, exist_ok=True)
            (tmp / name).write_bytes(blob)


def _logged(row: dict[str, Any], log: Callable[[str], None]) -> dict[str, Any]:
    source = json.loads(row["config"])
    log(
        f"   {row['cell']} ({row['params']:,} params from {source['source_params']:,} in "
        f"{Path(source['source']).name}) seed {row['seed']}: test {row['test/acc']}"
    )
    return row


def _append_trials(study: Path, rows: list[dict[str, Any]], experiment: str) -> None:
    """Replace this stage's rows of `study/trials.parquet` with `rows` (atomically)."""
    import pyarrow as pa

    from raydistill.core.manifest import atomic_write_bytes
    from raydistill.search import TRIALS_SCHEMA

    path = study / "trials.parquet"
    old = pd.read_parquet(path)
    old = old[old["experiment"] != experiment]
    new = pa.Table.from_pylist(rows, schema=TRIALS_SCHEMA).to_pandas()
    frame = pd.concat([old, new], ignore_index=True)
    atomic_write_bytes(path, frame.to_parquet(index=False))


def _add_repeats(study: Path, runs: list[dict[str, Any]]) -> pd.DataFrame:
    """Add the pruned cells' seed runs to seeds.csv and return / write repeats.csv."""
    from raydistill.core.manifest import atomic_write_text
    from raydistill.report import row_label
    from raydistill.study.repeats import summarize

    new = pd.DataFrame([{
        "row": row_label(r["family"], r["depth"]), "cell": r["cell"], "family": r["family"],
        "depth": r["depth"], "budget": r["budget"], "twin": False, "trial_id": r["trial_id"],
        "seed": r["seed"], "status": r["status"], "val_acc": r["val/acc"],
        "test_acc": r["test/acc"], "epochs": r["epochs"], "wall_s": r["wall_s"],
    } for r in runs])  # fmt: skip
    path = study / "seeds.csv"
    done = pd.read_csv(path) if path.is_file() else pd.DataFrame()
    if len(done):  # a rerun: this stage's earlier rows are replaced
        done = done[~done["cell"].isin(set(new["cell"]))]
    seeds = pd.concat([done, new], ignore_index=True)
    atomic_write_text(path, seeds.to_csv(index=False))
    summary = summarize(seeds)
    atomic_write_text(study / "repeats.csv", summary.to_csv(index=False))
    return summary
