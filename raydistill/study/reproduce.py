"""The paper's whole study in one call: teachers → transfer set → searches → seeds → report.

`reproduce(scale, out=...)` runs, in `out/`:

    teacher/          the teacher ensemble (`raydistill teach`)
    transfer.parquet  the pre-generated augmented epochs with the ensemble's logits
    search/           one search over every student row (MLP, CNN) × budget
    twins/            the CNN rows on hard labels of the same views (the paper's baselines)
    study/            both searches' trials in one table, the seed repeats, the report
    export/           the best student of every cell
    timings.json      each finished stage's wall time (kept across resumes)
    REPORT.md         scale, seeds, times, resources, Table 2 with ± std, the findings

The scale (`raydistill.study.scale`) is validated, and every search space it names is loaded, before
anything runs. Each finished stage is reused when the same command runs again, so an
interrupted study resumes. The findings are judged on the seed repeats (`raydistill.study.findings`).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pandas as pd

from raydistill.core.errors import UserError
from raydistill.study.prune_stage import prune_stage
from raydistill.study.report import report_markdown
from raydistill.study.scale import Scale, load_scale


def prepare(
    scale: str | Path | Scale, *, split_seed: int | None = None, seeds: int | None = None
) -> Scale:
    """The scale with the command line's overrides, and every space it names validated."""
    from raydistill.search.spaces.load import load_space

    sc = scale if isinstance(scale, Scale) else load_scale(scale)
    if seeds is not None and seeds < 1:
        raise UserError(f"--seeds {seeds} is invalid; must be ≥ 1")
    update: dict[str, Any] = {}
    if split_seed is not None:
        update["data"] = sc.data.model_copy(update={"seed": int(split_seed)})
    if seeds is not None:
        update["seeds"] = int(seeds)
    sc = sc.model_copy(update=update) if update else sc
    for name in [*sc.search.spaces, sc.hard_twins.space]:
        load_space(name)  # a missing or invalid space fails now, not after the teachers
    return sc


class _Stages:
    """Runs named stages, logs them, and adds each stage's wall time to timings.json, also
    when it is interrupted: the times of a resumed study add up to all the time it took."""

    def __init__(self, out: Path, log: Callable[[str], None]) -> None:
        self.path, self.log = out / "timings.json", log
        self.times: dict[str, float] = (
            json.loads(self.path.read_text()) if self.path.is_file() else {}
        )

    def __call__(self, name: str, fn: Callable[[], Any]) -> Any:
        from raydistill.core.manifest import atomic_write_text

        t = time.perf_counter()
        self.log(f"== {name}")
        try:
            return fn()
        finally:
            took = time.perf_counter() - t
            self.times[name] = self.times.get(name, 0.0) + took
            atomic_write_text(self.path, json.dumps(self.times, indent=2) + "\n")
            self.log(f"== {name}: {took:.0f} s")


def reproduce(
    scale: str | Path | Scale,
    *,
    out: str | Path,
    data: str | None = None,
    seeds: int | None = None,
    split_seed: int | None = None,
    wandb: str = "auto",
    address: str = "local",
    trials: int | None = None,
    storage: str | None = None,
    log: Callable[[str], None] = print,
) -> Path:
    """Run the study at `scale` into `out` (see the module docstring); returns `out/REPORT.md`.
    `storage`: shared storage for the searches' trials and checkpoints (`<storage>/search`,
    `<storage>/twins`; default `out/<search>/tune`), probed before anything runs."""
    sc = prepare(scale, split_seed=split_seed, seeds=seeds)
    wandb = _wandb_mode(wandb)
    storage = _check_cluster(storage, sc.search.gpus_per_trial, address)
    out = Path(out).expanduser().resolve()
    out.mkdir(parents=True, exist_ok=True)
    stage = _Stages(out, log)
    source = data or sc.data.source
    splits = stage("data", lambda: _load_splits(sc, source))
    track = _Tracking(sc, splits, source, out, wandb)
    ensemble = stage("teacher", lambda: _teacher(sc, splits, source, out / "teacher", address, log, track))  # fmt: skip
    transfer = stage("transfer", lambda: _transfer(sc, splits, ensemble, out / "transfer.parquet", log, track))  # fmt: skip
    run = {"splits": splits, "transfer": transfer, "wandb": wandb, "address": address,
           "storage": storage}  # fmt: skip
    search_dir = stage("search", lambda: _search(sc, out / "search", trials, **run))
    twins_dir = stage("hard twins", lambda: _twins(sc, out / "twins", trials, **run))
    study = stage("combine", lambda: combine(out / "study", [search_dir, twins_dir], ensemble))
    repeats = stage("seeds", lambda: _repeat(sc, study, splits, transfer, address, log, storage))
    if sc.prune is not None:  # pruned rows next to the searched ones (raydistill.study.prune_stage)
        repeats = stage(
            "prune", lambda: prune_stage(sc, out, splits, transfer, repeats, log, address)
        )
    rep = stage("report", lambda: _report(study, repeats, source))
    stage("export", lambda: _export(sc, study, splits, out / "export", address))
    text = report_markdown(sc, rep, repeats, stage.times, source, _teacher_summary(transfer))
    from raydistill.core.manifest import atomic_write_text

    path = atomic_write_text(out / "REPORT.md", text)
    log(f"raydistill: study done in {sum(stage.times.values()) / 60:.1f} min; report {path}")
    return path


