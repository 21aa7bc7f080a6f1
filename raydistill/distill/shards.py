"""The ensemble's heavy inference as Ray tasks on GPU workers: its evaluation (`member_logits`:
every member's logits for a set of images) and the labelling of augmented views for the
transfer set (`view_logits`: the ensemble's logits for each epoch's views).

When the ensemble is given k ≥ 1 GPUs (`Ensemble.gpus`, declared by the caller: the teachers'
GPUs, `transfer --gpus`, the scale; never read from the cluster at call time, so the tasks wait
for an autoscaler's GPU node instead of running on CPUs), the images are split into k
contiguous shards (boundaries on multiples of the batch size, so every batch is the one the
in-process path would run) and each shard is one Ray task asking for one GPU
(`raydistill.core.resources.task_options`); the driver merges the shards' logits in order.
Tasks rebuild the ensemble from its weights (put in the object store once) on their own
device: CUDA when the task sees one, else the CPU (Ray's logical GPUs on a CPU machine set
CUDA_VISIBLE_DEVICES but there is no CUDA). With no GPUs everything runs in-process on the
ensemble's device. Ray must be up in this process when GPUs are given (the caller's session).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import Tensor

from raydistill.core.resources import task_options
from raydistill.data import AugConfig, DeviceSplit, epoch_plan
from raydistill.data.replay import replay_epoch

if TYPE_CHECKING:
    from raydistill.distill.ensemble import Ensemble

EPOCHS_PER_TASK = 4  # a labelling task replays this many epochs' shard (one ensemble build)


def shards_for(ensemble: Ensemble) -> int:
    """How many GPU shards to split `ensemble`'s work into; 0: run it in-process. In-process
    when it is given no GPUs, when it is not built from a registry spec (tasks rebuild it from
    spec + weights), or when its one GPU would be the one the driver already uses."""
    k = int(ensemble.gpus)
    if k < 1 or "family" not in ensemble.spec:
        return 0
    if k == 1 and ensemble.device.type == "cuda":
        return 0
    return k


def shard_bounds(n: int, shards: int, batch_size: int) -> list[tuple[int, int]]:
    """≤ `shards` contiguous (start, stop) ranges covering 0..n, split on batch boundaries."""
    batches = -(-n // batch_size)
    per = -(-batches // max(1, shards))
    return [(s * batch_size, min(n, (s + per) * batch_size)) for s in range(0, batches, per)]


def ensemble_payload(ensemble: Ensemble) -> dict[str, Any]:
    """What a task needs to rebuild `ensemble`: plain data (safetensors bytes per member)."""
    from safetensors.torch import save

    blobs = [
        save({k: v.detach().cpu().contiguous() for k, v in m.state_dict().items()})
        for m in ensemble.members
    ]
    return {"spec": ensemble.spec, "weights": blobs, "preprocess": ensemble.preprocess.to_dict()}


def _rebuild(payload: Mapping[str, Any]) -> Ensemble:
    from raydistill.data import Preprocess
    from raydistill.distill.ensemble import make_ensemble

    pre = Preprocess.from_dict(payload["preprocess"])
    return make_ensemble(payload["spec"], payload["weights"], pre, device="auto")


def _remote(fn: Any) -> Any:
    """`fn` as a Ray task on one GPU, made once per process (each `ray.remote` call would
    export the function to the cluster again)."""
    import ray

    if fn not in _REMOTES:
        _REMOTES[fn] = ray.remote(max_retries=1, **task_options(gpus=1.0))(fn)
    return _REMOTES[fn]


_REMOTES: dict[Any, Any] = {}


# ----------------------------------------------------------------------------- evaluation


def member_logits(ensemble: Ensemble, x: Tensor, *, batch_size: int = 1000) -> Tensor:
    """(M, N, C) float32 logits of every member for raw images x (N, C, H, W); sharded over
    the ensemble's GPUs when it is given any (on the CPU), else `ensemble.member_logits`."""
    k = shards_for(ensemble)
    if k < 1 or len(x) <= batch_size:
        return ensemble.member_logits(x, batch_size)
    import ray

    task = _remote(_member_logits_task)
    payload = ray.put(ensemble_payload(ensemble))
    xs = np.asarray(x.cpu())
    refs = [
        task.remote(payload, xs[a:b], batch_size) for a, b in shard_bounds(len(xs), k, batch_size)
    ]
    return torch.from_numpy(np.concatenate(ray.get(refs), axis=1))


