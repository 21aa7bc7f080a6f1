"""Search spaces: every shipped YAML and every registered student family, validation errors, the
translation to Optuna, cells. No Ray."""

from __future__ import annotations

import math

import optuna
import pytest
import yaml

from raydistill.core.errors import UserError
from raydistill.data import make_synthetic_sep
from raydistill.search import spaces as sp
from raydistill.students import families, get_family
from raydistill.students.budget import count_params, min_params, solve_budget
from raydistill.training.config import TrainConfig
from raydistill.training.loop import train_student

SHIPPED = sp.shipped_spaces()
TINY = make_synthetic_sep(32, 8, 8, seed=0)  # 3×32×32, 2 classes
STUDENTS = sorted(families("student"))


def test_shipped_spaces_exist():
    assert set(SHIPPED) >= {"mlp", "cnn", "allconv"}


@pytest.mark.parametrize("family", STUDENTS)
def test_every_student_family_has_a_space(family):
    """A family is tested the moment it registers: it must ship search_spaces/<family>.yaml."""
    assert family in SHIPPED, f"student family {family!r} has no search_spaces/{family}.yaml"
    assert sp.load_space(SHIPPED[family]).family == family


@pytest.mark.parametrize("name", sorted(SHIPPED))
def test_shipped_space_is_valid_and_every_depth_trains(name):
    space = sp.load_space(SHIPPED[name])
    fam = get_family(space.family)
    assert name == space.family and set(space.depths) <= set(fam.depths)
    # The paper's student search ranges (Urban et al., 2017).
    assert space.train["lr"] == sp.Param("log_float", (0.0013, 0.016))
    assert space.train["momentum"] == sp.Param("log_float", (0.68, 0.97))
    assert space.train["input_scale"] == sp.Param("float", (0.8, 1.25))
    assert space.train["init_scale"] == sp.Param("float", (0.4, 2.0))
    # Width ratios searched over [0, 1], or pinned (every slot in the family's proportions:
    # MobileNetV2's single width multiplier, which the budget solves).
    pinned = not space.width_ratios.searched
    assert space.width_ratios == sp.Param("float", (0.0, 1.0)) or pinned
    # Dropout is searched (Bayesian search over lr, dropout and width), or fixed by the family.
    dropout = space.spec["dropout"]
    assert dropout.kind in ("fixed", "float") and min(dropout.candidates()) >= 0
    assert max(dropout.candidates()) <= 0.5
    for depth in space.depths:
        dists = sp.to_optuna(space, depth)
        # Slot 0's ratio is fixed: d width slots search d − 1 ratios, none of them redundant.
        ratios = [k for k in dists if k.startswith("r") and k[1:].isdigit()]
        assert ratios == ([] if pinned else [f"r{i}" for i in range(1, fam.width_slots(depth))])
        for sampled in sp.sample_configs(space, depth, 2, seed=depth):
            s = sp.settings(space, depth, sampled)
            TrainConfig.from_dict(s.train)  # a valid training config
            sol = solve_budget(space.family, depth, 300_000, s.ratios, **s.spec)
            assert sol.params == count_params(sol.spec) <= 300_000
        # The last sampled config trains: one epoch on a few images, finite loss throughout.
        cfg = {**s.train, "loss": "hard", "max_epochs": 1, "batch_size": 32, "device": "cpu"}
        budget = max(10_000, min_params(space.family, depth))  # small: adder nets train slowly
        small = solve_budget(space.family, depth, budget, s.ratios, **s.spec).spec
        result = train_student(small, TINY, None, TrainConfig.from_dict(cfg))
        assert result.status == "finished" and result.epochs == 1, (name, depth)
        assert math.isfinite(result.history[-1]["train/loss"]), (name, depth)


def test_yaml_shipped_file_is_data_only():
    text = SHIPPED["cnn"].read_text()
    assert "!" not in "".join(line.split("#")[0] for line in text.splitlines())
    assert yaml.safe_load(text)["family"] == "cnn"


