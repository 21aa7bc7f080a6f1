"""The paper's whole study in one call: teachers → transfer set → searches → report → export.

`reproduce(scale, ...)` runs, in `out/`:

    teacher/          the teacher ensemble (`raydistill teach`)
    transfer.parquet  the pre-generated augmented epochs with the ensemble's logits
    search/           one search over every student row (MLP 1–5, CNN 1–4) × budget
    twins/            the CNN rows on hard labels at one budget (the paper's baselines)
    study/            both searches' trials in one table, the report, the findings
    export/           the best student of every cell
    REPORT.md         scale, seeds, wall time, resources, Table 2, Figure 1, the findings

A scale is a data-only YAML file (`raydistill/scales/{tiny,small,paper}.yaml`, or a user's
copy); each step that already finished in `out/` is reused, so an interrupted study resumes.
"""

from __future__ import annotations

import json
import math
import os
import platform
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import yaml

from raydistill.budget import format_budget, parse_budget
from raydistill.errors import UserError

SCALES_DIR = Path(__file__).with_name("scales")
SECTIONS = {
    "name": None,
    "description": None,
    "data": ("source", "val_size", "train_subset", "seed"),
    "teacher": ("family", "members", "epochs", "width_scale", "train"),
    "transfer": ("epochs", "seed"),
    "search": (
        "spaces",
        "depths",
        "budgets",
        "trials",
        "max_epochs",
        "searcher",
        "scheduler",
        "cpus_per_trial",
        "gpus_per_trial",
        "max_concurrent",
        "train",
    ),
    "hard_twins": ("space", "budget", "trials"),
    "seeds": None,
}


@dataclass(frozen=True)
class Scale:
    """A validated scale file."""

    name: str
    source: str  # where it was read from (for error messages and the report)
    raw: dict[str, Any]

    def __getitem__(self, key: str) -> Any:
        return self.raw[key]


def load_scale(name_or_path: str | Path) -> Scale:
    """A shipped scale by name ("tiny", "small", "paper") or a YAML path, validated."""
    path = Path(name_or_path)
    if not path.suffix:
        path = SCALES_DIR / f"{name_or_path}.yaml"
        if not path.is_file():
            shipped = sorted(p.stem for p in SCALES_DIR.glob("*.yaml"))
            raise UserError(
                f"unknown scale {name_or_path!r}; valid: {', '.join(shipped)} or a path"
            )
    if not path.is_file():
        raise UserError(f"scale file {path} does not exist")
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise UserError(f"{path}: not valid data-only YAML ({type(exc).__name__})") from None
    return Scale(
        str(raw.get("name", path.stem)) if isinstance(raw, dict) else "",
        str(path),
        _validate(raw, str(path)),
    )


def _validate(raw: Any, where: str) -> dict[str, Any]:
    if not isinstance(raw, dict):
        raise UserError(
            f"{where}: a scale is a mapping of sections; see raydistill/scales/tiny.yaml"
        )
    for key in raw:
        if key not in SECTIONS:
            raise UserError(f"{where}: unknown key {key!r}; valid: {', '.join(SECTIONS)}")
    for section, keys in SECTIONS.items():
        if keys is None:
            continue
        value = raw.get(section)
        if not isinstance(value, dict):
            raise UserError(f"{where}: section {section!r} is missing or not a mapping")
        for key in value:
            if key not in keys:
                raise UserError(f"{where}: unknown key {section}.{key}; valid: {', '.join(keys)}")
        missing = [k for k in keys if k not in value]
        if missing:
            raise UserError(f"{where}: {section}.{missing[0]} is missing")
    try:
        [parse_budget(b) for b in raw["search"]["budgets"]]
        parse_budget(raw["hard_twins"]["budget"])
    except UserError as exc:
        raise UserError(f"{where}: {exc}") from None
    for section, key in (
        ("teacher", "members"),
        ("teacher", "epochs"),
        ("transfer", "epochs"),
        ("search", "trials"),
        ("search", "max_epochs"),
    ):
        if not (isinstance(raw[section][key], int) and raw[section][key] >= 1):
            raise UserError(f"{where}: {section}.{key} must be an integer ≥ 1")
    return raw


