"""A teacher ensemble: eval-mode members whose logits are averaged; building it from weights,
saving it (`save_ensemble`: DIR/member-<i>.safetensors + manifest.json) and loading it back
(`load_ensemble`, which refuses a member whose sha256 is not the manifest's), and its evaluation
(`evaluate_members`: per-member and ensemble accuracy on val and test, through
`raydistill.training.evaluation`, split across GPU tasks by `raydistill.distill.shards` when the ensemble is given GPUs).
`raydistill.distill.teachers` trains the members and re-exports these names.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor, nn

from raydistill.core.device import resolve_device
from raydistill.core.errors import UserError
from raydistill.core.manifest import (
    atomic_write_bytes,
    build_manifest,
    read_manifest,
    sha256_bytes,
    write_manifest,
)
from raydistill.students import build, has_conv
from raydistill.training.evaluation import accuracy_of, logits_over

if TYPE_CHECKING:
    from raydistill.data import Preprocess, Splits
    from raydistill.training.config import TrainConfig

MANIFEST_KIND = "teacher"


def member_file(i: int) -> str:
    return f"member-{i}.safetensors"


@dataclass
class Ensemble:
    """Eval-mode members whose logits are averaged; inputs are preprocessed floats."""

    members: list[nn.Module]
    preprocess: Preprocess
    fingerprints: list[str]
    manifest: dict[str, Any] = field(default_factory=dict)
    spec: dict[str, Any] = field(default_factory=dict)
    channels_last: bool = False
    # GPUs its evaluation and labelling may use as Ray tasks (one shard per GPU), as declared
    # by the caller (`raydistill.core.resources`); 0: in-process on `device`.
    gpus: int = 0

    @property
    def device(self) -> torch.device:
        # buffers too: an external member (ONNX) has no parameters, only a device marker
        first = next(iter([*self.members[0].parameters(), *self.members[0].buffers()]), None)
        return first.device if first is not None else torch.device("cpu")

    @property
    def num_classes(self) -> int:
        return int(self.spec.get("num_classes", 0)) or self.members[0](self._probe()).shape[1]

    def _probe(self) -> Tensor:
        shape = self.spec.get("in_shape", (3, 32, 32))
        return torch.zeros(1, *shape, device=self.device)

    @torch.no_grad()
    def logits(self, x: Tensor) -> Tensor:
        """(N, C) float32 mean of the members' logits for preprocessed inputs x (N, C, H, W)."""
        if self.channels_last and x.dim() == 4:
            x = x.contiguous(memory_format=torch.channels_last)
        total = None
        for m in self.members:
            out = m(x).float()
            total = out if total is None else total + out
        return total / len(self.members)

    @torch.no_grad()
    def accuracy(self, x: Tensor, y: Tensor, batch_size: int = 1000) -> float:
        """Ensemble accuracy on raw images (uint8 or float, on any device), preprocessed here."""
        logits = logits_over(
            self.logits, x, preprocess=self.preprocess, batch_size=batch_size, device=self.device
        )
        return accuracy_of(logits, y)

    @torch.no_grad()
    def member_logits(self, x: Tensor, batch_size: int = 1000) -> Tensor:
        """(M, N, C) float32 logits of each member for raw images x (N, C, H, W), on the
        ensemble's device: each member sees each image once."""
        return logits_over(
            self.stacked,
            x,
            preprocess=self.preprocess,
            batch_size=batch_size,
            channels_last=self.channels_last,
            device=self.device,
        )

    def stacked(self, x: Tensor) -> Tensor:
        """(M, B, C) float32 logits of every member for preprocessed inputs x."""
        return torch.stack([m(x).float() for m in self.members])


def make_ensemble(
    spec: dict[str, Any],
    weights: Sequence[bytes],
    preprocess: Preprocess,
    device: str | torch.device = "cpu",
    manifest: Mapping[str, Any] | None = None,
) -> Ensemble:
    """Members rebuilt from safetensors bytes, in eval mode on `device`."""
    from safetensors.torch import load

    device = resolve_device(device)
    members = []
    for blob in weights:
        model = build(spec)
        model.load_state_dict(load(blob))
        members.append(model.to(device).eval())
    channels_last = has_conv(members[0])
    if channels_last:
        members = [m.to(memory_format=torch.channels_last) for m in members]
    return Ensemble(
        members=members,
        preprocess=preprocess,
        fingerprints=[sha256_bytes(b) for b in weights],
        manifest=dict(manifest or {}),
        spec=dict(spec),
        channels_last=channels_last,
    )


