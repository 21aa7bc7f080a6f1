"""The manifest every output directory carries, and atomic file writes.

A manifest (`manifest.json`) records what made a directory: the kind of output, the config,
the seeds, the versions of raydistill / torch / ray / python, the git commit (when the code runs
from a checkout), the host and time, and the fingerprints (sha256) of the data and teachers it
depends on. Search, export and reproduce write one with `build_manifest` + `write_manifest`.

Atomic writes, the one implementation for the package: `atomic_path` (a file: written to a
temporary file in the same directory and renamed over the target, `os.replace` being atomic on
POSIX, so a reader never sees half a file), `atomic_write_bytes` / `atomic_write_text` on top of
it, and `atomic_dir` (a directory: written in a temporary sibling and renamed into place).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import platform
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator, Mapping, Sequence
from importlib import metadata
from pathlib import Path
from typing import Any

from raydistill.core.errors import UserError

MANIFEST_NAME = "manifest.json"
FORMAT_VERSION = 1


def _umask() -> int:
    # os.umask can only be read by setting it; restore it at once.
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _file_mode() -> int:
    """The permissions a plain open() gives a new file (0644 under the usual umask 022)."""
    return 0o666 & ~_umask()


def _mkstemp_for(path: Path) -> tuple[int, str]:
    """A temporary file next to `path`, with the permissions a plain open() would give
    (mkstemp's are 0600, which os.replace would carry over to the output)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.fchmod(fd, _file_mode())
    return fd, tmp


def _plain_modes(root: Path) -> None:
    """Give `root` (a file, or a directory tree) the permissions plain open() / mkdir() would.

    Writers handed a temporary path may replace it with their own temporary file, made 0600
    by mkstemp (safetensors' `save_file` does): without this, an output's files would come out
    0600 next to its 0644 ones."""
    if not root.is_dir():
        if root.exists():
            os.chmod(root, _file_mode())
        return
    os.chmod(root, 0o777 & ~_umask())
    for sub in root.rglob("*"):
        if not sub.is_symlink():
            os.chmod(sub, 0o777 & ~_umask() if sub.is_dir() else _file_mode())


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """The one atomic file write: yields a temporary path next to `path` (for any writer:
    pyarrow, numpy, open()); renamed over `path` when the block ends, removed if it raises."""
    path = Path(path)
    fd, tmp = _mkstemp_for(path)
    os.close(fd)
    try:
        yield Path(tmp)
        _plain_modes(Path(tmp))
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_bytes(path: str | Path, data: bytes) -> Path:
    """Write `data` to `path` via a temporary file in the same directory and a rename."""
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    return Path(path)


def atomic_write_text(path: str | Path, text: str) -> Path:
    """`atomic_write_bytes` for UTF-8 text."""
    return atomic_write_bytes(path, text.encode("utf-8"))


def temp_path_for(path: str | Path) -> Path:
    """A fresh temporary path next to `path` (prefer `atomic_path`, which also renames it)."""
    fd, tmp = _mkstemp_for(Path(path))
    os.close(fd)
    return Path(tmp)


@contextlib.contextmanager
def atomic_dir(path: str | Path, *, replace: bool = True) -> Iterator[Path]:
    """The one atomic directory write: yields a fresh temporary directory next to `path`, moved
    into place as `path` when the block ends; removed (and `path` untouched) if it raises.

    `replace=True`: an existing `path` is swapped out (moved aside, then deleted).
    `replace=False`: an existing `path` wins (another writer was first); the new one is dropped.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp"))
    try:
        yield tmp
        _plain_modes(tmp)  # mkdtemp's 0700, and any writer's 0600 files, not carried into place
        _move_dir(tmp, path, replace)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _move_dir(tmp: Path, path: Path, replace: bool) -> None:
    if not replace:
        with contextlib.suppress(OSError):  # `path` exists and is not empty: keep it
            os.rename(tmp, path)
        return
    old = path.parent / f".{path.name}.old-{os.getpid()}"
    if path.exists():
        path.rename(old)
    tmp.rename(path)
    shutil.rmtree(old, ignore_errors=True)


def sha256_bytes(data: bytes) -> str:
    """Hex sha256 of bytes."""
    return hashlib.sha256(data).hexdigest()


def sha256_file(path: str | Path, chunk: int = 1 << 20) -> str:
    """Hex sha256 of a file's bytes, read in 1 MiB chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def versions() -> dict[str, str | None]:
    """Versions of the packages a result depends on (None for one not installed)."""
    out: dict[str, str | None] = {"python": platform.python_version()}
    for pkg in ("raydistill", "torch", "ray", "pyarrow", "numpy", "safetensors"):
        try:
            out[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            out[pkg] = None
    return out


def git_commit(cwd: str | Path | None = None) -> str | None:
    """`git rev-parse HEAD` of the checkout the package runs from, or None outside a repo."""
    cwd = Path(cwd) if cwd is not None else Path(__file__).resolve().parent
    try:
        res = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True, text=True, timeout=10
        )
    except (OSError, subprocess.SubprocessError):
        return None
    commit = res.stdout.strip()
    return commit if res.returncode == 0 and commit else None


def build_manifest(
    kind: str,
    config: Mapping[str, Any],
    *,
    seeds: Sequence[int] | None,
    dataset_fingerprint: str | None = None,
    teacher_fingerprints: Sequence[str] | None = None,
    extra: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """A JSON-able manifest for an output of `kind` ("teacher", "search", "export", ...).

    `extra` holds kind-specific results (accuracies, file lists); its keys are merged in at the
    top level and may not shadow the standard ones.
    """
    manifest: dict[str, Any] = {
        "kind": kind,
        "format_version": FORMAT_VERSION,
        "config": dict(config),
        "seeds": [int(s) for s in seeds] if seeds is not None else None,
        "dataset_fingerprint": dataset_fingerprint,
        "teacher_fingerprints": list(teacher_fingerprints) if teacher_fingerprints else None,
        "versions": versions(),
        "git_commit": git_commit(),
        "hostname": socket.gethostname(),
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "created_unix": time.time(),
    }
    for key, value in (extra or {}).items():
        if key in manifest:
            raise ValueError(f"manifest extra key {key!r} shadows a standard key")
        manifest[key] = value
    return manifest


def write_manifest(directory: str | Path, manifest: Mapping[str, Any]) -> Path:
    """Write `DIR/manifest.json` atomically; returns its path."""
    text = json.dumps(manifest, indent=2, sort_keys=False, default=_json_default) + "\n"
    return atomic_write_text(Path(directory) / MANIFEST_NAME, text)


def read_manifest(directory: str | Path, kind: str | None = None) -> dict[str, Any]:
    """Read `DIR/manifest.json` (UserError when missing, not JSON, or of another kind)."""
    path = Path(directory) / MANIFEST_NAME
    if not path.is_file():
        raise UserError(f"{path} does not exist; is {directory} an output directory?")
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise UserError(f"{path} is not valid JSON ({type(exc).__name__})") from None
    if not isinstance(manifest, dict):
        raise UserError(f"{path} is not a JSON object")
    if kind is not None and manifest.get("kind") != kind:
        raise UserError(f"{path} has kind {manifest.get('kind')!r}; expected {kind!r}")
    return manifest


def _json_default(obj: Any) -> Any:
    # numpy scalars / tuples / paths end up in configs; store them as plain JSON values.
    if hasattr(obj, "item"):
        return obj.item()
    if isinstance(obj, (set, frozenset, tuple)):
        return list(obj)
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"{type(obj).__name__} is not JSON serialisable")
