"""Export: real checkpoints from `train_student`, a generated results table, round trips per family.

Every registered student family is trained for one epoch on the tiny synthetic task, its
checkpoint is recorded in a trials.parquet written here with pyarrow, and exported; the
exported files are reloaded (safetensors + spec.json, and the torch.export program) and
compared with the checkpoint. Tampered exports must be refused.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from raydistill.cli import main
from raydistill.core.errors import ExportError, UserError
from raydistill.core.manifest import build_manifest, sha256_file, write_manifest
from raydistill.data.batches import Preprocess
from raydistill.export.exporter import export_cell, export_cells
from raydistill.export.inference import load_student
from raydistill.export.selection import parse_selector
from raydistill.export.verify import raw_accuracy
from raydistill.students import build, families
from raydistill.students.budget import Budget, format_budget, solve_budget
from raydistill.training.checkpoint import load_checkpoint_weights
from raydistill.training.config import TrainConfig
from raydistill.training.loop import train_student

BUDGET = 12_000
FAST = {"batch_size": 128, "max_epochs": 1, "loss": "hard", "lr": 0.01, "device": "cpu"}


def train_trial(
    splits,
    family: str,
    depth: int,
    ckpt: Path,
    seed: int = 0,
    budget: int = BUDGET,
    loss: str = "hard",
) -> dict:
    """One real 1-epoch trial, checkpointed into `ckpt`, as a trials.parquet row."""
    sol = solve_budget(family, depth, budget, in_shape=[3, 32, 32], num_classes=2)

    def keep_last(metrics, save):
        if metrics["status"] != "running":
            save(ckpt)

    res = train_student(
        sol.spec, splits, None, TrainConfig(**{**FAST, "seed": seed}), report=keep_last
    )
    cell = f"{family}-d{depth}@{format_budget(budget)}"
    return {
        "experiment": "exp", "cell": cell, "family": family, "depth": depth, "budget": budget,
        "trial_id": f"{cell}-{seed}-{loss}", "status": res.status, "config": json.dumps(res.config),
        "spec": json.dumps(res.spec), "widths": list(sol.spec["widths"]), "params": res.params,
        "params/budget": res.params / budget, "val/acc": res.best_val_acc,
        "val/loss": res.best_val_loss, "test/acc": res.test_acc, "epochs": res.epochs,
        "best_epoch": res.best_epoch, "wall_s": res.wall_s, "checkpoint": str(ckpt), "seed": seed,
        "loss": loss,
    }  # fmt: skip


def write_search_dir(d: Path, rows: list[dict], fingerprint: str, data: dict | None = None) -> Path:
    """trials.parquet (pyarrow, the search's schema) + manifest.json, as the search writes them."""
    d.mkdir(parents=True, exist_ok=True)
    table = pa.Table.from_pylist(rows)
    table = table.set_column(
        table.schema.get_field_index("widths"),
        "widths",
        pa.array([r["widths"] for r in rows], pa.list_(pa.int32())),
    )
    pq.write_table(table, d / "trials.parquet")
    config = {"data": data} if data else {}
    manifest = build_manifest(
        "search",
        config,
        seeds=[0],
        dataset_fingerprint=fingerprint,
        teacher_fingerprints=["t" * 16],
        extra={"teacher": {"val_acc": 0.9, "test_acc": 0.91}},
    )
    write_manifest(d, manifest)
    return d


@pytest.fixture(scope="module")
def family_search(tiny_splits, tmp_path_factory) -> Path:
    """A search dir with one trained trial per student family (depth 1) and a 2nd cnn depth."""
    d = tmp_path_factory.mktemp("search")
    rows = [train_trial(tiny_splits, fam, 1, d / "ckpt" / fam) for fam in families(kind="student")]
    rows.append(train_trial(tiny_splits, "cnn", 2, d / "ckpt" / "cnn2", seed=1))
    return write_search_dir(d, rows, tiny_splits.fingerprint)


@pytest.mark.parametrize("family", sorted(families(kind="student")))
def test_round_trip_every_family(
    family_search: Path, tiny_splits, tmp_path: Path, family: str
) -> None:
    cell = f"{family}-d1@{format_budget(BUDGET)}"
    out = export_cell(family_search, cell, tmp_path / "out", splits=tiny_splits)
    assert out == tmp_path / "out" / cell
    assert {"model.safetensors", "spec.json", "model.pt2"} <= {p.name for p in out.iterdir()}
    meta = json.loads((out / "spec.json").read_text())
    assert meta["family"] == family and meta["budget"] == BUDGET and meta["cell"] == cell
    assert meta["model_sha256"] == sha256_file(out / "model.safetensors")
    assert meta["dataset_fingerprint"] == tiny_splits.fingerprint
    assert meta["teacher_fingerprints"] == ["t" * 16]
    assert meta["verification"]["test_verified"] is True
    assert meta["verification"]["test_acc"] == pytest.approx(meta["metrics"]["test/acc"])
    assert meta["classes"] == list(tiny_splits.classes)  # in label order, from the splits

    spec, best = load_checkpoint_weights(family_search / "ckpt" / family)
    reference = build(spec)
    reference.load_state_dict(best)
    reference.eval()
    model = load_student(out)
    assert model.classes == tiny_splits.classes
    assert meta["params"] == sum(p.numel() for p in model.parameters()) <= BUDGET
    assert meta["inputs"]["dtype"] == "float32"  # synthetic-sep: the dataset's own floats
    x = torch.randn(5, 3, 32, 32, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        want = reference(Preprocess.from_dict(meta["inputs"]["preprocess"])(x))  # raw in
        assert torch.allclose(model(x), want, atol=1e-5, rtol=0)
        assert torch.allclose(model.net(model.preprocess(x)), want, atol=1e-5, rtol=0)
        program = torch.export.load(str(out / "model.pt2")).module()
        assert torch.allclose(program(x), want, atol=1e-5, rtol=0)
        assert program(x[:3]).shape == (3, 2)  # the batch dimension is dynamic
    # the export's accuracy on the raw test images is the reported test accuracy
    assert raw_accuracy(model, tiny_splits)[0] == pytest.approx(meta["metrics"]["test/acc"])
    assert raw_accuracy(program, tiny_splits)[0] == pytest.approx(meta["metrics"]["test/acc"])


def test_family_selector_takes_the_best_depth(family_search: Path, tmp_path: Path) -> None:
    import pandas as pd

    df = pd.read_parquet(family_search / "trials.parquet")
    cnn = df[df["family"] == "cnn"].sort_values("val/acc", ascending=False)
    res = export_cells(family_search, [f"cnn@{format_budget(BUDGET)}"], tmp_path, verify_test=False)
    assert res[0].cell == cnn["cell"].iloc[0]
    assert not res[0].test_verified and "not re-verified" in res[0].note
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    assert manifest["kind"] == "export" and res[0].cell in manifest["exports"]


def test_without_the_dataset_says_not_reverified(family_search: Path, tmp_path: Path) -> None:
    out = export_cell(family_search, f"mlp-d1@{format_budget(BUDGET)}", tmp_path)
    check = json.loads((out / "spec.json").read_text())["verification"]
    assert check["test_verified"] is False and check["test_acc"] is None
    assert check["note"].startswith("test accuracy not re-verified: no dataset given")


def test_class_names_come_from_the_search_manifest(family_search: Path, tmp_path: Path) -> None:
    """Without the dataset the names the search recorded are used; an export without any
    (an older search) records null rather than guessed names; a wrong count is refused."""
    import pandas as pd

    rows = pd.read_parquet(family_search / "trials.parquet").to_dict("records")
    d = write_search_dir(tmp_path / "s", rows, "f" * 16)
    manifest = json.loads((d / "manifest.json").read_text())
    write_manifest(d, {**manifest, "classes": ["left", "right"]})
    out = export_cell(d, f"mlp-d1@{format_budget(BUDGET)}", tmp_path / "named")
    assert json.loads((out / "spec.json").read_text())["classes"] == ["left", "right"]
    assert load_student(out).classes == ("left", "right")
    old = export_cell(family_search, f"mlp-d1@{format_budget(BUDGET)}", tmp_path / "old")
    assert json.loads((old / "spec.json").read_text())["classes"] is None
    assert load_student(old).classes is None
    meta = json.loads((out / "spec.json").read_text())
    (out / "spec.json").write_text(json.dumps({**meta, "classes": ["only-one"]}))
    with pytest.raises(ExportError, match=r"spec\.json: classes must list 2 names"):
        load_student(out)


def test_other_dataset_is_not_used_to_verify(family_search: Path, tmp_path: Path) -> None:
    from raydistill.data import make_synthetic_sep

    other = make_synthetic_sep(64, 32, 32, seed=5)
    out = export_cell(family_search, f"mlp-d1@{format_budget(BUDGET)}", tmp_path, splits=other)
    note = json.loads((out / "spec.json").read_text())["verification"]["note"]
    assert "fingerprint" in note and other.fingerprint in note


def test_recorded_accuracy_mismatch_fails_and_leaves_nothing(tiny_splits, tmp_path: Path) -> None:
    row = train_trial(tiny_splits, "mlp", 1, tmp_path / "ckpt")
    row["test/acc"] = row["test/acc"] + 0.25  # not what the weights score
    d = write_search_dir(tmp_path / "s", [row], tiny_splits.fingerprint)
    out = tmp_path / "out"
    with pytest.raises(UserError, match="test accuracy"):
        export_cell(d, row["cell"], out, splits=tiny_splits)
    assert not out.exists() or list(out.iterdir()) == []


def test_tampered_exports_are_refused(family_search: Path, tmp_path: Path) -> None:
    out = export_cell(family_search, f"cnn-d1@{format_budget(BUDGET)}", tmp_path, verify_test=False)
    spec_path = out / "spec.json"
    original = spec_path.read_text()
    meta = json.loads(original)

    spec_path.write_text(json.dumps({**meta, "params": meta["params"] + 1}))
    with pytest.raises(UserError, match="params"):
        load_student(out)

    widths = [w + 1 for w in meta["spec"]["widths"]]  # a spec that no longer fits the weights
    spec_path.write_text(json.dumps({**meta, "spec": {**meta["spec"], "widths": widths}}))
    with pytest.raises(UserError, match="params"):
        load_student(out)

    spec_path.write_text(original)
    weights = out / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0xFF
    weights.write_bytes(bytes(data))
    with pytest.raises(UserError, match="sha256"):
        load_student(out)
    with pytest.raises(ExportError, match="nowhere does not exist"):
        load_student(tmp_path / "nowhere")


def test_selectors() -> None:
    assert parse_selector("cnn-d2@1M") == ("cnn", 2, Budget("params", 1_000_000), False)
    assert parse_selector("allconv@3.16M:hard") == (
        "allconv",
        None,
        Budget("params", 3_160_000),
        True,
    )
    assert parse_selector("resnet-d3@40M-macs") == ("resnet", 3, Budget("macs", 40_000_000), False)
    assert parse_selector("resnet@2ms-cuda-b8") == (
        "resnet",
        None,
        Budget("latency-cuda-b8", 2000),
        False,
    )
    for bad in ("cnn-d2", "cnn d2@1M", "cnn-d2@lots"):
        with pytest.raises(UserError):
            parse_selector(bad)


def test_cli_export_all(family_search: Path, tmp_path: Path, capsys) -> None:
    assert main(["export", str(family_search), "--all", "--out", str(tmp_path)]) == 0
    printed = capsys.readouterr().out
    assert "not re-verified" in printed
    cells = {p.name for p in tmp_path.iterdir() if p.is_dir()}
    assert cells == {f"{f}-d1@{format_budget(BUDGET)}" for f in families(kind="student")} | {
        f"cnn-d2@{format_budget(BUDGET)}"
    }
    assert main(["export", str(family_search), "--cell", "rnn-d1@1M", "--out", str(tmp_path)]) == 2
    assert "no finished trial matches" in capsys.readouterr().err


def test_hard_twins_are_selected_with_the_hard_suffix(family_search: Path, tmp_path: Path) -> None:
    import pandas as pd

    import raydistill

    rows = pd.read_parquet(family_search / "trials.parquet").to_dict("records")
    mlp = next(r for r in rows if r["family"] == "mlp")
    distilled = {**mlp, "loss": "l2_logits", "trial_id": "distilled"}  # same weights, other label
    d = write_search_dir(tmp_path / "s", [distilled, {**mlp, "trial_id": "twin"}], "0" * 16)
    cell = mlp["cell"]
    res = export_cells(d, [cell, f"{cell}:hard"], tmp_path / "out", verify_test=False)
    assert [r.path.name for r in res] == [cell, f"{cell}-hard"]
    trials = [json.loads((r.path / "spec.json").read_text())["trial_id"] for r in res]
    assert trials == ["distilled", "twin"]
    assert (
        sum(p.numel() for p in raydistill.load_student(res[1].path).parameters()) == mlp["params"]
    )


def test_dataset_recorded_in_the_manifest_is_used(
    family_search: Path, tiny_splits, tmp_path: Path
) -> None:
    import pandas as pd

    rows = pd.read_parquet(family_search / "trials.parquet").to_dict("records")
    data = {"source": "synthetic-sep:512", "val_size": 128, "seed": 0}  # = tiny_splits
    d = write_search_dir(tmp_path / "s", rows, tiny_splits.fingerprint, data=data)
    res = export_cells(d, [f"mlp-d1@{format_budget(BUDGET)}"], tmp_path / "out")
    assert res[0].test_verified and res[0].note == "test accuracy re-verified on 128 raw images"


# ---------------------------------------------------------------- raw images, bad files, ONNX
@pytest.fixture(scope="module")
def image_export(tmp_path_factory) -> tuple[Path, object]:
    """A cnn trained on small uint8 grayscale images (1×20×20, 3 classes), exported verified."""
    import numpy as np

    from raydistill.data.cache import Decoded, content_hash
    from raydistill.data.splits import split_decoded

    rng = np.random.default_rng(0)
    y = np.repeat(np.arange(3), 60)
    x = np.clip(rng.normal(60 + 50 * y[:, None, None, None], 40, (len(y), 1, 20, 20)), 0, 255)
    arrays = {
        "train_x": x[::2].astype(np.uint8),
        "train_y": y[::2],
        "test_x": x[1::2].astype(np.uint8),
        "test_y": y[1::2],
    }
    decoded = Decoded(classes=("a", "b", "c"), content=content_hash("abc", arrays), **arrays)
    splits = split_decoded("gray", decoded, val_size=18, seed=0, train_subset=None)
    d = tmp_path_factory.mktemp("images")
    sol = solve_budget("cnn", 1, 3000, in_shape=[1, 20, 20], num_classes=3)
    config = TrainConfig(**{**FAST, "max_epochs": 2, "input_scale": 2.0, "batch_size": 16})

    def keep_last(metrics, save):
        if metrics["status"] != "running":
            save(d / "ckpt")

    res = train_student(sol.spec, splits, None, config, report=keep_last)
    row = {"experiment": "exp", "cell": "cnn-d1@3k", "family": "cnn", "depth": 1, "budget": 3000,
           "trial_id": "t0", "status": res.status, "config": json.dumps(res.config),
           "spec": json.dumps(res.spec), "widths": list(sol.spec["widths"]), "params": res.params,
           "params/budget": res.params / 3000, "val/acc": res.best_val_acc,
           "val/loss": res.best_val_loss, "test/acc": res.test_acc, "epochs": res.epochs,
           "best_epoch": res.best_epoch, "wall_s": res.wall_s, "checkpoint": str(d / "ckpt"),
           "seed": 0, "loss": "hard"}  # fmt: skip
    search = write_search_dir(d / "search", [row], splits.fingerprint)
    return export_cell(search, "cnn-d1@3k", d / "export", splits=splits, onnx=True), splits


def test_export_takes_raw_uint8_images(image_export) -> None:
    out, splits = image_export
    meta = json.loads((out / "spec.json").read_text())
    assert meta["inputs"]["dtype"] == "uint8" and meta["inputs"]["shape"] == [1, 20, 20]
    assert meta["inputs"]["input_scale"] == 2.0 and meta["verification"]["test_verified"]
    model = load_student(out)
    assert meta["classes"] == ["a", "b", "c"] and model.classes == ("a", "b", "c")
    program = torch.export.load(str(out / "model.pt2")).module()
    reported = meta["metrics"]["test/acc"]
    assert raw_accuracy(model, splits)[0] == pytest.approx(reported)  # uint8 in
    assert raw_accuracy(program, splits)[0] == pytest.approx(reported)
    raw = torch.from_numpy(splits.test_x[:4])
    with torch.no_grad():  # float in [0, 1] is the same input as uint8
        assert torch.allclose(model(raw.float() / 255), model(raw), atol=1e-5)
        assert program(raw[:1]).shape == (1, 3)  # a batch of one


def test_onnx_export_matches(image_export) -> None:
    pytest.importorskip("onnx")  # the dev extra installs onnx, onnxscript and onnxruntime
    import onnxruntime
    from onnx.reference import ReferenceEvaluator

    out, splits = image_export
    # one file: the weights inside model.onnx, no model.onnx.data to carry beside it
    assert sorted(p.name for p in out.glob("model.onnx*")) == ["model.onnx"]
    raw = splits.test_x[:16]
    with torch.no_grad():
        want = load_student(out)(torch.from_numpy(raw)).numpy()
    session = ReferenceEvaluator(str(out / "model.onnx"))
    (logits,) = session.run(None, {session.input_names[0]: raw})
    assert abs(logits - want).max() < 1e-4
    runtime = onnxruntime.InferenceSession(str(out / "model.onnx"))
    (logits,) = runtime.run(None, {runtime.get_inputs()[0].name: raw})
    assert abs(logits - want).max() < 1e-4


def test_export_files_have_one_mode(image_export) -> None:
    """Every exported file gets what a plain open() gives (safetensors' writer makes 0600)."""
    out, _ = image_export
    mask = os.umask(0o022)
    os.umask(mask)
    modes = {p.name: oct(p.stat().st_mode & 0o777) for p in out.iterdir()}
    assert modes == dict.fromkeys(modes, oct(0o666 & ~mask))
    assert out.stat().st_mode & 0o777 == 0o777 & ~mask


def test_bad_exports_raise_one_error_naming_the_file(image_export, tmp_path: Path) -> None:
    import shutil

    out, _ = image_export
    with pytest.raises(ExportError, match="does not exist"):
        load_student(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ExportError, match=r"empty/spec\.json is missing"):
        load_student(tmp_path / "empty")
    copy = shutil.copytree(out, tmp_path / "copy")
    weights = copy / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:100])  # truncated
    with pytest.raises(ExportError, match=r"model\.safetensors .*truncated"):
        load_student(copy)
    meta = json.loads((copy / "spec.json").read_text())
    (copy / "spec.json").write_text(json.dumps({**meta, "model_sha256": sha256_file(weights)}))
    with pytest.raises(ExportError, match=r"model\.safetensors is not a readable safetensors"):
        load_student(copy)  # truncated, with a matching digest
    (copy / "spec.json").write_text("{not json")
    with pytest.raises(ExportError, match=r"spec\.json is not a JSON object"):
        load_student(copy)


