"""Running a command: its torch-free check, then its work; a refusal leaves nothing behind.

`execute(check, run, values, keep)` is what every command's typed function does: `check(args)`
refuses bad input without importing torch or Ray and names the outputs the command will create;
`run(args)` imports its module and does the work. When either raises (a `UserError`, an
`OSError`), the outputs this command created are removed, unless they already hold finished
work (`keep`: names inside the directory that mark a resumable run's progress; an empty
directory, such as a storage probe leaves, marks none).
"""

from __future__ import annotations

import shutil
from argparse import Namespace
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from raydistill.core.errors import UserError

Outputs = list[tuple[Path, bool]]  # (path, is_file)


def execute(
    check: Callable[[Namespace], Outputs] | None,
    run: Callable[[Namespace], int],
    values: Mapping[str, Any],
    keep: tuple[str, ...] = (),
) -> int:
    """check, then run, with `values` (a command's keyword arguments) as the namespace."""
    args = Namespace(**values)
    created: Outputs = []
    try:
        outputs = check(args) if check else []
        created = [(p, f) for p, f in outputs if not p.exists()]
        return int(run(args) or 0)
    except (UserError, OSError):
        _remove_created(created, keep)
        raise


def _remove_created(created: Outputs, keep: tuple[str, ...]) -> None:
    for path, is_file in created:
        if is_file:
            path.unlink(missing_ok=True)
        elif path.is_dir() and not any(_holds(path / k) for k in keep):
            shutil.rmtree(path, ignore_errors=True)


def _holds(path: Path) -> bool:
    """A file, or a directory with something in it."""
    return path.is_file() or (path.is_dir() and any(path.iterdir()))
