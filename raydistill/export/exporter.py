"""Export of the best students of a search into files a user loads (`load_student`).

`export_cell(DIR, selector, OUT)` writes `OUT/<cell>/`:

    model.safetensors   the best-validation weights of the cell's best trial (no pickle)
    spec.json           family, spec, params, budget, metrics, inputs (dtype, preprocessing,
                        input scale), classes (the dataset's class names, in label order),
                        dataset and teacher fingerprints, raydistill version,
                        sha256 of the weights, and what the self-check measured
    model.pt2           a `torch.export` program (batch dimension dynamic)
    model.onnx          with `onnx=True`, when the onnx + onnxscript packages are installed:
                        one file, weights inside (model.onnx.data beside it only past 1 GiB)

Every form takes raw images and returns logits: the preprocessing the student was trained with
is inside (`raydistill.export.inference.RawImageStudent`). `load_student` returns that module; the
program and the ONNX graph take the dataset's own image dtype (`inputs.dtype` in spec.json:
uint8 NCHW for image datasets, float32 for float datasets such as synthetic-sep); the module
takes uint8, or float in [0, 1].

Selectors (`raydistill.export.selection`): a full cell id `cnn-d2@1M` (the best trial of that
cell by validation accuracy), or `FAMILY@BUDGET` such as `cnn@1M` (the best over every depth of
that family at that budget). Append `:hard` to select among the hard-label twins instead (`cnn-d2@1M:hard`, exported as
`cnn-d2@1M-hard/`; twins are the "hard" trials of an experiment that also distils). Only finished or stopped trials are candidates.
A prune output (`raydistill prune --out DIR`: one pruned student) is exported like a search.

The self-check (`raydistill.export.verify`) runs before anything is visible: the reloaded
model's and the torch.export program's logits must match the checkpoint's, and their test
accuracy on the raw test images must equal the recorded one. The dataset for that comes from
`splits=` / `data=` or the search manifest's `config.data` (with `config.data_options`); it must
have the search's dataset fingerprint. Without it the export says "test accuracy not
re-verified" (in spec.json and on the console) rather than fail. With `address` (a study on Ray)
each export's test-set measurement is a Ray task (`verify.on_ray`, `cpus` CPUs); the files and
the manifest are written here, by the driver. Files are written into a temporary directory
renamed into place at the end; a failed check leaves nothing behind.
"""

from __future__ import annotations

import contextlib
import importlib.util
import inspect
import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from raydistill import __version__
from raydistill.core.errors import UserError
from raydistill.core.manifest import atomic_dir, atomic_write_text, sha256_file
from raydistill.core.numbers import finite
from raydistill.export.fetch import data_source, fetched_checkpoint, resolve_splits
from raydistill.export.inference import (
    RawImageStudent,
    num_outputs,
    read_json,
    rebuild,
    wrap,
)
from raydistill.export.selection import export_name, select_trial
from raydistill.export.verify import Measure, fixed_batch, self_check

if TYPE_CHECKING:
    from raydistill.data import Splits

FORMAT = 2  # 2: the exported module and program take raw images
_ONNX_INLINE_BYTES = 1 << 30  # weights up to 1 GiB go inside model.onnx (protobuf: < 2 GiB)


@dataclass
class ExportResult:
    """Where a student went and what its self-check measured."""

    cell: str
    path: Path
    params: int
    val_acc: float | None
    test_acc: float | None
    test_verified: bool
    note: str


# ---------------------------------------------------------------- entry points
def export_cell(
    directory: str | Path,
    selector: str,
    out_dir: str | Path,
    *,
    splits: Splits | None = None,
    data: str | None = None,
    verify_test: bool = True,
    onnx: bool = False,
    storage: str | None = None,
) -> Path:
    """Export the student `selector` names from search directory `directory`; its new path."""
    return export_cells(directory, [selector], out_dir, splits=splits, data=data,
                        verify_test=verify_test, onnx=onnx, storage=storage)[0].path  # fmt: skip


