"""SVE dashboard: ``streamlit run app/main.py`` (or ``make app``).

Train a few ensemble members in the background, then look at reliability, σ-spectrum diversity, OOD
uncertainty, members and cost, and export every figure. The page holds no ML: it calls ``sve.experiments``
(training, run folders), ``sve.metrics`` and ``sve.plots``.
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

from app import sidebar, tabs, training  # noqa: E402
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
        tabs.render(runs)


main()
