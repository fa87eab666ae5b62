"""SVE dashboard: ``streamlit run app/main.py`` (or ``make app``).

Train a few methods in the background (the Quick demo: SVE and the single model on the same data);
the page opens on their comparison (reliability diagrams, the ECE / NLL / accuracy table, the OOD
ROC), with the detailed tabs (reliability, σ-spectrum diversity, OOD uncertainty, members, cost) and
a Predict tab (one input through every member) beside it; every figure can be exported. The page holds
no ML: it calls ``sve.experiments`` (training, run folders, the predictor), ``sve.metrics`` and
``sve.plots``.
"""

from __future__ import annotations

import sys
from pathlib import Path

_ROOT = Path(__file__).resolve().parents[1]
if str(_ROOT) not in sys.path:          # `streamlit run app/main.py` puts only app/ on the path
    sys.path.insert(0, str(_ROOT))

# Import in the page thread what both threads use, before any training starts: a module that the
# worker thread imports first is visible half-initialised to the page thread for a moment
# (seen: plotly's pandas check failing with "partially initialized module 'pandas'").
import numpy  # noqa: E402, F401
import pandas  # noqa: E402, F401
import plotly.graph_objects  # noqa: E402, F401
import streamlit as st  # noqa: E402
from PIL import Image  # noqa: E402, F401

from app import compare, predict, sidebar, tabs, training  # noqa: E402
from app.runpicker import pick_runs  # noqa: E402


def main() -> None:
    st.set_page_config(page_title="SVE dashboard", page_icon="📊", layout="wide")
    st.title("Singular Value Ensembles")
    st.caption("Each member trains only its own singular values of the frozen pretrained weights "
               "(plus bias and head): calibrated uncertainty for about 1 % extra parameters.")
    with st.sidebar:
        fields, errors = sidebar.render()
    training.controls(fields, errors)
    training.panel()
    st.divider()
    runs = pick_runs()
    if runs:
        views(runs)


VIEWS = ("Comparison", "Details", "Predict")


def views(runs: list) -> None:
    """The comparison of the run's methods (opened first), the detailed tabs, and Predict; only the
    open one is computed."""
    for view, container in zip(VIEWS, st.tabs(list(VIEWS), key="view", on_change="rerun")):
        if container.open is False:
            continue
        with container:
            if view == "Details":
                tabs.render(runs)
                continue
            cols = st.columns(len(runs)) if len(runs) > 1 else [st.container()]
            for col, run, slot in zip(cols, runs, "ab"):
                with col:
                    (compare.render if view == "Comparison" else predict.render)(run, slot)


main()
