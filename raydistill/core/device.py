"""The one rule for choosing a torch device ("auto" is CUDA when available, else the CPU), and
the one reading of the GPU ids Ray assigned to a task (`gpu_ids`)."""

from __future__ import annotations

import os

import torch


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """`device` as a `torch.device`; "auto" picks CUDA when available, else the CPU."""
    if str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def gpu_ids() -> list[str]:
    """The GPUs Ray assigned to this task or actor: the CUDA_VISIBLE_DEVICES it sets for any
    that asked for GPUs (fractional shares too); [] outside one (or when none was asked for)."""
    visible = os.environ.get("CUDA_VISIBLE_DEVICES", "")
    return [g for g in visible.split(",") if g]
