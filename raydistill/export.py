"""Export of the best students of a search, `load_student`, and the export's self-check.

`export_cell(DIR, selector, OUT)` writes `OUT/<cell>/`:

    model.safetensors   the best-validation weights of the cell's best trial (no pickle)
    spec.json           family, spec, params, budget, metrics, inputs (preprocessing), dataset
                        and teacher fingerprints, raydistill version, sha256 of the weights,
                        and what the self-check measured
    model.pt2           a `torch.export` program (batch dimension dynamic)
    model.onnx          with `onnx=True`, when the onnx + onnxscript packages are installed

Selectors: a full cell id `cnn-d2@1M` (the best trial of that cell by validation accuracy), or
`FAMILY@BUDGET` such as `cnn@1M` (the best over every depth of that family at that budget).
Append `:hard` to select among the hard-label twins instead (`cnn-d2@1M:hard`, exported as
`cnn-d2@1M-hard/`; twins are the "hard" trials of an experiment that also distils). Only finished or stopped trials are candidates.

The self-check runs before anything is visible: the reloaded model's logits must match the
checkpoint's to 1e-5 on a fixed batch (and so must the torch.export program's), and the test
accuracy re-evaluated with the training loop's preprocessing must equal the recorded one. The
dataset for that comes from `splits=` / `data=` or the search manifest's `config.data` (with
`config.data_options`); it must have the search's dataset fingerprint. Without it the export says "test accuracy not
re-verified" (in spec.json and on the console) rather than fail. Files are written into a
temporary directory renamed into place at the end; a failed check leaves nothing behind.
"""

from __future__ import annotations

import importlib.util
import json
import math
import os
import re
import shutil
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from raydistill import __version__
from raydistill.errors import UserError
from raydistill.manifest import atomic_write_text, sha256_file

if TYPE_CHECKING:
    import pandas as pd

    from raydistill.data import Splits

LOGITS_ATOL = 1e-5
FORMAT = 1
_CELL_RE = re.compile(r"^(?P<family>[A-Za-z0-9_]+?)(?:-d(?P<depth>\d+))?$")
_FIXED_BATCH = 8  # images in the fixed comparison batch (seeded N(0, 1) inputs)


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


# ---------------------------------------------------------------- selection
def parse_selector(selector: str) -> tuple[str, int | None, int, bool]:
    """'cnn-d2@1M' → ('cnn', 2, 1000000, False); 'cnn@1M:hard' → ('cnn', None, 1000000, True)."""
    from raydistill.budget import parse_budget

    text = selector.strip()
    hard = text.endswith(":hard")
    text = text.removesuffix(":hard")
    left, at, budget = text.partition("@")
    m = _CELL_RE.match(left)
    if not at or not m:
        raise UserError(
            f"cell {selector!r} is invalid; use FAMILY-dDEPTH@BUDGET (cnn-d2@1M) or FAMILY@BUDGET (cnn@1M), optionally with :hard"
        )
    depth = int(m["depth"]) if m["depth"] else None
    return m["family"], depth, parse_budget(budget), hard


def select_trial(df: pd.DataFrame, selector: str) -> pd.Series:
    """The best finished/stopped trial (by validation accuracy) that `selector` names."""
    from raydistill.report import DONE

    family, depth, budget, hard = parse_selector(selector)
    ok = df["status"].isin(DONE) & df["val/acc"].notna()
    ok &= (df["family"] == family) & (df["budget"] == budget)
    if depth is not None:
        ok &= df["depth"] == depth
    ok &= df["twin"] if hard else ~df["twin"]
    cand = df[ok]
    if cand.empty:
        have = sorted(set(df.loc[df["status"].isin(DONE), "cell"]))
        raise UserError(
            f"no finished trial matches {selector!r}; cells with finished trials: {have}"
        )
    return cand.sort_values(["val/acc", "trial_id"], ascending=[False, True]).iloc[0]


def export_name(row: Mapping[str, Any]) -> str:
    """Directory name of an exported trial: its cell id, '-hard' for a hard-label twin."""
    return str(row["cell"]) + ("-hard" if row.get("twin") else "")


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
) -> Path:
    """Export the student `selector` names from search directory `directory`; its new path."""
    return export_cells(directory, [selector], out_dir, splits=splits, data=data,
                        verify_test=verify_test, onnx=onnx)[0].path  # fmt: skip


