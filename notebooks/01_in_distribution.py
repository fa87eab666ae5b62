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
# # 01 · In-distribution accuracy and calibration (paper Table 1)
# **Full scale:** `configs/paper/table1-{flowers102-dino-vits16,oxford-pets-dinov2-vits14}.yaml` (sve run)
#
# **Mirrors** the paper's Table 1: Acc / ECE / NLL / Brier of a single fine-tuned model, SVF (SVE with
# M = 1), a deep ensemble, LoRA-Ensemble, BatchEnsemble and SVE (M = 4) on Flowers102 / Oxford Pets
# with DINO(v2) ViT-S, reported before and after temperature scaling. We add MC dropout and a head-only
# ensemble (frozen trunk, M heads) as cheap reference points.
#
# **Offline analog.** DINOv2 ViT-S/14 — the paper's Oxford-Pets backbone — on **Fashion-MNIST**:
# CIFAR / Flowers / Pets cannot be had offline, and on MNIST every method is near 99 %, so calibration
# differences would drown in a saturated accuracy; Fashion-MNIST leaves room (≈ 80–90 %).
#
# **Sizes (full mode, `configs/01_in_distribution.yaml`):** 56 px inputs (4 × 4 patches + CLS: the
# smallest size within 2 pp of the best linear probe of the frozen features, docs/RESULTS.md), 128
# training (about 13 per class) / 128 validation / 384 test images, 12 epochs (1 warm-up), batch 16,
# M = 4, each method's default learning rate (heads 1e-3, below), AdamW with weight decay 0.05, grad
# clip 1.0, linear warm-up then cosine, 5 seeds; tables are mean ± std over the seeds, claims are
# decided on paired differences (below).
# Temperature T is fitted on the validation split. Medium mode (`QUICK=0 MEDIUM=1`, for a slow
# machine): the same with 256 / 64 / 256 / 256 samples. QUICK mode (tests): 28 px, 64 / 32 / 32
# images, 1 epoch, M = 2, one seed, single model, deep ensemble and SVE only.
#
# **Where this differs from the paper, and why:** Fashion-MNIST at 56 px instead of Flowers102 /
# Oxford Pets at 224 px (offline data; two CPU cores); 128 training images (a few-shot regime, like
# Flowers102's 10 per class) × 12 epochs instead of the whole set × 10: the CPU budget and the
# convergence measurements (docs/RESULTS.md, Status: at 256 × 6 the full fine-tunings did not converge,
# at 128 × 12, the same number of steps, they do); the deep ensemble trains its members independently (own
# data order, clip and best epoch), as the paper's M separate fine-tunings. Every method's heads train at
# 1e-3 (`head_lr`), the lr SVE uses for everything: the paper gives the full fine-tunings one lr (1e-4)
# for body and head, but their heads start at N(0, 0.01²) and at 1e-4 barely move in the ~100 steps two
# CPU cores afford (one seed: the single model's validation accuracy after 6 epochs 63 % → 72 %).
#
# **What to look for:** does SVE's ECE fall below the single model's without losing accuracy, and how
# close does it come to the deep ensemble — at a fraction of its trainable parameters?

# %% tags=["parameters"]
QUICK = 0  # 1: the tiniest real settings (tests); 0: full mode
ECE_CLOSE = 0.01  # "close to the deep ensemble": SVE's ECE at most 1 percentage point higher
ACC_CLOSE = 0.01  # "no accuracy loss": SVE's accuracy at most 1 point lower than the single model's

# %%
import nbtools as nb
import pandas as pd

QUICK = nb.quick_mode(QUICK)
out = nb.outputs("01_in_distribution", QUICK)
config = nb.load_config("01_in_distribution", QUICK,
                        quick_sizes=dict(methods=["single", "deep_ensemble", "sve"]))
print(nb.describe(config, QUICK))

# %% [markdown]
# ## Train every method (or reuse a finished run of the same config)

# %%
run = nb.run(config, out)
run

