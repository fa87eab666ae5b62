"""The Predict tab: one input through a finished run's method, member by member.

Pick a method of the run, then an input: a test or OOD sample of the run (browse by index, or the
most uncertain / most confident / misclassified ones), an uploaded image (image runs) or a typed
text (text runs). The page shows each member's class probabilities (small multiples) and the
ensemble's, the input's predictive entropy, mutual information and member disagreement, and where
its score falls on the run's own ID (test) and OOD score histograms, with the threshold at 95 % TPR.

All ML is in ``sve.experiments.predictor``: one :class:`~sve.experiments.predictor.Predictor` per
run folder, cached by ``st.cache_resource`` (the backbone and each adapter are loaded once).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import plotly.graph_objects as go
import streamlit as st

from app.inputs import IMAGE_SUFFIXES, describe

SAMPLE_SOURCES = ("Test sample", "OOD sample")
UPLOAD, TYPE = "Upload an image", "Type a text"
PICK_LABELS = {"browse": "browse", "most_uncertain": "most uncertain", "most_confident": "most confident",
               "misclassified": "misclassified"}
#: scores placed on the run's histograms (sve.metrics names → labels); higher = more uncertain
SCORES = {"mutual_info": "mutual information", "entropy": "predictive entropy",
          "disagreement": "member disagreement", "msp": "1 − max probability", "energy": "energy"}
PICK_COUNT = 12
MAX_COLS = 5


@st.cache_resource(max_entries=4, show_spinner="Opening the run for prediction…")
def predictor(path: str) -> Any:
    """The run's ``Predictor`` (its backbone and adapters load on first use, then stay)."""
    from sve.experiments.predictor import Predictor

    return Predictor(path)


