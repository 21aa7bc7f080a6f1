"""What a search asks of the cluster, checked before any trial starts: the pending-trial cap
(`pending_cap`) and whether a trial's GPU share fits on any node (`check_gpus`).

Autoscaling clusters start with no GPU workers, so neither depends on the nodes present at
start when it does not have to: the cap comes from the trial count or `--max-concurrent`.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping
from typing import Any

from raydistill.core.errors import UserError


def pending_cap(planned_trials: int, max_concurrent: int | None) -> int:
    """TUNE_MAX_PENDING_TRIALS_PG: every trial of the run may be pending (≥ 1), so an
    autoscaler sees the whole demand at once; `--max-concurrent` caps it."""
    cap = int(planned_trials)
    if max_concurrent:
        cap = min(cap, int(max_concurrent))
    return max(1, cap)


def largest_node_gpus(nodes: list[Mapping[str, Any]]) -> float:
    """The most GPUs on one alive node (`ray.nodes()` entries)."""
    return max((float(n.get("Resources", {}).get("GPU", 0.0)) for n in nodes if n.get("Alive")),
               default=0.0)  # fmt: skip


def check_gpus(gpus_per_trial: float, address: str) -> None:
    """Refuse (one line) a GPU share no node can hold, instead of a search waiting forever.

    Call inside a Ray session. On a cluster joined by address that has no GPU node yet (an
    autoscaling cluster, GPU workers at 0), the share is not refused: the autoscaler adds them.
    """
    if gpus_per_trial <= 0:
        return
    import ray

    most = largest_node_gpus(ray.nodes())
    if gpus_per_trial <= most:
        return
    if most == 0 and address not in ("local", "", None):
        print(f"raydistill: no GPU node is up yet; trials wait for the autoscaler to add one "
              f"with ≥ {gpus_per_trial:g} GPUs", file=sys.stderr)  # fmt: skip
        return
    raise UserError(
        f"--gpus-per-trial {gpus_per_trial:g} is more than any node has (the largest has "
        f"{most:g} GPUs); use at most {most:g}, or 0 for CPU trials"
    )
