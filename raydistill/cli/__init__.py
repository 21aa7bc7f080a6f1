"""The command-line interface: one table mapping command names to the package's functions.

Each command is (help, add_arguments, check, run, keep). `check` refuses bad input without
importing torch or Ray (argument types, `--data`, `--out`, family names; see `args`) and names
the outputs the command creates; `run` imports its module and does the work. A refusal — a
`UserError` or an `OSError` from anywhere — prints one line `raydistill: error: ...`, exits 2,
and removes the outputs this command created, unless they already hold finished work (`keep`:
names inside the directory that mark a resumable run's progress). Every command takes
`--config FILE`, a YAML mapping of its options (`raydistill.cli.config`).
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import NamedTuple

from raydistill.cli import pipeline, results, students, studies
from raydistill.cli.config import config_tokens, split_config
from raydistill.errors import UserError


class Command(NamedTuple):
    help: str
    add_args: Callable[[argparse.ArgumentParser], None]
    check: Callable[[argparse.Namespace], list[tuple[Path, bool]]] | None
    run: Callable[[argparse.Namespace], int]
    keep: tuple[str, ...] = ()


COMMANDS: dict[str, Command] = {
    "families": Command("list the registered network families and their spec keys",
                        results.families_args, None, results.families_run),
    "budget": Command("solve the widths of a family for a parameter budget",
                      results.budget_args, results.budget_check, results.budget_run),
    "teach": Command("train a teacher ensemble (members as parallel Ray tasks)",
                     pipeline.teach_args, pipeline.teach_check, pipeline.teach_run),
    "transfer": Command("pre-generate augmented epochs with the ensemble's logits (Parquet)",
                        pipeline.transfer_args, pipeline.transfer_check, pipeline.transfer_run),
    "report": Command("Table 2, Figure 1 and Pareto fronts of a search directory",
                      results.report_args, results.report_check, results.report_run),
    "export": Command("export the best students (safetensors, spec.json, torch.export)",
                      results.export_args, results.export_check, results.export_run),
    "search": Command("Ray Tune search of student cells (family × depth × budget)",
                      students.search_args, students.search_check, students.search_run,
                      keep=("tune",)),
    "train": Command("train one student and print the per-epoch table",
                     students.train_args, students.train_check, students.train_run),
    "prune": Command("prune a trained network to a parameter budget, then fine-tune it",
                     studies.prune_args, studies.prune_check, studies.prune_run),
    "study": Command("a study grid: sample-efficiency (CNN vs MLP students on synthetic-sep)",
                     studies.study_args, studies.study_check, studies.study_run,
                     keep=("cells",)),
    "reproduce": Command("the paper's whole study: teachers → transfer set → searches → report → export",
                         students.reproduce_args, students.reproduce_check, students.reproduce_run,
                         keep=("teacher",)),
}  # fmt: skip


class _Parser(argparse.ArgumentParser):
    """argparse, with its usage errors on one line like every other refusal."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(2, f"raydistill: error: {self.prog.removeprefix('raydistill ')}: {message}\n")


def build_parser() -> argparse.ArgumentParser:
    """The `raydistill` argument parser (no torch, no Ray)."""
    from raydistill import __version__

    parser = _Parser(prog="raydistill", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"raydistill {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND",
                                parser_class=_Parser)  # fmt: skip
    for name, cmd in COMMANDS.items():
        p = sub.add_parser(name, help=cmd.help, description=cmd.help)
        cmd.add_args(p)
        p.add_argument("--config", metavar="FILE",
                       help="YAML mapping of this command's options (typed options win)")  # fmt: skip
        p.set_defaults(_cmd=cmd)
    parser.commands = sub.choices  # name -> sub-parser, for --config
    return parser


_parser = build_parser  # the name tests and scripts used before the CLI became a package


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `raydistill` console script; returns the exit status."""
    warnings.showwarning = _one_line_warning
    try:
        args = _parse(list(sys.argv[1:] if argv is None else argv))
    except SystemExit as exc:  # --help, --version and usage errors
        return int(exc.code or 0)
    except UserError as exc:  # a bad --config file
        print(f"raydistill: error: {_one_line(exc)}", file=sys.stderr)
        return 2
    cmd: Command = args._cmd
    created: list[tuple[Path, bool]] = []
    try:
        outputs = cmd.check(args) if cmd.check else []
        created = [(p, f) for p, f in outputs if not p.exists()]
        status = int(cmd.run(args) or 0)
        sys.stdout.flush()  # a closed pipe shows here, not in Python's flush at exit
        return status
    except BrokenPipeError:  # `raydistill families | head`: the reader left; stop quietly
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())  # Python's flush at exit must not fail again
        return 141  # 128 + SIGPIPE, what `yes | head` reports
    except (UserError, OSError) as exc:
        _remove_created(created, cmd.keep)
        print(f"raydistill: error: {_one_line(exc)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("raydistill: interrupted", file=sys.stderr)
        return 130


def _parse(argv: list[str]) -> argparse.Namespace:
    """parse_args, with a command's `--config FILE` spliced in as tokens before the typed ones."""
    parser = build_parser()
    argv, config = split_config(argv)
    command = next((i for i, t in enumerate(argv) if t in COMMANDS), None)
    if config is not None and command is not None:
        tokens = config_tokens(config, parser.commands[argv[command]])
        argv = [*argv[: command + 1], *tokens, *argv[command + 1 :]]
    return parser.parse_args(argv)


def _one_line(exc: BaseException) -> str:
    if isinstance(exc, OSError) and not isinstance(exc, UserError) and exc.strerror:
        where = f"{exc.filename}: " if exc.filename else ""
        return f"{where}{exc.strerror}"
    return " ".join(str(exc).split())


def _remove_created(created: list[tuple[Path, bool]], keep: tuple[str, ...]) -> None:
    """A refused command leaves nothing behind: remove the outputs it created (not `keep`)."""
    for path, is_file in created:
        if is_file:
            path.unlink(missing_ok=True)
        elif path.is_dir() and not any((path / k).exists() for k in keep):
            shutil.rmtree(path, ignore_errors=True)


def _one_line_warning(message, category, filename, lineno, file=None, line=None) -> None:
    print(f"raydistill: warning: {' '.join(str(message).split())}", file=file or sys.stderr)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
