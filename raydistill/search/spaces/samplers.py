"""The one translation of a search space's primitives into sampler distributions (Optuna), the
samplers behind `--searcher`, and the `--dry-run` preview samples. Ray Tune's searchers (through
OptunaSearch), `--dry-run` and the searcher benchmark all go through `to_optuna`. No Ray here;
Optuna is imported on use.
"""

from __future__ import annotations

from collections.abc import Collection
from typing import Any

from raydistill.core.errors import UserError
from raydistill.core.vocab import SEARCHERS
from raydistill.search.spaces.schema import Param, SearchSpace


def to_optuna(
    space: SearchSpace, depth: int, inert: Collection[str] = frozenset()
) -> dict[str, Any]:
    """The sampled entries at `depth` as Optuna distributions (the one translation), but the
    `inert` ones (width ratios that cannot change a cell's widths: `load.inert_ratios`)."""
    import optuna.distributions as od

    def dist(p: Param) -> od.BaseDistribution:
        if p.kind == "choice":
            return od.CategoricalDistribution(list(p.value))
        lo, hi = p.value
        if p.kind in ("int", "log_int"):
            return od.IntDistribution(lo, hi, log=p.kind == "log_int")
        return od.FloatDistribution(lo, hi, log=p.kind == "log_float")

    return {name: dist(p) for name, p in space.searched(depth).items() if name not in inert}


# Random trials before the model-based samplers take over. Optuna's default (10) spends most of
# a cell's budget at the paper's scale (16–32 trials per cell) on random draws.
STARTUP_TRIALS = 6


def make_sampler(kind: str, seed: int) -> Any:
    """The Optuna sampler behind `--searcher`: TPE (default), GP, or random (the baseline).

    TPE is multivariate (lr and momentum interact) with the constant liar, so concurrent trials
    of one cell do not all land on the same point.
    """
    import optuna

    if kind == "tpe":
        return optuna.samplers.TPESampler(
            seed=seed, n_startup_trials=STARTUP_TRIALS, multivariate=True, constant_liar=True
        )
    if kind == "gp":
        return optuna.samplers.GPSampler(seed=seed, n_startup_trials=STARTUP_TRIALS)
    if kind == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    raise UserError(f"unknown searcher {kind!r}; valid: {', '.join(SEARCHERS)}")


def sample_configs(
    space: SearchSpace, depth: int, n: int, seed: int = 0, inert: Collection[str] = frozenset()
) -> list[dict[str, Any]]:
    """`n` random samples of the space at `depth` (the --dry-run preview), via `to_optuna`."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    dists = to_optuna(space, depth, inert)
    study = optuna.create_study(direction="maximize", sampler=make_sampler("random", seed))
    return [study.ask(fixed_distributions=dists).params for _ in range(n)]
