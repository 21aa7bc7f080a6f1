"""`CellScheduler`: one ASHA per cell, through ASHA's public scheduler interface, so a trial is
compared only with the trials of its own cell (a plain ASHA would stop a large-budget cell's
trial for being worse than a small cell's).
"""

from __future__ import annotations

from typing import Any

from ray.tune.schedulers import AsyncHyperBandScheduler, FIFOScheduler, TrialScheduler

from raydistill.search.settings import METRIC, MODE


class CellScheduler(FIFOScheduler):
    """ASHA within each cell (epochs as the resource): a trial is compared with its cell only.

    One `AsyncHyperBandScheduler` per cell, driven through its public scheduler interface only;
    this class keeps its own record of which trials each cell's ASHA holds and how many it
    stopped.
    """

    def __init__(self, max_t: int, grace_period: int = 1, reduction_factor: float = 3) -> None:
        super().__init__()
        self._metric, self._mode = METRIC, MODE
        self._kw = {
            "max_t": max(1, max_t),
            "grace_period": max(1, min(grace_period, max_t)),
            "reduction_factor": reduction_factor,
        }
        self._ashas: dict[str, AsyncHyperBandScheduler] = {}
        self._live: dict[str, set[str]] = {}  # cell -> trials added to its ASHA, not yet ended
        self._stopped: dict[str, int] = {}  # cell -> STOP decisions of its ASHA

    def set_search_properties(self, metric: str | None, mode: str | None, **spec: Any) -> bool:
        return True

    def _asha(self, trial: Any) -> tuple[AsyncHyperBandScheduler, set[str]]:
        cid = str(trial.config.get("cell"))
        if cid not in self._ashas:
            self._ashas[cid] = AsyncHyperBandScheduler(
                time_attr="training_iteration", metric=METRIC, mode=MODE, **self._kw
            )
            self._live[cid], self._stopped[cid] = set(), 0
        return self._ashas[cid], self._live[cid]

    def on_trial_add(self, tune_controller: Any, trial: Any) -> None:
        asha, live = self._asha(trial)
        asha.on_trial_add(tune_controller, trial)
        live.add(trial.trial_id)

    def on_trial_result(self, tune_controller: Any, trial: Any, result: dict) -> str:
        decision = self._asha(trial)[0].on_trial_result(tune_controller, trial, result)
        if decision == TrialScheduler.STOP:
            self._stopped[str(trial.config.get("cell"))] += 1
        return decision

    def on_trial_complete(self, tune_controller: Any, trial: Any, result: dict) -> None:
        asha, live = self._asha(trial)
        if trial.trial_id in live:
            live.discard(trial.trial_id)
            asha.on_trial_complete(tune_controller, trial, result)

    def on_trial_remove(self, tune_controller: Any, trial: Any) -> None:
        asha, live = self._asha(trial)
        if trial.trial_id in live:
            live.discard(trial.trial_id)
            asha.on_trial_remove(tune_controller, trial)

    def debug_string(self) -> str:
        return f"Using per-cell AsyncHyperBand: stopped {dict(self._stopped)}"
