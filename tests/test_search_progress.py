"""The search's progress bar: trials done / total and the best validation accuracy so far."""

from __future__ import annotations

import math

from raydistill.search.progress import SearchProgress


def test_the_bar_counts_ended_trials_and_keeps_the_best(capsys) -> None:
    cb = SearchProgress(3, "tiny-search")
    cb.setup()
    cb.on_trial_result(0, [], None, {"val/acc": 0.41})
    cb.on_trial_result(1, [], None, {"val/acc": 0.37})  # lower: the best stays
    cb.on_trial_result(2, [], None, {"val/acc": math.nan})  # a diverged report is not a best
    cb.on_trial_complete(2, [], None)
    cb.on_trial_error(3, [], None)  # an errored trial has ended too
    assert cb.best == 0.41 and cb.bar.n == 2 and cb.bar.total == 3
    cb.on_experiment_end([])
    err = capsys.readouterr().err
    assert "tiny-search" in err and "2/3" in err and "best val 41.00%" in err
