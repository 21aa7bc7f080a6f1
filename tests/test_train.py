"""The training loop without Ray: reports, exact resume, divergence, checkpoints without pickle."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from raydistill.core.errors import UserError
from raydistill.data import DeviceSplit, Splits, to_float
from raydistill.students import build, has_conv
from raydistill.students.budget import solve_budget
from raydistill.training.checkpoint import load_checkpoint_weights
from raydistill.training.config import TrainConfig, make_preprocess
from raydistill.training.evaluation import evaluate
from raydistill.training.loop import Trainer, train_student

SPEC = solve_budget("cnn", 2, 8_000, in_shape=[3, 32, 32], num_classes=2).spec
FAST = {"batch_size": 64, "max_epochs": 4, "loss": "hard", "lr": 0.01, "device": "cpu"}


def _run(splits, cfg: dict, **kwargs):
    seen: list[dict] = []
    result = train_student(
        SPEC,
        splits,
        None,
        TrainConfig(**{**FAST, **cfg}),
        report=lambda m, save: seen.append(m),
        **kwargs,
    )
    return result, seen


def _accuracy(result, splits, split: str) -> float:
    """Accuracy of `result`'s weights on a split, evaluated independently of the trainer."""
    cfg = TrainConfig.from_dict(result.config)
    model = build(result.spec)
    model.load_state_dict(result.state_dict)
    channels_last = cfg.channels_last and has_conv(model)  # as the trainer runs it
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    x, y = splits.split(split)
    acc, _ = evaluate(
        model,
        DeviceSplit.from_numpy(x, y, torch.device("cpu")),
        preprocess=make_preprocess(cfg.preprocess, splits),
        input_scale=cfg.input_scale,
        channels_last=channels_last,
    )
    return acc


def test_reports_every_epoch_and_tests_the_best_weights(tiny_splits) -> None:
    result, seen = _run(tiny_splits, {"max_epochs": 3})
    assert [m["epoch"] for m in seen] == [1, 2, 3]
    assert [m["status"] for m in seen] == ["running", "running", "finished"]
    for m in seen:
        assert {"train/loss", "val/acc", "val/loss", "lr", "best/val/acc", "params"} <= set(m)
    assert "test/acc" in seen[-1] and "test/acc" not in seen[0]
    assert result.status == "finished" and result.epochs == 3
    assert result.best_val_acc == max(m["val/acc"] for m in seen)
    # test/acc is the accuracy of the returned (best-validation) weights on the test split.
    assert result.test_acc == _accuracy(result, tiny_splits, "test")
    assert result.best_val_acc == _accuracy(result, tiny_splits, "val")
    assert result.params == sum(v.numel() for k, v in result.state_dict.items())


@pytest.mark.parametrize("schedule", ["plateau", "cosine"])
def test_resume_continues_exactly(tiny_splits, tmp_path: Path, schedule: str) -> None:
    # Dropout consumes the global RNG, the augmentation draws per (seed, epoch): both must resume.
    cfg = {"schedule": schedule, "augment": "paper"}
    spec = {**SPEC, "dropout": 0.2}
    full = train_student(spec, tiny_splits, None, TrainConfig(**{**FAST, **cfg}))

    def save_after_two(metrics, save):
        if metrics["epoch"] == 2:
            save(tmp_path / "ckpt")

    two = TrainConfig(**{**FAST, **cfg})
    train_student(spec, tiny_splits, None, two, report=save_after_two)
    resumed = train_student(spec, tiny_splits, None, two, checkpoint=tmp_path / "ckpt")
    assert resumed.epochs == full.epochs == 4
    assert [h["train/loss"] for h in resumed.history] == [h["train/loss"] for h in full.history]
    for key, value in full.state_dict.items():
        assert torch.equal(value, resumed.state_dict[key]), key


def test_diverging_run_ends_with_status_and_never_raises(tiny_splits) -> None:
    result, seen = _run(tiny_splits, {"lr": 1e8, "momentum": 0.99})
    assert result.status == "diverged"
    assert seen[-1]["status"] == "diverged"
    assert len(seen) == 1  # stops at the first epoch that blew up


