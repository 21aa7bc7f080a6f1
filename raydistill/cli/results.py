"""The commands that inspect and ship: families, budget, report, export.

`families` reads the family index from source (no torch); `budget` needs the registry's
builders to count parameters exactly on the meta device, so it imports torch once its input
has been checked.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from raydistill.cli import args as A
from raydistill.cli.pipeline import Outputs, check_family
from raydistill.cli.students import shape_args
from raydistill.errors import UserError


# ---------------------------------------------------------------- families / budget
def families_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--kind", choices=["student", "teacher"], help="list only this kind")
    p.add_argument("--json", action="store_true", help="machine-readable output")


def families_run(args: argparse.Namespace) -> int:
    from raydistill.cli.families_index import static_families

    fams = static_families(args.kind)
    if fams is None:  # a family registered with computed arguments: ask the registry
        from raydistill.students import families

        fams = families(args.kind)
    if args.json:
        rows = [{"name": f.name, "kind": f.kind, "depths": list(f.depths),
                 "spec_keys": list(f.spec_keys)} for f in fams.values()]  # fmt: skip
        print(json.dumps(rows, indent=2))
        return 0
    for f in fams.values():
        print(f"{f.name:10s} {f.kind:8s} depths {','.join(map(str, f.depths)):10s} {f.summary}")
        print(f"{'':10s} spec keys: {', '.join(f.spec_keys)}")
    return 0


def budget_args(p: argparse.ArgumentParser) -> None:
    shape_args(p)
    p.add_argument("--json", action="store_true")


def budget_check(args: argparse.Namespace) -> Outputs:
    check_family(args.family, args.depth, "student")
    if args.ratios is not None and not all(0 <= r <= 1 for r in args.ratios):
        raise UserError(f"--ratios {args.ratios} is invalid; every ratio must be in [0, 1]")
    return []


def budget_run(args: argparse.Namespace) -> int:
    from raydistill.budget import format_budget, solve_budget

    sol = solve_budget(args.family, args.depth, args.budget, args.ratios)
    if args.json:
        print(json.dumps({"spec": sol.spec, "params": sol.params, "budget": sol.budget}))
        return 0
    print(f"family  {args.family}  depth {args.depth}  budget {format_budget(sol.budget)}")
    print(f"widths  {sol.widths}")
    print(f"params  {sol.params:,}  ({100 * sol.share:.2f}% of {sol.budget:,})")
    return 0


# ---------------------------------------------------------------- report / export
def report_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("dir", help="search directory (holds trials.parquet)")
    p.add_argument("--top-k", type=A.at_least(1), default=5, help="trials averaged per cell (paper: 5)")  # fmt: skip
    p.add_argument("--compare-paper", action="store_true",
                   help="also write report/compare_paper.md (the paper's published Table 2)")  # fmt: skip
    p.add_argument("--wandb", choices=["online", "offline", "off"],
                   help="also log a W&B summary run (default: no summary run)")  # fmt: skip


def report_check(args: argparse.Namespace) -> Outputs:
    path = Path(args.dir) / "trials.parquet"
    if not path.is_file():
        raise UserError(f"{path} does not exist; is {args.dir!r} a search directory?")
    return []


def report_run(args: argparse.Namespace) -> int:
    from raydistill.report import make_report

    rep = make_report(args.dir, top_k=args.top_k, compare_with_paper=args.compare_paper)
    print(rep.markdown, end="")
    for name, path in rep.paths.items():
        size = "" if name != "figure1" else f" ({path.stat().st_size // 1024} KiB)"
        print(f"wrote {path}{size}")
    if args.wandb and args.wandb != "off":
        from raydistill.summary_run import log_summary

        rid = log_summary(args.dir, args.wandb, report=rep)
        print(f"W&B summary run {rid} ({args.wandb})")
    return 0


def export_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("dir", help="search directory (holds trials.parquet)")
    which = p.add_mutually_exclusive_group(required=True)
    which.add_argument("--cell", action="append", metavar="CELL",
                       help="cnn-d2@1M (that cell's best trial), cnn@1M (best over depths), "
                            "suffix :hard for hard-label twins; repeatable")  # fmt: skip
    which.add_argument("--all", action="store_true", help="the best trial of every cell")
    p.add_argument("--out", required=True, help="export directory (one sub-directory per cell)")
    p.add_argument("--data", help="dataset to re-verify test accuracy on (default: the manifest's)")
    p.add_argument("--cache-dir", help="decode cache root (default $RAYDISTILL_CACHE)")
    p.add_argument("--download", action="store_true", help="download CIFAR-10 if --data cifar10 is not cached")  # fmt: skip
    p.add_argument("--no-verify-test", action="store_true", help="skip the test re-evaluation")
    p.add_argument("--onnx", action="store_true", help="also write model.onnx (pip install 'raydistill[onnx]')")  # fmt: skip
    p.add_argument("--storage", help="the search's Tune storage if it moved (default: the recorded checkpoint URIs)")  # fmt: skip


def export_check(args: argparse.Namespace) -> Outputs:
    report_check(args)
    A.check_data(args.data, args.cache_dir, args.download)
    return [(A.check_out(args.out), False)]


def export_run(args: argparse.Namespace) -> int:
    from raydistill.cli.pipeline import prepare_data
    from raydistill.export import export_cells

    if args.data:
        prepare_data(args)
    if args.cache_dir:
        import os

        os.environ["RAYDISTILL_CACHE"] = args.cache_dir  # the manifest's dataset is read there
    results = export_cells(args.dir, None if args.all else args.cell, args.out, data=args.data,
                           verify_test=not args.no_verify_test, onnx=args.onnx,
                           storage=args.storage)  # fmt: skip
    for r in results:
        test = "–" if r.test_acc is None else f"{100 * r.test_acc:.2f}%"
        val = "–" if r.val_acc is None else f"{100 * r.val_acc:.2f}%"
        print(f"{r.cell}: {r.path}  params {r.params:,}  val {val}  test {test}  ({r.note})")
    return 0
