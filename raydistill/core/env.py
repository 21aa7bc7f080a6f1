"""Process environment variables set for the duration of a block (the one implementation), and
the console's verbosity (`RAYDISTILL_VERBOSE`: 0 by default, 1 with `raydistill -v`, 2 with `-vv`).

At verbosity 0 the console shows raydistill's own lines and progress bars only; Ray's and
Tune's messages (their INFO and WARNING logs, Tune's status tables) appear from 1 on.
"""

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


VERBOSITY_ENV = "RAYDISTILL_VERBOSE"


def verbosity() -> int:
    """The console verbosity: `RAYDISTILL_VERBOSE` as an integer ≥ 0 (0 when unset or invalid)."""
    try:
        return max(0, int(os.environ.get(VERBOSITY_ENV, "0")))
    except ValueError:
        return 0