def test_checkpoint_is_safetensors_and_json(tiny_splits, tmp_path: Path) -> None:
    saved: list[Path] = []

    def keep(metrics, save):
        save(tmp_path / f"e{metrics['epoch']}")
        saved.append(tmp_path / f"e{metrics['epoch']}")

    result = train_student(
        SPEC, tiny_splits, None, TrainConfig(**{**FAST, "max_epochs": 2}), report=keep
    )
    first, last = saved
    # the optimizer's buffers only while the run can go on (epoch 1 of 2), not once it ended
    assert sorted(p.name for p in first.iterdir()) == [
        "best.safetensors",
        "checkpoint.json",
        "model.safetensors",
        "optim.safetensors",
        "rng.safetensors",
    ]
    assert sorted(p.name for p in last.iterdir()) == [
        "best.safetensors",
        "checkpoint.json",
        "model.safetensors",
        "rng.safetensors",
    ]
    meta = json.loads((last / "checkpoint.json").read_text())
    assert meta["status"] == "finished" and meta["epoch"] == 2
    spec, best = load_checkpoint_weights(last)
    assert spec == result.spec
    for key, value in result.state_dict.items():
        assert torch.equal(best[key], value)


def test_loss_that_needs_a_teacher_is_refused_without_transfer(tiny_splits) -> None:
    with pytest.raises(UserError, match="transfer set"):
        train_student(SPEC, tiny_splits, None, TrainConfig(**{**FAST, "loss": "l2_logits"}))


@pytest.mark.parametrize(
    ("key", "value"),
    [("schedule", "step"), ("augment", "cutout"), ("loss", "mse"), ("preprocess", "zca")],
)
def test_bad_config_values_are_one_line_errors(key: str, value: str) -> None:
    with pytest.raises(UserError) as info:
        TrainConfig(**{key: value})
    assert value in str(info.value) and "\n" not in str(info.value)


def test_from_dict_rejects_unknown_keys() -> None:
    with pytest.raises(UserError, match="'learning_rate'"):
        TrainConfig.from_dict({"learning_rate": 0.1})


def test_resuming_an_ended_run_does_not_train_on(tiny_splits, tmp_path: Path) -> None:
    # A plateau run told to stop at once (stop_patience 1 after a flat start) saves "stopped".
    cfg = TrainConfig(**{**FAST, "lr": 1e-9, "stop_patience": 1, "max_epochs": 6})
    saved = []
    first = train_student(
        SPEC, tiny_splits, None, cfg, report=lambda m, save: (save(tmp_path / "c"), saved.append(m))
    )
    assert first.status == "stopped" and first.epochs < 6
    again = train_student(SPEC, tiny_splits, None, cfg, checkpoint=tmp_path / "c")
    assert again.status == "stopped" and again.epochs == first.epochs
    assert again.test_acc == first.test_acc


# ----------------------------------------------------------------------------- speed settings


def test_channels_last_changes_speed_not_numbers(tiny_splits) -> None:
    """The layout is a CPU/GPU speed setting: the same seed trains to the same weights (float
    tolerance: the convolutions sum in another order)."""
    a, _ = _run(tiny_splits, {"max_epochs": 2, "channels_last": False})
    b, _ = _run(tiny_splits, {"max_epochs": 2, "channels_last": True})
    assert has_conv(build(SPEC))
    assert [h["train/loss"] for h in a.history] == pytest.approx(
        [h["train/loss"] for h in b.history], rel=1e-4
    )
    for key, value in a.state_dict.items():
        assert torch.allclose(value.float(), b.state_dict[key].float(), rtol=1e-3, atol=1e-4), key


def test_resnet_whose_shortcut_breaks_cpu_channels_last_trains_nchw(tiny_splits) -> None:
    """A resnet at 12k parameters has a 1×1 stride-2 shortcut from 6 channels, whose
    channels_last backward corrupts the heap on the CPU (torch 2.14.1; `accel`): it trains, in
    NCHW, while a model without such a conv keeps channels_last."""
    from raydistill.students import data_spec_keys
    from raydistill.students.budget import Budget
    from raydistill.training.accel import cpu_channels_last_breaks, use_channels_last

    sol = solve_budget("resnet", 1, Budget("params", 12000), None, **data_spec_keys(tiny_splits))
    model = build(sol.spec)
    broken = cpu_channels_last_breaks(model)
    assert broken and all(dict(model.named_modules())[n].in_channels < 8 for n in broken), (
        broken
    )  # the 6-channel shortcut is found
    assert not use_channels_last(model, True) and use_channels_last(build(SPEC), True)
    cfg = TrainConfig.from_dict(
        {"max_epochs": 1, "batch_size": 64, "loss": "hard", "device": "cpu", "channels_last": True}
    )
    trainer = Trainer(sol.spec, tiny_splits, None, cfg)
    assert trainer.channels_last is False
    result = train_student(sol.spec, tiny_splits, None, cfg)
    assert result.status == "finished" and np.isfinite(result.history[-1]["train/loss"])


