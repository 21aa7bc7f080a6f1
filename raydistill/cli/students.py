"""The commands about students: train (one student), search (Ray Tune), reproduce (the study).

Same shape as `raydistill.cli.pipeline`: a typed function per command, a torch-free `check`,
and `run`.
"""

import argparse
import sys
from pathlib import Path
from typing import Literal

from raydistill.cli import args as A
from raydistill.cli.cell_options import StudentCell
from raydistill.cli.command import Outputs, execute
from raydistill.cli.data_options import DataOptions, DataSource
from raydistill.core.errors import UserError
from raydistill.core.vocab import AllocationName, SchedulerName, SearcherName, WandbMode


# ---------------------------------------------------------------- train
def train(
    transfer: str | None = None,
    set: A.KeyValues | None = None,
    checkpoint_dir: str | None = None,
    resume: str | None = None,
    *,
    cell: StudentCell,
    dataset: DataOptions,
) -> int:
    """train one student and print the per-epoch table

    Args:
        transfer: transfer set (Parquet); without it: hard labels on the fly
        set: a TrainConfig field, KEY=VALUE with a YAML value, e.g. --set lr=0.01 --set loss=kd; repeatable
        checkpoint_dir: save a resumable checkpoint here every epoch
        resume: resume from this checkpoint directory
    """
    return execute(train_check, train_run, locals())


def train_check(args: argparse.Namespace) -> Outputs:
    args.sets = A.parse_key_values(args.set, "--set")
    args.cell.check()
    args.dataset.require("train")
    args.dataset.check()
    for flag, path in (("--transfer", args.transfer), ("--resume", args.resume)):
        if path and not Path(path).exists():
            raise UserError(f"{flag} {path!r} does not exist")
    return [(A.check_out(args.checkpoint_dir), False)] if args.checkpoint_dir else []


def train_run(args: argparse.Namespace) -> int:
    from raydistill.students.budget import solve_budget
    from raydistill.training.config import TrainConfig
    from raydistill.training.loop import train_student
    from raydistill.training.schema import check_train_config

    overrides = check_train_config(args.sets, "--set", sep=" ")
    if not args.transfer:
        overrides.setdefault("loss", "hard")
    try:
        cfg = TrainConfig.from_dict(overrides)
    except UserError as exc:  # TrainConfig's vocabularies: say which flag set the value
        raise UserError(f"--set: {exc}") from None
    args.dataset.prepare()
    args.dataset.follow_transfer_set(args.transfer)
    splits = args.dataset.load()
    ts = None
    if args.transfer:
        from raydistill.distill.transfer.format import load_transfer_set

        ts = load_transfer_set(args.transfer, splits=splits)
    c = args.cell
    sol = solve_budget(
        c.family,
        c.depth,
        c.budget,
        c.ratios,
        in_shape=list(splits.image_shape),
        num_classes=splits.num_classes,
    )
    print(
        f"{c.family}-d{c.depth}: widths {sol.widths}, {sol.params:,} params "
        f"({100 * sol.share:.2f}% of {sol.budget:,}); loss {cfg.loss}"
    )
    print(f"{'epoch':>5} {'train/loss':>11} {'val/acc':>8} {'val/loss':>9} {'lr':>9}")

    def show(m: dict, save) -> None:
        print(
            f"{m['epoch']:>5} {m['train/loss']:>11.4f} {m.get('val/acc', float('nan')):>8.4f} "
            f"{m.get('val/loss', float('nan')):>9.4f} {m['lr']:>9.2e}",
            flush=True,
        )
        if args.checkpoint_dir:
            save(Path(args.checkpoint_dir))

    result = train_student(sol.spec, splits, ts, cfg, report=show, checkpoint=args.resume)
    test = "–" if result.test_acc is None else f"{result.test_acc:.4f}"
    print(
        f"status {result.status}; best val/acc {result.best_val_acc:.4f} (epoch "
        f"{result.best_epoch}); test/acc {test}; {result.wall_s:.1f} s"
    )
    return 0 if result.status != "diverged" else 1


