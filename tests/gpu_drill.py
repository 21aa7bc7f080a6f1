"""The resource policy on a cluster that gains its GPU later (tests/test_resources.py runs this in
a subprocess of its own: own RAY_TMPDIR, tagged environment; see scripts/drill_kit.py).

A `ray.cluster_utils.Cluster` on 127.0.0.1 whose head has 2 CPUs and 0 GPUs, as an
autoscaling cluster starts:
1. teacher members and seed repeats submitted WITHOUT GPU settings run on the CPU at once;
2. the same submitted WITH GPU settings (`--gpu-fraction 1`, `--gpus-per-trial 0.5`) stay
   pending (they do not fall back to the CPU), until
3. a node with one logical GPU joins: they run there (the GPU ids Ray gave them name it).
Prints one line `FIGURES {json}`.
"""

from __future__ import annotations

import json
import threading
import time

PENDING_S = 4.0  # how long the GPU tasks must stay pending before the GPU node joins


def drill_splits():
    from raydistill.data import make_synthetic_sep

    return make_synthetic_sep(n_train=128, n_val=32, n_test=32, seed=0)


def _members(address: str, frac: float) -> list[dict]:
    from raydistill.distill.teachers import member_config, train_members
    from raydistill.students import complete_spec

    splits = drill_splits()
    spec = complete_spec({"family": "cnn", "depth": 1, "widths": [4, 4, 4]}, splits)
    configs = [member_config("cnn", 1, s, batch_size=64, augment="none") for s in (0, 1)]
    runs = train_members(spec, splits, configs, address=address, gpu_fraction=frac)
    return [{"gpu_ids": r["gpu_ids"], "status": r["status"]} for r in runs]


def _repeats(address: str, gpus: float) -> list[dict]:
    from raydistill.students import complete_spec
    from raydistill.study.repeats import run_repeats

    splits = drill_splits()
    spec = complete_spec({"family": "mlp", "depth": 1, "widths": [4, 4]}, splits)
    job = {
        "row": "mlp-d1",
        "cell": "mlp-d1@1k",
        "family": "mlp",
        "depth": 1,
        "budget": 1000,
        "twin": False,
        "trial_id": "t0",
        "spec": spec,
        "train": {"loss": "hard", "max_epochs": 1, "batch_size": 64, "augment": "none"},
    }
    rows = run_repeats(
        [{**job, "seed": 1000}],
        splits,
        None,
        address=address,
        gpus_per_trial=gpus,
        log=lambda _: None,
    )
    return rows[["gpu_ids", "status"]].to_dict("records")


def _in_thread(fn, *args) -> tuple[threading.Thread, dict]:
    box: dict = {}

    def run() -> None:
        try:
            box["result"] = fn(*args)
        except BaseException as exc:  # reported by the drill, not lost in the thread
            box["error"] = f"{type(exc).__name__}: {exc}"

    t = threading.Thread(target=run, daemon=True)
    t.start()
    return t, box


def main() -> None:
    import ray
    from ray.cluster_utils import Cluster

    t0 = time.perf_counter()
    cluster = Cluster()
    figures: dict = {}
    try:
        cluster.add_node(num_cpus=2, num_gpus=0, include_dashboard=False)
        cluster.wait_for_nodes()
        ray.init(address=cluster.address, log_to_driver=False)
        address = cluster.address
        t1 = time.perf_counter()
        figures["cpu_members"] = _members(address, 0.0)
        figures["cpu_repeats"] = _repeats(address, 0.0)
        figures["cpu_s"] = round(time.perf_counter() - t1, 1)
        threads = [_in_thread(_members, address, 1.0), _in_thread(_repeats, address, 0.5)]
        time.sleep(PENDING_S)
        figures["pending_before_gpu_node"] = [t.is_alive() for t, _ in threads]
        cluster.add_node(num_cpus=1, num_gpus=1)
        cluster.wait_for_nodes()
        t2 = time.perf_counter()
        for t, _ in threads:
            t.join(timeout=240)
        figures["gpu_s"] = round(time.perf_counter() - t2, 1)
        members, repeats = (box for _, box in threads)
        figures["gpu_members"] = members.get("result", members.get("error"))
        figures["gpu_repeats"] = repeats.get("result", repeats.get("error"))
    finally:
        ray.shutdown()
        cluster.shutdown()
    figures["total_s"] = round(time.perf_counter() - t0, 1)
    print("FIGURES " + json.dumps(figures), flush=True)


if __name__ == "__main__":
    main()
