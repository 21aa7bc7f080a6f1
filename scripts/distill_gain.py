"""How much the teacher's logits help one CNN cell of a `raydistill reproduce` run when the
conditions change: the cell's best distilled configuration and its best hard-label twin are
retrained with fresh seeds, optionally at another budget (widths re-solved with balanced
ratios), for more epochs (a longer transfer set from the same teachers), or on a class-balanced
subset of the training images (a transfer set of that subset is labelled by the run's teachers
first). One JSON line per training run (test and train accuracy of the best-validation
weights: train near test means the student cannot fit its data, far above means it overfits),
then the gain: distilled − hard, mean over the seeds, in points.

    python scripts/distill_gain.py runs/tiny --cell cnn-d1@30k --seeds 60,61
    python scripts/distill_gain.py runs/tiny --cell cnn-d3@30k --budget 100k --seeds 50,51
    raydistill transfer --teacher runs/tiny/teacher --epochs 9 --aug flip_translate \
        --out /tmp/transfer9.parquet
    python scripts/distill_gain.py runs/tiny --cell cnn-d1@30k --epochs 9 \
        --transfer /tmp/transfer9.parquet --seeds 60,61
    python scripts/distill_gain.py runs/tiny --cell cnn-d3@30k --budget 100k \
        --train-subset 4000 --epochs 30 --seeds 70,71

Run it from the directory the study ran in (its data path is relative). The training settings
are the search's best ones (lr, schedule, batch) with only max_epochs and the seed changed.
Issue 11's finding-3 measurements (budget 100k and 1M, 9 epochs, 4,000 images) came from this
procedure.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from raydistill.data import DeviceSplit, load_dataset
from raydistill.distill.ensemble import load_ensemble
from raydistill.distill.transfer.format import load_transfer_set
from raydistill.distill.transfer.writer import write_transfer_set
from raydistill.students.budget import solve_budget
from raydistill.students.registry import build
from raydistill.training.config import TrainConfig, TrainResult, make_preprocess
from raydistill.training.evaluation import evaluate
from raydistill.training.loop import train_student


def train_accuracy(r: TrainResult, splits: Any, cfg: TrainConfig) -> float:
    """Accuracy (%) of r's best-validation weights on the (unaugmented) training images."""
    model = build(r.spec)
    model.load_state_dict(r.state_dict)
    acc, _ = evaluate(
        model,
        DeviceSplit.from_splits(splits, "train"),
        preprocess=make_preprocess(cfg.preprocess, splits),
        input_scale=cfg.input_scale,
    )
    return 100 * acc


def retrain(best: dict[str, Any], splits: Any, ts: Any, args: argparse.Namespace) -> list[float]:
    """Test accuracies (%) of `best`'s configuration over args.seeds, one JSON line each."""
    spec = best["spec"]
    if args.budget:
        fixed = {k: v for k, v in spec.items() if k not in ("family", "depth", "widths")}
        spec = solve_budget(best["family"], best["depth"], args.budget, None, **fixed).spec
    epochs = args.epochs or best["train"]["max_epochs"]
    accs = []
    for seed in args.seeds:
        cfg = TrainConfig.from_dict({**best["train"], "max_epochs": epochs, "seed": seed})
        t0 = time.perf_counter()
        r = train_student(spec, splits, ts, cfg)
        accs.append(100 * float(r.test_acc))
        row = {"cell": best["cell"], "budget": args.budget or best["budget"], "widths":
               spec["widths"], "params": r.params, "images": len(splits.train_y),
               "loss": cfg.loss, "lr": round(cfg.lr, 5), "epochs": epochs, "seed": seed,
               "test": round(accs[-1], 2), "train": round(train_accuracy(r, splits, cfg), 2),
               "wall_s": round(time.perf_counter() - t0, 1)}  # fmt: skip
        print(json.dumps(row), flush=True)
    return accs


def transfer_for(args: argparse.Namespace, splits: Any, tmp: Path) -> Path:
    """The transfer set to train on: --transfer, the run's, or (with --train-subset) a new one
    of the subset, labelled by the run's teachers with the run's augmentation."""
    if args.transfer or not args.train_subset:
        return args.transfer or args.run / "transfer.parquet"
    aug = load_transfer_set(args.run / "transfer.parquet").aug
    path = tmp / f"transfer-{args.train_subset}.parquet"
    epochs = (
        args.epochs
        or json.loads((args.run / "search" / "best" / f"{args.cell}.json").read_text())["train"][
            "max_epochs"
        ]
    )
    write_transfer_set(
        path, load_ensemble(args.run / "teacher"), splits, epochs, aug=aug, log=print
    )
    return path


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("run", type=Path, help="a `raydistill reproduce` --out directory")
    p.add_argument("--cell", required=True, help="a CNN cell with twins, e.g. cnn-d1@30k")
    p.add_argument("--budget", help="re-solve the widths at this budget (e.g. 100k)")
    p.add_argument("--epochs", type=int, help="epochs (default: the search's)")
    p.add_argument("--transfer", type=Path, help="transfer set (default: RUN/transfer.parquet)")
    p.add_argument("--train-subset", type=int, help="class-balanced subset of the train images")
    p.add_argument("--seeds", type=lambda s: [int(x) for x in s.split(",")], default=[60, 61])
    return p.parse_args()


def main() -> None:
    args = parse_args()
    torch.set_num_threads(1)  # one core per process: run two cells side by side on 2 cores
    config = json.loads((args.run / "teacher" / "manifest.json").read_text())["config"]
    split = config["split"]
    splits = load_dataset(
        config["data"],
        val_size=split["val_size"],
        seed=split["seed"],
        train_subset=args.train_subset,
    )
    accs = {}
    with tempfile.TemporaryDirectory() as tmp:
        ts = load_transfer_set(transfer_for(args, splits, Path(tmp)), splits=splits)
        for stage in ("search", "twins"):
            best = json.loads((args.run / stage / "best" / f"{args.cell}.json").read_text())
            accs[best["train"]["loss"]] = retrain(best, splits, ts, args)
    (distilled, d), (hard, h) = accs.items()
    gain = statistics.mean(d) - statistics.mean(h)
    print(
        f"{args.cell}: {distilled} {statistics.mean(d):.2f} %, {hard} {statistics.mean(h):.2f} %"
        f" over seeds {args.seeds}: gain {gain:+.2f} points"
    )


if __name__ == "__main__":
    main()
