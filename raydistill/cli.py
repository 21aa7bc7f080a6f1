"""The command-line interface: one table mapping command names to the package's functions.

Each command is (help, add_arguments, run). Modules are imported inside `run` so that
`raydistill families` does not pay for importing Ray or W&B. A `UserError` anywhere becomes
one line on stderr and exit status 2.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Sequence

from raydistill.errors import UserError

Command = tuple[str, Callable[[argparse.ArgumentParser], None], Callable[[argparse.Namespace], int]]


def _number_list(cast: type) -> Callable[[str], list]:
    """An argparse type for comma-separated numbers: "1,2,3" → [1, 2, 3]."""

    def parse(text: str) -> list:
        try:
            return [cast(x) for x in text.split(",") if x.strip()]
        except ValueError as exc:
            raise argparse.ArgumentTypeError(
                f"{text!r} is not a comma-separated list of {cast.__name__}s"
            ) from exc

    return parse


_floats = _number_list(float)
_ints = _number_list(int)


# ---------------------------------------------------------------- families / budget
def _families_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--kind", choices=["student", "teacher"], help="list only this kind")
    p.add_argument("--json", action="store_true", help="machine-readable output")


def _families_run(args: argparse.Namespace) -> int:
    from raydistill.students import families

    fams = families(args.kind)
    if args.json:
        rows = [
            {
                "name": f.name,
                "kind": f.kind,
                "depths": list(f.depths),
                "spec_keys": list(f.spec_keys),
            }
            for f in fams.values()
        ]
        print(json.dumps(rows, indent=2))
        return 0
    for f in fams.values():
        print(f"{f.name:10s} {f.kind:8s} depths {','.join(map(str, f.depths)):10s} {f.summary}")
        print(f"{'':10s} spec keys: {', '.join(f.spec_keys)}")
    return 0


def _shape_args(p: argparse.ArgumentParser) -> None:
    """A student's shape and budget (budget and train commands)."""
    p.add_argument("--family", required=True)
    p.add_argument("--depth", type=int, required=True)
    p.add_argument("--budget", required=True, help="parameter budget: 300k, 1M, 3.16M, ...")
    p.add_argument("--ratios", type=_floats, help="width ratios in [0,1], one per width slot")


def _budget_args(p: argparse.ArgumentParser) -> None:
    _shape_args(p)
    p.add_argument("--json", action="store_true")


def _budget_run(args: argparse.Namespace) -> int:
    from raydistill.budget import format_budget, solve_budget

    sol = solve_budget(args.family, args.depth, args.budget, args.ratios)
    if args.json:
        print(json.dumps({"spec": sol.spec, "params": sol.params, "budget": sol.budget}))
        return 0
    print(f"family  {args.family}  depth {args.depth}  budget {format_budget(sol.budget)}")
    print(f"widths  {sol.widths}")
    print(f"params  {sol.params:,}  ({100 * sol.share:.2f}% of {sol.budget:,})")
    return 0


# ---------------------------------------------------------------- teach / transfer


def _spec_items(items: Sequence[str]) -> dict:
    """KEY=VALUE pairs (VALUE as JSON, else a string) → dict; UserError on a missing '='."""
    out = {}
    for item in items or ():
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise UserError(f"--spec {item!r} is invalid; expected KEY=VALUE, e.g. batchnorm=true")
        try:
            out[key] = json.loads(value)
        except json.JSONDecodeError:
            out[key] = value
    return out


def _data_args(p: argparse.ArgumentParser, required: bool) -> None:
    p.add_argument(
        "--data",
        required=required,
        help="dataset source: a .parquet file, cifar10, synthetic-sep[:N], ...",
    )
    more = "" if required else " (default: the teacher's)"
    p.add_argument(
        "--val-size",
        type=int,
        default=10_000 if required else None,
        help="validation images taken from the training pool" + more,
    )
    p.add_argument(
        "--split-seed",
        type=int,
        default=0 if required else None,
        help="seed of the train / val split" + more,
    )
    p.add_argument(
        "--cache-dir", help="decode cache root (default $RAYDISTILL_CACHE or ~/.cache/raydistill)"
    )