def _write(tmp_path, text, name="space.yaml"):
    path = tmp_path / name
    path.write_text(text)
    return path


BASE = "family: cnn\ndepths: [1, 2]\n"


@pytest.mark.parametrize(
    ("body", "needle"),
    [
        ("family: cnn\nbogus: 1\n", "bogus: unknown key; valid: family, description"),
        (BASE + "train: {lrr: 0.1}\n", "train.lrr: unknown key; valid: lr, momentum"),
        (BASE + "spec: {kernel: 3}\n", "spec.kernel: unknown key; valid: dropout"),
        (BASE + "train: {lr: {log_float: [0.1, 0.01]}}\n", "lo > hi"),
        (BASE + "train: {lr: {log_float: [0.0, 0.01]}}\n", "must be > 0"),
        (
            BASE + "train: {loss: {choice: []}}\n",
            "train.loss.choice=[] is invalid: List should have at least 1 item",
        ),
        (
            BASE + "train: {lr: {uniform: [0.1, 0.2]}}\n",
            "train.lr.uniform: unknown key; valid: int, log_int, float, log_float, choice",
        ),
        (
            BASE + "train: {lr: {float: [0.1]}}\n",
            "train.lr.float=[0.1] is invalid: List should have at least 2 items",
        ),
        (BASE + "train: {batch_size: {float: [16, 64]}}\n", "takes integers"),
        (BASE + "train: {lr: fast}\n", "train.lr='fast' is invalid: expected a float like 0.005"),
        (BASE + "train: {nesterov: 1}\n", "train.nesterov=1 is invalid: expected a bool like True"),
        (BASE + "train: {loss: {choice: [l2_logits, l3]}}\n", "train.loss='l3'"),
        (BASE + "train: {seed: 3}\n", "--seed"),
        (BASE + "spec: {widths: [1, 2, 3]}\n", "budget solver"),
        (BASE + "spec: {dropout: 2.0}\n", "spec.dropout=2.0"),
        (BASE + "width_ratios: {float: [0, 2]}\n", "outside [0, 1]"),
        ("family: cnn\ndepths: [7]\n", "no depth 7"),
        ("family: resnet_nope\n", "unknown family"),
        ("depths: [1]\n", "family: Field required; valid: "),
        ("- 1\n- 2\n", "must be a mapping"),
        (BASE + "train: !!python/object:os.system {lr: 1}\n", "YAML tags are not allowed"),
        (BASE + "train: {lr: !!float 0.1}\n", "YAML tags are not allowed"),
        (BASE + "train: {lr: [0.1, 0.2\n", "invalid YAML"),
    ],
)
def test_invalid_space_is_one_line_user_error(tmp_path, body, needle):
    path = _write(tmp_path, body)
    with pytest.raises(UserError) as err:
        sp.load_space(path)
    msg = str(err.value)
    assert needle in msg and str(path) in msg and "\n" not in msg


def test_fixed_values_choices_and_int_ranges(tmp_path):
    path = _write(
        tmp_path,
        BASE + "width_ratios: 0.5\nspec: {dropout: {float: [0, 0.5]}}\n"
        "train: {lr: 0.01, batch_size: {log_int: [16, 128]}, loss: {choice: [l2_logits, kd]},"
        " kd_temperature: {float: [2, 8]}}\n",
    )
    space = sp.load_space(path)
    dists = sp.to_optuna(space, 2)
    assert set(dists) == {"dropout", "batch_size", "loss", "kd_temperature"}  # ratios fixed
    assert dists["batch_size"] == optuna.distributions.IntDistribution(16, 128, log=True)
    assert dists["loss"] == optuna.distributions.CategoricalDistribution(["l2_logits", "kd"])
    s = sp.settings(
        space, 2, {"dropout": 0.25, "batch_size": 32, "loss": "kd", "kd_temperature": 3.0}
    )
    assert s.ratios == [0.5, 0.5, 0.5] and s.spec == {"dropout": 0.25}
    assert s.train == {"lr": 0.01, "batch_size": 32, "loss": "kd", "kd_temperature": 3.0}


