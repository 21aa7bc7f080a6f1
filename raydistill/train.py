"""The student training loop: plain PyTorch, no Ray, no W&B.

`train_student(spec, data, transfer, config, report=...)` trains one network. With a transfer
set, epoch e replays the transfer set's epoch-e views (every student sees the same data in the
same order) and regresses the ensemble's stored logits (the paper) or uses KD / hard labels;
without one it trains on the fly on hard labels with `config.augment`. The caller sees each
epoch through `report(metrics, save)` and may persist a resumable checkpoint by calling `save`.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor, nn

from raydistill import __version__
from raydistill.checkpoint import (
    load_optimizer_tensors,
    load_tensors,
    optimizer_tensors,
    read_checkpoint,
    restore_rng,
    save_checkpoint,
)
from raydistill.data import AugConfig, DeviceSplit, Preprocess, iterate, to_float
from raydistill.data.batches import PREPROCESS_MODES
from raydistill.data.replay import replay_epoch
from raydistill.device import resolve_device
from raydistill.errors import UserError
from raydistill.losses import check_loss, compute_loss
from raydistill.schedule import (
    SCHEDULES,
    CosineSchedule,
    PlateauSchedule,
    Schedule,
    schedule_from_state,
)
from raydistill.students import build, complete_spec, has_conv

if TYPE_CHECKING:
    from raydistill.data import Splits
    from raydistill.transfer import TransferSet

Report = Callable[[dict[str, Any], Callable[[Path], None]], None]
# On-the-fly augmentation by name (training without a transfer set). "flip_translate" is the
# usual CIFAR recipe for teachers: mirror and up to 4 px of translation, zero fill.
AUGMENTS: dict[str, Callable[[], AugConfig]] = {
    "paper": AugConfig.paper,
    "paper_hsv": AugConfig.paper_hsv,
    "flip_translate": lambda: AugConfig(mirror=True, crop_min=32, crop_max=32, translate=4),
    "mirror": lambda: AugConfig(mirror=True, crop_min=32, crop_max=32, translate=0),
    "none": AugConfig.none,
}


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
    augment: str = "paper"  # on-the-fly augmentation when there is no transfer set
    preprocess: str = "per_image"
    seed: int = 0
    device: str = "auto"  # "auto": CUDA when available, else CPU
    channels_last: bool = True  # conv nets only: ~2× CPU throughput (see shared notes)
    eval_batch_size: int = 1000
    # Max global gradient norm per step (0: off). The L2 loss on logits has gradients as large
    # as the teacher's logits (not bounded like p − y). Measured on cnn-d1@10k (CIFAR-10, 2
    # epochs): clipping at 1 or 5 did not beat the best unclipped lr, so no shipped scale uses it.
    grad_clip: float = 0.0

    def __post_init__(self) -> None:
        check_loss(self.loss)
        for name, value, valid in (
            ("schedule", self.schedule, SCHEDULES),
            ("augment", self.augment, AUGMENTS),
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


@dataclass
class _Run:
    """Mutable state of a run: everything a checkpoint must carry besides tensors."""

    epoch: int = 0  # finished epochs
    step: int = 0  # optimizer steps taken
    best_val_acc: float = -1.0
    best_val_loss: float = math.inf
    best_epoch: int = 0
    history: list[dict[str, Any]] = field(default_factory=list)


class Trainer:
    """One run's model, optimizer, schedule and data on the device; `train_student` drives it."""

    def __init__(
        self, spec: dict, data: Splits, transfer: TransferSet | None, cfg: TrainConfig
    ) -> None:
        self.cfg, self.data, self.transfer = cfg, data, transfer
        self.device = resolve_device(cfg.device)
        self.spec = complete_spec(spec, data)
        if transfer is None and cfg.loss != "hard":
            raise UserError(
                f"loss {cfg.loss!r} needs a transfer set (teacher logits); use loss 'hard'"
            )
        torch.manual_seed(cfg.seed)
        self.model = build(self.spec)
        init_weights(self.model, cfg.init, cfg.init_scale)
        self.model.to(self.device)
        self.channels_last = cfg.channels_last and has_conv(self.model)
        if self.channels_last:
            self.model.to(memory_format=torch.channels_last)
        self.params = sum(p.numel() for p in self.model.parameters())
        self.opt = torch.optim.SGD(
            self.model.parameters(),
            lr=cfg.lr,
            momentum=cfg.momentum,
            nesterov=cfg.nesterov and cfg.momentum > 0,
            weight_decay=cfg.weight_decay,
        )
        self.preprocess = make_preprocess(cfg.preprocess, data)
        self.train = DeviceSplit.from_numpy(data.train_x, data.train_y, self.device)
        self.val = DeviceSplit.from_numpy(data.val_x, data.val_y, self.device)
        self._data_init()
        self.num_epochs = cfg.max_epochs
        if transfer is not None:
            self.num_epochs = min(cfg.max_epochs, transfer.num_epochs)
        self.steps_per_epoch = self._steps_per_epoch()
        self.schedule: Schedule = self._make_schedule()
        self.run = _Run()
        self.best_state = self._weights()

    def _data_init(self) -> None:
        """Data-dependent init for models that define `data_init(x)` (airbench's whitening), on
        up to 5,000 preprocessed training images (un-augmented: the statistics of the data)."""
        if not hasattr(self.model, "data_init"):
            return
        sample = self.preprocess(to_float(self.train.x[:5000]))
        self.model.data_init(sample)

    def _steps_per_epoch(self) -> int:
        n = self.transfer.views_per_epoch if self.transfer is not None else len(self.data.train_y)
        return math.ceil(n / self.cfg.batch_size)

    def _make_schedule(self) -> Schedule:
        c = self.cfg
        if c.schedule == "cosine":
            return CosineSchedule(
                c.lr,
                self.num_epochs * self.steps_per_epoch,
                round(c.warmup_epochs * self.steps_per_epoch),
            )
        return PlateauSchedule(
            c.lr, c.plateau_patience, c.plateau_cooldown, c.plateau_factor, c.stop_patience,
            c.min_lr_ratio,
        )  # fmt: skip

    def _weights(self) -> dict[str, Tensor]:
        return {k: v.detach().to("cpu", copy=True) for k, v in self.model.state_dict().items()}

    # ------------------------------------------------------------------ data
    def _batches(self, epoch: int) -> Iterator[tuple[Tensor, Tensor, Tensor | None]]:
        """(x preprocessed and scaled, labels, teacher logits or None) for one epoch."""
        if self.transfer is None:
            aug = AUGMENTS[self.cfg.augment]()
            for x, y, _ in iterate(
                self.train, self.cfg.batch_size, seed=self.cfg.seed, epoch=epoch, aug=aug,
                preprocess=self.preprocess,
            ):  # fmt: skip
                yield self._scaled(x), y, None
            return
        yield from self._transfer_batches(epoch)

    def _transfer_batches(self, epoch: int) -> Iterator[tuple[Tensor, Tensor, Tensor]]:
        ts = self.transfer
        rows = ts.epoch_rows(epoch)
        # One host→device copy per epoch (views × (11 params + C logits) floats: a few MB).
        logits = torch.as_tensor(ts.logits[rows], device=self.device)
        params = {k: v[rows] for k, v in ts.params.items()}
        for sl, idx, x in replay_epoch(self.train.x, ts.index[rows], params,
                                       self.cfg.batch_size, parts=ts.aug_parts):  # fmt: skip
            yield self._scaled(self.preprocess(x)), self.train.y[idx], logits[sl]

    def _scaled(self, x: Tensor) -> Tensor:
        if self.cfg.input_scale != 1.0:
            x = x * self.cfg.input_scale
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        return x

    # ------------------------------------------------------------------ epochs
    def train_epoch(self, epoch: int) -> float:
        """One epoch of SGD; returns the mean training loss (NaN/inf when the run diverged)."""
        self.model.train()
        total = torch.zeros((), device=self.device)
        n = 0
        for i, (x, y, t) in enumerate(self._batches(epoch)):
            for group in self.opt.param_groups:
                group["lr"] = self.schedule.lr_at(self.run.step)
            out = self.model(x)
            loss = compute_loss(
                self.cfg.loss, out, t, y, temperature=self.cfg.kd_temperature,
                alpha=self.cfg.kd_alpha, label_smoothing=self.cfg.label_smoothing,
            )  # fmt: skip
            self.opt.zero_grad(set_to_none=True)
            loss.backward()
            if self.cfg.grad_clip > 0:
                nn.utils.clip_grad_norm_(self.model.parameters(), self.cfg.grad_clip)
            self.opt.step()
            self.run.step += 1
            total += loss.detach() * len(y)
            n += len(y)
            # A host sync every 25 steps: early enough to stop a blow-up, rare enough to be free.
            if i % 25 == 24 and not torch.isfinite(total):
                break
        return float(total) / max(n, 1)

    @torch.no_grad()
    def evaluate(self, split: DeviceSplit) -> tuple[float, float]:
        return evaluate(
            self.model, split, preprocess=self.preprocess, input_scale=self.cfg.input_scale,
            batch_size=self.cfg.eval_batch_size, channels_last=self.channels_last,
        )  # fmt: skip

    # ------------------------------------------------------------------ checkpoints
    def save(self, directory: Path, status: str) -> None:
        meta = {
            "format": 1,
            "raydistill": __version__,
            "spec": self.spec,
            "config": self.cfg.to_dict(),
            "status": status,
            "params": self.params,
            "preprocess": self.preprocess.to_dict(),
            "schedule": self.schedule.state_dict(),
            "num_epochs": self.num_epochs,
            **asdict(self.run),
        }
        save_checkpoint(
            directory,
            meta=meta,
            model=self.model.state_dict(),
            best=self.best_state,
            optim=optimizer_tensors(self.model, self.opt),
        )

    def restore(self, directory: str | Path) -> str:
        """Load a checkpoint; returns the run's status when it was saved."""
        meta = read_checkpoint(directory)
        if meta["spec"] != self.spec:
            raise UserError(f"checkpoint {directory} is for spec {meta['spec']}, not {self.spec}")
        self.model.load_state_dict(load_tensors(directory, "model"))
        self.best_state = load_tensors(directory, "best")
        load_optimizer_tensors(self.model, self.opt, load_tensors(directory, "optim"))
        restore_rng(load_tensors(directory, "rng"))
        self.schedule = schedule_from_state(self.cfg.schedule, meta["schedule"])
        self.run = _Run(**{k: meta[k] for k in asdict(_Run())})
        return str(meta.get("status", "running"))


