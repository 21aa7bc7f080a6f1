"""The commands that inspect and ship: families, budget, report, export.

`families` reads the family index from source (no torch); `budget` counts parameters
through each shape's quadratic form in the widths (`raydistill.students.counts`), fitted on
the meta device the first time a shape is counted on this machine and read from the cache root
after that: torch is imported only for a shape never counted here. Same shape as `raydistill.cli.pipeline`: a typed function per command, a
torch-free `check`, and `run`.
"""

import argparse
import json
from pathlib import Path
from typing import Literal

from raydistill.cli import args as A
from raydistill.cli.cell_options import StudentCell
from raydistill.cli.command import Outputs, execute
from raydistill.cli.data_options import DataSource
from raydistill.core.errors import UserError
from raydistill.core.numbers import pct
from raydistill.core.vocab import WandbMode


# ---------------------------------------------------------------- families / budget
def families(kind: Literal["student", "teacher"] | None = None, json: bool = False) -> int:
    """list the registered network families and their spec keys

    Args:
        kind: list only this kind
        json: machine-readable output
    """
    return execute(None, families_run, locals())


def families_run(args: argparse.Namespace) -> int:
    from raydistill.cli.families_index import static_families

    fams = static_families(args.kind)
    if fams is None:  # a family registered with computed arguments: ask the registry
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


def budget(json: bool = False, *, cell: StudentCell) -> int:
    """solve the widths of a family for a budget: parameters, MACs or latency

    Args:
        json: machine-readable output
    """
    return execute(budget_check, budget_run, locals())


def budget_check(args: argparse.Namespace) -> Outputs:
    args.cell.check()
    return []


def budget_run(args: argparse.Namespace) -> int:
    from raydistill.students.budget import solve_budget

    c = args.cell
    sol = solve_budget(c.family, c.depth, c.budget, c.ratios)
    b = sol.budget
    macs = int(sol.used) if b.unit == "macs" else None  # counting MACs otherwise needs torch
    if args.json:
        print(json.dumps({"spec": sol.spec, "params": sol.params, "macs": macs,
                          "budget": b.value, "budget_kind": b.kind, "used": sol.used}))  # fmt: skip
        return 0
    print(f"family  {c.family}  depth {c.depth}  budget {b.label}")
    print(f"widths  {sol.widths}")
    if b.unit == "params":
        print(f"params  {sol.params:,}  ({100 * sol.share:.2f}% of {b.value:,})")
        return 0
    unit = "µs/image" if b.unit == "latency" else "MACs/image"
    print(f"params  {sol.params:,}")
    print(f"used    {sol.used:,.6g} {unit}  ({100 * sol.share:.2f}% of {b.value:,})")
    return 0


# ---------------------------------------------------------------- report / export
def report(
    dir: str,
    top_k: A.Count = 5,
    compare_paper: bool = False,
    wandb: WandbMode | None = None,
    storage: str | None = None,
    pareto_x: Literal["params", "macs", "latency_us"] = "params",
) -> int:
    """Table 2, Figure 1 and Pareto fronts of a search directory

    Args:
        dir: search directory (holds trials.parquet)
        top_k: trials averaged per cell (paper: 5)
        compare_paper: also write report/compare_paper.md (the paper's published Table 2)
        wandb: also log a W&B summary run (default: no summary run)
        storage: the search's --storage: DIR's tables are read from there when DIR lacks them
        pareto_x: the Pareto fronts' cost axis: params, macs (per image) or latency_us (per
            image on this machine's CPU at batch 1, measured when the report is made)
    """
    return execute(report_check, report_run, locals())


def report_check(args: argparse.Namespace) -> Outputs:
    if getattr(args, "storage", None):  # a search run elsewhere: its outputs from its storage
        from raydistill.search.settings import pull_search

        pull_search(args.storage, args.dir)
    path = Path(args.dir) / "trials.parquet"
    if not path.is_file():
        raise UserError(f"{path} does not exist; is {args.dir!r} a search directory?")
    return []


