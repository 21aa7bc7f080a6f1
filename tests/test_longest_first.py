"""Work ordered longest first (issue 26.3): the search's cells by a trial's compute, the seed
repeats by the search's measured seconds per epoch, so the last tasks to start are short ones."""

from __future__ import annotations

import math

import pandas as pd

from raydistill.search import spaces as sp
from raydistill.search.plan import longest_first as cells_longest_first
from raydistill.search.spaces.load import load_space
from raydistill.students.cost import count_macs
from raydistill.study.repeats import longest_first, repeat_jobs

CIFAR = {"in_shape": [3, 32, 32], "num_classes": 10}


def test_count_macs_counts_every_multiply_add_of_a_hand_computed_cnn() -> None:
    spec = {"family": "cnn", "depth": 2, "widths": [4, 5, 6], **CIFAR}
    conv1 = 4 * 32 * 32 * (3 * 5 * 5)  # 'same' 5x5 conv, 4 maps of 32x32
    conv2 = 5 * 16 * 16 * (4 * 5 * 5)  # after a 2x2 max-pool
    fc = 6 * (5 * 8 * 8) + 10 * 6  # flattened 5x8x8 -> 6 ReLU units -> 10 logits
    assert count_macs(spec) == conv1 + conv2 + fc
    mlp = {"family": "mlp", "depth": 2, "widths": [7, 8], **CIFAR}
    assert count_macs(mlp) == 7 * 3072 + 8 * 7 + 10 * 8


def test_the_costliest_cells_are_searched_first() -> None:
    cells = []
    for name in ("mlp", "cnn"):
        space = load_space(name).with_overrides(spec={"dropout": 0.0}, width_ratios=0.5)
        space = space.with_depths([1, 2, 3])
        cells += [(c, s, 3) for c, s in sp.plan_cells([space], [10_000, 30_000], None)]
    order = [c.id for c, _, _ in cells_longest_first(cells, CIFAR)]
    assert sorted(order) == sorted(c.id for c, _, _ in cells)
    assert order[:2] == ["cnn-d3@30k", "cnn-d2@30k"]  # conv layers at full resolution cost most
    assert {o.split("-")[0] for o in order[:6]} == {"cnn"}  # every CNN before any MLP
    assert order.index("cnn-d3@30k") < order.index("cnn-d3@10k")


def test_seed_repeats_start_longest_first_and_unmeasured_ones_before_those() -> None:
    trials = pd.DataFrame([
        {"cell": c, "row": c.split("@")[0], "family": c.split("-")[0], "depth": 1,
         "budget": 10_000, "twin": False, "trial_id": c, "status": "finished", "pruned": False,
         "val/acc": 0.5, "test/acc": 0.5, "spec": "{}", "train": "{}", "wall_s": wall,
         "epochs": 3}
        for c, wall in (("mlp-d1@10k", 30.0), ("cnn-d3@10k", 300.0), ("cnn-d1@10k", None))
    ])  # fmt: skip
    jobs = repeat_jobs(trials, seeds=2)
    epoch_s = {j["trial_id"]: j["epoch_s"] for j in jobs}
    assert epoch_s["cnn-d3@10k"] == 100.0 and epoch_s["mlp-d1@10k"] == 10.0
    assert math.isinf(epoch_s["cnn-d1@10k"])  # no measurement: run it first, to be safe
    started = [jobs[i]["trial_id"] for i in longest_first(jobs)]
    assert started == ["cnn-d1@10k"] * 2 + ["cnn-d3@10k"] * 2 + ["mlp-d1@10k"] * 2
