"""The on-disk store of runs: atomic files, run folders, the owner lock, status, listing.

Layout of ``runs/<id>/``::

    config.yaml  env.json  backbone.json  metrics.csv  status.json
    <label>/seed<k>/  logits.npz  metrics.json  history.json  spectra.npz  adapter.safetensors
                      cost.json  done.json

- Every file is written to a temporary name in the same folder and renamed (``os.replace``), so a
  crash never leaves a half-written file under its final name. A method/seed is complete only
  when its ``done.json`` exists; on resume, complete pairs are skipped and anything else in their
  folder is discarded and retrained.
- A run folder is owned by one process at a time through an advisory ``flock`` on ``.lock``; the
  kernel releases it when the process dies (even by SIGKILL), which is how a killed run is told
  apart from a live one. New folders are created with ``exist_ok=False`` under a unique id
  ``<YYYYmmdd-HHMMSS>-<name>-<6 hex>``, so two runs started at once never share a folder.
- ``format_version`` is stored in ``config.yaml`` and ``status.json``; a folder from another
  version is refused with :class:`RunFormatError` instead of failing later.
"""
from __future__ import annotations

import contextlib
import dataclasses
import io
import json
import os
import re
import secrets
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from sve.errors import SVEError

FORMAT_VERSION = 1


class RunFormatError(SVEError, ValueError):
    """A folder is not a run folder of this version of `sve` (missing files or another format)."""


def atomic_write(path: str | os.PathLike, data: bytes | str | Callable[[io.BufferedWriter], Any]) -> Path:
    """Write ``data`` (bytes, text, or a function that writes into a binary file) to ``path``
    through a temporary file in the same folder + ``fsync`` + ``os.replace``: readers see either the
    old file or the complete new one."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    while True:  # like tempfile.mkstemp, but with the usual permissions (0o666 minus the umask)
        tmp = path.parent / f".{path.name}.{secrets.token_hex(4)}.tmp"
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o666)
            break
        except FileExistsError:
            continue
    try:
        with os.fdopen(fd, "wb") as f:
            if callable(data):
                data(f)
            else:
                f.write(data.encode("utf-8") if isinstance(data, str) else data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    return path


def write_json(path: str | os.PathLike, obj: Any) -> Path:
    return atomic_write(path, json.dumps(jsonable(obj), indent=2, allow_nan=True))


def read_json(path: str | os.PathLike) -> Any:
    return json.loads(Path(path).read_text(encoding="utf-8"))


def write_npz(path: str | os.PathLike, arrays: dict[str, Any]) -> Path:
    """Atomically save a dict of arrays (tensors converted) as an uncompressed ``.npz``."""
    import numpy as np

    arrays = {k: np.asarray(v.detach().cpu() if hasattr(v, "detach") else v) for k, v in arrays.items()}
    return atomic_write(path, lambda f: np.savez(f, **arrays))


def jsonable(obj: Any) -> Any:
    """Convert numpy/torch scalars and arrays, paths and tuples for ``json.dumps``."""
    if isinstance(obj, dict):
        return {str(k): jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [jsonable(v) for v in obj]
    if isinstance(obj, Path):
        return str(obj)
    if hasattr(obj, "tolist"):  # numpy / torch
        return obj.tolist()
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return jsonable(dataclasses.asdict(obj))
    return obj


def slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", text).strip("-.")[:40] or "run"


def new_run_dir(root: str | os.PathLike, name: str) -> Path:
    """Create ``root/<YYYYmmdd-HHMMSS>-<name>-<6 hex>`` with ``exist_ok=False`` (retrying on the
    astronomically unlikely collision): a folder no other process can also have created."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    for _ in range(100):
        path = root / f"{time.strftime('%Y%m%d-%H%M%S')}-{slug(name)}-{secrets.token_hex(3)}"
        try:
            path.mkdir(exist_ok=False)
            return path
        except FileExistsError:
            continue
    raise SVEError(f"could not create a new run folder under {str(root)!r}")


class RunLock:
    """Exclusive ownership of a run folder: a non-blocking ``flock`` on ``<run>/.lock``.

    The kernel drops the lock when its holder exits or is killed, so a held lock means a live run.
    ``acquire()`` returns False when another process (or another open of the file) holds it.
    On systems without ``fcntl`` it falls back to an ``O_EXCL`` marker file.
    """

    def __init__(self, run_dir: str | os.PathLike) -> None:
        self.path = Path(run_dir) / ".lock"
        self._fd: int | None = None

    def acquire(self) -> bool:
        try:
            import fcntl
        except ImportError:  # pragma: no cover - Windows
            try:
                self._fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
                return True
            except FileExistsError:
                return False
        fd = os.open(self.path, os.O_CREAT | os.O_RDWR, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            return False
        os.ftruncate(fd, 0)
        os.write(fd, str(os.getpid()).encode())
        self._fd = fd
        return True

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing drops the flock
            self._fd = None

    def held_elsewhere(self) -> bool:
        """True while another process owns the folder (probes and releases at once)."""
        if not self.path.exists():
            return False
        probe = RunLock(self.path.parent)
        if probe.acquire():
            probe.release()
            return False
        return True


def check_format(run_dir: Path) -> None:
    """Raise :class:`RunFormatError` unless ``run_dir`` is a run folder of this format version."""
    config = run_dir / "config.yaml"
    if not config.is_file():
        raise RunFormatError(f"{str(run_dir)!r} is not a run folder (no config.yaml): pass a folder "
                             "made by sve.experiments.run / `python -m sve run`, see `python -m sve list`")
    import yaml

    try:
        version = (yaml.safe_load(config.read_text(encoding="utf-8")) or {}).get("format_version")
    except Exception as err:
        raise RunFormatError(f"{str(config)!r} is unreadable ({err})") from None
    if version != FORMAT_VERSION:
        raise RunFormatError(
            f"run folder {str(run_dir)!r} has format_version {version!r}, but this sve "
            f"reads format_version {FORMAT_VERSION}: re-run its config with this version "
            "(`python -m sve run <run>/config.yaml`) or open it with the sve release that wrote it")


def read_status(run_dir: str | os.PathLike) -> dict:
    """``status.json`` of a run, with ``state`` reported as ``"interrupted"`` when the file says
    running but no live process owns the folder (the run was killed)."""
    run_dir = Path(run_dir)
    try:
        status = read_json(run_dir / "status.json")
    except (FileNotFoundError, ValueError):
        status = {"state": "unknown"}
    if status.get("state") == "running" and not RunLock(run_dir).held_elsewhere():
        status["state"] = "interrupted"
    return status