def export_cells(
    directory: str | Path,
    selectors: list[str] | None,
    out_dir: str | Path,
    *,
    splits: Splits | None = None,
    data: str | None = None,
    verify_test: bool = True,
    onnx: bool = False,
) -> list[ExportResult]:
    """Export several selectors (None: the best trial of every cell, hard twins included)."""
    from raydistill.report import best_configs, load_results

    d, out = Path(directory), Path(out_dir)
    df = load_results(d)
    manifest = _read_json(d / "manifest.json") or {}
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
    results = [export_trial(r, out / export_name(r), manifest=manifest, splits=data_splits,
                            no_data_reason=reason, onnx=onnx) for r in rows]  # fmt: skip
    _write_export_manifest(out, d, manifest, results)
    return results


def resolve_splits(
    manifest: Mapping[str, Any], *, splits: Splits | None = None, data: str | None = None
) -> tuple[Splits | None, str]:
    """The dataset to re-verify test accuracy on, or (None, why not)."""
    from raydistill.data import load_dataset

    want = manifest.get("dataset_fingerprint")
    if splits is None:
        cfg = manifest.get("config") or {}
        source = data or _data_source(cfg)
        if not source:
            return None, "no dataset given (--data) and none recorded in the search manifest"
        try:
            splits = load_dataset(source, **_split_options(cfg))
        except (UserError, OSError) as exc:
            return None, f"dataset {source!r} could not be loaded ({exc})"
    if want and splits.fingerprint != want:
        return None, f"dataset fingerprint {splits.fingerprint} differs from the search's {want}"
    return splits, ""


def _data_source(cfg: Mapping[str, Any]) -> str | None:
    data = cfg.get("data")
    if isinstance(data, Mapping):
        data = data.get("source")
    return str(data) if data else None


def _split_options(cfg: Mapping[str, Any]) -> dict[str, Any]:
    """load_dataset's keyword arguments as the search recorded them (`config.data_options`)."""
    src = cfg.get("data_options")
    if not isinstance(src, Mapping):
        src = cfg.get("data") if isinstance(cfg.get("data"), Mapping) else {}
    keys = ("val_size", "seed", "train_subset", "cache_dir")
    return {k: src[k] for k in keys if src.get(k) is not None}


