"""External teachers: a raydistill teacher, the same exported as .pt2 and ONNX, torchvision by
name + local weights, modules and callables; their refusals (one line, exit 2, nothing written)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from raydistill.core.errors import UserError
from raydistill.data import Splits
from raydistill.distill.ensemble import load_ensemble, make_ensemble, save_ensemble
from raydistill.distill.external import check_accuracies, external_ensemble
from raydistill.distill.sources import TeacherInput, parse_teacher
from raydistill.distill.teachers import member_config, train_member
from raydistill.distill.transfer.aug import default_aug
from raydistill.distill.transfer.format import load_transfer_set
from raydistill.distill.transfer.writer import write_transfer_set
from raydistill.training.config import make_preprocess

SPEC = {"family": "resnet9", "depth": 9, "widths": [4, 8, 8, 8], "in_shape": [3, 16, 16],
        "num_classes": 2}  # fmt: skip


def colour_splits(n_train: int = 256, n_eval: int = 96, seed: int = 0) -> Splits:
    """uint8 16×16 RGB images; label 1 where the red channel is brighter than the blue one."""
    rng = np.random.default_rng(seed)
    parts = {}
    for name, n in (("train", n_train), ("val", n_eval), ("test", n_eval)):
        x = rng.integers(0, 256, size=(n, 3, 16, 16), dtype=np.uint8)
        parts[f"{name}_x"] = x
        parts[f"{name}_y"] = (x[:, 0].mean((1, 2)) > x[:, 2].mean((1, 2))).astype(np.int64)
    return Splits(name="rb", fingerprint=f"rb-{seed}", classes=("b", "r"), **parts)


class Averaged(nn.Module):
    """A teach directory's ensemble as one module taking [0, 1] floats (what an export takes)."""

    def __init__(self, ens) -> None:
        super().__init__()
        self.members = nn.ModuleList(ens.members)
        assert ens.preprocess.mode == "dataset"  # per-channel mean / std, as buffers here
        self.register_buffer("mean", torch.tensor(ens.preprocess.mean).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(ens.preprocess.std).view(1, -1, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = (x - self.mean) / self.std
        return torch.stack([m(x) for m in self.members]).mean(0)


@pytest.fixture(scope="module")
def splits() -> Splits:
    return colour_splits()


@pytest.fixture(scope="module")
def teach_dir(tmp_path_factory, splits) -> Path:
    cfg = member_config("resnet9", 10, 0, batch_size=64, augment="none", preprocess="dataset")
    result = train_member(SPEC, splits, {**cfg.to_dict(), "seed": 0})
    ens = make_ensemble(SPEC, [result["weights"]], make_preprocess("dataset", splits))
    out = tmp_path_factory.mktemp("teach")
    acc = {"val/acc": 0.0, "test/acc": 0.0}
    save_ensemble(
        out, ens, [result], [acc], acc, configs=[cfg], seeds=[0], splits=splits, wall_s=0.0
    )
    return out


@pytest.fixture(scope="module")
def exported(tmp_path_factory, teach_dir) -> dict[str, Path]:
    model = Averaged(load_ensemble(teach_dir)).eval()
    example = torch.rand(4, 3, 16, 16)
    out = tmp_path_factory.mktemp("exported")
    dims = ({0: torch.export.Dim("batch")},)
    torch.export.save(torch.export.export(model, (example,), dynamic_shapes=dims), out / "t.pt2")
    torch.onnx.export(model, (example,), str(out / "t.onnx"), dynamo=True, dynamic_shapes=dims)
    return {"pt2": out / "t.pt2", "onnx": out / "t.onnx"}


def test_a_teacher_its_pt2_and_its_onnx_write_the_same_transfer_set(
    tmp_path, splits, teach_dir, exported
) -> None:
    paths, aug = {}, default_aug(splits)  # one augmentation (a teach dir's default is its own)
    for name, teacher in (("dir", load_ensemble(teach_dir)), ("pt2", str(exported["pt2"])),
                          ("onnx", str(exported["onnx"]))):  # fmt: skip
        paths[name] = write_transfer_set(
            tmp_path / f"{name}.parquet", teacher, splits, 2, seed=3, aug=aug
        )
    sets = {k: load_transfer_set(p, splits=splits) for k, p in paths.items()}
    ref = sets["dir"].logits
    assert ref.std() > 0.01  # real logits, not a constant
    for name in ("pt2", "onnx"):
        assert np.array_equal(sets[name].index, sets["dir"].index)
        np.testing.assert_allclose(sets[name].logits, ref, atol=1e-4, rtol=0)
    teachers = sets["onnx"].meta["teachers"]
    assert teachers[0]["kind"] == "onnx" and len(teachers[0]["sha256"]) == 64
    assert teachers[0]["input"]["mean"] == [0.0, 0.0, 0.0] and teachers[0]["input"]["size"] is None


def test_mixed_kinds_form_one_averaged_ensemble(splits, teach_dir, exported) -> None:
    ens = external_ensemble([str(teach_dir), str(exported["onnx"])], splits)
    x = torch.rand(5, 3, 16, 16)
    one = external_ensemble([str(exported["pt2"])], splits).logits(x)
    torch.testing.assert_close(ens.logits(x), one, atol=1e-4, rtol=0)  # the same teacher twice
    accs = check_accuracies(ens, splits, log=None)
    assert accs["ensemble"] > 0.7  # the teacher learnt red vs blue


def test_a_module_and_a_callable_are_teachers(tmp_path, splits) -> None:
    lin = nn.Sequential(nn.Flatten(), nn.Linear(3 * 16 * 16, 2))
    for teacher in (lin, lambda x: x[:, :2].mean((2, 3))):
        path = write_transfer_set(tmp_path / "m.parquet", teacher, splits, 1)
        ts = load_transfer_set(path, splits=splits)
        assert ts.logits.shape == (len(splits.train_y), 2)
    # the callable: red minus blue brightness as logits of (red, green) → picks red when red is high
    inputs = TeacherInput(size=8, resize="crop", channels="BGR")
    ens = external_ensemble([(lambda x: x[:, :2].mean((2, 3)), inputs)], splits)
    assert ens.logits(torch.rand(3, 3, 16, 16)).shape == (3, 2)


def test_a_chance_teacher_is_refused(splits) -> None:
    ens = external_ensemble([lambda x: torch.zeros(len(x), 2)], splits)
    with pytest.raises(UserError, match="at chance"):
        check_accuracies(ens, splits, log=None)


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("model.txt", "is not a raydistill teach directory"),
        ("torchvision:resnet18", "use torchvision:ARCH=WEIGHTS"),
        ("torchvision:resnet18=/nope.safetensors", "weights file /nope.safetensors does not exist"),
        ("/nope.onnx", "file /nope.onnx does not exist"),
        ("/nope.onnx?size=big", "input size='big' is not valid"),
        ("/nope.onnx?gamma=2", "unknown input key 'gamma'"),
    ],
)
def test_bad_sources_are_one_line(text: str, needle: str) -> None:
    with pytest.raises(UserError, match=needle) as info:
        parse_teacher(text)
    assert "\n" not in str(info.value)


