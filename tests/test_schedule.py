"""The paper's plateau schedule on scripted validation curves, and the cosine option."""

from __future__ import annotations

import pytest

from raydistill.training.schedule import CosineSchedule, PlateauSchedule, schedule_from_state


def _drive(sched: PlateauSchedule, curve: list[float]) -> tuple[list[float], int | None]:
    lrs, stopped_at = [], None
    for epoch, acc in enumerate(curve, start=1):
        stop = sched.end_epoch(acc)
        lrs.append(sched.lr)
        if stop:
            stopped_at = epoch
            break
    return lrs, stopped_at


def test_halves_after_ten_flat_epochs_then_waits_eight() -> None:
    # Improves for 5 epochs, then flat forever.
    curve = [0.1 * i for i in range(1, 6)] + [0.5] * 100
    lrs, stopped = _drive(PlateauSchedule(lr0=1.0), curve)
    cuts = [e for e in range(1, len(lrs)) if lrs[e] < lrs[e - 1]]
    # 10 epochs without improvement after epoch 5 -> cut at epoch 15 (index 14); then every 9
    # epochs (8 epochs of cooldown, then the rule fires again since there is still no improvement).
    assert [c + 1 for c in cuts] == [15, 24, 33]
    assert stopped == 35  # 30 epochs without improvement after epoch 5
    assert lrs[-1] == pytest.approx(1 / 8)


def test_improvement_resets_the_patience() -> None:
    curve = [0.1] + [0.05] * 9 + [0.2] + [0.05] * 9  # a new best at epoch 11
    lrs, stopped = _drive(PlateauSchedule(lr0=1.0), curve)
    assert stopped is None and all(lr == 1.0 for lr in lrs)


def test_stops_once_cut_by_more_than_2000x() -> None:
    sched = PlateauSchedule(lr0=1.0, patience=1, cooldown=0, stop_patience=10_000)
    lrs, stopped = _drive(sched, [0.5] + [0.4] * 100)
    assert lrs[-1] < 1 / 2000 <= lrs[-2]
    assert stopped == len(lrs)


def test_state_round_trip() -> None:
    a = PlateauSchedule(lr0=0.01)
    for acc in [0.1, 0.2, 0.2, 0.2]:
        a.end_epoch(acc)
    b = schedule_from_state("plateau", a.state_dict())
    for acc in [0.2] * 20:
        assert a.end_epoch(acc) == b.end_epoch(acc)
        assert a.lr == b.lr


def test_cosine_warmup_and_decay() -> None:
    c = CosineSchedule(lr0=1.0, total_steps=110, warmup_steps=10)
    assert c.lr_at(0) == pytest.approx(0.1) and c.lr_at(9) == pytest.approx(1.0)
    assert c.lr_at(60) == pytest.approx(0.5)
    assert c.lr_at(110) == pytest.approx(0.0, abs=1e-12)
    assert not c.end_epoch(0.0)
