"""The schema of a train-config mapping (a `--set`, a space's fixed values): one strict field
per `TrainConfig` field, typed by its default; errors through `raydistill.core.validation`.

Key and type checks live here; vocabularies and cross-field rules (loss names, lr > 0) are
`TrainConfig`'s own (`TrainConfig.from_dict`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import MISSING, fields
from functools import lru_cache
from typing import Any

from pydantic import BaseModel

from raydistill.core.validation import defaults_model, validate
from raydistill.training.config import TrainConfig


@lru_cache(maxsize=1)
def train_config_model() -> type[BaseModel]:
    """One optional, strictly typed field per TrainConfig field (no default: any value)."""
    defaults = {f.name: None if f.default is MISSING else f.default for f in fields(TrainConfig)}
    return defaults_model("TrainConfigValues", defaults)


def check_train_config(
    values: Mapping[str, Any], where: str, *, prefix: str = "", sep: str = ": "
) -> dict[str, Any]:
    """Keys and value types of a (partial) TrainConfig mapping; the values, ints made floats
    where TrainConfig takes floats. Vocabularies (loss names, ...) are TrainConfig's to check."""
    model = train_config_model()
    checked = validate(model, dict(values), where, prefix=prefix, sep=sep)
    return checked.model_dump(include=set(values))
