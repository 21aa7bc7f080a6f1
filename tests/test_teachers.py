"""Teacher families, the manifest, `teach` with real Ray tasks, loading and tamper checks."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import subprocess
from pathlib import Path

import pytest
import torch

from raydistill.core.errors import UserError
from raydistill.core.manifest import (
    atomic_write_bytes,
    atomic_write_text,
    build_manifest,
    read_manifest,
    sha256_file,
    write_manifest,
)
from raydistill.core.resources import member_gpus
from raydistill.distill.ensemble import load_ensemble, member_file
from raydistill.distill.teachers import teach
from raydistill.students import build, families
from raydistill.students.budget import count_params

TINY_WIDTHS = [4, 8, 8, 8]


# ----------------------------------------------------------------------------- families


def test_teacher_families_are_registered_as_teachers() -> None:
    teachers = families(kind="teacher")
    assert set(teachers) >= {"vgg8", "resnet9"}
    assert not set(teachers) & set(families(kind="student"))


def test_vgg8_is_the_papers_teacher_layout() -> None:
    spec = {"family": "vgg8"}  # defaults: 76c²-mp-126c²-mp-148c⁴-mp-1200fc²
    assert round(count_params(spec) / 1e6, 1) == 5.3
    model = build(spec)
    convs = [m for m in model.modules() if isinstance(m, torch.nn.Conv2d)]
    assert [c.out_channels for c in convs] == [76, 76, 126, 126, 148, 148, 148, 148]
    assert all(c.kernel_size == (3, 3) for c in convs)
    assert sum(isinstance(m, torch.nn.MaxPool2d) for m in model.modules()) == 3
    linears = [m for m in model.modules() if isinstance(m, torch.nn.Linear)]
    assert [m.out_features for m in linears] == [1200, 1200, 10]
    assert sum(isinstance(m, torch.nn.Dropout) for m in model.modules()) == 2
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in model.modules())
    with_bn = build({"family": "vgg8", "batchnorm": True, "widths": TINY_WIDTHS})
    assert sum(isinstance(m, torch.nn.BatchNorm2d) for m in with_bn.modules()) == 8


def test_resnet9_shape_and_output_scale() -> None:
    spec = {"family": "resnet9", "widths": TINY_WIDTHS, "num_classes": 7}
    model = build(spec).eval()
    x = torch.randn(3, 3, 32, 32)
    out = model(x)
    assert out.shape == (3, 7)
    assert sum(isinstance(m, torch.nn.BatchNorm2d) for m in model.modules()) == 8
    # The output is the bias-free linear layer's output × 0.125.
    feats = model[:-2](x)
    assert torch.allclose(out, model[-2](feats) * 0.125, atol=1e-6)


def test_gpu_fraction_packs_members() -> None:
    assert member_gpus(3, 0) == 0.0
    assert member_gpus(2, 4) == 1.0
    assert member_gpus(4, 1) == 0.25
    assert member_gpus(3, 2) == 0.5  # two members per GPU, both GPUs used


# ----------------------------------------------------------------------------- manifest


def test_manifest_contents_and_atomic_writes(tmp_path: Path) -> None:
    repo = Path(__file__).resolve().parents[1]
    m = build_manifest(
        "teacher",
        {"lr": 0.1},
        seeds=[3, 4],
        dataset_fingerprint="abc",
        teacher_fingerprints=["f1"],
        extra={"ensemble": {"val/acc": 0.5}},
    )
    assert m["kind"] == "teacher" and m["seeds"] == [3, 4] and m["config"] == {"lr": 0.1}
    assert m["dataset_fingerprint"] == "abc" and m["teacher_fingerprints"] == ["f1"]
    assert m["ensemble"] == {"val/acc": 0.5}
    assert {"python", "torch", "ray", "raydistill"} <= set(m["versions"])
    assert m["versions"]["torch"].split("+")[0] == torch.__version__.split("+")[0]
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=repo, capture_output=True, text=True)
    assert m["git_commit"] == (head.stdout.strip() if head.returncode == 0 else None)
    assert m["hostname"] and m["created"]
    write_manifest(tmp_path, m)
    assert read_manifest(tmp_path, kind="teacher") == json.loads(json.dumps(m))
    with pytest.raises(UserError, match="kind"):
        read_manifest(tmp_path, kind="search")
    with pytest.raises(ValueError, match="shadows"):
        build_manifest("x", {}, seeds=None, extra={"seeds": 1})
    atomic_write_bytes(tmp_path / "sub" / "a.bin", b"xyz")
    atomic_write_text(tmp_path / "sub" / "a.bin", "hello")  # replaces
    assert (tmp_path / "sub" / "a.bin").read_text() == "hello"
    assert sha256_file(tmp_path / "sub" / "a.bin") == hashlib.sha256(b"hello").hexdigest()
    assert sorted(p.name for p in (tmp_path / "sub").iterdir()) == ["a.bin"]  # no temp files
    mask = os.umask(0o022)
    os.umask(mask)
    assert (tmp_path / "sub" / "a.bin").stat().st_mode & 0o777 == 0o666 & ~mask


# ----------------------------------------------------------------------------- teach


@pytest.fixture(scope="module")
def teacher_dir(tmp_path_factory, ray_local, tiny_splits) -> Path:
    out = tmp_path_factory.mktemp("teacher")
    teach(
        tiny_splits,
        "resnet9",
        members=2,
        epochs=1,
        out=out,
        widths=TINY_WIDTHS,
        train={"batch_size": 64},
        seed=10,
        data_source="synthetic-sep:512",
        log=lambda s: None,
    )
    return out


def test_teach_two_members_as_ray_tasks(teacher_dir: Path, tiny_splits) -> None:
    m = read_manifest(teacher_dir, kind="teacher")
    ens = load_ensemble(teacher_dir)
    val, test = (tuple(map(torch.as_tensor, tiny_splits.split(s))) for s in ("val", "test"))
    assert m["seeds"] == [10, 11] and m["dataset_fingerprint"] == tiny_splits.fingerprint
    assert m["config"]["train"]["loss"] == "hard" and m["config"]["train"]["schedule"] == "cosine"
    assert m["config"]["train"]["augment"] == "flip_translate"
    assert m["spec"]["widths"] == TINY_WIDTHS and m["spec"]["family"] == "resnet9"
    for i, row in enumerate(m["members"]):
        path = teacher_dir / member_file(i)
        assert row["sha256"] == sha256_file(path) == m["teacher_fingerprints"][i]
        # The recorded accuracies are those of the member's saved weights.
        member = dataclasses.replace(ens, members=[ens.members[i]])
        assert row["val/acc"] == pytest.approx(member.accuracy(*val))
        assert row["test/acc"] == pytest.approx(member.accuracy(*test))
        assert row["epochs"] == 1 and row["params"] == count_params(m["spec"])
        # The fixture's Ray has one (schedulable) GPU: both tasks got a half share of GPU 0.
        assert row["gpu_ids"] == ["0"]
    assert m["teacher_fingerprints"][0] != m["teacher_fingerprints"][1]  # different seeds
    # Issue 22.3: the GPU the members used is recorded; the ensemble's evaluation ran on it and
    # the transfer set's labelling runs on it by default (one shard task per GPU), not on the CPU.
    assert m["config"]["gpu_fraction"] == 0.5 and m["config"]["gpus"] == 1
    from raydistill.distill.shards import shards_for

    ens.gpus = m["config"]["gpus"]
    assert shards_for(ens) == 1
    assert set(m["ensemble"]) == {"val/acc", "test/acc"}
    for key in ("python", "torch", "ray", "raydistill"):
        assert m["versions"][key]


def test_loaded_ensemble_averages_its_members(teacher_dir: Path, tiny_splits) -> None:
    ens = load_ensemble(teacher_dir)
    assert len(ens.members) == 2 and not any(m.training for m in ens.members)
    assert ens.fingerprints == read_manifest(teacher_dir)["teacher_fingerprints"]
    x = ens.preprocess(torch.as_tensor(tiny_splits.val_x[:16]))
    singles = [m(x.contiguous(memory_format=torch.channels_last)) for m in ens.members]
    assert torch.allclose(ens.logits(x), (singles[0] + singles[1]) / 2, atol=1e-6)
    val_x, val_y = (torch.as_tensor(a) for a in tiny_splits.split("val"))
    assert ens.accuracy(val_x, val_y) == pytest.approx(ens.manifest["ensemble"]["val/acc"])


def test_tampered_or_missing_member_is_refused(teacher_dir: Path, tmp_path: Path) -> None:
    bad = tmp_path / "bad"
    bad.mkdir()
    for f in teacher_dir.iterdir():
        (bad / f.name).write_bytes(f.read_bytes())
    blob = bytearray((bad / member_file(1)).read_bytes())
    blob[-1] ^= 0xFF  # one flipped bit in a weight
    (bad / member_file(1)).write_bytes(bytes(blob))
    with pytest.raises(UserError, match=r"member-1\.safetensors has sha256") as info:
        load_ensemble(bad)
    assert "\n" not in str(info.value)
    (bad / member_file(1)).unlink()
    with pytest.raises(UserError, match="missing"):
        load_ensemble(bad)
    with pytest.raises(UserError, match=r"manifest\.json does not exist"):
        load_ensemble(tmp_path / "nowhere")


def test_cli_teach_rejects_a_student_family(capsys) -> None:
    from raydistill.cli import main

    code = main(
        [
            "teach",
            "--data",
            "synthetic-sep:64",
            "--family",
            "cnn",
            "--members",
            "1",
            "--epochs",
            "1",
            "--out",
            "/nonexistent/never-written",
        ]
    )
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "teacher families" in err
