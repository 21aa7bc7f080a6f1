"""Schema validation (pydantic): THE conversion of a `ValidationError` into a one-line `UserError`,
and strict models typed by default values (a leaf: imports only `errors`).

Scales (`raydistill.study.scale`), search spaces (`raydistill.search.spaces.schema`) and train configs
(`raydistill.training.schema`, the CLI's `--set`) all report a bad value the same way, naming the file (or flag), the key, the value and what is valid:

    tiny.yaml: search.searcher='grid' is invalid: Input should be 'tpe', 'gp' or 'random'
    --set lr='abc' is invalid: expected a float like 0.005
    space.yaml: train.lrr: unknown key; valid: lr, momentum, ...
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError, create_model

from raydistill.core.errors import UserError

_SCALARS = (bool, int, float, str)  # defaults that name their field's type in an error
Valid = Mapping[str, Iterable[str]]  # path ("train.loss") → the values / keys valid there


def validate(
    model: type[BaseModel],
    values: Any,
    where: str,
    *,
    prefix: str = "",
    sep: str = ": ",
    valid: Valid | None = None,
) -> BaseModel:
    """`model.model_validate(values)`, a failure raised as the one-line `user_error`."""
    try:
        return model.model_validate(values)
    except ValidationError as exc:
        raise user_error(exc, where, model=model, prefix=prefix, sep=sep, valid=valid) from None


def user_error(
    exc: ValidationError,
    where: str,
    *,
    model: type[BaseModel] | None = None,
    prefix: str = "",
    sep: str = ": ",
    valid: Valid | None = None,
) -> UserError:
    """The first error of `exc` as one line: `{where}{sep}{prefix}{key}...`.

    `model` lets an unknown key list the valid ones and a wrong type name the expected type
    and an example (the field's default); `valid` adds what is valid at a path.
    """
    err = exc.errors(include_url=False)[0]
    loc = [str(p) for p in err["loc"]]
    path = (prefix + ".".join(loc)).rstrip(".")  # a model-level error has no location
    kind, msg = err["type"], str(err["msg"]).removeprefix("Value error, ")
    field = _field(model, loc)
    hint = list((valid or {}).get(path, ()))
    if kind == "extra_forbidden":
        keys = hint or _keys(model, loc[:-1])
        tail = f"; valid: {', '.join(keys)}" if keys else ""
        return UserError(f"{where}{sep}{path}: unknown key{tail}")
    tail = f"; valid: {', '.join(hint)}" if hint else ""
    if kind == "missing":
        return UserError(f"{where}{sep}{path}: {msg}{tail}")
    if kind.endswith("_type") and field is not None and type(field.default) in _SCALARS:
        default, name = field.default, type(field.default).__name__
        msg = f"expected {'an' if name[0] in 'aeiou' else 'a'} {name} like {default!r}"
    line = f"{where}{sep}{path}={err.get('input')!r} is invalid: {msg}{tail}"
    return UserError(" ".join(line.split()))


def _field(model: type[BaseModel] | None, loc: list[str]) -> Any:
    if model is None or len(loc) != 1:
        return None
    return model.model_fields.get(loc[0])


def _keys(model: type[BaseModel] | None, parent: list[str]) -> list[str]:
    """The keys (aliases where set) of the model at `parent` (nested models followed)."""
    for name in parent:
        if model is None or name not in model.model_fields:
            return []
        ann = model.model_fields[name].annotation
        model = ann if isinstance(ann, type) and issubclass(ann, BaseModel) else None
    if model is None:
        return []
    return [f.alias or n for n, f in model.model_fields.items()]


def defaults_model(name: str, defaults: Mapping[str, Any]) -> type[BaseModel]:
    """A strict model with one optional field per key, typed by its default value.

    bool, int, float and str defaults take only their type (a float takes an int, turned into
    a float; a bool is not an int); a None default takes anything; a list or tuple default a
    list or tuple. Unknown keys are refused.
    """
    fields: dict[str, Any] = {}
    for key, default in defaults.items():
        if default is None:
            typ: Any = Any
        elif isinstance(default, (list, tuple)):
            typ = list[Any] | tuple[Any, ...]
        else:
            typ = type(default)
        fields[key] = (typ, default)
    config = ConfigDict(extra="forbid", strict=True, arbitrary_types_allowed=True)
    return create_model(name, __config__=config, **fields)
