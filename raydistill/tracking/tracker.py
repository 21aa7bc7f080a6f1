"""Weights & Biases tracking: the tracker (one W&B run per trial) and the null tracker.

This module and `raydistill.tracking.summary` are the only ones that import `wandb`, and only
inside functions, so importing it costs
nothing. Training code receives a tracker from `make_tracker` and calls `log` / `finish`
without ever asking whether logging is on (`NullTracker` does nothing).

Runs:
- one W&B run per trial, with a deterministic id hashed from (experiment, cell, trial), so a
  resumed or retried trial continues its own run (`resume="allow"`). group = experiment,
  job type = cell, tags = family / depth / budget; the epoch is the step metric of every chart.
- offline runs land in `<root>/wandb/offline-run-<time>-<id>-a<k>/` (k counts the attempts of
  one trial, so a retry within the same second never overwrites the first attempt). `wandb sync
  <root>/wandb/offline-run-*` uploads them; attempts of one trial share the id and are merged.
- `iter_records`: the framing of a run's `.wandb` transaction log, used only to wait for the
  run's exit record (`run.finish()` returns before wandb-core writes it). The summary run of a
  search is `raydistill.tracking.summary`; reading runs back is a test helper (`tests/wandb_log.py`).

Secrets: config and summary keys that look like credentials are replaced by "<redacted>", and
any string equal to the configured API key is too, before anything reaches W&B.
"""

from __future__ import annotations

import hashlib
import os
import queue
import re
import struct
import threading
import warnings
import zlib
from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

from raydistill.core.errors import UserError
from raydistill.core.numbers import scalar
from raydistill.core.vocab import STATUSES
from raydistill.core.vocab import WANDB_MODES as MODES

DEFAULT_PROJECT = "raydistill"
REDACTED = "<redacted>"
_SECRET_KEY = re.compile(r"key|token|secret|passw|credential|auth", re.IGNORECASE)
_ONLINE_INIT_TIMEOUT_S = 30.0  # then fall back to an offline run instead of hanging a trial
_OK_STATUSES = tuple(s for s in STATUSES if s != "error")  # W&B exit code 0


# ---------------------------------------------------------------- mode and secrets
def has_api_key(host: str | None = None) -> bool:
    """Whether a W&B API key is configured (env var or a netrc entry), without any network."""
    if os.environ.get("WANDB_API_KEY") or os.environ.get("WANDB_IDENTITY_TOKEN_FILE"):
        return True
    host = host or os.environ.get("WANDB_BASE_URL") or "https://api.wandb.ai"
    try:
        read_netrc_auth = wandb_internals().read_netrc_auth
        return bool(read_netrc_auth(host=host))
    except ImportError:  # an older or newer wandb: read the netrc file ourselves
        return _stdlib_netrc_has(host)
    except Exception:  # a malformed netrc entry: no usable key
        return False


# ---------------------------------------------------------------- W&B's private internals
# The settings keys `_settings` passes (not public API: x_ fields may change in any release).
PRIVATE_SETTINGS = ("x_save_requirements", "x_sync_dir_suffix", "x_transaction_log_flush_interval")


def wandb_internals() -> Any:
    """Every private W&B name tracking relies on, in one place (their test fails when a
    wandb release changes them): the netrc reader, the transaction log's protobuf `Record`,
    and the private settings keys (`PRIVATE_SETTINGS`). ImportError / AttributeError when
    this wandb lacks one."""
    from types import SimpleNamespace

    import wandb
    from wandb.proto import wandb_internal_pb2
    from wandb.sdk.lib.wbauth import read_netrc_auth

    fields = getattr(wandb.Settings, "model_fields", {})
    missing = [k for k in PRIVATE_SETTINGS if k not in fields]
    if missing:
        raise AttributeError(f"wandb {wandb.__version__} has no Settings.{missing[0]}")
    return SimpleNamespace(read_netrc_auth=read_netrc_auth, Record=wandb_internal_pb2.Record)


