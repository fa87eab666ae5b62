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
# # 03 · Text classification: calibration and OOD (paper: SST-2 with BERT-base, M = 8)
# **Full scale:** `configs/paper/table1-sst2-bert-base.yaml` (`python -m sve run CONFIG`)
#
# **Mirrors** the paper's NLP row: BERT-base on SST-2 with M = 8 (deep ensemble 93.2 % / ECE 4.7,
# LoRA-Ensemble 92.7 / 3.8, SVE 92.0 / 2.8 — SVE loses a little accuracy but calibrates best).
#
# **Offline analog.** **all-MiniLM-L6-v2** (a 6-layer BERT, 22.7 M parameters) on **BBC News** topic
# classification. SST-2 and BERT-base weights cannot be had offline; BBC is the only packaged
# labelled news set. Two topics (**sports, tech**) are held out of training as *near*-OOD, and
# **chatterbot** conversation lines are *far*-OOD. The deep ensemble (8 full MiniLM copies) is left
# out: eight full fine-tunes do not fit the CPU budget; LoRA-Ensemble is the paper's closest baseline.
#
# **Sizes (full mode, `configs/03_nlp.yaml`):** texts cut to 32 tokens, 128 training (about 43 per
# topic) / 64 validation / 192 test documents of the 3 remaining topics, 192 per OOD set, 12 epochs
# (1 warm-up), batch 16, M = 8,
# **5 seeds** (the claims are decided on paired differences over them); the authors' recipe: AdamW at
# each method's default learning rate, weight decay 0.05, grad-norm clip 1.0, linear warm-up then cosine
# decay stepped per epoch (warm-up at most half of the epochs). Medium mode (`QUICK=0 MEDIUM=1`, for a
# slow machine): the same with 256 / 64 / 256 / 256 samples and 2 epochs (1 warm-up). QUICK mode:
# MiniLM-L3 (3 layers), 32 tokens, 64 / 32 / 32 / 32 texts, 1 epoch, M = 2, one seed.
#
# **What to look for:** SVE's ECE against the single model and LoRA-Ensemble at (nearly) the same
# accuracy, and whether its mutual information flags held-out topics and chit-chat.

# %% [markdown]
# **Where this differs from the paper, and why**
# - all-MiniLM-L6-v2 on BBC News topics instead of BERT-base on SST-2 sentiment: neither BERT-base
#   weights nor SST-2 can be had offline.
# - No deep ensemble (eight full MiniLM fine-tunes do not fit the CPU budget); the single model is added.
# - 32 tokens, 128 training documents, 12 epochs (1 warm-up): the CPU budget (two shared cores) and
#   the convergence measurements (docs/RESULTS.md, Status: 64 tokens cost about 20 min a seed; on
#   notebook 01's images 128 samples × 12 epochs converge the full fine-tunings where 256 × 6 did
#   not); the paper's BERT epochs and batch size are not known. Every verdict is gated on the
#   convergence rule.
# - Heads train at 1e-3 (`head_lr`) in every method, the lr SVE uses for everything; the paper gives
#   the full fine-tunings one lr (1e-4) for body and head. Their heads start at N(0, 0.01²) and at 1e-4
#   barely move in the ~100 steps two CPU cores afford (measured on notebook 01's images: the single
#   model's validation accuracy after 6 epochs 63 % → 72 %, one seed).
# - 5 seeds instead of 3: a 95 % interval of a paired difference needs them.
#
# **Thresholds, fixed before the runs.** `ACC_SLACK`: "no accuracy loss" allows SVE's accuracy to be at
# most 1 point below the single model's (non-inferiority; the paper's SVE loses 1.2 points to the deep
# ensemble on SST-2). The ECE claims and "flags OOD text better" ask for any gain (threshold 0).

# %% tags=["parameters"]
QUICK = 0  # 1: the tiniest real settings (tests); 0: full mode
ACC_SLACK = 0.01  # accuracy SVE may lose to the single model and still count as "no loss" (1 pp)
AUROC_GAIN = 0.0  # "flags OOD better": SVE's AUROC (MI) above the single model's best score

