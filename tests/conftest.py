"""Shared fixtures: one real local Ray per test session, small generated data, quiet W&B.

Ray is started at most once per pytest run (ray.init takes seconds and ~640 MiB), only by the
tests that ask for the `ray_local` fixture.
"""

from __future__ import annotations

import os

import pytest
import torch

# Tests never reach the network: W&B writes offline runs, Tune stays quiet.
os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("WANDB_SILENT", "true")
os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")
os.environ.setdefault("RAY_AUTH_MODE", "disabled")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
torch.set_num_threads(2)


@pytest.fixture(scope="session")
def ray_local():
    """A real local Ray with 2 CPUs (and 1 schedulable GPU, used only for packing tests)."""
    import ray

    if not ray.is_initialized():
        ray.init(
            address="local",
            num_cpus=2,
            num_gpus=1,
            include_dashboard=False,
            log_to_driver=False,
            configure_logging=False,
        )
    yield ray
    ray.shutdown()


@pytest.fixture(scope="session")
def tiny_splits():
    """The synthetic-sep task, small: 512 train / 128 val / 128 test images of 3×32×32."""
    from raydistill.data import make_synthetic_sep

    return make_synthetic_sep(n_train=512, n_val=128, n_test=128, seed=0)
