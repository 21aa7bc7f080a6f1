"""The sample-efficiency study (Li, Zhang & Arora, ICLR 2021): CNN vs MLP students on
`synthetic-sep`, test accuracy against the training-set size n for several input sizes d.

This module owns the grid, running its cells, the results table and the report; the numbers
(n to a target, the fitted exponent, the judged findings) live in `sample_efficiency_fit`.

Grid: image side S in `sizes` (inputs C×S×S, d = C·S²), n in `ns`, seeds in `seeds`. Each
(S, n, seed) is one `raydistill.search.run_search` call on its own generated data: its cells are
the families (one depth, one parameter budget, widths from the budget solver), one trial each,
trained on hard labels and run in parallel by Ray Tune (one CPU per trial). The seed is both the
trial seed and the data seed, so the spread over seeds covers the draw of the training set too.
A cell whose folder already holds finished trials is reused; an interrupted one is resumed.

Outputs in OUT: `cells/S<S>-n<n>-seed<seed>/` (each a search folder), `results.csv` (one row per
trained student), `curves.csv`, `n_star.csv`, `findings.csv`, `fit.json`,
`sample_efficiency.png`, `REPORT.md`, `manifest.json`; with W&B on, one summary run.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from raydistill.core.cluster import ray_session
from raydistill.core.errors import UserError
from raydistill.core.manifest import atomic_write_text, build_manifest, write_manifest
from raydistill.core.numbers import jsonable
from raydistill.core.vocab import WANDB_MODES
from raydistill.students.budget import format_budget, parse_param_count
from raydistill.study.sample_efficiency import fit

DEFAULT_SIZES = (3, 4, 5)  # d = 2·S² = 18, 32, 50
DEFAULT_NS = (128, 512, 2048, 8192)  # log-spaced, factor 4
DEFAULT_SEEDS = (0, 1, 2)
LARGE_SIZES = (3, 4, 6, 8)  # `--large`: d = 18 … 128
LARGE_NS = (64, 256, 1024, 4096, 16384, 65536)
LARGE_SEEDS = (0, 1, 2, 3, 4)
# Named grids (`--grid large` on the command line); explicit sizes / ns / seeds override them.
GRIDS = {
    "default": {"sizes": DEFAULT_SIZES, "ns": DEFAULT_NS, "seeds": DEFAULT_SEEDS},
    "large": {"sizes": LARGE_SIZES, "ns": LARGE_NS, "seeds": LARGE_SEEDS},
}
# Depth per family: the shallowest net of each. allconv (conv stages + global average pooling)
# is the default CNN: its pooling sums a local feature over the image, the structure the
# separator needs; the `cnn` family's max-pool + FC head learned less per sample in probes.
DEPTHS = {"allconv": 1, "cnn": 1, "mlp": 2}
CONV_FAMILIES = ("allconv", "cnn")


@dataclass(frozen=True)
class StudyConfig:
    """The study's settings (saved in the manifest and fit.json)."""

    sizes: tuple[int, ...] = DEFAULT_SIZES
    ns: tuple[int, ...] = DEFAULT_NS
    seeds: tuple[int, ...] = DEFAULT_SEEDS
    families: tuple[str, str] = ("allconv", "mlp")  # (the CNN, the fully-connected net)
    channels: int = 2
    budget: int = 10_000
    target: float = 0.75  # inside the default n range for both families at every d
    epochs: int = 20  # epochs at large n; small n gets more (see `epochs_for`)
    min_samples: int = 30_000  # each run sees at least this many examples (≤ max_epochs)
    max_epochs: int = 100
    lr: float = 0.05
    momentum: float = 0.9
    batch_size: int = 64
    n_val: int = 500
    n_test: int = 2000

    def dims(self) -> dict[int, int]:
        """{side S: input dimension d = C·S²}."""
        return {s: self.channels * s * s for s in self.sizes}


def epochs_for(cfg: StudyConfig, n: int) -> int:
    """Epochs at training-set size n: `epochs`, raised so a run sees ≥ `min_samples` examples.

    A fixed epoch count would give n = 64 a single SGD step per epoch (≈ 20 steps in all), so
    small n would be judged undertrained, not sample-starved; capped at `max_epochs`.
    """
    want = math.ceil(cfg.min_samples / max(n, 1))
    return max(cfg.epochs, min(cfg.max_epochs, want))


