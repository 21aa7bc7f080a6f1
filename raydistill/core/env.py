"""Process environment variables set for the duration of a block (the one implementation)."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator, Mapping


@contextlib.contextmanager
def scoped_env(values: Mapping[str, str], *, override: bool = True) -> Iterator[None]:
    """`values` in `os.environ` inside the block, and every variable as it was afterwards.

    `override=False`: a variable that is already set keeps its value (the user's setting wins).
    """
    saved = {k: os.environ.get(k) for k in values}
    os.environ.update({k: v for k, v in values.items() if override or saved[k] is None})
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
