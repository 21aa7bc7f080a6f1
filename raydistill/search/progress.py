"""The search's progress bar: trials done / total, the best validation accuracy so far, ETA.

A Tune `Callback` on the driver (tqdm on stderr, beside Tune's own trial table): one tick per
trial that ends, finished, stopped by the scheduler or errored.
"""

from __future__ import annotations

import math
import sys
from typing import Any

from ray.tune import Callback

from raydistill.search.settings import METRIC


class SearchProgress(Callback):
    """tqdm over a search's trials; `best` is the highest `val/acc` any trial has reported."""

    def __init__(self, total: int, desc: str) -> None:
        self.total, self.desc = int(total), desc
        self.best = -math.inf
        self.bar: Any = None

    def setup(self, **info: Any) -> None:
        from tqdm import tqdm

        self.bar = tqdm(
            total=self.total,
            desc=self.desc,
            unit="trial",
            file=sys.stderr,
            dynamic_ncols=True,
            mininterval=1.0,
        )

    def on_trial_result(
        self, iteration: int, trials: list, trial: Any, result: dict, **info: Any
    ) -> None:
        value = result.get(METRIC)
        if isinstance(value, int | float) and math.isfinite(value) and value > self.best:
            self.best = float(value)
            if self.bar is not None:
                self.bar.set_postfix_str(f"best val {100 * self.best:.2f}%")

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._tick()

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._tick()

    def on_experiment_end(self, trials: list, **info: Any) -> None:
        if self.bar is not None:
            self.bar.close()

    def _tick(self) -> None:
        if self.bar is not None:
            self.bar.update(1)
