"""`raydistill search` as the README writes it (issue 23): `--resume DIR --extend N --cell X`
adds N trials to cell X (after finishing an interrupted run), a `--cell` that is not a cell
of DIR is refused in one line in every form, `--cell` without `--extend` is refused, and a
search in which no trial ended with a score exits 1 with a one-line summary.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from raydistill.cli import main

DATA = "synthetic-sep:64:8"


def one_line_error(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert err.startswith("raydistill: error: ") and "\n" not in err, err
    return err


def summary_line(capsys) -> str:
    """The last line of a search that ran (the progress bar's lines come before it)."""
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert last.startswith("raydistill: error: "), last
    return last


@pytest.fixture(scope="module")
def diverging(ray_local, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[str]]:
    """A one-trial search whose learning rate makes every trial diverge at its first epoch."""
    d = tmp_path_factory.mktemp("search")
    space = d / "mlp.yaml"
    train = {"lr": 1.0e30, "batch_size": 32, "max_epochs": 1, "augment": "none"}  # NaN at once
    space.write_text(yaml.safe_dump({"family": "mlp", "depths": [1, 2], "train": train}))
    argv = [
        "search",
        str(space),
        "--budgets",
        "5k",
        "--depths",
        "1,2",
        "--trials",
        "1",
        "--data",
        DATA,
        "--val-size",
        "16",
        "--out",
        str(d / "s"),
        "--wandb",
        "off",
        "--device",
        "cpu",
    ]
    return d / "s", argv


def test_a_search_where_every_trial_diverged_exits_1(diverging, capsys) -> None:
    out, argv = diverging
    assert main(argv) == 1
    err = summary_line(capsys)
    assert f"no trial of {out} ended with a score (2 diverged)" in err, err
    assert "lower the learning rate" in err


def test_the_readme_resume_extend_cell_form_adds_trials(diverging, capsys) -> None:
    from raydistill.search import SearchSettings, load_trials

    out, _ = diverging
    assert len(load_trials(out)) == 2
    bad = [
        ["--resume", str(out), "--extend", "1", "--cell", "mlp-d9@5k"],
        ["--extend", "1", "--out", str(out), "--cell", "mlp-d9@5k"],
        ["--resume", str(out), "--extend", "1", "--cell", "mlp-d1@5k", "--cell", "nope"],
    ]
    for extra in bad:  # a bad cell is refused in every form, before anything runs
        assert main(["search", *extra]) == 2
        err = one_line_error(capsys)
        assert "is not a cell of" in err and "valid: mlp-d1@5k, mlp-d2@5k" in err, err
    assert main(["search", "--resume", str(out), "--cell", "mlp-d1@5k"]) == 2
    assert "--cell names the cells --extend N adds trials to" in one_line_error(capsys)
    assert main(["search", "--resume", str(out), "--out", str(out.parent / "other")]) == 2
    assert "name two searches" in one_line_error(capsys)
    assert len(load_trials(out)) == 2 and len(SearchSettings.load(out).runs) == 1

    # the README's form: one more trial in cell mlp-d1@5k (it diverges too: exit 1, summary)
    assert main(["search", "--resume", str(out), "--extend", "1", "--cell", "mlp-d1@5k"]) == 1
    assert "(3 diverged)" in summary_line(capsys)
    frame = load_trials(out)
    assert len(frame) == 3 and frame["cell"].value_counts()["mlp-d1@5k"] == 2
    runs = SearchSettings.load(out).runs
    assert [r["cells"] for r in runs][1:] == [{"mlp-d1@5k": 1}]
    assert all(r["complete"] for r in runs)
