"""The GPU paths, checked on a machine with one GPU in one prepared run (issue 22); ≤ 8 minutes.

Needs torch, numpy, pyarrow, safetensors, pyyaml (and timm / onnxruntime where present): no
Ray, W&B, Optuna or pydantic. Everything runs in this process on `--device`. One line per
check, `name  ok|FAILED  figure`; exit 1 when any failed.

  step:<family>-d<depth>  every registered family (students and teachers) trains 3 steps of
                          the project's loop (`Trainer.step`) with bf16 autocast and
                          channels_last (+ torch.compile unless --quick; a family whose compile
                          fails falls back to eager and says so): finite loss and gradients
  teacher+labelling       2 airbench members trained on the device, their ensemble's
                          evaluation, then a 2-epoch transfer set labelled on the device
  export                  a CNN student trained with bf16 on the device, exported and
                          self-checked (its test accuracy re-measured on the CPU in float32)
  bench (a) (c) (cl)      scripts/bench_gpu.py's sections, one line per figure

    python scripts/gpu_check.py                          # on CUDA
    python scripts/gpu_check.py --device cpu --quick     # CI (tests/test_gpu_check.py)
"""

from __future__ import annotations

import argparse
import importlib.util
import math
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))  # the checkout's package, without an install

from raydistill.core.device import resolve_device  # noqa: E402

RESULTS: list[tuple[str, bool, str]] = []


def check(name: str, fn: Callable[[], str]) -> None:
    """Run one check; print `name  ok|FAILED  figure` (the error's last line on failure)."""
    t0 = time.perf_counter()
    try:
        figure, ok = fn(), True
    except Exception as exc:  # a failed check is reported, and the next one still runs
        figure, ok = f"{type(exc).__name__}: {str(exc).strip().splitlines()[-1:] or ''}", False
        traceback.print_exc(limit=-2, file=sys.stderr)
    RESULTS.append((name, ok, figure))
    took = time.perf_counter() - t0
    print(f"{name:34s} {'ok' if ok else 'FAILED':6s} {figure} [{took:.1f} s]", flush=True)


