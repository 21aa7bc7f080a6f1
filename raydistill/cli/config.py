"""`--config FILE` for every command: a YAML mapping of the command's options.

The file's values become command-line tokens placed before the ones typed, so they go through
the same argparse types and checks, and options typed on the command line win over the file
(for repeatable options such as `--set`, both apply). Keys are option names with `-` or `_`
(`val-size: 5000`, `split_seed: 1`); positionals by their name (`spaces: [mlp, cnn]`); a
mapping value of a KEY=VALUE option expands to one pair per key (`set: {lr: 0.01}`).
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from raydistill.errors import UserError


def split_config(argv: Sequence[str]) -> tuple[list[str], str | None]:
    """argv without its `--config FILE` / `--config=FILE`, and FILE (None when absent)."""
    out, path, it = [], None, iter(argv)
    for token in it:
        if token == "--config":
            path = next(it, None)
            if path is None:
                raise UserError("--config needs a FILE (a YAML mapping of the command's options)")
        elif token.startswith("--config="):
            path = token.partition("=")[2]
        else:
            out.append(token)
    return out, path


def config_tokens(path: str, parser: argparse.ArgumentParser) -> list[str]:
    """The command-line tokens that the YAML file `path` stands for, for `parser`'s options."""
    import yaml

    try:
        raw = yaml.safe_load(Path(path).read_text())
    except OSError as exc:
        raise UserError(f"--config {path!r} cannot be read ({exc.strerror})") from None
    except yaml.YAMLError:
        raise UserError(f"--config {path!r} is not valid data-only YAML") from None
    if not isinstance(raw, dict):
        raise UserError(f"--config {path!r} must be a mapping of option: value")
    actions = {a.dest: a for a in parser._actions if a.dest not in ("help", "config")}
    head, tail = [], []
    for key, value in raw.items():
        action = actions.get(str(key).replace("-", "_"))
        if action is None or value is None:
            if action is None:
                valid = ", ".join(sorted(d.replace("_", "-") for d in actions if d != "_cmd"))
                raise UserError(f"--config {path!r}: unknown option {key!r}; valid: {valid}")
            continue
        if action.option_strings:
            head += _option_tokens(action, value)
        else:  # a positional
            tail += [str(v) for v in (value if isinstance(value, list) else [value])]
    return [*head, *tail]


def _option_tokens(action: argparse.Action, value: Any) -> list[str]:
    flag = action.option_strings[-1]
    if action.nargs == 0:  # store_true
        return [flag] if value is True else []
    if isinstance(action, argparse._AppendAction):
        if isinstance(value, dict):  # KEY=VALUE options: JSON is YAML, so values keep types
            value = [f"{k}={json.dumps(v)}" for k, v in value.items()]
        return [t for v in (value if isinstance(value, list) else [value]) for t in (flag, str(v))]
    if isinstance(value, list):  # comma-separated lists (--depths, --budgets, --ratios)
        value = ",".join(str(v) for v in value)
    return [flag, str(value)]
