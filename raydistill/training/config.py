"""The training run's settings and outcome: `TrainConfig` (every field a search-space key),
`TrainResult`, the paper's weight init and the input preprocessing (on-the-fly augmentations
are named from `raydistill.core.vocab`). Torch and the data layer only; `raydistill.training.loop`
re-exports these names.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any

from torch import Tensor, nn

from raydistill.core.errors import UserError
from raydistill.core.vocab import AMP_MODES, AUG_NAMES, PREPROCESS_MODES
from raydistill.data import Preprocess
from raydistill.training.losses import check_loss
from raydistill.training.schedule import SCHEDULES

if TYPE_CHECKING:
    from raydistill.data import Splits

Report = Callable[[dict[str, Any], Callable[[Path], None]], None]


@dataclass
class TrainConfig:
    """Everything that shapes one training run; each field may be set by a search space."""

    lr: float = 0.005
    momentum: float = 0.9
    nesterov: bool = True
    batch_size: int = 128
    max_epochs: int = 30  # also capped by the transfer set's number of epochs
    loss: str = "l2_logits"  # "l2_logits" | "kd" | "hard"
    kd_temperature: float = 4.0
    kd_alpha: float = 0.9
    label_smoothing: float = 0.0
    init: str = "glorot"  # "glorot" (Glorot-uniform × init_scale) | "default" (PyTorch's)
    init_scale: float = 1.0
    input_scale: float = 1.0  # inputs are multiplied by this after preprocessing
    weight_decay: float = 0.0
    schedule: str = "plateau"  # the paper's plateau rule | "cosine" for short fixed runs
    # Linear warm-up (cosine schedule), in epochs; fractions allowed. A short run starting at
    # the top of its range kills a Glorot-initialised student's ReLUs in the first steps
    # (measured on a 2-class task: lr 0.003 L2 stayed at chance without, 96 % with 1 epoch).
    warmup_epochs: float = 0.0
    plateau_patience: int = 10
    plateau_cooldown: int = 8
    plateau_factor: float = 0.5
    stop_patience: int = 30
    min_lr_ratio: float = 1 / 2000
    # On-the-fly augmentation when there is no transfer set (`vocab.AugName`);
    # "flip_translate" is the usual CIFAR recipe for teachers (mirror, ≤ 4 px at 32 px).
    augment: str = "paper"
    preprocess: str = "per_image"
    seed: int = 0
    device: str = "auto"  # "auto": CUDA when available, else CPU
    # conv nets only (model and inputs): measured on this 2-core CPU in the module docstring
    # of `raydistill.training.accel`; on CUDA it lets convolutions use the NHWC tensor-core kernels.
    channels_last: bool = True
    # Mixed precision (`vocab.AmpMode`): "auto" bf16 autocast on CUDA only, "bf16" on any
    # device (CPU bf16 autocast runs the CUDA path's numerics in CI), "off"; true/false of
    # older configs mean auto/off.
    amp: str = "auto"
    # torch.compile the model; a compile error on the first step falls back to eager (one log line)
    compile: bool = False
    eval_batch_size: int = 1000
    # Max global gradient norm per step (0: off). The L2 loss on logits has gradients as large
    # as the teacher's logits (not bounded like p − y). Measured on cnn-d1@10k (CIFAR-10, 2
    # epochs): clipping at 1 or 5 did not beat the best unclipped lr, so no shipped scale uses it.
    grad_clip: float = 0.0

    def __post_init__(self) -> None:
        check_loss(self.loss)
        if isinstance(self.amp, bool):
            self.amp = "auto" if self.amp else "off"
        for name, value, valid in (
            ("amp", self.amp, AMP_MODES),
            ("schedule", self.schedule, SCHEDULES),
            ("augment", self.augment, AUG_NAMES),
            ("preprocess", self.preprocess, PREPROCESS_MODES),
            ("init", self.init, ("glorot", "default")),
        ):
            if value not in valid:
                raise UserError(
                    f"train config {name}={value!r} is invalid; valid: {', '.join(valid)}"
                )
        if not (self.lr > 0 and self.batch_size > 0 and self.max_epochs > 0):
            raise UserError("train config needs lr > 0, batch_size > 0 and max_epochs > 0")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def keys(cls) -> tuple[str, ...]:
        return tuple(f.name for f in fields(cls))

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> TrainConfig:
        unknown = sorted(set(values) - set(cls.keys()))
        if unknown:
            raise UserError(
                f"unknown train config key {unknown[0]!r}; valid: {', '.join(cls.keys())}"
            )
        return cls(**values)


@dataclass
class TrainResult:
    """What a finished (or stopped, or diverged) run leaves behind."""

    status: str  # "finished" | "stopped" | "diverged"
    best_val_acc: float
    best_val_loss: float
    test_acc: float | None
    epochs: int
    best_epoch: int
    history: list[dict[str, Any]]
    state_dict: dict[str, Tensor] = field(repr=False)  # best-validation weights, on the CPU
    params: int
    wall_s: float
    spec: dict[str, Any]
    config: dict[str, Any]


def init_weights(model: nn.Module, scheme: str, scale: float) -> None:
    """Glorot-uniform weights scaled by `scale`, zero biases (the paper's students)."""
    if scheme != "glorot":
        return
    for m in model.modules():
        if isinstance(m, (nn.Linear, nn.Conv2d)):
            nn.init.xavier_uniform_(m.weight, gain=scale)
            if m.bias is not None:
                nn.init.zeros_(m.bias)


def make_preprocess(mode: str, data: Splits) -> Preprocess:
    """The input preprocessing; dataset statistics come from the training split only."""
    return Preprocess.for_splits(mode, data)
