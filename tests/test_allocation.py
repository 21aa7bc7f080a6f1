"""Adaptive allocation and warm starts across budgets (`raydistill.search.allocation`, driven by
`CellSearcher`): on hand-built views and hand-built sequences of results, no Ray."""

from __future__ import annotations

import json
import math

import pytest

from raydistill.core.errors import UserError
from raydistill.search import CellSearcher
from raydistill.search import allocation as al
from raydistill.search import spaces as sp


def view(cid: str, size: float, scores=(), given=None, ended=None, frozen=False) -> al.CellView:
    n = len(scores) if given is None else given
    return al.CellView(cid, size, tuple(scores), n, n if ended is None else ended, frozen)


def test_dominated_cells_keep_what_they_ran_and_the_rest_goes_to_the_front() -> None:
    cells = [
        view("mlp-d1@10k", 1e4, [0.40]),
        view("mlp-d2@10k", 1e4, [0.41]),
        view("cnn-d1@10k", 1e4, [0.60]),
        view("cnn-d2@10k", 1e4, [0.62]),
    ]
    # One trial each: no measured spread yet, so the prior (5 points, 2 σ): MLPs 20 points under.
    assert al.dominated(cells) == {"mlp-d1@10k", "mlp-d2@10k"}
    q = al.quotas(cells, total=12)
    assert q == {"mlp-d1@10k": 1, "mlp-d2@10k": 1, "cnn-d1@10k": 5, "cnn-d2@10k": 5}
    # cnn-d1 is 2 points under cnn-d2, well within the prior's reach: still in contention.
    assert "cnn-d1@10k" not in al.dominated(cells)


def test_measured_spread_replaces_the_prior() -> None:
    # Both CNN cells have two scores (std 0.01): the floor is the median of measured stds, so a
    # cell 3 points under the front (optimistic 0.57 + 2·0.01 = 0.59 < 0.60 +) is stopped.
    cells = [view("a@1", 1.0, [0.56, 0.57]), view("b@1", 1.0, [0.61, 0.60])]
    opt = al.optimistic(cells)
    assert opt["a@1"] == pytest.approx(0.57 + 2 * 0.00707, abs=1e-4)
    assert al.dominated(cells) == {"a@1"}
    # A wide spread keeps a cell alive: the same best with scores 0.40 / 0.57.
    wide = [view("a@1", 1.0, [0.40, 0.57]), view("b@1", 1.0, [0.61, 0.60])]
    assert al.dominated(wide) == set()


def test_the_front_is_accuracy_against_size() -> None:
    # A big cell worse than a smaller one is off the front; a small cell is never judged
    # against a bigger one, however good that one is.
    cells = [
        view("cnn@10k", 1e4, [0.60]),
        view("mlp@30k", 3e4, [0.45]),
        view("mlp@10k", 1e4, [0.50]),
        view("cnn@30k", 3e4, [0.90]),
    ]
    assert al.dominated(cells) == {"mlp@30k"}
    assert al.front(cells, cells[2]) == 0.60 and math.isinf(al.front([cells[0]], cells[0]))


def test_every_cell_gets_one_trial_before_any_gets_another() -> None:
    cells = [view("a@1", 1.0, [0.9]), view("b@1", 1.0, [0.5]), view("c@2", 2.0), view("d@2", 2.0)]
    # 60 % of 4 × 2: 4 trials, the one-per-cell minimum: the unrun cells get theirs.
    assert al.quotas(cells, 4) == {"a@1": 1, "b@1": 1, "c@2": 1, "d@2": 1}
    q = al.quotas(cells, 7)  # b is stopped; 4 left for a, c, d: unrun cells first (inf reach)
    assert q["b@1"] == 1 and sum(q.values()) == 7 and min(q.values()) >= 1
    with pytest.raises(UserError, match="cannot give each of 4 cells one"):
        al.quotas(cells, 3)


