"""The CUDA-only branches of the training loop, run on the CPU (issue 22).

Mixed precision and memory layout are parameters of one code path (`TrainConfig.amp`,
`channels_last`): amp="bf16" autocasts on any device, so CI runs the numerics a GPU runs by
default ("auto": bf16 on CUDA). Every registered family (students and teachers) takes a step
under bf16 autocast with finite loss and gradients; AdderNet computes in float32 whatever the
autocast; an export's self-check passes after a bf16 training.
"""

from __future__ import annotations

import pytest
import torch

from raydistill.students import build, families
from raydistill.students.budget import solve_budget
from raydistill.training.accel import amp_dtype, autocast, exact_fp32
from raydistill.training.config import TrainConfig
from raydistill.training.loop import Trainer

CASES = [(name, d) for name, f in families().items() for d in f.depths]


def _spec(family: str, depth: int) -> dict:
    kind = families()[family].kind
    return solve_budget(family, depth, 10_000 if kind == "student" else 300_000).spec


@pytest.mark.parametrize(("family", "depth"), CASES, ids=[f"{f}-d{d}" for f, d in CASES])
def test_every_family_trains_a_step_under_bf16_autocast(family, depth, tiny_splits) -> None:
    cfg = TrainConfig(
        loss="hard",
        device="cpu",
        amp="bf16",
        batch_size=8,
        max_epochs=1,
        augment="flip_translate",
        init="default",
    )
    tr = Trainer(_spec(family, depth), tiny_splits, None, cfg)
    x, y, _ = next(tr._batches(0))
    with autocast(tr.device, tr.amp):
        assert tr.forward(x).dtype == torch.bfloat16  # the autocast is really on
    before = {k: v.detach().clone() for k, v in tr.model.named_parameters()}
    loss = tr.step(x, y, None)
    assert loss.dtype == torch.float32 and torch.isfinite(loss), float(loss)
    for name, p in tr.model.named_parameters():
        if not p.requires_grad:
            continue  # frozen by design (airbench's whitening filters)
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
        assert p.dtype == torch.float32, name  # autocast never changes the stored weights
    assert any(not torch.equal(before[k], p) for k, p in tr.model.named_parameters())


def test_adder_is_float32_inside_bf16_autocast() -> None:
    """The issue's reproduction: adder depth 2 at 20k, forward + backward in CPU bf16
    autocast (raised "expected scalar type Float but found BFloat16" before), and the adder
    layers' gradients equal the float32 run's (they compute in float32)."""
    from raydistill.students.adder import AdderConv2d

    torch.manual_seed(0)
    model = build(solve_budget("adder", 2, 20_000).spec)
    adders = [m for m in model.modules() if type(m) is AdderConv2d]
    x = torch.randn(8, 3, 32, 32)
    for layer in adders:
        inp = torch.randn(4, layer.in_channels, 8, 8, requires_grad=True)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out = layer(inp)
        assert out.dtype == torch.float32
        out.square().mean().backward()
        g_amp = layer.weight.grad.clone()
        layer.weight.grad = None
        layer(inp).square().mean().backward()
        assert torch.allclose(g_amp, layer.weight.grad, rtol=1e-5, atol=1e-6)
        layer.weight.grad = None
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(x)
    out.float().square().mean().backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())


def test_amp_modes_and_old_booleans() -> None:
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert amp_dtype(cpu, "auto") is None and amp_dtype(cuda, "auto") == torch.bfloat16
    assert amp_dtype(cpu, "bf16") == torch.bfloat16 and amp_dtype(cuda, "off") is None
    assert amp_dtype(cpu, True) is None and amp_dtype(cuda, True) == torch.bfloat16
    assert TrainConfig(amp=True).amp == "auto" and TrainConfig(amp=False).amp == "off"
    from raydistill.core.errors import UserError

    with pytest.raises(UserError, match="amp='fp8' is invalid; valid: auto, bf16, off"):
        TrainConfig(amp="fp8")


def test_exact_fp32_turns_tf32_off_and_restores_it() -> None:
    torch.backends.cudnn.allow_tf32 = True
    with exact_fp32():
        assert not torch.backends.cudnn.allow_tf32
        assert not torch.backends.cuda.matmul.allow_tf32
    assert torch.backends.cudnn.allow_tf32


@pytest.mark.slow
def test_export_self_check_passes_after_a_bf16_training(ray_local, tiny_splits, tmp_path) -> None:
    """A search whose trials train under bf16 autocast, then the export of its best student:
    the test accuracy recorded at training (float32, no TF32) is re-verified on raw images."""
    from raydistill.export.exporter import export_cells
    from raydistill.search import SearchSettings, run_search

    space = {"family": "cnn", "depths": [1],
             "train": {"lr": 0.05, "momentum": 0.9, "batch_size": 64, "max_epochs": 4,
                       "warmup_epochs": 1, "schedule": "cosine", "augment": "none",
                       "amp": "bf16"}}  # fmt: skip
    settings = SearchSettings(
        spaces=[space], budgets="20k", trials=1, out=str(tmp_path / "s"), device="cpu", wandb="off"
    )
    out = run_search(settings, data=tiny_splits, verbose=0)
    results = export_cells(out, None, tmp_path / "export", splits=tiny_splits)
    assert [r.test_verified for r in results] == [True], [r.note for r in results]
    from raydistill.search import load_trials

    recorded = float(load_trials(out)["test/acc"].iloc[0])
    assert results[0].test_acc == pytest.approx(recorded, abs=1 / 128)  # the check's tolerance
