"""The Train / Stop controls and the live progress panel.

The page polls the job's snapshot with ``st.fragment(run_every=...)`` while it trains, so only the
panel re-renders each second; when the job ends, one full rerun refreshes the run picker and
selects the new run.
"""

from __future__ import annotations

import plotly.graph_objects as go
import streamlit as st

from app.inputs import describe
from app.state import FAILED, FINISHED, RUNNING, STOPPED, BusyError, JobRegistry, Snapshot, format_seconds

POLL_SECONDS = 1.0


@st.cache_resource(show_spinner=False)
def registry() -> JobRegistry:
    """One job registry per server process: it outlives reruns and browser sessions."""
    return JobRegistry()


def start(fields: dict) -> str | None:
    """Build the config and start training; return an error message, or None on success."""
    from sve import experiments

    try:
        config = experiments.ExperimentConfig.from_dict(fields)
        config.check_names()
    except Exception as exc:  # noqa: BLE001 - ConfigError & co. are shown on the page
        return describe(exc)
    units = len(config.method_specs()) * len(config.seeds)
    try:
        job = registry().start(config, out_dir=None, units_total=units, run_fn=experiments.run)
    except BusyError as exc:
        return str(exc)
    st.session_state["job_id"] = job.id
    st.session_state.pop("job_seen_end", None)
    return None


def current() -> Snapshot | None:
    """This session's job, or the one training in this process (e.g. started in another tab)."""
    reg = registry()
    job = reg.get(st.session_state.get("job_id")) or reg.active()
    if job is None:
        return None
    st.session_state["job_id"] = job.id
    return job.snapshot()


def _curve_figure(snap: Snapshot) -> go.Figure:
    """Loss per step (left axis) and accuracy per epoch (right axis), one colour per method."""
    fig = go.Figure()
    for method in dict.fromkeys(p["method"] for p in snap.curve):
        points = [p for p in snap.curve if p["method"] == method]
        steps = [p for p in points if p["event"] == "step" and p["loss"] is not None]
        epochs = [p for p in points if p["acc"] is not None]
        if steps:
            fig.add_scatter(x=[p["x"] for p in steps], y=[p["loss"] for p in steps], mode="lines+markers",
                            name=f"{method} loss")
        if epochs:
            fig.add_scatter(x=[p["x"] for p in epochs], y=[p["acc"] for p in epochs], yaxis="y2",
                            mode="lines+markers", name=f"{method} val accuracy")
    fig.update_layout(height=260, margin=dict(l=10, r=10, t=30, b=10), title="Training curve",
                      xaxis_title="step", yaxis_title="loss",
                      yaxis2=dict(title="accuracy", overlaying="y", side="right", range=[0, 1], dtick=0.25),
                      legend=dict(orientation="h", y=-0.3))
    return fig


def progress_text(snap: Snapshot) -> str:
    parts = [snap.phase]
    if snap.units_total > 1:
        parts.append(f"run {min(snap.units_done + 1, snap.units_total)}/{snap.units_total}")
    if snap.epoch is not None:
        parts.append(f"epoch {snap.epoch}" + (f"/{snap.epochs}" if snap.epochs else ""))
    if snap.step:
        parts.append(f"step {snap.step}" + (f"/{snap.steps}" if snap.steps else ""))
    parts.append(f"elapsed {format_seconds(snap.elapsed)}")
    parts.append(f"remaining ~{format_seconds(snap.remaining)}")
    return " · ".join(parts)


def _panel() -> None:
    snap = current()
    if snap is None:
        return
    if snap.status == RUNNING:
        st.progress(snap.fraction, text=progress_text(snap))
        if st.button("Stop", key="stop", help="ends after the current step; finished methods are kept"):
            registry().get(snap.id).request_stop()
            st.toast("Stopping after the current step…")
    elif snap.status == FINISHED:
        st.success(f"Training finished in {format_seconds(snap.elapsed)}.")
    elif snap.status == STOPPED:
        st.warning(f"Training stopped after {format_seconds(snap.elapsed)}; what finished is kept.")
    elif snap.status == FAILED:
        st.error(f"Training failed: {snap.error}")
    if snap.curve:
        try:
            st.plotly_chart(_curve_figure(snap), key="live_curve")
        except Exception as exc:  # noqa: BLE001 - the curve is a nicety; polling must go on
            st.caption(f"(live curve unavailable: {describe(exc)})")
    if snap.status != RUNNING and not st.session_state.get("job_seen_end"):
        st.session_state["job_seen_end"] = True
        if snap.run_path:
            st.session_state["pick_a"] = str(snap.run_path)
        st.rerun(scope="app")   # refresh the run picker with the new run


def panel() -> None:
    """The live panel; polls while a job trains in this process."""
    snap = current()
    running = snap is not None and snap.status == RUNNING
    st.fragment(_panel, run_every=POLL_SECONDS if running else None)()


def controls(fields: dict, errors: list[str]) -> None:
    """The Train button (disabled while a job trains or the settings have problems)."""
    for problem in errors:
        st.error(problem)
    busy = registry().active() is not None
    if st.button("Train", key="train", type="primary", disabled=busy or bool(errors),
                 help="trains every chosen method in the background; the page stays usable"):
        problem = start(fields)
        if problem:
            st.error(problem)
        else:
            st.rerun()