def test_autocast_is_cuda_only() -> None:
    from raydistill.training.accel import autocast

    with autocast(torch.device("cpu"), True):
        out = torch.ones(2, 2) @ torch.ones(2, 2)
    assert out.dtype == torch.float32  # no CPU autocast: CPU numerics stay float32


def test_compile_error_falls_back_to_eager_with_one_warning() -> None:
    from raydistill.training.accel import CompiledForward

    def broken_backend(gm, example_inputs):
        raise RuntimeError("no compiler here")

    torch.manual_seed(0)
    model = build(SPEC).eval()
    x = torch.randn(4, 3, 32, 32)
    warnings: list[str] = []
    fwd = CompiledForward(model, True, backend=broken_backend, warn=warnings.append)
    assert torch.equal(fwd(x), model(x)) and torch.equal(fwd(x), model(x))
    assert fwd.compiled is False and len(warnings) == 1
    assert "torch.compile failed" in warnings[0] and "training eagerly" in warnings[0]
    assert list(model.state_dict()) == list(build(SPEC).state_dict())  # no _orig_mod. keys


def test_compiled_forward_matches_eager() -> None:
    from raydistill.training.accel import CompiledForward

    torch.manual_seed(0)
    model = build(SPEC).eval()
    x = torch.randn(4, 3, 32, 32)
    warnings: list[str] = []
    fwd = CompiledForward(model, True, backend="eager", warn=warnings.append)
    assert torch.allclose(fwd(x), model(x), atol=1e-6)
    assert fwd.compiled is True and warnings == []


def _class_sorted_splits() -> Splits:
    """A train split stored class by class, as `load_dataset` stores it: 5,000 smooth ramps
    (class 0) first, then 1,000 noise images (class 1); 3×16×16 uint8."""
    rng = np.random.default_rng(0)
    ramp = np.linspace(0, 255, 16)
    smooth = np.broadcast_to(ramp, (5000, 3, 16, 16)) * rng.uniform(0.2, 1, (5000, 1, 1, 1))
    x = np.concatenate([smooth, rng.integers(0, 256, (1000, 3, 16, 16))]).astype(np.uint8)
    y = np.repeat(np.arange(2), [5000, 1000]).astype(np.int64)
    held = {"x": x[::50], "y": y[::50]}
    return Splits(
        name="sorted",
        fingerprint="sorted",
        classes=("ramp", "noise"),
        train_x=x,
        train_y=y,
        val_x=held["x"],
        val_y=held["y"],
        test_x=held["x"],
        test_y=held["y"],
    )


def test_whitening_statistics_cover_every_class_of_a_class_sorted_split() -> None:
    """airbench's whitening filters (1/sqrt of the patch covariance's eigenvalues) match those
    of the whole split, not those of its first 5,000 images (one class here: 18x off)."""
    splits = _class_sorted_splits()
    spec = {"family": "airbench", "depth": 7, "widths": [8, 16, 16, 16]}
    tr = Trainer(spec, splits, None, TrainConfig(loss="hard", device="cpu", max_epochs=1))

    def norms() -> torch.Tensor:  # each filter's norm, sorted: free of eigenvector signs
        return tr.model.whiten.weight.detach().flatten(1).norm(dim=1).sort().values

    got = norms()
    images = tr.preprocess(to_float(tr.train.x))
    tr.model.data_init(images)
    ratio = got / norms()
    assert ratio.min() > 0.95 and ratio.max() < 1.05, ratio
    tr.model.data_init(images[:5000])  # the first 5,000 only: what the test must tell apart
    assert (norms() / got).max() > 3
