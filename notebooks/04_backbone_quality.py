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
# # 04 · Does SVE need a meaningful basis? Random versus pretrained backbone (paper Fig. 2)
# **Full scale:** `configs/paper/fig2-backbone-quality-cifar100-{random,dino,dinov2}.yaml` (sve run)
#
# **Mirrors** the paper's falsifiability check (Fig. 2, CIFAR-100 with a ViT-S initialised randomly,
# from DINOv1 or from DINOv2): SVE only re-weights directions the pretrained weights already have, so
# its advantage over other ensembles should grow with the quality of pretraining — and with a random
# initialisation the paper finds **SVE the worst method**.
#
# **Offline analog.** The same comparison (single model, deep ensemble, LoRA-Ensemble, SVE; M = 4) on
# Fashion-MNIST with **DINOv2 ViT-S/14 pretrained** versus **the same architecture randomly
# initialised** (`backbone_options: {random: true}`). DINOv1 weights are not available offline, so
# the paper's middle point is missing: two points, not three.
#
# **Sizes (full mode).** The pretrained side *is* notebook 01's run (`configs/01_in_distribution.yaml`,
# its rows of these four methods; the notebook reuses 01's finished run, or trains it); the random
# side is `configs/04_backbone_quality.yaml`, the same design with a random backbone: 56 px, 128
# training / 128 validation / 384 test images, 12 epochs (1 warm-up), batch 16, M = 4, **5 seeds**,
# the authors' recipe (AdamW at each method's default lr, weight decay 0.05, grad-norm clip 1.0, linear
# warm-up then cosine). Seed s of both sides shares the split, data order and head draws, so the
# claims are decided on paired differences over the seeds. Medium mode (`QUICK=0 MEDIUM=1`, for a
# slow machine): 256 / 64 / 256 / 256 samples and 2 epochs (1 warm-up). QUICK mode: 64 / 32 / 32
# images, 1 epoch, M = 2, one seed, single model and SVE only.
#
# **What to look for:** SVE's accuracy margin over the other ensembles on each backbone; the paper
# predicts it shrinks (or turns negative) without pretraining.

# %% [markdown]
# **Where this differs from the paper, and why**
# - Fashion-MNIST at 56 px, 128 training images (a few-shot regime) × 12 epochs instead of CIFAR-100
#   at 224 px, the whole set × 10 epochs: offline data, the CPU budget and the convergence measurements
#   (docs/RESULTS.md, Status).
# - Two backbones (random, DINOv2) instead of three: DINOv1 weights are not available offline.
# - Heads at 1e-3 in every method (`head_lr`), as in notebook 01.
#
# **Thresholds, fixed before the runs.** "Advantage shrinks": SVE's per-seed accuracy margin over the
# other ensembles (deep ensemble, LoRA-Ensemble) is lower on the random backbone than on the
# pretrained one (any amount). "Worst with a random backbone": SVE's accuracy below each other
# method's on the random backbone (any amount).

# %% tags=["parameters"]
QUICK = 0  # 1: the tiniest real settings (tests); 0: full mode
GAIN = 0.0  # the smallest paired difference that counts (both claims ask for any gap)

# %%
import nbtools as nb
import pandas as pd

QUICK = nb.quick_mode(QUICK)
out = nb.outputs("04_backbone_quality", QUICK)
METHODS = ["single", "sve"] if QUICK else ["single", "deep_ensemble", "lora_ensemble", "sve"]
quick = dict(methods=METHODS)
configs = {
    "pretrained": nb.load_config("01_in_distribution", QUICK, quick_sizes=quick),
    "random init": nb.load_config("04_backbone_quality", QUICK, quick_sizes=quick),
}
for name, config in configs.items():
    print(f"{name}: {nb.describe(config, QUICK)}")

# %% [markdown]
# ## Train (or reuse) both runs

# %%
runs = {name: nb.run(config, out) for name, config in configs.items()}
runs

# %% [markdown]
# ## Test metrics per backbone (accuracy / ECE in %, mean ± std over seeds)