def test_to_optuna_translates_every_primitive():
    train = {
        "lr": {"log_float": [0.001, 0.1]},
        "momentum": {"float": [0.5, 0.9]},
        "max_epochs": {"int": [2, 5]},
    }
    space = sp.parse_space({"family": "mlp", "depths": [3], "train": train})
    d = sp.to_optuna(space, 3)
    assert list(d) == ["r1", "r2", "lr", "momentum", "max_epochs"]
    assert d["lr"] == optuna.distributions.FloatDistribution(0.001, 0.1, log=True)
    assert d["momentum"] == optuna.distributions.FloatDistribution(0.5, 0.9)
    assert d["max_epochs"] == optuna.distributions.IntDistribution(2, 5)
    assert d["r1"] == optuna.distributions.FloatDistribution(0.0, 1.0)
    samples = sp.sample_configs(space, 3, 20, seed=1)
    assert samples == sp.sample_configs(space, 3, 20, seed=1)  # seeded
    assert samples != sp.sample_configs(space, 3, 20, seed=2)
    for x in samples:
        assert (
            0.001 <= x["lr"] <= 0.1
            and 2 <= x["max_epochs"] <= 5
            and isinstance(x["max_epochs"], int)
        )
    logs = [math.log10(x["lr"]) for x in sp.sample_configs(space, 3, 400, seed=3)]
    assert sum(v < -2 for v in logs) > 120  # log-uniform: half the draws below 0.01


def test_make_sampler_kinds():
    assert isinstance(sp.make_sampler("tpe", 0), optuna.samplers.TPESampler)
    assert isinstance(sp.make_sampler("gp", 0), optuna.samplers.GPSampler)
    assert isinstance(sp.make_sampler("random", 0), optuna.samplers.RandomSampler)
    with pytest.raises(UserError, match="unknown searcher 'bo'"):
        sp.make_sampler("bo", 0)


def test_plan_cells_ids_depths_and_budgets():
    cnn, mlp = sp.load_space("cnn"), sp.load_space("mlp")
    cells = sp.plan_cells([cnn, mlp], [20_000, 1_000_000], depths=[2, 5])
    assert [c.id for c, _ in cells] == [
        "cnn-d2@20k",
        "cnn-d2@1M",
        "mlp-d2@20k",
        "mlp-d2@1M",
        "mlp-d5@20k",
        "mlp-d5@1M",
    ]
    assert [c.id for c, _ in sp.plan_cells([cnn], [3_160_000])] == [
        f"cnn-d{d}@3.16M" for d in cnn.depths
    ]
    with pytest.raises(UserError, match="none of --depths"):
        sp.plan_cells([cnn], [20_000], depths=[5])
    kinds = sp.plan_cells([cnn], ["1M", "40M-macs", "2ms"], depths=[2])
    assert [c.id for c, _ in kinds] == ["cnn-d2@1M", "cnn-d2@40M-macs", "cnn-d2@2ms"]
    assert [c.budget_kind for c, _ in kinds] == ["params", "macs", "latency-cpu-b1"]
    with pytest.raises(UserError, match=r"cell cnn-d2@10k-macs: budget 10000 macs is below"):
        sp.plan_cells([cnn], ["10k-macs"], depths=[2])
    with pytest.raises(UserError, match=r"cell mlp-d1@100: budget 100 params is below"):
        sp.plan_cells([mlp], [100], depths=[1])
    with pytest.raises(UserError, match="in two spaces"):
        sp.plan_cells([cnn, cnn], [20_000])


def test_with_train_forces_values_and_keeps_record():
    hard = sp.load_space("cnn").with_train(loss="hard")
    assert hard.train["loss"] == sp.Param("fixed", "hard")
    assert "loss" not in sp.to_optuna(hard, 2)
    assert sp.parse_space(dict(hard.raw)).train["loss"] == sp.Param("fixed", "hard")


