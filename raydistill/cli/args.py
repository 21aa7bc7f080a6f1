"""Argument types and input checks of the CLI that need neither torch nor Ray.

Everything here runs before a command imports its module, so a typo is refused in a fraction
of a second: numbers and lists, budget strings, KEY=VALUE pairs (one rule: `yaml.safe_load` of
the value), dataset sources (`--data`, checked without decoding) and output paths (`--out`
must be creatable: probed with a temporary file, nothing is left behind).
"""

from __future__ import annotations

import argparse
import os
import re
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from raydistill.errors import UserError

# The grammar of `raydistill.budget.parse_budget`, repeated here because budget.py imports torch;
# tests/test_cli.py checks that both accept and reject the same strings.
_BUDGET_RE = re.compile(r"^\s*([0-9]*\.?[0-9]+(?:[eE][+-]?[0-9]+)?)\s*([kKmMgG]?)\s*$")
_SUFFIX = {"": 1, "k": 10**3, "K": 10**3, "m": 10**6, "M": 10**6, "g": 10**9, "G": 10**9}


def split_list(text: str) -> list[str]:
    """The items of a comma-separated option value, blank ones dropped ("1M,,3.16M")."""
    return [part for part in text.split(",") if part.strip()]


def number_list(cast: type) -> Callable[[str], list]:
    """An argparse type for comma-separated numbers: "1,2,3" → [1, 2, 3]."""

    def parse(text: str) -> list:
        try:
            return [cast(x) for x in split_list(text)]
        except ValueError as exc:
            raise argparse.ArgumentTypeError(
                f"{text!r} is not a comma-separated list of {cast.__name__}s"
            ) from exc

    return parse


def at_least(low: int) -> Callable[[str], int]:
    """An argparse type for integers ≥ `low`."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
        if value < low:
            raise argparse.ArgumentTypeError(f"{value} is invalid; must be ≥ {low}")
        return value

    return parse


def positive_float(text: str) -> float:
    """An argparse type for floats > 0."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"{value} is invalid; must be > 0")
    return value


def budget(text: str) -> str:
    """An argparse type for one budget string (300k, 1M, 3.16M, 250000); kept as text."""
    m = _BUDGET_RE.match(text)
    if not m or round(float(m.group(1)) * _SUFFIX[m.group(2)]) <= 0:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a positive parameter budget like 300k, 1M, 3.16M or 250000"
        )
    return text


def budgets(text: str) -> str:
    """An argparse type for comma-separated budgets (1M,3.16M); kept as text."""
    parts = split_list(text)
    if not parts:
        raise argparse.ArgumentTypeError(f"{text!r} names no budget; e.g. 300k,1M,3.16M")
    for part in parts:
        budget(part)
    return text


def parse_key_values(items: Sequence[str] | None, flag: str) -> dict[str, Any]:
    """KEY=VALUE pairs → dict, each VALUE read with `yaml.safe_load` (0.01 → float, true → bool,
    [1, 2] → list, anything else → str). The one rule for every KEY=VALUE flag of the CLI."""
    import yaml

    out: dict[str, Any] = {}
    for item in items or ():
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise UserError(f"{flag} {item!r} is not KEY=VALUE, e.g. {flag} dropout=0.3")
        try:
            out[key.strip()] = yaml.safe_load(value) if value.strip() else ""
        except yaml.YAMLError:
            raise UserError(f"{flag} {item!r}: the value is not valid YAML") from None
    return out


def check_fields(values: dict[str, Any], defaults: dict[str, Any], flag: str) -> dict[str, Any]:
    """Values of `flag` checked against the types of `defaults` (a dataclass's field defaults):
    unknown keys and wrong types are refused; ints are accepted where floats are expected."""
    out = {}
    for key, value in values.items():
        if key not in defaults:
            raise UserError(f"{flag} {key}: unknown key; valid: {', '.join(defaults)}")
        default = defaults[key]
        if isinstance(default, bool):
            ok = isinstance(value, bool)
        elif isinstance(default, float):
            ok = isinstance(value, (int, float)) and not isinstance(value, bool)
            value = float(value) if ok else value
        elif isinstance(default, int):
            ok = isinstance(value, int) and not isinstance(value, bool)
        else:
            ok = default is None or isinstance(value, type(default))
        if not ok:
            raise UserError(
                f"{flag} {key}={value!r} is invalid: expected a {type(default).__name__} "
                f"like {default!r}"
            )
        out[key] = value
    return out


def check_data(source: str | None, cache_dir: str | None, download: bool) -> None:
    """Refuse a `--data` source that cannot be loaded (numpy only, nothing decoded)."""
    if source is None:
        return
    from raydistill.data.sources import check_source

    check_source(source, cache_dir=cache_dir, download=download)


def check_out(path: str | os.PathLike, *, is_file: bool = False) -> Path:
    """Refuse an output path that cannot be created; nothing is created here.

    `is_file`: the path names a file (its folder must be writable) rather than a directory.
    The nearest existing ancestor is probed with a temporary file, which catches read-only
    file systems and /proc, where permission bits alone say yes to root.
    """
    p = Path(path).expanduser()
    if p.exists():
        if is_file and p.is_dir():
            raise UserError(f"--out {str(p)!r} is a directory; expected a file path")
        if not is_file and not p.is_dir():
            raise UserError(f"--out {str(p)!r} is a file; expected a directory")
    folder = p.parent if is_file else p
    base = folder
    while not base.exists():
        base = base.parent
    if not base.is_dir():
        raise UserError(f"--out {str(p)!r}: {str(base)!r} is a file, not a directory")
    try:
        fd, probe = tempfile.mkstemp(dir=base, prefix=".raydistill-probe-")
    except OSError as exc:
        raise UserError(
            f"--out {str(p)!r} cannot be written ({exc.strerror} in {str(base)!r})"
        ) from None
    os.close(fd)
    os.unlink(probe)
    return p
