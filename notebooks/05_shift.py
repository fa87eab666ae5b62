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
# and rotation — at severities 1–5, the CIFAR-C recipe applied to the grey-scale images
# we have. CIFAR-100-C itself cannot be had offline.
#
# **Sizes (full mode, `configs/05_shift.yaml`):** 56 px, 128 training / 128 validation / 160 test images
# (each corrupted 4 ways × 5 severities), 12 epochs (1 warm-up), batch 16, M = 4, **5 seeds** (the claims
# are decided on paired differences over them); the authors' recipe: AdamW at each method's default
# learning rate, weight decay 0.05, grad-norm clip 1.0, linear warm-up then cosine decay stepped per
# epoch (warm-up at most half of the epochs); curves average the four corruptions. QUICK mode: 64 / 32 /
# 32 images, 1 epoch, M = 2, one seed, single model and SVE, two corruptions at severities 1 and 5.
#
# **What to look for:** accuracy falling and uncertainty (entropy, mutual information) rising with
# severity, and SVE's ECE staying near the deep ensemble's rather than the single model's.

# %% [markdown]
# **Where this differs from the paper, and why**
# - Corrupted Fashion-MNIST (Gaussian noise, blur, contrast, rotation; `sve.data.corrupt`) instead of
#   CIFAR-100-C: no CIFAR can be had offline; the CIFAR-C recipe is applied to the grey-scale images.
# - 56 px, 128 training images (a few-shot regime, like Flowers102's 10 per class), 12 epochs
#   (1 warm-up) instead of 224 px, the whole training set and 10 epochs (5 warm-up): the CPU budget
#   and the convergence measurements (docs/RESULTS.md, Status: at 256 × 6 the full fine-tunings did
#   not converge, at 128 × 12, the same number of steps, they do); every verdict is gated on the rule.
# - Heads train at 1e-3 (`head_lr`) in every method, the lr SVE uses for everything; the paper gives
#   the full fine-tunings one lr (1e-4) for body and head. Their heads start at N(0, 0.01²) and at 1e-4
#   barely move in the ~100 steps two CPU cores afford (one seed: the single model's validation
#   accuracy after 6 epochs 63 % → 72 %).
# - 5 seeds instead of 3: a 95 % interval of a paired difference needs them.
# - The paper gives no numbers here, only the description; the single model is added as a reference.
#
# **Thresholds, fixed before the runs.** `RISE`: "uncertainty rises with severity" asks SVE's mean
# entropy (and mutual information) at the top severity to exceed its value on the clean test set by
# more than 0 nats. `ECE_CLOSE`: "competitive" allows SVE's mean ECE over the shifted sets to be at most
# 1 point above the deep ensemble's (non-inferiority); against the single model it must be lower.

# %% tags=["parameters"]
QUICK = 0  # 1: the tiniest real settings (tests); 0: full mode
RISE = 0.0  # "rises with severity": top-severity entropy / MI above the clean value by more than 0 nats
ECE_CLOSE = 0.01  # "competitive": mean ECE over severities at most 1 pp above the deep ensemble's

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
# ## The claims, decided over seeds
# Each claim is decided on per-seed paired differences with a 95 % t-interval of their mean
# (`sve.stats`): **held** / **did not hold** when the whole interval is on one side of the threshold,
# **inconclusive** when it straddles it, **not converged** when a run behind either side did not
# converge by the rule (`converged` column). The claims compare derived quantities (`nb.per_seed`):
# - *uncertainty rises*: SVE at the top severity (mean over the corruptions) against SVE on the clean
#   test set, seed by seed, for the mean predictive entropy and the mean mutual information;
# - *competitive calibration*: each method's mean ECE over every shifted set (all severities and
#   corruptions) per seed, SVE against the single model and against the deep ensemble.

# %%
from sve.stats import Claim

sve_rows = rows[rows["method"] == "sve"]
sides = {f"sve, severity {top}": top, "sve, clean": 0}  # derived method → severity of its rows
verdicts = []
for column, what in (("mean_entropy", "predictive uncertainty (entropy)"),
                     ("mean_mutual_info", "member disagreement (mutual information)")):
    derived = pd.concat([nb.per_seed(sve_rows[sve_rows["severity"] == severity], column, label=label)
                         for label, severity in sides.items()])
    rises = Claim(*sides, column, "higher", threshold=RISE,
                  text=f"SVE's {what} rises with severity")
    verdicts.append(nb.decide(run, [rises], table=derived))
shifted_ece = nb.per_seed(rows[rows["severity"] > 0], "ece")  # one row per method × seed
verdicts.append(nb.decide(run, [
    Claim("sve", "single", "ece", "lower", text="Under shift SVE's ECE (mean over severities) is below the "
          "single model's"),
    Claim("sve", "deep_ensemble", "ece", "lower", threshold=-ECE_CLOSE,
          text="Under shift SVE's ECE (mean over severities) stays close to the deep ensemble's"),
], table=shifted_ece))
nb.verdicts_table(*verdicts)[["verdict", "evidence"]]

# %% [markdown]
# ## What we found
# Written from the verdicts just computed (nothing below is typed in by hand):

# %%
out.conclude(*verdicts)
