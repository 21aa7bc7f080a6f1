"""Ray start-up: the one place that connects to or starts Ray (imported lazily by its users).

`ray_session(address)` is a context manager: inside it Ray is up; it shuts Ray down on exit only
if it started it (a caller that already runs Ray keeps it). `address` is "local" (a private
local Ray on this machine, `num_cpus` of its cores), "auto" or "host:port" (join a running
cluster). `env_vars`: environment variables of every Ray worker this start-up starts (e.g.
WANDB_MODE for W&B inside trials; a cluster already running keeps its own). A missing cluster
is a one-line UserError.

Ray's console messages show only at `raydistill -v` (`raydistill.core.env.verbosity`): below it
the "ray" logger (Ray's Python logger, Tune's included) passes errors only, so Ray's warnings
(token authentication turned on, Tune's restore advice, its metrics look-ups on Ctrl-C) stay off
the console; the token authentication itself is Ray's default, unchanged.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator, Mapping
from typing import Any

from raydistill.core.errors import UserError, first_line


def init_ray(
    address: str = "local",
    num_cpus: int | None = None,
    env_vars: Mapping[str, str] | None = None,
) -> bool:
    """Connect to or start Ray unless it is already up; True when this call started it."""
    import ray

    if ray.is_initialized():
        return False
    local = address in ("local", "", None)
    quiet_ray()
    kwargs: dict[str, Any] = {"log_to_driver": False, "configure_logging": False}
    if env_vars:
        kwargs["runtime_env"] = {"env_vars": dict(env_vars)}
    if local:
        kwargs.update(address="local", include_dashboard=False, num_cpus=num_cpus)
    else:
        kwargs.update(address=address)
    try:
        ray.init(**kwargs)
    except ConnectionError as exc:
        raise UserError(
            f"no Ray cluster at address {address!r} ({first_line(exc)}); "
            "start one with `ray start --head` or use --address local"
        ) from None
    return True


def quiet_ray() -> None:
    """Below `raydistill -v`: Ray's logger (and Tune's, its child) passes errors only."""
    from raydistill.core.env import verbosity

    if verbosity() == 0:
        logging.getLogger("ray").setLevel(logging.ERROR)


@contextlib.contextmanager
def ray_session(
    address: str = "local",
    num_cpus: int | None = None,
    env_vars: Mapping[str, str] | None = None,
) -> Iterator[Any]:
    """Ray, up for the duration of the block (see the module docstring); yields the module."""
    import ray

    started = init_ray(address, num_cpus, env_vars)
    try:
        yield ray
    finally:
        if started:
            ray.shutdown()