def export_cells(
    directory: str | Path,
    selectors: list[str] | None,
    out_dir: str | Path,
    *,
    splits: Splits | None = None,
    data: str | None = None,
    verify_test: bool = True,
    onnx: bool = False,
    storage: str | None = None,
    address: str | None = None,
    cpus: float = 1.0,
) -> list[ExportResult]:
    """Export several selectors (None: the best trial of every cell, hard twins included).
    `storage`: the search's Tune storage when it moved (`raydistill.export.fetch`);
    `address`: measure the test accuracies in Ray tasks of `cpus` CPUs (a study on Ray)."""
    from raydistill.report import best_configs, load_results

    d, out = Path(directory), Path(out_dir)
    if storage is not None:  # DIR made by another machine's search: its outputs from storage
        from raydistill.search.settings import pull_search

        pull_search(storage, d)
    manifest = read_json(d / "manifest.json") or {}
    if (d / "prune.json").is_file() and not (d / "trials.parquet").is_file():
        rows = [_pruned_row(d, selectors)]  # a pruned student (`raydistill prune --out DIR`)
    else:
        df = load_results(d)
        rows = (
            [select_trial(df, s) for s in selectors]
            if selectors is not None
            else [r for _, r in best_configs(df).iterrows()]
        )
    if not rows:
        raise UserError(f"{d / 'trials.parquet'} has no finished or stopped trial to export")
    data_splits, reason = (None, "verification of the test accuracy was not requested")
    if verify_test:
        data_splits, reason = resolve_splits(manifest, splits=splits, data=data)
    with _measurement(data_splits, address, cpus) as measure:
        results = [export_trial(r, out / export_name(r), manifest=manifest, splits=data_splits,
                                no_data_reason=reason, onnx=onnx, storage=storage,
                                measure=measure) for r in rows]  # fmt: skip
    _write_export_manifest(out, d, manifest, results)
    return results


@contextlib.contextmanager
def _measurement(
    splits: Splits | None, address: str | None, cpus: float
) -> Iterator[Measure | None]:
    """Where the exports' test accuracies are measured: in this process (None) without an
    `address` or a dataset, else in Ray tasks of a Ray session at `address`."""
    if address is None or splits is None:
        yield None
        return
    from raydistill.core.cluster import ray_session
    from raydistill.export.verify import on_ray

    with ray_session(address):
        yield on_ray(splits, cpus)


def _pruned_row(d: Path, selectors: list[str] | None) -> dict[str, Any]:
    """The one student of a prune output, when the selectors name it (or none is given)."""
    from raydistill.export.prune import read_prune_row

    row = read_prune_row(d / "prune.json")
    other = [s for s in selectors or [] if s != row["cell"]]
    if other:
        raise UserError(f"{d} holds one pruned student, {row['cell']}; --cell {other[0]} is not it")
    if not row.get("checkpoint"):
        raise UserError(
            f"{d} is a pruned student without fine-tuning (no checkpoint/): it is already an export; load it with load_student({str(d)!r})"
        )
    return row


# ---------------------------------------------------------------- one trial
def export_trial(
    row: Mapping[str, Any],
    target: str | Path,
    *,
    manifest: Mapping[str, Any] | None = None,
    splits: Splits | None = None,
    no_data_reason: str = "no dataset",
    onnx: bool = False,
    storage: str | None = None,
    measure: Measure | None = None,
) -> ExportResult:
    """Export one trial (a row of trials.parquet) into `target`, self-checked, atomically;
    its checkpoint is read through its storage URI (`raydistill.export.fetch`)."""
    from raydistill.export.fetch import EXPORT_FILES
    from raydistill.training.checkpoint import load_tensors, read_checkpoint

    with fetched_checkpoint(row, storage) as ckpt:  # through storage, never the workers' disks
        meta = read_checkpoint(ckpt, files=EXPORT_FILES)
        state = load_tensors(ckpt, "best")
        where = Path(str(row.get("checkpoint")))
    target = Path(target)
    with atomic_dir(target) as tmp:  # a failed check leaves nothing behind
        result = write_student(tmp, meta, state, row, manifest=manifest, splits=splits,
                               no_data_reason=no_data_reason, onnx=onnx, where=where,
                               measure=measure)  # fmt: skip
    result.path = target
    return result


