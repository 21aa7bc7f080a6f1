"""Transfer sets: Parquet round trip, exact replay of the teacher's views, refusals, the CLI."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from raydistill.core.errors import UserError
from raydistill.data import AUG_KEYS, AugConfig, Splits, epoch_plan, make_synthetic_sep
from raydistill.data.augment import named_aug
from raydistill.data.replay import replay_batch
from raydistill.distill.ensemble import make_ensemble, save_ensemble
from raydistill.distill.teachers import member_config, train_member
from raydistill.distill.transfer.format import META_KEY, load_transfer_set
from raydistill.distill.transfer.writer import replay, write_transfer_set
from raydistill.training.config import make_preprocess

WIDTHS = [4, 8, 8, 8]
EPOCHS = 2


def uint8_splits(n_train: int = 192, n_eval: int = 48, seed: int = 0) -> Splits:
    """Random uint8 RGB images; label 1 where the red channel is brighter than the blue one."""
    rng = np.random.default_rng(seed)
    parts = {}
    for name, n in (("train", n_train), ("val", n_eval), ("test", n_eval)):
        x = rng.integers(0, 256, size=(n, 3, 32, 32), dtype=np.uint8)
        parts[f"{name}_x"] = x
        parts[f"{name}_y"] = (x[:, 0].mean((1, 2)) > x[:, 2].mean((1, 2))).astype(np.int64)
    return Splits(name="u8", fingerprint=f"u8-{seed}-{n_train}", classes=("b", "r"), **parts)


def tiny_ensemble(splits: Splits, seeds=(0, 1), preprocess: str = "per_image"):
    spec = {
        "family": "resnet9",
        "depth": 9,
        "widths": WIDTHS,
        "in_shape": [3, 32, 32],
        "num_classes": splits.num_classes,
    }
    cfg = member_config("resnet9", 1, 0, batch_size=64, augment="paper", preprocess=preprocess)
    results = [train_member(spec, splits, {**cfg.to_dict(), "seed": s}) for s in seeds]
    ens = make_ensemble(spec, [r["weights"] for r in results], make_preprocess(preprocess, splits))
    return ens, results, [cfg] * len(seeds)


@pytest.fixture(scope="module")
def splits() -> Splits:
    return uint8_splits()


@pytest.fixture(scope="module")
def ensemble(splits):
    return tiny_ensemble(splits, preprocess="dataset")[0]


@pytest.fixture(scope="module")
def ts_path(tmp_path_factory, ensemble, splits) -> Path:
    path = tmp_path_factory.mktemp("ts") / "transfer.parquet"
    # the paper's views (crops + HSV): every replay path is exercised
    write_transfer_set(
        path, ensemble, splits, EPOCHS, seed=5, aug=AugConfig.paper_hsv(), batch_size=50
    )
    return path


# ----------------------------------------------------------------------------- round trip


def test_round_trip_layout_and_metadata(ts_path: Path, ensemble, splits) -> None:
    ts = load_transfer_set(ts_path, splits=splits, teacher_fingerprints=ensemble.fingerprints)
    n = len(splits.train_y)
    assert ts.num_epochs == EPOCHS and ts.views_per_epoch == n and ts.num_classes == 2
    assert ts.logits.shape == (EPOCHS * n, 2) and ts.logits.dtype == np.float32
    assert ts.index.dtype == np.int64 and set(ts.params) == set(AUG_KEYS)
    for e in range(EPOCHS):
        index, params = ts.views(e)
        assert (ts.epoch[ts.epoch_rows(e)] == e).all()
        order, want = epoch_plan(n, seed=5, epoch=e, aug=AugConfig.paper_hsv())
        assert np.array_equal(index, order.numpy())  # a seeded permutation, stored in order
        for k in AUG_KEYS:
            np.testing.assert_allclose(params[k], want[k].numpy(), rtol=0, atol=0)
    assert not np.array_equal(ts.views(0)[0], ts.views(1)[0])
    meta = ts.meta
    assert meta["aug"] == AugConfig.paper_hsv().to_dict() and meta["aug"]["hsv"] is not None
    assert meta["teacher_fingerprints"] == ensemble.fingerprints
    assert meta["dataset_fingerprint"] == splits.fingerprint and meta["seed"] == 5
    val_x, val_y = (torch.as_tensor(a) for a in splits.split("val"))
    assert meta["ensemble_val_acc"] == pytest.approx(ensemble.accuracy(val_x, val_y))
    pf = pq.ParquetFile(ts_path)
    assert pf.metadata.num_row_groups == EPOCHS
    assert pf.schema_arrow.field("logits").type == pa.list_(pa.float32(), 2)
    assert len(ts.fingerprint) == 64
    with pytest.raises(UserError, match=r"epochs 0\.\.1"):
        ts.epoch_rows(EPOCHS)


def test_replayed_views_reproduce_the_stored_logits(ts_path: Path, ensemble, splits) -> None:
    ts = load_transfer_set(ts_path)
    images = torch.as_tensor(splits.train_x)
    rows = ts.epoch_rows(1)
    x = replay(ts, images, rows)
    assert x.dtype == torch.float32 and x.shape == (ts.views_per_epoch, 3, 32, 32)
    assert float(x.min()) >= 0.0 and float(x.max()) <= 1.0
    logits = ensemble.logits(ensemble.preprocess(x)).numpy()
    np.testing.assert_allclose(logits, ts.logits[rows], atol=1e-5, rtol=0)
    # The lead's loop: an arbitrary batch of rows through replay_batch, same result.
    pick = np.array([3, 150, 7, 300, 191])
    index = torch.as_tensor(ts.index[pick])
    params = {k: torch.as_tensor(v[pick]) for k, v in ts.params.items()}
    xb = replay_batch(images, index, params)
    np.testing.assert_allclose(
        ensemble.logits(ensemble.preprocess(xb)).numpy(), ts.logits[pick], atol=1e-5, rtol=0
    )
    # The views are augmented: not the raw images.
    raw = torch.as_tensor(splits.train_x[ts.index[rows]]).float() / 255
    assert (x - raw).abs().mean() > 0.01


def test_writing_is_deterministic_and_atomic(tmp_path: Path, ts_path: Path, ensemble, splits):
    again = tmp_path / "again.parquet"
    write_transfer_set(
        again, ensemble, splits, EPOCHS, seed=5, aug=AugConfig.paper_hsv(), batch_size=17
    )
    a, b = load_transfer_set(ts_path), load_transfer_set(again)
    assert np.array_equal(a.index, b.index)
    np.testing.assert_allclose(a.logits, b.logits, atol=1e-5, rtol=0)  # batch size independent
    other = load_transfer_set(
        write_transfer_set(tmp_path / "s6.parquet", ensemble, splits, 1, seed=6)
    )
    assert not np.array_equal(other.views(0)[0], a.views(0)[0])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["again.parquet", "s6.parquet"]


def test_a_student_trains_on_the_transfer_set(ts_path: Path, splits) -> None:
    from raydistill.training.config import TrainConfig
    from raydistill.training.loop import train_student

    ts = load_transfer_set(ts_path, splits=splits)
    spec = {"family": "mlp", "depth": 1, "widths": [8, 16]}
    res = train_student(spec, splits, ts, TrainConfig(max_epochs=5, batch_size=64, lr=0.01))
    assert res.epochs == EPOCHS  # capped by the transfer set
    assert res.status == "finished" and np.isfinite(res.history[-1]["train/loss"])


# ----------------------------------------------------------------------------- refusals


def _one_line_error(path, match: str, **kw) -> None:
    with pytest.raises(UserError, match=match) as info:
        load_transfer_set(path, **kw)
    assert "\n" not in str(info.value)


def test_other_dataset_or_teacher_is_refused(ts_path: Path, splits) -> None:
    _one_line_error(ts_path, "made for dataset fingerprint", splits=uint8_splits(seed=1))
    _one_line_error(ts_path, "made by teachers", teacher_fingerprints=["0" * 64, "1" * 64])
    smaller = uint8_splits(n_train=100)  # same classes, fewer images (and another fingerprint)
    object.__setattr__(smaller, "fingerprint", splits.fingerprint)
    _one_line_error(ts_path, "indexes image", splits=smaller)


def test_truncated_or_foreign_files_are_refused(tmp_path: Path, ts_path: Path) -> None:
    data = ts_path.read_bytes()
    (tmp_path / "cut.parquet").write_bytes(data[: len(data) // 2])
    _one_line_error(tmp_path / "cut.parquet", "truncated")
    (tmp_path / "text.parquet").write_text("index,epoch\n1,2\n")
    _one_line_error(tmp_path / "text.parquet", "not a Parquet file")
    _one_line_error(tmp_path / "absent.parquet", "does not exist")
    corrupt = bytearray(data)
    corrupt[len(data) - 12 : len(data) - 8] = b"\xff\xff\xff\x7f"  # footer length → garbage
    (tmp_path / "corrupt.parquet").write_bytes(bytes(corrupt))
    _one_line_error(tmp_path / "corrupt.parquet", "corrupt")
    pq.write_table(pa.table({"a": [1, 2]}), tmp_path / "plain.parquet")
    _one_line_error(tmp_path / "plain.parquet", "not a raydistill transfer set")


def _rewrite(src: Path, dst: Path, *, table_fn=None, meta_fn=None) -> Path:
    table = pq.read_table(src)
    meta = json.loads(table.schema.metadata[META_KEY])
    if meta_fn is not None:
        meta = meta_fn(meta)
    if table_fn is not None:
        table = table_fn(table)
    table = table.replace_schema_metadata({META_KEY: json.dumps(meta).encode()})
    pq.write_table(table, dst)
    return dst


def test_inconsistent_contents_are_refused(tmp_path: Path, ts_path: Path) -> None:
    n = pq.ParquetFile(ts_path).metadata.num_rows
    _one_line_error(
        _rewrite(ts_path, tmp_path / "a.parquet", table_fn=lambda t: t.slice(0, n - 1)),
        "rows, expected epochs",
    )
    _one_line_error(
        _rewrite(ts_path, tmp_path / "b.parquet", table_fn=lambda t: t.drop(["hue"])),
        r"lacks columns \['hue'\]",
    )
    _one_line_error(
        _rewrite(ts_path, tmp_path / "c.parquet", meta_fn=lambda m: {**m, "num_classes": 3}),
        "column 'logits'",
    )
    _one_line_error(
        _rewrite(ts_path, tmp_path / "d.parquet", meta_fn=lambda m: {**m, "format_version": 99}),
        "format version",
    )


# ----------------------------------------------------------------------------- CLI


def test_cli_transfer_from_a_teacher_directory(tmp_path: Path, capsys) -> None:
    from raydistill.cli import main
    from raydistill.data import load_dataset

    source = "synthetic-sep:96"
    splits = load_dataset(source, val_size=32)
    ens, results, configs = tiny_ensemble(splits, seeds=(0,))
    per_member = [{"val/acc": 0.5, "test/acc": 0.5}]
    save_ensemble(
        tmp_path / "teacher",
        ens,
        results,
        per_member,
        {"val/acc": 0.5, "test/acc": 0.5},
        configs=configs,
        seeds=[0],
        splits=splits,
        wall_s=1.0,
        extra_config={"data": source, "split": {"val_size": 32, "seed": 0}},
    )
    out = tmp_path / "ts.parquet"
    code = main(
        [
            "transfer",
            "--teacher",
            str(tmp_path / "teacher"),
            "--epochs",
            "2",
            "--out",
            str(out),
            "--batch-size",
            "40",
            "--device",
            "cpu",
        ]
    )
    assert code == 0, capsys.readouterr().err
    assert "2 epochs × 96 views" in capsys.readouterr().out
    ts = load_transfer_set(out, splits=splits, teacher_fingerprints=ens.fingerprints)
    assert ts.num_epochs == 2
    # "auto" is the teachers' own augmentation, read from their manifest (here: paper)
    assert ts.meta["aug"] == named_aug("paper", 32).to_dict()
    # every name of the one vocabulary is accepted, e.g. the teachers' own augmentation
    out2 = tmp_path / "ts-ft.parquet"
    code = main(
        [
            "transfer",
            "--teacher",
            str(tmp_path / "teacher"),
            "--epochs",
            "1",
            "--out",
            str(out2),
            "--aug",
            "flip_translate",
            "--device",
            "cpu",
        ]
    )
    assert code == 0, capsys.readouterr().err
    ts2 = load_transfer_set(out2, splits=splits, teacher_fingerprints=ens.fingerprints)
    assert ts2.meta["aug"]["translate"] == 4 and ts2.meta["aug"]["crop_min"] == 32
    code = main(
        [
            "transfer",
            "--teacher",
            str(tmp_path / "nope"),
            "--epochs",
            "1",
            "--out",
            str(tmp_path / "x.parquet"),
        ]
    )
    assert code == 2 and not (tmp_path / "x.parquet").exists()


def test_synthetic_float_data_replays_too() -> None:
    s = make_synthetic_sep(32, 8, 8, seed=3)
    n = len(s.train_y)
    order, params = epoch_plan(n, seed=0, epoch=0, aug=AugConfig.paper())
    x = replay_batch(torch.as_tensor(s.train_x), order, params)
    assert x.shape == (n, 3, 32, 32) and x.dtype == torch.float32
    assert float(x.min()) < 0  # float images are not rescaled