def test_timm_teacher_keeps_its_normalisation_when_only_its_size_is_declared(tmp_path) -> None:
    """timm by name + local safetensors, nothing downloaded; "?size=24" changes the size only:
    the mean / std stay timm's pretrained_cfg values (test_resnet's are 0.5, not ImageNet's)."""
    timm = pytest.importorskip("timm")
    from safetensors.torch import save_file

    from raydistill.distill.external import load_teacher

    torch.manual_seed(0)
    model = timm.create_model("test_resnet", pretrained=False, num_classes=2).eval()
    weights = tmp_path / "w.safetensors"
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(weights))
    member = load_teacher(
        parse_teacher(f"timm:test_resnet={weights}?size=24"), 2, torch.device("cpu")
    )
    assert member.inputs == TeacherInput(size=24, mean=(0.5,) * 3, std=(0.5,) * 3)
    x = torch.rand(3, 3, 16, 16)
    with torch.no_grad():
        want = model(TeacherInput(size=24, mean=(0.5,) * 3, std=(0.5,) * 3).adapt(x))
        assert torch.allclose(member(x), want, atol=1e-5)
    plain = parse_teacher(f"timm:test_resnet={weights}?mean=0,0,0&std=1,1,1")
    assert load_teacher(plain, 2, torch.device("cpu")).inputs == TeacherInput()  # declared wins


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "raydistill", "transfer", *args],
                          capture_output=True, text=True, timeout=600)  # fmt: skip