# ---------------------------------------------------------------- one trial
def export_trial(
    row: Mapping[str, Any],
    target: str | Path,
    *,
    manifest: Mapping[str, Any] | None = None,
    splits: Splits | None = None,
    no_data_reason: str = "no dataset",
    onnx: bool = False,
) -> ExportResult:
    """Export one trial (a row of trials.parquet) into `target`, self-checked, atomically."""
    from raydistill.checkpoint import load_tensors, read_checkpoint

    ckpt = Path(str(row.get("checkpoint") or ""))
    if not (ckpt / "checkpoint.json").is_file():
        raise UserError(f"trial {row['trial_id']} of {row['cell']}: checkpoint {ckpt} is missing")
    meta = read_checkpoint(ckpt)
    reference = _rebuild(meta["spec"], load_tensors(ckpt, "best"), ckpt)
    params = sum(p.numel() for p in reference.parameters())
    recorded = _num(row.get("params"))
    if recorded is not None and int(recorded) != params:
        raise UserError(
            f"{ckpt}: the checkpoint's model has {params} parameters, the results table says {int(recorded)}"
        )
    target = Path(target)
    tmp = target.parent / f".{target.name}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        spec_json = _write_files(tmp, reference, meta, row, manifest or {}, onnx)
        check = _self_check(tmp, reference, meta, row, splits, no_data_reason)
        spec_json["verification"] = check
        atomic_write_text(tmp / "spec.json", json.dumps(spec_json, indent=2) + "\n")
        _replace_dir(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return ExportResult(
        export_name(row), target, params, _num(row.get("val/acc")), check["test_acc"],
        check["test_verified"], check["note"],
    )  # fmt: skip


def _rebuild(spec: Mapping[str, Any], state: dict[str, torch.Tensor], where: Path) -> nn.Module:
    from raydistill.students import build

    model = build(spec)
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()[0]
        raise UserError(f"{where}: weights do not fit the spec {dict(spec)}: {first}") from exc
    return model.eval()


def _num(v: Any) -> float | None:
    if v is None:
        return None
    v = float(v)
    return None if math.isnan(v) else v


def _write_files(
    tmp: Path, model: nn.Module, meta: Mapping[str, Any], row: Mapping[str, Any],
    manifest: Mapping[str, Any], onnx: bool,
) -> dict[str, Any]:  # fmt: skip
    from safetensors.torch import save_file

    weights = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    save_file(weights, str(tmp / "model.safetensors"), metadata={"format": "pt"})
    example = _fixed_batch(meta["spec"])
    program = torch.export.export(
        model, (example,), dynamic_shapes=({0: torch.export.Dim("batch")},)
    )
    torch.export.save(program, str(tmp / "model.pt2"))
    files = ["model.safetensors", "spec.json", "model.pt2"]
    if onnx:
        files += _write_onnx(tmp, model, example)
    spec_json = _spec_json(model, meta, row, manifest, files)
    spec_json["model_sha256"] = sha256_file(tmp / "model.safetensors")
    atomic_write_text(tmp / "spec.json", json.dumps(spec_json, indent=2) + "\n")
    return spec_json


def _spec_json(
    model: nn.Module, meta: Mapping[str, Any], row: Mapping[str, Any],
    manifest: Mapping[str, Any], files: list[str],
) -> dict[str, Any]:  # fmt: skip
    cfg = meta.get("config") or {}
    metrics = {k: _num(row.get(k)) for k in ("val/acc", "val/loss", "test/acc") if k in row}
    metrics.update(
        {k: int(row[k]) for k in ("epochs", "best_epoch") if _num(row.get(k)) is not None}
    )
    return {
        "format": FORMAT,
        "raydistill": __version__,
        "family": meta["spec"]["family"],
        "spec": meta["spec"],
        "params": sum(p.numel() for p in model.parameters()),
        "budget": int(row["budget"]),
        "cell": str(row["cell"]),
        "experiment": str(row.get("experiment", "")),
        "trial_id": str(row["trial_id"]),
        "loss": row.get("loss") or cfg.get("loss"),
        "metrics": metrics,
        "inputs": {
            "shape": list(meta["spec"].get("in_shape", [])),
            "dtype": "float32 in [0, 1] (uint8 images / 255), NCHW",
            "preprocess": meta.get("preprocess"),
            "input_scale": cfg.get("input_scale", 1.0),
        },
        "train_config": cfg,
        "dataset_fingerprint": manifest.get("dataset_fingerprint"),
        "teacher_fingerprints": manifest.get("teacher_fingerprints"),
        "files": files,
    }


def _write_onnx(tmp: Path, model: nn.Module, example: torch.Tensor) -> list[str]:
    missing = [m for m in ("onnx", "onnxscript") if importlib.util.find_spec(m) is None]
    if missing:
        print(
            f"raydistill: ONNX export skipped: {', '.join(missing)} not installed (pip install 'raydistill[onnx]')"
        )
        return []
    torch.onnx.export(model, (example,), str(tmp / "model.onnx"), dynamo=True,
                      dynamic_shapes=({0: torch.export.Dim("batch")},))  # fmt: skip
    return ["model.onnx"]


def _fixed_batch(spec: Mapping[str, Any]) -> torch.Tensor:
    shape = tuple(int(s) for s in spec.get("in_shape", (3, 32, 32)))
    g = torch.Generator().manual_seed(0)
    return torch.randn((_FIXED_BATCH, *shape), generator=g)


def _replace_dir(tmp: Path, target: Path) -> None:
    # rename is atomic; an existing export is moved aside first and removed after the swap
    old = target.parent / f".{target.name}.old-{os.getpid()}"
    if target.exists():
        target.rename(old)
    tmp.rename(target)
    shutil.rmtree(old, ignore_errors=True)


# ---------------------------------------------------------------- self-check
@torch.no_grad()
def _self_check(
    tmp: Path, reference: nn.Module, meta: Mapping[str, Any], row: Mapping[str, Any],
    splits: Splits | None, no_data_reason: str,
) -> dict[str, Any]:  # fmt: skip
    x = _fixed_batch(meta["spec"])
    want = reference(x)
    reloaded = load_student(tmp)
    diff = float((reloaded(x) - want).abs().max())
    prog = float((torch.export.load(str(tmp / "model.pt2")).module()(x) - want).abs().max())
    if not (diff <= LOGITS_ATOL and prog <= LOGITS_ATOL):
        raise UserError(
            f"export of {row['cell']} failed its check: logits differ by {max(diff, prog):.3g} > {LOGITS_ATOL}"
        )
    out = {"logits_max_abs_diff": diff, "program_max_abs_diff": prog, "test_acc": None,
           "test_acc_recorded": _num(row.get("test/acc")), "test_verified": False}  # fmt: skip
    if splits is None:
        out["note"] = f"test accuracy not re-verified: {no_data_reason}"
        return out
    acc, n = _test_accuracy(reloaded, meta, splits)
    out["test_acc"] = acc
    rec = out["test_acc_recorded"]
    if rec is None:
        out["note"] = "test accuracy measured; the results table recorded none to compare"
        return out
    if round(acc * n) != round(rec * n):
        raise UserError(
            f"export of {row['cell']} failed its check: test accuracy {acc:.4f} != recorded {rec:.4f} ({n} images)"
        )
    out.update(test_verified=True, note=f"test accuracy re-verified on {n} images")
    return out


def _test_accuracy(model: nn.Module, meta: Mapping[str, Any], splits: Splits) -> tuple[float, int]:
    """Test accuracy with the training loop's own evaluation (preprocess, scale, layout)."""
    from raydistill.data import DeviceSplit, Preprocess
    from raydistill.train import evaluate

    cfg = meta.get("config") or {}
    conv = any(isinstance(m, nn.Conv2d) for m in model.modules())
    channels_last = bool(cfg.get("channels_last", False)) and conv
    if channels_last:  # the same memory layout (and so the same kernels) as in training
        model = model.to(memory_format=torch.channels_last)
    test = DeviceSplit.from_splits(splits, "test", "cpu")
    acc, _loss = evaluate(
        model, test, preprocess=Preprocess.from_dict(meta.get("preprocess") or {}),
        input_scale=float(cfg.get("input_scale", 1.0)),
        batch_size=int(cfg.get("eval_batch_size", 1000)), channels_last=channels_last,
    )  # fmt: skip
    return acc, len(test)


# ---------------------------------------------------------------- loading
def load_student(path: str | Path) -> nn.Module:
    """Rebuild an exported student from `spec.json` + `model.safetensors` (no pickle), in eval mode.

    Refuses (UserError) an export whose weights do not have the sha256 recorded in spec.json,
    or whose spec builds a model with another parameter count than spec.json records.
    """
    from safetensors.torch import load_file

    d = Path(path)
    d = d.parent if d.name == "spec.json" else d
    meta = _read_json(d / "spec.json")
    if meta is None:
        raise UserError(f"{d / 'spec.json'} is missing or not JSON; is {d} an exported student?")
    missing = [k for k in ("spec", "params", "model_sha256") if k not in meta]
    if missing:
        raise UserError(f"{d / 'spec.json'} lacks key(s) {missing}")
    weights = d / "model.safetensors"
    if not weights.is_file():
        raise UserError(f"{weights} is missing")
    digest = sha256_file(weights)
    if digest != meta["model_sha256"]:
        raise UserError(
            f"{weights} has sha256 {digest[:16]}…, spec.json says {str(meta['model_sha256'])[:16]}…: the export was modified"
        )
    from raydistill.students import build

    model = build(meta["spec"])
    n = sum(p.numel() for p in model.parameters())
    if n != meta["params"]:
        raise UserError(
            f"{d / 'spec.json'}: params is {meta['params']} but its spec builds {n} parameters: the file was modified"
        )
    return _rebuild(meta["spec"], load_file(str(weights)), d)


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError, UnicodeDecodeError):
        return None
    return data if isinstance(data, dict) else None


def _write_export_manifest(
    out: Path, source: Path, manifest: Mapping[str, Any], results: list[ExportResult]
) -> None:
    from raydistill.manifest import build_manifest, write_manifest

    previous = (_read_json(out / "manifest.json") or {}).get("exports") or {}
    exports = {**previous, **{r.cell: {"path": r.path.name, "params": r.params, "test_acc": r.test_acc,
                                       "test_verified": r.test_verified} for r in results}}  # fmt: skip
    write_manifest(out, build_manifest(
        "export", {"source": str(source.resolve())}, seeds=None,
        dataset_fingerprint=manifest.get("dataset_fingerprint"),
        teacher_fingerprints=manifest.get("teacher_fingerprints"), extra={"exports": exports},
    ))  # fmt: skip