@torch.no_grad()
def evaluate(
    model: nn.Module,
    split: DeviceSplit,
    *,
    preprocess: Preprocess,
    input_scale: float = 1.0,
    batch_size: int = 1000,
    channels_last: bool = False,
) -> tuple[float, float]:
    """(accuracy, mean cross-entropy) of `model` on a resident split, in eval mode."""
    was_training = model.training
    model.eval()
    correct = torch.zeros((), device=split.x.device)
    loss = torch.zeros((), device=split.x.device)
    for x, y, _ in iterate(split, batch_size, seed=0, epoch=0, aug=None, preprocess=preprocess,
                           shuffle=False):  # fmt: skip
        x = x * input_scale if input_scale != 1.0 else x
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        out = model(x).float()
        correct += (out.argmax(1) == y).sum()
        loss += nn.functional.cross_entropy(out, y, reduction="sum")
    model.train(was_training)
    n = max(len(split.y), 1)
    return float(correct) / n, float(loss) / n


def train_student(
    spec: dict[str, Any],
    data: Splits,
    transfer: TransferSet | None,
    config: TrainConfig,
    report: Report | None = None,
    checkpoint: str | Path | None = None,
    evaluate_test: bool = True,
) -> TrainResult:
    """Train one network; see the module docstring. Never raises on divergence."""
    t0 = time.perf_counter()
    tr = Trainer(spec, data, transfer, config)
    status = "running"
    if checkpoint is not None:
        status = tr.restore(checkpoint)  # a run that had stopped or diverged stays ended
    if status == "running" and tr.run.epoch >= tr.num_epochs:
        status = "finished"
    test_acc = None
    while status == "running":
        epoch = tr.run.epoch
        train_loss = tr.train_epoch(epoch)
        lr = tr.schedule.lr_at(max(tr.run.step - 1, 0))
        tr.run.epoch = epoch + 1
        if not math.isfinite(train_loss):
            status = "diverged"
            metrics = {"epoch": epoch + 1, "train/loss": train_loss, "lr": lr}
        else:
            val_acc, val_loss = tr.evaluate(tr.val)
            if val_acc > tr.run.best_val_acc:
                tr.run.best_val_acc, tr.run.best_val_loss = val_acc, val_loss
                tr.run.best_epoch = epoch + 1
                tr.best_state = tr._weights()
            stop = tr.schedule.end_epoch(val_acc)
            if tr.run.epoch >= tr.num_epochs:
                status = "finished"
            elif stop:
                status = "stopped"
            metrics = {"epoch": epoch + 1, "train/loss": train_loss, "val/acc": val_acc,
                       "val/loss": val_loss, "lr": lr}  # fmt: skip
        metrics.update({"best/val/acc": max(tr.run.best_val_acc, 0.0), "params": tr.params,
                        "status": status})  # fmt: skip
        tr.run.history.append({k: v for k, v in metrics.items() if k != "status"})
        if status != "running" and evaluate_test and tr.run.best_epoch > 0:
            test_acc = metrics["test/acc"] = _test_accuracy(tr)
        if report is not None:
            report(metrics, lambda d, s=status: tr.save(Path(d), s))
    if test_acc is None and evaluate_test and tr.run.best_epoch > 0:
        test_acc = _test_accuracy(tr)  # resumed from a checkpoint of a run that had ended
    return TrainResult(
        status=status,
        best_val_acc=max(tr.run.best_val_acc, 0.0),
        best_val_loss=tr.run.best_val_loss,
        test_acc=test_acc,
        epochs=tr.run.epoch,
        best_epoch=tr.run.best_epoch,
        history=tr.run.history,
        state_dict=tr.best_state,
        params=tr.params,
        wall_s=time.perf_counter() - t0,
        spec=tr.spec,
        config=config.to_dict(),
    )


def _test_accuracy(tr: Trainer) -> float:
    """Test accuracy of the best-validation weights; the model keeps its current weights."""
    current = tr._weights()
    tr.model.load_state_dict(tr.best_state)
    test = DeviceSplit.from_numpy(tr.data.test_x, tr.data.test_y, tr.device)
    acc = tr.evaluate(test)[0]
    tr.model.load_state_dict(current)
    return acc