def space_for(cfg: StudyConfig, family: str, n: int) -> dict[str, Any]:
    """The fixed search space of one family at size n: nothing sampled, one trial per cell.

    augment "none" and preprocess "none": the labels are a function of the raw Gaussian pixels;
    the default "paper" augmentation (HSV jitter clamps inputs to [0, 1]) and per-image
    normalisation (rescales ‖x[0]‖ and ‖x[1]‖ together, but mixes in channel 2+) would destroy
    or distort the rule. A cosine schedule suits these short fixed-length runs.
    """
    train = {
        "lr": cfg.lr, "momentum": cfg.momentum, "batch_size": min(cfg.batch_size, n),
        "max_epochs": epochs_for(cfg, n), "schedule": "cosine", "augment": "none",
        "preprocess": "none", "loss": "hard", "init_scale": 1.0, "input_scale": 1.0,
    }  # fmt: skip
    return {"family": family, "depths": [DEPTHS[family]], "width_ratios": 1.0,
            "spec": {"dropout": 0.0}, "train": train}  # fmt: skip


def cell_dir(out: Path, size: int, n: int, seed: int) -> Path:
    return out / "cells" / f"S{size}-n{n}-seed{seed}"


# ------------------------------------------------------------------ cells
RESULT_COLUMNS = ["family", "depth", "budget", "params", "size", "d", "n", "seed", "test_acc",
                  "val_acc", "epochs", "best_epoch", "wall_s", "status"]  # fmt: skip


def run_cell(
    cfg: StudyConfig,
    out: Path,
    size: int,
    n: int,
    seed: int,
    *,
    wandb: str,
    device: str,
) -> pd.DataFrame:
    """Train every family at one (S, n, seed) through `run_search`; its rows of the results.

    A cell folder with a complete search is reused, an interrupted one resumed (same data:
    the generator is seeded, so the fingerprint matches).
    """
    from raydistill.data import make_synthetic_sep
    from raydistill.search import SearchSettings, load_trials, resume_search, run_search

    where = cell_dir(out, size, n, seed)
    splits = make_synthetic_sep(
        n, cfg.n_val, cfg.n_test, seed, size=size, channels=cfg.channels
    )  # train (n, C, S, S) float32; val / test fixed sizes, drawn from the seed's own streams
    if (where / "search.json").is_file():
        if not all(r["complete"] for r in SearchSettings.load(where).runs):
            resume_search(where, data=splits, verbose=0)
    else:
        spaces = [space_for(cfg, fam, n) for fam in cfg.families]
        settings = SearchSettings(
            spaces=spaces, budgets=[cfg.budget], trials=1, out=str(where),
            experiment=f"sample-efficiency-S{size}-n{n}-seed{seed}", searcher="random",
            seed=seed, wandb=wandb, device=device, cpus_per_trial=1,
            argv=["sample_efficiency_study", f"S={size}", f"n={n}", f"seed={seed}"],
        )  # fmt: skip
        run_search(settings, data=splits, verbose=0)
    return _rows(load_trials(where), cfg, size, n, seed)


def _rows(trials: pd.DataFrame, cfg: StudyConfig, size: int, n: int, seed: int) -> pd.DataFrame:
    """One results row per trial of a cell's trials.parquet."""
    names = {"test/acc": "test_acc", "val/acc": "val_acc"}
    frame = trials.rename(columns=names).assign(size=size, d=cfg.dims()[size], n=n, seed=seed)
    return frame[RESULT_COLUMNS].reset_index(drop=True)


def run_grid(cfg: StudyConfig, out: Path, *, wandb: str, device: str, verbose: int) -> pd.DataFrame:
    """Every cell of the grid, one after another (small n first within each size and seed).

    Cells run serially: Tune's trainable registry is not thread-safe (two Tuners started from
    threads failed with "dictionary changed size during iteration"); within a cell the
    families train in parallel, one CPU each.
    """
    plan = [(s, n, seed) for seed in cfg.seeds for s in cfg.sizes for n in cfg.ns]
    parts, t0 = [], time.time()
    for i, (size, n, seed) in enumerate(plan, 1):
        rows = run_cell(cfg, out, size, n, seed, wandb=wandb, device=device)
        parts.append(rows)
        if verbose:
            accs = ", ".join(
                f"{f} {a:.3f}" for f, a in zip(rows["family"], rows["test_acc"], strict=True)
            )
            print(f"[{i}/{len(plan)} {time.time() - t0:6.0f}s] S={size} d={cfg.dims()[size]} "
                  f"n={n} seed={seed}: {accs}", flush=True)  # fmt: skip
    return pd.concat(parts, ignore_index=True)