def _teach_args(p: argparse.ArgumentParser) -> None:
    _data_args(p, required=True)
    p.add_argument("--family", required=True, help="teacher family: vgg8 or resnet9")
    p.add_argument("--members", type=int, default=3, help="ensemble members (different seeds)")
    p.add_argument("--epochs", type=int, required=True)
    p.add_argument("--out", required=True, help="output directory (members + manifest.json)")
    widths = p.add_mutually_exclusive_group()
    widths.add_argument(
        "--width-scale", type=float, default=1.0, help="× the family's default widths"
    )
    widths.add_argument("--widths", type=_ints, help="explicit widths, comma-separated")
    p.add_argument(
        "--spec",
        action="append",
        metavar="KEY=VALUE",
        help="other spec keys (dropout=0.3, batchnorm=true)",
    )
    p.add_argument(
        "--train-subset", type=int, help="class-balanced subset of the train split (CPU runs)"
    )
    for name, typ in (("lr", float), ("batch-size", int), ("weight-decay", float),
                      ("label-smoothing", float), ("warmup-epochs", int)):  # fmt: skip
        p.add_argument(f"--{name}", type=typ, help="override the family's recipe")
    p.add_argument("--preprocess", choices=["per_image", "dataset", "none"])
    p.add_argument("--augment", choices=["paper", "paper_hsv", "flip_translate", "none"])
    p.add_argument("--seed", type=int, default=0, help="member i gets seed SEED+i")
    p.add_argument(
        "--address", default="local", help="'local' (start a private Ray), 'auto' or host:port"
    )
    p.add_argument("--num-cpus", type=int, help="CPUs of the local Ray (default: all)")
    p.add_argument(
        "--gpu-fraction", type=float, help="GPUs per member task (default: shared evenly)"
    )


def _teach_run(args: argparse.Namespace) -> int:
    from raydistill.data import load_dataset
    from raydistill.teachers import teach

    splits = load_dataset(args.data, cache_dir=args.cache_dir, val_size=args.val_size,
                          seed=args.split_seed, train_subset=args.train_subset)  # fmt: skip
    train = {"lr": args.lr, "batch_size": args.batch_size, "weight_decay": args.weight_decay,
             "label_smoothing": args.label_smoothing, "warmup_epochs": args.warmup_epochs,
             "preprocess": args.preprocess, "augment": args.augment}  # fmt: skip
    teach(
        splits, args.family, args.members, args.epochs, args.out, widths=args.widths,
        width_scale=args.width_scale, spec_keys=_spec_items(args.spec), train=train,
        seed=args.seed, address=args.address, num_cpus=args.num_cpus,
        gpu_fraction=args.gpu_fraction, data_source=str(args.data),
        split={"val_size": args.val_size, "seed": args.split_seed, "train_subset": args.train_subset},
    )  # fmt: skip
    print(f"wrote {args.out}/manifest.json")
    return 0


def _transfer_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--teacher", required=True, help="a `raydistill teach` output directory")
    p.add_argument(
        "--epochs", type=int, required=True, help="augmented epochs to generate (paper: 160)"
    )
    p.add_argument("--out", required=True, help="output .parquet file")
    _data_args(p, required=False)
    p.add_argument("--seed", type=int, default=0, help="seed of the views and their order")
    p.add_argument(
        "--aug",
        choices=["paper_hsv", "paper"],
        default="paper_hsv",
        help="augmentation of the views",
    )
    p.add_argument("--batch-size", type=int, default=1000, help="views per teacher forward pass")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1, ...")


