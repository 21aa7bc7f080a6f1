"""The per-cell searcher: `CellSearcher` (one seeded Optuna study per cell, exactly N trials
each) and trial names / directories. Its scheduler twin is `raydistill.search.scheduler`; the
plan's order and --dry-run text are `raydistill.search.plan`.

A cell is family × depth × budget (`raydistill.search.spaces.load.Cell`). One Tuner runs every cell: the
searcher routes `suggest` / `on_trial_complete` by cell, and the scheduler compares a trial only
with the trials of its own cell (a plain ASHA would stop a large-budget cell's trial for being
worse than a small cell's).
"""

from __future__ import annotations

import json
import math
import pickle
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

from ray.tune.search import Searcher
from ray.tune.search.optuna import OptunaSearch

from raydistill.core.manifest import atomic_write_text
from raydistill.core.numbers import finite
from raydistill.search import allocation as al
from raydistill.search import spaces as sp
from raydistill.search.trainable import OBJECTIVE, objective


@dataclass
class _CellState:
    cell: sp.Cell
    space: sp.SearchSpace
    trials: int
    suggested: int = 0
    optuna: OptunaSearch | None = None  # None: nothing to sample (every value fixed)
    # Class-level defaults (dataclass fields), so searchers pickled before these existed load.
    ended: int = 0
    rows: tuple[dict, ...] = ()  # ended trials as best-trial-rule rows (allocation.record)
    scores: tuple[float, ...] = ()  # their val/acc the rule admits, best first
    started: bool = True  # its study exists (a warm-started cell's is made when it starts)
    frozen: bool = False  # its larger-budget successor started: it takes no more trials
    seeds: tuple[str, ...] = ()  # warm start: the smaller cell's trials it was seeded with
    note: str | None = None  # warm start: where it was seeded from, or why it started cold
    round_no: int = 0  # rounds begun
    round_end: int = 0  # trials handed out when its current round is complete

    def rounds_done(self) -> int:
        return self.round_no - (1 if self.ended < self.suggested else 0)

    def view(self) -> al.CellView:
        return al.CellView(self.cell.id, float(self.cell.budget), self.scores,
                           self.suggested, self.ended, self.frozen, self.cell.budget_kind)  # fmt: skip


