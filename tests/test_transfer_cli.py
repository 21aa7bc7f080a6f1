"""`raydistill transfer` as a user meets it (issue 23): what it refuses before any labelling
(an existing --out without --force, teachers made for other classes or image shapes, a
one-class dataset), what it says when a transfer set does not fit the split settings in use
(which setting, and the flags that match it), --train-subset and --dry-run, and its default
augmentation: the teachers' own, with the ensemble's accuracy on the views printed next to its
accuracy on the images.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from test_transfer import tiny_ensemble, uint8_splits

from raydistill.cli import main
from raydistill.data import load_dataset
from raydistill.data.augment import named_aug
from raydistill.distill.ensemble import save_ensemble
from raydistill.distill.transfer.aug import resolve_aug_name, view_gap
from raydistill.distill.transfer.format import load_transfer_set

SOURCE = "synthetic-sep:96"  # 2 classes of 3×32×32


@pytest.fixture(scope="module")
def teacher(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A one-member teacher directory trained (augment: paper) on SOURCE, val 32."""
    splits = load_dataset(SOURCE, val_size=32)
    ens, results, configs = tiny_ensemble(splits, seeds=(0,))
    d = tmp_path_factory.mktemp("teacher")
    acc = {"val/acc": 0.5, "test/acc": 0.5}
    save_ensemble(
        d,
        ens,
        results,
        [acc],
        acc,
        configs=configs,
        seeds=[0],
        splits=splits,
        wall_s=1.0,
        extra_config={"data": SOURCE, "split": {"val_size": 32, "seed": 0}},
    )
    return d


def transfer(teacher: Path, out: Path, *extra: str) -> int:
    return main(
        [
            "transfer",
            "--teacher",
            str(teacher),
            "--epochs",
            "1",
            "--out",
            str(out),
            "--device",
            "cpu",
            "--batch-size",
            "64",
            *extra,
        ]
    )


