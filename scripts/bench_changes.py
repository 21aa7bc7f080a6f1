"""Benchmark: what each of issue 26's loop changes buys, old against new in one process.

One torch thread, batch 128, CIFAR-10's 45k training images, interleaved runs, medians:

- batch pipeline of a flip + translate transfer-set epoch (the tiny study's): before, the
  views' images gathered with advanced indexing (`images[index]`) and warped with one bilinear
  `grid_sample`; now `raydistill.data.replay.replay_batch` (`index_select`, then one gather for
  whole-pixel views). The same pixels (asserted);
- a CNN student's training step (forward + backward + SGD step, L2 loss on logits): the paper's
  order (ReLU, then max-pool) against ours (max-pool, then ReLU). The same outputs and gradients;
- the training loop's batches (the views + per-image standardisation of 20 batches of a
  flip + translate epoch): before, index_select → float → one per-pixel gather + zero fill →
  `per_image`, a new tensor per step each; now `replay_epoch` with `ViewGather` (the views'
  rows gathered as uint8 straight from the table), in-place standardisation, tensors reused.
  The same values bit for bit (asserted). And `Trainer.train_epoch`'s images/s with each
  pipeline (`--loop-students`, the MLPs whose step is cheaper than their batches).

    python scripts/bench_changes.py
    python scripts/bench_changes.py --students cnn-d2@30k --repeats 3
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from collections.abc import Callable

import torch
from bench_train import DEFAULT_DATA, bench_transfer, student_spec  # scripts/ is on sys.path
from torch import nn

from raydistill.data import load_dataset
from raydistill.data.augment import _warp, apply_aug, sample_aug
from raydistill.data.batches import Preprocess, to_float
from raydistill.data.replay import replay_batch, replay_epoch
from raydistill.distill.transfer.aug import transfer_aug
from raydistill.students import build, data_spec_keys
from raydistill.students.budget import solve_budget
from raydistill.training.config import TrainConfig
from raydistill.training.loop import Trainer
from raydistill.training.losses import l2_logits


def timed(fns: dict[str, Callable[[], object]], repeats: int, inner: int) -> dict[str, float]:
    """Median seconds per call of each function, the functions interleaved."""
    runs: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(repeats):
        for k, fn in fns.items():
            t0 = time.perf_counter()
            for _ in range(inner):
                fn()
            runs[k].append((time.perf_counter() - t0) / inner)
    return {k: statistics.median(v) for k, v in runs.items()}


def paper_order(model: nn.Module) -> nn.Module:
    """The same network with each max-pool moved after its ReLU (the paper's order)."""
    layers = list(model[0])
    for i in range(len(layers) - 1):
        if isinstance(layers[i], nn.MaxPool2d) and isinstance(layers[i + 1], nn.ReLU):
            layers[i], layers[i + 1] = layers[i + 1], layers[i]
    model[0] = nn.Sequential(*layers)
    return model


def step_fn(model: nn.Module, x: torch.Tensor, t: torch.Tensor) -> Callable[[], None]:
    opt = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9, nesterov=True)

    def step() -> None:
        loss = l2_logits(model(x), t)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    return step


def batches_before(images, index, params, batch_size, pre: Preprocess):
    """The loop's batches before issue 26's ViewGather: a new tensor per step for each op."""
    for start in range(0, len(index), batch_size):
        view = {k: v[start : start + batch_size] for k, v in params.items()}
        x = to_float(images.index_select(0, index[start : start + batch_size]))
        yield pre(apply_aug(x, view, geometric=True, color=False))


class TrainerBefore(Trainer):
    """`Trainer` with the batch pipeline before ViewGather (same views, same values)."""

    def _transfer_batches(self, epoch):
        ts, bs = self.transfer, self.cfg.batch_size
        rows = ts.epoch_rows(epoch)
        logits = torch.as_tensor(ts.logits[rows])
        index = torch.as_tensor(ts.index[rows])
        params = {k: torch.as_tensor(v[rows]) for k, v in ts.params.items()}
        for i, x in enumerate(batches_before(self.train.x, index, params, bs, self.preprocess)):
            idx = index[i * bs : (i + 1) * bs]
            yield self._scaled(x), self.train.y[idx], logits[i * bs : (i + 1) * bs]