class CellSearcher(Searcher):
    """One Optuna study per cell, cells interleaved; each cell's trial count by `allocate`
    (`raydistill.search.allocation`: "uniform", exactly its `trials`; "adaptive", `total` in
    rounds, moved to the cells in contention), with `warm_start` a cell seeded by the cell
    one budget smaller once that one finished."""

    def __init__(
        self,
        cells: Sequence[tuple[sp.Cell, sp.SearchSpace, int]],
        *,
        kind: str = "tpe",
        seed: int = 0,
        run_index: int = 0,
        warm: Mapping[str, tuple[list[dict], list[float]]] | None = None,
        allocate: str = "uniform",
        warm_start: bool = False,
        total: int | None = None,
        journal: str | None = None,
        data_keys: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__(metric=OBJECTIVE, mode="max")
        # the data's in_shape / num_classes: which width ratios can change a cell's widths
        self._data_keys = dict(data_keys or {})
        import optuna

        optuna.logging.set_verbosity(optuna.logging.WARNING)  # no line per study created
        self._kind, self._seed, self._run_index = kind, seed, run_index
        self._allocate, self._journal = allocate, journal
        self._total = int(total) if total else sum(int(n) for *_, n in cells)
        self._states: dict[str, _CellState] = {}
        self._trial_cell: dict[str, str] = {}
        self._configs: dict[str, dict[str, Any]] = {}  # trial id -> its sampled values
        self._pred = (al.predecessors((c.id, c.family, c.depth, c.budget, c.budget_kind) for c, _, _ in cells)
                      if warm_start else {})  # fmt: skip
        for cell, space, n in cells:
            state = self._states[cell.id] = _CellState(cell, space, int(n), started=False)
            if cell.id not in self._pred:
                self._start(state, *(warm or {}).get(cell.id, ([], [])))
        if allocate == "adaptive":
            al.quotas([s.view() for s in self._states.values()], self._total)  # ≥ 1 per cell

    def _start(self, state: _CellState, points: Sequence[dict], rewards: Sequence | None) -> None:
        """Make the cell's study: `points` with `rewards` are finished trials (--extend), with
        None trials to run first (a warm start across budgets)."""
        keys = getattr(self, "_data_keys", {})  # a searcher pickled before it had them: {}
        inert = sp.inert_ratios(state.space, state.cell, keys) if keys else frozenset()
        dists = sp.to_optuna(state.space, state.cell.depth, inert)
        points, rewards = _fit_points(dists, points, rewards)
        if dists:
            state.optuna = OptunaSearch(
                space=dists,
                metric=OBJECTIVE,
                mode="max",
                sampler=sp.make_sampler(
                    self._kind, sp.cell_seed(self._seed, state.cell.id, self._run_index)
                ),
                points_to_evaluate=points or None,
                evaluated_rewards=rewards or None,
            )
        state.started = True

    def _warm_from_smaller(self, state: _CellState) -> None:
        """Start a waiting cell seeded with its smaller cell's best configurations."""
        small = self._states[self._pred[state.cell.id]]
        small.frozen = True
        ids = al.best_trials(small.rows, al.warm_count(state.trials))
        if ids:
            state.seeds = tuple(ids)
            state.note = f"seeded from {small.cell.id} (trials {', '.join(ids)})"
        else:
            state.note = f"cold: {small.cell.id} ended with no eligible trial"
        self._start(state, [self._configs[t] for t in ids], None)

    def set_search_properties(
        self, metric: str | None, mode: str | None, config: dict, **spec: Any
    ) -> bool:
        return True  # the cells carry their own spaces; the Tuner's metric is for display

    def _quotas(self) -> dict[str, int]:
        if self._allocate == "adaptive":
            return al.quotas([s.view() for s in self._states.values()], self._total)
        return {cid: s.trials for cid, s in self._states.items()}

    def _rounds(self, state: _CellState, quota: Mapping[str, int]) -> int:
        if self._allocate != "adaptive":
            return max(state.trials, 1)
        return al.round_size(state.trials, quota[state.cell.id])

    def _slowest(self, quota: Mapping[str, int]) -> int | None:
        """Adaptive: the rounds completed by the slowest cell still running its quota."""
        if self._allocate != "adaptive":
            return None
        stopped = al.dominated([s.view() for s in self._states.values()])
        live = [
            s.rounds_done()
            for s in self._states.values()
            if s.started
            and not s.frozen
            and s.cell.id not in stopped
            and s.ended < quota[s.cell.id]
        ]
        return min(live, default=None)

    def _ready(self, state: _CellState, quota: Mapping[str, int], slowest: int | None) -> bool:
        caught_up = slowest is None or state.rounds_done() <= slowest
        if not al.ready(state.view(), quota[state.cell.id], state.round_end, caught_up):
            return False
        small = self._pred.get(state.cell.id)
        return (
            small is None or state.started or al.finished(self._states[small].view(), quota[small])
        )

    def suggest(self, trial_id: str) -> dict[str, Any] | str | None:
        quota = self._quotas()
        if sum(s.suggested for s in self._states.values()) >= sum(quota.values()):
            return Searcher.FINISHED
        slowest = self._slowest(quota)
        ready = [s for s in self._states.values() if self._ready(s, quota, slowest)]
        if not ready:
            return None  # a round or a smaller cell is still running: ask again later
        state = min(ready, key=lambda s: s.suggested)  # round robin over the cells
        if not state.started:
            self._warm_from_smaller(state)
        if state.suggested >= state.round_end:  # a new round
            state.round_no += 1
            state.round_end = state.suggested + self._rounds(state, quota)
        sampled = state.optuna.suggest(trial_id) if state.optuna is not None else {}
        if sampled is None:
            return None
        state.suggested += 1
        self._trial_cell[trial_id] = state.cell.id
        self._configs[trial_id] = dict(sampled)
        self._write_journal()
        cell, settings = state.cell, sp.settings(state.space, state.cell.depth, sampled)
        return {"cell": cell.id, "family": cell.family, "depth": cell.depth,
                "budget": cell.budget, "budget_kind": cell.budget_kind, **sampled,
                "settings": asdict(settings)}  # fmt: skip

    def on_trial_complete(
        self, trial_id: str, result: dict | None = None, error: bool = False
    ) -> None:
        state = self._states.get(self._trial_cell.get(trial_id, ""))
        if state is None:
            return
        state.ended += 1
        state.rows = (*state.rows, al.record(trial_id, result, error))
        state.scores = al.scores(state.rows)
        self._write_journal()
        if state.optuna is None:
            return
        if not error and result and result.get("status") == "running":
            # Stopped while still running: ASHA pruned it. Optuna records it as PRUNED (result
            # None, no error), never as a complete trial scored by its truncated run.
            state.optuna.on_trial_complete(trial_id, None, error=False)
            return
        value = None if error or not result else result.get(OBJECTIVE, objective(result))
        if value is not None and not math.isfinite(value):
            value = None
        state.optuna.on_trial_complete(
            trial_id,
            {OBJECTIVE: value} if value is not None else None,
            error=error or value is None,
        )

    def allocation(self) -> dict[str, Any]:
        """Each cell's trials, quota, estimates and warm-start note (DIR/allocation/)."""
        views = [s.view() for s in self._states.values()]
        quota, stopped, opt = self._quotas(), al.dominated(views), al.optimistic(views)
        cells = {}
        for v in views:
            st = self._states[v.id]
            state = (
                "stopped: dominated"
                if v.id in stopped and self._allocate == "adaptive"
                else "frozen"
                if st.frozen
                else "waiting"
                if not st.started
                else "open"
            )
            cells[v.id] = {
                "trials": v.given, "ended": v.ended, "quota": quota[v.id], "state": state,
                "best": finite(v.best), "optimistic": finite(opt[v.id]),
                "front": finite(al.front(views, v)), "warm_from": self._pred.get(v.id),
                "seeds": list(st.seeds), "note": st.note,
            }  # fmt: skip
        return {
            "allocate": self._allocate,
            "warm_start": bool(self._pred),
            "total": self._total,
            "cells": cells,
        }

    def _write_journal(self) -> None:
        if self._journal:
            atomic_write_text(self._journal, json.dumps(self.allocation(), indent=2) + "\n")

    def counts(self) -> dict[str, int]:
        """Suggestions made so far, per cell."""
        return {cid: s.suggested for cid, s in self._states.items()}

    # Tune snapshots searchers with pickle (as OptunaSearch itself does); this is search state,
    # never model weights (those are safetensors checkpoints).
    def save(self, checkpoint_path: str) -> None:
        with open(checkpoint_path, "wb") as f:
            pickle.dump(self.__dict__.copy(), f)

    def restore(self, checkpoint_path: str) -> None:
        with open(checkpoint_path, "rb") as f:
            self.__dict__.update(pickle.load(f))


def trial_dirname(trial: Any) -> str:
    """`<cell>_<trial_id>` with the cell id made path-friendly (cnn-d2_1M_ab12c_00003)."""
    return f"{str(trial.config.get('cell', 'trial')).replace('@', '_')}_{trial.trial_id}"


def trial_id_from_dirname(name: str, cell: str | None) -> str:
    """The trial id in a `trial_dirname` (the inverse; trial ids may contain "_")."""
    prefix = f"{str(cell or 'trial').replace('@', '_')}_"
    return name[len(prefix) :] if name.startswith(prefix) else name


def trial_name(trial: Any) -> str:
    """`<cell>/<trial_id>`: the trial's name in Tune's progress table."""
    return f"{trial.config.get('cell', 'trial')}/{trial.trial_id}"


def _fit_points(
    dists: Mapping[str, Any], points: Sequence[dict], rewards: Sequence[float] | None
) -> tuple[list[dict], list[float] | None]:
    """Warm-start points restricted to the space's sampled names; points that lack one (a
    search made before r0 was fixed has r0, and lacks nothing; a space that gained a key
    lacks it) are dropped with their rewards rather than failing the whole cell. `rewards`
    None: points to evaluate (kept None)."""
    paired = zip(points, rewards if rewards is not None else [None] * len(points), strict=True)
    kept = [({k: p[k] for k in dists}, r) for p, r in paired if set(dists) <= set(p)]
    return [p for p, _ in kept], [r for _, r in kept] if rewards is not None else None
