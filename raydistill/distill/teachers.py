"""Teacher ensembles: training members in parallel (Ray tasks); `raydistill.distill.ensemble` holds the
ensemble itself (building, saving, loading, evaluating), re-exported here.

`teach(...)` trains `members` copies of a teacher family (`vgg8`, `resnet9`) that differ only in
their seed, each as one Ray task running the plain-PyTorch `train_student` on hard labels. The
dataset goes into Ray's object store once (`ray.put`); every task gets the same reference. The
driver averages the members' logits, evaluates the ensemble and writes

    DIR/member-<i>.safetensors   weights only (best-validation weights of member i)
    DIR/manifest.json            config, seeds, versions, dataset and teacher fingerprints,
                                 per-member and ensemble accuracies

`load_ensemble(DIR)` rebuilds the members and refuses any file whose sha256 differs from the
fingerprint recorded in the manifest. Ray is imported inside `train_members` and `teach` only;
`teach` keeps one Ray session for training and evaluation, so the ensemble's val / test
evaluation runs as Ray tasks on the members' GPUs when they had any (`raydistill.distill.shards`).
"""

from __future__ import annotations

import socket
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from raydistill.core.device import gpu_ids
from raydistill.core.errors import UserError
from raydistill.distill.ensemble import (
    Ensemble,
    evaluate_members,
    format_table,
    make_ensemble,
    save_ensemble,
)
from raydistill.students import complete_spec, get_family

if TYPE_CHECKING:
    from raydistill.data import Splits
    from raydistill.training.config import TrainConfig

__all__ = [
    "DEFAULT_RECIPE",
    "RECIPES",
    "member_config",
    "member_fraction",
    "teach",
    "teacher_spec",
    "train_member",
    "train_members",
]

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
    from raydistill.training.config import TrainConfig

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

    from raydistill.training.config import TrainConfig
    from raydistill.training.loop import train_student

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
        "gpu_ids": gpu_ids(),
    }


# ----------------------------------------------------------------------------- Ray


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
    for `gpu_fraction` GPUs and 1 CPU (`member_fraction`: what was declared, never what the
    cluster has at this moment, so members wait for an autoscaler's GPU node).
    """
    from raydistill.core.cluster import ray_session
    from raydistill.core.resources import check_gpu_request, task_options

    with ray_session(address, num_cpus) as ray:
        frac = member_fraction(len(configs), gpu_fraction, address, ray)
        check_gpu_request(frac, address, "--gpu-fraction")
        task = ray.remote(max_retries=0, **task_options(frac))(train_member)
        data_ref = ray.put(splits)  # once: every member reads the same object-store copy
        queue = _progress_queue()
        refs = [task.remote(spec, data_ref, c.to_dict(), queue) for c in configs]
        _show_progress(ray, refs, queue, sum(c.max_epochs for c in configs))
        return ray.get(refs)


def member_fraction(members: int, declared: float | None, address: str, ray: Any) -> float:
    """GPUs per member task: the declared fraction; undeclared, a local Ray's GPUs (this
    machine's: fixed) shared by the members (`resources.member_gpus`), and 0 on a joined
    cluster (declare them: an autoscaling cluster may have no GPU node yet)."""
    from raydistill.core.resources import check_gpus, is_local, member_gpus

    if declared is not None:
        return check_gpus(declared, "--gpu-fraction")
    if not is_local(address):
        return 0.0
    return member_gpus(members, float(ray.cluster_resources().get("GPU", 0.0)))


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


# ----------------------------------------------------------------------------- teach


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
    from raydistill.core.cluster import ray_session
    from raydistill.core.resources import gpus_in_use
    from raydistill.training.config import make_preprocess

    t0 = time.perf_counter()
    with ray_session(address, num_cpus) as ray:  # one session: the evaluation shards use it
        frac = member_fraction(members, gpu_fraction, address, ray)
        results = train_members(
            spec, splits, configs, address=address, num_cpus=num_cpus, gpu_fraction=frac
        )
        wall = time.perf_counter() - t0
        preprocess = make_preprocess(configs[0].preprocess, splits)
        ensemble = make_ensemble(spec, [r["weights"] for r in results], preprocess)
        ensemble.gpus = gpus_in_use(members, frac)  # its evaluation: on the members' GPUs
        per_member, overall = evaluate_members(ensemble, splits)
    ensemble.manifest = save_ensemble(
        out,
        ensemble,
        results,
        per_member,
        overall,
        configs=configs,
        seeds=seeds,
        splits=splits,
        wall_s=wall,
        extra_config={
            "address": address,
            "data": data_source,
            "split": dict(split or {}),
            "gpu_fraction": frac,
            "gpus": ensemble.gpus,
        },
    )
    log(format_table(ensemble.manifest))
    return ensemble