# ---------------------------------------------------------------------------- the pipeline
def reproduce(
    scale: str | Path | Scale,
    *,
    out: str | Path,
    data: str | None = None,
    seeds: int | None = None,
    wandb: str = "off",
    address: str = "local",
    trials: int | None = None,
    log: Callable[[str], None] = print,
) -> Path:
    """Run the study at `scale` into `out` (see the module docstring); returns `out/REPORT.md`."""
    sc = scale if isinstance(scale, Scale) else load_scale(scale)
    out = Path(out).expanduser().resolve()
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    timings: dict[str, float] = {}

    def step(name: str, fn: Callable[[], Any]) -> Any:
        t = time.perf_counter()
        log(f"== {name}")
        result = fn()
        timings[name] = time.perf_counter() - t
        log(f"== {name}: {timings[name]:.0f} s")
        return result

    source = data or sc["data"]["source"]
    splits = step("data", lambda: _load_splits(sc, source))
    ensemble = step("teacher", lambda: _teacher(sc, splits, source, out / "teacher", address, log))
    transfer = step(
        "transfer", lambda: _transfer(sc, splits, ensemble, out / "transfer.parquet", log)
    )
    n_trials = trials or sc["search"]["trials"]
    search_dir = step(
        "search", lambda: _search(sc, splits, transfer, out / "search", n_trials, wandb, address)
    )
    twins_dir = step(
        "hard twins",
        lambda: _twins(
            sc,
            splits,
            transfer,
            out / "twins",
            trials or sc["hard_twins"]["trials"],
            wandb,
            address,
        ),
    )
    study = step("combine", lambda: combine(out / "study", [search_dir, twins_dir], ensemble))
    n_seeds = seeds if seeds is not None else int(sc["seeds"])
    repeats = step("seeds", lambda: _repeat_seeds(study, splits, transfer, n_seeds, log))
    rep = step("report", lambda: _report(study))
    step("export", lambda: _export(study, splits, out / "export"))
    wall = time.perf_counter() - t0
    text = report_markdown(sc, rep, findings(rep.stats), repeats, timings, wall, source, n_seeds)
    from raydistill.manifest import atomic_write_text

    path = atomic_write_text(out / "REPORT.md", text)
    log(f"raydistill: study done in {wall / 60:.1f} min; report {path}")
    return path


def _load_splits(sc: Scale, source: str) -> Any:
    from raydistill.data import load_dataset

    d = sc["data"]
    return load_dataset(
        source,
        val_size=d["val_size"],
        seed=d["seed"],
        train_subset=d["train_subset"],
        download=source == "cifar10",
    )


def _teacher(sc: Scale, splits: Any, source: str, where: Path, address: str, log) -> Any:
    from raydistill.teachers import load_ensemble, teach

    if (where / "manifest.json").is_file():
        log(f"   reusing the teacher ensemble in {where}")
        return load_ensemble(where)
    t = sc["teacher"]
    d = sc["data"]
    return teach(
        splits,
        t["family"],
        t["members"],
        t["epochs"],
        where,
        width_scale=t["width_scale"],
        train=t["train"] or {},
        seed=d["seed"],
        address=address,
        data_source=source,
        split={"val_size": d["val_size"], "seed": d["seed"], "train_subset": d["train_subset"]},
        log=log,
    )


def _transfer(sc: Scale, splits: Any, ensemble: Any, path: Path, log) -> Path:
    from raydistill.transfer import load_transfer_set, write_transfer_set

    if path.is_file():
        try:
            load_transfer_set(path, splits=splits, teacher_fingerprints=ensemble.fingerprints)
            log(f"   reusing the transfer set {path}")
            return path
        except UserError as exc:
            log(f"   rewriting {path}: {exc}")
    t = sc["transfer"]
    return write_transfer_set(path, ensemble, splits, t["epochs"], seed=t["seed"], log=log)


def _spaces(names: list[str], train: Mapping[str, Any] | None, **fixed: Any) -> list[Any]:
    from raydistill.spaces import load_space

    return [load_space(n).with_train(**{**(train or {}), **fixed}) for n in names]


def _search_or_resume(out: Path, spaces: list[Any], **kwargs: Any) -> Path:
    from raydistill.search import SEARCH_FILE, resume_search, run_search

    if (out / SEARCH_FILE).exists():
        return resume_search(out, data=kwargs["data"], transfer=kwargs["transfer"])
    return run_search(spaces, out=out, **kwargs)


def _search_kwargs(sc: Scale, splits: Any, transfer: Path, wandb: str, address: str) -> dict:
    s = sc["search"]
    return {
        "data": splits,
        "transfer": str(transfer),
        "searcher": s["searcher"],
        "max_epochs": s["max_epochs"],
        "cpus_per_trial": s["cpus_per_trial"],
        "gpus_per_trial": s["gpus_per_trial"],
        "max_concurrent": s["max_concurrent"],
        "seed": sc["data"]["seed"],
        "wandb": wandb,
        "address": address,
    }


