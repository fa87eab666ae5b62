"""The comparison the page opens on: every finished method of a run on the same data, side by side.

- the reliability diagrams (one panel per method, ECE in each title: ``sve.plots.reliability_diagram``);
- a table of test accuracy / ECE / NLL / Brier per method, with the number of epochs and whether
  training converged by the study's rule (``sve.stats.converged``: the last epoch improved the
  validation NLL by less than 1 %);
- per OOD set, the ROC of each method with its best uncertainty score (highest AUROC among the scores
  defined for it: mutual information and disagreement need M > 1). The best score is chosen on the
  very OOD set it is drawn for, which flatters every method alike; the caption says so.

Numbers are shown as they are: nothing here is chosen to make one method look better.
"""

from __future__ import annotations

from typing import Any

import streamlit as st

from app import export
from app.inputs import describe

#: the uncertainty scores compared for the OOD ROC (higher = more uncertain)
OOD_SCORES = ("msp", "entropy", "mutual_info", "energy", "disagreement")
SCORE_LABELS = {"msp": "1 − max prob", "entropy": "entropy", "mutual_info": "mutual info",
                "energy": "energy", "disagreement": "disagreement"}


def _seed(run: Any) -> int:
    return sorted({s for _, s in run.done})[0]


def convergence(run: Any, method: str, seed: int) -> tuple[int, str]:
    """(epochs trained, "yes" / "no (last epoch −x % NLL)" / "–"): ``Run.converged``, the same rule
    as the table's ``converged`` column (member-wise for independently trained members)."""
    from sve import stats

    epochs = run.history(method, seed)["epoch"]
    if "val_nll" not in epochs or len(epochs) < 2:
        return len(epochs), "– (needs 2 epochs)"
    if run.converged(method, seed):
        return len(epochs), "yes"
    gain = stats.last_epoch_gain(epochs)
    if gain < stats.CONVERGENCE_TOL:  # the combined prediction is flat; a member is not
        return len(epochs), "no (a member's NLL still improving)"
    return len(epochs), f"no (last epoch: NLL −{100 * gain:.1f} %)"


def table(run: Any, seed: int) -> Any:
    """One row per finished method: test metrics of the combined prediction, members, epochs, converged."""
    rows = run.rows(seed=seed).set_index("method")
    columns = ("members", "accuracy", "ece", "nll", "brier", "train_time_s")
    out = rows[[c for c in columns if c in rows]].copy()
    info = [convergence(run, m, seed) for m in out.index]
    out["epochs"] = [e for e, _ in info]
    out["converged"] = [c for _, c in info]
    return out


def render(run: Any, slot: str = "a") -> None:
    """Draw the comparison of ``run``'s finished methods into the current container."""
    from sve import plots
    from sve.experiments import results

    seed = _seed(run)
    methods = [m for m, s in run.done if s == seed]
    st.markdown(f"#### {' vs '.join(methods)} on {run.config.dataset} ({run.config.backbone}), seed {seed}")
    if len(methods) < len(run.config.method_specs()):
        st.caption("Methods still training appear here as soon as they finish.")
    try:
        export.show(results.reliability_figure(run, seed, methods=methods, title="Reliability on test"),
                    f"{run.path.name}_comparison_reliability", f"cmp-rel-{slot}")
        summary = table(run, seed)
        st.dataframe(summary, key=f"cmp-table-{slot}", width="stretch",
                     column_config={"accuracy": st.column_config.NumberColumn(format="%.3f"),
                                    "ece": st.column_config.NumberColumn("ECE", format="%.3f"),
                                    "nll": st.column_config.NumberColumn("NLL", format="%.3f"),
                                    "brier": st.column_config.NumberColumn(format="%.3f"),
                                    "train_time_s": st.column_config.NumberColumn("train s", format="%.0f")})
        export.csv_button(summary, f"{run.path.name}_comparison", f"cmp-{slot}", "Table as CSV")
        st.caption("Test set, the combined prediction of each method, before temperature scaling. "
                   "ECE: expected calibration error (15 bins); NLL: negative log-likelihood. "
                   "converged: the study's rule (the last epoch improved the validation NLL by < 1 %).")
        for split in (s for s in run.splits if s.startswith("ood:")):
            pairs, chosen = {}, []
            for m in methods:
                score, id_s, ood_s, auroc = results.best_ood_score(run, m, split, seed, OOD_SCORES)
                pairs[f"{m} · {SCORE_LABELS.get(score, score)}"] = (id_s, ood_s)
                chosen.append(f"{m}: {SCORE_LABELS.get(score, score)} (AUROC {auroc:.3f})")
            export.show(plots.roc_curves(pairs, title=f"OOD detection: test vs {split[4:]}, each method's "
                                                      "best score"),
                        f"{run.path.name}_comparison_roc_{split[4:]}", f"cmp-roc-{slot}-{split}")
            st.caption("Best score per method: " + "; ".join(chosen) + ". Chosen by AUROC on this same "
                       "OOD set, which is optimistic for every method alike.")
    except Exception as exc:  # noqa: BLE001 - a broken run must not break the page
        st.error(f"Cannot draw the comparison for {run.path.name}: {describe(exc)}")
