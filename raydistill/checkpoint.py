"""Training checkpoints on disk, without pickle.

A checkpoint directory holds:

    checkpoint.json     spec, config, epoch, step, schedule state, best metrics, history, version
    model.safetensors   current weights
    best.safetensors    best-validation weights (the ones reported, tested and exported)
    optim.safetensors   optimizer buffers, keyed "<buffer>/<parameter name>"
    rng.safetensors     torch RNG states (CPU, and CUDA when used)
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from raydistill.errors import UserError
from raydistill.manifest import atomic_write_text

FILES = ("checkpoint.json", "model.safetensors", "best.safetensors", "optim.safetensors")


def _cpu(tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    # safetensors wants contiguous tensors that share no storage (channels_last weights are not).
    return {k: v.detach().to("cpu").contiguous().clone() for k, v in tensors.items()}


def optimizer_tensors(model: nn.Module, opt: torch.optim.Optimizer) -> dict[str, torch.Tensor]:
    """The optimizer's per-parameter buffers (SGD momentum), keyed by parameter name."""
    out = {}
    for name, p in model.named_parameters():
        for key, value in opt.state.get(p, {}).items():
            if torch.is_tensor(value):
                out[f"{key}/{name}"] = value
    return out


def load_optimizer_tensors(
    model: nn.Module, opt: torch.optim.Optimizer, tensors: dict[str, torch.Tensor]
) -> None:
    params = dict(model.named_parameters())
    for key, value in tensors.items():
        buf, name = key.split("/", 1)
        p = params[name]
        opt.state[p][buf] = value.to(p.device).to(memory_format=_format_of(p))


def _format_of(t: torch.Tensor) -> torch.memory_format:
    if t.dim() == 4 and t.is_contiguous(memory_format=torch.channels_last):
        return torch.channels_last
    return torch.contiguous_format


def rng_tensors() -> dict[str, torch.Tensor]:
    out = {"cpu": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        out["cuda"] = torch.cuda.get_rng_state()
    return out


def restore_rng(tensors: dict[str, torch.Tensor]) -> None:
    torch.set_rng_state(tensors["cpu"])
    if "cuda" in tensors and torch.cuda.is_available():
        torch.cuda.set_rng_state(tensors["cuda"])


def save_checkpoint(
    directory: str | Path,
    *,
    meta: dict[str, Any],
    model: dict[str, torch.Tensor],
    best: dict[str, torch.Tensor],
    optim: dict[str, torch.Tensor],
) -> Path:
    """Write a checkpoint directory (created if needed); JSON last, so its presence means complete."""
    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    save_file(_cpu(model), str(d / "model.safetensors"))
    save_file(_cpu(best), str(d / "best.safetensors"))
    save_file(_cpu(optim), str(d / "optim.safetensors"))
    save_file(_cpu(rng_tensors()), str(d / "rng.safetensors"))
    atomic_write_text(d / "checkpoint.json", json.dumps(meta, indent=1, default=float))
    return d


def read_checkpoint(directory: str | Path) -> dict[str, Any]:
    """checkpoint.json of a checkpoint directory, or a UserError saying what is missing."""
    d = Path(directory)
    missing = [f for f in FILES if not (d / f).is_file()]
    if missing:
        raise UserError(f"checkpoint {d} is incomplete: missing {', '.join(missing)}")
    return json.loads((d / "checkpoint.json").read_text())


def load_tensors(directory: str | Path, name: str) -> dict[str, torch.Tensor]:
    """One safetensors file of a checkpoint ('model', 'best', 'optim', 'rng')."""
    return load_file(str(Path(directory) / f"{name}.safetensors"))


def load_checkpoint_weights(
    directory: str | Path, which: str = "best"
) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """(spec, state_dict) of a checkpoint: the best-validation weights by default."""
    meta = read_checkpoint(directory)
    return meta["spec"], load_tensors(directory, which)