def _search(sc: Scale, splits, transfer: Path, out: Path, trials: int, wandb, address) -> Path:
    s = sc["search"]
    return _search_or_resume(
        out,
        _spaces(s["spaces"], s["train"]),
        budgets=s["budgets"],
        depths=s["depths"],
        trials=trials,
        scheduler=s["scheduler"],
        name=f"{sc.name}-search",
        **_search_kwargs(sc, splits, transfer, wandb, address),
    )


def _twins(sc: Scale, splits, transfer: Path, out: Path, trials: int, wandb, address) -> Path:
    t = sc["hard_twins"]
    return _search_or_resume(
        out,
        _spaces([t["space"]], sc["search"]["train"], loss="hard"),
        budgets=[t["budget"]],
        depths=None,
        trials=trials,
        scheduler="none",
        name=f"{sc.name}-twins",
        **_search_kwargs(sc, splits, transfer, wandb, address),
    )


def combine(out: Path, directories: list[Path], ensemble: Any) -> Path:
    """One study directory: the searches' trials in one table, a manifest with the teacher."""
    from raydistill.manifest import read_manifest, temp_path_for, write_manifest

    frames = [pd.read_parquet(Path(d) / "trials.parquet") for d in directories]
    frame = pd.concat(frames, ignore_index=True)
    out.mkdir(parents=True, exist_ok=True)
    tmp = temp_path_for(out / "trials.parquet")
    frame.to_parquet(tmp, index=False)
    os.replace(tmp, out / "trials.parquet")
    manifest = dict(read_manifest(directories[0]))
    acc = ensemble.manifest.get("ensemble", {})  # {"val/acc": .., "test/acc": ..}
    teacher = {k.replace("/acc", "_acc"): float(v) for k, v in acc.items() if k.endswith("/acc")}
    manifest.update(kind="study", sources=[str(d) for d in directories], teacher=teacher)
    write_manifest(out, manifest)
    return out


def _repeat_seeds(study: Path, splits, transfer: Path, n: int, log) -> pd.DataFrame | None:
    """Retrain each cell's best config with seeds 0..n-1; mean ± std of the test accuracy."""
    if n <= 1:
        return None
    from raydistill.report import best_configs, load_results
    from raydistill.train import TrainConfig, train_student
    from raydistill.transfer import load_transfer_set

    ts = load_transfer_set(transfer, splits=splits)
    rows = []
    for _, best in best_configs(load_results(study)).iterrows():
        meta = json.loads((Path(best["checkpoint"]) / "checkpoint.json").read_text())
        accs = []
        for seed in range(n):
            cfg = TrainConfig.from_dict({**meta["config"], "seed": seed})
            accs.append(train_student(meta["spec"], splits, ts, cfg).test_acc)
        mean = sum(accs) / n
        std = math.sqrt(sum((a - mean) ** 2 for a in accs) / max(n - 1, 1))
        rows.append(
            {
                "row": best["row"],
                "budget": int(best["budget"]),
                "seeds": n,
                "mean_test_acc": mean,
                "std_test_acc": std,
            }
        )
        log(
            f"   {best['row']} @ {format_budget(int(best['budget']))}: {100 * mean:.2f} ± {100 * std:.2f}"
        )
    frame = pd.DataFrame(rows)
    frame.to_csv(study / "seeds.csv", index=False)
    return frame


def _report(study: Path) -> Any:
    from raydistill.report import make_report

    return make_report(study, compare_with_paper=True)


def _export(study: Path, splits, where: Path) -> Any:
    from raydistill.export import export_cells

    return export_cells(study, None, where, splits=splits)


# ---------------------------------------------------------------------------- findings
def _acc(stats: pd.DataFrame, row: str, budget: int) -> float | None:
    hit = stats[(stats["row"] == row) & (stats["budget"] == budget)]["mean_test_acc"]
    return None if hit.empty or pd.isna(hit.iloc[0]) else float(hit.iloc[0])