def load_ensemble(directory: str | Path, device: str | torch.device = "cpu") -> Ensemble:
    """Load a `teach` output directory; refuses members whose sha256 is not the manifest's."""
    from raydistill.data import Preprocess

    d = Path(directory)
    manifest = read_manifest(d, kind=MANIFEST_KIND)
    expected = manifest.get("teacher_fingerprints") or []
    blobs = []
    for i, want in enumerate(expected):
        path = d / member_file(i)
        if not path.is_file():
            raise UserError(
                f"teacher member {path} is missing (the manifest lists {len(expected)})"
            )
        blob = path.read_bytes()  # hash and load the same bytes: no check-then-swap window
        if sha256_bytes(blob) != want:
            raise UserError(
                f"teacher member {path} has sha256 {sha256_bytes(blob)[:16]}…, the manifest "
                f"records {want[:16]}…: the file was modified or replaced"
            )
        blobs.append(blob)
    if not blobs:
        raise UserError(f"{d / 'manifest.json'} lists no teacher members")
    preprocess = Preprocess.from_dict(manifest["preprocess"])
    return make_ensemble(manifest["spec"], blobs, preprocess, device, manifest)


def evaluate_members(
    ensemble: Ensemble, splits: Splits, batch_size: int = 1000
) -> tuple[list[dict[str, float]], dict[str, float]]:
    """Per-member and ensemble accuracy on the validation and test splits (each member runs
    once per image; the ensemble's prediction comes from the same logits, averaged). With
    `ensemble.gpus` the images are split across that many GPU tasks (`raydistill.distill.shards`)."""
    from raydistill.distill.shards import member_logits

    per_member: list[dict[str, float]] = [{} for _ in ensemble.members]
    overall: dict[str, float] = {}
    for part in ("val", "test"):
        x, y = (torch.as_tensor(a) for a in splits.split(part))
        outs = member_logits(ensemble, x, batch_size=batch_size).cpu()  # (M, N, C)
        for i in range(len(ensemble.members)):
            per_member[i][f"{part}/acc"] = accuracy_of(outs[i], y)
        overall[f"{part}/acc"] = accuracy_of(outs.mean(0), y)
    return per_member, overall


def save_ensemble(
    out: str | Path,
    ensemble: Ensemble,
    results: Sequence[Mapping[str, Any]],
    per_member: Sequence[Mapping[str, float]],
    overall: Mapping[str, float],
    *,
    configs: Sequence[TrainConfig],
    seeds: Sequence[int],
    splits: Splits,
    wall_s: float,
    extra_config: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Write the members' safetensors and the manifest (last: its presence means complete)."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    for i, r in enumerate(results):
        atomic_write_bytes(out / member_file(i), r["weights"])
    train_cfg = {k: v for k, v in configs[0].to_dict().items() if k != "seed"}
    member_rows = [
        {
            "file": member_file(i),
            "seed": seeds[i],
            "sha256": ensemble.fingerprints[i],
            **per_member[i],
            **{k: r[k] for k in ("status", "epochs", "best_epoch", "params", "wall_s", "host")},
            "gpu_ids": r["gpu_ids"],
            "train_val_acc": r["val_acc"],
            "history": r["history"],
        }
        for i, r in enumerate(results)
    ]
    manifest = build_manifest(
        MANIFEST_KIND,
        {"family": ensemble.spec["family"], "members": len(results), "train": train_cfg,
         "dataset": splits.name, "train_size": len(splits.train_y), **(extra_config or {})},
        seeds=seeds,
        dataset_fingerprint=splits.fingerprint,
        teacher_fingerprints=ensemble.fingerprints,
        extra={"spec": ensemble.spec, "preprocess": ensemble.preprocess.to_dict(),
               "members": member_rows, "ensemble": dict(overall), "wall_s": wall_s},
    )  # fmt: skip
    write_manifest(out, manifest)
    return manifest


def format_table(manifest: Mapping[str, Any]) -> str:
    """The members' and the ensemble's accuracies as a plain-text table."""
    lines = [
        f"{'member':10s} {'seed':>5s} {'params':>10s} {'val acc':>8s} {'test acc':>8s} {'time':>8s}"
    ]
    for i, m in enumerate(manifest["members"]):
        lines.append(
            f"{i:<10d} {m['seed']:>5d} {m['params']:>10,d} {100 * m['val/acc']:>7.2f}% "
            f"{100 * m['test/acc']:>7.2f}% {m['wall_s']:>7.1f}s"
        )
    ens = manifest["ensemble"]
    lines.append(
        f"{'ensemble':10s} {'':>5s} {'':>10s} {100 * ens['val/acc']:>7.2f}% "
        f"{100 * ens['test/acc']:>7.2f}% {manifest['wall_s']:>7.1f}s"
    )
    return "\n".join(lines)
