"""Where `sve` keeps caches and runs.

- cache: ``$SVE_CACHE`` if set, else ``<project>/data/cache`` when running from a source checkout
  (the folder holding ``pyproject.toml``), else ``~/.cache/sve``.
- runs: ``$SVE_RUNS`` if set, else ``<project>/runs`` in a checkout, else ``./runs``.
"""

from __future__ import annotations

import os
from pathlib import Path

_PKG = Path(__file__).resolve().parent


def project_root() -> Path | None:
    """The source checkout this package runs from, or None when installed normally."""
    root = _PKG.parent
    return root if (root / "pyproject.toml").is_file() and (root / "sve").is_dir() else None


def cache_dir(*parts: str) -> Path:
    """A (created) folder under the cache root, e.g. ``cache_dir("backbones")``."""
    env = os.environ.get("SVE_CACHE")
    root = Path(env) if env else (
        project_root() / "data" / "cache" if project_root() else Path.home() / ".cache" / "sve"
    )
    path = root.joinpath(*parts)
    path.mkdir(parents=True, exist_ok=True)
    return path


def runs_dir() -> Path:
    """The default folder that holds run folders (not created here)."""
    env = os.environ.get("SVE_RUNS")
    if env:
        return Path(env)
    root = project_root()
    return root / "runs" if root else Path.cwd() / "runs"