# ---------------------------------------------------------------- search
def search(
    spaces: list[str] | None = None,
    budgets: A.Budgets | None = None,
    depths: A.Ints | None = None,
    trials: A.Count = 16,
    transfer: str | None = None,
    set: A.KeyValues | None = None,
    gpus_per_trial: float | Literal["auto"] = 0.0,
    gpu_memory: A.Positive | None = None,
    cpus_per_trial: A.Positive = 1.0,
    searcher: SearcherName = "tpe",
    scheduler: SchedulerName = "none",
    allocate: AllocationName = "uniform",
    total_trials: A.Count | None = None,
    warm_start: bool = False,
    address: str = "local",
    out: str | None = None,
    name: str | None = None,
    max_epochs: A.Count | None = None,
    seed: int = 0,
    storage: str | None = None,
    checkpoint_every: A.Count = 1,
    wandb: WandbMode | None = None,
    max_concurrent: A.Count | None = None,
    max_failures: A.Count0 = 2,
    device: str = "auto",
    resume: str | None = None,
    extend: A.Count | None = None,
    cell: A.KeyValues | None = None,
    dry_run: bool = False,
    samples: A.Count = 3,
    *,
    dataset: DataOptions,
) -> int:
    """Ray Tune search of student cells (family × depth × budget)

    Args:
        spaces: search spaces (search_spaces/*.yaml, or a shipped name: {SHIPPED})
        budgets: budgets per cell: parameters (300k,1M), multiply-adds (40M-macs) or latency per image (2ms)
        depths: depths to search (∩ each space's), comma-separated
        trials: trials per cell
        transfer: transfer set (.parquet); without it: hard labels, loss 'hard'
        set: a TrainConfig field fixed in every space (overrides the space), KEY=VALUE with a YAML value; repeatable
        gpus_per_trial: e.g. 0.25: 4 trials per GPU; auto: sized to each cell's student
        gpu_memory: GiB of GPU memory on the node type trials run on (for --gpus-per-trial auto; default 80)
        cpus_per_trial: CPUs per trial
        searcher: the sampler of each cell's study
        scheduler: asha: early stopping within each cell, epochs as the resource
        allocate: uniform: --trials per cell; adaptive: the same total in rounds, moved from cells that cannot reach the accuracy-vs-size front to those that can
        total_trials: with --allocate adaptive: the search's total (default --trials × cells)
        warm_start: start each cell once its next-smaller budget finished, seeded with that cell's best configurations
        address: Ray: local (start one), auto, or HOST:PORT
        out: output directory (DIR)
        name: experiment name (default: DIR's name)
        max_epochs: cap every trial's epochs
        seed: searchers' and trials' seed
        storage: where Tune writes trials and checkpoints: a path, s3://, gs://, file:// (default DIR/tune)
        checkpoint_every: epochs between a trial's checkpoints (one at its end too)
        wandb: W&B per trial (default: WANDB_MODE, else online iff an API key is set)
        max_concurrent: at most K trials at once
        max_failures: retries of a failed trial
        device: trial device: auto, cpu, cuda
        resume: continue an interrupted search in this DIR
        extend: add N trials per cell to --out DIR
        cell: with --extend: only this cell; repeatable
        dry_run: print cells and sample configs; train nothing
        samples: sample configs per cell for --dry-run
    """
    return execute(search_check, search_run, locals(), keep=("tune",))


def _shipped_spaces() -> str:
    from raydistill.search.spaces.load import shipped_spaces

    return ", ".join(shipped_spaces())


search.doc_values = {"SHIPPED": _shipped_spaces}  # type: ignore[attr-defined]


def search_check(args: argparse.Namespace) -> Outputs:
    args.sets = A.parse_key_values(args.set, "--set")
    if args.cell and args.extend is None:
        raise UserError(
            "--cell names the cells --extend N adds trials to; e.g. raydistill search "
            f"--resume {args.resume or 'DIR'} --extend 8 --cell {args.cell[0]}"
        )
    if args.resume or args.extend is not None:
        return _check_continue(args)
    if not args.spaces or not args.budgets or (not args.out and not args.dry_run):
        raise UserError("search needs SPACE.yaml ..., --budgets and --out (or --resume DIR)")
    if args.transfer and not Path(args.transfer).is_file():
        raise UserError(f"--transfer {args.transfer!r} does not exist")
    args.dataset.check()  # when given: a typo costs no torch
    if args.dry_run:
        return []
    outputs = [(A.check_out(args.out), False)]
    from raydistill.core.resources import least_request
    from raydistill.core.storage import check_shared

    check_shared(args.storage, args.address)  # a multi-node run needs shared storage
    A.check_gpu_options(
        device=args.device,
        address=args.address,
        gpus=least_request(args.gpus_per_trial),
        flag="--gpus-per-trial",
    )
    return outputs


def _check_continue(args: argparse.Namespace) -> Outputs:
    """--resume DIR and/or --extend N (DIR: --resume's, else --out's): the search exists and
    every --cell is one of its cells, checked before anything runs (no torch)."""
    from raydistill.search.settings import SearchSettings

    where = args.resume or args.out
    if not where:
        raise UserError("--extend N needs the search: --resume DIR --extend N (or --out DIR)")
    if args.resume and args.out and Path(args.out).resolve() != Path(args.resume).resolve():
        raise UserError(
            f"--resume {args.resume!r} and --out {args.out!r} name two searches; give one"
        )
    if not (Path(where) / "search.json").is_file():
        raise UserError(f"{where!r} holds no search (no search.json)")
    args.where = where
    SearchSettings.load(where).chosen_cells(args.cell)
    return []