def _stdlib_netrc_has(host: str) -> bool:
    import netrc
    from urllib.parse import urlsplit

    path = os.environ.get("NETRC") or os.path.expanduser("~/.netrc")
    try:
        auth = netrc.netrc(path).authenticators(urlsplit(host).netloc or host)
    except (OSError, netrc.NetrcParseError):
        return False
    return bool(auth and auth[2])


def resolve_mode(requested: str | None) -> str:
    """ "online" | "offline" | "off": an explicit request, else WANDB_MODE, else online iff a key."""
    if requested is not None:
        mode = {"disabled": "off", "dryrun": "offline"}.get(requested, requested)
        if mode not in MODES:
            raise UserError(f"W&B mode {requested!r} is invalid; valid: {', '.join(MODES)}")
        return mode
    env = os.environ.get("WANDB_MODE", "").strip().lower()
    if env in ("offline", "dryrun"):
        return "offline"
    if env == "disabled":
        return "off"
    if env in ("online", "run"):
        return "online"
    return "online" if has_api_key() else "offline"


def scrub(value: Any, *, secrets: tuple[str, ...] | None = None) -> Any:
    """A copy of a config/summary with credential-like keys and known secret values redacted."""
    if secrets is None:
        secrets = tuple(s for s in (os.environ.get("WANDB_API_KEY"),) if s)
    if isinstance(value, Mapping):
        return {
            str(k): REDACTED if _SECRET_KEY.search(str(k)) else scrub(v, secrets=secrets)
            for k, v in value.items()
        }
    if isinstance(value, (list, tuple)):
        return [scrub(v, secrets=secrets) for v in value]
    if isinstance(value, str) and any(s and s in value for s in secrets):
        return REDACTED
    return value


# ---------------------------------------------------------------- ids, tags
_CELL_RE = re.compile(r"^(?P<family>[A-Za-z0-9_]+)-d(?P<depth>\d+)@(?P<budget>.+)$")


def run_id(experiment: str, cell: str, trial_id: str) -> str:
    """Deterministic W&B run id (24 hex digits) of one trial: the same on every retry."""
    key = "\x1f".join((str(experiment), str(cell), str(trial_id)))
    return hashlib.sha256(key.encode()).hexdigest()[:24]


def cell_tags(cell: str) -> list[str]:
    """['cnn', 'd2', '1M'] for 'cnn-d2@1M' (family, depth, budget); [] for other names."""
    m = _CELL_RE.match(cell)
    return [m["family"], f"d{m['depth']}", m["budget"]] if m else []


def _attempt_suffix(wandb_dir: Path, rid: str, earlier: Iterable[str] = ()) -> str:
    # One directory per attempt: wandb names it by the start second, so two attempts in the
    # same second would share (and truncate) one transaction log without a suffix. `earlier`:
    # the run folders of attempts made elsewhere (a trial's earlier nodes, in its storage).
    here = {p.name for p in wandb_dir.glob(f"*run-*-{rid}-a*")} if wandb_dir.is_dir() else set()
    n = len(here | {e for e in earlier if re.search(rf"run-.*-{re.escape(rid)}-a\d+$", e)})
    return f"a{n}"


def _settings(wandb: Any, mode: str, suffix: str) -> Any:
    # Measured on 2 CPU cores: x_save_requirements costs ~60 ms per init (a pip freeze);
    # console capture would wrap the trial's stdout. System stats are sampled by wandb-core in
    # its own process and cost the trial nothing, so they stay on. The run log is flushed every
    # second (wandb's default, 15 s, loses a killed attempt's epochs: seen in the fault drills).
    return wandb.Settings(
        console="off",
        save_code=False,
        x_save_requirements=False,
        silent=True,
        init_timeout=_ONLINE_INIT_TIMEOUT_S,
        x_sync_dir_suffix=suffix,
        x_transaction_log_flush_interval=1.0,
    )


# ---------------------------------------------------------------- trackers
class NullTracker:
    """Does nothing; what training code gets when tracking is off."""

    mode = "off"
    run_id: str | None = None
    run_dir: Path | None = None

    def log(self, metrics: Mapping[str, Any], step: int) -> None:
        """Nothing."""

    def finish(self, summary: Mapping[str, Any] | None = None, status: str = "finished") -> None:
        """Nothing."""