# %% [markdown]
# ## Table 1 analog: test metrics, mean ± std over seeds, before and after temperature scaling
# Accuracy and ECE in %, NLL and Brier raw (Brier = sum over classes of the squared error), ECE with
# 15 equal-width bins.

# %%
summary, table = nb.calibration_summary(run, out, extra=["temperature"])
table

# %% [markdown]
# ### The paper's numbers (%, NLL / Brier raw), for comparison
# Flowers102 with DINO ViT-S/16 and Oxford Pets with DINOv2 ViT-S/14, M = 4 (papernotes summary of
# v1 Table 1; "–" = not reported).

# %%
paper = pd.DataFrame(
    [("Flowers102", "single", 86.3, 3.9, 0.56, 0.20), ("Flowers102", "svf", 91.8, None, None, None),
     ("Flowers102", "deep_ensemble", 91.5, 0.9, 0.33, 0.12),
     ("Flowers102", "lora_ensemble", 94.6, 1.1, 0.21, 0.08), ("Flowers102", "sve", 95.4, 1.0, 0.18, 0.07),
     ("Oxford Pets", "batch_ensemble", None, 48.7, None, None),
     ("Oxford Pets", "deep_ensemble", 89.2, 13.3, 0.43, 0.17),
     ("Oxford Pets", "lora_ensemble", 86.1, 9.0, 0.49, 0.22), ("Oxford Pets", "sve", 90.1, 2.2, 0.30, 0.15)],
    columns=["dataset", "method", "accuracy", "ece", "nll", "brier"]).set_index(["dataset", "method"])
paper.astype(object).fillna("–")

# %% [markdown]
# ## Figures: reliability before / after temperature scaling, confidence, selective prediction
# Seed 0 of every method (the standard figures of the run).

# %%
figs = run.figures()
keep = ["reliability_test", "reliability_test_ts", "confidence_test", "risk_coverage_test", "cost"]
figs = {k: figs[k] for k in keep if k in figs}
for fig in figs.values():
    fig.show()
out.export(figs)

# %% [markdown]
# ## The claims, decided over seeds
# Each claim compares SVE with another method seed by seed (seed s of both: the same split, data
# order and init draw) on the raw test metrics, with a 95 % t-interval of the mean paired difference
# (`sve.stats`). **held** / **did not hold**: the whole interval is on one side of the threshold;
# **inconclusive**: it straddles it; **not converged**: a run of either side did not converge by the
# rule (`sve.stats.converged`, column `converged` of the table) — then the numbers are shown but
# no verdict. Thresholds are fixed here, before the runs: "no accuracy loss" allows 1 pp, "close to
# the deep ensemble" allows SVE's ECE to be at most 1 pp higher.

# %%
from sve.stats import Claim

others = [m for m in ("deep_ensemble", "lora_ensemble", "batch_ensemble") if m in run.methods]
raw_claims = [
    Claim("sve", "single", "ece", "lower", text="SVE's ECE is below the single model's"),
    Claim("sve", "single", "accuracy", "higher", threshold=-ACC_CLOSE,
          text="SVE loses no accuracy to the single model"),
    Claim("sve", "deep_ensemble", "ece", "lower", threshold=-ECE_CLOSE,
          text="SVE's ECE is close to (not worse than) the deep ensemble's"),
] + [Claim("sve", m, "ece", "lower", text=f"SVE's ECE is below {m}'s (lowest of the ensembles)")
     for m in others]
ts_claims = [Claim("sve", "single", "ece", "lower",
                   text="(after temperature scaling) SVE's ECE is below the single model's")]
verdicts = [nb.decide(run, raw_claims),
            nb.decide(run, ts_claims, where={"split": "test", "member": "ensemble", "calibration": "ts"})]
nb.verdicts_table(*verdicts)[["verdict", "evidence"]]

# %% [markdown]
# ## What we found
# Written from the verdicts just computed (nothing below is typed in by hand):

# %%
out.conclude(*verdicts)