def member_figure(pred: Any) -> go.Figure:
    """Small multiples: each member's class probabilities, then the ensemble's (thick outline)."""
    from plotly.subplots import make_subplots

    from sve.plots import NEUTRAL, PALETTE

    panels = [(f"member {m}", p) for m, p in enumerate(pred.member_probs)]
    if pred.members > 1:
        panels.append(("ensemble", pred.probs))
    cols = min(len(panels), MAX_COLS)
    rows = math.ceil(len(panels) / cols)
    titles = [f"{name}: {pred.classes[int(p.argmax())]} ({p.max():.2f})" for name, p in panels]
    fig = make_subplots(rows=rows, cols=cols, shared_yaxes=True, subplot_titles=titles,
                        horizontal_spacing=0.03, vertical_spacing=0.25 if rows > 1 else 0.1)
    for k, (name, p) in enumerate(panels):
        colors = [PALETTE[1] if c == pred.label else (PALETTE[0] if name != "ensemble" else PALETTE[2])
                  for c in range(len(p))]
        fig.add_bar(x=pred.classes, y=p, marker_color=colors, name=name, showlegend=False,
                    marker_line=dict(color=NEUTRAL, width=1), row=k // cols + 1, col=k % cols + 1)
    fig.update_yaxes(range=[0, 1], title_text="probability", col=1)
    fig.update_xaxes(type="category", tickangle=-45 if max(map(len, pred.classes)) > 3 else 0)
    note = " (orange: the true class)" if pred.label is not None else ""
    fig.update_layout(height=150 + 230 * rows, margin=dict(l=10, r=10, t=80, b=10),
                      title=f"{pred.method}: each member's class probabilities{note}")
    return fig


def score_figure(ctx: Any, value: float, label: str) -> go.Figure:
    """The run's ID and OOD score histograms, this input's score (solid line) and each OOD set's
    threshold at 95 % TPR (dashed)."""
    from sve.plots import PALETTE

    fig = go.Figure()
    sets = [("test (ID)", ctx.id_scores)] + [(f"{name} (OOD)", s) for name, s in ctx.ood_scores.items()]
    for i, (name, s) in enumerate(sets):
        fig.add_histogram(x=s, name=name, histnorm="probability density", opacity=0.55, nbinsx=30,
                          marker_color=PALETTE[i % len(PALETTE)])
    for i, (name, t) in enumerate(ctx.thresholds.items()):
        fig.add_vline(x=t, line=dict(color=PALETTE[(i + 1) % len(PALETTE)], dash="dash", width=2),
                      annotation_text=f"95 % TPR on {name}", annotation_position="top left")
    fig.add_vline(x=value, line=dict(color="black", width=3), annotation_text="this input",
                  annotation_position="top right")
    fig.update_layout(barmode="overlay", height=340, margin=dict(l=10, r=10, t=60, b=10),
                      title=f"Where this input's {label} falls", yaxis_title="density",
                      xaxis_title=f"{label} (higher = more uncertain)", legend=dict(orientation="h", y=-0.25))
    return fig


def _show_item(item: Any) -> None:
    if isinstance(item, str):
        st.text_area("The text", item, height=120, disabled=True, label_visibility="collapsed")
    else:
        arr = np.asarray(item)
        scale = max(1, 168 // max(arr.shape[:2]))                 # crisp pixels for small images
        st.image(np.kron(arr, np.ones((scale, scale) + (1,) * (arr.ndim - 2), dtype=arr.dtype)),
                 caption=f"{arr.shape[1]}×{arr.shape[0]} px, as the model sees it")


def _sample(p: Any, method: str, seed: int, source: str, slot: str) -> tuple[Any, int, Any] | None:
    """Widgets to choose a sample of the run; returns (split, index, item) or None."""
    ood_sets = [s for s in p.run.splits if s.startswith("ood:")]
    if source == "OOD sample":
        if not ood_sets:
            st.info("This run has no OOD set; pick a test sample, or add an OOD set and train again.")
            return None
        split = ood_sets[0] if len(ood_sets) == 1 else st.selectbox(
            "OOD set", ood_sets, key=f"pred-oodset-{slot}", format_func=lambda s: s[4:])
    else:
        split = "test"
    kinds = [k for k in PICK_LABELS if not (k == "misclassified" and split != "test")]
    kind = st.radio("Show", kinds, format_func=PICK_LABELS.get, horizontal=True, key=f"pred-kind-{slot}")
    n = len(p.sample_set(split))
    if kind == "browse":
        index = int(st.number_input(f"Sample index (0–{n - 1})", 0, n - 1, 0, key=f"pred-index-{slot}"))
    else:
        picks = [int(i) for i in p.pick(method, split, kind, k=PICK_COUNT, seed=seed)]
        if not picks:
            st.info(f"No {PICK_LABELS[kind]} sample in {split}.")
            return None
        index = st.selectbox(f"{PICK_LABELS[kind].capitalize()} (by predictive entropy)", picks,
                             key=f"pred-pick-{slot}-{kind}", format_func=lambda i: f"sample #{i}")
    item, _ = p.sample(split, index)
    return split, index, item


def _input(p: Any, method: str, seed: int, slot: str) -> Any:
    """The input widgets; returns the prediction, or None while there is nothing to predict."""
    own = UPLOAD if p.modality == "image" else TYPE
    source = st.radio("Input", [*SAMPLE_SOURCES, own], horizontal=True, key=f"pred-src-{slot}")
    if source in SAMPLE_SOURCES:
        chosen = _sample(p, method, seed, source, slot)
        if chosen is None:
            return None
        split, index, item = chosen
        _show_item(item)
        return p.predict_sample(method, split, index, seed)
    if source == UPLOAD:
        upload = st.file_uploader("An image (PNG, JPEG, …)", key=f"pred-upload-{slot}",
                                  type=sorted(s.lstrip(".") for s in IMAGE_SUFFIXES))
        if upload is None:
            st.info("Upload an image to see what each member says about it.")
            return None
        data = upload.getvalue()
        item, _ = p.image_input(data)
        _show_item(item)
        return p.predict(data, method, seed)
    text = st.text_area(f"Text (the run reads up to {p.max_length} tokens)", key=f"pred-text-{slot}",
                        height=120)
    if st.button("Predict", key=f"pred-go-{slot}"):
        st.session_state[f"pred-asked-{slot}"] = True
    if not st.session_state.get(f"pred-asked-{slot}"):
        return None
    return p.predict(text, method, seed)


def _results(p: Any, pred: Any, seed: int, slot: str) -> None:
    from app import export

    for note in pred.notes:
        st.info(f"Input: {note}.")
    verdict = ""
    if pred.label is not None:
        right = pred.predicted == pred.label
        verdict = f" · true class **{pred.classes[pred.label]}** " + ("✓" if right else "✗ misclassified")
    st.markdown(f"**{pred.method}** predicts **{pred.predicted_class}** "
                f"with probability {pred.confidence:.2f}{verdict}")
    c1, c2, c3 = st.columns(3)
    c1.metric("Predictive entropy (nats)", f"{pred.scores['entropy']:.3f}",
              help="total uncertainty of the ensemble's prediction")
    c2.metric("Mutual information (nats)", f"{pred.scores['mutual_info']:.3f}",
              help="how much the members disagree in their probabilities (0 for a single model)")
    c3.metric("Member disagreement", f"{pred.scores['disagreement']:.2f}",
              help="share of members whose top class differs from the ensemble's")
    export.show(member_figure(pred), f"{p.run.path.name}_predict_members_{pred.method}", f"pred-bars-{slot}")
    scores = [s for s in SCORES if pred.members > 1 or s not in ("mutual_info", "disagreement")]
    score = st.selectbox("Score on the histograms", scores, format_func=SCORES.get, key=f"pred-score-{slot}")
    ctx = p.score_context(pred.method, score, seed)
    value = pred.scores[score]
    export.show(score_figure(ctx, value, SCORES[score]), f"{p.run.path.name}_predict_score_{score}",
                f"pred-hist-{slot}")
    parts = [f"This input's {SCORES[score]} is {value:.3f}, higher than {ctx.percentile(value):.0f} % of the "
             "test set's."]
    for name, t in ctx.thresholds.items():
        flagged = "flagged as OOD" if ctx.flagged(value, name) else "not flagged"
        parts.append(f"At the threshold that catches 95 % of {name} ({t:.3f}) it is **{flagged}**.")
    st.markdown(" ".join(parts))


def render(run: Any, slot: str = "a") -> None:
    """The Predict tab for one run."""
    try:
        p = predictor(str(run.path))
        c1, c2 = st.columns([3, 1])
        methods = list(dict.fromkeys(m for m, _ in run.done))
        method = c1.selectbox("Method", methods, key=f"pred-method-{slot}")
        method_seeds = [s for m, s in run.done if m == method]
        seed = method_seeds[0] if len(method_seeds) == 1 else c2.selectbox("Seed", method_seeds,
                                                                            key=f"pred-seed-{slot}")
        with st.spinner("Predicting…"):
            pred = _input(p, method, seed, slot)
        if pred is not None:
            _results(p, pred, seed, slot)
    except Exception as exc:  # noqa: BLE001 - every reason becomes a message on the page
        from sve.errors import SVEError

        if not isinstance(exc, SVEError):
            import traceback

            traceback.print_exc()
        st.error(f"Cannot predict with {run.path.name}: {describe(exc)}")
