"""Packaging: a wheel built from this checkout carries the shipped search spaces and scales.

The wheel is built from a copy of the checkout in a tmp dir (`pip wheel --no-deps
--no-build-isolation`, offline), its file list is inspected, and it is unpacked into a folder
that a fresh interpreter — started outside the checkout — imports raydistill from.
About 10 s (the build, and one import of torch), so not marked slow.
"""

from __future__ import annotations

import ast
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SOURCES = ("pyproject.toml", "setup.py", "MANIFEST.in", "README.md", "raydistill", "search_spaces")


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    src = tmp_path_factory.mktemp("src")
    for name in SOURCES:
        path = ROOT / name
        if path.is_dir():
            shutil.copytree(path, src / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(path, src / name)
    out = tmp_path_factory.mktemp("dist")
    cmd = [
        sys.executable,
        "-m",
        "pip",
        "wheel",
        "--no-deps",
        "--no-build-isolation",
        "--no-index",
        "-q",
        "-w",
        str(out),
        str(src),
    ]
    subprocess.run(cmd, check=True, capture_output=True, timeout=300)
    (whl,) = out.glob("raydistill-*.whl")
    return whl


def test_wheel_holds_the_shipped_spaces_and_scales(wheel: Path) -> None:
    names = set(zipfile.ZipFile(wheel).namelist())
    spaces = {p.name for p in (ROOT / "search_spaces").glob("*.yaml")}
    assert spaces and {f"raydistill/search_spaces/{s}" for s in spaces} <= names
    scales = {p.name for p in (ROOT / "raydistill" / "study" / "scales").glob("*.yaml")}
    assert scales and {f"raydistill/study/scales/{s}" for s in scales} <= names
    assert not any(n.startswith("search_spaces/") for n in names)  # only inside the package


def test_installed_wheel_finds_spaces_and_scales(wheel: Path, tmp_path: Path) -> None:
    site = tmp_path / "site"
    zipfile.ZipFile(wheel).extractall(site)  # what a non-editable install puts on sys.path
    code = (
        "import raydistill.search.spaces.load as s, raydistill.study.reproduce as r; "
        "print(s.space_dir()); print(sorted(s.shipped_spaces())); "
        "print(r.load_scale('tiny').name)"
    )
    env = {**os.environ, "PYTHONPATH": str(site)}
    res = subprocess.run(
        [sys.executable, "-c", code],
        cwd=tmp_path,
        env=env,
        text=True,
        capture_output=True,
        timeout=120,
    )
    assert res.returncode == 0, res.stderr[-2000:]
    where, spaces, scale = res.stdout.splitlines()[-3:]
    assert Path(where) == site / "raydistill" / "search_spaces"
    assert ast.literal_eval(spaces) == sorted(
        p.stem for p in (ROOT / "search_spaces").glob("*.yaml")
    )
    assert scale == "tiny"
