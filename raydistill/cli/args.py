"""Argument types and input checks of the CLI that need neither torch nor Ray.

Everything here runs before a command imports its module, so a typo is refused in a fraction
of a second. The types are `Annotated` pydantic validators that jsonargparse applies to the
commands' typed parameters (`raydistill.cli.parser`): counts, positive numbers, comma lists
("1,2,3" or a YAML list from --config), budget strings (`raydistill.students.budget.parse_budget`, the
one grammar); each failure names the value and what is valid. Also: KEY=VALUE pairs (one rule:
`yaml.safe_load` of the value), dataset sources (`--data`, checked without decoding) and
output paths (`--out` must be creatable: probed with a temporary file, nothing is left behind).
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Annotated, Any

from pydantic import AfterValidator, BeforeValidator

from raydistill.core.errors import UserError
from raydistill.students.budget import parse_budget


def split_list(text: str) -> list[str]:
    """The items of a comma-separated option value, blank ones dropped ("1M,,3.16M")."""
    return [part.strip() for part in text.split(",") if part.strip()]


def _items(value: Any) -> Any:
    """A comma-separated string as its items; a list (from --config) as it is."""
    if isinstance(value, str):
        return split_list(value)
    return [str(v) for v in value] if isinstance(value, (list, tuple)) else value


def at_least(low: int) -> Callable[[int], int]:
    """A validator of integers ≥ `low`."""

    def check(value: int) -> int:
        if value < low:
            raise ValueError(f"must be ≥ {low} (got {value})")
        return value

    return check


def _positive(value: float) -> float:
    if not value > 0:
        raise ValueError(f"must be > 0 (got {value})")
    return value


def _budget(text: Any) -> str:
    try:
        parse_budget(str(text))
    except UserError as exc:
        raise ValueError(str(exc).removeprefix("budget ")) from None
    return str(text)


def _budgets(parts: list[str]) -> str:
    if not parts:
        raise ValueError("names no budget; e.g. 300k,1M,3.16M")
    return ",".join(_budget(p) for p in parts)


Count = Annotated[int, AfterValidator(at_least(1))]  # ≥ 1: epochs, members, trials
Count0 = Annotated[int, AfterValidator(at_least(0))]  # ≥ 0
Count2 = Annotated[int, AfterValidator(at_least(2))]  # ≥ 2: input channels
Positive = Annotated[float, AfterValidator(_positive)]  # > 0: learning rates, scales
Budget = Annotated[str, BeforeValidator(_budget)]  # one budget: 300k, 1M, 40M-macs, 2ms
Budgets = Annotated[list[str], BeforeValidator(_items), AfterValidator(_budgets)]  # → "1M,3.16M"
Ints = Annotated[list[int], BeforeValidator(_items)]  # "1,2,3" → [1, 2, 3]
Floats = Annotated[list[float], BeforeValidator(_items)]
Names = Annotated[list[str], BeforeValidator(_items)]
KeyValues = list[str]  # a repeatable KEY=VALUE option (--set lr=0.01 --set loss=kd)


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


def check_gpu_options(
    *, device: str | None = None, address: str | None = "local", gpus: float = 0.0, flag: str = ""
) -> None:
    """A command's GPU options that this machine cannot serve, refused in one line before
    anything starts: a CUDA `device` where none is visible (on a cluster the device is the
    workers', not checked here) and `gpus` per task that a local Ray does not have."""
    local = address in ("local", "", None)
    if not ((local and device not in (None, "auto", "cpu")) or float(gpus or 0.0) > 0):
        return  # nothing to check: no torch import for a refusal of something else
    from raydistill.core.device import check_device, check_local_gpus

    if local:
        check_device(device)
    check_local_gpus(float(gpus or 0.0), address, flag)