def write_student(
    directory: Path,
    meta: Mapping[str, Any],
    state: dict[str, torch.Tensor],
    row: Mapping[str, Any],
    *,
    manifest: Mapping[str, Any] | None = None,
    splits: Splits | None = None,
    no_data_reason: str = "no dataset",
    onnx: bool = False,
    where: Path | None = None,
    measure: Measure | None = None,
) -> ExportResult:
    """Write the export layout (model.safetensors, spec.json, model.pt2[, model.onnx]) of the
    network `meta["spec"]` with weights `state` into the existing `directory`, self-checked.
    `meta`: a checkpoint's meta (spec, config, preprocess); `row`: its trials-table row;
    `measure`: where the test accuracy is measured (`raydistill.export.verify`; this process)."""
    inputs = _inputs(meta, _input_dtype(splits, manifest or {}))
    reference = wrap(rebuild(meta["spec"], state, where or directory), inputs)
    params = sum(p.numel() for p in reference.parameters())
    recorded = finite(row.get("params"))
    if recorded is not None and int(recorded) != params:
        raise UserError(
            f"{row.get('checkpoint')}: the checkpoint's model has {params} parameters, the results table says {int(recorded)}"
        )
    classes = class_names(splits, manifest or {}, num_outputs(meta["spec"]))
    tmp = Path(directory)
    spec_json = _write_files(tmp, reference, inputs, meta, row, manifest or {}, onnx, classes)
    check = self_check(tmp, reference, inputs, row, splits, no_data_reason, measure)
    spec_json["verification"] = check
    atomic_write_text(tmp / "spec.json", json.dumps(spec_json, indent=2) + "\n")
    return ExportResult(
        export_name(row), tmp, params, finite(row.get("val/acc")), check["test_acc"],
        check["test_verified"], check["note"],
    )  # fmt: skip


def _inputs(meta: Mapping[str, Any], dtype: str) -> dict[str, Any]:
    """spec.json's "inputs": what the exported forms take and the pipeline inside them."""
    cfg = meta.get("config") or {}
    shape = [int(s) for s in meta["spec"].get("in_shape", (3, 32, 32))]
    values = "0..255" if dtype == "uint8" else "the dataset's float values (images: [0, 1])"
    return {
        "shape": shape, "dtype": dtype, "layout": "NCHW", "values": values,
        "preprocess": meta.get("preprocess") or {"mode": "none"},
        "input_scale": float(cfg.get("input_scale", 1.0)),
        "channels_last": bool(cfg.get("channels_last", False)),
    }  # fmt: skip


def class_names(
    splits: Splits | None, manifest: Mapping[str, Any], num_classes: int
) -> list[str] | None:
    """The class names in label order: the splits' when known, else the search manifest's
    `classes`; None when neither has as many names as the network has outputs (an older search)."""
    names = list(splits.classes) if splits is not None else manifest.get("classes")
    if not isinstance(names, list) or len(names) != num_classes:
        return None
    return [str(n) for n in names]


def _input_dtype(splits: Splits | None, manifest: Mapping[str, Any]) -> str:
    """The dtype of the dataset's images: the splits' when known, else from the source name."""
    if splits is not None:
        return "uint8" if splits.test_x.dtype == "uint8" else "float32"
    source = data_source(manifest.get("config") or {}) or ""
    return "float32" if source.startswith("synthetic-sep") else "uint8"


def _write_files(
    tmp: Path, model: RawImageStudent, inputs: dict[str, Any], meta: Mapping[str, Any],
    row: Mapping[str, Any], manifest: Mapping[str, Any], onnx: bool,
    classes: list[str] | None = None,
) -> dict[str, Any]:  # fmt: skip
    from safetensors.torch import save_file

    net_state = model.net.state_dict()
    weights = {k: v.detach().cpu().contiguous() for k, v in net_state.items()}
    save_file(weights, str(tmp / "model.safetensors"), metadata={"format": "pt"})
    example = fixed_batch(inputs)
    program = torch.export.export(
        model, (example,), dynamic_shapes=({0: torch.export.Dim("batch")},)
    )
    torch.export.save(program, str(tmp / "model.pt2"))
    files = ["model.safetensors", "spec.json", "model.pt2"]
    if onnx:
        files += _write_onnx(tmp, model, example)
    spec_json = _spec_json(model.net, meta, row, manifest, files)
    spec_json["classes"] = classes
    spec_json["inputs"] = {**inputs, **model.inputs()}
    spec_json["model_sha256"] = sha256_file(tmp / "model.safetensors")
    atomic_write_text(tmp / "spec.json", json.dumps(spec_json, indent=2) + "\n")
    return spec_json


