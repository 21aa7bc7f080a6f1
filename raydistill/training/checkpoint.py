"""Training checkpoints on disk, without pickle.

A checkpoint directory holds:

    checkpoint.json     spec, config, epoch, step, schedule state, best metrics, history, version
    model.safetensors   current weights
    best.safetensors    best-validation weights (the ones reported, tested and exported)
    optim.safetensors   optimizer buffers, keyed "<buffer>/<parameter name>"; only while the run
                        can go on (status "running"): an ended run's checkpoint (the one export
                        and the seed repeats read) has no use for them
    rng.safetensors     torch RNG states (CPU, and CUDA when used)

A checkpoint is written into a temporary sibling directory and renamed into place
(`raydistill.core.manifest.atomic_dir`): a crash leaves the previous checkpoint or none, never a mix
of two epochs.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from raydistill.core.errors import UserError
from raydistill.core.manifest import atomic_dir

FILES = ("checkpoint.json", "model.safetensors", "best.safetensors", "rng.safetensors")
RESUME_FILES = ("optim.safetensors",)  # only in a checkpoint whose status is "running"


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
    """Write (or replace) a checkpoint directory, atomically; the optimizer buffers only while
    `meta["status"]` is "running" (absent status: running)."""
    d = Path(directory)
    with atomic_dir(d) as tmp:
        save_file(_cpu(model), str(tmp / "model.safetensors"))
        save_file(_cpu(best), str(tmp / "best.safetensors"))
        if _resumable(meta):
            save_file(_cpu(optim), str(tmp / "optim.safetensors"))
        save_file(_cpu(rng_tensors()), str(tmp / "rng.safetensors"))
        (tmp / "checkpoint.json").write_text(json.dumps(meta, indent=1, default=float))
    return d


def _resumable(meta: dict[str, Any]) -> bool:
    return meta.get("status", "running") == "running"


def read_checkpoint(directory: str | Path, files: tuple[str, ...] = FILES) -> dict[str, Any]:
    """checkpoint.json of a checkpoint directory, or a UserError saying what is missing.

    `files`: the files the caller needs (all but the optimizer's by default, which a resumable
    checkpoint must also have); export passes ("checkpoint.json", "best.safetensors")."""
    d = Path(directory)
    missing = [f for f in files if not (d / f).is_file()]
    if not missing and files == FILES:
        meta = json.loads((d / "checkpoint.json").read_text())
        missing = [f for f in RESUME_FILES if _resumable(meta) and not (d / f).is_file()]
    if missing:
        raise UserError(f"checkpoint {d} is incomplete: missing {', '.join(missing)}")
    return json.loads((d / "checkpoint.json").read_text())


def load_tensors(directory: str | Path, name: str) -> dict[str, torch.Tensor]:
    """One safetensors file of a checkpoint ('model', 'best', 'optim', 'rng'); an ended run's
    checkpoint has no optimizer buffers: {} for 'optim' there."""
    path = Path(directory) / f"{name}.safetensors"
    if name == "optim" and not path.is_file():
        return {}  # read_checkpoint checked that the run had ended
    return load_file(str(path))


def load_checkpoint_weights(
    directory: str | Path, which: str = "best"
) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """(spec, state_dict) of a checkpoint: the best-validation weights by default; needs only
    checkpoint.json and that weights file (e.g. `raydistill.export.fetch.fetched_checkpoint`)."""
    meta = read_checkpoint(directory, files=("checkpoint.json", f"{which}.safetensors"))
    return meta["spec"], load_tensors(directory, which)