def test_rounds_and_predecessors() -> None:
    assert [al.round_size(n) for n in (1, 2, 3, 4, 16)] == [1, 1, 1, 2, 6]
    assert al.round_size(2, quota=5) == 2  # a cell given the stopped cells' trials fills workers
    c = view("a@1", 1.0, [0.5], given=2, ended=1)
    assert not al.ready(c, quota=5, round_end=2)  # its round (trials 1-2) has not ended
    assert al.ready(view("a@1", 1.0, [0.5], given=1, ended=0), quota=5, round_end=2)
    ahead = view("a@1", 1.0, [0.5], given=1, ended=1)  # its round 1 done; another cell's not
    assert not al.ready(ahead, quota=5, round_end=1, caught_up=False)
    assert al.ready(ahead, quota=5, round_end=1) and not al.ready(ahead, quota=1, round_end=1)
    cells = [("cnn-d1@30k", "cnn", 1, 3e4), ("cnn-d1@10k", "cnn", 1, 1e4),
             ("cnn-d1@100k", "cnn", 1, 1e5), ("mlp-d1@30k", "mlp", 1, 3e4)]  # fmt: skip
    assert al.predecessors(cells) == {"cnn-d1@30k": "cnn-d1@10k", "cnn-d1@100k": "cnn-d1@30k"}


SPACE = {
    "family": "mlp",
    "depths": [1],
    "train": {
        "lr": {"log_float": [0.001, 0.1]},
        "momentum": {"float": [0.8, 0.95]},
        "max_epochs": 1,
    },
}


def plans(budgets, families=("mlp", "cnn")):
    spaces = [sp.parse_space({**SPACE, "family": f}) for f in families]
    return sp.plan_cells(spaces, budgets, depths=[1])


def drive(searcher: CellSearcher, score, limit: int = 200) -> list[tuple[str, str, dict]]:
    """Run a searcher to FINISHED, one trial in flight at a time; `score(config)` → val/acc."""
    order, pending = [], []
    for i in range(limit):
        config = searcher.suggest(f"t{i:03d}")
        if config == "FINISHED":
            break
        if config is None:  # nothing ready: end the oldest running trial
            tid, cfg = pending.pop(0)
            acc = score(cfg)
            result = {"status": "finished", "best/val/acc": acc, "test/acc": acc, "objective": acc}
            searcher.on_trial_complete(tid, None if acc is None else result, error=acc is None)
            continue
        order.append((f"t{i:03d}", config["cell"], config))
        pending.append((f"t{i:03d}", config))
        if len(pending) >= 2:  # two trials at a time (2 CPUs)
            tid, cfg = pending.pop(0)
            acc = score(cfg)
            result = {"status": "finished", "best/val/acc": acc, "test/acc": acc, "objective": acc}
            searcher.on_trial_complete(tid, None if acc is None else result, error=acc is None)
    for tid, cfg in pending:
        acc = score(cfg)
        searcher.on_trial_complete(
            tid, {"status": "finished", "best/val/acc": acc, "test/acc": acc, "objective": acc}
        )
    return order


def family_score(cfg: dict) -> float:
    """The MLP family 25 points under the CNN, a little lr dependence, size helps a bit."""
    base = 0.35 if cfg["family"] == "mlp" else 0.60
    return base + 0.02 * math.log10(cfg["budget"] / 1e4) - 0.01 * abs(math.log10(cfg["lr"] / 0.01))


def test_searcher_stops_the_dominated_family_and_moves_its_trials(tmp_path) -> None:
    cells = [(c, s, 4) for c, s in plans([10_000])]
    journal = tmp_path / "allocation.json"
    searcher = CellSearcher(cells, allocate="adaptive", seed=1, journal=str(journal))
    order = drive(searcher, family_score)
    counts = searcher.counts()
    assert sum(counts.values()) == 8  # the same total as uniform: 4 per cell
    assert counts == {"mlp-d1@10k": 2, "cnn-d1@10k": 6}, counts  # its 2nd round was in flight
    record = json.loads(journal.read_text())
    assert record["cells"]["mlp-d1@10k"]["state"] == "stopped: dominated"
    assert record["cells"]["cnn-d1@10k"]["trials"] == 6 and record["total"] == 8
    assert [c for _, c, _ in order[:2]] == ["mlp-d1@10k", "cnn-d1@10k"]  # each got its first
    uniform = CellSearcher(cells, allocate="uniform", seed=1)
    drive(uniform, family_score)
    assert uniform.counts() == {"mlp-d1@10k": 4, "cnn-d1@10k": 4}


