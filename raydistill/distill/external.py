"""Teachers from outside raydistill: a `torch.export` program (.pt2), an ONNX model (onnxruntime),
a timm or torchvision architecture by name with local weights, or any nn.Module / callable.

Each becomes one member of an `Ensemble` (averaged logits; several kinds mix freely) whose
preprocessing is "none": every member receives the data's views as float32 in [0, 1], NCHW,
and adapts them to its own declared input (`TeacherInput`: size, resize or centre crop, mean
and std, channel order) inside `TeacherModule`. Defaults: a .pt2 / ONNX teacher gets the
views as they are (this project's own exports take that); a timm / torchvision architecture
gets its library's standard normalisation (timm: the model's pretrained_cfg mean / std;
torchvision: ImageNet's) at the data's size. Nothing is downloaded: architectures are built
with pretrained=False / weights=None and the weights come from a local safetensors file or a
state dict read with `torch.load(weights_only=True)`.

Source strings (the CLI's `--teacher`): `model.pt2`, `model.onnx`, `torchvision:resnet18=W`,
`timm:resnet18=W` (W: the weights file), each optionally followed by `?size=224&resize=crop&
mean=0.485,0.456,0.406&std=0.229,0.224,0.225&channels=BGR` to declare the input; the keys it
names replace the kind's defaults, the others keep them (`timm:...?size=64` keeps timm's mean).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor, nn

from raydistill.core.errors import UserError
from raydistill.distill.sources import (
    ALL_INPUT_KEYS,
    IMAGENET_MEAN,
    IMAGENET_STD,
    TeacherInput,
    TeacherSource,
    parse_teacher,
)

if TYPE_CHECKING:
    from raydistill.data import Splits
    from raydistill.distill.ensemble import Ensemble


class TeacherModule(nn.Module):
    """An ensemble member: adapts [0, 1] views to the teacher's input, returns float32 logits."""

    def __init__(self, fn: Callable[[Tensor], Tensor], inputs: TeacherInput, source: str) -> None:
        super().__init__()
        self.fn = fn  # an nn.Module is registered (moves with .to()); a callable is kept as is
        self.inputs, self.source = inputs, source
        self.register_buffer("_where", torch.zeros(0), persistent=False)  # the member's device

    def train(self, mode: bool = True) -> TeacherModule:
        # A teacher only labels: eval mode. A torch.export program has its mode frozen in and
        # refuses train() / eval() (NotImplementedError): it is left as it was exported.
        self.training = mode
        if isinstance(self.fn, nn.Module):
            with contextlib.suppress(NotImplementedError):
                self.fn.train(mode)
        return self

    def forward(self, x: Tensor) -> Tensor:
        out = self.fn(self.inputs.adapt(x.float()))
        if isinstance(out, (tuple, list)):
            out = out[0]
        return torch.as_tensor(out).float().to(x.device)


class OnnxTeacher:
    """An ONNX model run by onnxruntime: the CUDA provider on a GPU, the CPU otherwise."""

    def __init__(self, path: Path, device: torch.device) -> None:
        import onnxruntime as ort

        cuda = device.type == "cuda" and "CUDAExecutionProvider" in ort.get_available_providers()
        providers = (
            ["CUDAExecutionProvider", "CPUExecutionProvider"] if cuda else ["CPUExecutionProvider"]
        )
        try:
            self.session = ort.InferenceSession(str(path), providers=providers)
        except Exception as exc:  # onnxruntime raises its own types for a file that is no model
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            raise UserError(
                f"teacher {path} is not an ONNX model onnxruntime can load: {first}"
            ) from None
        self.input = self.session.get_inputs()[0].name

    def __call__(self, x: Tensor) -> Tensor:
        out = self.session.run(None, {self.input: x.detach().cpu().numpy()})[0]
        return torch.from_numpy(out)