def one_line_error(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert err.startswith("raydistill: error: ") and "\n" not in err, err
    return err


def image_folder(root: Path, classes: tuple[str, ...], side: int = 32, per_class: int = 4) -> Path:
    rng = np.random.default_rng(0)
    for part, n in (("train", per_class), ("test", 2)):
        for k, name in enumerate(classes):
            (root / part / name).mkdir(parents=True)
            for i in range(n):
                pixels = rng.integers(0, 256, (side, side, 3), dtype=np.uint8) // (k + 1)
                Image.fromarray(pixels.astype(np.uint8)).save(root / part / name / f"{i}.png")
    return root


# ----------------------------------------------------------------------------- --out / --force


def test_an_existing_out_is_kept_without_force(teacher: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "ts.parquet"
    out.write_bytes(b"hours of labelled views")
    assert transfer(teacher, out) == 2
    err = one_line_error(capsys)
    assert "already exists" in err and "--force" in err
    assert out.read_bytes() == b"hours of labelled views"
    assert transfer(teacher, out, "--dry-run") == 2  # the dry run checks it too
    assert out.read_bytes() == b"hours of labelled views"

    assert transfer(teacher, out, "--force") == 0
    printed = capsys.readouterr().out
    assert load_transfer_set(out).num_epochs == 1
    # the ensemble's accuracy on the views next to its accuracy on the images
    assert re.search(r"test [\d.]+% on the images, [\d.]+% on their views", printed), printed
    assert f"students use it with: --data {SOURCE} --val-size 32 --split-seed 0 " in printed


# ----------------------------------------------------------------------------- teacher ≠ data


def test_teachers_for_other_classes_or_shapes_are_refused(
    teacher: Path, tmp_path: Path, capsys
) -> None:
    three = image_folder(tmp_path / "three", ("a", "b", "c"))
    out = tmp_path / "ts.parquet"
    for data, here in (
        (f"{SOURCE}:16", "2 classes of 3×16×16"),
        (str(three), "3 classes of 3×32×32"),
    ):
        for extra in ((), ("--dry-run",)):
            assert transfer(teacher, out, "--data", data, "--val-size", "3", *extra) == 2
            err = one_line_error(capsys)
            assert "the teachers were made for 2 classes of 3×32×32 images" in err, err
            assert f"not {here}" in err and "raydistill teach" in err, err
    assert not out.exists()


def test_a_one_class_dataset_is_refused_before_torch(tmp_path: Path) -> None:
    one = image_folder(tmp_path / "one", ("cat",))
    res = subprocess.run(
        [
            sys.executable,
            "-X",
            "importtime",
            "-m",
            "raydistill",
            "teach",
            "--data",
            str(one),
            "--family",
            "resnet9",
            "--epochs",
            "1",
            "--out",
            str(tmp_path / "t"),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    lines = res.stderr.splitlines()
    err = [line for line in lines if not line.startswith("import time:")]
    assert res.returncode == 2 and len(err) == 1, err
    assert "has 1 class ('cat')" in err[0] and "needs at least 2" in err[0], err
    assert not any(re.search(r"\|\s+torch(\.|$)", line) for line in lines)
    assert not (tmp_path / "t").exists()


# ----------------------------------------------------------------------------- split settings


def test_a_split_mismatch_names_the_setting_and_the_flags_that_match(
    teacher: Path, tmp_path: Path, capsys
) -> None:
    ts = tmp_path / "sub.parquet"
    assert transfer(teacher, ts, "--train-subset", "40") == 0
    assert "--val-size 32 --split-seed 0 --train-subset 40 --transfer" in capsys.readouterr().out
    subset = load_dataset(SOURCE, val_size=32, train_subset=40)
    assert load_transfer_set(ts, splits=subset).views_per_epoch == 40

    train = [
        "train",
        "--family",
        "mlp",
        "--depth",
        "1",
        "--budget",
        "5k",
        "--data",
        SOURCE,
        "--transfer",
        str(ts),
        "--set",
        "max_epochs=1",
    ]
    assert main([*train, "--val-size", "16", "--train-subset", "20"]) == 2
    err = one_line_error(capsys)
    assert "other split settings of 'synthetic-sep'" in err
    assert "--val-size 32 (here 16), --train-subset 40 (here 20)" in err, err
    assert "pass --val-size 32 --train-subset 40 to use it" in err, err
    assert main([*train, "--val-size", "16"]) == 2  # the subset not given: the set's own 40
    assert "--val-size 32 (here 16); pass --val-size 32 to use it" in one_line_error(capsys)

    search = [
        "search",
        "mlp",
        "--budgets",
        "5k",
        "--depths",
        "1",
        "--data",
        SOURCE,
        "--transfer",
        str(ts),
        "--dry-run",
    ]
    # --dry-run checks the transfer set against the splits; split options not given are the
    # transfer set's own (it fits no other split), a given one that differs is refused
    assert main([*search, "--train-subset", "20"]) == 2
    assert "--train-subset 40 (here 20)" in one_line_error(capsys)
    assert main(search) == 0
    assert main([*search, "--val-size", "32", "--train-subset", "40"]) == 0


def test_dry_run_prints_the_plan_and_writes_nothing(teacher: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "ts.parquet"
    assert transfer(teacher, out, "--dry-run", "--train-subset", "40") == 0
    printed = capsys.readouterr().out
    assert "1 epochs × 40 = 40 views, augmentation paper" in printed, printed
    assert "trained on augmentation paper" in printed and "nothing written" in printed
    assert not out.exists()


# ----------------------------------------------------------------------------- augmentation


def test_auto_is_the_teachers_own_augmentation(teacher: Path) -> None:
    images, floats = uint8_splits(8, 4), load_dataset("synthetic-sep:16", val_size=4)
    for splits in (images, floats):
        assert resolve_aug_name("auto", splits, "paper_hsv") == "paper_hsv"
        assert resolve_aug_name("mirror", splits, "paper_hsv") == "mirror"
    # no record of the teachers' augmentation: theirs by default recipe, mirror for features
    assert resolve_aug_name("auto", images, None) == "flip_translate"
    assert resolve_aug_name("auto", floats, None) == "mirror"
    manifest = json.loads((teacher / "manifest.json").read_text())
    assert manifest["config"]["train"]["augment"] == "paper"
    assert named_aug("paper", 32).crop_min == 24  # what `auto` wrote in the tests above


def test_views_labelled_worse_than_the_images_are_flagged() -> None:
    # the numbers: HSV + crops at 48.3 % against 62.8 % on the images
    message = view_gap(0.628, 0.483, 10_000)
    assert message is not None and "48.3 %" in message and "62.8 %" in message
    assert view_gap(0.815, 0.817, 10_000) is None  # the teachers' own: no gap
    assert view_gap(0.80, 0.76, 10_000) is not None  # 4 points on 10,000 images
    assert view_gap(0.80, 0.76, 50) is None  # 4 points on 50 images: within the noise


@pytest.mark.slow  # ~25 s: a teacher member trained through Ray
def test_teach_records_the_data_path_resolved(
    ray_local, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    """A relative --data is recorded absolute: `transfer` run from elsewhere finds it."""
    image_folder(tmp_path / "pets", ("cat", "dog"), per_class=6)
    monkeypatch.chdir(tmp_path)
    code = main(
        [
            "teach",
            "--data",
            "pets",
            "--family",
            "resnet9",
            "--widths",
            "4,8,8,8",
            "--members",
            "1",
            "--epochs",
            "1",
            "--val-size",
            "2",
            "--out",
            "t",
        ]
    )
    assert code == 0, capsys.readouterr().err
    config = json.loads((tmp_path / "t" / "manifest.json").read_text())["config"]
    assert config["data"] == str(tmp_path / "pets") and config["split"]["val_size"] == 2
    monkeypatch.chdir(tmp_path.parent)
    out = tmp_path / "ts.parquet"
    assert transfer(tmp_path / "t", out) == 0, capsys.readouterr().err
    assert load_transfer_set(out).meta["aug"] == named_aug("flip_translate", 32).to_dict()
