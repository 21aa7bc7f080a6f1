"""Teacher sources without torch: the `--teacher` strings (`parse_teacher`) and the input a
teacher declares (`TeacherInput`), so the CLI refuses a bad one before any heavy import.
`raydistill.distill.external` loads them (see its docstring for the forms and defaults).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl

from raydistill.core.errors import UserError
from raydistill.core.manifest import sha256_file

IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
CROP_PCT = 0.875  # "crop": resize to size / 0.875, then the centre size × size (timm's default)
LIBRARIES = ("torchvision", "timm")


@dataclass(frozen=True)
class TeacherInput:
    """How a teacher wants its images (it receives float32 [0, 1] NCHW views of the data)."""

    size: int | None = None  # square side; None: the data's own size
    resize: str = "resize"  # "resize" (bilinear to size) or "crop" (resize, then centre crop)
    mean: tuple[float, ...] = (0.0, 0.0, 0.0)
    std: tuple[float, ...] = (1.0, 1.0, 1.0)
    channels: str = "RGB"  # or "BGR"

    def __post_init__(self) -> None:
        if self.resize not in ("resize", "crop"):
            raise UserError(f"teacher input resize {self.resize!r} is invalid; valid: resize, crop")
        if self.channels not in ("RGB", "BGR"):
            raise UserError(f"teacher input channels {self.channels!r} is invalid; valid: RGB, BGR")
        if len(self.mean) != len(self.std) or min(self.std) <= 0:
            raise UserError(
                f"teacher input mean {self.mean} / std {self.std}: need equal lengths, std > 0"
            )
        if self.size is not None and int(self.size) < 1:
            raise UserError(f"teacher input size {self.size} is invalid; must be ≥ 1")

    def adapt(self, x: Any) -> Any:
        """float [0, 1] (N, C, H, W) tensor → what the teacher takes."""
        import torch
        import torch.nn.functional as F

        if self.size is not None and tuple(x.shape[-2:]) != (self.size, self.size):
            side = round(self.size / CROP_PCT) if self.resize == "crop" else self.size
            x = F.interpolate(
                x, size=(side, side), mode="bilinear", align_corners=False, antialias=True
            )
            if self.resize == "crop":
                top = (side - self.size) // 2
                x = x[..., top : top + self.size, top : top + self.size]
        if self.channels == "BGR":
            x = x.flip(1)
        mean = torch.tensor(self.mean, device=x.device, dtype=x.dtype).view(1, -1, 1, 1)
        std = torch.tensor(self.std, device=x.device, dtype=x.dtype).view(1, -1, 1, 1)
        return (x - mean) / std

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "mean": list(self.mean), "std": list(self.std)}


@dataclass(frozen=True)
class TeacherSource:
    """A parsed `--teacher` string: what to load and how it wants its input."""

    kind: str  # "pt2", "onnx", "torchvision", "timm", "module"
    path: str  # the file (.pt2 / .onnx / weights); "" for a Python module
    arch: str = ""  # torchvision / timm architecture name
    inputs: TeacherInput | None = None  # None: the kind's default
    text: str = ""
    # the TeacherInput fields the source declared ("?size=64": ("size",)); the others keep the
    # kind's default (a timm model asked for size=64 still gets timm's mean / std)
    declared: tuple[str, ...] = ()

    def input_over(self, default: TeacherInput) -> TeacherInput:
        """The teacher's input: what the source declared, the kind's `default` elsewhere."""
        if self.inputs is None:
            return default
        return replace(default, **{k: getattr(self.inputs, k) for k in self.declared})

    def record(self) -> dict[str, Any]:
        """The manifest's entry: source, kind, architecture, file sha256."""
        sha = sha256_file(self.path) if self.path else ""
        return {"source": self.text, "kind": self.kind, "arch": self.arch, "sha256": sha}


def parse_teacher(text: str) -> TeacherSource:
    """'m.onnx', 'm.pt2', 'torchvision:resnet18=w.safetensors?size=64' → a TeacherSource.

    Refuses (one line) an unknown form, a missing file, or a bad input declaration."""
    body, _, query = str(text).partition("?")
    inputs, declared = _parse_inputs(query, text) if query else (None, ())
    lib, sep, rest = body.partition(":")
    if sep and lib in LIBRARIES:
        arch, eq, weights = rest.partition("=")
        if not arch or not eq or not weights:
            raise UserError(
                f"--teacher {text!r}: use {lib}:ARCH=WEIGHTS (a local safetensors or state-dict file)"
            )
        path = _existing(weights, text, "weights file")
        return TeacherSource(lib, path, arch, inputs, text, declared)
    suffix = Path(body).suffix.lower()
    if suffix in (".pt2", ".onnx"):
        path = _existing(body, text, "file")
        return TeacherSource(suffix[1:], path, "", inputs, text, declared)
    raise UserError(
        f"--teacher {text!r} is not a raydistill teach directory, a .pt2 or .onnx file, or "
        f"torchvision:ARCH=WEIGHTS / timm:ARCH=WEIGHTS"
    )


def _existing(path: str, text: str, what: str) -> str:
    if not Path(path).is_file():
        raise UserError(f"--teacher {text!r}: {what} {path} does not exist")
    return path


def _numbers(value: str) -> tuple[float, ...]:
    return tuple(float(v) for v in value.split(","))


# a declared input key → how its value is read (ValueError: not a valid value)
_INPUT_KEYS: dict[str, Callable[[str], Any]] = {
    "size": int, "resize": str, "mean": _numbers, "std": _numbers, "channels": str.upper,
}  # fmt: skip


def _parse_inputs(query: str, text: str) -> tuple[TeacherInput, tuple[str, ...]]:
    given: dict[str, Any] = {}
    for key, value in parse_qsl(query, strict_parsing=False):
        if key not in _INPUT_KEYS:
            raise UserError(
                f"--teacher {text!r}: unknown input key {key!r}; valid: {', '.join(_INPUT_KEYS)}"
            )
        try:
            given[key] = _INPUT_KEYS[key](value)
        except ValueError:
            raise UserError(
                f"--teacher {text!r}: input {key}={value!r} is not valid (size: an integer; "
                f"mean, std: comma-separated numbers)"
            ) from None
    return TeacherInput(**given), tuple(given)


ALL_INPUT_KEYS = tuple(f.name for f in fields(TeacherInput))  # a whole TeacherInput given