def load_teacher(src: TeacherSource, num_classes: int, device: torch.device) -> TeacherModule:
    """The member for one source, on `device` (eval mode, nothing downloaded)."""
    if src.kind == "onnx":
        return TeacherModule(
            OnnxTeacher(Path(src.path), device), src.input_over(TeacherInput()), src.text
        )
    if src.kind == "pt2":
        try:
            program = torch.export.load(src.path)
        except Exception as exc:
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            raise UserError(f"teacher {src.path} is not a torch.export program: {first}") from None
        fn = program.module()
        return TeacherModule(fn, src.input_over(TeacherInput()), src.text).to(device)
    model, default = _library_model(src, num_classes)
    return TeacherModule(model.eval(), src.input_over(default), src.text).to(device)


def _library_model(src: TeacherSource, num_classes: int) -> tuple[nn.Module, TeacherInput]:
    if src.kind == "timm":
        import timm

        try:
            model = timm.create_model(src.arch, pretrained=False, num_classes=num_classes)
        except Exception as exc:  # timm: RuntimeError "Unknown model"
            raise UserError(
                f"--teacher {src.text!r}: timm has no architecture {src.arch!r} ({exc})"
            ) from None
        cfg = getattr(model, "pretrained_cfg", None) or {}
        mean, std = tuple(cfg.get("mean", IMAGENET_MEAN)), tuple(cfg.get("std", IMAGENET_STD))
    else:
        import torchvision

        try:
            model = torchvision.models.get_model(src.arch, weights=None, num_classes=num_classes)
        except Exception as exc:  # ValueError "Unknown model"
            raise UserError(
                f"--teacher {src.text!r}: torchvision has no architecture {src.arch!r} ({exc})"
            ) from None
        mean, std = IMAGENET_MEAN, IMAGENET_STD
    _load_weights(model, src)
    return model, TeacherInput(mean=mean, std=std)


def _load_weights(model: nn.Module, src: TeacherSource) -> None:
    path = Path(src.path)
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(path))
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise UserError(
            f"teacher weights {path} are not a safetensors file or a state dict: {first}"
        ) from None
    if (
        isinstance(state, Mapping)
        and "state_dict" in state
        and isinstance(state["state_dict"], Mapping)
    ):
        state = state["state_dict"]
    try:
        model.load_state_dict(state, strict=True)
    except (RuntimeError, TypeError) as exc:
        lines = [ln.strip() for ln in str(exc).splitlines()[1:] if ln.strip()] or [str(exc)]
        raise UserError(
            f"teacher weights {path} do not fit {src.kind} {src.arch}: {lines[0]}"
        ) from None


def as_source(
    teacher: Any, inputs: TeacherInput | None = None
) -> TeacherSource | tuple[Any, TeacherInput]:
    """A string / path → TeacherSource; an nn.Module or callable → (it, its input)."""
    if isinstance(teacher, (str, Path)):
        src = parse_teacher(str(teacher))
        return replace(src, inputs=inputs, declared=ALL_INPUT_KEYS) if inputs is not None else src
    if isinstance(teacher, nn.Module) or callable(teacher):
        return teacher, inputs or TeacherInput()
    raise UserError(
        f"teacher {teacher!r} is not a path, a source string, an nn.Module or a callable"
    )


class Preprocessed(nn.Module):
    """A raydistill teacher member behind its own preprocessing (it then takes [0, 1] views)."""

    def __init__(self, member: nn.Module, preprocess: Callable[[Tensor], Tensor]) -> None:
        super().__init__()
        self.member, self.preprocess = member, preprocess

    def forward(self, x: Tensor) -> Tensor:
        return self.member(self.preprocess(x))