def bench_batches(images, splits, repeats: int) -> None:
    """Old against new batches of the training loop, equal bit for bit (asserted)."""
    gen = torch.Generator().manual_seed(1)
    params = sample_aug(20 * 128, gen, transfer_aug("flip_translate", splits))
    index = torch.randint(0, len(images), (20 * 128,), generator=gen)
    pre, parts = Preprocess("per_image"), (True, False)

    def new():
        return replay_epoch(images, index, params, 128, parts=parts, preprocess=pre, reuse=True)

    for a, (_, _, b) in zip(batches_before(images, index, params, 128, pre), new(), strict=True):
        assert torch.equal(a.view(torch.int32), b.view(torch.int32))
    fns = {"old": lambda: sum(1 for _ in batches_before(images, index, params, 128, pre))}
    fns["new"] = lambda: sum(1 for _ in new())
    t = timed(fns, repeats, 1)
    print(f"loop batches (views + standardisation, 128 views): before {t['old'] / 20 * 1e3:.2f} "
          f"ms, now {t['new'] / 20 * 1e3:.2f} ms: {t['old'] / t['new']:.2f}x | load "
          f"{os.getloadavg()[0]:.1f}", flush=True)  # fmt: skip


def bench_loop(name: str, splits, repeats: int, steps: int = 40) -> None:
    """Trainer.train_epoch's images/s with the batch pipeline before and now, interleaved."""
    cfg = TrainConfig(
        lr=0.005, momentum=0.9, batch_size=128, schedule="cosine", loss="l2_logits", device="cpu"
    )  # as bench_train's
    ts, spec = bench_transfer(splits, steps * 128, 2), student_spec(name, splits)
    trainers = {"old": TrainerBefore(spec, splits, ts, cfg), "new": Trainer(spec, splits, ts, cfg)}
    for tr in trainers.values():
        tr.train_epoch(0)  # warm-up
    t = timed({k: lambda tr=tr: tr.train_epoch(1) for k, tr in trainers.items()}, repeats, 1)
    print(f"{name}: training loop {steps * 128 / t['old']:,.0f} img/s before, "
          f"{steps * 128 / t['new']:,.0f} img/s now: {t['old'] / t['new']:.2f}x | load "
          f"{os.getloadavg()[0]:.1f}", flush=True)  # fmt: skip


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", default=DEFAULT_DATA)
    p.add_argument("--students", default="cnn-d1@10k,cnn-d2@30k,cnn-d3@30k")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--loop-students", default="mlp-d1@10k,mlp-d1@30k,cnn-d1@10k")
    args = p.parse_args()
    torch.set_num_threads(1)
    splits = load_dataset(args.data, val_size=5000, seed=0)
    print(f"uptime: {os.popen('uptime').read().strip()}", flush=True)
    images = torch.from_numpy(splits.train_x)
    gen = torch.Generator().manual_seed(0)
    params = sample_aug(128, gen, transfer_aug("flip_translate", splits))
    index = torch.randperm(len(images), generator=gen)[:128]
    old = lambda: _warp(to_float(images[index]), params)  # noqa: E731
    new = lambda: replay_batch(images, index, params, geometric=True, color=False)  # noqa: E731
    assert torch.equal(old(), new())
    t = timed({"old": old, "new": new}, args.repeats, 20)
    print(f"batch pipeline (128 views): before {t['old'] * 1e3:.2f} ms, now "
          f"{t['new'] * 1e3:.2f} ms: {t['old'] / t['new']:.2f}x | load "
          f"{os.getloadavg()[0]:.1f}", flush=True)  # fmt: skip
    bench_batches(images, splits, args.repeats)
    for name in [s for s in args.loop_students.split(",") if s]:
        bench_loop(name, splits, args.repeats)
    x = to_float(images[:128]).contiguous(memory_format=torch.channels_last)
    logits = torch.randn(128, splits.num_classes, generator=gen)
    for name in [s for s in args.students.split(",") if s]:
        fam_depth, budget = name.split("@")
        family, depth = fam_depth.rsplit("-d", 1)
        keys = {"batchnorm": True, "dropout": 0.0, **data_spec_keys(splits)}
        spec = solve_budget(family, int(depth), budget, [0.5] * 8, **keys).spec
        torch.manual_seed(0)
        ours = build(spec).to(memory_format=torch.channels_last)
        paper = paper_order(build(spec).to(memory_format=torch.channels_last))
        paper.load_state_dict(ours.state_dict())
        assert torch.equal(ours(x), paper(x))
        fns = {"paper": step_fn(paper, x, logits), "ours": step_fn(ours, x, logits)}
        timed(fns, 1, 2)  # warm-up
        t = timed(fns, args.repeats, 3)
        print(f"{name}: training step ReLU→pool {128 / t['paper']:,.0f} img/s, pool→ReLU "
              f"{128 / t['ours']:,.0f} img/s: {t['paper'] / t['ours']:.2f}x | load "
              f"{os.getloadavg()[0]:.1f}", flush=True)  # fmt: skip


if __name__ == "__main__":
    main()
