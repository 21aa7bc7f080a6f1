"""Prune-to-budget: structural pruning of a trained network to an exact parameter budget.

`prune_to_budget(source, budget, ...)` loads a trained network (a training checkpoint
directory or an exported student), removes whole channels / units with torch-pruning's
dependency graph until the parameter count is ≤ the budget and ≥ 99 % of it, fine-tunes the
result on the transfer set with `raydistill.training.loop.train_student`, and writes it as a
student: the export layout (`model.safetensors`, `spec.json`, `model.pt2`, self-checked by
`raydistill.export.exporter.write_student`, so `load_student(OUT)` loads it as is), its
fine-tuning checkpoint (`checkpoint/`), `prune.json` (what was pruned from what, and the
metrics, as plain JSON) and a manifest. `trials_row` gives its trials-table row (the cell is
`prune-<family>-d<depth>@<budget>`, e.g. `prune-cnn-d3@100k`); `read_prune_row` reads it back
from `prune.json`.

How widths are chosen: a registered family's widths are its *slots* (one channel count shared
by every layer built with it). The pruned net must stay a member of its family, so each slot is
shrunk as a whole: target widths w_i ≤ W_i come from a uniform scale s (w_i = ⌊s·W_i⌋, the
largest s that fits) and single units added while they fit. Then, for every layer of a slot,
the lowest-L2-norm channels of its dependency group (the layer's outputs, the next layer's
inputs, BatchNorm, Flatten→Linear, residual adds) are removed by torch-pruning; which layers
belong to which slot is read off a meta-device build with distinct marker widths. The pruned
weights then load, strictly, into `build(spec)` with the new widths: the spec alone
describes the result, like every other student.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor, nn

from raydistill.core.errors import UserError
from raydistill.core.manifest import atomic_dir
from raydistill.students import build, check_spec, get_family
from raydistill.students.budget import (
    count_params,
    fit_widths,
    format_budget,
    min_params,
    parse_param_count,
)

if TYPE_CHECKING:
    from raydistill.data import Splits
    from raydistill.distill.transfer.format import TransferSet
    from raydistill.training.config import TrainConfig, TrainResult

MIN_SHARE = 0.99  # pruned params / budget must reach this (when integer widths allow)
MARKER = 100_003  # marker widths MARKER + 7·i: no real layer has these channel counts
UNSUPPORTED = ("adder",)  # torch-pruning cannot trace custom autograd Functions


@dataclass
class PruneResult:
    """A pruned (and, when trained, fine-tuned) network and where it came from."""

    cell: str  # "prune-cnn-d3@100k"
    spec: dict[str, Any]  # the pruned net's spec (same family, smaller widths)
    params: int
    budget: int
    source: str  # the checkpoint / export it was pruned from
    source_spec: dict[str, Any]
    source_params: int
    state_dict: dict[str, Tensor]  # pruned weights, fine-tuned when `train` is set
    train: TrainResult | None = None
    out_dir: str | None = None


# ------------------------------------------------------------------ loading
def load_source(path: str | Path) -> tuple[dict[str, Any], dict[str, Tensor]]:
    """(spec, weights) of a training checkpoint dir (best weights), an exported student, or a
    teacher member (`TEACHER/member-K.safetensors`: the spec is the ensemble manifest's).

    Raises a one-line UserError when the directory is neither, or its weights do not fit its
    spec (missing / unexpected keys, wrong shapes).
    """
    from safetensors.torch import load_file

    from raydistill.training.checkpoint import load_checkpoint_weights

    d = Path(path)
    if (d / "checkpoint.json").is_file():
        spec, state = load_checkpoint_weights(d)
    elif (d / "spec.json").is_file() and (d / "model.safetensors").is_file():
        spec = json.loads((d / "spec.json").read_text())["spec"]
        state = load_file(str(d / "model.safetensors"))
    elif d.suffix == ".safetensors" and d.is_file() and (d.parent / "manifest.json").is_file():
        spec = json.loads((d.parent / "manifest.json").read_text()).get("spec")
        if not isinstance(spec, dict):
            raise UserError(f"{d.parent / 'manifest.json'} has no teacher spec")
        state = load_file(str(d))
    else:
        raise UserError(
            f"{d} is not a training checkpoint, an exported student or a teacher member file"
        )
    check_spec(spec)
    model = build(spec)
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        first = next((ln.strip() for ln in str(exc).splitlines()[1:] if ln.strip()), str(exc))
        raise UserError(f"checkpoint {d} does not match its spec {spec}: {first}") from None
    return dict(spec), state


# ------------------------------------------------------------------ target widths
def target_widths(spec: Mapping[str, Any], budget: int) -> list[int]:
    """Widths w_i ≤ the spec's W_i, params ≤ budget and as close to it as integers allow."""
    widths = [int(w) for w in spec["widths"]]

    def count(ws: Sequence[int]) -> int:
        return count_params({**spec, "widths": list(ws)})

    return fit_widths(widths, count, budget, cap=widths)


def slot_layers(spec: Mapping[str, Any]) -> dict[str, int]:
    """Module name → width slot, for every layer whose output width is a slot."""
    n = len(spec["widths"])
    markers = {MARKER + 7 * i: i for i in range(n)}
    with torch.device("meta"):
        model = build({**spec, "widths": list(markers)})
    out = {}
    for name, m in model.named_modules():
        width = getattr(m, "out_channels", None) or getattr(m, "out_features", None)
        if isinstance(m, (nn.Conv2d, nn.Linear)) and width in markers:
            out[name] = markers[width]
    return out


# ------------------------------------------------------------------ pruning
def prune_model(
    spec: Mapping[str, Any], state: Mapping[str, Tensor], widths: Sequence[int]
) -> dict[str, Tensor]:
    """Prune the net (spec, state) to `widths` with torch-pruning; returns the pruned weights.

    Each layer of slot i keeps its widths[i] output channels of largest group L2 norm.
    """
    import torch_pruning as tp

    model = build(spec)
    model.load_state_dict(state)
    model.eval()  # BatchNorm1d cannot trace a batch of one in training mode
    shape = spec.get("in_shape") or get_family(spec["family"]).defaults()["in_shape"]
    # A tuple: a bare tensor is first tried unpacked (model(*x): one image without its batch
    # dimension), which ran the net on (C, H, W) inputs and warned from Dropout2d.
    example = (torch.zeros(1, *shape),)
    graph = tp.DependencyGraph().build_dependency(model, example_inputs=example)
    importance = tp.importance.GroupMagnitudeImportance(p=2)
    modules = dict(model.named_modules())
    for name, slot in slot_layers(spec).items():
        m = modules[name]
        conv = isinstance(m, nn.Conv2d)
        fn = tp.prune_conv_out_channels if conv else tp.prune_linear_out_channels
        have = m.out_channels if conv else m.out_features
        drop = have - int(widths[slot])
        if drop <= 0:  # already pruned through a coupled layer (e.g. a residual add)
            continue
        scores = importance(graph.get_pruning_group(m, fn, idxs=list(range(have))))
        idxs = torch.argsort(scores)[:drop].tolist()  # the weakest channels
        group = graph.get_pruning_group(m, fn, idxs=idxs)
        if not graph.check_pruning_group(group):
            raise UserError(f"cannot prune {drop} channels of {name} in {spec['family']}")
        group.prune()
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def pruned_cell(spec: Mapping[str, Any], budget: int) -> str:
    """Trials-table cell id of a pruned net: `prune-<family>-d<depth>@<budget>`."""
    depth = spec.get("depth", get_family(spec["family"]).defaults().get("depth"))
    return f"prune-{spec['family']}-d{depth}@{format_budget(budget)}"


def prune_spec(
    spec: Mapping[str, Any], state: Mapping[str, Tensor], budget: int | str
) -> tuple[dict[str, Any], dict[str, Tensor]]:
    """(pruned spec, pruned weights) at ≤ budget; one-line UserErrors for impossible requests."""
    budget = parse_param_count(budget)
    fam, kwargs = check_spec(spec)
    spec = {"family": fam.name, **fam.defaults(), **kwargs}
    spec["widths"] = [int(w) for w in spec["widths"]]
    have = count_params(spec)
    if fam.name in UNSUPPORTED:
        raise UserError(f"family {fam.name!r} cannot be pruned (torch-pruning cannot trace it)")
    if budget > have:
        raise UserError(
            f"budget {format_budget(budget)} ({budget}) is above the network's size: {have} params"
        )
    fixed = {k: v for k, v in spec.items() if k not in ("family", "depth", "widths")}
    minimum = min_params(fam.name, int(spec["depth"]), **fixed)
    if budget < minimum:
        raise UserError(
            f"budget {format_budget(budget)} ({budget}) is below the minimum of family "
            f"{fam.name!r} at depth {spec['depth']}: {minimum} params"
        )
    widths = target_widths(spec, budget)
    new_spec = {**spec, "widths": widths}
    pruned = prune_model(spec, state, widths)
    model = build(new_spec)
    model.load_state_dict(pruned, strict=True)  # the spec alone describes the pruned net
    return new_spec, pruned


def fine_tune(
    spec: dict[str, Any],
    state: Mapping[str, Tensor],
    data: Splits,
    transfer: TransferSet | None,
    config: TrainConfig,
    checkpoint_dir: Path,
) -> TrainResult:
    """Train from `state` (not from a fresh init) with `train_student`, checkpointing each epoch.

    train_student starts from a random init; a checkpoint at epoch 0 holding the pruned weights
    makes it resume from them instead, through its own checkpoint format.
    """
    from raydistill.training.loop import Trainer, train_student

    start = Path(tempfile.mkdtemp(prefix=".prune-start-", dir=checkpoint_dir.parent))
    tr = Trainer(spec, data, transfer, config)
    tr.model.load_state_dict(dict(state))
    tr.best_state = tr._weights()
    tr.save(start, "running")
    del tr

    def report(metrics: dict[str, Any], save: Any) -> None:
        save(checkpoint_dir)  # the latest epoch; best.safetensors holds the best weights

    try:
        return train_student(spec, data, transfer, config, report=report, checkpoint=start)
    finally:  # the epoch-0 checkpoint is a means, not an output
        shutil.rmtree(start, ignore_errors=True)


def prune_to_budget(
    source: str | Path,
    budget: int | str,
    *,
    data: Splits | None = None,
    transfer: TransferSet | None = None,
    config: TrainConfig | None = None,
    out_dir: str | Path | None = None,
    data_config: Mapping[str, Any] | None = None,
    weights: tuple[dict[str, Any], dict[str, Tensor]] | None = None,
    moved_to: str | Path | None = None,
) -> PruneResult:
    """Prune the network in `source` to ≤ budget (≥ 99 %), fine-tune it, write it to `out_dir`.
    `data_config`: how `data` was loaded (`data`, `data_options`), for the manifest, so that
    `raydistill export OUT` can reload it to re-verify. A Ray task on another node passes the
    source's (spec, weights) as `weights` (`source` is then a path on the driver's node:
    recorded, not read) and `moved_to`, where the driver will put `out_dir`'s files (recorded
    in prune.json and the row as the student's place).

    Without `data` no fine-tuning happens (pruning only). With `out_dir` (replaced as a whole,
    atomically), it holds the student's export layout (`load_student(out_dir)`), `checkpoint/`
    (the fine-tuning's train_student checkpoint, with `data`), `prune.json` and `manifest.json`.
    Every input error is raised before anything is written.
    """
    budget = parse_param_count(budget)
    source_spec, state = weights if weights is not None else load_source(source)
    spec, pruned = prune_spec(source_spec, state, budget)
    result = PruneResult(
        cell=pruned_cell(spec, budget),
        spec=spec,
        params=count_params(spec),
        budget=budget,
        source=str(source),
        source_spec=source_spec,
        source_params=count_params(source_spec),
        state_dict=pruned,
    )
    if out_dir is None and data is None:
        return result
    out = Path(out_dir) if out_dir is not None else Path(tempfile.mkdtemp(prefix="prune-"))
    result.out_dir = str(moved_to if moved_to is not None else out)
    with atomic_dir(out) as tmp:  # an interrupted or refused run leaves nothing behind
        if data is not None:
            from raydistill.training.config import TrainConfig

            cfg = config if config is not None else TrainConfig()
            result.train = fine_tune(spec, pruned, data, transfer, cfg, tmp / "checkpoint")
            result.state_dict = result.train.state_dict
            result.spec = result.train.spec
        _write_pruned(tmp, result, source, data, data_config or {})
    return result


def _write_pruned(
    tmp: Path,
    result: PruneResult,
    source: str | Path,
    data: Splits | None,
    data_config: Mapping[str, Any],
) -> None:
    """The export layout, prune.json and the manifest of a pruned student, into `tmp`."""
    from raydistill.core.manifest import atomic_write_text, build_manifest, write_manifest
    from raydistill.export.exporter import write_student
    from raydistill.training.checkpoint import load_tensors, read_checkpoint

    row = trials_row(result)
    if result.train is not None:  # the fine-tuned best weights, with their input pipeline
        meta, state = read_checkpoint(tmp / "checkpoint"), load_tensors(tmp / "checkpoint", "best")
    else:  # pruned only: the source's input pipeline, the pruned weights
        meta, state = {**source_meta(source), "spec": result.spec}, result.state_dict
    reason = "pruned without --data: no dataset to measure it on"
    check = write_student(tmp, meta, state, row, splits=data, no_data_reason=reason)
    row["test/acc"] = check.test_acc if row["test/acc"] is None else row["test/acc"]
    atomic_write_text(tmp / "prune.json", json.dumps(prune_document(row), indent=2) + "\n")
    fingerprint = getattr(data, "fingerprint", None)
    config = {
        "source": str(source),
        "budget": result.budget,
        **data_config,
        "train": result.train.config if result.train else None,
    }
    manifest = build_manifest(
        "prune",
        config,
        seeds=[row["seed"]] if row["seed"] is not None else None,
        dataset_fingerprint=fingerprint,
        extra={"cell": result.cell, "params": result.params},
    )
    write_manifest(tmp, manifest)


def source_meta(source: str | Path) -> dict[str, Any]:
    """The training config and input preprocessing `source` was trained with (checkpoint.json,
    an export's spec.json or a teacher's manifest.json), as a checkpoint's meta holds them."""
    d = Path(source)
    if (d / "checkpoint.json").is_file():
        meta = json.loads((d / "checkpoint.json").read_text())
        return {"config": meta.get("config") or {}, "preprocess": meta.get("preprocess")}
    if (d / "spec.json").is_file():
        meta = json.loads((d / "spec.json").read_text())
        inputs = meta.get("inputs") or {}
        config = {**(meta.get("train_config") or {}), "input_scale": inputs.get("input_scale", 1.0)}
        return {"config": config, "preprocess": inputs.get("preprocess")}
    manifest = json.loads((d.parent / "manifest.json").read_text())  # a teacher member
    return {
        "config": (manifest.get("config") or {}).get("train") or {},
        "preprocess": manifest.get("preprocess"),
    }


_JSON_COLUMNS = ("config", "spec", "train")  # trials-table columns that hold JSON text
_SCHEDULER_COLUMNS = {"pruned": False, "failures": 0}  # a search scheduler's; not a prune's


def prune_document(row: Mapping[str, Any]) -> dict[str, Any]:
    """prune.json: the trials row as plain JSON (its JSON-text columns as objects), without the
    search scheduler's columns (`pruned` there means "stopped early by the scheduler")."""
    doc = {k: v for k, v in row.items() if k not in _SCHEDULER_COLUMNS}
    doc.update({k: json.loads(row[k]) for k in _JSON_COLUMNS if isinstance(row.get(k), str)})
    return doc


def read_prune_row(path: str | Path) -> dict[str, Any]:
    """The trials-table row a `prune.json` holds (`prune_document` undone)."""
    doc = json.loads(Path(path).read_text())
    row = {**doc, **_SCHEDULER_COLUMNS}
    row.update({k: json.dumps(doc[k]) for k in _JSON_COLUMNS if doc.get(k) is not None})
    return row


def trials_row(result: PruneResult, experiment: str = "prune", seed: int | None = None) -> dict:
    """The pruned cell's row, with the columns of trials.parquet (raydistill.search)."""
    tr = result.train
    best = next((h for h in (tr.history if tr else []) if h.get("epoch") == tr.best_epoch), {})
    family, depth = result.cell.split("-d")[0], int(result.spec["depth"])
    ckpt = str(Path(result.out_dir) / "checkpoint") if result.out_dir and tr else None
    return {
        "experiment": experiment, "run": "prune", "cell": result.cell, "family": family,
        "depth": depth, "budget": result.budget, "trial_id": result.cell,
        "status": tr.status if tr else "pruned-only",
        "config": json.dumps({"source": result.source, "source_params": result.source_params,
                              "source_spec": result.source_spec}, sort_keys=True),
        "spec": json.dumps(result.spec), "widths": list(result.spec["widths"]),
        "params": result.params, "params/budget": result.params / result.budget,
        "val/acc": tr.best_val_acc if tr else None, "val/loss": best.get("val/loss"),
        "test/acc": tr.test_acc if tr else None, "epochs": tr.epochs if tr else 0,
        "best_epoch": tr.best_epoch if tr else None, "wall_s": tr.wall_s if tr else None,
        "checkpoint": ckpt, "seed": seed if seed is not None else (tr.config["seed"] if tr else None),
        "loss": tr.config["loss"] if tr else None,
        "train": json.dumps(tr.config) if tr else None, "started_at": None, "ended_at": None,
        "gpu_ids": None, "error": None, "pruned": False, "failures": 0,
    }  # fmt: skip
