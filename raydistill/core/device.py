"""The one rule for choosing a torch device ("auto" is CUDA when available, else the CPU), the
one reading of the GPU ids Ray assigned to a task (`gpu_ids`), and the refusal of GPU options
this machine cannot serve (`check_device`, `check_local_gpus`: one line, before anything runs)."""

from __future__ import annotations

import os
import sys

import torch

from raydistill.core.errors import UserError


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """`device` as a `torch.device`; "auto" picks CUDA when available, else the CPU. A CUDA
    device this process cannot use is a one-line UserError, not torch's traceback."""
    if str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except RuntimeError:
        raise UserError(f"device {device!r} is invalid; valid: auto, cpu, cuda, cuda:N") from None
    if dev.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            raise UserError(
                f"device {device!r}: no CUDA GPU is visible here (torch.cuda.is_available() is False); use cpu or auto"
            )
        if dev.index is not None and dev.index >= count:
            raise UserError(
                f"device {device!r}: only {count} CUDA GPU(s) are visible (cuda:0–cuda:{count - 1})"
            )
    return dev


def check_device(device: str | None, flag: str = "--device") -> None:
    """Refuse (UserError naming `flag`) a device this machine cannot use; None passes."""
    if device is None:
        return
    try:
        resolve_device(device)
    except UserError as exc:
        raise UserError(f"{flag} {str(exc).removeprefix('device ')}") from None


def local_gpus() -> float:
    """GPUs a private local Ray has: the running one's (tests give it logical GPUs), else this
    machine's CUDA devices."""
    ray = sys.modules.get("ray")
    if ray is not None and ray.is_initialized():
        return float(ray.cluster_resources().get("GPU", 0.0))
    return float(torch.cuda.device_count() if torch.cuda.is_available() else 0)


def check_local_gpus(gpus: float, address: str | None, flag: str) -> None:
    """Refuse (one line, before anything starts) GPUs per task that a local Ray cannot give:
    it never gains a GPU, so the tasks would wait forever. Joined clusters are checked when
    Ray is up (`raydistill.core.resources.check_gpu_request`: an autoscaler may add nodes)."""
    if gpus <= 0 or address not in ("local", "", None):
        return
    have = local_gpus()
    if gpus > have:
        where = "this machine has no GPU" if have == 0 else f"this machine has {have:g}"
        raise UserError(
            f"{flag} {gpus:g} asks for more GPUs per task than a local Ray has ({where}); use {flag} 0 (CPUs), or --address of a cluster with GPU nodes"
        )


def gpu_ids() -> list[str]:
    """The GPUs Ray assigned to this task or actor: the CUDA_VISIBLE_DEVICES it sets for any
    that asked for GPUs (fractional shares too); [] outside one (or when none was asked for)."""
    visible = os.environ.get("CUDA_VISIBLE_DEVICES", "")
    return [g for g in visible.split(",") if g]