def _member_logits_task(payload: Mapping[str, Any], x: np.ndarray, batch_size: int) -> np.ndarray:
    ens = _rebuild(payload)
    return ens.member_logits(torch.from_numpy(np.array(x)), batch_size).cpu().numpy()


# ----------------------------------------------------------------------------- views


@torch.no_grad()
def epoch_logits(
    ensemble: Ensemble,
    images: Tensor,
    order: Tensor,
    params: Mapping[str, Tensor],
    *,
    batch_size: int,
    parts: tuple[bool, bool],
) -> np.ndarray:
    """(n, C) ensemble logits of one epoch's views (view p = image order[p], params[·][p])."""
    out = [
        ensemble.logits(ensemble.preprocess(x)).float().cpu()
        for _, _, x in replay_epoch(images, order, params, batch_size, parts=parts)
    ]
    return torch.cat(out).numpy() if out else np.zeros((0, 0), np.float32)


def view_logits(
    ensemble: Ensemble,
    x: np.ndarray,
    *,
    seed: int,
    epochs: range,
    aug: AugConfig,
    batch_size: int,
    parts: tuple[bool, bool],
) -> Iterator[tuple[int, Tensor, dict[str, Tensor], np.ndarray]]:
    """(epoch, order, params, (n, C) logits) for each epoch of `epochs`, in order: epoch e's
    views are `epoch_plan(len(x), seed=seed, epoch=e, aug=aug)` of the images x (N, C, H, W).
    Sharded over the ensemble's GPUs when it is given any, else in-process."""
    n, k = len(x), shards_for(ensemble)
    if k < 1 or n <= batch_size:
        images = DeviceSplit.from_numpy(x, np.zeros(n, np.int64), ensemble.device).x
        for e in epochs:
            order, params = epoch_plan(n, seed=seed, epoch=e, aug=aug)
            logits = epoch_logits(
                ensemble, images, order, params, batch_size=batch_size, parts=parts
            )
            yield e, order, params, logits
        return
    yield from _sharded_views(ensemble, x, seed, epochs, aug, batch_size, parts, k)


def _sharded_views(
    ensemble: Ensemble,
    x: np.ndarray,
    seed: int,
    epochs: range,
    aug: AugConfig,
    batch_size: int,
    parts: tuple[bool, bool],
    k: int,
) -> Iterator[tuple[int, Tensor, dict[str, Tensor], np.ndarray]]:
    import ray

    task = _remote(_view_logits_task)
    payload, images = ray.put(ensemble_payload(ensemble)), ray.put(np.asarray(x))
    bounds = shard_bounds(len(x), k, batch_size)
    chunks = [epochs[i : i + EPOCHS_PER_TASK] for i in range(0, len(epochs), EPOCHS_PER_TASK)]
    # Every task at once (their arguments are a few numbers); results come back in order.
    refs = [
        [
            task.remote(payload, images, seed, list(c), aug.to_dict(), a, b, batch_size, parts)
            for a, b in bounds
        ]
        for c in chunks
    ]
    for chunk, shard_refs in zip(chunks, refs, strict=True):
        shards = ray.get(shard_refs)  # [shard][epoch in chunk] → (n_shard, C)
        for j, e in enumerate(chunk):
            order, params = epoch_plan(len(x), seed=seed, epoch=e, aug=aug)
            yield e, order, params, np.concatenate([s[j] for s in shards])


def _view_logits_task(
    payload: Mapping[str, Any],
    x: np.ndarray,
    seed: int,
    epochs: list[int],
    aug: dict,
    start: int,
    stop: int,
    batch_size: int,
    parts: tuple[bool, bool],
) -> list[np.ndarray]:
    """Rows start..stop of each epoch's views: only those images go to the device."""
    ens = _rebuild(payload)
    cfg = AugConfig.from_dict(aug)
    out = []
    for e in epochs:
        order, params = epoch_plan(len(x), seed=seed, epoch=e, aug=cfg)
        idx = order[start:stop].numpy()
        images = torch.from_numpy(np.ascontiguousarray(x[idx])).to(ens.device)
        local = torch.arange(len(idx))  # view p of the shard is image p of `images`
        shard_params = {k: v[start:stop] for k, v in params.items()}
        out.append(
            epoch_logits(ens, images, local, shard_params, batch_size=batch_size, parts=parts)
        )
    return out
