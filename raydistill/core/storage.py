"""Shared storage: the one place for storage URIs (join, read, write, fetch, probe).

A storage location is a URI (`s3://bucket/prefix`, `gs://bucket/prefix`, `file:///abs/dir`) or
a plain path (made absolute: Tune needs one). Every artifact a later step needs (trial
checkpoints, best students) is read back through `pyarrow.fs.FileSystem.from_uri`, never with
`Path(...)` on the driver, so nothing assumes the driver shares a disk with Ray's workers.

S3-compatible servers: pyarrow and Tune read the endpoint from `AWS_ENDPOINT_URL` (e.g.
`http://127.0.0.1:9000` for MinIO) and the credentials from the usual `AWS_ACCESS_KEY_ID` /
`AWS_SECRET_ACCESS_KEY` (or `~/.aws`, an instance role); `AWS_DEFAULT_REGION` sets the region.
A query such as `s3://bucket/prefix?endpoint_override=host:port&scheme=http` also works and is
kept on every joined URI.
"""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import TYPE_CHECKING

from raydistill.core.errors import UserError, first_line

if TYPE_CHECKING:
    import pyarrow.fs as pafs


def is_uri(location: str) -> bool:
    """True for `scheme://...` (file:// included), False for a plain path."""
    return "://" in str(location)


def check_shared(storage: str | None, address: str | None) -> None:
    """Refuse (one line, before anything runs) a multi-node run whose storage the other nodes
    cannot reach: with `--address` of a cluster, every node writes trials, checkpoints and
    W&B runs into the storage, and a plain path (the default DIR/tune included) is a folder on
    each node's own disk. A URI is taken as shared: s3://, gs://, or a filesystem mounted on
    every node given as file:///PATH."""
    if address in ("local", "", None) or (storage is not None and is_uri(storage)):
        return
    what = (
        "there is no --storage (the default, DIR/tune, is on this machine's disk)"
        if storage is None
        else f"--storage {storage} is a path on this machine's disk"
    )
    raise UserError(
        f"--address {address}: a multi-node run needs storage every node reaches, but {what}; "
        "give --storage s3://BUCKET/PREFIX (or gs://...), or file:///PATH for a filesystem "
        "mounted on every node"
    )


def resolve(storage: str | Path | None, default: str | Path) -> str:
    """The storage location as recorded: a URI as given, a path made absolute (default when None)."""
    location = str(default if storage is None else storage)
    if is_uri(location):
        return location
    return str(Path(location).expanduser().resolve())


def join(base: str, *parts: str) -> str:
    """`base` / parts, for a URI (its ?query kept at the end) or a path."""
    parts = tuple(str(p).strip("/") for p in parts if str(p).strip("/"))
    if not is_uri(base):
        return str(Path(base).joinpath(*parts))
    path, q, query = base.partition("?")
    return "/".join([path.rstrip("/"), *parts]) + (q + query)


def filesystem(location: str) -> tuple[pafs.FileSystem, str]:
    """(pyarrow filesystem, path inside it) of a URI or path; a UserError if it is not valid."""
    import pyarrow.fs as pafs

    if not is_uri(location):
        return pafs.LocalFileSystem(), str(Path(location).expanduser().resolve())
    try:
        return pafs.FileSystem.from_uri(location)
    except (OSError, ValueError, TypeError) as exc:  # pyarrow's ArrowInvalid is a ValueError
        raise UserError(f"storage {location!r} is not usable: {first_line(exc)}") from None


def with_scheme(base: str, fs_path: str) -> str:
    """The URI of `fs_path` (a path inside `base`'s filesystem, as Tune's Checkpoint.path gives
    it: `bucket/prefix/...` with no scheme): `base`'s scheme and query, or the plain path when
    `base` is one. Recorded checkpoint paths keep their scheme this way."""
    if not is_uri(base) or is_uri(fs_path):
        return fs_path
    scheme = base.split("://", 1)[0]
    query = base.partition("?")[2]
    return f"{scheme}://{fs_path.lstrip('/') if scheme != 'file' else fs_path}" + (
        f"?{query}" if query else ""
    )