def test_cell_seed_is_stable_and_distinct():
    assert sp.cell_seed(0, "cnn-d2@1M") == sp.cell_seed(0, "cnn-d2@1M")
    assert len({sp.cell_seed(s, c, r) for s in (0, 1) for c in ("a", "b") for r in (0, 1)}) == 8


def test_adding_a_constant_to_every_ratio_gives_the_same_widths_so_r0_is_fixed():
    # Why slot 0 is not searched: the solver's common scale absorbs a shift of every ratio.
    a = solve_budget("cnn", 3, 100_000, [0.2, 0.5, 0.3, 0.6])
    b = solve_budget("cnn", 3, 100_000, [0.4, 0.7, 0.5, 0.8])
    assert a.widths == b.widths
    space = sp.parse_space({"family": "cnn", "depths": [3]})
    s = sp.settings(space, 3, {"r1": 0.1, "r2": 0.9, "r3": 0.4})
    assert s.ratios == [sp.FIRST_RATIO, 0.1, 0.9, 0.4]


CIFAR_KEYS = {"in_shape": [3, 32, 32], "num_classes": 10}


def test_a_width_ratio_that_cannot_change_the_widths_is_not_searched() -> None:
    """mlp-d1 at 10k: the bottleneck's 3,073-parameter units keep it 3 wide whatever r1 is
    (the issue's [3, 55] in every sample); at 300k r1 moves the widths and is searched."""
    from raydistill.search.cells import CellSearcher

    space = sp.load_space("mlp")
    tight, roomy = sp.Cell("mlp", 1, 10_000), sp.Cell("mlp", 1, 300_000)
    assert sp.inert_ratios(space, tight, CIFAR_KEYS) == {"r1"}
    assert sp.inert_ratios(space, roomy, CIFAR_KEYS) == frozenset()
    solved = {tuple(solve_budget("mlp", 1, 10_000, [sp.FIRST_RATIO, r / 10], **CIFAR_KEYS).widths)
              for r in range(11)}  # fmt: skip
    assert solved == {(3, 55)}
    searcher = CellSearcher([(tight, space, 2), (roomy, space, 2)], data_keys=CIFAR_KEYS)
    configs = [searcher.suggest(f"t{i}") for i in range(4)]
    by_cell = {c["cell"]: c["settings"]["ratios"] for c in configs}
    sampled = {c["cell"]: set(c) for c in configs}
    assert "r1" not in sampled[tight.id] and "r1" in sampled[roomy.id], sampled
    assert by_cell[tight.id] == [sp.FIRST_RATIO, 0.5]  # the range's middle: any value is the same


@pytest.mark.parametrize("name", sorted(sp.shipped_spaces()))
def test_inert_ratios_are_inert_at_random_values(name: str) -> None:
    """For every shipped space: varying only the ratios found inert never moves the widths."""
    import random

    space = sp.load_space(name)
    rng = random.Random(name)
    for depth in space.depths:
        for budget in (10_000, 300_000):
            cell = sp.Cell(space.family, depth, budget)
            if budget < min_params(space.family, depth, **CIFAR_KEYS):
                continue
            names = space.ratio_names(depth)[1:]
            inert = sp.inert_ratios(space, cell, CIFAR_KEYS)
            others = {n: rng.random() for n in names if n not in inert}
            seen = set()
            for _ in range(4):
                ratios = [others.get(n, rng.random()) for n in names]
                spec = {k: (p.candidates()[0] if p.searched else p.value)
                        for k, p in space.spec.items()}  # fmt: skip
                sol = solve_budget(space.family, depth, budget, [sp.FIRST_RATIO, *ratios],
                                   **spec, **CIFAR_KEYS)  # fmt: skip
                seen.add(tuple(sol.widths))
            assert len(seen) == 1, (cell.id, inert, seen)  # only inert ratios varied
