"""Data sources read from files, the decode cache, splits and bad input (raydistill.data.sources);
synthetic-sep, which reads no file, is tests/test_data_synthetic.py.

Every test builds its own small CIFAR-like data in tmp folders: 10 classes × 20 training and
× 5 test images, written as torchvision's pickled `cifar-10-batches-py` layout, as an
ImageFolder of PNGs, as a Parquet file of PNG bytes (pixels exact, so all three must give the
same arrays) and as a Parquet file of JPEG bytes (compared with PIL's decoding of the same bytes).
"""

from __future__ import annotations

import io
import os
import pickle
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from raydistill.core.errors import UserError
from raydistill.data import (
    CIFAR10_CLASSES,
    DECODE_STATS,
    load_dataset,
    make_synthetic_sep,
    readers,
)
from raydistill.data import sources as S

N_TRAIN, N_TEST = 20, 5  # per class


def _images(n_per_class: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Distinct random-ish NCHW uint8 images: a per-class colour gradient plus noise."""
    rng = np.random.default_rng(seed)
    y = np.repeat(np.arange(10), n_per_class)
    ramp = np.linspace(0, 1, 32)[None, None, :] * np.linspace(0.2, 1, 3)[:, None, None]
    base = 40 + 100 * ramp * (1 + y[:, None, None, None] / 10)
    x = np.clip(base + rng.normal(0, 30, (len(y), 3, 32, 32)), 0, 255).astype(np.uint8)
    return x, y


def _png(img: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(img.transpose(1, 2, 0)).save(buf, format="PNG")
    return buf.getvalue()


def _jpeg(img: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(img.transpose(1, 2, 0)).save(buf, format="JPEG", quality=75)
    return buf.getvalue()


def write_cifar_batches(folder: Path, train, test) -> Path:
    """torchvision's layout: data_batch_1..5, test_batch (dicts with N×3072 'data', 'labels'),
    batches.meta ('label_names'); the original is a protocol-2 pickle, we write both protocols."""
    folder.mkdir(parents=True)
    (tx, ty), (vx, vy) = train, test
    parts = np.array_split(np.arange(len(ty)), 5)
    for i, rows in enumerate(parts, start=1):
        batch = {
            "batch_label": f"training batch {i} of 5",
            "labels": ty[rows].tolist(),
            "data": tx[rows].reshape(len(rows), -1),
            "filenames": [f"{r}.png" for r in rows],
        }
        (folder / f"data_batch_{i}").write_bytes(pickle.dumps(batch, protocol=2 if i % 2 else 5))
    test_batch = {"labels": vy.tolist(), "data": vx.reshape(len(vy), -1)}
    (folder / "test_batch").write_bytes(pickle.dumps(test_batch, protocol=2))
    meta = {"label_names": list(CIFAR10_CLASSES), "num_vis": 3072}
    (folder / "batches.meta").write_bytes(pickle.dumps(meta, protocol=2))
    return folder


def write_imagefolder(root: Path, train, test) -> Path:
    for part, (x, y) in (("train", train), ("test", test)):
        for i, (img, lab) in enumerate(zip(x, y, strict=True)):
            d = root / part / CIFAR10_CLASSES[lab]
            d.mkdir(parents=True, exist_ok=True)
            (d / f"{i:04d}.png").write_bytes(_png(img))
    return root


def write_parquet(path: Path, train, test, encode=_png, column="png") -> Path:
    rows = [("train", x, y, i) for i, (x, y) in enumerate(zip(*train, strict=True))]
    rows += [("test", x, y, i) for i, (x, y) in enumerate(zip(*test, strict=True))]
    table = pa.table({
        "split": pa.array([r[0] for r in rows]).dictionary_encode(),
        "label": pa.array([int(r[2]) for r in rows], pa.int8()),
        "name": [f"{CIFAR10_CLASSES[r[2]]}/{r[3]:04d}.png" for r in rows],
        column: pa.array([encode(r[1]) for r in rows], pa.binary()),
    })  # fmt: skip
    pq.write_table(table, path)
    return path


@pytest.fixture(scope="module")
def sources(tmp_path_factory):
    """The same images in the three layouts (+ a JPEG Parquet file); class-sorted order."""
    root = tmp_path_factory.mktemp("sources")
    train, test = _images(N_TRAIN, seed=1), _images(N_TEST, seed=2)
    return {
        "arrays": (train, test),
        "batches": write_cifar_batches(root / "cifar-10-batches-py", train, test),
        "folder": write_imagefolder(root / "imagefolder", train, test),
        "parquet": write_parquet(root / "png.parquet", train, test),
        "jpeg": write_parquet(root / "jpeg.parquet", train, test, _jpeg, "jpeg"),
        "root": root,
    }


def _pool(splits) -> tuple[np.ndarray, np.ndarray]:
    """Train + val joined back into the training pool, in a canonical (byte) order."""
    x = np.concatenate([splits.train_x, splits.val_x])
    y = np.concatenate([splits.train_y, splits.val_y])
    order = np.lexsort(x.reshape(len(x), -1).T[::-1])
    return x[order], y[order]


# ---------------------------------------------------------------------------------- sources


def test_three_sources_give_the_same_arrays(sources, tmp_path):
    (tx, ty), (vx, vy) = sources["arrays"]
    loaded = {
        k: load_dataset(sources[k], cache_dir=tmp_path, val_size=50, seed=3)
        for k in ("batches", "folder", "parquet")
    }
    loaded["parent"] = load_dataset(sources["root"], cache_dir=tmp_path, val_size=50, seed=3)
    want_x, want_y = _pool(load_dataset(sources["batches"], cache_dir=tmp_path, val_size=0))
    ref_order = np.lexsort(tx.reshape(len(tx), -1).T[::-1])
    np.testing.assert_array_equal(want_x, tx[ref_order])  # the pool is exactly what we wrote
    np.testing.assert_array_equal(want_y, ty[ref_order])
    for name, s in loaded.items():
        assert s.classes == CIFAR10_CLASSES, name
        assert s.train_x.dtype == np.uint8 and s.train_y.dtype == np.int64, name
        assert s.image_shape == (3, 32, 32) and s.sizes() == {"train": 150, "val": 50, "test": 50}
        np.testing.assert_array_equal(s.test_x, vx, err_msg=name)
        np.testing.assert_array_equal(s.test_y, vy, err_msg=name)
        np.testing.assert_array_equal(s.train_x, loaded["batches"].train_x, err_msg=name)
        np.testing.assert_array_equal(s.val_y, loaded["batches"].val_y, err_msg=name)
    # Same pixels, same split settings: one fingerprint, whatever the format.
    assert len({s.fingerprint for s in loaded.values()}) == 1
    assert loaded["batches"].name == "cifar10" and loaded["parquet"].name == "png"


def test_parquet_jpeg_matches_pil_decoding(sources, tmp_path):
    s = load_dataset(sources["jpeg"], cache_dir=tmp_path, val_size=0)
    table = pq.read_table(sources["jpeg"], columns=["split", "jpeg"]).to_pydict()
    test_bytes = [b for sp, b in zip(table["split"], table["jpeg"], strict=True) if sp == "test"]
    pil = np.stack(
        [
            np.asarray(Image.open(io.BytesIO(b)).convert("RGB")).transpose(2, 0, 1)
            for b in test_bytes
        ]
    )
    diff = np.abs(s.test_x.astype(int) - pil)
    assert diff.max() <= 2 and diff.mean() < 0.05  # libjpeg-turbo both; equal on this install
    assert s.sizes()["train"] == 10 * N_TRAIN
    assert not np.array_equal(s.test_x, sources["arrays"][1][0])  # JPEG is lossy: really decoded


def test_second_load_reads_the_cache_and_never_decodes(sources, tmp_path, monkeypatch):
    first = load_dataset(sources["parquet"], cache_dir=tmp_path, val_size=50)
    entries = list((tmp_path / "decoded").iterdir())
    assert [e.name.split("-")[0] for e in entries] == ["parquet"]
    assert {p.name for p in entries[0].iterdir()} >= {"train_x.npy", "test_x.npy", "meta.json"}

    def no_decoding(*args, **kwargs):
        raise AssertionError("decoded again although the cache holds this source")

    monkeypatch.setitem(S._READERS, "parquet", no_decoding)
    monkeypatch.setattr(readers, "decode_images", no_decoding)
    before = dict(DECODE_STATS)
    second = load_dataset(sources["parquet"], cache_dir=tmp_path, val_size=50)
    assert DECODE_STATS["decodes"] == before["decodes"]
    assert DECODE_STATS["cache_hits"] == before["cache_hits"] + 1
    np.testing.assert_array_equal(first.train_x, second.train_x)
    assert first.fingerprint == second.fingerprint


def test_changed_content_changes_fingerprint_and_decodes_again(sources, tmp_path):
    (tx, ty), test = sources["arrays"]
    path = write_parquet(tmp_path / "d.parquet", (tx, ty), test)
    folder = write_imagefolder(tmp_path / "folder", (tx, ty), test)
    a, fa = (load_dataset(p, cache_dir=tmp_path / "c", val_size=50) for p in (path, folder))
    tx2 = tx.copy()
    tx2[0, 0, 0, 0] ^= 0xFF  # one pixel
    write_parquet(path, (tx2, ty), test)
    img = folder / "train" / CIFAR10_CLASSES[ty[0]] / "0000.png"
    img.write_bytes(_png(tx2[0]))
    decodes = DECODE_STATS["decodes"]
    b, fb = (load_dataset(p, cache_dir=tmp_path / "c", val_size=50) for p in (path, folder))
    assert DECODE_STATS["decodes"] == decodes + 2
    assert a.fingerprint != b.fingerprint and fa.fingerprint != fb.fingerprint
    assert b.fingerprint == fb.fingerprint  # same new pixels in both formats


def test_cifar10_found_in_cache_root_else_error_says_how(sources, tmp_path, monkeypatch):
    with pytest.raises(UserError, match=r"download=True") as err:
        load_dataset("cifar10", cache_dir=tmp_path / "empty")
    assert "\n" not in str(err.value)
    write_cifar_batches(tmp_path / "cache" / "cifar-10-batches-py", *sources["arrays"])
    monkeypatch.setenv("RAYDISTILL_CACHE", str(tmp_path / "cache"))
    s = load_dataset("cifar10", val_size=100)
    assert s.name == "cifar10" and s.sizes() == {"train": 100, "val": 100, "test": 50}
    assert (tmp_path / "cache" / "decoded").is_dir()


# ---------------------------------------------------------------------------------- splits


def test_splits_balanced_disjoint_seeded(sources, tmp_path):
    s = load_dataset(sources["parquet"], cache_dir=tmp_path, val_size=50, seed=0)
    assert np.bincount(s.val_y, minlength=10).tolist() == [5] * 10
    assert np.bincount(s.train_y, minlength=10).tolist() == [15] * 10
    rows = lambda x: {r.tobytes() for r in x}  # noqa: E731
    assert not rows(s.train_x) & rows(s.val_x)
    assert len(rows(s.train_x) | rows(s.val_x)) == 10 * N_TRAIN
    again = load_dataset(sources["parquet"], cache_dir=tmp_path, val_size=50, seed=0)
    other = load_dataset(sources["parquet"], cache_dir=tmp_path, val_size=50, seed=1)
    np.testing.assert_array_equal(s.val_x, again.val_x)
    assert not np.array_equal(s.val_x, other.val_x)
    assert len({s.fingerprint, other.fingerprint}) == 2
    assert s.fingerprint == again.fingerprint
    assert s.split("val")[0] is s.val_x and s.num_classes == 10


def test_train_subset_is_balanced_and_inside_train(sources, tmp_path):
    full = load_dataset(sources["parquet"], cache_dir=tmp_path, val_size=50)
    sub = load_dataset(sources["parquet"], cache_dir=tmp_path, val_size=50, train_subset=40)
    assert np.bincount(sub.train_y, minlength=10).tolist() == [4] * 10
    assert {r.tobytes() for r in sub.train_x} <= {r.tobytes() for r in full.train_x}
    np.testing.assert_array_equal(sub.val_x, full.val_x)
    assert sub.fingerprint != full.fingerprint
    odd = load_dataset(sources["parquet"], cache_dir=tmp_path, val_size=53, train_subset=37)
    assert len(odd.val_y) == 53 and len(odd.train_y) == 37
    assert np.ptp(np.bincount(odd.val_y)) <= 1 and np.ptp(np.bincount(odd.train_y)) <= 1


# ---------------------------------------------------------------------------------- errors


def _one_line_error(source, cache_dir, match, **kw) -> str:
    with pytest.raises(UserError, match=match) as err:
        load_dataset(source, cache_dir=cache_dir, **kw)
    msg = str(err.value)
    assert "\n" not in msg
    return msg


def test_bad_paths_and_files(tmp_path):
    cache = tmp_path / "cache"
    msg = _one_line_error(tmp_path / "nope.parquet", cache, "does not exist")
    assert "nope.parquet" in msg and ".parquet file" in msg
    (tmp_path / "empty").mkdir()
    _one_line_error(tmp_path / "empty", cache, "not a recognised layout")
    (tmp_path / "junk.parquet").write_text("not parquet at all")
    assert "junk.parquet" in _one_line_error(
        tmp_path / "junk.parquet", cache, "not a readable Parquet"
    )
    (tmp_path / "notes.txt").write_text("hello")
    _one_line_error(tmp_path / "notes.txt", cache, "not a Parquet file")
    pq.write_table(pa.table({"label": [0], "img": [b"x"]}), tmp_path / "cols.parquet")
    _one_line_error(tmp_path / "cols.parquet", cache, r"expected 'split', 'label'")


def test_bad_images_and_settings(sources, tmp_path):
    cache = tmp_path / "cache"
    (tx, ty), test = sources["arrays"]
    path = write_parquet(
        tmp_path / "bad.parquet", (tx[:3], ty[:3]), test, encode=lambda _: b"\x89PNG junk"
    )
    _one_line_error(path, cache, "not a decodable JPEG/PNG")
    path = write_parquet(tmp_path / "notest.parquet", (tx, ty), (tx[:0], ty[:0]))
    _one_line_error(path, cache, "no rows with split == 'test'")
    _one_line_error(sources["parquet"], cache, "val_size 200 is invalid", val_size=200)
    _one_line_error(
        sources["parquet"], cache, "train_subset 500 is invalid", val_size=50, train_subset=500
    )
    s = make_synthetic_sep(4, 2, 2, seed=0)
    with pytest.raises(UserError, match="split 'dev' is unknown"):
        s.split("dev")


def test_pickles_with_code_are_refused(sources, tmp_path):
    folder = write_cifar_batches(tmp_path / "cifar-10-batches-py", *sources["arrays"])
    marker = tmp_path / "pwned"

    class Exploit:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    (folder / "data_batch_3").write_bytes(pickle.dumps({"data": Exploit(), "labels": [0]}))
    _one_line_error(folder, tmp_path / "cache", "not a CIFAR-10 python batch file")
    assert not marker.exists()


def test_unwritable_cache_warns_and_still_loads(sources, tmp_path):
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a file where the cache root should be")
    with pytest.warns(UserWarning, match="cannot cache decoded data"):
        s = load_dataset(sources["parquet"], cache_dir=blocker, val_size=50)
    assert s.sizes()["train"] == 150 and blocker.is_file()


# ---------------------------------------------------------------- grayscale, other sizes, defaults
def _gray_png(img: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(img[0], mode="L").save(buf, format="PNG")
    return buf.getvalue()


def _gray(n_per_class: int, classes: int, side: int, seed: int):
    rng = np.random.default_rng(seed)
    y = np.repeat(np.arange(classes), n_per_class)
    x = rng.integers(0, 256, (len(y), 1, side, side)).astype(np.uint8)
    return x, y


def test_grayscale_28px_keeps_one_channel_in_every_layout(tmp_path):
    train, test = _gray(20, 5, 28, seed=1), _gray(4, 5, 28, seed=2)
    root = tmp_path / "folder"
    for part, (x, y) in (("train", train), ("test", test)):
        for i, (img, lab) in enumerate(zip(x, y, strict=True)):
            (root / part / f"c{lab}").mkdir(parents=True, exist_ok=True)
            (root / part / f"c{lab}" / f"{i:03d}.png").write_bytes(_gray_png(img))
    parquet = write_parquet(tmp_path / "gray.parquet", train, test, encode=_gray_png)
    for source in (root, parquet):
        s = load_dataset(source, cache_dir=tmp_path / "cache", seed=0)
        assert s.image_shape == (1, 28, 28) and s.num_classes == 5
        assert s.sizes() == {"train": 80, "val": 20, "test": 20}  # default val: 20 % of 100
        pool_x = np.concatenate([s.train_x, s.val_x])
        assert sorted(map(bytes, pool_x)) == sorted(map(bytes, train[0]))  # pixels exact
        np.testing.assert_array_equal(s.test_x, test[0])


def test_default_val_size_adapts_and_keeps_cifar_at_10000():
    assert S.default_val_size(50_000) == 10_000
    assert S.default_val_size(100) == 20


def test_mixed_image_sizes_are_refused_in_one_line(tmp_path):
    x, y = _images(2, seed=3)
    small = np.ascontiguousarray(x[:1, :, :16, :16])
    blobs = [_png(img) for img in x] + [_png(small[0])]
    path = tmp_path / "mixed.parquet"
    table = pa.table(
        {
            "split": ["train"] * len(blobs) + ["test"],
            "label": [*y.tolist(), 0, 0],
            "png": pa.array([*blobs, blobs[0]], pa.binary()),
        }
    )
    pq.write_table(table, path)
    msg = _one_line_error(path, tmp_path / "cache", "mixed sizes")
    assert "image 0 is 32×32 px" in msg and "16×16 px" in msg


def test_test_split_missing_a_class_warns(tmp_path):
    train, test = _gray(10, 3, 12, seed=4), _gray(4, 3, 12, seed=5)
    keep = test[1] != 2
    path = write_parquet(tmp_path / "t.parquet", train, (test[0][keep], test[1][keep]), _gray_png)
    with pytest.warns(UserWarning, match="test split has no image of 1 of 3 classes"):
        s = load_dataset(path, cache_dir=tmp_path / "cache")
    assert s.num_classes == 3
