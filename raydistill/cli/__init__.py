"""The command-line interface: one table mapping command names to the package's typed functions.

Each command is a typed function (`raydistill.cli.pipeline`, `students`, `studies`, `results`):
its parameters are the options, its docstring the help, and jsonargparse builds its parser from
them (`raydistill.cli.parser`; only the parser of the command given is built, so `--help` and
refusals stay fast). Calling the function runs the command: a torch-free check of the input,
then the work (`raydistill.cli.command.execute`). A refusal — a `UserError` or an `OSError` from
anywhere, a bad option or value — prints one line `raydistill: error: ...`, exits 2, and leaves
nothing half-written. Every command takes `--config FILE`, a YAML mapping of its options.
"""

from __future__ import annotations

import os
import sys
import warnings
from argparse import Namespace
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

from raydistill.cli import pipeline, results, students, studies
from raydistill.core.env import VERBOSITY_ENV, scoped_env
from raydistill.core.errors import UserError


class Command(NamedTuple):
    """A command: its typed function and its positional parameters ({name: nargs})."""

    fn: Callable[..., int]
    positionals: dict[str, str | None]

    @property
    def help(self) -> str:
        from raydistill.cli.parser import summary

        return summary(self.fn)


COMMANDS: dict[str, Command] = {
    "families": Command(results.families, {}),
    "budget": Command(results.budget, {}),
    "teach": Command(pipeline.teach, {}),
    "transfer": Command(pipeline.transfer, {}),
    "report": Command(results.report, {"dir": None}),
    "export": Command(results.export, {"dir": None}),
    "status": Command(results.status, {"dir": None}),
    "search": Command(students.search, {"spaces": "*"}),
    "train": Command(students.train, {}),
    "prune": Command(studies.prune, {"source": None}),
    "study": Command(studies.study, {"study": None}),
    "reproduce": Command(students.reproduce, {}),
}


def command_parser(name: str) -> Any:
    """The jsonargparse parser of one command (built from its typed function)."""
    from raydistill.cli.parser import build

    return build(name, COMMANDS[name].fn, COMMANDS[name].positionals)


def parse(argv: Sequence[str]) -> tuple[str, dict[str, Any]]:
    """(command name, its keyword arguments) from a full argv; UserError on bad input."""
    from raydistill.cli.parser import parse as parse_command

    name, rest = argv[0], list(argv[1:])
    if name not in COMMANDS:
        raise UserError(f"invalid choice {name!r}; valid commands: {', '.join(COMMANDS)}")
    return name, parse_command(name, COMMANDS[name].fn, COMMANDS[name].positionals, rest)


class _Parser:
    """`_parser().parse_args(argv)` → Namespace(command=..., **options), SystemExit(2) on bad
    input: the argparse-style name that tests and scripts used before jsonargparse."""

    def parse_args(self, argv: Sequence[str]) -> Namespace:
        try:
            name, kwargs = parse(argv)
        except UserError as exc:
            print(f"raydistill: error: {_one_line(exc)}", file=sys.stderr)
            raise SystemExit(2) from None
        return Namespace(command=name, **kwargs)


_parser = _Parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `raydistill` console script; returns the exit status."""
    warnings.showwarning = _one_line_warning
    argv, level = _verbosity(list(sys.argv[1:] if argv is None else argv))
    if not argv:
        print(f"{_usage()}\nraydistill: error: give a COMMAND", file=sys.stderr)
        return 2
    if argv[0] in ("-h", "--help"):
        print(_usage())
        return 0
    if argv[0] == "--version":
        from raydistill import __version__

        print(f"raydistill {__version__}")
        return 0
    try:
        name, kwargs = parse(argv)
        with scoped_env({VERBOSITY_ENV: str(level)} if level else {}):
            status = COMMANDS[name].fn(**kwargs)
        sys.stdout.flush()  # a closed pipe shows here, not in Python's flush at exit
        return status
    except SystemExit as exc:  # --help of a command
        return int(exc.code or 0)
    except BrokenPipeError:  # `raydistill families | head`: the reader left; stop quietly
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())  # Python's flush at exit must not fail again
        return 141  # 128 + SIGPIPE, what `yes | head` reports
    except (UserError, OSError) as exc:
        print(f"raydistill: error: {_one_line(exc)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("raydistill: interrupted", file=sys.stderr)
        return 130


_VERBOSE = {"-v": 1, "--verbose": 1, "-vv": 2, "-vvv": 3}


def _verbosity(argv: list[str]) -> tuple[list[str], int]:
    """argv without its -v / -vv / --verbose flags (anywhere), and the verbosity they add up to:
    1 shows Ray's and Tune's own messages and status tables, 2 and 3 Tune's more detailed ones."""
    level = sum(_VERBOSE.get(a, 0) for a in argv)
    return [a for a in argv if a not in _VERBOSE], level


def _usage() -> str:
    width = max(map(len, COMMANDS))
    lines = [f"  {n:<{width}}  {c.help}" for n, c in COMMANDS.items()]
    return "\n".join([
        "usage: raydistill [-h] [--version] COMMAND ...", "",
        __doc__.splitlines()[0], "", "commands:", *lines, "",
        "raydistill COMMAND --help shows a command's options; every command takes --config FILE.",
        "-v (anywhere): Ray's and Tune's own messages too (-vv: more); by default only raydistill's.",
    ])  # fmt: skip


def _one_line(exc: BaseException) -> str:
    if isinstance(exc, OSError) and not isinstance(exc, UserError) and exc.strerror:
        where = f"{exc.filename}: " if exc.filename else ""
        return f"{where}{exc.strerror}"
    return " ".join(str(exc).split())


def _one_line_warning(message, category, filename, lineno, file=None, line=None) -> None:
    print(f"raydistill: warning: {' '.join(str(message).split())}", file=file or sys.stderr)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