def test_warm_start_seeds_the_larger_cell_with_the_smaller_ones_best(tmp_path) -> None:
    cells = [(c, s, 3) for c, s in plans([10_000, 30_000])]
    journal = tmp_path / "allocation.json"
    searcher = CellSearcher(cells, warm_start=True, seed=2, journal=str(journal))
    scored: dict[str, float] = {}

    def score(cfg: dict) -> float:
        scored[json.dumps({k: cfg[k] for k in ("lr", "momentum")})] = acc = family_score(cfg)
        return acc

    order = drive(searcher, score)
    assert searcher.counts() == {c.id: 3 for c, _, _ in cells}
    for fam in ("mlp", "cnn"):
        small = [(t, cfg) for t, c, cfg in order if c == f"{fam}-d1@10k"]
        big = [(t, cfg) for t, c, cfg in order if c == f"{fam}-d1@30k"]
        # The 30k cell started after every 10k trial of its row had been handed out and ended.
        assert max(t for t, _ in small) < min(t for t, _ in big)
        best_small = max(small, key=lambda tc: family_score(tc[1]))
        first_big = big[0][1]
        assert {k: first_big[k] for k in ("lr", "momentum")} == {
            k: best_small[1][k] for k in ("lr", "momentum")
        }  # the same sampled values: widths are re-solved from them at 30k by the trainable
        assert (
            first_big["budget"] == 30_000
            and first_big["settings"]["ratios"] == (best_small[1]["settings"]["ratios"])
        )
        note = json.loads(journal.read_text())["cells"][f"{fam}-d1@30k"]
        assert note["seeds"] == [best_small[0]] and note["warm_from"] == f"{fam}-d1@10k"
        assert note["note"].startswith(f"seeded from {fam}-d1@10k")
        assert len({json.dumps({k: c[k] for k in ("lr", "momentum")}) for _, c in big}) == 3


def test_a_failed_smaller_cell_leaves_the_larger_one_cold(tmp_path) -> None:
    cells = [(c, s, 2) for c, s in plans([10_000, 30_000], families=("mlp",))]
    journal = tmp_path / "allocation.json"
    searcher = CellSearcher(cells, warm_start=True, seed=3, journal=str(journal))
    order = drive(searcher, lambda cfg: None if cfg["budget"] == 10_000 else 0.5)  # 10k errors
    assert [c for _, c, _ in order] == ["mlp-d1@10k"] * 2 + ["mlp-d1@30k"] * 2
    note = json.loads(journal.read_text())["cells"]["mlp-d1@30k"]
    assert note["seeds"] == [] and note["note"] == "cold: mlp-d1@10k ended with no eligible trial"


# ---------------------------------------------------------------- real searches (local Ray)
def _space(family: str, lr: tuple[float, float], epochs: int) -> dict:
    return {
        "family": family,
        "depths": [1],
        "train": {
            "lr": {"log_float": list(lr)},
            "momentum": 0.9,
            "batch_size": 64,
            "max_epochs": epochs,
            "schedule": "cosine",
            "augment": "none",
        },
    }


@pytest.fixture(scope="module")
def sep_splits():
    """synthetic-sep at 2×4×4: a CNN reaches ~85 % in 6 epochs, an MLP at lr ≤ 6e-4 in 2
    epochs stays near chance (measured: 79 % at lr 0.05 over 10 epochs)."""
    from raydistill.data import make_synthetic_sep

    return make_synthetic_sep(n_train=4000, n_val=400, n_test=400, seed=0, size=4, channels=2)


