"""A trained student with its input pipeline: raw images in, logits out.

Training feeds a student preprocessed floats: uint8 images / 255, standardised (`Preprocess`:
per image, with dataset statistics, or not at all), times `input_scale`. An exported student
must do the same by itself, or `load_student(p)(images)` answers wrongly. `RawImageStudent`
wraps the bare network (`.net`, whose weights are the export's safetensors) with exactly the
training loop's own functions (`to_float`, `Preprocess`), so the exported module, its
`torch.export` program and its ONNX graph all take raw images: uint8 NCHW, or float in [0, 1]
(the dataset's own float values for float datasets such as synthetic-sep). `load_student`
rebuilds one from an export directory (spec.json + model.safetensors, no pickle).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from raydistill.core.errors import ExportError, UserError, first_line
from raydistill.core.manifest import sha256_file
from raydistill.data.batches import Preprocess, to_float


class RawImageStudent(nn.Module):
    """`net` behind the preprocessing it was trained with; forward(images) → logits."""

    def __init__(
        self,
        net: nn.Module,
        preprocess: Mapping[str, Any] | None = None,
        input_scale: float = 1.0,
        channels_last: bool = False,
        classes: tuple[str, ...] | None = None,
    ) -> None:
        super().__init__()
        self.net = net
        # class names in label order (logits[:, i] is classes[i]); None for an export that
        # recorded none (made before exports recorded them)
        self.classes = tuple(classes) if classes is not None else None
        self.preprocess = Preprocess.from_dict(preprocess or {"mode": "none"})
        self.input_scale = float(input_scale)
        # the memory layout the net was trained and verified with (conv nets on the CPU)
        self.channels_last = bool(channels_last)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = to_float(images)
        x = self.preprocess(x)
        if self.input_scale != 1.0:
            x = x * self.input_scale
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        return self.net(x)

    def inputs(self) -> dict[str, Any]:
        """What spec.json records of the input pipeline."""
        return {
            "preprocess": self.preprocess.to_dict(),
            "input_scale": self.input_scale,
            "channels_last": self.channels_last,
        }


def wrap(
    net: nn.Module, inputs: Mapping[str, Any], classes: Sequence[str] | None = None
) -> RawImageStudent:
    """`net` with the input pipeline `inputs` (spec.json's "inputs") in front of it."""
    from raydistill.students import has_conv

    channels_last = bool(inputs.get("channels_last", False)) and has_conv(net)
    if channels_last:
        net = net.to(memory_format=torch.channels_last)
    model = RawImageStudent(
        net,
        inputs.get("preprocess"),
        float(inputs.get("input_scale", 1.0)),
        channels_last,
        tuple(classes) if classes is not None else None,
    )
    return model.eval()


# ---------------------------------------------------------------- loading
def load_student(path: str | Path) -> RawImageStudent:
    """Rebuild an exported student from `spec.json` + `model.safetensors` (no pickle), in eval mode.

    The module takes raw images (uint8 NCHW, or float in [0, 1]) and returns logits; `.net` is
    the bare network; `.classes` the class names in label order (`model.classes[i]` names
    `logits[:, i]`; None when the export recorded none). Refuses (`ExportError`, a `UserError`, naming the file) a path that is
    not an export, a missing, unreadable or truncated file, weights whose sha256 is not the one
    spec.json records, or a spec that builds another parameter count than spec.json records.
    """
    d = Path(path)
    d = d.parent if d.name == "spec.json" else d
    if not d.is_dir():
        raise ExportError(f"{d} does not exist or is not a directory; expected an exported student")
    meta = _read_spec(d / "spec.json")
    weights = d / "model.safetensors"
    if not weights.is_file():
        raise ExportError(f"{weights} is missing")
    digest = sha256_file(weights)
    if digest != meta["model_sha256"]:
        raise ExportError(
            f"{weights} has sha256 {digest[:16]}…, spec.json says {str(meta['model_sha256'])[:16]}…: the export was modified or truncated"
        )
    from raydistill.students import build

    try:
        n = sum(p.numel() for p in build(meta["spec"]).parameters())
    except (UserError, TypeError, ValueError) as exc:
        raise ExportError(f"{d / 'spec.json'}: its spec does not build ({exc})") from None
    if n != meta["params"]:
        raise ExportError(
            f"{d / 'spec.json'}: params is {meta['params']} but its spec builds {n} parameters: the file was modified"
        )
    net = rebuild(meta["spec"], _read_weights(weights), d)
    classes = meta.get("classes")
    if classes is not None and (not isinstance(classes, list) or len(classes) != _outputs(meta)):
        raise ExportError(
            f"{d / 'spec.json'}: classes must list {_outputs(meta)} names, one per output; got {classes!r}"
        )
    return wrap(net, meta.get("inputs") or {}, classes)


def _outputs(meta: Mapping[str, Any]) -> int:
    return num_outputs(meta["spec"])


def num_outputs(spec: Mapping[str, Any]) -> int:
    """The number of logits (classes) the net `spec` builds has, family defaults included."""
    from raydistill.students import check_spec

    fam, kwargs = check_spec(spec)
    return int({**fam.defaults(), **kwargs}["num_classes"])


def _read_spec(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise ExportError(f"{path} is missing; is {path.parent} an exported student?")
    meta = read_json(path)
    if meta is None:
        raise ExportError(f"{path} is not a JSON object; the export is damaged")
    missing = [k for k in ("spec", "params", "model_sha256") if k not in meta]
    if missing:
        raise ExportError(f"{path} lacks key(s) {missing}")
    return meta


def _read_weights(path: Path) -> dict[str, torch.Tensor]:
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        return load_file(str(path))
    except (SafetensorError, OSError) as exc:
        raise ExportError(f"{path} is not a readable safetensors file ({exc})") from None


def read_json(path: Path) -> dict[str, Any] | None:
    """A JSON object from `path`, or None when it is missing, unreadable or not an object."""
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError, UnicodeDecodeError):
        return None
    return data if isinstance(data, dict) else None


def rebuild(spec: Mapping[str, Any], state: dict[str, torch.Tensor], where: Path) -> nn.Module:
    """The bare network `spec` builds, with `state` loaded strictly, in eval mode."""
    from raydistill.students import build

    model = build(spec)
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        first = first_line(exc)
        raise ExportError(f"{where}: weights do not fit the spec {dict(spec)}: {first}") from exc
    return model.eval()
