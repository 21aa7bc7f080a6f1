"""The commands about students: train (one student), search (Ray Tune), reproduce (the study).

Same shape as `raydistill.cli.pipeline`: `add_args`, a torch-free `check`, and `run`.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from raydistill.cli import args as A
from raydistill.cli.pipeline import Outputs, check_family, data_args, load_splits, prepare_data
from raydistill.errors import UserError


def shape_args(p: argparse.ArgumentParser) -> None:
    """A student's shape and budget (budget and train commands)."""
    p.add_argument("--family", required=True)
    p.add_argument("--depth", type=A.at_least(1), required=True)
    p.add_argument("--budget", type=A.budget, required=True, help="parameter budget: 300k, 1M, 3.16M, ...")  # fmt: skip
    p.add_argument("--ratios", type=A.number_list(float), help="width ratios in [0,1], one per width slot")  # fmt: skip


def set_args(p: argparse.ArgumentParser, what: str) -> None:
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help=f"a TrainConfig field {what}, value as YAML, e.g. --set lr=0.01 --set loss=kd")  # fmt: skip


def train_defaults() -> dict:
    """TrainConfig's fields and defaults (imports raydistill.train, and so torch)."""
    from dataclasses import MISSING, fields

    from raydistill.train import TrainConfig

    return {f.name: f.default for f in fields(TrainConfig) if f.default is not MISSING}


# ---------------------------------------------------------------- train
def train_args(p: argparse.ArgumentParser) -> None:
    shape_args(p)
    data_args(p, required=True)
    p.add_argument("--train-subset", type=A.at_least(1), help="class-balanced subset of the train split")  # fmt: skip
    p.add_argument("--transfer", help="transfer set (Parquet); without it: hard labels on the fly")
    set_args(p, "(repeatable)")
    p.add_argument("--checkpoint-dir", help="save a resumable checkpoint here every epoch")
    p.add_argument("--resume", help="resume from this checkpoint directory")


def train_check(args: argparse.Namespace) -> Outputs:
    args.sets = A.parse_key_values(args.set, "--set")
    check_family(args.family, args.depth, "student")
    A.check_data(args.data, args.cache_dir, args.download)
    for flag, path in (("--transfer", args.transfer), ("--resume", args.resume)):
        if path and not Path(path).exists():
            raise UserError(f"{flag} {path!r} does not exist")
    return [(A.check_out(args.checkpoint_dir), False)] if args.checkpoint_dir else []


def train_run(args: argparse.Namespace) -> int:
    from raydistill.budget import solve_budget
    from raydistill.train import TrainConfig, train_student

    overrides = A.check_fields(args.sets, train_defaults(), "--set")
    if not args.transfer:
        overrides.setdefault("loss", "hard")
    cfg = TrainConfig.from_dict(overrides)
    prepare_data(args)
    splits = load_splits(args)
    ts = None
    if args.transfer:
        from raydistill.transfer import load_transfer_set

        ts = load_transfer_set(args.transfer, splits=splits)
    sol = solve_budget(args.family, args.depth, args.budget, args.ratios,
                       in_shape=list(splits.image_shape), num_classes=splits.num_classes)  # fmt: skip
    print(f"{args.family}-d{args.depth}: widths {sol.widths}, {sol.params:,} params "
          f"({100 * sol.share:.2f}% of {sol.budget:,}); loss {cfg.loss}")  # fmt: skip
    print(f"{'epoch':>5} {'train/loss':>11} {'val/acc':>8} {'val/loss':>9} {'lr':>9}")

    def show(m: dict, save) -> None:
        print(f"{m['epoch']:>5} {m['train/loss']:>11.4f} {m.get('val/acc', float('nan')):>8.4f} "
              f"{m.get('val/loss', float('nan')):>9.4f} {m['lr']:>9.2e}", flush=True)  # fmt: skip
        if args.checkpoint_dir:
            save(Path(args.checkpoint_dir))

    result = train_student(sol.spec, splits, ts, cfg, report=show, checkpoint=args.resume)
    test = "–" if result.test_acc is None else f"{result.test_acc:.4f}"
    print(f"status {result.status}; best val/acc {result.best_val_acc:.4f} (epoch "
          f"{result.best_epoch}); test/acc {test}; {result.wall_s:.1f} s")  # fmt: skip
    return 0 if result.status != "diverged" else 1


