"""The CLI's first hour: fast answers, one-line refusals that leave nothing behind.

Subprocess tests run `python -X importtime -m raydistill ...` and read which modules were
imported: `--help`, `families` and every refusal of bad input must import neither torch nor
Ray. In-process tests call `raydistill.cli.main` for refusals that need the schema modules.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from raydistill.cli import main
from raydistill.cli.args import parse_key_values
from raydistill.core.errors import UserError

HEAVY = re.compile(r"\|\s+(torch|ray)(\.|$)")


def run_cli(*argv: str, cwd: Path | None = None) -> tuple[int, str, str, float, bool]:
    """(exit status, stdout, stderr without import times, seconds, whether torch/ray loaded)."""
    t0 = time.perf_counter()
    res = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "raydistill", *argv],
        capture_output=True,
        text=True,
        cwd=cwd,
        timeout=120,
    )
    wall = time.perf_counter() - t0
    lines = res.stderr.splitlines()
    heavy = any(HEAVY.search(line) for line in lines if line.startswith("import time:"))
    err = "\n".join(line for line in lines if not line.startswith("import time:"))
    return res.returncode, res.stdout, err, wall, heavy


def test_help_and_families_are_light() -> None:
    for argv in (["--help"], ["train", "--help"], ["families"], ["families", "--json"]):
        code, out, err, _, heavy = run_cli(*argv)  # lightness: no torch or ray imported (no timing)
        assert code == 0 and not err, (argv, err)
        assert not heavy, f"raydistill {' '.join(argv)} imported torch or ray"
    assert "cnn" in {row["name"] for row in json.loads(out)}


def test_search_help_lists_every_shipped_space() -> None:
    from raydistill.search.spaces.load import shipped_spaces

    code, out, err, _, heavy = run_cli("search", "--help")
    assert code == 0 and not err and not heavy
    listed = re.search(r"shipped\s+name:\s+([^)]*)\)", out)
    assert listed is not None, out
    assert " ".join(listed[1].split()) == ", ".join(shipped_spaces())
    assert {"nin", "adder"} <= set(shipped_spaces())


def test_refusals_are_light_one_line_and_exit_2(tmp_path: Path) -> None:
    search = tmp_path / "search"
    search.mkdir()
    (search / "trials.parquet").write_bytes(b"")
    cases = {
        ("budget", "--family", "cnn", "--depth", "2", "--budget", "abc"): "is not a number like 300k or 1M",
        ("budget", "--family", "cnn", "--depth", "2", "--budget", "-5k"): "'-5k' must be positive",
        ("budget", "--family", "nope", "--depth", "2", "--budget", "1M"): "unknown family 'nope'; student families",
        ("budget", "--family", "cnn", "--depth", "9", "--budget", "1M"): "depth 9 is invalid",
        ("train", "--family", "cnn", "--depth", "1", "--budget", "1M", "--data", "synthetic-sep", "--set", "lr"): "not KEY=VALUE",
        ("train", "--family", "cnn", "--depth", "1", "--budget", "1M", "--data", str(tmp_path / "none")): "does not exist",
        ("teach", "--data", "synthetic-sep", "--family", "resnet9", "--epochs", "1", "--out", "/proc/nope"): "cannot be written",
        ("teach", "--data", "cifar10", "--cache-dir", str(tmp_path), "--family", "resnet9", "--epochs", "1", "--out", "t"): "--download",
        ("search", "mlp", "--budgets", "1M", "--data", "synthetic-sep", "--out", "/proc/nope"): "cannot be written",
        ("export", str(search), "--all", "--out", "/proc/nope"): "cannot be written",
        ("reproduce", "--seeds", "0"): "must be ≥ 1",
        ("families", "--kind", "dog"): "invalid choice 'dog'; valid: student, teacher",
    }  # fmt: skip
    for argv, message in cases.items():
        code, _, err, _, heavy = run_cli(*argv, cwd=tmp_path)
        assert code == 2, (argv, err)
        assert err.startswith("raydistill: error: ") and "\n" not in err.strip(), (argv, err)
        assert message in err, (argv, err)
        assert not heavy, f"refusing {argv} imported torch or ray"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["search"]  # nothing left behind


def test_broken_pipe_is_quiet() -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "raydistill", "families"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    proc.stdout.close()  # `raydistill families | head -0`
    assert proc.wait(timeout=60) == 141
    assert proc.stderr.read() == b""


def test_the_family_index_is_the_registry() -> None:
    from raydistill.cli.families_index import static_families
    from raydistill.students import families

    index, registry = static_families(), families()
    assert index is not None and list(index) == list(registry)
    for name, fam in registry.items():
        got = index[name]
        assert (got.kind, got.depths, got.spec_keys, got.summary) == (
            fam.kind,
            fam.depths,
            fam.spec_keys,
            fam.summary,
        )


def test_budget_option_accepts_what_parse_budget_accepts() -> None:
    from raydistill.cli import parse
    from raydistill.students.budget import parse_budget

    for text in ("300k", "1M", "3.16M", "250000", "1e6", " 2 K", ".5M", "abc", "1MM", "-1", "0",
                 "-5k", "-0.5M", "40M-macs", "2ms", "0.5ms-cuda-b64", "2ms-tpu"):  # fmt: skip
        try:
            want = parse_budget(text)
        except UserError:
            want = None
        argv = ["budget", "--family", "cnn", "--depth", "1", "--budget", text]
        try:
            got = parse_budget(parse(argv)[1]["cell"].budget)
        except UserError as exc:
            msg = str(exc)
            assert want is None and ("is not a number like" in msg or "must be positive" in msg), (
                text
            )
            assert not text.startswith("-") or "must be positive" in msg, (text, msg)
            continue
        assert got == want, text


def test_key_values_are_yaml_everywhere() -> None:
    got = parse_key_values(["lr=0.01", "nesterov=false", "widths=[1, 2]", "loss=kd", "x="], "--set")
    assert got == {"lr": 0.01, "nesterov": False, "widths": [1, 2], "loss": "kd", "x": ""}
    with pytest.raises(UserError, match="not KEY=VALUE"):
        parse_key_values(["=3"], "--spec")


def test_wrong_types_and_unknown_keys_are_refused(capsys, tmp_path: Path) -> None:
    base = ["--family", "mlp", "--depth", "1", "--budget", "10k", "--data", "synthetic-sep:64"]
    for sets, message in (
        (["lr=abc"], "--set lr='abc' is invalid: expected a float like 0.005"),
        (["nesterov=3"], "expected a bool"),
        (["lr_typo=1"], "--set lr_typo: unknown key; valid: lr, momentum"),
    ):
        argv = ["train", *base, *(x for s in sets for x in ("--set", s))]
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert err.startswith("raydistill: error: ") and err.count("\n") == 1 and message in err
    space = ["search", "mlp", "--budgets", "10k", "--data", "synthetic-sep:64", "--dry-run"]
    assert main([*space, "--set", "momentum=abc"]) == 2
    assert "--set momentum='abc' is invalid" in capsys.readouterr().err


def test_refused_export_leaves_no_out_directory(tmp_path: Path, capsys) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    search = tmp_path / "search"
    search.mkdir()
    row = {
        "experiment": "e",
        "cell": "mlp-d1@10k",
        "family": "mlp",
        "depth": 1,
        "budget": 10_000,
        "trial_id": "t",
        "status": "finished",
        "val/acc": 0.5,
        "test/acc": 0.5,
        "params": 9_000,
        "twin": False,
        "loss": "hard",
        "checkpoint": str(tmp_path / "gone"),
    }
    pq.write_table(pa.Table.from_pylist([row]), search / "trials.parquet")
    out = tmp_path / "export"
    assert main(["export", str(search), "--all", "--out", str(out), "--no-verify-test"]) == 2
    assert "checkpoint" in capsys.readouterr().err and not out.exists()


DATA_COMMANDS = {  # the other options each needs to parse
    "teach": ["--family", "vgg8", "--epochs", "1", "--out", "o"],
    "transfer": ["--teacher", "t", "--epochs", "1", "--out", "o.parquet"],
    "train": ["--family", "cnn", "--depth", "1", "--budget", "1M"],
    "search": ["cnn", "--budgets", "1M"],
    "prune": ["src", "--budget", "10k"],
    "export": ["d", "--all", "--out", "o"],
    "reproduce": [],
}


def test_every_command_that_takes_data_takes_the_one_data_group(tmp_path: Path) -> None:
    """The data options are one group (cli.data_options), spelled as the README does, on the
    command line and in --config; every command with --data is listed above."""
    from raydistill.cli import COMMANDS, parse
    from raydistill.cli.data_options import DataOptions, DataSource
    from raydistill.cli.parser import option_groups

    groups = {n: set(option_groups(c.fn).values()) for n, c in COMMANDS.items()}
    takes = {n for n, g in groups.items() if any(issubclass(c, DataSource) for c in g)}
    with_split = {n for n, g in groups.items() if DataOptions in g}
    assert takes == set(DATA_COMMANDS) and with_split == takes - {"export", "reproduce"}
    source = ["--data", "cifar10", "--cache-dir", "/c", "--download"]
    split = ["--val-size", "5", "--split-seed", "1", "--train-subset", "100"]
    cfg_source, cfg_split = tmp_path / "source.yaml", tmp_path / "split.yaml"
    cfg_source.write_text("data: cifar10\ncache-dir: /c\ndownload: true\n")
    cfg_split.write_text(cfg_source.read_text() + "val_size: 5\nsplit-seed: 1\ntrain_subset: 100\n")
    for name, rest in DATA_COMMANDS.items():
        typed = [*source, *(split if name in with_split else [])]
        cfg = cfg_split if name in with_split else cfg_source
        for argv in ([name, *rest, *typed], [name, *rest, "--config", str(cfg)]):
            ds = parse(argv)[1]["dataset"]
            assert (ds.data, ds.cache_dir, ds.download) == ("cifar10", "/c", True), argv
            if name in with_split:
                assert (ds.val_size, ds.split_seed, ds.train_subset) == (5, 1, 100), argv
                assert ds.split() == {"val_size": 5, "seed": 1, "train_subset": 100}
    args = parse(["reproduce", "--seed", "3", "--seeds", "2"])[1]
    assert (args["seed"], args["seeds"]) == (3, 2)  # reproduce's --seed: the split seed
    with pytest.raises(UserError, match="--val-size: must be ≥ 0"):
        parse(["train", *DATA_COMMANDS["train"], "--data", "x", "--val-size", "-1"])


def test_refused_search_leaves_no_out_directory(tmp_path: Path, capsys) -> None:
    junk = tmp_path / "junk.parquet"
    junk.write_text("not parquet")
    out = tmp_path / "search"
    argv = [
        "search",
        "mlp",
        "--budgets",
        "10k",
        "--data",
        "synthetic-sep:64",
        "--transfer",
        str(junk),
        "--out",
        str(out),
        "--wandb",
        "off",
    ]
    assert main(argv) == 2  # refused after the search wrote its settings into --out
    assert "is not a Parquet file" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["junk.parquet"]


def test_every_command_takes_a_config_file(tmp_path: Path, capsys) -> None:
    from raydistill.cli import COMMANDS, command_parser, parse

    assert all("--config" in command_parser(name).format_help() for name in COMMANDS)
    cfg = tmp_path / "budget.yaml"
    cfg.write_text("family: mlp\ndepth: 1\nbudget: 10k\njson: true\n")
    assert main(["budget", "--config", str(cfg), "--budget", "20k"]) == 0  # typed options win
    assert json.loads(capsys.readouterr().out)["budget"] == 20_000
    search = tmp_path / "search.yaml"
    search.write_text(
        "spaces: [mlp]\nbudgets: [10k, 1M]\ndepths: [1, 2]\ndry-run: true\n"
        "set: {lr: 0.01, loss: kd}\nval_size: 5\n"
    )
    _, got = parse(["search", "--config", str(search), "--set", "momentum=0.5", "--val-size", "7"])
    assert (got["spaces"], got["budgets"], got["depths"], got["dry_run"]) == (
        ["mlp"],
        "10k,1M",
        [1, 2],
        True,
    )
    assert got["set"] == ["lr=0.01", 'loss="kd"', "momentum=0.5"]  # repeatable: both apply
    assert got["dataset"].val_size == 7  # typed options win (a field of the data-options group)
    cfg.write_text("family: mlp\nbudgett: 10k\n")
    assert main(["budget", "--config", str(cfg)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "unknown option 'budgett'" in err
    cfg.write_text("family: mlp\ndepth: 0\nbudget: 10k\n")
    assert main(["budget", "--config", str(cfg)]) == 2  # the file's values are checked too
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--depth: must be ≥ 1 (got 0)" in err
