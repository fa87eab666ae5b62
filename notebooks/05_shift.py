# ---
# jupyter:
#   jupytext:
#     formats: ipynb,py:percent
#   kernelspec:
#     display_name: Python 3 (ipykernel)
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 05 · Distribution shift: accuracy, calibration, uncertainty versus severity (paper: CIFAR-100-C)
# **Full scale:** `configs/paper/shift-cifar100-corruptions.yaml` (`python -m sve run CONFIG`)
#
# **Mirrors** the paper's CIFAR-100-C evaluation: as corruption severity rises, predictive uncertainty
# and ensemble disagreement should rise and calibration should stay competitive (the paper gives no
# numbers, only this description).
#
# **Offline analog.** Models trained on clean **Fashion-MNIST** (DINOv2 ViT-S/14) are scored on the
# test images corrupted by `sve.data.corrupt` — Gaussian noise, Gaussian blur, contrast loss,
# rotation and pixelation — at severities 1–5, the CIFAR-C recipe applied to the grey-scale images
# we have. CIFAR-100-C itself cannot be had offline.
#
# **Sizes (full mode, `configs/05_shift.yaml`):** 28 px, 384 training / 128 validation / 160 test images
# (each corrupted 4 ways × 5 severities), 2 epochs (1 warm-up), M = 4, 3 seeds; curves average the four
# corruptions. QUICK mode: 64 / 32 / 32 images, 1 epoch, M = 2, one seed, single model and SVE, two
# corruptions at severities 1 and 5.
#
# **What to look for:** accuracy falling and uncertainty (entropy, mutual information) rising with
# severity, and SVE's ECE staying near the deep ensemble's rather than the single model's.

# %% tags=["parameters"]
QUICK = 0  # 1: the tiniest real settings (tests); 0: full mode
ECE_CLOSE = 0.01  # "competitive": mean ECE over severities within 1 pp of the deep ensemble's

# %%
import nbtools as nb
import pandas as pd

QUICK = nb.quick_mode(QUICK)
out = nb.outputs("05_shift", QUICK)
config = nb.load_config("05_shift", QUICK, quick_sizes=dict(
    methods=["single", "sve"], shifts=["gaussian_noise", "contrast"], severities=[1, 5]))
print(nb.describe(config, QUICK))

# %% [markdown]
# ## Train (or reuse) the models

# %%
run = nb.run(config, out)
run

# %% [markdown]
# ## Metrics versus severity (mean over corruptions, then mean ± std over seeds)
# Severity 0 = the clean test set. Accuracy / ECE in %; entropy and mutual information in nats.

# %%
COLUMNS = ["accuracy", "ece", "nll", "mean_entropy", "mean_mutual_info"]
table = run.metrics
rows = table[(table["member"] == "ensemble") & (table["calibration"] == "none")
             & ((table["split"] == "test") | table["split"].str.startswith("shift:"))].copy()
rows["severity"] = [int(s.rsplit(":", 1)[1]) if s.startswith("shift:") else 0 for s in rows["split"]]
rows["corruption"] = [s.split(":")[1] if s.startswith("shift:") else "clean" for s in rows["split"]]
per_seed = rows.groupby(["method", "seed", "severity"], sort=False)[COLUMNS].mean().reset_index()
summary = nb.mean_std(per_seed, COLUMNS, by=["severity", "method"])
out.save_table(summary)
nb.pm(summary, {"accuracy": 100, "ece": 100}, digits=2)

# %% [markdown]
# ## Per corruption at the highest severity (accuracy / ECE %, mean over seeds)

# %%
top = max(config.severities)
worst = rows[rows["severity"] == top].groupby(["corruption", "method"], sort=False)
worst = (100 * worst[["accuracy", "ece"]].mean()).round(1).unstack("method")
out.save_table(worst.set_axis([f"{c}_{m}" for c, m in worst.columns], axis=1), "_per_corruption")
worst

# %% [markdown]
# ## Figures: the shift curves and the reliability of every method at the highest severity

# %%
from sve import plots

curve = summary.reset_index()  # with the *_std columns: ± std error bars
figs = {"shift_curves": plots.shift_curves(curve, columns=("accuracy", "ece", "mean_entropy"))}
split = f"shift:{config.shifts[0]}:{top}"
figs["reliability_shifted"] = plots.reliability_diagram(
    {m: run.logits(m, None, split) for m in run.methods}, title=f"Reliability on {split}")
for fig in figs.values():
    fig.show()
out.export(figs)

# %% [markdown]
# ## What we found

# %%
means = summary.reset_index()
shifted = means[means["severity"] > 0]


def rises_with_severity(column):
    def decide():
        sve = means[means["method"] == "sve"].set_index("severity")[column]
        rho = pd.Series(sve.index).corr(pd.Series(sve.values), method="spearman")
        return rho > 0 and sve.iloc[-1] > sve.iloc[0], (
            f"SVE {column}: {sve.iloc[0]:.3f} (clean) → {sve.iloc[-1]:.3f} (severity {top}), "
            f"Spearman ρ = {rho:.2f}")
    return decide


def ece_competitive():
    ece = shifted.groupby("method")["ece"].mean()
    held = ece["sve"] < ece["single"] and ece["sve"] <= ece["deep_ensemble"] + ECE_CLOSE
    return held, "mean ECE over severities 1–5: " + ", ".join(f"{m} {100 * v:.2f} %" for m, v in ece.items())


claims = [
    nb.claim("SVE's predictive uncertainty rises with severity", "Spearman ρ(severity, entropy) > 0 and "
             "last > clean", rises_with_severity("mean_entropy")),
    nb.claim("SVE's member disagreement (mutual information) rises with severity", "as above, for MI",
             rises_with_severity("mean_mutual_info")),
    nb.claim("SVE's calibration under shift stays competitive",
             f"mean shifted ECE below single's and ≤ deep ensemble + {100 * ECE_CLOSE:g} pp",
             ece_competitive),
]
out.conclude(claims)