# ---------------------------------------------------------------- search
def search_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("spaces", nargs="*", metavar="SPACE.yaml",
                   help="search spaces (search_spaces/*.yaml, or a shipped name: mlp, cnn, allconv)")  # fmt: skip
    p.add_argument("--budgets", type=A.budgets, help="parameter budgets per cell: 300k,1M,3.16M")
    p.add_argument("--depths", type=A.number_list(int), help="depths to search (∩ each space's)")
    p.add_argument("--trials", type=A.at_least(1), default=16, help="trials per cell (default 16)")
    p.add_argument("--transfer", help="transfer set (.parquet); without it: hard labels, loss 'hard'")  # fmt: skip
    data_args(p, required=False, note=" (default: cifar10)")  # checked after the spaces
    p.add_argument("--train-subset", type=A.at_least(1), help="class-balanced training subset (CPU runs)")  # fmt: skip
    set_args(p, "fixed in every space (overrides the space)")
    p.add_argument("--gpus-per-trial", type=float, default=0.0, help="e.g. 0.25: 4 trials per GPU")
    p.add_argument("--cpus-per-trial", type=A.positive_float, default=1.0)
    p.add_argument("--searcher", choices=["tpe", "gp", "random"], default="tpe")
    p.add_argument("--scheduler", choices=["asha", "none"], default="none",
                   help="asha: early stopping within each cell, epochs as the resource")  # fmt: skip
    p.add_argument("--address", default="local", help="Ray: local (start one), auto, or HOST:PORT")
    p.add_argument("--out", help="output directory (DIR)")
    p.add_argument("--name", help="experiment name (default: DIR's name)")
    p.add_argument("--max-epochs", type=A.at_least(1), help="cap every trial's epochs")
    p.add_argument("--seed", type=int, default=0, help="searchers' and trials' seed")
    p.add_argument("--storage", help="where Tune writes trials and checkpoints: a path, s3://, gs://, file:// (default DIR/tune)")  # fmt: skip
    p.add_argument("--checkpoint-every", type=A.at_least(1), default=1, help="epochs between a trial's checkpoints (one at its end too)")  # fmt: skip
    p.add_argument("--wandb", choices=["online", "offline", "off"],
                   help="W&B per trial (default: WANDB_MODE, else online iff an API key is set)")  # fmt: skip
    p.add_argument("--max-concurrent", type=A.at_least(1), help="at most K trials at once")
    p.add_argument("--max-failures", type=A.at_least(0), default=2, help="retries of a failed trial")  # fmt: skip
    p.add_argument("--device", default="auto", help="trial device: auto, cpu, cuda")
    p.add_argument("--resume", metavar="DIR", help="continue an interrupted search in DIR")
    p.add_argument("--extend", type=A.at_least(1), metavar="N", help="add N trials per cell to --out DIR")  # fmt: skip
    p.add_argument("--cell", action="append", help="with --extend: only this cell (repeatable)")
    p.add_argument("--dry-run", action="store_true", help="print cells and sample configs; train nothing")  # fmt: skip
    p.add_argument("--samples", type=A.at_least(1), default=3, help="sample configs per cell for --dry-run")  # fmt: skip


def search_check(args: argparse.Namespace) -> Outputs:
    args.sets = A.parse_key_values(args.set, "--set")
    if args.resume or args.extend is not None:
        where = args.resume or args.out
        if not where:
            raise UserError("--extend N needs --out DIR (the search to extend)")
        if not (Path(where) / "search.json").is_file():
            raise UserError(f"{where!r} holds no search (no search.json)")
        return []
    if not args.spaces or not args.budgets or (not args.out and not args.dry_run):
        raise UserError("search needs SPACE.yaml ..., --budgets and --out (or --resume DIR)")
    if args.transfer and not Path(args.transfer).is_file():
        raise UserError(f"--transfer {args.transfer!r} does not exist")
    A.check_data(args.data, args.cache_dir, args.download)  # when given: a typo costs no torch
    return [] if args.dry_run else [(A.check_out(args.out), False)]


