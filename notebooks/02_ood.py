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
# # 02 · Out-of-distribution detection (paper: CIFAR-100 → CIFAR-10)
# **Full scale:** `configs/paper/table2-ood-cifar100-cifar10.yaml` (`python -m sve run CONFIG`)
#
# **Mirrors** the paper's OOD experiment: models trained on CIFAR-100 score CIFAR-10 test images;
# AUROC with mutual information as the score (paper: deep ensemble 79.2, LoRA-Ensemble 82.8, SVE
# 81.6; FPR 64.3 for LoRA, 66.8 for SVE).
#
# **Offline analog.** DINOv2 ViT-S/14 trained on **Fashion-MNIST with the three footwear classes
# (sandal, sneaker, ankle boot) held out**: those held-out classes are the *near*-OOD set — same
# camera, same style, unseen classes, as CIFAR-10 is to CIFAR-100. **MNIST digits** and
# **Animal-MNIST** sketches are *far*-OOD sets. No CIFAR can be had offline.
#
# **Sizes (full mode, `configs/02_ood.yaml`):** 56 px, 128 training (about 18 per class) / 128 validation /
# 384 test images of the 7 remaining classes, 384 images per OOD set, 12 epochs (1 warm-up), batch 16,
# M = 4, **5 seeds**
# (the claims are decided on paired differences over them); the authors' recipe: AdamW at each method's
# default learning rate, weight decay 0.05, grad-norm clip 1.0, linear warm-up then cosine decay stepped
# per epoch (warm-up at most half of the epochs). AUROC, AUPR (OOD positive) and FPR at 95 % TPR for four
# scores: maximum softmax probability (MSP), predictive entropy, mutual information (MI, ensembles only)
# and energy. Medium mode (`QUICK=0 MEDIUM=1`, for a slow machine): the same with 256 / 64 / 256 / 256
# samples and 2 epochs (1 warm-up). QUICK mode: 64 / 32 / 32 / 32 images, 1 epoch, M = 2, one seed,
# single model, deep ensemble and SVE only.
#
# **What to look for:** SVE's AUROC (MI) next to the deep ensemble's, and whether near-OOD (held-out
# footwear) is much harder than far-OOD, as CIFAR-10 is for CIFAR-100 models.

# %% [markdown]
# **Where this differs from the paper, and why**
# - Fashion-MNIST (7 classes) with footwear held out, MNIST and Animal-MNIST instead of CIFAR-100 →
#   CIFAR-10: no CIFAR can be had offline.
# - 56 px instead of 224 px, 128 training images instead of the whole training set (a few-shot regime,
#   like Flowers102's 10 images per class), 12 epochs (1 warm-up) instead of 10 (5 warm-up): the CPU
#   budget (two shared cores) and convergence measurements on notebook 01's task. At 256 images × 6
#   epochs the full fine-tunings were still improving (deep ensemble converged in 0 of 5 seeds), at
#   512 × 6 too; at 128 × 12 (the same number of steps) the single model, the deep ensemble and SVE
#   reached their best validation NLL before the last epoch. Every verdict is gated on the rule.
# - Heads train at 1e-3 (`head_lr`) in every method, the lr SVE uses for everything; the paper gives
#   the full fine-tunings one lr (1e-4) for body and head. Their heads start at N(0, 0.01²) and at 1e-4
#   barely move in the ~100 steps two CPU cores afford (one seed, 384 images: the single model's
#   validation accuracy after 6 epochs 63 % → 72 %).
# - 5 seeds instead of 3: a 95 % interval of a paired difference needs them (with 3 the t factor is 4.3).
# - The single model and MC dropout are added as reference points; the paper reports deep ensemble,
#   LoRA-Ensemble and SVE.
#
# **Thresholds, fixed before the runs.** `AUROC_NEAR`: "near the deep ensemble" allows SVE's AUROC
# with mutual information to be at most 2 points below the deep ensemble's (a non-inferiority margin,
# about the gap between SVE and LoRA-Ensemble in the paper). `AUROC_GAIN`: "better than the single
# model" asks SVE's AUROC (MI) to beat the single model's best score by more than 0 points.

# %% tags=["parameters"]
QUICK = 0  # 1: the tiniest real settings (tests); 0: full mode
AUROC_NEAR = 0.02  # "near the deep ensemble": SVE's AUROC (MI) at most 2 points below
AUROC_GAIN = 0.0  # "better than the single model": SVE's AUROC (MI) above the single's best score