def _transfer_run(args: argparse.Namespace) -> int:
    import time

    from raydistill.data import AugConfig, load_dataset
    from raydistill.teachers import load_ensemble
    from raydistill.transfer import load_transfer_set, size_summary, write_transfer_set

    ensemble = load_ensemble(args.teacher, device=args.device)
    config = ensemble.manifest.get("config", {})
    source, split = args.data or config.get("data"), config.get("split") or {}
    if not source:
        raise UserError(f"{args.teacher}/manifest.json names no dataset; pass --data SOURCE")
    val_size = args.val_size if args.val_size is not None else split.get("val_size", 10_000)
    seed = args.split_seed if args.split_seed is not None else split.get("seed", 0)
    # The whole train split (no subset): the teacher may have trained on a subset of it.
    splits = load_dataset(source, cache_dir=args.cache_dir, val_size=val_size, seed=seed)
    t0 = time.perf_counter()
    path = write_transfer_set(args.out, ensemble, splits, args.epochs, seed=args.seed,
                              aug=getattr(AugConfig, args.aug)(), batch_size=args.batch_size,
                              log=print)  # fmt: skip
    wall = time.perf_counter() - t0
    ts = load_transfer_set(path, splits=splits, teacher_fingerprints=ensemble.fingerprints)
    print(f"wrote {path}: {ts.num_epochs} epochs × {ts.views_per_epoch} views, "
          f"{size_summary(path)}, {wall:.1f}s; ensemble val {100 * ts.meta['ensemble_val_acc']:.2f}% "
          f"test {100 * ts.meta['ensemble_test_acc']:.2f}%")  # fmt: skip
    return 0


# ---------------------------------------------------------------- report / export
def _report_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("dir", help="search directory (holds trials.parquet)")
    p.add_argument("--top-k", type=int, default=5, help="trials averaged per cell (paper: 5)")
    p.add_argument("--compare-paper", action="store_true",
                   help="also write report/compare_paper.md (the paper's published Table 2)")  # fmt: skip
    p.add_argument("--wandb", choices=["online", "offline", "off"],
                   help="also log a W&B summary run (default: no summary run)")  # fmt: skip


def _report_run(args: argparse.Namespace) -> int:
    from raydistill.report import make_report

    rep = make_report(args.dir, top_k=args.top_k, compare_with_paper=args.compare_paper)
    print(rep.markdown, end="")
    for name, path in rep.paths.items():
        print(
            f"wrote {path}" + ("" if name != "figure1" else f" ({path.stat().st_size // 1024} KiB)")
        )
    if args.wandb and args.wandb != "off":
        from raydistill.tracking import log_summary

        print(f"W&B summary run {log_summary(args.dir, args.wandb)} ({args.wandb})")
    return 0


def _export_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("dir", help="search directory (holds trials.parquet)")
    which = p.add_mutually_exclusive_group(required=True)
    which.add_argument("--cell", action="append", metavar="CELL",
                       help="cnn-d2@1M (that cell's best trial), cnn@1M (best over depths), "
                            "suffix :hard for hard-label twins; repeatable")  # fmt: skip
    which.add_argument("--all", action="store_true", help="the best trial of every cell")
    p.add_argument("--out", required=True, help="export directory (one sub-directory per cell)")
    p.add_argument("--data", help="dataset to re-verify test accuracy on (default: the manifest's)")
    p.add_argument("--no-verify-test", action="store_true", help="skip the test re-evaluation")
    p.add_argument(
        "--onnx", action="store_true", help="also write model.onnx (needs onnx, onnxscript)"
    )


def _export_run(args: argparse.Namespace) -> int:
    from raydistill.export import export_cells

    results = export_cells(args.dir, None if args.all else args.cell, args.out, data=args.data,
                           verify_test=not args.no_verify_test, onnx=args.onnx)  # fmt: skip
    for r in results:
        test = "–" if r.test_acc is None else f"{100 * r.test_acc:.2f}%"
        val = "–" if r.val_acc is None else f"{100 * r.val_acc:.2f}%"
        print(f"{r.cell}: {r.path}  params {r.params:,}  val {val}  test {test}  ({r.note})")
    return 0


