"""Build hook: ship the top-level `search_spaces/` (the source of truth) inside the package.

pyproject.toml holds the metadata; this only adds one step to `build_py`: the YAML files of
`search_spaces/` are copied to `raydistill/search_spaces/` in the build directory, so a wheel
(a non-editable install) carries them where `raydistill.search.spaces.load.space_dir` looks. Editable
installs read the checkout's folder directly and skip the copy.
"""

from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

ROOT = Path(__file__).resolve().parent


class BuildPyWithSpaces(build_py):
    """`build_py`, plus search_spaces/*.yaml → <build>/raydistill/search_spaces/."""

    def run(self) -> None:
        super().run()
        if getattr(self, "editable_mode", False):
            return
        target = Path(self.build_lib) / "raydistill" / "search_spaces"
        self.mkpath(str(target))
        for path in sorted((ROOT / "search_spaces").glob("*.yaml")):
            self.copy_file(str(path), str(target / path.name))


setup(cmdclass={"build_py": BuildPyWithSpaces})
