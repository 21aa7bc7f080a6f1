"""--gpus-per-trial auto: a trial's GPU share from its student's measured size (raydistill.search.sizing);
with Ray's logical GPUs on this CPU machine, each trial is granted its own share."""

from __future__ import annotations

import pytest

from raydistill.core.errors import UserError
from raydistill.core.resources import CUDA_CONTEXT_BYTES, MIN_SHARE, least_request
from raydistill.search.sizing import (
    gpu_share,
    measure,
    resident_bytes,
    trial_resources,
    trial_share,
)
from raydistill.students.budget import count_params, solve_budget

DATA = {"in_shape": [3, 32, 32], "num_classes": 10}
H100 = 80.0  # GiB


def spec(family: str, depth: int, budget: int) -> dict:
    return {**solve_budget(family, depth, budget).spec, **DATA}


def config(family: str, depth: int, budget: int, batch: int = 128) -> dict:
    settings = {"ratios": None, "spec": {}, "train": {"batch_size": batch}}
    return {"family": family, "depth": depth, "budget": budget, "settings": settings}


def test_measure_counts_parameters_activations_and_flops_on_the_meta_device() -> None:
    mlp_spec = spec("mlp", 1, 100_000)
    mlp = measure(mlp_spec)
    assert mlp.params == count_params(mlp_spec)
    assert mlp.flops == pytest.approx(2 * mlp.params, rel=0.02)  # one MAC (2 FLOPs) per weight
    small, big = measure(spec("cnn", 2, 1_000_000)), measure(spec("cnn", 2, 31_600_000))
    assert 990_000 < small.params <= 1_000_000 and big.params > 30_000_000
    assert big.flops > 20 * small.flops and big.activations > small.activations


def test_1m_students_pack_many_per_gpu_and_31m_fewer() -> None:
    small = gpu_share(spec("cnn", 2, 1_000_000), 128, H100)
    big = gpu_share(spec("cnn", 2, 31_600_000), 128, H100)
    assert small == MIN_SHARE == 1 / 16 and big == 1.0
    assert gpu_share(spec("cnn", 2, 3_160_000), 128, H100) == 1 / 8
    # a larger batch needs more of the GPU; a small GPU's memory binds first
    assert gpu_share(spec("cnn", 2, 3_160_000), 1024, H100) == 1.0
    assert gpu_share(spec("mlp", 1, 1_000_000), 128, 1 / 1024) == 1.0
    for s in (spec("mlp", 3, 31_600_000), spec("allconv", 2, 1_000_000)):
        share = gpu_share(s, 128, H100)
        assert MIN_SHARE <= share <= 1 and (1 / share).is_integer()  # a power-of-two fraction


def test_trial_share_follows_the_trial_config_and_fixed_shares_pass_through() -> None:
    assert trial_share(config("cnn", 2, 1_000_000), DATA, H100) == 1 / 16
    assert trial_share(config("cnn", 2, 31_600_000), DATA, H100) == 1.0
    assert trial_resources(0.25, 2.0, DATA) == {"cpu": 2.0, "gpu": 0.25}
    assert least_request("auto") == MIN_SHARE and least_request(0.5) == 0.5


def test_memory_counts_the_cuda_context_and_the_resident_splits(tiny_splits) -> None:
    """On a 1 GiB GPU a tiny MLP is bound by memory: its CUDA context alone is 0.6 GiB (→ 1
    GPU), and on an 8 GiB one 6 GiB of resident splits move it from 1/8 to a whole GPU."""
    tiny = spec("mlp", 1, 10_000)
    assert CUDA_CONTEXT_BYTES > 0.5 * 2**30
    assert gpu_share(tiny, 128, 1.0) == 1.0
    assert gpu_share(tiny, 128, 8.0) == 1 / 8  # (0.6 GiB + a few MB) / 8 GiB → 1/8
    assert gpu_share(tiny, 128, 8.0, resident_bytes=6 * 2**30) == 1.0
    n = sum(len(a) for a in (tiny_splits.train_x, tiny_splits.val_x, tiny_splits.test_x))
    assert resident_bytes(tiny_splits) == n * 3 * 32 * 32 * tiny_splits.train_x.itemsize


def test_shares_above_one_must_be_whole_gpus() -> None:
    assert trial_resources(2, 1.0, DATA) == {"cpu": 1.0, "gpu": 2.0}
    with pytest.raises(
        UserError,
        match=r"--gpus-per-trial 1.5 is invalid: a share above 1 must be a whole number of GPUs",
    ):
        trial_resources(1.5, 1.0, DATA)


def test_each_trial_gets_its_share_on_logical_gpus(ray_local, tmp_path) -> None:
    from ray import tune

    def _granted(config: dict) -> None:  # local: pickled by value for the trial's worker
        import ray
        from ray import tune

        tune.report({"gpu": ray.get_runtime_context().get_assigned_resources().get("GPU", 0.0)})

    res = trial_resources("auto", 0.5, DATA)
    tuner = tune.Tuner(
        tune.with_resources(_granted, res),
        param_space={
            "budget": tune.grid_search([1_000_000, 31_600_000]),
            "family": "cnn",
            "depth": 2,
            "settings": {"ratios": None, "spec": {}, "train": {}},
        },
        run_config=tune.RunConfig(storage_path=str(tmp_path), verbose=0),
    )
    results = tuner.fit()
    granted = {r.config["budget"]: r.metrics["gpu"] for r in results}
    # the machine has 1 logical GPU (ray_local); the shares are the sized ones
    assert granted == {1_000_000: 1 / 16, 31_600_000: 1.0}