# ---------------------------------------------------------------- search
def _search_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "spaces",
        nargs="*",
        metavar="SPACE.yaml",
        help="search spaces (search_spaces/*.yaml, or a shipped name: mlp, cnn, allconv)",
    )
    p.add_argument("--budgets", help="parameter budgets per cell: 300k,1M,3.16M")
    p.add_argument("--depths", type=_ints, help="depths to search (∩ each space's depths)")
    p.add_argument("--trials", type=int, default=16, help="trials per cell (default 16)")
    p.add_argument(
        "--transfer", help="transfer set (.parquet); without it: hard labels, loss 'hard'"
    )
    p.add_argument("--data", default="cifar10", help="dataset source (default cifar10)")
    p.add_argument("--val-size", type=int, default=10_000, help="validation images (default 10000)")
    p.add_argument("--split-seed", type=int, default=0, help="seed of the train / val split")
    p.add_argument("--train-subset", type=int, help="class-balanced training subset (CPU runs)")
    p.add_argument("--cache-dir", help="decode cache root (default $RAYDISTILL_CACHE)")
    p.add_argument("--gpus-per-trial", type=float, default=0.0, help="e.g. 0.25: 4 trials per GPU")
    p.add_argument("--cpus-per-trial", type=float, default=1.0)
    p.add_argument("--searcher", choices=["tpe", "gp", "random"], default="tpe")
    p.add_argument(
        "--scheduler",
        choices=["asha", "none"],
        default="none",
        help="asha: early stopping within each cell, epochs as the resource",
    )
    p.add_argument("--address", default="local", help="Ray: local (start one), auto, or HOST:PORT")
    p.add_argument("--out", help="output directory (DIR)")
    p.add_argument("--name", help="experiment name (default: DIR's name)")
    p.add_argument("--max-epochs", type=int, help="cap every trial's epochs")
    p.add_argument("--seed", type=int, default=0, help="searchers' and trials' seed")
    p.add_argument(
        "--storage", help="where Tune writes: a path, s3://..., gs://... (default DIR/tune)"
    )
    p.add_argument(
        "--wandb",
        choices=["online", "offline", "off"],
        help="W&B per trial (default: WANDB_MODE, else online iff an API key is set)",
    )
    p.add_argument("--max-concurrent", type=int, help="at most K trials at once")
    p.add_argument("--max-failures", type=int, default=2, help="retries of a failed trial")
    p.add_argument("--device", default="auto", help="trial device: auto, cpu, cuda")
    p.add_argument("--resume", metavar="DIR", help="continue an interrupted search in DIR")
    p.add_argument("--extend", type=int, metavar="N", help="add N trials per cell to --out DIR")
    p.add_argument("--cell", action="append", help="with --extend: only this cell (repeatable)")
    p.add_argument(
        "--dry-run", action="store_true", help="print cells and sample configs; train nothing"
    )
    p.add_argument("--samples", type=int, default=3, help="sample configs per cell for --dry-run")


def _search_run(args: argparse.Namespace) -> int:
    from raydistill.search import extend_search, resume_search, run_search

    if args.resume:
        resume_search(args.resume)
        return 0
    if args.extend is not None:
        if not args.out:
            raise UserError("--extend N needs --out DIR (the search to extend)")
        extend_search(args.out, args.extend, cells=args.cell)
        return 0
    if not args.spaces or not args.budgets or (not args.out and not args.dry_run):
        raise UserError("search needs SPACE.yaml ..., --budgets and --out (or --resume DIR)")
    from raydistill.tracking import resolve_mode

    options = {"val_size": args.val_size, "seed": args.split_seed,
               "train_subset": args.train_subset, "cache_dir": args.cache_dir}  # fmt: skip
    run_search(
        args.spaces, budgets=args.budgets, depths=args.depths, trials=args.trials,
        data=args.data, transfer=args.transfer, out=args.out or "search", name=args.name,
        searcher=args.searcher, scheduler=args.scheduler, gpus_per_trial=args.gpus_per_trial,
        cpus_per_trial=args.cpus_per_trial, address=args.address, max_epochs=args.max_epochs,
        seed=args.seed, storage=args.storage, wandb=resolve_mode(args.wandb),
        max_concurrent=args.max_concurrent, device=args.device, max_failures=args.max_failures,
        data_options={k: v for k, v in options.items() if v is not None},
        dry_run=args.dry_run, samples=args.samples, argv=sys.argv,
    )  # fmt: skip
    return 0


