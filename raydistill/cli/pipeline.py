"""The commands that make the teacher side: teach (an ensemble), transfer (the transfer set).

Each command is a typed function (its parameters are the options, its docstring the help; see
`raydistill.cli.parser`) that runs `check(args)` (torch-free: refuses bad input before the
heavy imports and returns the output paths the command will create) and then `run(args)`
(imports its module and does the work) through `raydistill.cli.command.execute`.
"""

import argparse
from pathlib import Path

from raydistill.cli import args as A
from raydistill.cli.command import Outputs, execute
from raydistill.cli.data_options import DataOptions
from raydistill.core.errors import UserError
from raydistill.core.vocab import AugName, PreprocessName, TransferAugName, WandbMode


# ---------------------------------------------------------------- shared checks
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


# ---------------------------------------------------------------- teach
def teach(
    family: str,
    epochs: A.Count,
    out: str,
    members: A.Count = 3,
    width_scale: A.Positive | None = None,
    widths: A.Ints | None = None,
    spec: A.KeyValues | None = None,
    lr: A.Positive | None = None,
    batch_size: A.Count | None = None,
    weight_decay: float | None = None,
    label_smoothing: float | None = None,
    warmup_epochs: A.Count0 | None = None,
    preprocess: PreprocessName | None = None,
    augment: AugName | None = None,
    seed: int = 0,
    address: str = "local",
    num_cpus: A.Count | None = None,
    gpu_fraction: A.Positive | None = None,
    wandb: WandbMode | None = None,
    *,
    dataset: DataOptions,
) -> int:
    """train a teacher ensemble (members as parallel Ray tasks)

    Args:
        family: teacher family: vgg8, resnet9 or airbench
        epochs: epochs per member
        out: output directory (members + manifest.json)
        members: ensemble members (seeds)
        width_scale: × the family's default widths (default 1; not with --widths)
        widths: explicit widths, comma-separated (not with --width-scale)
        spec: other spec keys, KEY=VALUE with a YAML value (dropout=0.3, batchnorm=true); repeatable
        lr: override the family's recipe
        batch_size: override the family's recipe
        weight_decay: override the family's recipe
        label_smoothing: override the family's recipe
        warmup_epochs: override the family's recipe
        preprocess: override the family's recipe
        augment: override the family's recipe
        seed: member i gets seed SEED+i
        address: 'local' (a private Ray), 'auto' or host:port
        num_cpus: CPUs of the local Ray (default: all)
        gpu_fraction: GPUs per member task
        wandb: a W&B run per member with its epoch curves, in OUT/wandb when offline (default: WANDB_MODE, else online iff an API key is set)
    """
    return execute(teach_check, teach_run, locals())


def teach_check(args: argparse.Namespace) -> Outputs:
    if args.widths is not None and args.width_scale is not None:
        raise UserError("--widths and --width-scale exclude each other; give one")
    args.spec_keys = A.parse_key_values(args.spec, "--spec")
    check_family(args.family, None, "teacher")
    args.dataset.require("teach")
    args.dataset.check()
    outputs = [(A.check_out(args.out), False)]
    A.check_gpu_options(address=args.address, gpus=args.gpu_fraction or 0.0, flag="--gpu-fraction")
    return outputs


def teach_run(args: argparse.Namespace) -> int:
    from raydistill.distill.teachers import teach
    from raydistill.search.settings import recorded_source

    args.dataset.prepare()
    splits = args.dataset.load()
    train = {
        "lr": args.lr,
        "batch_size": args.batch_size,
        "weight_decay": args.weight_decay,
        "label_smoothing": args.label_smoothing,
        "warmup_epochs": args.warmup_epochs,
        "preprocess": args.preprocess,
        "augment": args.augment,
    }
    split = {**args.dataset.split(), "val_size": len(splits.val_y)}  # the resolved size
    ens = teach(
        splits,
        args.family,
        args.members,
        args.epochs,
        args.out,
        widths=args.widths,
        width_scale=args.width_scale or 1.0,
        spec_keys=args.spec_keys,
        train=train,
        seed=args.seed,
        address=args.address,
        num_cpus=args.num_cpus,
        gpu_fraction=args.gpu_fraction,
        data_source=recorded_source(args.dataset.data),
        split=split,
    )
    print(f"wrote {args.out}/manifest.json")
    from raydistill.tracking.stages import log_teachers

    log_teachers(args.out, ens.manifest, args.wandb, _context(args, splits, split))
    return 0