def external_ensemble(
    teachers: Sequence[Any],
    splits: Splits,
    device: str | torch.device = "cpu",
) -> Ensemble:
    """One ensemble of teachers of any kind (averaged logits), taking [0, 1] views.

    `teachers`: source strings or paths (a `raydistill teach` directory, .pt2, .onnx,
    torchvision:ARCH=W, timm:ARCH=W), nn.Modules or callables, or (teacher, TeacherInput)
    pairs. Refuses (one line naming it) a teacher whose output has another number of classes
    than the data."""
    from raydistill.core.device import resolve_device
    from raydistill.data import Preprocess
    from raydistill.distill.ensemble import Ensemble, load_ensemble

    dev = resolve_device(device)
    members: list[nn.Module] = []
    records: list[dict[str, Any]] = []
    for item in teachers:
        teacher, inputs = item if isinstance(item, tuple) else (item, None)
        if isinstance(teacher, (str, Path)) and Path(teacher).is_dir():
            ens = load_ensemble(teacher, device=dev)
            for m, sha in zip(ens.members, ens.fingerprints, strict=True):
                members.append(
                    TeacherModule(Preprocessed(m, ens.preprocess), TeacherInput(), str(teacher))
                )
                records.append({"source": str(teacher), "kind": "raydistill", "arch": ens.spec.get("family", ""),
                                "sha256": sha, "input": {"preprocess": ens.preprocess.to_dict()}})  # fmt: skip
            continue
        src = as_source(teacher, inputs)
        if isinstance(src, TeacherSource):
            member, record = load_teacher(src, splits.num_classes, dev), src.record()
        else:
            fn, inp = src
            member = TeacherModule(fn, inp, f"python:{type(fn).__name__}").to(dev)
            record = {"source": member.source, "kind": "module", "arch": type(fn).__name__,
                      "sha256": _module_sha(fn)}  # fmt: skip
        records.append({**record, "input": member.inputs.to_dict()})
        members.append(member.eval())
    for member, record in zip(members, records, strict=True):
        _check_classes(member, record["source"], splits, dev)
    return Ensemble(members=members, preprocess=Preprocess("none"),
                    fingerprints=[r["sha256"] for r in records], manifest={"teachers": records},
                    spec={"in_shape": list(splits.image_shape), "num_classes": splits.num_classes})  # fmt: skip


def _check_classes(member: nn.Module, source: str, splits: Splits, dev: torch.device) -> None:
    with torch.no_grad():
        out = member(torch.rand(2, *splits.image_shape, device=dev))
    if out.dim() != 2 or out.shape[1] != splits.num_classes:
        raise UserError(
            f"teacher {source} outputs shape {tuple(out.shape)} per batch of 2; the data "
            f"{splits.name} has {splits.num_classes} classes: need (2, {splits.num_classes})"
        )


def _module_sha(fn: Any) -> str:
    """sha256 of a Python teacher's weights (its state dict as safetensors), "" for a callable."""
    if not isinstance(fn, nn.Module):
        return ""
    from safetensors.torch import save

    from raydistill.core.manifest import sha256_bytes

    state = {k: v.detach().cpu().contiguous().clone() for k, v in fn.state_dict().items()}
    return sha256_bytes(save(state))


def check_accuracies(
    ensemble: Ensemble, splits: Splits, log: Callable[[str], None] | None = print
) -> dict[str, float]:
    """Each teacher's and the ensemble's validation accuracy, printed before labelling; a
    teacher at chance (within 3 standard errors of 1 / classes) is refused in one line."""
    import math

    from raydistill.training.evaluation import accuracy_of

    x, y = (torch.as_tensor(a) for a in splits.split("val"))
    if len(y) == 0:
        raise UserError(f"data {splits.name} has no validation images to check the teachers on")
    outs = ensemble.member_logits(x).cpu()  # (M, N, C)
    chance = 1.0 / splits.num_classes
    margin = 3 * math.sqrt(chance * (1 - chance) / len(y))
    records = ensemble.manifest.get("teachers") or [{} for _ in ensemble.members]
    accs = {}
    for i, record in enumerate(records):
        acc = accuracy_of(outs[i], y)
        name = record.get("source", f"member {i}")
        accs[name if name not in accs else f"{name}#{i}"] = acc
        if log is not None:
            log(f"teacher {name}: validation accuracy {100 * acc:.2f}%")
        if acc <= chance + margin:
            raise UserError(
                f"teacher {name} is at chance: validation accuracy {100 * acc:.2f}% vs "
                f"{100 * chance:.2f}% for {splits.num_classes} classes on {len(y)} images"
            )
    accs["ensemble"] = accuracy_of(outs.mean(0), y)
    if log is not None:
        log(f"ensemble of {len(records)}: validation accuracy {100 * accs['ensemble']:.2f}%")
    return accs


__all__ = ["TeacherInput", "TeacherModule", "TeacherSource", "as_source", "check_accuracies",
           "external_ensemble", "load_teacher", "parse_teacher"]  # fmt: skip
