"""synthetic-sep, the generated task that reads no file (raydistill.data.make_synthetic_sep and
`load_dataset("synthetic-sep:N[:S[:C]]")`): its labelling rule, seeding, sizes and channels, bad
specs. Sources read from files, the decode cache and splits are tests/test_data.py.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from raydistill.core.errors import UserError
from raydistill.data import SYNTHETIC_CLASSES, load_dataset, make_synthetic_sep


def test_synthetic_sep_follows_the_rule():
    s = make_synthetic_sep(n_train=300, n_val=50, n_test=60, seed=4)
    assert s.classes == SYNTHETIC_CLASSES and s.num_classes == 2
    assert s.sizes() == {"train": 300, "val": 50, "test": 60}
    for part in ("train", "val", "test"):
        x, y = s.split(part)
        assert x.dtype == np.float32 and x.shape[1:] == (3, 32, 32) and y.dtype == np.int64
        t = torch.from_numpy(x).double()
        want = (t[:, 0].flatten(1).norm(dim=1) > t[:, 1].flatten(1).norm(dim=1)).long()
        np.testing.assert_array_equal(y, want.numpy())
    assert 0.35 < s.train_y.mean() < 0.65  # both classes occur
    assert abs(float(s.train_x.std()) - 1.0) < 0.01
    again = make_synthetic_sep(300, 50, 60, seed=4)
    np.testing.assert_array_equal(again.train_x, s.train_x)
    assert again.fingerprint == s.fingerprint
    bigger = make_synthetic_sep(600, 50, 60, seed=4)  # test set independent of n_train
    np.testing.assert_array_equal(bigger.test_x, s.test_x)
    assert not np.array_equal(make_synthetic_sep(300, 50, 60, seed=5).train_x, s.train_x)


def test_synthetic_sep_through_load_dataset():
    s = load_dataset("synthetic-sep:200", val_size=30, seed=1)
    assert s.sizes() == {"train": 200, "val": 30, "test": 30}
    sub = load_dataset("synthetic-sep:200", val_size=30, seed=1, train_subset=50)
    assert len(sub.train_y) == 50 and sub.fingerprint != s.fingerprint
    assert np.bincount(sub.train_y).min() >= 24
    for bad in ("synthetic-sep:", "synthetic-sep:0", "synthetic-sep:ten"):
        with pytest.raises(UserError, match="synthetic-sep:N"):
            load_dataset(bad)


def test_synthetic_sep_input_size_and_channels():
    """size / channels set d = C·S² for the sample-efficiency study; the default is unchanged."""
    # Pinned: the fingerprint of the default 3×32×32 task before size / channels existed.
    assert make_synthetic_sep(50, 10, 10, 3).fingerprint == "8c97fa2ac3de9380"
    small = make_synthetic_sep(40, 10, 20, seed=2, size=5, channels=2)
    assert small.image_shape == (2, 5, 5) and small.train_x.dtype == np.float32
    sq = (small.test_x.astype(np.float64) ** 2).reshape(20, 2, -1).sum(-1)
    np.testing.assert_array_equal(small.test_y, (sq[:, 0] > sq[:, 1]).astype(np.int64))
    assert small.fingerprint != make_synthetic_sep(40, 10, 20, seed=2, size=6).fingerprint
    s = load_dataset("synthetic-sep:100:8:2", val_size=20)
    assert s.image_shape == (2, 8, 8) and s.sizes() == {"train": 100, "val": 20, "test": 20}
    assert load_dataset("synthetic-sep:60:4", val_size=10).image_shape == (3, 4, 4)
    for bad in ("synthetic-sep:10:0", "synthetic-sep:10:4:1", "synthetic-sep:10:4:2:1"):
        with pytest.raises(UserError, match="synthetic-sep:N:S"):
            load_dataset(bad)