# %%
table = pd.concat([nb.rows(r).assign(backbone=name) for name, r in runs.items()])
table = table[table["method"].isin(METHODS)]
summary = nb.mean_std(table, nb.CALIBRATION, by=["backbone", "method"])
out.save_table(summary)
nb.pm(summary, {"accuracy": 100, "ece": 100}, digits=2)

# %% [markdown]
# ## SVE's margin over the other ensembles, per backbone (percentage points, mean over seeds)
# Margin = SVE's mean minus the mean of the other ensembles (deep ensemble, LoRA-Ensemble); for ECE a
# negative margin favours SVE. Rank 1 = most accurate of all methods on that backbone.

# %%
means = summary[["accuracy", "ece"]]


def margins(backbone):
    part = means.loc[backbone]
    others = [m for m in part.index if m not in ("sve", "single")]
    rank = int(part["accuracy"].rank(ascending=False).loc["sve"])
    row = {"sve_rank_by_accuracy": f"{rank} of {len(part)}"}
    if others:
        row["accuracy_margin_pp"] = 100 * (part.loc["sve", "accuracy"] - part.loc[others, "accuracy"].mean())
        row["ece_margin_pp"] = 100 * (part.loc["sve", "ece"] - part.loc[others, "ece"].mean())
    row["accuracy_vs_single_pp"] = 100 * (part.loc["sve", "accuracy"] - part.loc["single", "accuracy"])
    return row


margin = pd.DataFrame({b: margins(b) for b in configs}).T
out.save_table(margin, "_margins")
margin

# %% [markdown]
# ## Figure: metrics against backbone quality (the Fig. 2 analog)

# %%
from sve import plots
from sve.experiments import reliability_figure

curve = means.reset_index()
curve["quality"] = curve["backbone"].map({"random init": 0, "pretrained": 1})
figs = {"backbone_quality": plots.shift_curves(curve, x="quality", columns=("accuracy", "ece"),
                                               title="Random init (0) versus pretrained DINOv2 (1)")}
figs["backbone_quality"].update_xaxes(title_text="0 = random init, 1 = pretrained")
for name, r in runs.items():
    figs[f"reliability_{name.replace(' ', '_')}"] = reliability_figure(r, methods=METHODS)
for fig in figs.values():
    fig.show()
out.export(figs)

# %% [markdown]
# ## The claims, decided over seeds
# Each claim is decided on per-seed paired differences with a 95 % t-interval of their mean
# (`sve.stats`): **held** / **did not hold** when the whole interval is on one side of the threshold,
# **inconclusive** when it straddles it, **not converged** when a run behind either side did not
# converge by the rule (`converged` column). "Advantage shrinks" compares a derived quantity
# (`nb.margin_per_seed`): per seed, SVE's accuracy minus the mean of the other ensembles', on the random
# backbone against on the pretrained one. "Worst with a random backbone" compares SVE with each other
# method on the random backbone, seed by seed.

# %%
from sve.stats import Claim

others = [m for m in METHODS if m not in ("sve", "single")]
shrinks = Claim("sve margin, random init", "sve margin, pretrained", "accuracy_margin", "lower",
                threshold=GAIN,
                text="SVE's accuracy advantage over the other ensembles shrinks without a pretrained basis")
margin_table = (pd.concat([nb.margin_per_seed(nb.rows(r), "accuracy", "sve", others,
                                              label=f"sve margin, {name}") for name, r in runs.items()])
                if others else None)  # QUICK mode trains no other ensemble: the claim reads "undecided"
verdicts = [nb.decide(runs["random init"], [shrinks], table=margin_table)]
verdicts.append(nb.decide(runs["random init"], [
    Claim("sve", other, "accuracy", "lower", threshold=GAIN,
          text=f"With a random backbone SVE is less accurate than {other}")
    for other in ["single", "deep_ensemble", "lora_ensemble"]]))
nb.verdicts_table(*verdicts)[["verdict", "evidence"]]

# %% [markdown]
# ## What we found
# Written from the verdicts just computed (nothing below is typed in by hand):

# %%
out.conclude(*verdicts)
