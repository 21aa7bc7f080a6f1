"""A search's plan before any trial: the cells' order (`longest_first`) and the --dry-run text
(`describe_plan`: cells, searched names, sample configs with their solved widths).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict
from typing import Any

from raydistill.search import spaces as sp
from raydistill.search.trainable import solve_trial
from raydistill.students import data_spec_keys
from raydistill.students.budget import solve_budget


def describe_plan(
    plans: Sequence[tuple[sp.Cell, sp.SearchSpace]],
    trials: int,
    splits: Any,
    *,
    seed: int = 0,
    samples: int = 3,
    searcher: str = "tpe",
) -> str:
    """The --dry-run text: cells, and sample configs with their solved widths and params."""
    lines = [
        f"{len(plans)} cells × {trials} trials = {len(plans) * trials} trials "
        f"(searcher {searcher}; data {getattr(splits, 'name', '?')})"
    ]
    for cell, space in plans:
        inert = sp.inert_ratios(space, cell, data_spec_keys(splits))
        names = list(sp.to_optuna(space, cell.depth, inert))
        fixed = f" (fixed: {', '.join(sorted(inert))}: no effect on the widths)" if inert else ""
        lines.append(
            f"cell {cell.id}: {space.source}; searched: {', '.join(names) or '(none)'}{fixed}"
        )
        seed_ = sp.cell_seed(seed, cell.id)
        samples_ = sp.sample_configs(space, cell.depth, samples, seed_, inert)
        for i, sampled in enumerate(samples_):
            config = {"family": cell.family, "depth": cell.depth, "budget": cell.budget,
                      "budget_kind": cell.budget_kind,
                      "settings": asdict(sp.settings(space, cell.depth, sampled))}  # fmt: skip
            sol = solve_trial(config, splits)
            shown = " ".join(f"{k}={_fmt(v)}" for k, v in sampled.items())
            lines.append(f"  sample {i + 1}: widths {sol.widths} params {sol.params:,} "
                         f"({100 * sol.share:.1f}% of {cell.budget_spec.label}) {shown}")  # fmt: skip
    return "\n".join(lines)


def _fmt(v: Any) -> str:
    return f"{v:.4g}" if isinstance(v, float) else str(v)


def longest_first(
    cells: Sequence[tuple[sp.Cell, sp.SearchSpace, int]], data_keys: Mapping[str, Any]
) -> list[tuple[sp.Cell, sp.SearchSpace, int]]:
    """The cells, costliest trial first (one image's forward multiply-adds at the cell's budget, equal
    width ratios unless the space fixes them; `data_keys`: `data_spec_keys` of the data).
    `CellSearcher`'s round robin then starts the longest trials first, so a run does not end on
    one long trial while the other workers idle (longest-processing-time-first scheduling)."""
    from raydistill.students.cost import count_macs

    def cost(item: tuple[sp.Cell, sp.SearchSpace, int]) -> int:
        cell, space = item[0], item[1]
        fixed = {k: p.value for k, p in space.spec.items() if not p.searched}
        ratios = None
        if not space.width_ratios.searched:
            ratios = [float(space.width_ratios.value)] * len(space.ratio_names(cell.depth))
        sol = solve_budget(cell.family, cell.depth, cell.budget_spec, ratios, **fixed, **data_keys)
        return count_macs(sol.spec)

    costs = [cost(c) for c in cells]
    return [cells[i] for i in sorted(range(len(cells)), key=lambda i: -costs[i])]