def search_run(args: argparse.Namespace) -> int:
    from raydistill.search import SearchSettings, extend_search, resume_search, run_search

    if args.resume or args.extend is not None:
        # --resume DIR finishes an interrupted run; with --extend N it then adds N trials to
        # each chosen cell (README: search --resume DIR --extend 8 --cell cnn-d2@1M)
        if args.resume and (args.extend is None or not SearchSettings.load(args.where).complete):
            resume_search(args.where)
        if args.extend is not None:
            extend_search(args.where, args.extend, cells=args.cell)
        return search_outcome(args.where)
    from raydistill.search.spaces.load import load_space
    from raydistill.tracking.tracker import resolve_mode
    from raydistill.training.schema import check_train_config

    sets = check_train_config(args.sets, "--set", sep=" ")
    spaces = [load_space(s) for s in args.spaces]
    if sets:  # re-validated as part of each space: the same rules as a value in the YAML
        spaces = [s.with_overrides(train=sets, source=f"{s.source} with --set") for s in spaces]
    ds = args.dataset
    ds.data = ds.data or "cifar10"
    ds.prepare()
    ds.follow_transfer_set(args.transfer)
    options = {**ds.split(), "cache_dir": ds.cache_dir}
    settings = SearchSettings(
        spaces=spaces,
        budgets=args.budgets,
        depths=args.depths,
        trials=args.trials,
        out=args.out or "search",
        experiment=args.name,
        storage=args.storage,
        data=ds.data,
        data_options={k: v for k, v in options.items() if v is not None},
        transfer=args.transfer,
        searcher=args.searcher,
        scheduler=args.scheduler,
        allocate=args.allocate,
        total_trials=args.total_trials,
        warm_start=args.warm_start,
        gpus_per_trial=args.gpus_per_trial,
        gpu_memory_gib=args.gpu_memory,
        cpus_per_trial=args.cpus_per_trial,
        address=args.address,
        max_epochs=args.max_epochs,
        seed=args.seed,
        wandb=resolve_mode(args.wandb),
        max_concurrent=args.max_concurrent,
        device=args.device,
        max_failures=args.max_failures,
        checkpoint_every=args.checkpoint_every,
    )
    out = run_search(settings, dry_run=args.dry_run, samples=args.samples)
    return 0 if args.dry_run else search_outcome(out)


def search_outcome(out: str | Path) -> int:
    """The exit status of a search that ran: 1, with a one-line summary, when no trial ended
    with a score (every one diverged or failed): the search found nothing to report."""
    from raydistill.core.results import DONE
    from raydistill.search.table import load_trials

    frame = load_trials(out)
    if len(frame) == 0 or frame["status"].isin(list(DONE)).any():
        return 0
    statuses = frame["status"].value_counts()
    counts = ", ".join(f"{n} {status}" for status, n in statuses.items())
    hint = (
        "lower the learning rate (the space's train.lr, or --set lr=...)"
        if "diverged" in statuses
        else f"the trials' errors are in {out}/tune"
    )
    print(
        f"raydistill: error: no trial of {out} ended with a score ({counts}); {hint}",
        file=sys.stderr,
    )
    return 1


# ---------------------------------------------------------------- reproduce
def reproduce(
    scale: str = "tiny",
    out: str = "runs/reproduce",
    seeds: A.Count | None = None,
    seed: int | None = None,
    trials: A.Count | None = None,
    wandb: Literal["auto", WandbMode] = "auto",
    address: str = "local",
    storage: str | None = None,
    *,
    dataset: DataSource,
) -> int:
    """the paper's whole study: teachers → transfer set → searches → report → export

    Args:
        scale: demo | tiny | small | paper | a scale YAML path
        out: output directory (resumable)
        seeds: repeat each cell's best config with N seeds
        seed: seed of the train / val split (default: the scale's)
        trials: override the scale's trials per cell
        wandb: auto: online with WANDB_API_KEY set, offline otherwise
        address: local | auto | HOST:PORT
        storage: shared storage for trials and checkpoints: s3://, gs://, file://, a path (default OUT/<search>/tune)
    """
    return execute(reproduce_check, reproduce_run, locals(), keep=("teacher",))


def reproduce_check(args: argparse.Namespace) -> Outputs:
    shipped = Path(__file__).resolve().parent.parent / "study" / "scales"
    if not (shipped / f"{args.scale}.yaml").is_file() and not Path(args.scale).is_file():
        names = ", ".join(sorted(p.stem for p in shipped.glob("*.yaml")))
        raise UserError(f"--scale {args.scale!r} is neither a shipped scale ({names}) nor a file")
    args.dataset.export_cache_root()  # the study reads the decode cache root from there
    args.dataset.check()
    return [(A.check_out(args.out), False)]


def reproduce_run(args: argparse.Namespace) -> int:
    from raydistill.study.reproduce import reproduce

    if args.dataset.data:
        args.dataset.prepare()
    path = reproduce(
        args.scale,
        out=args.out,
        data=args.dataset.data,
        seeds=args.seeds,
        wandb=args.wandb,
        address=args.address,
        trials=args.trials,
        split_seed=args.seed,
        storage=args.storage,
    )
    print(path.read_text())
    return 0
