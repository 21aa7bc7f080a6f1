"""What the trials table's statuses mean (their names: `vocab.Status`) and the one rule for
"the best trials" (no Ray, no W&B).

Every table of trials (`trials.parquet` of a search or a study) has one row per trial with at
least `cell`, `status`, `pruned`, `val/acc` and `test/acc`. Statuses:

| status | meaning |
| --- | --- |
| finished | ran its epochs |
| stopped | ended early: by its own schedule (plateau rule), or pruned by ASHA (`pruned` True) |
| diverged | its loss went non-finite (lr too high): a failed configuration |
| error | the trial raised |
| running | has not ended (an interrupted search) |

The best-trial rule (`eligible` / `rank`): a trial counts when it finished or was stopped by
its own schedule, was not pruned by ASHA (a pruned trial never trained to its end and has no
test accuracy), and has both a validation and a test accuracy. Among those, the order is
validation accuracy, best first (ties by trial id, so the order is stable). Search
(`best/<cell>.json`, the summary), the report (Table 2's top-k) and export all use it.
"""

from __future__ import annotations

from collections.abc import Sequence

import pandas as pd

DONE: tuple[str, ...] = ("finished", "stopped")  # ended normally; pruned ones are excluded below


def eligible(df: pd.DataFrame) -> pd.Series:
    """Boolean mask of the trials the best-trial rule may pick (see the module docstring)."""
    ok = df["status"].isin(DONE) & df["val/acc"].notna() & df["test/acc"].notna()
    if "pruned" in df:
        ok &= ~df["pruned"].fillna(False).astype(bool)
    return ok


def rank(df: pd.DataFrame, by: Sequence[str] = ("cell",)) -> pd.DataFrame:
    """The eligible trials, best validation accuracy first within each group of `by`."""
    keys = list(by)
    done = df[eligible(df)]
    return done.sort_values(
        [*keys, "val/acc", "trial_id"], ascending=[*([True] * len(keys)), False, True]
    )


def best(df: pd.DataFrame, by: Sequence[str] = ("cell",)) -> pd.DataFrame:
    """The best trial of each group of `by` (one row per group that has an eligible trial)."""
    return rank(df, by).groupby(list(by), sort=True).head(1)
