"""The ensemble's heavy inference split across GPU workers (raydistill.distill.shards): given 2
GPUs (declared, `Ensemble.gpus`) and Ray's logical GPUs on this CPU machine, the shards' merged logits equal the in-process ones, for the
evaluation (member logits), the view labelling and the written transfer set.

The sharded run needs its own Ray with 2 logical GPUs (the session's Ray has 1), so it runs in a
subprocess: `ray.init(address="local", num_cpus=2, num_gpus=2)`. Its tasks see
CUDA_VISIBLE_DEVICES but no CUDA and fall back to the CPU.
"""

from __future__ import annotations

import itertools
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from raydistill.distill.shards import shard_bounds

SCRIPT = r"""
import json, sys
from pathlib import Path
import numpy as np, torch
from safetensors.torch import save
from raydistill.data import AugConfig, Preprocess, Splits
from raydistill.distill.ensemble import make_ensemble
from raydistill.distill.shards import member_logits, shards_for, view_logits
from raydistill.students import build, complete_spec
from raydistill.distill.transfer.writer import write_transfer_set

out = Path(sys.argv[1])
rng = np.random.default_rng(0)
parts = {}
for name, n in (("train", 250), ("val", 130), ("test", 130)):
    x = rng.integers(0, 256, size=(n, 3, 32, 32), dtype=np.uint8)
    parts[name + "_x"], parts[name + "_y"] = x, (x[:, 0].mean((1, 2)) > 128).astype(np.int64)
splits = Splits(name="u8", fingerprint="u8", classes=("a", "b"), **parts)
spec = complete_spec({"family": "cnn", "depth": 1, "widths": [6, 8, 8], "batchnorm": True}, splits)
blobs = []
for seed in (0, 1):
    torch.manual_seed(seed)
    blobs.append(save({k: v.contiguous() for k, v in build(spec).state_dict().items()}))
ens = make_ensemble(spec, blobs, Preprocess.for_splits("per_image", splits))
aug = AugConfig.paper_hsv()
x_val = torch.as_tensor(splits.val_x)

def run(tag, gpus):
    ens.gpus = gpus  # declared by the caller (the teachers' GPUs, transfer --gpus), not read from Ray
    res = {"gpus": ens.gpus, "shards": shards_for(ens)}
    np.save(out / f"{tag}-members.npy", member_logits(ens, x_val, batch_size=32).numpy())
    views = list(view_logits(ens, splits.train_x, seed=3, epochs=range(5), aug=aug,
                             batch_size=32, parts=(True, True)))
    np.save(out / f"{tag}-views.npy", np.stack([v[3] for v in views]))
    res["epochs"] = [v[0] for v in views]
    write_transfer_set(out / f"{tag}.parquet", ens, splits, 3, seed=3, aug=aug, batch_size=32,
                       gpus=gpus)
    return res

result = {"local": run("local", 0)}
import ray
ray.init(address="local", num_cpus=2, num_gpus=2, include_dashboard=False,
         log_to_driver=False, configure_logging=False)
try:
    result["ray"] = run("ray", 2)
    seen = ray.get(ray.remote(num_gpus=1)(lambda: (ray.get_gpu_ids(),
                   torch.cuda.is_available())).remote())
    result["task_sees"] = [list(map(str, seen[0])), seen[1]]
finally:
    ray.shutdown()
print(json.dumps(result))
"""


def test_shard_bounds_cover_on_batch_boundaries() -> None:
    assert shard_bounds(250, 2, 32) == [(0, 128), (128, 250)]
    assert shard_bounds(100, 4, 50) == [(0, 50), (50, 100)]  # no empty shards
    assert shard_bounds(10, 3, 32) == [(0, 10)]
    for n, k, b in ((1000, 3, 7), (64, 8, 8), (65, 2, 64)):
        bounds = shard_bounds(n, k, b)
        assert bounds[0][0] == 0 and bounds[-1][1] == n and len(bounds) <= k
        assert all(a % b == 0 and a < z for a, z in bounds)
        assert all(z == a2 for (_, z), (a2, _) in itertools.pairwise(bounds))


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("shards")
    proc = subprocess.run(
        [sys.executable, "-c", SCRIPT, str(out)], capture_output=True, text=True, timeout=600
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return out, json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.mark.slow
def test_two_logical_gpus_give_two_shards_that_fall_back_to_the_cpu(runs) -> None:
    _, res = runs
    assert res["local"] == {"gpus": 0, "shards": 0, "epochs": [0, 1, 2, 3, 4]}
    assert res["ray"] == {"gpus": 2, "shards": 2, "epochs": [0, 1, 2, 3, 4]}
    gpu_ids, cuda = res["task_sees"]
    assert len(gpu_ids) == 1 and cuda is False  # a GPU assigned, no CUDA: the CPU it is


@pytest.mark.slow
def test_merged_member_logits_equal_the_in_process_ones(runs) -> None:
    out, _ = runs
    local, sharded = np.load(out / "local-members.npy"), np.load(out / "ray-members.npy")
    assert local.shape == sharded.shape == (2, 130, 2)
    np.testing.assert_allclose(sharded, local, rtol=1e-6, atol=1e-6)


@pytest.mark.slow
def test_merged_view_logits_and_transfer_set_equal_the_in_process_ones(runs) -> None:
    out, _ = runs
    local, sharded = np.load(out / "local-views.npy"), np.load(out / "ray-views.npy")
    assert local.shape == sharded.shape == (5, 250, 2)
    assert np.abs(local).max() > 0  # real logits, not an empty merge
    np.testing.assert_allclose(sharded, local, rtol=1e-6, atol=1e-6)
    a, b = pq.read_table(out / "local.parquet"), pq.read_table(out / "ray.parquet")
    assert a.num_rows == b.num_rows == 3 * 250
    for col in a.column_names:
        if col == "logits":
            la = np.stack(a.column(col).to_numpy(zero_copy_only=False))
            lb = np.stack(b.column(col).to_numpy(zero_copy_only=False))
            np.testing.assert_allclose(lb, la, rtol=1e-6, atol=1e-6)
        else:
            assert a.column(col).equals(b.column(col)), col