def _context(args: argparse.Namespace, splits, split: dict, ts=None) -> dict:
    """The W&B run context of a stage run on its own: experiment = the --out name."""
    from raydistill.tracking.context import describe_dataset, describe_transfer, run_context

    dataset = describe_dataset(splits, source=str(args.dataset.data), options=split)
    return run_context(Path(args.out).stem, dataset, describe_transfer(ts))


# ---------------------------------------------------------------- transfer
def _teach_manifest(dirs: list[str]) -> dict:
    """The first teach directory's manifest (its dataset and split), or {} without one."""
    from raydistill.core.manifest import read_manifest

    return read_manifest(Path(dirs[0]), kind="teacher") if dirs else {}


def transfer(
    teacher: list[str],
    epochs: A.Count,
    out: str,
    seed: int = 0,
    aug: TransferAugName = "auto",
    batch_size: A.Count = 1000,
    device: str = "auto",
    gpus: A.Count0 | None = None,
    address: str | None = None,
    force: bool = False,
    dry_run: bool = False,
    wandb: WandbMode | None = None,
    *,
    dataset: DataOptions,
) -> int:
    """pre-generate augmented epochs with the ensemble's logits (Parquet)

    Args:
        teacher: a `raydistill teach` output directory, a torch.export program (.pt2), an ONNX model (.onnx), or torchvision:ARCH=WEIGHTS / timm:ARCH=WEIGHTS (local safetensors or state dict; nothing downloaded); optionally ?size=224&resize=crop&mean=..&std=..&channels=BGR for the input it wants; repeatable: one ensemble (averaged logits)
        epochs: augmented epochs to generate (paper: 160)
        out: output .parquet file (an existing one only with --force)
        seed: seed of the views and their order
        aug: augmentation of the views; auto: the teachers' own (what they were trained on: they label it as well as the images); paper_hsv: the paper's crops + HSV jitter; see the printed view accuracy
        batch_size: views per forward pass
        device: auto, cpu, cuda, cuda:1, ... (labelling in this process)
        gpus: label as this many one-GPU Ray tasks (default: the GPUs the teachers used; 0: in this process on --device)
        address: Ray for the --gpus tasks: local, auto or HOST:PORT (default: the teachers')
        force: replace an existing --out file
        dry_run: check the teachers, the data and --out, print what would be written; label nothing
        wandb: a W&B run with the set's sha256 and the ensemble's accuracy on images and views (default: WANDB_MODE, else online iff an API key is set)
    """
    return execute(transfer_check, transfer_run, locals())


def transfer_check(args: argparse.Namespace) -> Outputs:
    from raydistill.distill.sources import parse_teacher

    args.teacher = [args.teacher] if isinstance(args.teacher, str) else list(args.teacher or [])
    if not args.teacher:
        raise UserError(
            "give --teacher T (repeatable): a teach directory, .pt2, .onnx or torchvision:ARCH=W"
        )
    for t in args.teacher:
        if Path(t).is_dir():
            if not (Path(t) / "manifest.json").is_file():
                raise UserError(f"--teacher {t!r} has no manifest.json; is it a `raydistill teach` output?")  # fmt: skip
        else:
            parse_teacher(t)  # the form, the file's existence, the input declaration
    args.dataset.check()
    out = A.check_out(args.out, is_file=True)
    A.check_gpu_options(device=args.device, address=args.address, gpus=args.gpus, flag="--gpus")
    if out.exists() and not args.force:
        raise UserError(
            f"--out {str(out)!r} already exists (replacing it discards its labelled views); "
            "pass --force to replace it, or give another --out"
        )
    return [] if args.dry_run else [(out, True)]


