"""The commands built on a finished network or grid: prune (to a budget), study (sample efficiency).

Same shape as `raydistill.cli.pipeline`: a typed function per command, a torch-free `check`,
and `run`.
"""

import argparse
from pathlib import Path
from typing import Literal

from raydistill.cli import args as A
from raydistill.cli.command import Outputs, execute
from raydistill.cli.data_options import DataOptions
from raydistill.cli.pipeline import check_family
from raydistill.core.errors import UserError
from raydistill.core.numbers import pct
from raydistill.core.vocab import Loss, WandbMode


# ---------------------------------------------------------------- prune
def prune(
    source: str,
    budget: A.Budget,
    transfer: str | None = None,
    max_epochs: A.Count | None = None,
    lr: A.Positive | None = None,
    loss: Loss | None = None,
    seed: int = 0,
    device: str = "auto",
    out: str | None = None,
    trials: str | None = None,
    *,
    dataset: DataOptions,
) -> int:
    """prune a trained network to a parameter budget, then fine-tune it

    Args:
        source: a training checkpoint directory or an exported student
        budget: parameter budget: 100k, 1M, ...
        transfer: transfer set (.parquet) to fine-tune on (needs --data)
        max_epochs: fine-tuning epochs (default: TrainConfig's)
        lr: fine-tuning learning rate
        loss: default: l2_logits with --transfer, hard without
        seed: fine-tuning seed
        device: auto, cpu, cuda, ...
        out: output directory: the pruned student (load_student, export), checkpoint/, prune.json (needed with --data)
        trials: DIR/trials.parquet: append the pruned cell's row to this trials table (created if absent)
    """
    return execute(prune_check, prune_run, locals())


def prune_check(args: argparse.Namespace) -> Outputs:
    src = Path(args.source).expanduser()
    if not src.exists():
        raise UserError(f"SOURCE {args.source!r} does not exist")
    is_ckpt = (src / "checkpoint.json").is_file()
    is_export = (src / "spec.json").is_file() and (src / "model.safetensors").is_file()
    is_member = src.suffix == ".safetensors" and (src.parent / "manifest.json").is_file()
    if not (is_ckpt or is_export or (src.is_file() and is_member)):
        raise UserError(
            f"SOURCE {args.source!r} is not a training checkpoint, an exported student or a "
            "teacher member file (TEACHER/member-K.safetensors)"
        )
    if args.transfer and not Path(args.transfer).is_file():
        raise UserError(f"--transfer {args.transfer!r} does not exist")
    if args.transfer and not args.dataset.data:
        raise UserError(
            "--transfer needs --data SOURCE (the dataset the transfer set was made from)"
        )
    if args.loss in ("l2_logits", "kd") and not args.transfer:
        raise UserError(f"--loss {args.loss} needs --transfer (the teacher's logits)")
    if args.dataset.data and not args.out:
        raise UserError("--data needs --out DIR (where the fine-tuned checkpoint goes)")
    args.dataset.check()
    A.check_gpu_options(device=args.device)
    outputs: Outputs = []
    if args.out:
        out = A.check_out(args.out)
        if out.is_dir() and any(out.iterdir()) and not (out / "prune.json").is_file():
            raise UserError(
                f"--out {args.out!r} holds other files; give a new directory (or an earlier prune's, which is replaced)"
            )
        outputs.append((out, False))
    if args.trials:
        trials = A.check_out(args.trials, is_file=True)
        if trials.suffix != ".parquet":
            raise UserError(f"--trials {args.trials!r} must name a .parquet file")
        if trials.exists():
            _read_trials(trials)  # a table that cannot be appended to is refused before the work
        outputs.append((trials, True))
    return outputs