def probe(location: str) -> None:
    """Write and delete a small marker object under `location`; a one-line UserError if the
    storage cannot be reached, written, or has no credentials (before any trial starts)."""
    fs, path = filesystem(location)
    marker = f"{path.rstrip('/')}/.raydistill-probe-{uuid.uuid4().hex}"
    try:
        if fs.type_name == "local":
            fs.create_dir(path, recursive=True)
        with fs.open_output_stream(marker) as f:
            f.write(b"raydistill storage probe\n")
        fs.delete_file(marker)
    except (OSError, ValueError) as exc:
        raise UserError(
            f"storage {location!r} cannot be written: {first_line(exc)} "
            "(check the URI, the endpoint (AWS_ENDPOINT_URL) and the credentials)"
        ) from None


def exists(location: str) -> bool:
    import pyarrow.fs as pafs

    fs, path = filesystem(location)
    return fs.get_file_info(path).type != pafs.FileType.NotFound


def read_bytes(location: str) -> bytes:
    fs, path = filesystem(location)
    with fs.open_input_stream(path) as f:
        return f.read()


def write_bytes(location: str, data: bytes) -> str:
    """Write one object / file (parents created on a local filesystem); returns `location`."""
    fs, path = filesystem(location)
    if fs.type_name == "local":
        fs.create_dir(path.rsplit("/", 1)[0], recursive=True)
    with fs.open_output_stream(path) as f:
        f.write(data)
    return location


def fetch(location: str, names: list[str] | tuple[str, ...], local_dir: str | Path) -> Path:
    """Copy the files `names` of the directory `location` (any storage) into `local_dir`;
    a UserError naming the first missing one."""
    import pyarrow.fs as pafs

    fs, path = filesystem(location)
    dest = Path(local_dir)
    dest.mkdir(parents=True, exist_ok=True)
    for name in names:
        src = f"{path.rstrip('/')}/{name}"
        try:
            pafs.copy_files(
                src,
                str(dest / name),
                source_filesystem=fs,
                destination_filesystem=pafs.LocalFileSystem(),
            )
        except (OSError, ValueError) as exc:
            raise UserError(f"{join(location, name)} cannot be read: {first_line(exc)}") from None
    return dest


def upload(local_dir: str | Path, names: list[str], location: str) -> str:
    """Copy the files `names` (relative paths) of `local_dir` to the directory `location`."""
    import pyarrow.fs as pafs

    fs, path = filesystem(location)
    for name in names:
        dest = f"{path.rstrip('/')}/{name}"
        if fs.type_name == "local":
            fs.create_dir(dest.rsplit("/", 1)[0], recursive=True)
        pafs.copy_files(
            str(Path(local_dir) / name),
            dest,
            destination_filesystem=fs,
            source_filesystem=pafs.LocalFileSystem(),
        )
    return location


def download_tree(location: str, local_dir: str | Path) -> Path:
    """Copy every file under the directory `location` into `local_dir` (a UserError if there
    is none)."""
    import pyarrow.fs as pafs

    fs, path = filesystem(location)
    if not _has_files(fs, path):
        raise UserError(f"{location} holds nothing to read")
    Path(local_dir).mkdir(parents=True, exist_ok=True)
    pafs.copy_files(
        path, str(local_dir), source_filesystem=fs, destination_filesystem=pafs.LocalFileSystem()
    )
    return Path(local_dir)


def list_dirs(location: str) -> dict[str, str]:
    """{name: location} of the folders directly under `location` (none if it does not exist)."""
    import pyarrow.fs as pafs

    fs, path = filesystem(location)
    infos = fs.get_file_info(pafs.FileSelector(path, allow_not_found=True))
    return {
        i.base_name: join(location, i.base_name) for i in infos if i.type == pafs.FileType.Directory
    }


def _has_files(fs: pafs.FileSystem, path: str) -> bool:
    import pyarrow.fs as pafs

    infos = fs.get_file_info(pafs.FileSelector(path, allow_not_found=True, recursive=True))
    return any(i.type == pafs.FileType.File for i in infos)