def _check_cluster(storage: str | None, gpus_per_trial: float | str, address: str) -> str | None:
    """Refuse, before the teachers, a storage that cannot be written or that other nodes
    cannot reach, or a GPU share no node has; returns the storage as every node must see it
    (a path made absolute)."""
    from raydistill.core.storage import check_shared

    check_shared(storage, address)
    if storage is not None:
        from raydistill.core.storage import probe, resolve

        storage = resolve(storage, ".")
        probe(storage)
    from raydistill.core.resources import check_gpu_request, least_request

    if least_request(gpus_per_trial) > 0:
        from raydistill.core.cluster import ray_session

        with ray_session(address):
            check_gpu_request(least_request(gpus_per_trial), address, "search.gpus_per_trial")
    return storage


def _wandb_mode(mode: str) -> str:
    """ "auto" is tracking's own rule (WANDB_MODE, else online iff an API key is configured)."""
    from raydistill.tracking.tracker import resolve_mode

    return resolve_mode(None if mode == "auto" else mode)


def _load_splits(sc: Scale, source: str) -> Any:
    from raydistill.data import load_dataset

    d = sc.data
    return load_dataset(
        source, val_size=d.val_size, seed=d.seed, train_subset=d.train_subset,
        download=source == "cifar10",
    )  # fmt: skip


class _Tracking:
    """W&B runs of the study's teacher members and transfer set (`raydistill.tracking.stages`),
    in the study's group (`<scale>@<dataset>`), with its dataset and split settings."""

    def __init__(self, sc: Scale, splits: Any, source: str, out: Path, mode: str) -> None:
        from raydistill.tracking.context import describe_dataset

        d = sc.data
        options = {"val_size": d.val_size, "seed": d.seed, "train_subset": d.train_subset}
        self.name, self.out, self.mode = sc.name, out, mode
        self.dataset = describe_dataset(splits, source=source, options=options)

    def teachers(self, manifest: dict[str, Any]) -> None:
        from raydistill.tracking.context import run_context
        from raydistill.tracking.stages import log_teachers

        log_teachers(self.out, manifest, self.mode, run_context(self.name, self.dataset))

    def transfer(self, ts: Any, path: Path) -> None:
        from raydistill.tracking.context import describe_transfer, run_context
        from raydistill.tracking.stages import log_transfer

        ctx = run_context(self.name, self.dataset, describe_transfer(ts))
        log_transfer(self.out, ts.meta, ts.fingerprint, self.mode, ctx, path)


def _teacher(
    sc: Scale, splits: Any, source: str, where: Path, address: str, log, track: _Tracking
) -> Any:
    from raydistill.distill.ensemble import load_ensemble
    from raydistill.distill.teachers import teach

    if (where / "manifest.json").is_file():
        ens = load_ensemble(where)
        if ens.manifest.get("dataset_fingerprint") == splits.fingerprint:
            log(f"   reusing the teacher ensemble in {where}")
            return ens
        raise UserError(f"{where} holds teachers trained on other data or splits; use a new --out")
    from raydistill.search.settings import recorded_source

    t, d = sc.teacher, sc.data
    # The teachers learn on the views they will label (unless the scale says otherwise): a
    # teacher trained on flips and shifts labelled 24–32 px crops with HSV jitter at 68.9 %
    # against 81.5 % on the test set (tiny, CIFAR-10). "auto" is the teachers' own recipe.
    train = dict(t.train)
    if sc.transfer.aug != "auto":
        train.setdefault("augment", sc.transfer.aug)
    source = recorded_source(source)
    ens = teach(
        splits, t.family, t.members, t.epochs, where, widths=t.widths,
        width_scale=t.width_scale, spec_keys=t.spec, train=train, seed=d.seed, address=address,
        gpu_fraction=_member_gpus(sc, address), data_source=source,
        split={"val_size": d.val_size, "seed": d.seed, "train_subset": d.train_subset}, log=log,
    )  # fmt: skip
    track.teachers(ens.manifest)
    return ens


