"""The commands that train: teach, transfer, train, search, reproduce.

Each command is `add_args(parser)`, `check(args)` (torch-free: refuses bad input before the
heavy imports and returns the output paths the command will create) and `run(args)` (imports
its module and does the work).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from raydistill.cli import args as A
from raydistill.errors import UserError

Outputs = list[tuple[Path, bool]]  # (path, is_file)


# ---------------------------------------------------------------- shared arguments
def data_args(
    p: argparse.ArgumentParser, *, required: bool, inherited: bool = False, note: str = ""
) -> None:
    """--data, --val-size, --split-seed, --cache-dir, --download."""
    note = " (default: the teacher's)" if inherited else note
    p.add_argument("--data", required=required,
                   help="dataset: cifar10, a .parquet file, an ImageFolder root, a "
                        "cifar-10-batches-py folder, synthetic-sep[:N]" + note)  # fmt: skip
    more = " (default: the teacher's)" if inherited else ""
    p.add_argument("--val-size", type=A.at_least(0),
                   help="validation images taken from the training pool (default: "
                        "min(10000, 20%% of the pool))" + more)  # fmt: skip
    p.add_argument("--split-seed", type=int, default=None if inherited else 0,
                   help="seed of the train / val split" + more)  # fmt: skip
    p.add_argument("--cache-dir", help="decode cache root (default $RAYDISTILL_CACHE or ~/.cache/raydistill)")  # fmt: skip
    p.add_argument("--download", action="store_true",
                   help="download CIFAR-10 into the cache root if it is not there (--data cifar10)")  # fmt: skip


def prepare_data(args: argparse.Namespace, source: str | None = None) -> None:
    """Refuse a bad --data (no torch); with --download fetch CIFAR-10 before the work starts."""
    source = source if source is not None else args.data
    A.check_data(source, args.cache_dir, args.download)
    if args.download and source == "cifar10":
        from raydistill.data.sources import fetch_cifar10

        fetch_cifar10(args.cache_dir)


def check_family(family: str, depth: int | None, kind: str) -> None:
    """Refuse an unknown family or depth from the source index (no torch)."""
    from raydistill.cli.families_index import static_families

    every = static_families()
    if every is None:  # the index could not read the sources: the registry will check
        return
    known = {n: f for n, f in every.items() if f.kind == kind}
    if family not in known:
        what = (
            f"{family!r} is a {every[family].kind} family"
            if family in every
            else (f"unknown family {family!r}")
        )
        raise UserError(f"{what}; {kind} families: {', '.join(known)}")
    if depth is not None and depth not in known[family].depths:
        raise UserError(
            f"family {family!r} depth {depth} is invalid; valid: {list(known[family].depths)}"
        )


def load_splits(args: argparse.Namespace, **overrides):
    from raydistill.data import load_dataset

    opts = {"val_size": args.val_size, "seed": args.split_seed,
            "train_subset": getattr(args, "train_subset", None), **overrides}  # fmt: skip
    return load_dataset(args.data, cache_dir=args.cache_dir, **opts)


# ---------------------------------------------------------------- teach
def teach_args(p: argparse.ArgumentParser) -> None:
    data_args(p, required=True)
    p.add_argument("--family", required=True, help="teacher family: vgg8 or resnet9")
    p.add_argument("--members", type=A.at_least(1), default=3, help="ensemble members (seeds)")
    p.add_argument("--epochs", type=A.at_least(1), required=True)
    p.add_argument("--out", required=True, help="output directory (members + manifest.json)")
    widths = p.add_mutually_exclusive_group()
    widths.add_argument("--width-scale", type=A.positive_float, default=1.0,
                        help="× the family's default widths")  # fmt: skip
    widths.add_argument("--widths", type=A.number_list(int), help="explicit widths, comma-separated")  # fmt: skip
    p.add_argument("--spec", action="append", metavar="KEY=VALUE",
                   help="other spec keys, values as YAML (dropout=0.3, batchnorm=true)")  # fmt: skip
    p.add_argument("--train-subset", type=A.at_least(1), help="class-balanced train subset (CPU runs)")  # fmt: skip
    for name, typ in (("lr", A.positive_float), ("batch-size", A.at_least(1)),
                      ("weight-decay", float), ("label-smoothing", float),
                      ("warmup-epochs", A.at_least(0))):  # fmt: skip
        p.add_argument(f"--{name}", type=typ, help="override the family's recipe")
    p.add_argument("--preprocess", choices=["per_image", "dataset", "none"])
    p.add_argument("--augment", choices=["paper", "paper_hsv", "flip_translate", "none"])
    p.add_argument("--seed", type=int, default=0, help="member i gets seed SEED+i")
    p.add_argument("--address", default="local", help="'local' (a private Ray), 'auto' or host:port")  # fmt: skip
    p.add_argument("--num-cpus", type=A.at_least(1), help="CPUs of the local Ray (default: all)")
    p.add_argument("--gpu-fraction", type=A.positive_float, help="GPUs per member task")


def teach_check(args: argparse.Namespace) -> Outputs:
    args.spec_keys = A.parse_key_values(args.spec, "--spec")
    check_family(args.family, None, "teacher")
    A.check_data(args.data, args.cache_dir, args.download)
    return [(A.check_out(args.out), False)]


def teach_run(args: argparse.Namespace) -> int:
    from raydistill.teachers import teach

    prepare_data(args)
    splits = load_splits(args)
    train = {"lr": args.lr, "batch_size": args.batch_size, "weight_decay": args.weight_decay,
             "label_smoothing": args.label_smoothing, "warmup_epochs": args.warmup_epochs,
             "preprocess": args.preprocess, "augment": args.augment}  # fmt: skip
    split = {"val_size": len(splits.val_y), "seed": args.split_seed,  # the resolved size
             "train_subset": args.train_subset}  # fmt: skip
    teach(
        splits, args.family, args.members, args.epochs, args.out, widths=args.widths,
        width_scale=args.width_scale, spec_keys=args.spec_keys, train=train, seed=args.seed,
        address=args.address, num_cpus=args.num_cpus, gpu_fraction=args.gpu_fraction,
        data_source=str(args.data), split=split,
    )  # fmt: skip
    print(f"wrote {args.out}/manifest.json")
    return 0


# ---------------------------------------------------------------- transfer
def transfer_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--teacher", required=True, help="a `raydistill teach` output directory")
    p.add_argument("--epochs", type=A.at_least(1), required=True,
                   help="augmented epochs to generate (paper: 160)")  # fmt: skip
    p.add_argument("--out", required=True, help="output .parquet file")
    data_args(p, required=False, inherited=True)
    p.add_argument("--seed", type=int, default=0, help="seed of the views and their order")
    p.add_argument("--aug", choices=["paper_hsv", "paper"],
                   help="augmentation of the views (default: paper_hsv for colour uint8 "
                        "images, paper otherwise: HSV jitter needs colours)")  # fmt: skip
    p.add_argument("--batch-size", type=A.at_least(1), default=1000, help="views per forward pass")  # fmt: skip
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1, ...")


def transfer_check(args: argparse.Namespace) -> Outputs:
    if not (Path(args.teacher) / "manifest.json").is_file():
        raise UserError(f"--teacher {args.teacher!r} has no manifest.json; is it a `raydistill teach` output?")  # fmt: skip
    A.check_data(args.data, args.cache_dir, args.download)
    return [(A.check_out(args.out, is_file=True), True)]


def transfer_run(args: argparse.Namespace) -> int:
    import time

    from raydistill.data import AugConfig
    from raydistill.teachers import load_ensemble
    from raydistill.transfer import load_transfer_set, size_summary, write_transfer_set

    ensemble = load_ensemble(args.teacher, device=args.device)
    config = ensemble.manifest.get("config", {})
    args.data, split = args.data or config.get("data"), config.get("split") or {}
    if not args.data:
        raise UserError(f"{args.teacher}/manifest.json names no dataset; pass --data SOURCE")
    prepare_data(args)
    # The whole train split (no subset): the teacher may have trained on a subset of it.
    splits = load_splits(
        args,
        val_size=args.val_size if args.val_size is not None else split.get("val_size"),
        seed=args.split_seed if args.split_seed is not None else split.get("seed", 0),
        train_subset=None,
    )
    colour = splits.train_x.dtype == "uint8" and splits.image_shape[0] == 3
    aug = args.aug or ("paper_hsv" if colour else "paper")
    t0 = time.perf_counter()
    path = write_transfer_set(args.out, ensemble, splits, args.epochs, seed=args.seed,
                              aug=getattr(AugConfig, aug)(), batch_size=args.batch_size,
                              log=print)  # fmt: skip
    wall = time.perf_counter() - t0
    ts = load_transfer_set(path, splits=splits, teacher_fingerprints=ensemble.fingerprints)
    print(f"wrote {path}: {ts.num_epochs} epochs × {ts.views_per_epoch} views, "
          f"{size_summary(path)}, {wall:.1f}s; ensemble val {100 * ts.meta['ensemble_val_acc']:.2f}% "
          f"test {100 * ts.meta['ensemble_test_acc']:.2f}%")  # fmt: skip
    return 0