def test_a_studys_verification_is_a_ray_task_with_the_policys_cpus(
    ray_local, tiny_splits, tmp_path: Path
) -> None:
    """With an address (a study on Ray) the test-set measurement runs in a Ray worker holding
    what `resources.verification_options` gives (the trials' CPUs, no GPU) and measures what
    the in-process path measures; the driver writes the same files."""
    row = train_trial(tiny_splits, "cnn", 2, tmp_path / "ckpt")
    search, cell = write_search_dir(tmp_path / "s", [row], tiny_splits.fingerprint), row["cell"]
    here = export_cells(search, [cell], tmp_path / "here", splits=tiny_splits)[0]
    there = export_cells(
        search, [cell], tmp_path / "ray", splits=tiny_splits, address="local", cpus=2
    )[0]
    a = json.loads((here.path / "spec.json").read_text())["verification"]
    b = json.loads((there.path / "spec.json").read_text())["verification"]
    assert a["measured_by"]["pid"] == os.getpid() and a["measured_by"]["resources"] is None
    assert b["measured_by"]["pid"] != os.getpid()
    assert b["measured_by"]["resources"] == {"CPU": 2.0}
    assert b["test_verified"] is True and b["note"] == a["note"]
    assert (b["test_acc"], b["program_test_acc"]) == (a["test_acc"], a["program_test_acc"])
    weights = "model.safetensors"
    assert (there.path / weights).read_bytes() == (here.path / weights).read_bytes()
    assert json.loads((tmp_path / "ray" / "manifest.json").read_text())["exports"][cell][
        "test_verified"
    ]