def test_cli_refusals_exit_2_and_write_nothing(tmp_path, exported) -> None:
    data = "synthetic-sep:256"  # 2 classes, (3, 32, 32) float images
    bad_onnx = tmp_path / "bad.onnx"
    bad_onnx.write_bytes(b"not a model")
    wrong = tmp_path / "wrong.pt2"
    three = nn.Sequential(nn.Flatten(), nn.Linear(3 * 32 * 32, 3))
    torch.export.save(torch.export.export(three, (torch.rand(2, 3, 32, 32),)), wrong)
    cases = {
        str(bad_onnx): "not an ONNX model",
        str(wrong): "has 2 classes",
        f"torchvision:resnet18={tmp_path / 'missing.safetensors'}": "does not exist",
    }
    for teacher, needle in cases.items():
        out = tmp_path / "ts.parquet"
        r = _cli("--teacher", teacher, "--data", data, "--epochs", "1", "--out", str(out))
        assert r.returncode == 2, r.stderr
        assert r.stderr.count("\n") == 1 and needle in r.stderr, r.stderr
        assert not out.exists() and not list(tmp_path.glob("ts.parquet*"))


@pytest.mark.slow
def test_torchvision_teacher_with_local_weights_end_to_end(tmp_path) -> None:
    """torchvision resnet18 (num_classes=2, weights trained here and saved as safetensors) →
    transfer → a resnet search under a MACs budget → export; nothing downloaded."""
    import torchvision
    from safetensors.torch import save_file

    from raydistill.cli import main
    from raydistill.data import load_dataset
    from raydistill.distill.sources import IMAGENET_MEAN, IMAGENET_STD

    source = _tinted_parquet(tmp_path / "tinted.parquet")
    splits = load_dataset(str(source))
    torch.manual_seed(0)
    model = torchvision.models.resnet18(weights=None, num_classes=2)
    norm = TeacherInput(mean=IMAGENET_MEAN, std=IMAGENET_STD)  # what the CLI gives torchvision
    x = torch.as_tensor(splits.train_x).float() / 255  # adapt takes floats in [0, 1]
    y = torch.as_tensor(splits.train_y)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    for _ in range(4):  # the tint is learnt within the first epoch (training accuracy 1.0)
        for i in range(0, len(y), 32):
            loss = nn.functional.cross_entropy(model(norm.adapt(x[i : i + 32])), y[i : i + 32])
            opt.zero_grad()
            loss.backward()
            opt.step()
    model.eval()
    assert (model(norm.adapt(x)).argmax(1) == y).float().mean() > 0.8  # a teacher worth distilling
    weights = tmp_path / "resnet18.safetensors"
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(weights))
    ts, search, export = tmp_path / "ts.parquet", tmp_path / "search", tmp_path / "export"
    data = ["--data", str(source)]
    assert main(["transfer", "--teacher", f"torchvision:resnet18={weights}", *data,
                 "--epochs", "2", "--out", str(ts)]) == 0  # fmt: skip
    meta = load_transfer_set(ts).meta
    assert meta["teachers"][0]["kind"] == "torchvision" and meta["ensemble_val_acc"] > 0.6
    assert meta["teachers"][0]["input"]["mean"] == list(IMAGENET_MEAN)
    assert main(["search", "resnet", "--budgets", "2M-macs", "--depths", "1", "--trials", "1",
                 *data, "--transfer", str(ts), "--max-epochs", "1", "--wandb", "off",
                 "--out", str(search)]) == 0  # fmt: skip
    assert main(["export", str(search), "--cell", "resnet-d1@2M-macs", "--out", str(export)]) == 0
    spec = __import__("json").loads((export / "resnet-d1@2M-macs" / "spec.json").read_text())
    assert spec["budget_kind"] == "macs" and 0 < spec["macs"] <= 2e6
    assert spec["latency_us"]["cpu-b1"] > 0 and spec["params"] > 0


def _tinted_parquet(path: Path, n: int = 160) -> Path:
    """A generated image set in the Parquet layout `raydistill.data` reads: 32×32 PNGs of noise
    tinted red (class 1) or blue (class 0); train and test splits."""
    import pyarrow as pa
    import pyarrow.parquet as pq
    from torchvision.io import encode_png

    rng = np.random.default_rng(0)
    rows = {"split": [], "label": [], "name": [], "png": []}
    for split, count in (("train", n), ("test", n // 4)):
        for i in range(count):
            label = int(i % 2)
            img = rng.integers(0, 200, size=(3, 32, 32)).astype(np.int64)
            img[0 if label else 2] += 55  # the tint: red for class 1, blue for class 0
            png = encode_png(torch.as_tensor(img.astype(np.uint8))).numpy().tobytes()
            rows["split"].append(split)
            rows["label"].append(label)
            rows["name"].append(f"{'red' if label else 'blue'}/{split}{i:04d}.png")
            rows["png"].append(png)
    pq.write_table(pa.table({**rows, "png": pa.array(rows["png"], pa.binary())}), path)
    return path
