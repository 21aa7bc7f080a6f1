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


def _floats(text: str) -> list[float]:
    try:
        return [float(x) for x in text.split(",") if x.strip()]
    except ValueError as exc:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a comma-separated list of numbers"
        ) from exc


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


def _budget_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--family", required=True)
    p.add_argument("--depth", type=int, required=True)
    p.add_argument("--budget", required=True, help="parameter budget: 300k, 1M, 3.16M, ...")
    p.add_argument("--ratios", type=_floats, help="width ratios in [0,1], one per width slot")
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


COMMANDS: dict[str, Command] = {
    "families": (
        "list the registered network families and their spec keys",
        _families_args,
        _families_run,
    ),
    "budget": ("solve the widths of a family for a parameter budget", _budget_args, _budget_run),
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
