"""Wall time W&B tracking adds to one trial (offline mode): init + one log per epoch + finish.

The same trial (EPOCHS epochs, each doing WORK seconds of matrix products and reporting the
metrics a real trial reports) runs with `make_tracker("off")` and `make_tracker("offline")`,
the two modes interleaved so that load drift hits both alike:

- cold: each trial in a fresh Python process, as the first trial of a Ray worker (includes
  `import wandb` and starting the wandb-core service, both on the tracker's background thread);
- warm: later trials in the same process (Tune with reuse_actors=True).

Prints the added seconds per trial (medians). Usage:
    python scripts/bench_tracking.py [--epochs 30] [--work 0] [--cold 5] [--warm 10]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def trial(mode: str, root: Path, trial_id: str, epochs: int, work_s: float = 0.0) -> float:
    """Seconds one trivial trial takes with tracking `mode` ("off" | "offline")."""
    t0 = time.perf_counter()
    import torch

    from raydistill.tracking.tracker import make_tracker

    config = {"lr": 0.01, "widths": [64, 128, 512], "params": 998_123}
    tracker = make_tracker(
        mode,
        root=root,
        experiment="bench",
        cell="cnn-d2@1M",
        trial_id=trial_id,
        config=config,
        tags=["bench"],
    )
    a = torch.randn(64, 64)
    for epoch in range(1, epochs + 1):
        t_epoch = time.perf_counter() + work_s
        loss = float((a @ a).mean())  # the "training"
        while time.perf_counter() < t_epoch:
            loss = float((a @ a).mean())
        tracker.log(
            {
                "train/loss": loss,
                "val/acc": 0.5,
                "val/loss": 1.0,
                "lr": 0.01,
                "best/val/acc": 0.5,
                "params": 998_123,
                "status": "running",
            },
            step=epoch,
        )
    tracker.finish({"best/val/acc": 0.5, "test/acc": 0.5}, status="finished")
    return time.perf_counter() - t0


def cold(mode: str, root: Path, epochs: int, work_s: float, i: int) -> float:
    code = (
        f"import sys; sys.path.insert(0, {str(Path(__file__).parent)!r}); import bench_tracking as b;"
        f"from pathlib import Path; print(b.trial({mode!r}, Path({str(root)!r}), 'cold{i}', {epochs}, {work_s}))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return float(out.stdout.strip().splitlines()[-1])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--epochs", type=int, default=30)
    p.add_argument("--work", type=float, default=0.0, help="seconds of compute per epoch")
    p.add_argument("--cold", type=int, default=5, help="fresh processes per mode")
    p.add_argument("--warm", type=int, default=10, help="trials per mode in this process")
    args = p.parse_args()
    res: dict[str, list[float]] = {
        k: [] for k in ("cold_off", "cold_offline", "warm_off", "warm_offline")
    }
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        for i in range(args.cold):
            for mode in ("off", "offline"):
                res[f"cold_{mode}"].append(cold(mode, root, args.epochs, args.work, i))
        trial("offline", root, "warmup", 1)  # this process's first (cold) trial
        for i in range(args.warm):
            for mode in ("off", "offline"):
                res[f"warm_{mode}"].append(trial(mode, root, f"w{mode}{i}", args.epochs, args.work))
        runs = len(list((root / "wandb").glob("offline-run-*")))
    med = {k: statistics.median(v) for k, v in res.items()}
    print(json.dumps({k: round(v, 3) for k, v in med.items()}))
    print(f"{runs} offline runs written; {args.epochs} epochs × {args.work} s of work per trial")
    print(f"W&B adds {med['cold_offline'] - med['cold_off']:.3f} s to a trial in a fresh process")
    print(
        f"W&B adds {med['warm_offline'] - med['warm_off']:.3f} s to each later trial in a process"
    )


if __name__ == "__main__":
    main()