# ------------------------------------------------------------------ report
def markdown(an: fit.Analysis, cfg: StudyConfig, wall_s: float) -> str:
    """REPORT.md: the setup, the curves, n* per d, the exponents and the judged findings."""
    conv, fc = cfg.families
    dims = ", ".join(f"{d} (S={s})" for s, d in cfg.dims().items())
    lines = [
        "# Sample efficiency: CNN vs fully-connected students (Li, Zhang & Arora, ICLR 2021)",
        "",
        f"Task `synthetic-sep`: x ~ N(0, 1)^({cfg.channels}×S×S), y = 1 iff ‖x[0]‖ > ‖x[1]‖. "
        f"Families `{conv}` (CNN) and `{fc}` (MLP) at depth {DEPTHS[conv]} / {DEPTHS[fc]}, "
        f"budget {format_budget(cfg.budget)} parameters each (widths by the budget solver); hard "
        f"labels, SGD lr {cfg.lr} momentum {cfg.momentum}, cosine, batch ≤ {cfg.batch_size}, no "
        f"augmentation or preprocessing; epochs max({cfg.epochs}, min({cfg.max_epochs}, "
        f"⌈{cfg.min_samples}/n⌉)). d = {dims}; n = {', '.join(map(str, cfg.ns))}; seeds "
        f"{', '.join(map(str, cfg.seeds))} (each draws the data and the initialisation); "
        f"test sets of {cfg.n_test}. Wall time {wall_s / 60:.1f} min.",
        "",
        "![accuracy vs n and n* vs d](sample_efficiency.png)",
        "",
        "## Test accuracy (%) vs n, mean ± std over seeds",
        "",
        *fit.curve_table(an.curve, cfg.ns),
        "",
        f"## n to reach {an.target:.0%} test accuracy, and the exponent b in n* ∝ d^b",
        "",
        *fit.nstar_table(an, cfg.families),
        "",
        _censoring_note(an, cfg),
        "",
        "## Findings",
        "",
        fit.RULE,
        "",
        *fit.findings_table(an.findings),
        "",
        _verdict_line(an, cfg),
    ]
    return "\n".join(lines) + "\n"


def _censoring_note(an: fit.Analysis, cfg: StudyConfig) -> str:
    """Say which n* are bounds: they bias b (towards 0 for '≤', and are left out for 'not')."""
    below = an.cross[an.cross["censored"] == "below"]
    above = an.cross[an.cross["censored"] == "above"]
    parts = ["n* is interpolated in log n between grid points; ×/÷ is the bootstrap spread."]
    if len(below):
        parts.append(f"'≤ {min(cfg.ns)}' ({len(below)}×): reached at the smallest n, an upper "
                     "bound used as the value in the fit (it pulls b towards 0).")  # fmt: skip
    if len(above):
        parts.append(f"'not reached' ({len(above)}×): above n = {max(cfg.ns)}, left out of "
                     "the fit; add larger n.")  # fmt: skip
    return " ".join(parts)


def _verdict_line(an: fit.Analysis, cfg: StudyConfig) -> str:
    """One sentence: does the gap show at this scale?"""
    sample = [f for f in an.findings if "fewer samples" in f.claim]
    grows = next(f for f in an.findings if "exceeds" in f.claim)
    held = sum(f.verdict == "holds" for f in sample)
    return (
        f"**Gap at the target:** 'the CNN needs fewer samples' holds at {held} of "
        f"{len(sample)} input sizes. **Gap grows with d:** {grows.verdict} (b_{cfg.families[1]} − "
        f"b_{cfg.families[0]} = {grows.margin:+.2f} ± {grows.noise:.2f})."
    )


def log_wandb(out: Path, an: fit.Analysis, cfg: StudyConfig, mode: str) -> str | None:
    """One W&B summary run: the figure, the curves / n* / findings tables, b per family."""
    from raydistill.tracking.tracker import make_tracker

    tracker = make_tracker(
        mode, root=out, experiment="sample-efficiency", cell="summary", trial_id="summary",
        config=jsonable(asdict(cfg)), tags=["sample-efficiency"], job_type="summary",
    )  # fmt: skip
    run = getattr(tracker, "run", None)
    if run is None:
        return None
    import wandb

    status = "error"
    try:
        run.log({"figure": wandb.Image(str(out / "sample_efficiency.png")),
                 "curves": wandb.Table(dataframe=an.curve),
                 "n_star": wandb.Table(dataframe=an.cross),
                 "findings": wandb.Table(dataframe=pd.DataFrame(
                     [f.to_dict() for f in an.findings]))})  # fmt: skip
        status = "finished"
    finally:
        summary = {f"b/{fam}": f.b for fam, f in an.fits.items()}
        summary.update({f"b_sd/{fam}": v for fam, v in an.b_sd.items()})
        tracker.finish(summary, status=status)
    return tracker.run_id


