"""The Train / Stop controls and the live progress panel.

The page polls the job's snapshot with ``st.fragment(run_every=...)`` while it trains, so only the
panel re-renders each second; when a method finishes (and when the job ends) one full rerun refreshes
the run picker and selects the run, so a finished method's results open while the others still train.
The curve shows each method's validation accuracy per epoch and, for ensembles, each member's.
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
    st.session_state["job_units_seen"] = 0
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
    """Left: training loss per step. Right: validation accuracy per epoch, one colour per method (thick:
    the method's combined prediction; thin dotted: each member of an ensemble on its own)."""
    from plotly.subplots import make_subplots

    from sve.plots import PALETTE

    fig = make_subplots(rows=1, cols=2, horizontal_spacing=0.1,
                        subplot_titles=("training loss per step",
                                        "validation accuracy per epoch (dotted: each member)"))
    for i, method in enumerate(dict.fromkeys(p["method"] for p in snap.curve)):
        color = PALETTE[i % len(PALETTE)]
        points = [p for p in snap.curve if p["method"] == method]
        steps = [p for p in points if p["event"] == "step" and p["loss"] is not None]
        epochs = [p for p in points if p["event"] == "epoch" and p["acc"] is not None]
        if steps:
            fig.add_scatter(x=[p["x"] for p in steps], y=[p["loss"] for p in steps], mode="lines",
                            name=method, legendgroup=method, line=dict(color=color), row=1, col=1)
        if epochs:
            x = [p.get("epoch", k + 1) for k, p in enumerate(epochs)]
            fig.add_scatter(x=x, y=[p["acc"] for p in epochs], mode="lines+markers", name=method,
                            legendgroup=method, showlegend=not steps, line=dict(color=color, width=3),
                            row=1, col=2)
            for m in range(max(len(p.get("members") or []) for p in epochs)):
                fig.add_scatter(x=x, y=[(p.get("members") or [None] * (m + 1))[m] for p in epochs],
                                mode="lines+markers", name=f"{method} member {m}", legendgroup=method,
                                showlegend=False, line=dict(color=color, width=1, dash="dot"),
                                marker=dict(size=4), opacity=0.7, row=1, col=2)
    fig.update_xaxes(title_text="step", row=1, col=1)
    fig.update_xaxes(title_text="epoch", dtick=1, row=1, col=2)
    fig.update_yaxes(title_text="loss", row=1, col=1)
    fig.update_yaxes(title_text="accuracy", range=[0, 1.02], row=1, col=2)
    fig.update_layout(height=300, margin=dict(l=10, r=10, t=50, b=10), title="Training curve",
                      legend=dict(orientation="h", y=-0.25))
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
    seen = st.session_state.get("job_units_seen", 0)
    if snap.status == RUNNING and snap.run_path and snap.units_done > seen:
        st.session_state["job_units_seen"] = snap.units_done   # a method finished: its tabs can open now
        st.session_state["pick_a"] = str(snap.run_path)
        st.rerun(scope="app")
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
