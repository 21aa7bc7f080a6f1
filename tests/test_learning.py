"""Students learn: from a transfer set (L2 on logits) and from hard labels, well above chance.

The teacher is an exact one (its logits are a fixed function of the image), so these tests
check the student side only: that the training loop's batches carry the ensemble's logits of
the very views it trains on, and that a short run learns the task.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from raydistill.data import AugConfig, Preprocess, Splits, to_float
from raydistill.distill.ensemble import Ensemble
from raydistill.distill.transfer.format import load_transfer_set
from raydistill.distill.transfer.writer import write_transfer_set
from raydistill.training.config import TrainConfig
from raydistill.training.loop import Trainer, train_student


def bright_splits(n_train: int = 2048, n_eval: int = 512, seed: int = 0) -> Splits:
    """uint8 RGB images; label 1 iff the red channel is brighter than the blue one (chance 50 %)."""
    rng = np.random.default_rng(seed)
    parts = {}
    for name, n in (("train", n_train), ("val", n_eval), ("test", n_eval)):
        x = rng.integers(0, 256, size=(n, 3, 32, 32), dtype=np.uint8)
        # A per-image colour cast makes the classes separable by a margin, not by a hair.
        cast = rng.integers(-40, 41, size=(n, 1, 1)).astype(np.int16)
        x[:, 0] = np.clip(x[:, 0].astype(np.int16) + cast, 0, 255).astype(np.uint8)
        parts[f"{name}_x"] = x
        parts[f"{name}_y"] = (x[:, 0].mean((1, 2)) > x[:, 2].mean((1, 2))).astype(np.int64)
    return Splits(name="bright", fingerprint=f"bright-{seed}", classes=("b", "r"), **parts)


class RedMinusBlue(nn.Module):
    """An exact teacher: logits (−k·d, k·d) with d = mean(red) − mean(blue) of the view."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        d = 20.0 * (x[:, 0].mean((1, 2)) - x[:, 2].mean((1, 2)))
        return torch.stack([-d, d], dim=1)


def exact_ensemble() -> Ensemble:
    member = RedMinusBlue().eval()
    member.unused = nn.Parameter(torch.zeros(1))  # Ensemble.device reads a parameter's device
    return Ensemble(
        members=[member],
        preprocess=Preprocess("none"),
        fingerprints=["exact"],
        spec={"num_classes": 2, "in_shape": [3, 32, 32]},
    )


@pytest.fixture(scope="module")
def setup(tmp_path_factory) -> tuple[Splits, Ensemble, Path]:
    splits, ens = bright_splits(), exact_ensemble()
    path = tmp_path_factory.mktemp("learn") / "transfer.parquet"
    write_transfer_set(path, ens, splits, 4, seed=3, aug=AugConfig.paper_hsv())  # the paper's views
    return splits, ens, path


def test_every_training_batch_carries_the_ensembles_logits_of_its_views(setup) -> None:
    splits, ens, path = setup
    ts = load_transfer_set(path, splits=splits)
    cfg = TrainConfig(preprocess="none", batch_size=100, input_scale=1.0, device="cpu")
    tr = Trainer({"family": "mlp", "depth": 1, "widths": [4, 4]}, splits, ts, cfg)
    seen = 0
    for epoch in (0, 3):
        for x, y, t in tr._batches(epoch):  # x: the replayed views, unpreprocessed
            np.testing.assert_allclose(ens.logits(ens.preprocess(x)), t, atol=1e-4, rtol=0)
            seen += len(y)
    assert seen == 2 * len(splits.train_y)


@pytest.mark.parametrize("loss", ["l2_logits", "hard"])
def test_a_student_learns_well_above_chance(setup, loss: str) -> None:
    splits, _, path = setup
    ts = load_transfer_set(path, splits=splits)
    spec = {"family": "cnn", "depth": 1, "widths": [8, 8, 8]}
    lr = 0.003 if loss == "l2_logits" else 0.05  # L2's gradients are larger: (s − t), not p − y
    cfg = TrainConfig(
        loss=loss,
        lr=lr,
        momentum=0.9,
        batch_size=64,
        max_epochs=4,
        schedule="cosine",
        warmup_epochs=1,
        seed=0,
        device="cpu",
    )
    res = train_student(spec, splits, ts, cfg)
    assert res.status == "finished"
    assert res.test_acc > 0.85, res.history  # chance is 0.5


def test_the_transfer_views_keep_their_labels_for_the_exact_teacher(setup) -> None:
    # The augmentation (mirror, crops, HSV jitter) barely moves red − blue: the teacher's
    # accuracy on the views it labels is recorded, and high.
    splits, ens, path = setup
    meta = load_transfer_set(path, splits=splits).meta
    assert meta["ensemble_test_view_acc"] > 0.9
    x = to_float(torch.as_tensor(splits.test_x))
    acc = (ens.logits(x).argmax(1).numpy() == splits.test_y).mean()
    assert acc == 1.0 and meta["ensemble_test_acc"] == 1.0
