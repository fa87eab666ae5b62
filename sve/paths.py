"""Where `sve` keeps caches and runs.

- cache: ``$SVE_CACHE`` if set, else ``<project>/data/cache`` when running from a source checkout
  (the folder holding ``pyproject.toml``), else ``~/.cache/sve``.
- runs: ``$SVE_RUNS`` if set, else ``<project>/runs`` in a checkout, else ``./runs``.
"""

from __future__ import annotations

import importlib.util
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


def installed_package_dir(module: str) -> Path | None:
    """Folder of an installed package, found without importing it (some asset packages import cv2,
    tensorflow or llama-cpp); None when it is not installed.

    Looked up twice before it counts as missing: another thread that edits ``sys.path`` while the
    lookup walks it (Streamlit inserts and removes its script folder on every rerun, while the app's
    training thread loads a backbone or a dataset) can make one walk skip an entry."""
    spec = importlib.util.find_spec(module)
    if spec is None:
        importlib.invalidate_caches()
        spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(list(spec.submodule_search_locations)[0])