def _member_gpus(sc: Scale, address: str) -> float | None:
    """The teachers' declared GPUs per member (`TeacherSection.gpus_per_member`)."""
    from raydistill.core.resources import is_local, least_request

    if sc.teacher.gpus_per_member is not None:
        return sc.teacher.gpus_per_member
    if least_request(sc.search.gpus_per_trial) > 0 and not is_local(address):
        return 1.0  # a GPU study on a cluster: whole GPUs, which an autoscaler adds
    return None  # a local Ray: this machine's GPUs, shared by the members


def _transfer(sc: Scale, splits: Any, ensemble: Any, path: Path, log, track: _Tracking) -> Path:
    from raydistill.distill.transfer.aug import teacher_augment, transfer_aug
    from raydistill.distill.transfer.format import load_transfer_set
    from raydistill.distill.transfer.writer import write_transfer_set

    if path.is_file():
        try:
            load_transfer_set(path, splits=splits, teacher_fingerprints=ensemble.fingerprints)
            log(f"   reusing the transfer set {path}")
            return path
        except UserError as exc:
            log(f"   rewriting {path}: {exc}")
    t = sc.transfer
    aug = transfer_aug(t.aug, splits, teacher_augment(ensemble.manifest))
    write_transfer_set(path, ensemble, splits, t.epochs, seed=t.seed, aug=aug, log=log)
    track.transfer(load_transfer_set(path, splits=splits), path)
    return path


def _search_or_resume(settings: Any, splits: Any) -> Path:
    from raydistill.search import SEARCH_FILE, resume_search, run_search

    out = Path(settings.out)
    if (out / SEARCH_FILE).exists():
        return resume_search(out, data=splits, transfer=settings.transfer)
    return run_search(settings, data=splits)


def _settings(
    sc: Scale, out: Path, spaces: list[Any], budgets: list[Any], trials: int, run: dict[str, Any]
) -> Any:
    """One search of the study (DIR `out`, named after it): the scale's search options, the
    teachers' transfer set, the run's W&B mode, Ray address and storage (`<storage>/<name>`)."""
    from raydistill.core.storage import join
    from raydistill.search.settings import SearchSettings

    s, storage = sc.search, run["storage"]
    return SearchSettings(
        spaces=spaces,
        budgets=budgets,
        trials=trials,
        out=str(out),
        experiment=f"{sc.name}-{out.name}",
        storage=join(storage, out.name) if storage is not None else None,
        transfer=str(run["transfer"]),
        searcher=s.searcher,
        scheduler=s.scheduler,
        gpus_per_trial=s.gpus_per_trial,
        gpu_memory_gib=s.gpu_memory_gib,
        cpus_per_trial=s.cpus_per_trial,
        address=run["address"],
        max_epochs=s.max_epochs,
        seed=sc.data.seed,
        wandb=run["wandb"],
        max_concurrent=s.max_concurrent,
        checkpoint_every=s.checkpoint_every,
        warm_start=s.warm_start,  # the twins too; adaptive allocation: the main search only
    )


def search_settings(sc: Scale, out: Path, trials: int | None, run: dict[str, Any]) -> Any:
    """The study's main search (every student row × budget) as `SearchSettings`, with the
    scale's allocation; `run`: transfer, address, wandb, storage (as `reproduce` sets them)."""
    from dataclasses import replace

    from raydistill.search.spaces.load import load_space

    s = sc.search
    plans = []
    for name in s.spaces:
        space = load_space(name).with_overrides(
            train=s.train, spec=s.spec_for(name), width_ratios=s.width_ratios
        )
        plans.append(space.with_depths(s.depths_for(name)) if s.depths_for(name) else space)
    return replace(_settings(sc, out, plans, s.budgets, trials or s.trials, run),
                   allocate=s.allocate)  # fmt: skip


