"""The run picker: every run folder under the runs root (app, CLI and notebook runs alike).

Runs are found with ``sve.experiments.list_runs`` and opened with ``sve.experiments.load_run``; an
opened run is cached per (path, status stamp), so a run that is still training is re-read when a
method finishes.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import streamlit as st

from app.inputs import describe

NONE = "(none)"


def _stamp(path: Path) -> tuple:
    """Changes whenever the run writes its status or finishes a method/seed."""
    files = [path / "status.json", path / "metrics.csv"]
    return tuple(f.stat().st_mtime_ns if f.exists() else 0 for f in files)


@st.cache_resource(max_entries=8, show_spinner="Opening run…")
def _open(path: str, stamp: tuple) -> Any:
    from sve import experiments

    return experiments.load_run(path)


def open_run(path: str | Path) -> Any:
    """``sve.experiments.load_run(path)``, cached until the run folder changes."""
    return _open(str(path), _stamp(Path(path)))


def label(item: dict) -> str:
    total = item.get("total")
    done = f"{item.get('done', 0)}/{total}" if total else str(item.get("done", 0))
    return f"{item['id']} · {item.get('state')} · {done} done"


def pick_runs() -> list[Any]:
    """Draw the picker (a run, and optionally one to compare with); return the opened runs."""
    from sve import experiments
    from sve.paths import runs_dir

    root = runs_dir()
    items = experiments.list_runs(root)
    if not items:
        st.info(f"No runs yet in `{root}`. Press **Train** to train the chosen preset, or make a run "
                "with `python -m sve run configs/quick-demo.yaml`; it shows up here.")
        return []
    by_path = {str(it["path"]): it for it in items}
    options = list(by_path)
    ss = st.session_state
    if ss.get("pick_a") not in options:
        ss["pick_a"] = options[0]
    if ss.get("pick_b") not in [NONE, *options]:
        ss["pick_b"] = NONE
    left, right = st.columns(2)
    a = left.selectbox("Run", options, key="pick_a", format_func=lambda p: label(by_path[p]),
                       help=f"run folders in {root}, newest first")
    b = right.selectbox("Compare with", [NONE, *options], key="pick_b",
                        format_func=lambda p: p if p == NONE else label(by_path[p]))
    opened = []
    for path in [a] + ([b] if b != NONE and b != a else []):
        item = by_path[path]
        if item.get("state") == "incompatible":
            st.error(f"{item['id']}: {item.get('error')}")
            continue
        if not item.get("done"):
            st.info(f"{item['id']}: no method has finished yet ({item.get('state')}).")
            continue
        try:
            opened.append(open_run(path))
        except Exception as exc:  # noqa: BLE001 - a broken folder must not break the page
            st.error(f"Cannot open {item['id']}: {describe(exc)}")
    return opened