def findings(stats: pd.DataFrame) -> list[dict[str, Any]]:
    """The paper's three findings, checked on the mean-of-top-5 test accuracies of `stats`."""
    main = stats[~stats["twin"].astype(bool)]
    budgets = sorted(int(b) for b in main["budget"].unique())
    out = []
    # 1. Every MLP below every CNN at equal budget.
    details, holds = [], []
    for b in budgets:
        at = main[main["budget"] == b].dropna(subset=["mean_test_acc"])
        mlp = at[at["family"] == "mlp"]["mean_test_acc"]
        cnn = at[at["family"] == "cnn"]["mean_test_acc"]
        if len(mlp) and len(cnn):
            holds.append(bool(mlp.max() < cnn.min()))
            details.append(
                f"{format_budget(b)}: best MLP {100 * mlp.max():.2f} vs worst CNN "
                f"{100 * cnn.min():.2f}"
            )
    out.append(_finding("MLP students below every CNN student at equal budget", holds, details))
    # 2. CNN accuracy rising with conv depth from 1 to 3.
    details, holds = [], []
    for b in budgets:
        accs = [_acc(main, f"cnn-d{d}", b) for d in (1, 2, 3)]
        if None not in accs:
            holds.append(accs[0] < accs[1] < accs[2])
            details.append(f"{format_budget(b)}: " + " < ".join(f"{100 * a:.2f}" for a in accs))
    out.append(_finding("CNN accuracy rises with conv depth from 1 to 3", holds, details))
    # 3. Distillation beats the hard-label twins, most for the shallowest CNNs.
    twins = stats[stats["twin"].astype(bool)]
    gaps = {}
    for _, t in twins.iterrows():
        distilled = _acc(main, f"cnn-d{int(t['depth'])}", int(t["budget"]))
        if distilled is not None and not pd.isna(t["mean_test_acc"]):
            gaps[int(t["depth"])] = distilled - float(t["mean_test_acc"])
    holds = []
    if gaps:
        shallow = min(gaps)
        holds = [all(g > 0 for g in gaps.values()) and gaps[shallow] == max(gaps.values())]
    details = [
        f"depth {d}: distilled − hard = {100 * g:+.2f} points" for d, g in sorted(gaps.items())
    ]
    out.append(
        _finding(
            "distillation beats the hard-label twins, most for the shallowest CNN", holds, details
        )
    )
    return out


def _finding(claim: str, holds: list[bool], details: list[str]) -> dict[str, Any]:
    verdict = (
        "not testable (missing rows)" if not holds else ("holds" if all(holds) else "does not hold")
    )
    return {"claim": claim, "verdict": verdict, "details": details}


def report_markdown(
    sc: Scale,
    rep: Any,
    found: list[dict[str, Any]],
    repeats: pd.DataFrame | None,
    timings: Mapping[str, float],
    wall: float,
    source: str,
    seeds: int,
) -> str:
    """REPORT.md: what was run, on what, how long, the table, the figure and the findings."""
    import torch

    gpus = torch.cuda.device_count()
    lines = [
        f"# raydistill reproduction of Urban et al. (2017), scale `{sc.name}`",
        "",
        f"- scale file: `{sc.source}` ({sc['description']})",
        f"- data: `{source}` (val {sc['data']['val_size']}, train subset "
        f"{sc['data']['train_subset'] or 'all'}, split seed {sc['data']['seed']})",
        f"- teacher: {sc['teacher']['members']} × {sc['teacher']['family']}, "
        f"{sc['teacher']['epochs']} epochs; transfer set: {sc['transfer']['epochs']} epochs",
        f"- search: budgets {', '.join(map(str, sc['search']['budgets']))}; "
        f"{sc['search']['trials']} trials per cell ({sc['search']['searcher']}); seed "
        f"{sc['data']['seed']}; seeds repeated per best config: {seeds}",
        f"- wall time: {wall / 60:.1f} min ("
        + ", ".join(f"{k} {v:.0f} s" for k, v in timings.items())
        + ")",
        f"- resources: {platform.node()}, {os.cpu_count()} CPU cores, {gpus} GPU(s), "
        f"{platform.platform()}",
        "",
        rep.markdown.replace("# Table 2", "## Table 2", 1),
        "",
        "![Figure 1](study/report/figure1.png)",
        "",
        "## The paper's findings at this scale",
        "",
    ]
    for f in found:
        lines.append(f"- **{f['claim']}**: {f['verdict']}")
        lines += [f"  - {d}" for d in f["details"]]
    if repeats is not None:
        lines += [
            "",
            f"## Best configs repeated with {seeds} seeds",
            "",
            repeats.to_markdown(index=False) if _has_tabulate() else repeats.to_string(),
        ]
    return "\n".join(lines) + "\n"


def _has_tabulate() -> bool:
    try:
        import tabulate  # noqa: F401
    except ImportError:
        return False
    return True