def _search(tmp_path, name: str, splits, **kw):
    from raydistill.search import SearchSettings, load_trials, run_search

    spaces = [_space("mlp", (3e-4, 6e-4), 2), _space("cnn", (0.02, 0.05), 6)]
    settings = SearchSettings(
        spaces=spaces,
        budgets=kw.pop("budgets", [5000]),
        trials=3,
        out=str(tmp_path / name),
        device="cpu",
        wandb="off",
        **kw,
    )
    out = run_search(settings, data=splits, verbose=0)
    return out, load_trials(out)


@pytest.mark.slow
def test_adaptive_search_moves_trials_from_the_dominated_family(ray_local, sep_splits, tmp_path):
    from raydistill.core import results

    _, uniform = _search(tmp_path, "uniform", sep_splits)
    out, adaptive = _search(tmp_path, "adaptive", sep_splits, allocate="adaptive")
    assert uniform.groupby("cell").size().to_dict() == {"cnn-d1@5k": 3, "mlp-d1@5k": 3}
    counts = adaptive.groupby("cell").size().to_dict()
    assert sum(counts.values()) == 6 and counts["mlp-d1@5k"] < 3 < counts["cnn-d1@5k"], counts
    winner = [results.best(t, by=("experiment",)).iloc[0] for t in (uniform, adaptive)]
    assert [w["cell"] for w in winner] == ["cnn-d1@5k", "cnn-d1@5k"]
    assert min(w["val/acc"] for w in winner) > 0.7  # the students learned (chance: 0.5)
    journal = json.loads((out / "allocation" / "adaptive.json").read_text())
    assert journal["cells"]["mlp-d1@5k"]["state"] == "stopped: dominated"


@pytest.mark.slow
def test_warm_started_cell_runs_the_smaller_cells_best_first(ray_local, sep_splits, tmp_path):
    from raydistill.core import results
    from raydistill.report import make_report

    out, df = _search(
        tmp_path, "warm", sep_splits, budgets=[4000, 8000], warm_start=True, depths=None
    )
    for fam in ("mlp", "cnn"):
        small = df[df["cell"] == f"{fam}-d1@4k"]
        big = df[df["cell"] == f"{fam}-d1@8k"].sort_values("started_at")
        assert big["started_at"].min() >= small["ended_at"].max()  # after the smaller cell
        best = results.best(small).iloc[0]  # the best-trial rule (ties by trial id)
        assert json.loads(big.iloc[0]["config"]) == json.loads(best["config"])
        assert big.iloc[0]["params"] > best["params"]  # widths re-solved at 8k
        note = json.loads((out / "allocation" / "warm.json").read_text())["cells"][f"{fam}-d1@8k"]
        assert note["seeds"] == [best["trial_id"]]
    md = make_report(out).markdown  # the report says which cells were seeded from where
    assert "| cnn-d1@8k | 3 | open |" in md
    assert f"seeded from cnn-d1@4k (trials {note['seeds'][0]})" in md


def test_a_cell_given_the_stopped_cells_trials_runs_them_side_by_side() -> None:
    searcher = CellSearcher([(c, s, 3) for c, s in plans([10_000])], allocate="adaptive")
    first = [searcher.suggest(t) for t in ("t0", "t1")]
    assert [c["cell"] for c in first] == ["mlp-d1@10k", "cnn-d1@10k"]
    for tid, acc in (("t0", 0.35), ("t1", 0.60)):
        searcher.on_trial_complete(tid, {"status": "finished", "best/val/acc": acc,
                                         "test/acc": acc})  # fmt: skip
    # mlp is stopped (25 points under); cnn's quota is 5: rounds of 2, both at once.
    nxt = [searcher.suggest(t) for t in ("t2", "t3", "t4")]
    assert [c["cell"] for c in nxt[:2]] == ["cnn-d1@10k"] * 2 and nxt[2] is None