class Tracker:
    """One W&B run (a trial): numeric metrics per epoch, a summary and a status at the end.

    W&B starts on a background thread (import, service start and init: ~1 s in a fresh
    process on 2 cores), so the trial trains meanwhile; `log` only queues a row, and `finish`
    waits until every row, the summary and the exit record are written. A W&B failure is a
    warning, never a failed trial.
    """

    def __init__(self, start: Callable[[], Any], mode: str, rid: str) -> None:
        self.mode = mode
        self.run_id = rid
        self._run: Any = None
        self._ready = threading.Event()
        self._queue: queue.SimpleQueue[tuple[str, Any] | None] = queue.SimpleQueue()
        self._finished = False
        self._thread = threading.Thread(
            target=self._work, args=(start,), name=f"wandb-{rid}", daemon=True
        )
        self._thread.start()

    @property
    def run(self) -> Any:
        """The `wandb` Run (waits for the background init; None if it failed)."""
        self._ready.wait()
        return self._run

    @property
    def run_dir(self) -> Path | None:
        """This attempt's local run directory (`<root>/wandb/offline-run-...`)."""
        run = self.run
        return Path(run.settings.sync_dir) if run is not None else None

    def log(self, metrics: Mapping[str, Any], step: int) -> None:
        """Queue the numeric entries of `metrics` as epoch `step` (1-based finished epochs)."""
        row = {k: n for k, v in metrics.items() if (n := scalar(v)) is not None}
        row["epoch"] = int(step)
        self._queue.put(("log", row))

    def finish(self, summary: Mapping[str, Any] | None = None, status: str = "finished") -> None:
        """Write the summary (plus `status`) and close the run (exit code 1 for errors); blocks."""
        if self._finished:
            return
        self._finished = True
        self._queue.put(("finish", ({**scrub(dict(summary or {})), "status": status}, status)))
        self._thread.join()

    def _work(self, start: Callable[[], Any]) -> None:
        try:
            self._run = start()
            self.mode = str(self._run.settings.mode)  # "offline" after an online fallback
        except Exception as exc:
            warnings.warn(f"W&B run {self.run_id} could not start: {exc}", stacklevel=1)
        finally:
            self._ready.set()
        while (item := self._queue.get()) is not None:
            if self._run is None:
                if item[0] == "finish":
                    return
                continue
            try:
                if item[0] == "log":
                    self._run.log(item[1])
                    continue
                summary, status = item[1]
                self._run.summary.update(summary)
                self._run.finish(exit_code=0 if status in _OK_STATUSES else 1)
                _wait_for_exit_record(Path(self._run.settings.sync_file))
                return
            except Exception as exc:
                warnings.warn(f"W&B {item[0]} failed for run {self.run_id}: {exc}", stacklevel=1)
                if item[0] == "finish":
                    return


def _wait_for_exit_record(path: Path, timeout_s: float = 5.0) -> None:
    """Block until wandb-core has written the run's exit record (measured: 0-3 ms after finish).

    `run.finish()` returns before wandb-core flushes the transaction log; a trial process that
    exits (or a reader that looks) right away would find the run incomplete.
    """
    import time

    deadline = time.monotonic() + timeout_s
    while path.is_file() and time.monotonic() < deadline:
        try:
            if any(r.WhichOneof("record_type") == "exit" for r in iter_records(path)):
                return
        except UserError:  # a record half written: look again
            pass
        time.sleep(0.005)