def study_inputs(
    sc: Scale, out: Path, *, source: str | None = None, address: str = "local", log=print
) -> tuple[Any, Path]:
    """The splits and the transfer-set path of a study in `out` (teachers trained and the
    transfer set written there, or reused), as `reproduce` makes them (its benchmarks)."""
    source = source or sc.data.source
    splits = _load_splits(sc, source)
    track = _Tracking(sc, splits, source, out, "off")  # a benchmark logs no W&B runs
    ensemble = _teacher(sc, splits, source, out / "teacher", address, log, track)
    return splits, _transfer(sc, splits, ensemble, out / "transfer.parquet", log, track)


def _search(sc: Scale, out: Path, trials: int | None, **run: Any) -> Path:
    return _search_or_resume(search_settings(sc, out, trials, run), run["splits"])


def _twins(sc: Scale, out: Path, trials: int | None, **run: Any) -> Path:
    from raydistill.search.spaces.load import load_space

    t = sc.hard_twins
    train = {**sc.search.train, **t.train, "loss": "hard"}
    space = load_space(t.space).with_overrides(
        train=train, spec=sc.search.spec_for(t.space), width_ratios=sc.search.width_ratios
    )
    depths = t.depths or sc.search.depths_for(t.space)
    space = space.with_depths(depths) if depths else space
    settings = _settings(sc, out, [space], t.budgets, trials or t.trials, run)
    return _search_or_resume(settings, run["splits"])


def combine(out: Path, directories: list[Path], ensemble: Any) -> Path:
    """One study directory: the searches' trials in one table, a manifest with the teacher."""
    from raydistill.core.manifest import atomic_write_bytes, read_manifest, write_manifest

    frame = pd.concat([pd.read_parquet(Path(d) / "trials.parquet") for d in directories],
                      ignore_index=True)  # fmt: skip
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(out / "trials.parquet", frame.to_parquet(index=False))
    for journal in (p for d in directories for p in (Path(d) / "allocation").glob("*.json")):
        atomic_write_bytes(out / "allocation" / journal.name, journal.read_bytes())  # the report's
    manifest = dict(read_manifest(directories[0]))
    acc = ensemble.manifest.get("ensemble", {})  # {"val/acc": .., "test/acc": ..}
    teacher = {k.replace("/acc", "_acc"): float(v) for k, v in acc.items() if k.endswith("/acc")}
    manifest.update(kind="study", sources=[str(d) for d in directories], teacher=teacher)
    write_manifest(out, manifest)
    return out


def _repeat(
    sc: Scale, study: Path, splits, transfer: Path, address: str, log, storage: str | None = None
) -> pd.DataFrame:
    from raydistill.distill.transfer.format import load_transfer_set
    from raydistill.report import load_results
    from raydistill.study.repeats import repeat_seeds

    ts = load_transfer_set(transfer, splits=splits)
    return repeat_seeds(study, load_results(study), splits, ts, sc.seeds, address=address,
                        storage=storage, resources=sc.search.trial_resources(), log=log)  # fmt: skip


def _report(study: Path, repeats: pd.DataFrame, source: str) -> Any:
    from raydistill.report import is_paper_task, make_report

    return make_report(study, compare_with_paper=True, repeats=repeats,
                       paper_task=is_paper_task(source))  # fmt: skip


def _export(sc: Scale, study: Path, splits, where: Path, address: str) -> Any:
    """Every cell's best student; each test-set verification a Ray task (the trials' CPUs)."""
    from raydistill.export.exporter import export_cells

    return export_cells(study, None, where, splits=splits, address=address,
                        cpus=sc.search.cpus_per_trial)  # fmt: skip


def _teacher_summary(transfer: Path) -> dict[str, float]:
    """The ensemble's accuracies recorded in the transfer set (test, test views, val)."""
    import pyarrow.parquet as pq

    from raydistill.distill.transfer.format import META_KEY

    meta = json.loads((pq.read_schema(transfer).metadata or {})[META_KEY])
    keys = ("ensemble_test_acc", "ensemble_test_view_acc", "ensemble_val_acc")
    return {k: float(meta[k]) for k in keys if meta.get(k) is not None}