def _spec_json(
    model: nn.Module, meta: Mapping[str, Any], row: Mapping[str, Any],
    manifest: Mapping[str, Any], files: list[str],
) -> dict[str, Any]:  # fmt: skip
    cfg = meta.get("config") or {}
    metrics = {k: finite(row.get(k)) for k in ("val/acc", "val/loss", "test/acc") if k in row}
    metrics.update(
        {k: int(row[k]) for k in ("epochs", "best_epoch") if finite(row.get(k)) is not None}
    )
    return {
        "format": FORMAT,
        "raydistill": __version__,
        "family": meta["spec"]["family"],
        "spec": meta["spec"],
        "params": sum(p.numel() for p in model.parameters()),
        "budget": int(row["budget"]),
        "budget_kind": row.get("budget_kind") or "params",
        **student_costs(meta["spec"]),
        "cell": str(row["cell"]),
        "experiment": str(row.get("experiment", "")),
        "trial_id": str(row["trial_id"]),
        "loss": row.get("loss") or cfg.get("loss"),
        "metrics": metrics,
        "train_config": cfg,
        "dataset_fingerprint": manifest.get("dataset_fingerprint"),
        "teacher_fingerprints": manifest.get("teacher_fingerprints"),
        "files": files,
    }


def student_costs(spec: Mapping[str, Any]) -> dict[str, Any]:
    """An exported student's MACs per image (counted) and latency per image on this machine's
    CPU at batch 1 (measured: median of repeated runs, `cost.CPU_THREADS` threads, as budgets)."""
    from raydistill.students.cost import CPU_THREADS, count_macs, measure_latency

    return {"macs": count_macs(spec),
            "latency_us": {"cpu-b1": round(measure_latency(spec, "cpu", 1), 1),
                           "threads": CPU_THREADS}}  # fmt: skip


def _write_onnx(tmp: Path, model: nn.Module, example: torch.Tensor) -> list[str]:
    missing = [m for m in ("onnx", "onnxscript") if importlib.util.find_spec(m) is None]
    if missing:
        print(
            f"raydistill: ONNX export skipped: {', '.join(missing)} not installed (pip install 'raydistill[onnx]')"
        )
        return []
    # One file (weights inside) unless protobuf's 2 GiB limit forces model.onnx.data beside it.
    weight_bytes = sum(p.numel() * p.element_size() for p in model.parameters())
    options = {"external_data": weight_bytes > _ONNX_INLINE_BYTES}
    if "external_data" not in inspect.signature(torch.onnx.export).parameters:  # torch 2.5
        options = {}
    torch.onnx.export(model, (example,), str(tmp / "model.onnx"), dynamo=True,
                      dynamic_shapes=({0: torch.export.Dim("batch")},), **options)  # fmt: skip
    return sorted(p.name for p in tmp.glob("model.onnx*"))


def _write_export_manifest(
    out: Path, source: Path, manifest: Mapping[str, Any], results: list[ExportResult]
) -> None:
    from raydistill.core.manifest import build_manifest, write_manifest

    previous = (read_json(out / "manifest.json") or {}).get("exports") or {}
    exports = {**previous, **{r.cell: {"path": r.path.name, "params": r.params, "test_acc": r.test_acc,
                                       "test_verified": r.test_verified} for r in results}}  # fmt: skip
    write_manifest(out, build_manifest(
        "export", {"source": str(source.resolve())}, seeds=None,
        dataset_fingerprint=manifest.get("dataset_fingerprint"),
        teacher_fingerprints=manifest.get("teacher_fingerprints"), extra={"exports": exports},
    ))  # fmt: skip