def transfer_run(args: argparse.Namespace) -> int:
    import time

    from raydistill.distill.ensemble import load_ensemble
    from raydistill.distill.transfer.aug import teacher_augment, transfer_aug
    from raydistill.distill.transfer.format import load_transfer_set, size_summary
    from raydistill.distill.transfer.writer import check_fit, write_transfer_set

    dirs = [t for t in args.teacher if Path(t).is_dir()]
    external = len(args.teacher) > 1 or not dirs
    device = "cpu" if args.dry_run else args.device
    ensemble = None if external else load_ensemble(dirs[0], device=device)
    config = (ensemble.manifest if ensemble else _teach_manifest(dirs)).get("config", {})
    ds, split = args.dataset, config.get("split") or {}
    ds.data = ds.data or config.get("data")
    if not ds.data:
        named = (
            f"{dirs[0]}/manifest.json names no dataset"
            if dirs
            else "no teach directory names the dataset"
        )
        raise UserError(f"{named}; pass --data SOURCE")
    ds.prepare()
    # The whole train split unless --train-subset: the teacher may have trained on a subset.
    splits = ds.load(
        val_size=ds.val_size if ds.val_size is not None else split.get("val_size"),
        seed=ds.split_seed if ds.split_seed is not None else split.get("seed", 0),
    )
    if external:  # teachers of any kind: checked on the validation split before labelling
        from raydistill.distill.external import check_accuracies, external_ensemble

        ensemble = external_ensemble(args.teacher, splits, device)
        check_accuracies(ensemble, splits, log=print)
    check_fit(ensemble, splits)  # before anything is labelled
    aug = transfer_aug(args.aug, splits, teacher_augment(ensemble.manifest))
    if args.dry_run:
        print(_transfer_plan(args, ensemble, splits, aug))
        return 0
    t0 = time.perf_counter()
    path = write_transfer_set(
        args.out,
        ensemble,
        splits,
        args.epochs,
        seed=args.seed,
        aug=aug,
        batch_size=args.batch_size,
        address=args.address,
        gpus=args.gpus,
        log=print,
    )
    wall = time.perf_counter() - t0
    ts = load_transfer_set(path, splits=splits, teacher_fingerprints=ensemble.fingerprints)
    m = ts.meta
    print(
        f"wrote {path}: {ts.num_epochs} epochs × {ts.views_per_epoch} views, "
        f"{size_summary(path)}, {wall:.1f}s; ensemble val {100 * m['ensemble_val_acc']:.2f}%, "
        f"test {100 * m['ensemble_test_acc']:.2f}% on the images, "
        f"{100 * m['ensemble_test_view_acc']:.2f}% on their views"
    )
    print(f"students use it with: --data {ds.data} {_split_flags(splits)} --transfer {path}")
    from raydistill.tracking.stages import log_transfer

    seed = ds.split_seed if ds.split_seed is not None else split.get("seed", 0)
    ctx = _context(args, splits, {"val_size": len(splits.val_y), "seed": seed}, ts)
    log_transfer(Path(args.out).parent, ts.meta, ts.fingerprint, args.wandb, ctx, path)
    return 0


def _split_flags(splits) -> str:
    """The split options that select `splits` (train / search / reproduce must match them)."""
    s = splits.settings
    subset = f" --train-subset {s['train_subset']}" if s.get("train_subset") else ""
    return f"--val-size {s.get('val_size')} --split-seed {s.get('seed')}{subset}"


def _transfer_plan(args: argparse.Namespace, ensemble, splits, aug) -> str:
    from raydistill.distill.transfer.aug import resolve_aug_name, teacher_augment

    own = teacher_augment(ensemble.manifest)
    name = resolve_aug_name(args.aug, splits, own)
    replaces = " (replaces the existing file)" if Path(args.out).exists() else ""
    return "\n".join(
        [
            f"teachers  {args.teacher}: {len(ensemble.members)} × {ensemble.spec.get('family')}, "
            f"{ensemble.num_classes} classes of {'×'.join(map(str, splits.image_shape))}, "
            f"trained on augmentation {own or 'unknown'}",
            f"data      {splits.name} ({args.dataset.data}): {len(splits.train_y)} train images; "
            f"{_split_flags(splits)}",
            f"views     {args.epochs} epochs × {len(splits.train_y)} = "
            f"{args.epochs * len(splits.train_y):,} views, augmentation {name} "
            f"({'mirror' if aug.mirror else 'no mirror'}, crops {aug.crop_min}–{aug.crop_max} px, "
            f"shifts ≤ {aug.translate} px, {'HSV jitter' if aug.hsv else 'no colour jitter'})",
            f"out       {args.out}{replaces}",
            "dry run: nothing labelled, nothing written",
        ]
    )
