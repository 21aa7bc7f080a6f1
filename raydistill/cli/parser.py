"""A command's parser, built by jsonargparse from the command's typed function.

A command is a typed function (`raydistill.cli.COMMANDS`): its parameters are the options
(`val_size` → `--val-size`), their annotations the types (plain types, `Literal` vocabularies,
the pydantic-validated types of `raydistill.cli.args`), their defaults the defaults, and its
docstring the help (first line: the command's summary; `Args:` one line per option).
jsonargparse reads the signature (`add_function_arguments`) and checks every value. This module
adds the CLI's spelling on top — dashes in option names, bare boolean flags (`--dry-run`),
repeatable list options that add to a config file's (`--set a=1 --set b=2`), positionals,
option groups (a parameter typed by a dataclass, such as `raydistill.cli.data_options`: its
fields are the command's own options, `--val-size` rather than `--dataset.val_size`, and the
command receives the dataclass) — and `--config FILE` (`raydistill.cli.config`), and turns
jsonargparse's multi-line errors into the one-line refusal (`UserError`).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import re
import typing
from collections.abc import Callable, Sequence
from typing import Any

from raydistill.cli.config import config_values, split_config
from raydistill.core.errors import UserError


def build(name: str, fn: Callable[..., int], positionals: dict[str, str | None]) -> Any:
    """The jsonargparse parser of command `name`: `fn`'s parameters, `positionals` ({param:
    nargs}) as positional arguments, and `--config FILE` (documented; read by `parse`)."""
    from jsonargparse import ActionConfigFile, ArgumentParser

    _fill_doc(fn)
    parser = ArgumentParser(
        prog=f"raydistill {name}",
        description=summary(fn),
        exit_on_error=False,
        env_prefix=False,
        default_env=False,
        print_config=None,
        formatter_class=_formatter(),
    )
    parser.add_argument(
        "--config",
        metavar="FILE",
        action=ActionConfigFile,
        help="YAML mapping of this command's options (typed options win)",
    )
    parser.add_function_arguments(fn, as_group=False, skip=set(positionals))
    docs = _param_docs(fn)
    hints = typing.get_type_hints(fn, include_extras=True)
    for param, nargs in positionals.items():
        hint = hints[param]
        if typing.get_origin(hint) is typing.Literal:  # a sub-command name, e.g. study's
            extra: dict[str, Any] = {"choices": typing.get_args(hint)}
        else:
            extra = {"metavar": param.upper()}
        parser.add_argument(param, nargs=nargs, help=docs.get(param, ""), **extra)
    groups = set(option_groups(fn))
    for action in parser._actions:
        if action.dest in groups:  # the group's own `--dataset CONFIG`: --config covers it
            action.help = argparse.SUPPRESS
        _respell(parser, action, groups)
    return parser


def option_groups(fn: Callable[..., Any]) -> dict[str, type]:
    """{parameter: dataclass} of `fn`'s parameters that are option groups."""
    hints = typing.get_type_hints(fn)
    return {p: h for p, h in hints.items() if isinstance(h, type) and dataclasses.is_dataclass(h)}


def parse(
    name: str, fn: Callable[..., int], positionals: dict[str, str | None], argv: Sequence[str]
) -> dict[str, Any]:
    """`fn`'s keyword arguments from `argv` (the tokens after the command name)."""
    argv, config = split_config(argv)
    parser = build(name, fn, positionals)
    head: list[str] = []
    if config is not None:
        values = config_values(config, _dests(parser))
        tail = [str(v) for p in positionals if p in values for v in _as_list(values.pop(p))]
        head, argv = ["--config", json.dumps(_nested(values))], [*argv, *tail]
    try:
        ns = parser.parse_args([*head, *_respell_tokens(parser, list(argv))])
    except argparse.ArgumentError as exc:
        raise UserError(f"{name}: {one_line(str(exc), parser)}") from None
    kwargs = {k: v for k, v in vars(ns).items() if k != "config"}
    for param, cls in option_groups(fn).items():  # a group's Namespace → its dataclass
        kwargs[param] = cls(**kwargs[param].as_dict())
    return kwargs


def _nested(values: dict[str, Any]) -> dict[str, Any]:
    """{"dataset.val_size": 5} → {"dataset": {"val_size": 5}}: a group's keys as jsonargparse
    reads them from a config."""
    out: dict[str, Any] = {}
    for key, value in values.items():
        group, dot, field = key.rpartition(".")
        (out.setdefault(group, {}) if dot else out)[field] = value
    return out


def _fill_doc(fn: Callable[..., Any]) -> None:
    """Fill the `{NAME}` fields of `fn`'s docstring from `fn.doc_values` ({NAME: callable}):
    help that lists what exists (the shipped search spaces), computed only when the command's
    parser is built, so other commands do not pay for it."""
    for name, value in getattr(fn, "doc_values", {}).items():
        if fn.__doc__ and f"{{{name}}}" in fn.__doc__:
            fn.__doc__ = fn.__doc__.replace(f"{{{name}}}", str(value()))


def summary(fn: Callable[..., Any]) -> str:
    """The first line of `fn`'s docstring: the command's one-line help."""
    return (fn.__doc__ or "").strip().splitlines()[0] if fn.__doc__ else ""