def make_tracker(
    mode: str | None,
    *,
    root: str | Path,
    experiment: str,
    cell: str,
    trial_id: str,
    config: Mapping[str, Any],
    tags: list[str] | tuple[str, ...] = (),
    group: str | None = None,
    job_type: str | None = None,
    project: str | None = None,
    context: Mapping[str, Any] | None = None,
    earlier: Iterable[str] = (),
) -> Tracker | NullTracker:
    """The tracker of one trial: a W&B run under `root/wandb/`, or a NullTracker for mode "off".

    `config` holds the sampled values, the solved widths and the parameter count; keys that
    look like credentials are redacted. Online init failures fall back to an offline run.
    `context` (`raydistill.tracking.context.run_context`): the dataset, split settings and
    transfer set join the config, and set the group and tags (by experiment and dataset).
    `earlier`: names of this run's attempt folders made on other nodes (numbering the attempt).
    """
    mode = resolve_mode(mode)
    if mode == "off":
        return NullTracker()
    if context is not None:
        from raydistill.tracking.context import config_of, group_of, tags_of

        config = {**config, **config_of(context)}  # the context names the dataset
        group, tags = group or group_of(context), [*tags_of(context), *tags]
    root = Path(root).resolve()
    try:
        (root / "wandb").mkdir(parents=True, exist_ok=True)
    except OSError as exc:  # a node where the folder cannot be made: a warning, not a failed trial
        warnings.warn(
            f"W&B run of {cell}/{trial_id} not logged: {root / 'wandb'}: {exc}", stacklevel=2
        )
        return NullTracker()
    rid = run_id(experiment, cell, trial_id)
    kwargs = {
        "project": project or os.environ.get("WANDB_PROJECT") or DEFAULT_PROJECT,
        "dir": str(root),
        "id": rid,
        "name": f"{cell}/{trial_id}",
        "resume": "allow",
        "group": group or experiment,
        "job_type": job_type or cell,
        "tags": list(dict.fromkeys([*cell_tags(cell), *map(str, tags)]))[:20],
        "config": scrub(dict(config)),
        "reinit": "create_new",
    }
    suffix = _attempt_suffix(root / "wandb", rid, earlier)
    return Tracker(lambda: _init(mode, kwargs, root, suffix), mode, rid)


def _init(mode: str, kwargs: dict[str, Any], root: Path, suffix: str) -> Any:
    import wandb

    try:
        run = wandb.init(mode=mode, settings=_settings(wandb, mode, suffix), **kwargs)
    except Exception as exc:
        if mode != "online":
            raise
        warnings.warn(
            f"W&B online init failed ({exc}); logging this run offline under {root}/wandb",
            stacklevel=3,
        )
        mode = "offline"
        run = wandb.init(mode=mode, settings=_settings(wandb, mode, suffix), **kwargs)
    # Every metric is charted against the epoch (a resumed attempt continues the same axis,
    # and W&B's own _step restarts with each offline attempt).
    run.define_metric("epoch")
    run.define_metric("*", step_metric="epoch")
    return run


# ---------------------------------------------------------------- the transaction log
_LOG_BLOCK = 32768  # the transaction log is a LevelDB-style log of 32 KiB blocks
_FULL, _FIRST, _MIDDLE, _LAST = 1, 2, 3, 4


def iter_records(path: str | Path) -> Iterator[Any]:
    """The protobuf `Record`s of a `.wandb` transaction log, CRC-checked."""
    record = wandb_internals().Record
    data = Path(path).read_bytes()
    ident, magic, _version = struct.unpack("<4sHB", data[:7])
    if ident != b":W&B" or magic != 0xBEE1:
        raise UserError(f"{path} is not a W&B transaction log (header {data[:7]!r})")
    for payload in _log_payloads(data, 7, path):
        rec = record()
        rec.ParseFromString(payload)
        yield rec


def _log_payloads(data: bytes, pos: int, path: str | Path) -> Iterator[bytes]:
    pending = b""
    while pos + 7 <= len(data):
        left = _LOG_BLOCK - pos % _LOG_BLOCK
        if left < 7:  # block trailer: padding
            pos += left
            continue
        crc, n, kind = struct.unpack("<IHB", data[pos : pos + 7])
        if kind == 0:  # zero padding to the end of the block (or of a file being written)
            pos += left
            continue
        if pos + 7 + n > len(data):  # the tail of a log still being written
            return
        chunk = data[pos + 7 : pos + 7 + n]
        if zlib.crc32(chunk, zlib.crc32(bytes([kind]))) != crc:
            raise UserError(f"{path}: corrupt record at byte {pos}")
        pos += 7 + n
        if kind == _FULL:
            yield chunk
        elif kind == _FIRST:
            pending = chunk
        elif kind == _MIDDLE:
            pending += chunk
        elif kind == _LAST:
            yield pending + chunk
            pending = b""