def report_run(args: argparse.Namespace) -> int:
    from raydistill.report import make_report

    rep = make_report(args.dir, top_k=args.top_k, compare_with_paper=args.compare_paper,
                      pareto_x=getattr(args, "pareto_x", "params"))  # fmt: skip
    print(rep.markdown, end="")
    for name, path in rep.paths.items():
        size = "" if name != "figure1" else f" ({path.stat().st_size // 1024} KiB)"
        print(f"wrote {path}{size}")
    if args.wandb and args.wandb != "off":
        from raydistill.tracking.summary import log_summary

        models = _best_students(Path(args.dir))
        rid = log_summary(args.dir, args.wandb, report=rep, models=models)
        print(f"W&B summary run {rid} ({args.wandb})")
    return 0


def _best_students(directory: Path) -> dict[str, Path]:
    """Each cell's best student exported into DIR/export, for the summary run's model
    artifacts: {cell: export directory}; none, with a warning, when they cannot be exported."""
    import warnings

    from raydistill.export.exporter import export_cells

    try:
        results = export_cells(directory, None, directory / "export", verify_test=False)
    except UserError as exc:
        warnings.warn(f"no model artifacts logged: {exc}", stacklevel=2)
        return {}
    return {r.cell: r.path for r in results}


def export(
    dir: str,
    out: str,
    cell: A.KeyValues | None = None,
    all: bool = False,
    no_verify_test: bool = False,
    onnx: bool = False,
    storage: str | None = None,
    *,
    dataset: DataSource,
) -> int:
    """export the best students (safetensors, spec.json, torch.export)

    Args:
        dir: search directory (holds trials.parquet), or a prune output (prune.json)
        out: export directory (one sub-directory per cell)
        cell: cnn-d2@1M (that cell's best trial), cnn@1M (best over depths), suffix :hard for hard-label twins; repeatable (or --all)
        all: the best trial of every cell (or --cell)
        no_verify_test: skip the test re-evaluation
        onnx: also write model.onnx (pip install 'raydistill[onnx]')
        storage: the search's --storage (DIR's tables when DIR lacks them; checkpoints re-rooted there)
    """
    return execute(export_check, export_run, locals())


def export_check(args: argparse.Namespace) -> Outputs:
    if bool(args.cell) == bool(args.all):
        raise UserError("give --cell CELL (repeatable) or --all, one of them")
    if not (Path(args.dir) / "prune.json").is_file():  # a prune output is one student
        report_check(args)
    args.dataset.check()
    return [(A.check_out(args.out), False)]


def export_run(args: argparse.Namespace) -> int:
    from raydistill.export.exporter import export_cells

    ds = args.dataset
    if ds.data:
        ds.prepare()
    ds.export_cache_root()  # the manifest's dataset is read there
    results = export_cells(
        args.dir,
        None if args.all else args.cell,
        args.out,
        data=ds.data,
        verify_test=not args.no_verify_test,
        onnx=args.onnx,
        storage=args.storage,
    )
    for r in results:
        val, test = pct(r.val_acc, "%"), pct(r.test_acc, "%")
        print(f"{r.cell}: {r.path}  params {r.params:,}  val {val}  test {test}  ({r.note})")
    return 0


# ---------------------------------------------------------------- status
def status(dir: str, storage: str | None = None) -> int:
    """a running or finished search's (or study's) progress: per cell, trials done / running /
    pending, best val/acc so far, ETA

    Args:
        dir: search or study directory (--out of search / reproduce)
        storage: the search's --storage (s3://, gs://, a path): read from there, e.g. on another machine
    """
    return execute(None, status_run, locals())


def status_run(args: argparse.Namespace) -> int:
    from raydistill.search import status as st

    for i, (d, storage) in enumerate(st.search_dirs(args.dir, args.storage)):
        settings = st.load_settings(d, storage)
        table = st.format_status(
            f"{d} ({settings.experiment})", st.cell_status(settings), st.planned_total(settings)
        )
        print(("\n" if i else "") + table)
    return 0