# ---------------------------------------------------------------- train (one student)
def _train_args(p: argparse.ArgumentParser) -> None:
    _shape_args(p)
    _data_args(p, required=True)
    p.add_argument("--train-subset", type=int, help="class-balanced subset of the train split")
    p.add_argument("--transfer", help="transfer set (Parquet); without it: hard labels on the fly")
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a TrainConfig field, e.g. --set lr=0.01 --set loss=kd (repeatable)",
    )
    p.add_argument("--checkpoint-dir", help="save a resumable checkpoint here every epoch")
    p.add_argument("--resume", help="resume from this checkpoint directory")


def _parse_sets(items: Sequence[str]) -> dict:
    import yaml

    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep:
            raise UserError(f"--set {item!r} is not KEY=VALUE")
        out[key.strip()] = yaml.safe_load(value)  # numbers, booleans and strings as in YAML
    return out


def _train_run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from raydistill.budget import solve_budget
    from raydistill.data import load_dataset
    from raydistill.train import TrainConfig, train_student

    overrides = _parse_sets(args.set)
    if not args.transfer:
        overrides.setdefault("loss", "hard")
    cfg = TrainConfig.from_dict(overrides)
    splits = load_dataset(args.data, cache_dir=args.cache_dir, val_size=args.val_size,
                          seed=args.split_seed, train_subset=args.train_subset)  # fmt: skip
    ts = None
    if args.transfer:
        from raydistill.transfer import load_transfer_set

        ts = load_transfer_set(args.transfer, splits=splits)
    sol = solve_budget(
        args.family,
        args.depth,
        args.budget,
        args.ratios,
        in_shape=list(splits.image_shape),
        num_classes=splits.num_classes,
    )
    print(
        f"{args.family}-d{args.depth}: widths {sol.widths}, {sol.params:,} params "
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


# ---------------------------------------------------------------- reproduce (the whole study)
def _reproduce_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--scale", default="tiny", help="tiny | small | paper | a scale YAML path")
    p.add_argument(
        "--data", help="overrides the scale's data source (a path, cifar10, synthetic-sep)"
    )
    p.add_argument("--out", default="runs/reproduce", help="output directory (resumable)")
    p.add_argument("--seeds", type=int, help="repeat each cell's best config with N seeds")
    p.add_argument("--trials", type=int, help="override the scale's trials per cell")
    p.add_argument("--wandb", choices=["online", "offline", "off"], default="off")
    p.add_argument("--address", default="local", help="local | auto | HOST:PORT")


def _reproduce_run(args: argparse.Namespace) -> int:
    from raydistill.reproduce import reproduce

    path = reproduce(
        args.scale,
        out=args.out,
        data=args.data,
        seeds=args.seeds,
        wandb=args.wandb,
        address=args.address,
        trials=args.trials,
    )
    print(path.read_text())
    return 0


COMMANDS: dict[str, Command] = {
    "families": (
        "list the registered network families and their spec keys",
        _families_args,
        _families_run,
    ),
    "budget": ("solve the widths of a family for a parameter budget", _budget_args, _budget_run),
    "teach": ("train a teacher ensemble (members as parallel Ray tasks)", _teach_args, _teach_run),
    "transfer": (
        "pre-generate augmented epochs with the ensemble's logits (Parquet)",
        _transfer_args,
        _transfer_run,
    ),
    "report": (
        "Table 2, Figure 1 and Pareto fronts of a search directory",
        _report_args,
        _report_run,
    ),
    "export": (
        "export the best students (safetensors, spec.json, torch.export)",
        _export_args,
        _export_run,
    ),
    "search": (
        "Ray Tune search of student cells (family × depth × budget)",
        _search_args,
        _search_run,
    ),
    "train": ("train one student and print the per-epoch table", _train_args, _train_run),
    "reproduce": (
        "the paper's whole study: teachers → transfer set → searches → report → export",
        _reproduce_args,
        _reproduce_run,
    ),
}


def _parser() -> argparse.ArgumentParser:
    from raydistill import __version__

    parser = argparse.ArgumentParser(prog="raydistill", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"raydistill {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, (help_text, add_args, run) in COMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        add_args(p)
        p.set_defaults(_run=run)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `raydistill` console script; returns the exit status."""
    parser = _parser()
    args = parser.parse_args(argv)
    try:
        return int(args._run(args) or 0)
    except UserError as exc:
        print(f"raydistill: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("raydistill: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
