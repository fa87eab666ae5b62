"""The result tabs: Reliability, Spectrum, OOD, Members, Cost — for one run or two side by side.

Each tab function draws one run into the current container; ``slot`` ("a"/"b") keeps widget keys
apart in compare mode. Every table, score and figure comes from the results API of
``sve.experiments.results`` (``Run.rows``, ``Run.uncertainty``, ``reliability_figure``...), the same
one the notebooks and ``sve report`` use, so a run shows the same numbers here (each method with its
own ``combine``); tabs are lazy (only the open tab is computed).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import streamlit as st

from app import export
from app.inputs import describe

TABS = ("Reliability", "Spectrum", "OOD", "Members", "Cost")
#: the OOD scores offered (sve.metrics names → labels); all "higher = more uncertain"
SCORES = {"mutual_info": "mutual information", "entropy": "predictive entropy",
          "msp": "1 − max probability (MSP)", "energy": "energy", "disagreement": "member disagreement"}
TABLE_COLUMNS = ["method", "accuracy", "ece", "nll", "brier", "temperature", "converged"]
N_SAMPLES = 6


def _seed(run: Any, slot: str) -> int:
    seeds = run.seeds
    if len(seeds) == 1:
        return seeds[0]
    return st.selectbox("Seed", seeds, key=f"seed-{slot}")


def _name(run: Any, what: str) -> str:
    return f"{run.path.name}_{what}"


# ----------------------------------------------------------------------------- Reliability


def reliability(run: Any, slot: str) -> None:
    from sve.experiments import results

    seed = _seed(run, slot)
    ts = st.toggle("Temperature scaling (T fitted on the validation set)", key=f"ts-{slot}")
    calibration = "ts" if ts else "none"
    title = "Reliability on test" + (", temperature-scaled" if ts else "")
    export.show(results.reliability_figure(run, seed, calibration, title=title),
                _name(run, "reliability" + ("_ts" if ts else "")), f"rel-{slot}")
    table = run.rows(seed=seed, calibration=calibration)
    st.dataframe(table[[c for c in TABLE_COLUMNS if c in table]].set_index("method"),
                 key=f"reltable-{slot}", width="stretch")
    export.csv_button(table, _name(run, "calibration"), f"rel-{slot}", "Table as CSV")
    export.show(results.confidence_figure(run, seed, calibration), _name(run, "confidence"), f"conf-{slot}")
    fig = results.shift_figure(run, seed, calibration)
    if fig is not None:
        export.show(fig, _name(run, "shift"), f"shift-{slot}")


# ----------------------------------------------------------------------------- Spectrum


def spectrum(run: Any, slot: str) -> None:
    from sve import metrics
    from sve.experiments import results

    seed = _seed(run, slot)
    methods = [m for m, s in run.done if s == seed and run.spectra_history(m, seed)]
    if not methods:
        st.info("No method of this run has singular-value members (SVE / SVF), so there is no spectrum.")
        return
    method = methods[0] if len(methods) == 1 else st.selectbox("Method", methods, key=f"spm-{slot}")
    final = run.spectra(method, seed)
    layer = st.selectbox("Layer", list(final), key=f"layer-{slot}")
    figs = results.spectrum_figures(run, method, seed, layer, by="epoch")   # one σ snapshot per epoch
    if "spectrum_history" in figs:
        figs["spectrum_history"].update_layout(title_text=f"σ drift over epochs ({layer})")
    names = {"spectrum": f"spectrum_{method}_{layer}", "spectrum_heatmap": f"spectrum_heatmap_{method}",
             "member_distances": f"member_distances_{method}_{layer}",
             "spectrum_history": f"spectrum_history_{method}_{layer}"}
    keys = {"spectrum": "spec", "spectrum_heatmap": "heat", "member_distances": "dist",
            "spectrum_history": "hist"}
    for kind, fig in figs.items():
        export.show(fig, _name(run, names[kind]), f"{keys[kind]}-{slot}")
    with st.expander("Per-layer diversity table"):
        st.dataframe(metrics.spectrum_table(final), key=f"sptable-{slot}")


# ----------------------------------------------------------------------------- OOD


@st.cache_resource(max_entries=4, show_spinner="Loading samples…")
def _samples(path: str, split: str) -> Any:
    from sve import experiments

    return experiments.load_run(path).samples(split)


def _show_samples(run: Any, idx: np.ndarray, z: np.ndarray, y: np.ndarray, scores: np.ndarray,
                  slot: str, which: str, *, combine: str = "prob") -> None:
    """Each sample with its score, its label, every member's prediction and the ensemble's
    (``combine``: the method's own, ``Run.combine(method)``)."""
    from sve import metrics

    try:
        ds = _samples(str(run.path), "test")
    except Exception as exc:  # noqa: BLE001 - samples are a nicety; the tab stays usable
        st.warning(f"Cannot rebuild the test samples: {describe(exc)}")
        return
    probs = metrics.member_probs(z)                    # (N, M, C)
    ens = metrics.predictive_probs(z, combine)   # (N, C): the combined prediction
    classes = list(ds.classes) or [str(c) for c in range(z.shape[-1])]
    cols = st.columns(len(idx))
    for col, i in zip(cols, idx):
        with col:
            if ds.images is not None:
                st.image(ds.images[i], width="stretch")
            else:
                st.caption((ds.texts[i][:300] + "…") if len(ds.texts[i]) > 300 else ds.texts[i])
            def pred(p: np.ndarray) -> str:
                return f"{classes[int(p.argmax())]} ({p.max():.2f})"

            st.markdown(f"score **{scores[i]:.3f}** · true **{classes[int(y[i])]}**  \n"
                        f"ensemble: **{pred(ens[i])}**  \n"
                        + "  \n".join(f"m{m}: {pred(p)}" for m, p in enumerate(probs[i])))


def ood(run: Any, slot: str) -> None:
    from sve import metrics
    from sve.experiments import results

    seed = _seed(run, slot)
    sets = [s for s in run.splits if s.startswith("ood:")]
    methods = [m for m, s in run.done if s == seed]
    c1, c2, c3 = st.columns(3)
    score = c1.selectbox("Score", list(SCORES), format_func=SCORES.get, key=f"score-{slot}")
    method = c2.selectbox("Method", methods, key=f"oodm-{slot}")
    ood_set = c3.selectbox("OOD set", sets, key=f"oods-{slot}", format_func=lambda s: s[4:]) if sets else None
    test_z, test_y = run.logits(method, seed, "test")
    if test_z.shape[1] == 1 and score in metrics.ENSEMBLE_ONLY_SCORES:
        st.warning(f"{SCORES[score]} is zero for a single model ({method} has one member); pick another "
                   "score or an ensemble method.")
    id_scores = run.uncertainty(method, score, seed, "test")
    if ood_set is None:
        st.info("This run has no OOD set; add one in the sidebar (OOD sets) and train again.")
    else:
        ood_scores = run.uncertainty(method, score, seed, ood_set)
        result = metrics.ood_metrics(id_scores, ood_scores)
        m1, m2, m3 = st.columns(3)
        m1.metric("AUROC", f"{result['auroc']:.3f}")
        m2.metric("FPR at 95% TPR", f"{result['fpr95']:.3f}")
        m3.metric("AUPR-Out", f"{result['aupr_out']:.3f}")
        export.show(results.ood_histogram_figure(run, method, ood_set, seed, {score: SCORES[score]}),
                    _name(run, f"ood_hist_{method}_{ood_set[4:]}_{score}"), f"oodh-{slot}")
        fig = results.ood_roc_figure(run, ood_set, seed, score, methods,
                                     title=f"ROC: test vs {ood_set[4:]} ({SCORES[score]})")
        if fig is not None:
            export.show(fig, _name(run, f"ood_roc_{ood_set[4:]}_{score}"), f"roc-{slot}")
    order = np.argsort(-id_scores, kind="stable")
    combine = run.combine(method)
    st.markdown(f"**Most uncertain test samples** ({method}, {SCORES[score]})")
    _show_samples(run, order[:N_SAMPLES], test_z, test_y, id_scores, slot, "most", combine=combine)
    st.markdown("**Least uncertain test samples**")
    _show_samples(run, order[::-1][:N_SAMPLES], test_z, test_y, id_scores, slot, "least", combine=combine)


# ----------------------------------------------------------------------------- Members


def members(run: Any, slot: str) -> None:
    import plotly.express as px

    from sve import metrics
    from sve.experiments import results

    seed = _seed(run, slot)
    methods = [m for m, s in run.done if s == seed]
    ensembles = [m for m in methods if run.logits(m, seed, "test")[0].shape[1] > 1]
    if not ensembles:
        st.info("No ensemble method (M > 1) in this run.")
        return
    method = st.selectbox("Method", ensembles, key=f"memm-{slot}")
    export.show(results.member_figure(run, method, seed), _name(run, f"members_{method}"), f"memb-{slot}")
    z = run.logits(method, seed, "test")[0]
    div = metrics.diversity(z)
    c1, c2, c3 = st.columns(3)
    c1.metric("Mean pairwise disagreement", f"{div['disagreement']:.3f}")
    c2.metric("Mean pairwise KL (nats)", f"{div['kl']:.4f}")
    c3.metric("Mean pairwise JS (nats)", f"{div['js']:.4f}")
    matrix = metrics.pairwise_matrix(z, "disagreement")
    names = [f"member {m}" for m in range(len(matrix))]
    fig = px.imshow(matrix, x=names, y=names, text_auto=".3f", color_continuous_scale="Viridis",
                    labels=dict(color="disagreement"),
                    title=f"{method}: fraction of test samples two members classify differently")
    fig.update_layout(template="sve", width=600, height=500)
    export.show(fig, _name(run, f"disagreement_{method}"), f"dis-{slot}")
    st.dataframe(results.member_table(run, method, seed), key=f"memtable-{slot}")


# ----------------------------------------------------------------------------- Cost


def cost(run: Any, slot: str) -> None:
    from sve.experiments import results

    seed = _seed(run, slot)
    export.show(results.cost_figure(run, seed), _name(run, "cost"), f"cost-{slot}")
    st.dataframe(run.cost_table(seed), key=f"costtable-{slot}")
    st.caption("params: trainable parameters (heads included); "
               "overhead_pct: 100·(trainable − heads)/backbone; "
               "memory: peak RSS while training (sampled every 50 ms).")


RENDER: dict[str, Callable[[Any, str], None]] = {"Reliability": reliability, "Spectrum": spectrum,
                                                 "OOD": ood, "Members": members, "Cost": cost}


def _guarded(fn: Callable[[Any, str], None], run: Any, slot: str) -> None:
    """A tab that fails shows the reason and leaves the rest of the page working."""
    try:
        fn(run, slot)
    except Exception as exc:  # noqa: BLE001
        import traceback

        traceback.print_exc()
        st.error(f"Cannot draw this tab for {run.path.name}: {describe(exc)}")


def _downloads(run: Any, slot: str) -> None:
    export.zip_button(lambda: run.figures(), lambda: {"metrics": run.metrics}, _name(run, "all"),
                      f"all-{slot}")
    export.csv_button(run.metrics, _name(run, "metrics"), f"metrics-{slot}", "Metrics CSV (every row)")


def render(runs: list[Any]) -> None:
    """Header with downloads, then the tabs (one column per run when comparing)."""
    cols = st.columns(len(runs))
    for col, run, slot in zip(cols, runs, "ab"):
        with col:
            cfg = run.config
            st.markdown(f"**{run.path.name}** · {cfg.backbone} on {cfg.dataset} · M={cfg.members} · "
                        f"{', '.join(run.methods)} · {run.status.get('state')}")
            _downloads(run, slot)
    tabs = st.tabs(list(TABS), key="tab", on_change="rerun")
    for tab, name in zip(tabs, TABS):
        if tab.open is False:
            continue
        with tab:
            inner = st.columns(len(runs)) if len(runs) > 1 else [st.container()]
            for col, run, slot in zip(inner, runs, "ab"):
                with col:
                    _guarded(RENDER[name], run, slot)
