"""Each student family next to `cnn` at one budget, and searched vs pruned, on a 2-core CPU.

    python scripts/families_cpu.py --teacher runs/tiny/teacher --transfer runs/tiny/transfer.parquet \
        --budget 30k --depth 3 --families cnn,nin,allconv --seeds 2 --out /tmp/fam30k.jsonl
    python scripts/families_cpu.py ... --families prune:teacher:1    # teacher member 1 pruned
    python scripts/families_cpu.py ... --train-subset 5000 --families cnn,adder  # adder: a subset

Every run uses the tiny scale's student recipe (cosine, 0.3-epoch warm-up, batch 128, momentum
0.9, L2 on logits, dropout 0, balanced widths, BatchNorm where the family has it) with one fixed
lr, on the same transfer set; `prune:teacher[:K]` prunes teacher member K (0) to the budget and
fine-tunes it with the same recipe and epochs. With --train-subset a transfer set of that
class-balanced subset is written once (next to --out) from the same teachers. One JSON line per
run is appended to --out (family, seed, params, test/val accuracy, wall seconds).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from raydistill.data import load_dataset
from raydistill.distill.transfer.aug import transfer_aug
from raydistill.distill.transfer.format import load_transfer_set
from raydistill.distill.transfer.writer import write_transfer_set
from raydistill.students import get_family
from raydistill.students.budget import parse_budget, solve_budget
from raydistill.training.config import TrainConfig
from raydistill.training.loop import train_student

DATA = "/work/shared/datasets/cifar10-jpeg.parquet"
RECIPE = {
    "schedule": "cosine",
    "warmup_epochs": 0.3,
    "batch_size": 128,
    "momentum": 0.9,
    "loss": "l2_logits",
    "device": "cpu",
}


def one_run(name: str, a: argparse.Namespace, splits, transfer, seed: int) -> dict:
    cfg = TrainConfig(**RECIPE, lr=a.lr, max_epochs=a.epochs, seed=seed)
    t0 = time.perf_counter()
    if name.startswith("prune:teacher"):  # prune:teacher or prune:teacher:K (member K)
        from raydistill.export.prune import prune_to_budget

        k = int(name.split(":")[2]) if name.count(":") == 2 else 0
        res = prune_to_budget(
            Path(a.teacher) / f"member-{k}.safetensors",
            a.budget,
            data=splits,
            transfer=transfer,
            config=cfg,
            out_dir=Path(a.out).with_suffix("") / f"{name}-s{seed}",
        )
        spec, tr = res.spec, res.train
    else:
        fixed = {"dropout": 0.0, "num_classes": splits.num_classes}
        if "batchnorm" in get_family(name).spec_keys:
            fixed["batchnorm"] = True
        spec = solve_budget(name, a.depth, parse_budget(a.budget), **fixed).spec
        tr = train_student(spec, splits, transfer, cfg)
    return {"family": name, "depth": spec.get("depth"), "widths": spec["widths"],
            "budget": parse_budget(a.budget), "params": tr.params, "seed": seed, "lr": a.lr,
            "epochs": tr.epochs, "train_subset": a.train_subset, "status": tr.status,
            "val_acc": tr.best_val_acc, "test_acc": tr.test_acc,
            "wall_s": round(time.perf_counter() - t0, 1)}  # fmt: skip


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--teacher", required=True)
    p.add_argument("--transfer", required=True)
    p.add_argument("--budget", default="30k")
    p.add_argument("--depth", type=int, default=3)
    p.add_argument("--families", default="cnn,nin,allconv")
    p.add_argument("--seeds", type=int, default=2)
    p.add_argument("--lr", type=float, default=0.004)
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--val-size", type=int, default=5000)
    p.add_argument("--train-subset", type=int, default=None)
    p.add_argument("--threads", type=int, default=1, help="one: the CPU is shared (batches.py)")
    p.add_argument("--out", required=True)
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    splits = load_dataset(DATA, val_size=a.val_size, seed=0, train_subset=a.train_subset)
    ts_path = Path(a.transfer)
    if a.train_subset:  # the same teachers label views of the subset
        from raydistill.distill.ensemble import load_ensemble

        ts_path = Path(a.out).with_name(f"transfer-sub{a.train_subset}.parquet")
        if not ts_path.is_file():
            write_transfer_set(
                ts_path,
                load_ensemble(a.teacher),
                splits,
                a.epochs,
                seed=0,
                aug=transfer_aug("flip_translate", splits),
            )
    transfer = load_transfer_set(ts_path, splits=splits)
    for name in a.families.split(","):
        for seed in range(a.seeds):
            row = one_run(name, a, splits, transfer, seed)
            print(json.dumps(row), flush=True)
            with open(a.out, "a") as f:
                f.write(json.dumps(row) + "\n")


if __name__ == "__main__":
    main()