def _splits(n: int, classes: int = 10) -> Any:
    from raydistill.data import make_synthetic_sep

    return make_synthetic_sep(n_train=n, n_val=max(64, n // 4), n_test=max(64, n // 4), seed=0)


# ---------------------------------------------------------------- every family's step
def family_step(family: str, depth: int, args: argparse.Namespace) -> str:
    from raydistill.students import families
    from raydistill.students.budget import solve_budget
    from raydistill.training.config import TrainConfig
    from raydistill.training.loop import Trainer

    kind = families()[family].kind
    budget = (10_000 if kind == "student" else 300_000) if args.quick else (
        1_000_000 if kind == "student" else 0)  # fmt: skip
    spec = solve_budget(family, depth, budget).spec if budget else {"family": family}
    if not budget:  # a teacher at its own default widths
        spec = {**families()[family].defaults(), "family": family}
    cfg = TrainConfig(loss="hard", device=args.device, amp="bf16", channels_last=True,
                      compile=not args.quick, batch_size=16 if args.quick else 256,
                      max_epochs=1, augment="flip_translate", init="default")  # fmt: skip
    tr = Trainer(spec, _splits(64 if args.quick else 512), None, cfg)
    x, y, _ = next(tr._batches(0))
    losses, t0 = [], 0.0
    for i in range(3):
        if i == 1:  # step 0 compiles: time steps 1-2
            if tr.device.type == "cuda":
                torch.cuda.synchronize()
            t0 = time.perf_counter()
        losses.append(float(tr.step(x, y, None)))
    if tr.device.type == "cuda":
        torch.cuda.synchronize()
    ms = (time.perf_counter() - t0) / 2 * 1000
    bad = [n for n, p in tr.model.named_parameters()
           if p.requires_grad and (p.grad is None or not torch.isfinite(p.grad).all())]  # fmt: skip
    if not all(math.isfinite(v) for v in losses) or bad:
        raise RuntimeError(f"loss {losses}, non-finite or missing gradients: {bad[:3]}")
    mode = (
        "compiled"
        if tr.forward.compiled
        else ("eager (compile fell back)" if cfg.compile else "eager")
    )
    return f"loss {losses[0]:.3f}→{losses[-1]:.3f}, {ms:.1f} ms/step ({len(y)} img), {tr.params:,} params, {mode}"


# ---------------------------------------------------------------- teacher + labelling
def teacher_and_labelling(args: argparse.Namespace) -> str:
    from raydistill.distill.ensemble import evaluate_members, make_ensemble
    from raydistill.distill.teachers import member_config, teacher_spec, train_member
    from raydistill.distill.transfer.aug import transfer_aug
    from raydistill.distill.transfer.format import load_transfer_set
    from raydistill.distill.transfer.writer import write_transfer_set
    from raydistill.training.config import make_preprocess

    splits = _splits(512 if args.quick else 5000)
    spec = teacher_spec("airbench", splits, width_scale=0.25 if args.quick else 0.5)
    train = {"batch_size": 128 if args.quick else 512, "device": args.device}
    configs = [member_config("airbench", 1 if args.quick else 3, s, **train) for s in (0, 1)]
    t0 = time.perf_counter()
    results = [train_member(spec, splits, c.to_dict()) for c in configs]
    ens = make_ensemble(spec, [r["weights"] for r in results],
                        make_preprocess(configs[0].preprocess, splits), device=args.device)  # fmt: skip
    _, overall = evaluate_members(ens, splits)
    teach_s = time.perf_counter() - t0
    if str(ens.device) != str(resolve_device(args.device)):
        raise RuntimeError(f"ensemble on {ens.device}, not {args.device}")
    with tempfile.TemporaryDirectory() as d:
        t1 = time.perf_counter()
        path = write_transfer_set(Path(d) / "t.parquet", ens, splits, 2, seed=0,
                                  aug=transfer_aug("flip_translate", splits), gpus=0)  # fmt: skip
        label_s = time.perf_counter() - t1
        ts = load_transfer_set(path, splits=splits)
    views = ts.num_epochs * ts.views_per_epoch
    if not args.quick and overall["test/acc"] < 0.6:  # --quick: 1 epoch, a smoke test only
        raise RuntimeError(f"ensemble test accuracy {overall['test/acc']:.3f} (chance 0.5)")
    return (f"2 members {teach_s:.1f} s, ensemble test {100 * overall['test/acc']:.1f}% "
            f"(chance 50%); {views:,} views labelled on {ens.device} at {views / label_s:,.0f}/s, "
            f"view acc {100 * ts.meta['ensemble_test_view_acc']:.1f}%")  # fmt: skip


# ---------------------------------------------------------------- export after bf16 training
def export_after_training(args: argparse.Namespace) -> str:
    from raydistill.export.exporter import export_trial
    from raydistill.training.config import TrainConfig
    from raydistill.training.loop import train_student

    splits = _splits(512 if args.quick else 4000)
    spec = {"family": "cnn", "depth": 1, "widths": [8, 16, 32] if args.quick else [32, 64, 128]}
    cfg = TrainConfig(loss="hard", device=args.device, amp="bf16", lr=0.05, momentum=0.9,
                      batch_size=64, max_epochs=3 if args.quick else 6, schedule="cosine",
                      warmup_epochs=1, augment="none")  # fmt: skip
    with tempfile.TemporaryDirectory() as d:
        ckpt = Path(d) / "ckpt"

        def report(metrics: dict, save: Callable[[Path], None]) -> None:
            if metrics["status"] != "running":
                save(ckpt)

        res = train_student(spec, splits, None, cfg, report=report)
        row = {"checkpoint": str(ckpt), "cell": "cnn-d1@check", "budget": res.params,
               "trial_id": "gpu-check", "experiment": "gpu_check", "params": res.params,
               "val/acc": res.best_val_acc, "test/acc": res.test_acc}  # fmt: skip
        out = export_trial(row, Path(d) / "export", splits=splits)
    if not out.test_verified:
        raise RuntimeError(out.note)
    return (
        f"trained on {args.device} (bf16): test {100 * res.test_acc:.2f}% recorded, "
        f"{100 * out.test_acc:.2f}% re-measured on the CPU (float32); {out.note}"
    )


# ---------------------------------------------------------------- bench_gpu
def bench_sections(args: argparse.Namespace) -> None:
    spec = importlib.util.spec_from_file_location("bench_gpu", HERE / "bench_gpu.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    bargs = argparse.Namespace(device=args.device, quick=args.quick, data=args.data,
                               teacher_epochs=args.teacher_epochs, threads=0)  # fmt: skip
    for section in ("a", "c", "cl"):
        lines: list[str] = []
        fn = getattr(bench, f"section_{section}")
        check(f"bench ({section})", lambda fn=fn, lines=lines: _bench(fn, bargs, lines))


def _bench(fn: Callable, bargs: argparse.Namespace, lines: list[str]) -> str:
    fn(bargs, lines.append)
    if any("skipped" in ln for ln in lines):
        raise RuntimeError(" | ".join(lines))
    return " | ".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cuda", help="cuda (default) | cpu | cuda:N")
    p.add_argument("--quick", action="store_true", help="tiny sizes, no compile (CI on the CPU)")
    p.add_argument("--data", default="cifar10", help="bench (c): a raydistill data source")
    p.add_argument("--teacher-epochs", type=int, default=12, help="bench (c): epochs per member")
    args = p.parse_args(argv)
    dev = resolve_device(args.device)
    name = torch.cuda.get_device_name(dev) if dev.type == "cuda" else "CPU"
    print(f"gpu_check on {dev} ({name}), torch {torch.__version__}", flush=True)
    from raydistill.students import families

    t0 = time.perf_counter()
    for fam, f in families().items():
        for depth in f.depths if f.kind == "student" else (f.defaults()["depth"],):
            check(
                f"step:{fam}-d{depth}", lambda fam=fam, depth=depth: family_step(fam, depth, args)
            )
    check("teacher+labelling", lambda: teacher_and_labelling(args))
    check("export after bf16 training", lambda: export_after_training(args))
    bench_sections(args)
    failed = [n for n, ok, _ in RESULTS if not ok]
    print(f"gpu_check: {len(RESULTS) - len(failed)}/{len(RESULTS)} ok in "
          f"{time.perf_counter() - t0:.0f} s" + (f"; FAILED: {', '.join(failed)}" if failed else ""))  # fmt: skip
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
