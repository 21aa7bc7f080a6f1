"""The `extended` scale and the prune stage of a study: the shipped scale validates, bad prune
sections are one-line errors, and a small in-test stage adds `prune-<family>-d<k>@<budget>` rows
(trials table, seeds, repeats) that the report renders, reusing them when run again."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pandas as pd
import pytest
import yaml

from raydistill.core.errors import UserError
from raydistill.study.scale import SCALES_DIR, load_scale, parse_scale

EXTENDED = yaml.safe_load((SCALES_DIR / "extended.yaml").read_text())


def test_extended_scale_validates_and_names_every_cpu_family() -> None:
    from raydistill.study.reproduce import prepare

    sc = prepare("extended")  # every space it names is loaded too
    assert {"mlp", "cnn", "nin", "allconv"} <= set(sc.search.spaces)
    assert "adder" not in sc.search.spaces  # left out on the CPU: the header says why
    assert sc.prune is not None and sc.prune.source == "teacher"
    assert sc.prune.budgets == ["10k", "30k"] and sc.prune.train["lr"] == 0.004
    assert load_scale("tiny").prune is None


@pytest.mark.parametrize(
    ("prune", "message"),
    [
        ({"source": "teacher:2", "budgets": ["10k"], "train": {"lr": 0.01}}, "members 0–1"),
        ({"source": "teacher", "budgets": ["10k"]}, "prune.train needs lr"),
        ({"source": "cnn-d4@30k", "budgets": ["10k"]}, "not a searched cell"),
        ({"source": "cnn-d3@100k", "budgets": ["10k"]}, "not in search.budgets"),
        ({"source": "cnn-d3@30k", "budgets": ["10k", "30k"]}, "must be below the source's 30k"),
        ({"source": "resnet", "budgets": ["10k"]}, "prune.source"),
        ({"source": "teacher", "budgets": ["lots"], "train": {"lr": 0.01}}, "prune.budgets"),
        ({"source": "teacher", "budgets": ["10k"], "epochs": 2}, "unknown key"),
    ],
)
def test_bad_prune_sections_are_one_line(prune: dict, message: str) -> None:
    raw = {**copy.deepcopy(EXTENDED), "prune": prune}
    with pytest.raises(UserError, match=message) as info:
        parse_scale(raw, "x.yaml")
    assert "\n" not in str(info.value) and str(info.value).startswith("x.yaml: ")


def _study(tmp_path: Path, splits) -> tuple[Path, Path, dict]:
    """OUT/ with a study table of one trained cnn-d2 trial (its checkpoint) and a transfer set
    labelled by that student (a stand-in teacher)."""
    import pyarrow as pa
    from safetensors.torch import save

    from raydistill.distill.ensemble import make_ensemble
    from raydistill.distill.transfer.writer import write_transfer_set
    from raydistill.search import TRIALS_SCHEMA
    from raydistill.students.budget import solve_budget
    from raydistill.training.checkpoint import save_checkpoint
    from raydistill.training.config import TrainConfig, make_preprocess
    from raydistill.training.loop import train_student

    spec = solve_budget("cnn", 2, 20_000, batchnorm=True, num_classes=splits.num_classes).spec
    cfg = TrainConfig(batch_size=64, max_epochs=1, lr=0.01, loss="hard", device="cpu")
    tr = train_student(spec, splits, None, cfg)
    ckpt = tmp_path / "out" / "search" / "cnn-d2_20k_t0"
    save_checkpoint(
        ckpt,
        meta={"spec": tr.spec, "status": "finished"},
        model=tr.state_dict,
        best=tr.state_dict,
        optim={},
    )
    row = {"experiment": "t-search", "run": "r0", "cell": "cnn-d2@20k", "family": "cnn",
           "depth": 2, "budget": 20_000, "trial_id": "t0", "status": "finished",
           "spec": json.dumps(tr.spec), "params": tr.params, "val/acc": tr.best_val_acc,
           "test/acc": tr.test_acc, "checkpoint": str(ckpt), "loss": "l2_logits",
           "train": json.dumps({**tr.config, "loss": "l2_logits", "lr": 0.005}),
           "pruned": False}  # fmt: skip
    study = tmp_path / "out" / "study"
    study.mkdir(parents=True)
    pa.Table.from_pylist([row], schema=TRIALS_SCHEMA).to_pandas().to_parquet(
        study / "trials.parquet", index=False
    )
    blob = save({k: v.contiguous() for k, v in tr.state_dict.items()})
    ens = make_ensemble(tr.spec, [blob], make_preprocess("per_image", splits))
    ts = write_transfer_set(tmp_path / "out" / "transfer.parquet", ens, splits, 1, seed=0)
    raw = copy.deepcopy(EXTENDED)
    raw["search"].update(spaces=["cnn"], depths={"cnn": [2]}, budgets=["20k"])
    raw["prune"] = {"source": "cnn-d2@20k", "budgets": ["8k"], "max_epochs": 1}
    raw["seeds"] = 1
    return tmp_path / "out", ts, raw


def test_prune_stage_adds_pruned_rows_the_report_renders(tmp_path: Path, tiny_splits) -> None:
    from raydistill.report import make_report
    from raydistill.study.prune_stage import prune_stage

    out, ts, raw = _study(tmp_path, tiny_splits)
    sc = parse_scale(raw, "t.yaml")
    logs: list[str] = []
    summary = prune_stage(sc, out, tiny_splits, ts, pd.DataFrame(), log=logs.append)

    trials = pd.read_parquet(out / "study" / "trials.parquet")
    row = trials[trials["cell"] == "prune-cnn-d2@8k"].iloc[0]
    assert 0.99 * 8000 <= row["params"] <= 8000 and row["status"] == "finished"
    assert row["family"] == "prune-cnn" and row["experiment"] == "extended-prune"
    assert json.loads(row["train"])["lr"] == 0.005  # the source trial's config
    assert json.loads(row["config"])["source"].endswith("sources/t0")  # fetched through storage
    assert len(trials) == 2  # the searched trial stays
    seeds = pd.read_csv(out / "study" / "seeds.csv")
    assert seeds["seed"].tolist() == [1000] and seeds["row"].tolist() == ["prune-cnn-d2"]
    assert summary[["row", "budget", "n"]].values.tolist() == [["prune-cnn-d2", 8000, 1]]
    assert not list(out.rglob(".prune-start-*"))  # fine-tune's epoch-0 checkpoint is gone

    rep = make_report(out / "study")  # Table 2, Figure 1, Pareto: searched and pruned rows
    table = Path(rep.paths["table2_md"]).read_text()
    assert "prune-cnn-d2" in table and "cnn-d2" in table
    pareto = pd.read_csv(rep.paths["pareto_csv"])
    assert {"cnn", "prune-cnn"} <= set(pareto["family"])

    logs.clear()  # run again: reused, the rows are not duplicated
    prune_stage(sc, out, tiny_splits, ts, pd.DataFrame(), log=logs.append)
    assert len(logs) == 2 and all(line.strip().startswith("reusing") for line in logs)
    again = pd.read_parquet(out / "study" / "trials.parquet")
    assert len(again) == 2 and len(pd.read_csv(out / "study" / "seeds.csv")) == 1


def test_a_budget_above_the_teacher_is_refused_before_any_run(tmp_path: Path) -> None:
    from safetensors.torch import save_file

    from raydistill.data import make_synthetic_sep
    from raydistill.students import build
    from raydistill.students.budget import count_params
    from raydistill.study.prune_stage import prune_stage

    splits = make_synthetic_sep(n_train=64, n_val=32, n_test=32, seed=0)
    spec = {
        "family": "cnn",
        "depth": 2,
        "widths": [8, 8, 16],
        "in_shape": [3, 32, 32],
        "num_classes": 2,
    }
    teacher = tmp_path / "out" / "teacher"
    teacher.mkdir(parents=True)
    (teacher / "manifest.json").write_text(json.dumps({"kind": "teacher", "spec": spec}))
    for k in (0, 1):
        save_file(build(spec).state_dict(), teacher / f"member-{k}.safetensors")
    raw = {
        **copy.deepcopy(EXTENDED),
        "prune": {
            "source": "teacher",
            "train": {"lr": 0.01},
            "budgets": ["1k", count_params(spec) + 1],
        },
    }
    with pytest.raises(UserError, match="above the network's size") as info:
        prune_stage(
            parse_scale(raw, "t.yaml"), tmp_path / "out", splits, tmp_path / "ts", pd.DataFrame()
        )
    assert "\n" not in str(info.value) and not (tmp_path / "out" / "prune").exists()


def test_prune_fine_tunes_run_as_ray_tasks_with_the_trials_resources(
    ray_local, tmp_path: Path, tiny_splits
) -> None:
    """With an address each fine-tune is a Ray task asking for the search trials' declared
    CPUs and GPU share (`repeats.training_options`); its rows equal the in-process path's and
    its files land in OUT/prune/, written by the driver. A share no node has is refused in one
    line before any run."""
    import os
    import shutil

    from raydistill.export.inference import load_student
    from raydistill.study.prune_stage import prune_stage

    out, ts, raw = _study(tmp_path / "a", tiny_splits)
    other = tmp_path / "b" / "out"
    shutil.copytree(out, other)
    here = parse_scale(raw, "t.yaml")
    prune_stage(here, out, tiny_splits, ts, pd.DataFrame(), log=[].append)

    raw["search"].update(cpus_per_trial=2, gpus_per_trial=2)
    with pytest.raises(UserError, match="asks for 2 GPUs per task, more than any node") as info:
        prune_stage(parse_scale(raw, "t.yaml"), other, tiny_splits, ts, pd.DataFrame(),
                    address="local")  # fmt: skip
    assert "\n" not in str(info.value) and not list((other / "prune").glob("prune-*"))

    raw["search"].update(gpus_per_trial=0.5)  # the fixture's Ray has one logical GPU
    logs: list[str] = []
    prune_stage(parse_scale(raw, "t.yaml"), other, tiny_splits, ts, pd.DataFrame(),
                log=logs.append, address="local")  # fmt: skip
    a = pd.read_parquet(out / "study" / "trials.parquet").iloc[-1]
    b = pd.read_parquet(other / "study" / "trials.parquet").iloc[-1]
    assert b["cell"] == a["cell"] == "prune-cnn-d2@8k" and len(logs) == 2
    for key in ("params", "val/acc", "test/acc", "epochs", "best_epoch", "spec"):
        assert b[key] == a[key], key
    assert (
        pd.read_csv(other / "study" / "seeds.csv")["test_acc"].tolist()
        == pd.read_csv(out / "study" / "seeds.csv")["test_acc"].tolist()
    )
    student = Path(b["checkpoint"]).parent  # the driver's OUT/prune/..., not a worker's tmp
    assert student.parent.parent == other / "prune" and (student / "checkpoint").is_dir()
    assert load_student(student).net is not None
    check = json.loads((student / "spec.json").read_text())["verification"]
    assert check["test_verified"] is True  # its self-check ran inside the fine-tune's task
    assert check["measured_by"]["pid"] != os.getpid()
    assert check["measured_by"]["resources"] == {"CPU": 2.0, "GPU": 0.5}