def search_run(args: argparse.Namespace) -> int:
    from raydistill.search import extend_search, resume_search, run_search

    if args.resume:
        resume_search(args.resume)
        return 0
    if args.extend is not None:
        extend_search(args.out, args.extend, cells=args.cell)
        return 0
    from raydistill.spaces import load_space, parse_space
    from raydistill.tracking import resolve_mode

    sets = A.check_fields(args.sets, train_defaults(), "--set")
    spaces = [load_space(s) for s in args.spaces]
    if sets:  # re-validated as part of each space: the same rules as a value in the YAML
        spaces = [parse_space({**s.raw, "train": {**(s.raw.get("train") or {}), **sets}},
                              f"{s.source} with --set") for s in spaces]  # fmt: skip
    args.data = args.data or "cifar10"
    prepare_data(args)
    options = {"val_size": args.val_size, "seed": args.split_seed,
               "train_subset": args.train_subset, "cache_dir": args.cache_dir}  # fmt: skip
    run_search(
        spaces, budgets=args.budgets, depths=args.depths, trials=args.trials,
        data=args.data, transfer=args.transfer, out=args.out or "search", name=args.name,
        searcher=args.searcher, scheduler=args.scheduler, gpus_per_trial=args.gpus_per_trial,
        cpus_per_trial=args.cpus_per_trial, address=args.address, max_epochs=args.max_epochs,
        seed=args.seed, storage=args.storage, wandb=resolve_mode(args.wandb),
        checkpoint_every=args.checkpoint_every,
        max_concurrent=args.max_concurrent, device=args.device, max_failures=args.max_failures,
        data_options={k: v for k, v in options.items() if v is not None},
        dry_run=args.dry_run, samples=args.samples, argv=sys.argv,
    )  # fmt: skip
    return 0


# ---------------------------------------------------------------- reproduce
def reproduce_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--scale", default="tiny", help="tiny | small | paper | a scale YAML path")
    p.add_argument("--data", help="overrides the scale's data source (a path, cifar10, synthetic-sep)")  # fmt: skip
    p.add_argument("--cache-dir", help="decode cache root (default $RAYDISTILL_CACHE)")
    p.add_argument("--download", action="store_true", help="download CIFAR-10 if --data cifar10 is not cached")  # fmt: skip
    p.add_argument("--out", default="runs/reproduce", help="output directory (resumable)")
    p.add_argument("--seeds", type=A.at_least(1), help="repeat each cell's best config with N seeds")  # fmt: skip
    p.add_argument("--seed", type=int, help="seed of the train / val split (default: the scale's)")
    p.add_argument("--trials", type=A.at_least(1), help="override the scale's trials per cell")
    p.add_argument("--wandb", choices=["auto", "online", "offline", "off"], default="auto",
                   help="auto (default): online with WANDB_API_KEY set, offline otherwise")  # fmt: skip
    p.add_argument("--address", default="local", help="local | auto | HOST:PORT")
    p.add_argument("--storage", help="shared storage for trials and checkpoints: s3://, gs://, file://, a path (default OUT/<search>/tune)")  # fmt: skip


def reproduce_check(args: argparse.Namespace) -> Outputs:
    from raydistill.data.sources import cache_root

    shipped = Path(__file__).resolve().parent.parent / "scales"
    if not (shipped / f"{args.scale}.yaml").is_file() and not Path(args.scale).is_file():
        names = ", ".join(sorted(p.stem for p in shipped.glob("*.yaml")))
        raise UserError(f"--scale {args.scale!r} is neither a shipped scale ({names}) nor a file")
    if args.cache_dir:  # the study reads the decode cache root from the environment
        import os

        os.environ["RAYDISTILL_CACHE"] = str(cache_root(args.cache_dir))
    A.check_data(args.data, args.cache_dir, args.download)
    return [(A.check_out(args.out), False)]


def reproduce_run(args: argparse.Namespace) -> int:
    from raydistill.reproduce import reproduce

    if args.data:
        prepare_data(args)
    path = reproduce(args.scale, out=args.out, data=args.data, seeds=args.seeds, wandb=args.wandb,
                     address=args.address, trials=args.trials, split_seed=args.seed,
                     storage=args.storage)  # fmt: skip
    print(path.read_text())
    return 0
