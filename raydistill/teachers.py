"""Teacher ensembles: training members in parallel (Ray tasks), saving, loading, evaluating.

`teach(...)` trains `members` copies of a teacher family (`vgg8`, `resnet9`) that differ only in
their seed, each as one Ray task running the plain-PyTorch `train_student` on hard labels. The
dataset goes into Ray's object store once (`ray.put`); every task gets the same reference. The
driver averages the members' logits, evaluates the ensemble and writes

    DIR/member-<i>.safetensors   weights only (best-validation weights of member i)
    DIR/manifest.json            config, seeds, versions, dataset and teacher fingerprints,
                                 per-member and ensemble accuracies

`load_ensemble(DIR)` rebuilds the members and refuses any file whose sha256 differs from the
fingerprint recorded in the manifest. Ray is imported inside `train_members` only.
"""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor, nn

from raydistill.device import resolve_device
from raydistill.errors import UserError
from raydistill.manifest import (
    atomic_write_bytes,
    build_manifest,
    read_manifest,
    sha256_bytes,
    write_manifest,
)
from raydistill.students import build, complete_spec, get_family, has_conv

if TYPE_CHECKING:
    from raydistill.data import Preprocess, Splits
    from raydistill.train import TrainConfig

MANIFEST_KIND = "teacher"

# Training recipes per teacher family (SGD + Nesterov, cosine schedule with linear warm-up).
# resnet9: the DAWNBench / airbench recipe (large LR thanks to BN and the 0.125 output scale),
# PyTorch's default init. vgg8 (no BN by default, dropout 0.5): a smaller LR and Glorot-uniform
# init with gain √2 (He-like for ReLU): PyTorch's default init shrinks the signal ~1/√3 per
# layer, and through 11 plain layers the net did not learn at all (10 % after 4 epochs).
RECIPES: dict[str, dict[str, Any]] = {
    "resnet9": {"lr": 0.2, "batch_size": 256, "weight_decay": 5e-4, "label_smoothing": 0.2,
                "init": "default"},
    "vgg8": {"lr": 0.02, "batch_size": 128, "weight_decay": 5e-4, "label_smoothing": 0.0,
             "init": "glorot", "init_scale": 2**0.5},
}  # fmt: skip
DEFAULT_RECIPE = {"lr": 0.05, "batch_size": 128, "weight_decay": 5e-4, "init": "default"}


def member_file(i: int) -> str:
    return f"member-{i}.safetensors"


# ----------------------------------------------------------------------------- specs / configs


def teacher_spec(
    family: str,
    splits: Splits,
    *,
    widths: Sequence[int] | None = None,
    width_scale: float = 1.0,
    **spec_keys: Any,
) -> dict[str, Any]:
    """A complete teacher spec: the family's default widths × `width_scale`, or `widths`."""
    fam = get_family(family)
    if fam.kind != "teacher":
        raise UserError(f"family {family!r} is a {fam.kind}; teacher families: {_teacher_names()}")
    defaults = fam.defaults()
    if widths is None:
        if width_scale <= 0:
            raise UserError(f"width scale {width_scale} must be > 0")
        widths = [max(1, round(w * width_scale)) for w in defaults["widths"]]
    spec = {"family": family, "depth": defaults["depth"], **spec_keys, "widths": list(widths)}
    spec = complete_spec(spec, splits)
    from raydistill.students import check_spec

    check_spec(spec)  # a UserError naming a bad key / width count, before any training starts
    return spec


def _teacher_names() -> str:
    from raydistill.students import families

    return ", ".join(families("teacher"))