# %%
import nbtools as nb
import pandas as pd

QUICK = nb.quick_mode(QUICK)
out = nb.outputs("03_nlp", QUICK)
config = nb.load_config("03_nlp", QUICK, quick_sizes=dict(backbone="minilm-l3", image_size=None,
                                                          max_length=32))
print(nb.describe(config, QUICK))

# %% [markdown]
# ## Train (or reuse) the models

# %%
run = nb.run(config, out)
run

# %% [markdown]
# ## Calibration on the test topics (accuracy / ECE in %, mean ± std over seeds)

# %%
summary, table = nb.calibration_summary(run, out)
table

# %% [markdown]
# ### The paper's SST-2 numbers (BERT-base, M = 8; %)

# %%
pd.DataFrame({"accuracy": [93.2, 92.7, 92.0], "ece": [4.7, 3.8, 2.8], "nll": [0.23, 0.21, 0.21]},
             index=pd.Index(["deep_ensemble", "lora_ensemble", "sve"], name="method"))

# %% [markdown]
# ## OOD: held-out topics (near) and chatterbot (far) — AUROC %, mean ± std

# %%
SCORES = ("msp", "entropy", "mutual_info", "energy")
ood_splits = [s for s in run.splits if s.startswith("ood:")]
ood_rows = run.metrics[run.metrics["split"].isin(ood_splits) & (run.metrics["member"] == "ensemble")
                       & (run.metrics["calibration"] == "none")]
ood_summary = nb.mean_std(ood_rows, [f"auroc_{s}" for s in SCORES] + ["fpr95_mutual_info"],
                          by=["split", "method"])
out.save_table(ood_summary, "_ood")
nb.pm(ood_summary, 100, digits=1)

# %% [markdown]
# ## Figures

# %%
figs = run.figures()
keep = [k for k in figs if k.startswith(("reliability_test", "ood_", "risk_coverage"))]
figs = {k: figs[k] for k in keep}
for fig in figs.values():
    fig.show()
out.export(figs)

# %% [markdown]
# ## The claims, decided over seeds
# Each claim compares SVE with another method seed by seed (seed s of both) with a 95 % t-interval of
# the mean paired difference (`sve.stats`): **held** / **did not hold** when the whole interval is on one
# side of the threshold, **inconclusive** when it straddles it, **not converged** when a run of either
# side did not converge by the rule (`converged` column). The calibration claims use the raw test
# metrics (one claim after temperature scaling). "Flags OOD text better" compares SVE's AUROC with
# mutual information with the single model's best of MSP / entropy / energy, the best picked **per
# seed** on the test data (a derived table, `nb.mi_against_best_single`; this favours the single model).

# %%
from sve.stats import Claim

raw_claims = [
    Claim("sve", "single", "ece", "lower", text="SVE's ECE is below the single model's"),
    Claim("sve", "single", "accuracy", "higher", threshold=-ACC_SLACK,
          text="SVE loses no accuracy to the single model"),
    Claim("sve", "lora_ensemble", "ece", "lower",
          text="SVE calibrates better than LoRA-Ensemble (SST-2: 2.8 vs 3.8)"),
]
ts_claims = [Claim("sve", "single", "ece", "lower",
                   text="(after temperature scaling) SVE's ECE is below the single model's")]
verdicts = [nb.decide(run, raw_claims),
            nb.decide(run, ts_claims, where={"split": "test", "member": "ensemble", "calibration": "ts"})]
for split in ood_splits:
    name = split.split(":", 1)[1]
    verdicts.append(nb.ood_beats_single(run, split, AUROC_GAIN,
                                        f"SVE flags OOD text better than the single model ({name})"))
nb.verdicts_table(*verdicts)[["verdict", "evidence"]]

# %% [markdown]
# ## What we found
# Written from the verdicts just computed (nothing below is typed in by hand):

# %%
out.conclude(*verdicts)