def _read_trials(path: Path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        return pq.read_table(path)
    except (pa.ArrowException, OSError) as exc:
        raise UserError(f"--trials {str(path)!r} is not a readable Parquet table: {exc}") from None


def append_trials(path: Path, row: dict) -> int:
    """Append `row` (TRIALS_SCHEMA's columns) to the table at `path`, atomically; its row count."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from raydistill.search import TRIALS_SCHEMA

    table = pa.Table.from_pylist([row], schema=TRIALS_SCHEMA)
    if path.exists():
        table = pa.concat_tables([_read_trials(path), table], promote_options="permissive")
    from raydistill.core.manifest import atomic_path

    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:  # readers see the old table or the new one, never half
        pq.write_table(table, tmp)
    return table.num_rows


def prune_run(args: argparse.Namespace) -> int:
    from raydistill.export.prune import load_source, prune_spec, prune_to_budget, trials_row
    from raydistill.students.budget import parse_param_count

    budget = parse_param_count(args.budget)
    data = transfer = config = None
    ds = args.dataset
    if ds.data:
        # Refuse an impossible budget before the data is loaded (the same checks as below).
        prune_spec(*load_source(args.source), budget)
        from raydistill.training.config import TrainConfig

        ds.prepare()
        data = ds.load()
        if args.transfer:
            from raydistill.distill.transfer.format import load_transfer_set

            transfer = load_transfer_set(args.transfer, splits=data)
        fields = {
            "max_epochs": args.max_epochs,
            "lr": args.lr,
            "seed": args.seed,
            "device": args.device,
            "loss": args.loss or ("l2_logits" if transfer else "hard"),
        }
        config = TrainConfig(**{k: v for k, v in fields.items() if v is not None})
    where = {"data": _resolved(ds.data), "data_options": {**ds.split(), "cache_dir": ds.cache_dir}}
    result = prune_to_budget(
        args.source,
        budget,
        data=data,
        transfer=transfer,
        config=config,
        out_dir=args.out,
        data_config=where if data else None,
    )
    row = trials_row(result)
    print(f"cell          {result.cell}")
    print(f"widths        {result.spec['widths']} (from {result.source_spec['widths']})")
    print(f"params        {result.params:,} (from {result.source_params:,})")
    print(f"params/budget {result.params / result.budget:.4f} of {result.budget:,}")
    if result.train:
        print(f"val/acc       {pct(row['val/acc'], '%')} (best epoch {row['best_epoch']})")
        print(f"test/acc      {pct(row['test/acc'], '%')} (re-verified on the exported student)")
    if args.out:
        print(
            f"wrote {args.out}/: a student (load_student, spec.json, model.pt2), prune.json"
            + (", checkpoint/" if result.train else "")
        )
    if args.trials:
        rows = append_trials(Path(args.trials).expanduser(), row)
        print(f"appended {result.cell} to {args.trials} (now {rows} rows)")
    return 0 if result.train is None or result.train.status != "diverged" else 1


def _resolved(data: str | None) -> str | None:
    """A --data path as an absolute path (the manifest is read from other directories)."""
    return (
        str(Path(data).expanduser().resolve())
        if data and Path(data).expanduser().exists()
        else data
    )


# ---------------------------------------------------------------- study sample-efficiency
# Repeated from raydistill.study.sample_efficiency.run (which imports torch through raydistill.students.budget) so
# that a typo is refused in a fraction of a second; `sample_efficiency_study` checks them again.
GRIDS = {
    "default": {"sizes": [3, 4, 5], "ns": [128, 512, 2048, 8192], "seeds": [0, 1, 2]},
    "large": {"sizes": [3, 4, 6, 8], "ns": [64, 256, 1024, 4096, 16384, 65536],
              "seeds": [0, 1, 2, 3, 4]},
}  # fmt: skip
CONV_FAMILIES = ("allconv", "cnn")


def study(
    study: Literal["sample-efficiency"],
    out: str,
    grid: Literal["default", "large"] = "default",
    sizes: A.Ints | None = None,
    ns: A.Ints | None = None,
    seeds: A.Ints | None = None,
    epochs: A.Count = 20,
    min_samples: A.Count = 30_000,
    families: A.Names | None = None,
    budget: A.Budget = "10k",
    target: float = 0.75,
    channels: A.Count2 = 2,
    wandb: Literal["auto", WandbMode] = "off",
    address: str = "local",
    device: str = "auto",
    num_cpus: A.Count | None = None,
    quiet: bool = False,
) -> int:
    """a study grid: sample-efficiency (CNN vs MLP students on synthetic-sep)

    Args:
        study: sample-efficiency: CNN vs MLP students on synthetic-sep, test accuracy vs training-set size n for several input sizes d
        out: output directory (finished cells are reused)
        grid: named grid of sizes / ns / seeds; explicit lists override it
        sizes: image sides S, d = C·S² (default grid: 3,4,5)
        ns: training-set sizes (default grid: 128,512,2048,8192)
        seeds: seeds of data and init (default grid: 0,1,2)
        epochs: epochs at large n
        min_samples: each run sees at least this many examples (≤ 100 epochs)
        families: CNN family,MLP family (default allconv,mlp)
        budget: parameters per student
        target: test accuracy n* is read at, in (0.5, 1)
        channels: input channels C ≥ 2
        wandb: W&B per trial and one summary run (auto: WANDB_MODE, else online iff an API key is set)
        address: Ray: local (start one), auto, or HOST:PORT
        device: trial device: auto, cpu, cuda
        num_cpus: CPUs of the local Ray (default: all)
        quiet: no per-cell progress lines
    """
    return execute(study_check, study_run, locals(), keep=("cells",))


def study_check(args: argparse.Namespace) -> Outputs:
    grid = GRIDS[args.grid]
    args.sizes = args.sizes if args.sizes is not None else grid["sizes"]
    args.ns = args.ns if args.ns is not None else grid["ns"]
    args.seeds = args.seeds if args.seeds is not None else grid["seeds"]
    args.families = args.families if args.families is not None else ["allconv", "mlp"]
    if len(set(args.sizes)) < 2 or min(args.sizes) < 1:
        raise UserError(f"--sizes {args.sizes}: need ≥ 2 distinct image sides ≥ 1 (3+ to fit)")
    if len(set(args.ns)) < 2 or min(args.ns) < 2:
        raise UserError(f"--ns {args.ns}: need ≥ 2 distinct training-set sizes ≥ 2")
    if not args.seeds:
        raise UserError("--seeds names no seed; e.g. --seeds 0,1,2")
    if not 0.5 < args.target < 1:
        raise UserError(f"--target {args.target} is invalid; must be in (0.5, 1), e.g. 0.75")
    fams = args.families
    if len(fams) != 2 or fams[0] not in CONV_FAMILIES or fams[1] != "mlp":
        raise UserError(
            f"--families {','.join(fams)}: expected CNN,mlp with CNN one of "
            f"{', '.join(CONV_FAMILIES)}, e.g. allconv,mlp"
        )
    for fam in fams:
        check_family(fam, None, "student")
    A.check_gpu_options(device=args.device, address=args.address)
    return [(A.check_out(args.out), False)]


def study_run(args: argparse.Namespace) -> int:
    from raydistill.study.sample_efficiency.run import sample_efficiency_study

    wandb = args.wandb
    if wandb == "auto":
        from raydistill.tracking.tracker import resolve_mode

        wandb = resolve_mode(None)
    path = sample_efficiency_study(
        args.out,
        sizes=args.sizes,
        ns=args.ns,
        seeds=args.seeds,
        epochs=args.epochs,
        min_samples=args.min_samples,
        families=args.families,
        budget=args.budget,
        target=args.target,
        channels=args.channels,
        wandb=wandb,
        address=args.address,
        device=args.device,
        num_cpus=args.num_cpus,
        verbose=0 if args.quiet else 1,
    )
    print(f"report: {path}")
    print(path.read_text(), end="")
    return 0