def write_report(
    out: Path, results: pd.DataFrame, cfg: StudyConfig, *, wall_s: float, wandb: str
) -> Path:
    """results.csv, curves.csv, n_star.csv, findings.csv, fit.json, the PNG, REPORT.md."""
    conv, fc = cfg.families
    an = fit.analyse(results, cfg.target, conv=conv, fc=fc, seed=min(cfg.seeds))
    results.to_csv(out / "results.csv", index=False)
    an.curve.to_csv(out / "curves.csv", index=False)
    an.cross.to_csv(out / "n_star.csv", index=False)
    pd.DataFrame([f.to_dict() for f in an.findings]).to_csv(out / "findings.csv", index=False)
    doc = {"config": jsonable(asdict(cfg)), "target": cfg.target, "rule": fit.RULE,
           "fits": {k: asdict(v) for k, v in an.fits.items()}, "b_bootstrap_sd": an.b_sd,
           "b_bootstrap_ci95": an.b_ci, "wall_s": wall_s}  # fmt: skip
    atomic_write_text(out / "fit.json", json.dumps(jsonable(doc), indent=2) + "\n")
    fit.figure(an, cfg.families, len(cfg.seeds), out / "sample_efficiency.png")
    report = atomic_write_text(out / "REPORT.md", markdown(an, cfg, wall_s))
    if wandb != "off":
        log_wandb(out, an, cfg, wandb)
    return report


# ------------------------------------------------------------------ entry
def sample_efficiency_study(
    out: str | Path,
    *,
    sizes: Sequence[int] = DEFAULT_SIZES,
    ns: Sequence[int] = DEFAULT_NS,
    seeds: Sequence[int] = DEFAULT_SEEDS,
    epochs: int = 20,
    wandb: str = "off",
    address: str = "local",
    families: Sequence[str] = ("allconv", "mlp"),
    budget: int | str = 10_000,
    target: float = 0.75,
    channels: int = 2,
    min_samples: int = 30_000,
    device: str = "cpu",
    num_cpus: int | None = None,
    verbose: int = 1,
) -> Path:
    """Run the CNN-vs-MLP sample-efficiency grid on `synthetic-sep`; returns OUT/REPORT.md.

    `sizes`: image sides S (d = channels·S²); `ns`: training-set sizes; `seeds`: ≥ 1 (≥ 3 for
    error bars worth judging); `epochs`: epochs at large n (small n runs up to `min_samples`
    examples, ≤ 100 epochs); `families`: (CNN family, MLP family). Ray: the running instance,
    else one started (`raydistill.core.cluster`) for the study's length. Finished cells in OUT are reused.
    """
    cfg = _config(sizes, ns, seeds, epochs, families, budget, target, channels, min_samples)
    if wandb not in WANDB_MODES:
        raise UserError(f"--wandb {wandb!r} is invalid; valid: {', '.join(WANDB_MODES)}")
    root = Path(out).expanduser().resolve()
    root.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    # Offline W&B inside trials needs WANDB_MODE in the workers' environment (shared notes).
    env = {"WANDB_MODE": "offline"} if wandb == "offline" else None
    with ray_session(address, num_cpus, env):
        results = run_grid(cfg, root, wandb=wandb, device=device, verbose=verbose)
    wall_s = time.time() - t0
    report = write_report(root, results, cfg, wall_s=wall_s, wandb=wandb)
    manifest = build_manifest(
        "sample-efficiency", jsonable(asdict(cfg)), seeds=cfg.seeds,
        extra={"wall_s": wall_s, "cells": len(results), "report": report.name},
    )  # fmt: skip
    write_manifest(root, manifest)
    if verbose:
        print(f"raydistill: sample-efficiency report: {report} ({wall_s / 60:.1f} min)")
    return report


def _config(
    sizes: Sequence[int], ns: Sequence[int], seeds: Sequence[int], epochs: int,
    families: Sequence[str], budget: int | str, target: float, channels: int, min_samples: int,
) -> StudyConfig:  # fmt: skip
    """Validated settings; a UserError names the bad argument and what is valid."""
    sizes_, ns_ = tuple(sorted({int(s) for s in sizes})), tuple(sorted({int(n) for n in ns}))
    if len(sizes_) < 2 or min(sizes_) < 1:
        raise UserError(f"--sizes {list(sizes)}: need ≥ 2 distinct image sides ≥ 1 (3+ to fit)")
    if len(ns_) < 2 or min(ns_) < 2:
        raise UserError(f"--ns {list(ns)}: need ≥ 2 distinct training-set sizes ≥ 2")
    if not seeds or epochs < 1 or not 0.5 < target < 1 or channels < 2:
        raise UserError("need ≥ 1 seed, --epochs ≥ 1, 0.5 < --target < 1 and --channels ≥ 2")
    fams = tuple(families)
    if len(fams) != 2 or fams[0] not in CONV_FAMILIES or fams[1] != "mlp":
        raise UserError(f"--families {list(fams)}: expected (one of {CONV_FAMILIES}, 'mlp')")
    return StudyConfig(sizes=sizes_, ns=ns_, seeds=tuple(dict.fromkeys(int(s) for s in seeds)),
                       families=fams, channels=int(channels), budget=parse_param_count(budget),
                       target=float(target), epochs=int(epochs),
                       min_samples=int(min_samples))  # fmt: skip