# ---------------------------------------------------------------- the CLI's spelling
def _respell(parser: Any, action: argparse.Action, groups: set[str]) -> None:
    """`--val_size` → `--val-size`, a group's `--dataset.val_size` too; a bool option becomes
    a bare flag (`--dry-run`)."""
    spelled = [_spelling(s, groups) for s in action.option_strings]
    if spelled != action.option_strings:
        for s in action.option_strings:
            parser._option_string_actions.pop(s, None)
        action.option_strings = spelled
        parser._option_string_actions.update(dict.fromkeys(spelled, action))
    if getattr(action, "_typehint", None) is bool:
        action.nargs, action.const = "?", True  # `--flag` alone means true; `--flag false` too


def _spelling(option: str, groups: set[str]) -> str:
    if not option.startswith("--"):
        return option
    group, dot, field = option[2:].partition(".")
    return "--" + (field if dot and group in groups else option[2:]).replace("_", "-")


def _respell_tokens(parser: Any, argv: list[str]) -> list[str]:
    """A repeatable list option given again adds to the list (`--set a=1 --set b=2`, and to
    the config file's): jsonargparse spells that `--set+`. A value that starts with a dash
    (`--budget -5k`) is joined to its option (`--budget=-5k`): argparse would take it for an
    option and say "expected one argument" instead of checking the value."""
    out: list[str] = []
    join = False  # the token before was an option whose value starts with a dash
    for i, token in enumerate(argv):
        if join:
            out[-1], join = f"{out[-1]}={token}", False
            continue
        flag, eq, value = token.partition("=")
        action = parser._option_string_actions.get(flag)
        if action is not None and f"{flag}+" in action.option_strings:
            token = f"{flag}+{eq}{value}"
        one_value = action is not None and not eq and action.nargs in (None, "?")
        join = one_value and _dashed(parser, argv, i + 1)
        out.append(token)
    return out


def _dashed(parser: Any, argv: list[str], i: int) -> bool:
    """Whether argv[i] is a value that starts with a dash (not an option, not `--`)."""
    if i >= len(argv) or not argv[i].startswith("-") or argv[i] == "--":
        return False
    return argv[i].partition("=")[0] not in parser._option_string_actions


def _dests(parser: Any) -> dict[str, str]:
    """{dest: how the user spells it} of every option and positional but --config/--help."""
    skip = {"config", "help"}
    return {
        a.dest: (a.option_strings[0] if a.option_strings else a.dest)
        for a in parser._actions
        if a.dest not in skip
    }


def _as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


def _param_docs(fn: Callable[..., Any]) -> dict[str, str]:
    import docstring_parser

    return {
        p.arg_name: p.description or "" for p in docstring_parser.parse(fn.__doc__ or "").params
    }


def _formatter() -> type:
    """jsonargparse's help formatter without the type annotations (`Annotated[...]` is noise)."""
    from jsonargparse import DefaultHelpFormatter

    class Formatter(DefaultHelpFormatter):
        def _get_help_string(self, action: argparse.Action) -> str:
            text = action.help or ""
            if action.option_strings and action.default not in (None, False, [], argparse.SUPPRESS):
                text += f" (default: {action.default})"
            return text

    return Formatter


# ---------------------------------------------------------------- errors
_KEY = re.compile(r'Parser key "([^"]+)"')


def one_line(message: str, parser: Any) -> str:
    """jsonargparse's error message (often several lines) as one line naming the option, the
    value and what is valid."""
    flags = _dests(parser)
    required = re.match(r"the following arguments are required: (.*)", message)
    if required:
        names = [flags.get(n.strip(), n.strip()) for n in required[1].split(",")]
        return f"the following arguments are required: {', '.join(names)}"
    key = _KEY.search(message)
    if key is None:
        return " ".join(message.split())
    dest = key[1]
    flag = flags.get(dest, dest)
    value = re.search(r"(?:Got|Given) value: (.*)$", message, re.M)
    shown = repr(value[1].strip()) if value else "the value"
    action = next((a for a in parser._actions if a.dest == dest), None)
    choices = _literal(getattr(action, "_typehint", None))
    if choices:
        return f"{flag}: invalid choice {shown}; valid: {', '.join(map(str, choices))}"
    detail = re.search(r"^\s*(?:Value error, )?(.*?) \[type=", message, re.M)
    if detail:  # pydantic's own messages are capitalised; ours (cli.args) name the value
        text = detail[1]
        return f"{flag} {shown} is invalid: {text}" if text[:1].isupper() else f"{flag}: {text}"
    expected = re.search(r"Expected a <class '(\w+)'>", message)
    what = f"expected {expected[1]}" if expected else "invalid value"
    return f"{flag} {shown} is invalid: {what}"


def _literal(hint: Any) -> tuple[Any, ...]:
    """The values of a Literal hint (or of the Literal inside Optional[...]); () otherwise."""
    if hint is None:
        return ()
    if typing.get_origin(hint) is typing.Literal:
        return typing.get_args(hint)
    for arg in typing.get_args(hint):
        if typing.get_origin(arg) is typing.Literal:
            return typing.get_args(arg)
    return ()