def member_config(family: str, epochs: int, seed: int, **overrides: Any) -> TrainConfig:
    """The TrainConfig of one member: hard labels, cosine schedule, random flips and
    translations, the family's recipe (`RECIPES`), then `overrides` (None = keep)."""
    from raydistill.train import TrainConfig

    values = {
        "loss": "hard",
        "schedule": "cosine",
        "augment": "flip_translate",
        **RECIPES.get(family, DEFAULT_RECIPE),
        "max_epochs": int(epochs),
        "warmup_epochs": max(1, int(epochs) // 5) if epochs > 1 else 0,
        "seed": int(seed),
    }
    values.update({k: v for k, v in overrides.items() if v is not None})
    return TrainConfig.from_dict(values)


# ----------------------------------------------------------------------------- one member


def train_member(
    spec: dict[str, Any], splits: Splits, config: dict[str, Any], progress: Any = None
) -> dict[str, Any]:
    """Train one member (in a Ray task or in-process); returns its weights as safetensors bytes
    and its metrics. Plain data only, so the result travels through Ray's object store.
    `progress`: a queue (`ray.util.queue.Queue`) that gets (seed, epoch, val/acc) per epoch."""
    from safetensors.torch import save

    from raydistill.train import TrainConfig, train_student

    def report(metrics: dict[str, Any], save_fn: Any) -> None:
        progress.put_nowait((config["seed"], metrics["epoch"], metrics.get("val/acc")))

    cfg = TrainConfig.from_dict(config)
    res = train_student(spec, splits, None, cfg, report=report if progress is not None else None)
    state = {k: v.detach().cpu().contiguous() for k, v in res.state_dict.items()}
    return {
        "weights": save(state),
        "status": res.status,
        "val_acc": res.best_val_acc,
        "test_acc": res.test_acc,
        "epochs": res.epochs,
        "best_epoch": res.best_epoch,
        "params": res.params,
        "wall_s": res.wall_s,
        "history": res.history,
        "seed": config["seed"],
        "host": socket.gethostname(),
        "gpu_ids": _gpu_ids(),
    }


def _gpu_ids() -> list[str]:
    # Ray sets CUDA_VISIBLE_DEVICES for a task that asked for GPUs (even fractional ones).
    visible = os.environ.get("CUDA_VISIBLE_DEVICES", "")
    return [g for g in visible.split(",") if g]


# ----------------------------------------------------------------------------- Ray


def gpu_fraction_for(members: int, gpus: float) -> float:
    """GPUs per member task: a whole GPU each when there are enough, else an equal share
    (1/k with k members per GPU), so Ray packs k tasks on each GPU."""
    if gpus <= 0:
        return 0.0
    if members <= gpus:
        return 1.0
    per_gpu = -(-members // int(max(gpus, 1)))  # ceil
    return 1.0 / per_gpu


def train_members(
    spec: dict[str, Any],
    splits: Splits,
    configs: Sequence[TrainConfig],
    *,
    address: str = "local",
    num_cpus: int | None = None,
    gpu_fraction: float | None = None,
) -> list[dict[str, Any]]:
    """Train one member per config as parallel Ray tasks; results in config order.

    `address`: "local" starts a private local Ray when none is running in this process (and
    shuts it down afterwards), "auto" or "host:port" joins a running cluster. Each task asks
    for `gpu_fraction` GPUs when the cluster has GPUs (default: `gpu_fraction_for`), else 1 CPU.
    """
    from raydistill.cluster import ray_session

    with ray_session(address, num_cpus) as ray:
        gpus = float(ray.cluster_resources().get("GPU", 0.0))
        frac = gpu_fraction_for(len(configs), gpus) if gpu_fraction is None else gpu_fraction
        opts = {"num_gpus": frac, "num_cpus": 1} if frac > 0 else {"num_cpus": 1}
        task = ray.remote(max_retries=0, **opts)(train_member)
        data_ref = ray.put(splits)  # once: every member reads the same object-store copy
        queue = _progress_queue()
        refs = [task.remote(spec, data_ref, c.to_dict(), queue) for c in configs]
        _show_progress(ray, refs, queue, sum(c.max_epochs for c in configs))
        return ray.get(refs)


def _progress_queue() -> Any:
    from ray.util.queue import Queue

    return Queue(actor_options={"num_cpus": 0})  # holds no CPU a member could use


def _show_progress(ray: Any, refs: list, queue: Any, total: int) -> None:
    """A progress bar (epochs done of all members, ETA, each member's last val/acc) until
    every member task has ended."""
    from tqdm import tqdm

    accs: dict[int, float] = {}
    with tqdm(total=total, desc="teacher members (epochs)", unit="ep", smoothing=0.1) as bar:
        pending = list(refs)
        while pending:
            _, pending = ray.wait(pending, num_returns=len(pending), timeout=2.0)
            while not queue.empty():
                seed, _, acc = queue.get_nowait()
                bar.update(1)
                if acc is not None:
                    accs[seed] = acc
                    bar.set_postfix_str(
                        " ".join(f"s{k}:{100 * v:.1f}%" for k, v in sorted(accs.items()))
                    )


# ----------------------------------------------------------------------------- ensembles


@dataclass
class Ensemble:
    """Eval-mode members whose logits are averaged; inputs are preprocessed floats."""

    members: list[nn.Module]
    preprocess: Preprocess
    fingerprints: list[str]
    manifest: dict[str, Any] = field(default_factory=dict)
    spec: dict[str, Any] = field(default_factory=dict)
    channels_last: bool = False

    @property
    def device(self) -> torch.device:
        return next(self.members[0].parameters()).device

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
        from raydistill.data import to_float

        correct = 0
        for s in range(0, len(y), batch_size):
            xb = to_float(x[s : s + batch_size].to(self.device))
            pred = self.logits(self.preprocess(xb)).argmax(1).cpu()
            correct += int((pred == y[s : s + batch_size].cpu()).sum())
        return correct / max(len(y), 1)


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


# ----------------------------------------------------------------------------- teach


def evaluate_members(
    ensemble: Ensemble, splits: Splits, batch_size: int = 1000
) -> tuple[list[dict[str, float]], dict[str, float]]:
    """Per-member and ensemble accuracy on the validation and test splits (each member runs
    once per image; the ensemble's prediction comes from the same logits, averaged)."""
    from raydistill.data import to_float

    per_member: list[dict[str, float]] = [{} for _ in ensemble.members]
    overall: dict[str, float] = {}
    for part in ("val", "test"):
        x, y = (torch.as_tensor(a) for a in splits.split(part))
        hits = torch.zeros(len(ensemble.members) + 1, dtype=torch.int64)  # members, ensemble
        for s in range(0, len(y), batch_size):
            xb = ensemble.preprocess(to_float(x[s : s + batch_size].to(ensemble.device)))
            if ensemble.channels_last:
                xb = xb.contiguous(memory_format=torch.channels_last)
            with torch.no_grad():
                outs = torch.stack([m(xb).float() for m in ensemble.members])  # (M, B, C)
            preds = torch.cat([outs, outs.mean(0, keepdim=True)]).argmax(-1).cpu()
            hits += (preds == y[s : s + batch_size]).sum(1)
        accs = (hits.double() / max(len(y), 1)).tolist()
        for i in range(len(ensemble.members)):
            per_member[i][f"{part}/acc"] = accs[i]
        overall[f"{part}/acc"] = accs[-1]
    return per_member, overall


def teach(
    splits: Splits,
    family: str,
    members: int,
    epochs: int,
    out: str | Path,
    *,
    widths: Sequence[int] | None = None,
    width_scale: float = 1.0,
    spec_keys: Mapping[str, Any] | None = None,
    train: Mapping[str, Any] | None = None,
    seed: int = 0,
    address: str = "local",
    num_cpus: int | None = None,
    gpu_fraction: float | None = None,
    data_source: str | None = None,
    split: Mapping[str, Any] | None = None,
    log: Callable[[str], None] = print,
) -> Ensemble:
    """Train an ensemble of `members` teachers (seeds seed..seed+members-1) and save it in `out`.

    `train` overrides fields of the family's recipe (lr, batch_size, weight_decay, ...).
    `data_source` and `split` (val_size, seed, train_subset) are recorded in the manifest so
    that `raydistill transfer` can load the same splits. Returns the ensemble (on the CPU)
    with its manifest.
    """
    if members < 1 or epochs < 1:
        raise UserError(f"teach needs members ≥ 1 and epochs ≥ 1, got {members} and {epochs}")
    spec = teacher_spec(family, splits, widths=widths, width_scale=width_scale, **(spec_keys or {}))
    seeds = [seed + i for i in range(members)]
    configs = [member_config(family, epochs, s, **(train or {})) for s in seeds]
    t0 = time.perf_counter()
    results = train_members(
        spec, splits, configs, address=address, num_cpus=num_cpus, gpu_fraction=gpu_fraction
    )
    wall = time.perf_counter() - t0
    from raydistill.train import make_preprocess

    preprocess = make_preprocess(configs[0].preprocess, splits)
    ensemble = make_ensemble(spec, [r["weights"] for r in results], preprocess)
    per_member, overall = evaluate_members(ensemble, splits)
    ensemble.manifest = save_ensemble(
        out, ensemble, results, per_member, overall, configs=configs, seeds=seeds,
        splits=splits, wall_s=wall, extra_config={"address": address, "data": data_source, "split": dict(split or {})},
    )  # fmt: skip
    log(format_table(ensemble.manifest))
    return ensemble


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
