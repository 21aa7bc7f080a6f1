"""The student training loop: plain PyTorch, no Ray, no W&B.

`train_student(spec, data, transfer, config, report=...)` trains one network. With a transfer
set, epoch e replays the transfer set's epoch-e views (every student sees the same data in the
same order) and regresses the ensemble's stored logits (the paper) or uses KD / hard labels;
without one it trains on the fly on hard labels with `config.augment`. The caller sees each
epoch through `report(metrics, save)` and may persist a resumable checkpoint by calling `save`.
The settings and the result (`TrainConfig`, `TrainResult`, ...) live in `raydistill.training.config`,
evaluation in `raydistill.training.evaluation`, the device speed-ups in `raydistill.training.accel`; the names are
re-exported here.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor, nn

from raydistill import __version__
from raydistill.core.device import resolve_device
from raydistill.core.errors import UserError
from raydistill.data import DeviceSplit, iterate, named_aug, to_float
from raydistill.data.replay import ReplayViews, replay_epoch
from raydistill.students import build, complete_spec
from raydistill.training.accel import CompiledForward, autocast, exact_fp32, use_channels_last
from raydistill.training.checkpoint import (
    load_optimizer_tensors,
    load_tensors,
    optimizer_tensors,
    read_checkpoint,
    restore_rng,
    save_checkpoint,
)
from raydistill.training.config import (
    Report,
    TrainConfig,
    TrainResult,
    init_weights,
    make_preprocess,
)
from raydistill.training.evaluation import evaluate
from raydistill.training.losses import compute_loss
from raydistill.training.schedule import (
    CosineSchedule,
    PlateauSchedule,
    Schedule,
    schedule_from_state,
)

__all__ = ["Trainer", "train_student"]

if TYPE_CHECKING:
    from raydistill.data import Splits


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
        self, spec: dict, data: Splits, transfer: ReplayViews | None, cfg: TrainConfig
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
        self.channels_last = use_channels_last(self.model, cfg.channels_last)
        if self.channels_last:
            self.model.to(memory_format=torch.channels_last)
        self.params = sum(p.numel() for p in self.model.parameters())
        self.amp = cfg.amp  # `accel.autocast` decides per device ("auto": bf16 on CUDA)
        self.forward = CompiledForward(self.model, cfg.compile)
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
        up to 5,000 preprocessed training images (un-augmented: the statistics of the data),
        drawn at random with the run's seed: the train split is stored class by class, so its
        first 5,000 images would be one or two classes only."""
        if not hasattr(self.model, "data_init"):
            return
        self.model.data_init(self.preprocess(to_float(self.train.x[self._init_sample()])))

    def _init_sample(self, n: int = 5000) -> Tensor:
        """Indices (≤ n,) of a seeded random sample of the train split, on its device."""
        gen = torch.Generator().manual_seed(self.cfg.seed)
        idx = torch.randperm(len(self.train.y), generator=gen)[:n]
        return idx.sort().values.to(self.train.x.device)

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
            c.lr,
            c.plateau_patience,
            c.plateau_cooldown,
            c.plateau_factor,
            c.stop_patience,
            c.min_lr_ratio,
        )

    def _weights(self) -> dict[str, Tensor]:
        return {k: v.detach().to("cpu", copy=True) for k, v in self.model.state_dict().items()}

    # ------------------------------------------------------------------ data
    def _batches(self, epoch: int) -> Iterator[tuple[Tensor, Tensor, Tensor | None]]:
        """(x preprocessed and scaled, labels, teacher logits or None) for one epoch."""
        if self.transfer is None:
            aug = named_aug(self.cfg.augment, int(min(self.train.x.shape[2:])))
            for x, y, _ in iterate(
                self.train,
                self.cfg.batch_size,
                seed=self.cfg.seed,
                epoch=epoch,
                aug=aug,
                preprocess=self.preprocess,
            ):
                yield self._scaled(x), y, None
            return
        yield from self._transfer_batches(epoch)

    def _transfer_batches(self, epoch: int) -> Iterator[tuple[Tensor, Tensor, Tensor]]:
        ts = self.transfer
        rows = ts.epoch_rows(epoch)
        # One host→device copy per epoch (views × (11 params + C logits) floats: a few MB).
        logits = torch.as_tensor(ts.logits[rows], device=self.device)
        params = {k: v[rows] for k, v in ts.params.items()}
        # preprocessed in place, in tensors reused batch to batch: a batch is done with (its
        # step taken) before the next is drawn
        for sl, idx, x in replay_epoch(
            self.train.x,
            ts.index[rows],
            params,
            self.cfg.batch_size,
            parts=ts.aug_parts,
            preprocess=self.preprocess,
            reuse=True,
        ):
            yield self._scaled(x), self.train.y[idx], logits[sl]

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
            loss = self.step(x, y, t)
            self.run.step += 1
            total += loss * len(y)
            n += len(y)
            # A host sync every 25 steps: early enough to stop a blow-up, rare enough to be free.
            if i % 25 == 24 and not torch.isfinite(total):
                break
        return float(total) / max(n, 1)

    def step(self, x: Tensor, y: Tensor, t: Tensor | None) -> Tensor:
        """One SGD step on a batch (inputs as `_batches` yields them; t: teacher logits or
        None) under the run's precision (`TrainConfig.amp`); the detached float32 loss."""
        with autocast(self.device, self.amp):
            out = self.forward(x)
        loss = compute_loss(
            self.cfg.loss,
            out.float(),
            t,
            y,
            temperature=self.cfg.kd_temperature,
            alpha=self.cfg.kd_alpha,
            label_smoothing=self.cfg.label_smoothing,
        )
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        if self.cfg.grad_clip > 0:
            nn.utils.clip_grad_norm_(self.model.parameters(), self.cfg.grad_clip)
        self.opt.step()
        return loss.detach()

    @torch.no_grad()
    def evaluate(self, split: DeviceSplit, amp: str | None = None) -> tuple[float, float]:
        """(accuracy, loss) on a split; `amp` None: the run's setting (`TrainConfig.amp`)."""
        return evaluate(
            self.model,
            split,
            preprocess=self.preprocess,
            input_scale=self.cfg.input_scale,
            batch_size=self.cfg.eval_batch_size,
            channels_last=self.channels_last,
            amp=self.amp if amp is None else amp,
        )

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
        status = str(meta.get("status", "running"))
        if status == "running":  # an ended run's checkpoint carries no optimizer buffers
            load_optimizer_tensors(self.model, self.opt, load_tensors(directory, "optim"))
        restore_rng(load_tensors(directory, "rng"))
        self.schedule = schedule_from_state(self.cfg.schedule, meta["schedule"])
        self.run = _Run(**{k: meta[k] for k in asdict(_Run())})
        return status


