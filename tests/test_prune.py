"""Prune-to-budget: exact budgets for every prunable family, the weakest channels go first,
fine-tuning on a transfer set, the trials-table row, and one-line errors that write nothing."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import pytest
import torch
from safetensors.torch import save

from raydistill.core.errors import UserError
from raydistill.export.inference import load_student
from raydistill.export.prune import prune_spec, prune_to_budget, read_prune_row, trials_row
from raydistill.export.verify import raw_accuracy
from raydistill.students import build, get_family
from raydistill.students.budget import count_params, parse_budget, solve_budget
from raydistill.training.checkpoint import load_checkpoint_weights, save_checkpoint
from raydistill.training.config import TrainConfig, make_preprocess
from raydistill.training.loop import train_student

FAST = {"batch_size": 64, "max_epochs": 2, "lr": 0.01, "device": "cpu"}


def _source(tmp_path: Path, spec: dict, state: dict) -> Path:
    d = tmp_path / "source"
    meta = {"spec": spec, "status": "finished"}
    save_checkpoint(d, meta=meta, model=state, best=state, optim={})
    return d


@pytest.mark.parametrize(
    "spec",
    [
        {"family": "cnn", "depth": 3, "widths": [32, 48, 48, 128]},
        {"family": "mlp", "depth": 1, "widths": [64, 200]},
        {"family": "nin", "depth": 2, "widths": [32, 24, 32, 24]},
        {"family": "allconv", "depth": 2, "widths": [24, 32, 32]},
        {"family": "resnet9", "depth": 9, "widths": [8, 16, 16, 24]},
    ],
    ids=lambda s: s["family"],
)
def test_pruned_net_is_within_one_percent_of_the_budget(spec: dict) -> None:
    torch.manual_seed(0)
    if "dropout" in get_family(spec["family"]).spec_keys:
        spec = {**spec, "dropout": 0.3}  # the tracing must run the layers on batched inputs
    state = build(spec).state_dict()
    budget = count_params(spec) // 3
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        new_spec, pruned = prune_spec(spec, state, budget)
    assert not [w for w in seen if "dropout" in str(w.message)], [str(w.message) for w in seen]
    assert 0.99 * budget <= count_params(new_spec) <= budget
    assert all(w <= w0 for w, w0 in zip(new_spec["widths"], spec["widths"], strict=True))
    model = build(new_spec)
    model.load_state_dict(pruned)  # strict: the spec alone describes the pruned net
    assert model.eval()(torch.zeros(2, 3, 32, 32)).shape == (2, 10)


def test_dead_units_are_the_ones_removed() -> None:
    # Units with zero in- and out-weights contribute nothing: pruning exactly them keeps the
    # function, so the outputs must not change.
    torch.manual_seed(1)
    spec = {"family": "mlp", "depth": 2, "widths": [8, 8], "in_shape": [3, 4, 4]}
    model = build(spec)
    lin = [m for m in model if isinstance(m, torch.nn.Linear)]
    with torch.no_grad():
        for layer, nxt, dead in ((lin[0], lin[1], [1, 3, 4, 6]), (lin[1], lin[2], [0, 2, 5, 7])):
            layer.weight[dead] = 0
            layer.bias[dead] = 0
            nxt.weight[:, dead] = 0
    budget = count_params({**spec, "widths": [4, 4]})
    new_spec, pruned = prune_spec(spec, model.state_dict(), budget)
    assert new_spec["widths"] == [4, 4]
    small = build(new_spec)
    small.load_state_dict(pruned)
    x = torch.randn(5, 3, 4, 4)
    torch.testing.assert_close(small(x), model(x))


def test_prune_and_fine_tune_on_a_transfer_set(tmp_path: Path, tiny_splits) -> None:
    from raydistill.distill.ensemble import make_ensemble
    from raydistill.distill.transfer.format import load_transfer_set
    from raydistill.distill.transfer.writer import write_transfer_set

    wide = solve_budget("cnn", 2, 120_000, num_classes=tiny_splits.num_classes).spec
    cfg = TrainConfig(**FAST, loss="hard")
    trained = train_student(wide, tiny_splits, None, cfg, evaluate_test=False)
    source = _source(tmp_path, trained.spec, trained.state_dict)
    blob = save({k: v.contiguous() for k, v in trained.state_dict.items()})
    ens = make_ensemble(trained.spec, [blob], make_preprocess("per_image", tiny_splits))
    ts_path = write_transfer_set(tmp_path / "ts.parquet", ens, tiny_splits, 2, seed=0)
    transfer = load_transfer_set(ts_path, splits=tiny_splits)
    out = tmp_path / "pruned"
    res = prune_to_budget(
        source,
        "50k",
        data=tiny_splits,
        transfer=transfer,
        config=TrainConfig(**FAST, loss="l2_logits"),
        out_dir=out,
    )
    assert res.cell == "prune-cnn-d2@50k"
    assert 0.99 * 50_000 <= res.params <= 50_000
    assert res.train is not None and res.train.status == "finished" and res.train.epochs == 2
    spec, state = load_checkpoint_weights(out / "checkpoint")
    assert spec == res.spec and count_params(spec) == res.params
    build(spec).load_state_dict(state)
    doc = json.loads((out / "prune.json").read_text())  # plain JSON: objects, not JSON text
    assert doc["spec"] == res.spec and doc["config"]["source"] == str(source)
    assert doc["train"]["loss"] == "l2_logits" and "pruned" not in doc
    row = read_prune_row(out / "prune.json")
    assert row == json.loads(json.dumps(trials_row(res)))  # the trials row, read back
    assert row["cell"] == "prune-cnn-d2@50k" and row["family"] == "prune-cnn"
    assert row["params/budget"] >= 0.99 and row["val/acc"] is not None
    # a pruned student is a student: the export layout, loadable as is, its test accuracy
    # re-verified on the raw test images
    meta = json.loads((out / "spec.json").read_text())
    assert meta["verification"]["test_verified"] and meta["cell"] == "prune-cnn-d2@50k"
    assert meta["classes"] == list(tiny_splits.classes)
    model = load_student(out)
    assert sum(p.numel() for p in model.parameters()) == res.params
    assert raw_accuracy(model, tiny_splits)[0] == pytest.approx(res.train.test_acc)
    assert json.loads((out / "manifest.json").read_text())["kind"] == "prune"
    assert not list(tmp_path.glob("**/.prune-start-*"))


def test_budget_above_the_network_is_refused_and_writes_nothing(tmp_path: Path) -> None:
    spec = {"family": "cnn", "depth": 2, "widths": [8, 8, 16]}
    source = _source(tmp_path, spec, build(spec).state_dict())
    out = tmp_path / "out"
    with pytest.raises(UserError, match=str(count_params(spec))) as info:
        prune_to_budget(source, count_params(spec) + 1, out_dir=out)
    assert "\n" not in str(info.value) and not out.exists()


def test_checkpoint_that_does_not_match_its_spec_is_refused(tmp_path: Path) -> None:
    spec = {"family": "cnn", "depth": 2, "widths": [8, 8, 16]}
    other = build({**spec, "widths": [8, 9, 16]}).state_dict()
    source = _source(tmp_path, spec, other)
    out = tmp_path / "out"
    with pytest.raises(UserError, match="does not match its spec") as info:
        prune_to_budget(source, "1k", out_dir=out)
    assert "\n" not in str(info.value) and not out.exists()


def test_budget_below_the_family_minimum_names_it() -> None:
    spec = {"family": "nin", "depth": 2, "widths": [8, 8, 8, 8]}
    with pytest.raises(UserError, match="minimum") as info:
        prune_spec(spec, build(spec).state_dict(), parse_budget(10))
    assert "\n" not in str(info.value)


def test_adder_is_refused_in_one_line(tmp_path: Path) -> None:
    # torch-pruning traces the graph through autograd; the adder layer's custom Function hides
    # its dependencies, so `prune` refuses the family instead of producing a wrong net.
    spec = {"family": "adder", "depth": 2, "widths": [8, 8, 16]}
    source = _source(tmp_path, spec, build(spec).state_dict())
    out = tmp_path / "out"
    with pytest.raises(UserError, match="'adder' cannot be pruned") as info:
        prune_to_budget(source, "1k", out_dir=out)
    assert "\n" not in str(info.value) and not out.exists()


def test_a_teacher_member_file_is_a_source(tmp_path: Path) -> None:
    from safetensors.torch import save_file

    spec = {"family": "resnet9", "depth": 9, "widths": [8, 16, 16, 24]}
    teacher = tmp_path / "teacher"
    teacher.mkdir()
    (teacher / "manifest.json").write_text(json.dumps({"kind": "teacher", "spec": spec}))
    save_file(build(spec).state_dict(), teacher / "member-1.safetensors")
    res = prune_to_budget(teacher / "member-1.safetensors", "10k")
    assert res.cell == "prune-resnet9-d9@10k" and 9_900 <= res.params <= 10_000
    assert res.source_params == count_params(spec) and res.out_dir is None


def test_the_prune_command_takes_a_teacher_member_file(tmp_path: Path, capsys) -> None:
    from safetensors.torch import save_file

    from raydistill.cli import main

    spec = {"family": "resnet9", "depth": 9, "widths": [8, 16, 16, 24]}
    teacher = tmp_path / "teacher"
    teacher.mkdir()
    (teacher / "manifest.json").write_text(json.dumps({"kind": "teacher", "spec": spec}))
    save_file(build(spec).state_dict(), teacher / "member-0.safetensors")
    assert main(["prune", str(teacher / "member-0.safetensors"), "--budget", "10k"]) == 0
    assert "prune-resnet9-d9@10k" in capsys.readouterr().out
    assert main(["prune", str(teacher / "manifest.json"), "--budget", "10k"]) == 2  # not weights


def test_the_prune_command_writes_a_student_that_export_takes(tmp_path: Path, capsys) -> None:
    """`prune --data --out P`: P loads with load_student, the console prints the test accuracy,
    `export P` re-exports it (re-verified through the manifest's dataset); an --out holding
    other files is refused in one line."""
    from raydistill.cli import main
    from raydistill.data import load_dataset

    data = ["--data", "synthetic-sep:256:8:2", "--val-size", "64"]
    splits = load_dataset("synthetic-sep:256:8:2", val_size=64, seed=0)
    spec = solve_budget("mlp", 1, 6_000, in_shape=list(splits.image_shape), num_classes=2).spec
    trained = train_student(spec, splits, None, TrainConfig(**FAST, loss="hard"))
    source = _source(tmp_path, trained.spec, trained.state_dict)
    out = tmp_path / "pruned"
    args = ["prune", str(source), "--budget", "2k", *data, "--max-epochs", "1", "--device", "cpu"]
    assert main([*args, "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    row = read_prune_row(out / "prune.json")
    assert f"test/acc      {100 * row['test/acc']:.2f}%" in printed
    model = load_student(out)
    assert raw_accuracy(model, splits)[0] == pytest.approx(row["test/acc"])
    assert main(["export", str(out), "--all", "--out", str(tmp_path / "exp")]) == 0
    exported = tmp_path / "exp" / "prune-mlp-d1@2k"
    check = json.loads((exported / "spec.json").read_text())["verification"]
    assert check["test_verified"] and load_student(exported).classes == splits.classes
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "notes.txt").write_text("mine")
    assert main([*args, "--out", str(tmp_path / "busy")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "holds other files" in err
    assert (tmp_path / "busy" / "notes.txt").read_text() == "mine"
