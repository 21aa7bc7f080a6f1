"""`--config FILE` for every command: a YAML mapping of the command's options.

The file's values are handed to jsonargparse as a config placed before the options typed, so
they go through the same types and checks, and options typed on the command line win over the
file (for repeatable options such as `--set`, both apply). Keys are option names with `-` or `_`
(`val-size: 5000`, `split_seed: 1`); positionals by their name (`spaces: [mlp, cnn]`); a
mapping value of a KEY=VALUE option expands to one pair per key (`set: {lr: 0.01}`).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from raydistill.core.errors import UserError


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


def config_values(path: str, dests: Mapping[str, str]) -> dict[str, Any]:
    """The options the YAML file `path` sets, by destination (`dests`: {dest: spelling}, e.g.
    {"dataset.val_size": "--val-size"}); null values are left out (the default applies)."""
    import yaml

    try:
        raw = yaml.safe_load(Path(path).read_text())
    except OSError as exc:
        raise UserError(f"--config {path!r} cannot be read ({exc.strerror})") from None
    except yaml.YAMLError:
        raise UserError(f"--config {path!r} is not valid data-only YAML") from None
    if not isinstance(raw, dict):
        raise UserError(f"--config {path!r} must be a mapping of option: value")
    # by how the user spells it: an option group's field (`val-size`) is its dest's last part
    names = {spelled.removeprefix("--").replace("-", "_"): d for d, spelled in dests.items()}
    out: dict[str, Any] = {}
    for key, value in raw.items():
        name = names.get(str(key).replace("-", "_"))
        if name is None:
            valid = ", ".join(sorted(s.removeprefix("--") for s in dests.values()))
            raise UserError(f"--config {path!r}: unknown option {key!r}; valid: {valid}")
        if value is None:
            continue
        if isinstance(value, dict):  # KEY=VALUE options: JSON is YAML, so values keep types
            value = [f"{k}={json.dumps(v)}" for k, v in value.items()]
        out[name] = value
    return out