# %%
import nbtools as nb
import pandas as pd

QUICK = nb.quick_mode(QUICK)
out = nb.outputs("02_ood", QUICK)
config = nb.load_config("02_ood", QUICK, quick_sizes=dict(methods=["single", "deep_ensemble", "sve"]))
print(nb.describe(config, QUICK))

# %% [markdown]
# ## Train (or reuse) the models

# %%
run = nb.run(config, out)
run

# %% [markdown]
# ## AUROC per OOD set and score (%, mean ± std over seeds)
# Single models have no mutual information (NaN). ID = the test split of the 7 training classes.

# %%
SCORES = ("msp", "entropy", "mutual_info", "energy")
ood_splits = [s for s in run.splits if s.startswith("ood:")]
table = run.metrics
ood_rows = table[table["split"].isin(ood_splits) & (table["member"] == "ensemble")
                 & (table["calibration"] == "none")]
ood_rows = ood_rows.sort_values("split", key=lambda s: s.map(ood_splits.index), kind="stable")
columns = [f"{k}_{s}" for k in ("auroc", "aupr_out", "fpr95") for s in SCORES]
summary = nb.mean_std(ood_rows, columns, by=["split", "method"])
out.save_table(summary)
nb.pm(summary[[c for c in summary.columns if c.startswith("auroc")] + ["n_seeds"]], 100, digits=1)

# %% [markdown]
# ## FPR at 95 % TPR and AUPR (OOD positive), %

# %%
other = [c for c in summary.columns if c.startswith(("fpr95", "aupr_out"))]
nb.pm(summary[other + ["n_seeds"]], 100, digits=1)

# %% [markdown]
# ## In-distribution side: the same models' test accuracy and ECE (%)

# %%
nb.pm(nb.mean_std(nb.rows(run), nb.CALIBRATION), {"accuracy": 100, "ece": 100}, digits=2)

# %% [markdown]
# ### The paper's numbers (CIFAR-100 → CIFAR-10, %)

# %%
pd.DataFrame({"auroc_mutual_info": [79.2, 82.8, 81.6], "fpr": [None, 64.3, 66.8]},
             index=pd.Index(["deep_ensemble", "lora_ensemble", "sve"], name="method"),
             ).astype(object).fillna("–")

# %% [markdown]
# ## Figures: ROC curves per OOD set (predictive entropy) and score histograms of the first ensemble

# %%
figs = {k: v for k, v in run.figures().items() if k.startswith("ood_")}
for fig in figs.values():
    fig.show()
out.export(figs)

# %% [markdown]
# ## The claims, decided over seeds
# For every OOD set, two claims, each on the per-seed paired difference (seed s of SVE against seed s
# of the other side) with a 95 % t-interval of its mean (`sve.stats`): **held** / **did not hold** when
# the whole interval is on one side of the threshold, **inconclusive** when it straddles it, **not
# converged** when a run of either side did not converge by the rule (`converged` column).
# - *Near the deep ensemble*: SVE's AUROC (MI) minus the deep ensemble's, against −`AUROC_NEAR`.
# - *Better than the single model*: SVE's AUROC (MI) minus the single model's best of MSP / entropy /
#   energy, the best picked **per seed** on the test data (a derived table,
#   `nb.mi_against_best_single`). Picking the single model's score after seeing the OOD data favours
#   it, so a "held" here is conservative.

# %%
from sve.stats import Claim

verdicts = []
for split in ood_splits:
    name = split.split(":", 1)[1]
    near = Claim("sve", "deep_ensemble", "auroc_mutual_info", "higher", threshold=-AUROC_NEAR,
                 text=f"SVE's OOD AUROC (MI) is near the deep ensemble's ({name})")
    where = {"split": split, "member": "ensemble", "calibration": "none"}
    verdicts.append(nb.decide(run, [near], where=where))
    verdicts.append(nb.ood_beats_single(run, split, AUROC_GAIN,
                                        f"SVE detects OOD better than the single model ({name})"))
nb.verdicts_table(*verdicts)[["verdict", "evidence"]]

# %% [markdown]
# ## What we found
# Written from the verdicts just computed (nothing below is typed in by hand):

# %%
out.conclude(*verdicts)