def train_student(
    spec: dict[str, Any],
    data: Splits,
    transfer: ReplayViews | None,
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
        status, metrics = _epoch(tr)
        metrics.update(
            {"best/val/acc": max(tr.run.best_val_acc, 0.0), "params": tr.params, "status": status}
        )
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


def _epoch(tr: Trainer) -> tuple[str, dict[str, Any]]:
    """Train and validate one epoch; (the run's status after it, the epoch's metrics)."""
    epoch = tr.run.epoch
    train_loss = tr.train_epoch(epoch)
    lr = tr.schedule.lr_at(max(tr.run.step - 1, 0))
    tr.run.epoch = epoch + 1
    if not math.isfinite(train_loss):
        return "diverged", {"epoch": epoch + 1, "train/loss": train_loss, "lr": lr}
    val_acc, val_loss = tr.evaluate(tr.val)
    if val_acc > tr.run.best_val_acc:
        tr.run.best_val_acc, tr.run.best_val_loss = val_acc, val_loss
        tr.run.best_epoch = epoch + 1
        tr.best_state = tr._weights()
    stop = tr.schedule.end_epoch(val_acc)
    status = "finished" if tr.run.epoch >= tr.num_epochs else "stopped" if stop else "running"
    return status, {
        "epoch": epoch + 1,
        "train/loss": train_loss,
        "val/acc": val_acc,
        "val/loss": val_loss,
        "lr": lr,
    }


def _test_accuracy(tr: Trainer) -> float:
    """Test accuracy of the best-validation weights; the model keeps its current weights."""
    current = tr._weights()
    tr.model.load_state_dict(tr.best_state)
    test = DeviceSplit.from_numpy(tr.data.test_x, tr.data.test_y, tr.device)
    # float32 without TF32: the recorded test/acc is what an export re-verifies on the CPU
    with exact_fp32():
        acc = tr.evaluate(test, amp="off")[0]
    tr.model.load_state_dict(current)
    return acc
