"""The multi-node half of tests/test_storage.py, run in a subprocess of its own (its own
RAY_TMPDIR, tagged environment; see scripts/drill_kit.py): a 2-node `ray.cluster_utils.Cluster`
on 127.0.0.1 (1 CPU per node) runs a search of 2 tiny cells, with offline W&B runs, whose Tune
storage is the S3 URI in argv (the test's moto server: AWS_ENDPOINT_URL and fake keys come through the environment),
then each cell's best configuration once more with a fresh seed (`raydistill.study.repeats`, Ray
tasks writing their rows to `<storage>/repeats/`). Prints one line `FIGURES {json}`. The data is `drill_splits()`, which the test rebuilds to
re-verify the export's test accuracy.
"""

from __future__ import annotations

import json
import sys
import time

EPOCHS, CHECKPOINT_EVERY, TRIALS = 3, 2, 2  # checkpoints at epochs 2 and 3 (the end)


def drill_splits():
    from raydistill.data import make_synthetic_sep

    return make_synthetic_sep(n_train=256, n_val=64, n_test=64, seed=0)


def space(family: str) -> dict:
    train = {
        "lr": {"log_float": [0.002, 0.02]},
        "momentum": 0.9,
        "batch_size": 64,
        "max_epochs": EPOCHS,
        "schedule": "cosine",
        "augment": "none",
    }
    return {"family": family, "depths": [1], "train": train}


def main(out: str, storage: str) -> None:
    import ray
    from ray import tune
    from ray.cluster_utils import Cluster

    from raydistill.search import SearchSettings, run_search

    t0 = time.perf_counter()
    cluster = Cluster()
    try:
        cluster.add_node(num_cpus=1, include_dashboard=False)
        cluster.add_node(num_cpus=1)
        cluster.wait_for_nodes()
        ray.init(address=cluster.address, log_to_driver=False)
        nodes = sum(1 for n in ray.nodes() if n["Alive"])
        t1 = time.perf_counter()
        settings = SearchSettings(
            spaces=[space("cnn"), space("mlp")],
            budgets="20k",
            trials=TRIALS,
            out=out,
            storage=storage,
            address=cluster.address,
            device="cpu",
            wandb="offline",  # each trial's run is written on its node, then synced to S3
            cpus_per_trial=1,
            checkpoint_every=CHECKPOINT_EVERY,
        )
        run_search(settings, data=drill_splits(), verbose=0)
        search_s = time.perf_counter() - t1
        settings = SearchSettings.load(out)
        analysis = tune.ExperimentAnalysis(settings.run_path(settings.runs[-1]))
        trial_nodes = sorted({t.last_result.get("node_id") for t in analysis.trials})
        repeats = _repeats(out, storage, cluster.address)
    finally:
        ray.shutdown()
        cluster.shutdown()
    figures = {
        "nodes": nodes,
        "trial_nodes": len(trial_nodes),
        "repeats": repeats,
        "search_s": round(search_s, 1),
        "total_s": round(time.perf_counter() - t0, 1),
    }
    print("FIGURES " + json.dumps(figures), flush=True)


def _repeats(out: str, storage: str, address: str) -> list[dict]:
    from raydistill.search import load_trials
    from raydistill.study.repeats import repeat_jobs, run_repeats

    trials = load_trials(out).assign(row=lambda d: d["cell"], twin=False)
    jobs = repeat_jobs(trials, 1)
    runs = run_repeats(
        jobs, drill_splits(), None, address=address, storage=storage, log=lambda _: None
    )
    return runs[["trial_id", "seed", "status"]].to_dict("records")


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
