"""Learning-rate schedules of the training loop, with state that checkpoints as plain JSON.

- `PlateauSchedule`: the paper's (Urban et al., 2017): halve the rate after `patience` epochs
  without a new best validation accuracy, no further cut for `cooldown` epochs after a cut; stop
  after `stop_patience` epochs without improvement or once the rate has been cut by more than
  1/`min_lr_ratio` (2000×). The rate is constant within an epoch.
- `CosineSchedule`: a fixed number of epochs, linear warm-up then cosine decay to 0, per step;
  for short runs where the plateau rule never fires.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Literal, get_args

ScheduleName = Literal["plateau", "cosine"]
SCHEDULES: tuple[str, ...] = get_args(ScheduleName)


@dataclass
class PlateauSchedule:
    """Per-epoch plateau rule. Call `lr_at(step)` for the rate, `end_epoch(val_acc)` after each epoch."""

    lr0: float
    patience: int = 10
    cooldown: int = 8
    factor: float = 0.5
    stop_patience: int = 30
    min_lr_ratio: float = 1 / 2000
    lr: float = -1.0  # current rate; -1 means "not started" (set to lr0)
    best: float = -math.inf
    since_best: int = 0  # epochs since the last new best
    cooldown_left: int = 0

    def __post_init__(self) -> None:
        if self.lr < 0:
            self.lr = self.lr0

    def lr_at(self, step: int) -> float:  # constant within an epoch
        return self.lr

    def end_epoch(self, val_acc: float) -> bool:
        """Record an epoch's validation accuracy; returns True when training should stop."""
        if val_acc > self.best:
            self.best, self.since_best = val_acc, 0
        else:
            self.since_best += 1
        if self.cooldown_left > 0:
            self.cooldown_left -= 1
        elif self.since_best >= self.patience:
            self.lr *= self.factor
            self.cooldown_left = self.cooldown
        cut_too_far = self.lr < self.lr0 * self.min_lr_ratio
        return self.since_best >= self.stop_patience or cut_too_far

    def state_dict(self) -> dict:
        return asdict(self)


@dataclass
class CosineSchedule:
    """Per-step cosine decay from lr0 to 0 over `total_steps`, after `warmup_steps` of linear ramp."""

    lr0: float
    total_steps: int
    warmup_steps: int = 0

    def lr_at(self, step: int) -> float:
        if step < self.warmup_steps:
            return self.lr0 * (step + 1) / self.warmup_steps
        span = max(1, self.total_steps - self.warmup_steps)
        progress = min(1.0, (step - self.warmup_steps) / span)
        return 0.5 * self.lr0 * (1.0 + math.cos(math.pi * progress))

    def end_epoch(self, val_acc: float) -> bool:  # fixed length: never stops early
        return False

    def state_dict(self) -> dict:
        return asdict(self)


Schedule = PlateauSchedule | CosineSchedule


def schedule_from_state(kind: str, state: dict) -> Schedule:
    """Rebuild a schedule from `state_dict()` output (checkpoint resume)."""
    cls = PlateauSchedule if kind == "plateau" else CosineSchedule
    return cls(**state)
