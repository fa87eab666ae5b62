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
# # 06 · Ablations: ensemble size, initial spread, targeted layers, σ decay, averaging rule
# **Full scale:** `configs/paper/ablations-flowers102-dino-vits16.yaml` (`python -m sve run CONFIG`)
#
# **Mirrors** the paper's ablations (known only from text: "Appendix B–D" in the papernotes summary):
# calibration improves as M grows over {4, 8, 16}; results are robust to σ_init over 0.001–0.1;
# attention-only SVE uses fewer parameters at slightly lower accuracy. We add two questions the paper
# leaves open (reference §5): weight decay of the singular values toward **0** (the authors' AdamW) or
# toward their **pretrained** values, and averaging member **probabilities** (the README) versus
# **logits** (the authors' code).
#
# **Offline analog.** DINOv2 ViT-S/14 on notebook 01's task (Fashion-MNIST, MNIST digits as OOD set)
# at 28 px, so that eleven SVE variants × five seeds fit the CPU budget.
#
# **Sizes (full mode, `configs/06_ablations.yaml`):** 28 px, 128 training / 128 validation / 384 test /
# 192 OOD images, 12 epochs (1 warm-up), batch 16, **5 seeds** for every variant (they share one run, so the
# ensemble-size sweep and every other claim are decided on paired differences over the 5 seeds); the
# authors' recipe: AdamW at SVE's default learning rate, weight decay 0.05, grad-norm clip 1.0, linear
# warm-up then cosine decay stepped per epoch (warm-up at most half of the epochs). Variants M ∈ {1, 2,
# 4, 8, 16}; init_std ∈ {0.001, 0.01, 0.1}; targets all / attention / mlp / last 4 blocks (M = 4), plus
# a second run (same seeds) with σ decay toward the pretrained values. Probability versus logit
# averaging is scored on the *same* trained members (their stored logits), so only the averaging rule
# differs. QUICK mode: 64 / 32 / 32 images, 1 epoch, one seed, three variants (M = 2, M = 4, init_std
# 0.1, all at M ≤ 4) and the σ-decay run; the claims on variants it leaves out read "undecided".
#
# **What to look for:** ECE and NLL against M; flat rows across init_std; the accuracy / parameter
# trade-off of the target sets.

# %% [markdown]
# **Where this differs from the paper, and why**
# - Fashion-MNIST with MNIST digits as OOD set (notebook 01's task): the paper's ablation data are not
#   known (its appendices are known only from text).
# - 28 px, not the 56 px the linear probe chose for the study (28 px is 1.5 pp below it, 2.9 pp below
#   the best size): ten variants up to M = 16 × five seeds at 56 px cost about 2.5 h on two cores,
#   over the 60-min budget. So `sve-m4` here is not notebook 01's SVE (56 px).
# - 128 training images (a few-shot regime) × 12 epochs (1 warm-up) instead of the full data × 10
#   epochs (5 warm-up): the CPU budget and the convergence measurements (docs/RESULTS.md, Status);
#   every verdict is gated on the convergence rule.
# - M ∈ {1, 2, 4, 8, 16} extends the paper's {4, 8, 16}; 5 seeds for the paired 95 % intervals.
# - σ decay toward the pretrained values and probability versus logit averaging are our own questions.
#
# **Thresholds, fixed before the runs** (each claim against the default variant `sve-m4`: M = 4,
# init_std 0.01, all layers, σ decay toward 0, probability averaging).
# `M_GAIN`: "calibration improves as M grows" asks M = 16's ECE to be lower than M = 4's by more than
# 0 points. `INIT_CLOSE`: "robust to init_std" asks accuracy and ECE at init_std 0.001 and 0.1 to be
# within ±1 point of init_std 0.01 (an equivalence check). `ATTN_SLACK`: "slightly lower accuracy" for
# attention-only SVE means lower than all layers, but by at most 1 point. `OPEN_GAIN`: the two open
# questions ask for a lower ECE by more than 0 points.

# %% tags=["parameters"]
QUICK = 0  # 1: the tiniest real settings (tests); 0: full mode
M_GAIN = 0.0  # "calibration improves with M": ECE at M = 16 below M = 4's
INIT_CLOSE = 0.01  # "robust to init_std": accuracy and ECE within ±1 pp of the default init_std
ATTN_SLACK = 0.01  # "slightly lower accuracy": attention-only at most 1 pp below all layers
OPEN_GAIN = 0.0  # open questions: σ decay toward pretrained / probability averaging lower ECE

# %%
import nbtools as nb
import pandas as pd

from sve import metrics

QUICK = nb.quick_mode(QUICK)
out = nb.outputs("06_ablations", QUICK)
config = nb.load_config("06_ablations", QUICK)
if QUICK:  # three variants at M ≤ 4 (the run-level M is 4, as in full mode)
    keep = {"sve-m2", "sve-m4", "sve-std0.1"}
    config = nb.load_config("06_ablations", QUICK, quick_sizes=dict(members=4),
                            methods=[m for m in config.methods if m["label"] in keep])
decay = nb.load_config("06_ablations", QUICK, quick_sizes=dict(members=4), sigma_decay="pretrained",
                       methods=[{"name": "sve", "label": "sve-decay-pretrained", "members": 4}])
print(nb.describe(config, QUICK))
print(nb.describe(decay, QUICK))

# %% [markdown]
# ## Train (or reuse) the variants

# %%
run = nb.run(config, out)
run_decay = nb.run(decay, out)

# %% [markdown]
# ## All variants: test metrics and OOD AUROC (MI), mean ± std over seeds
# Accuracy / ECE / AUROC in %. `overhead_pct`: σ + biases as a share of the backbone's parameters.

# %%
table = pd.concat([run.metrics, run_decay.metrics])
test = nb.rows(table)
ood = nb.rows(table, split=f"ood:{config.ood[0]}")[["method", "seed", "auroc_mutual_info"]]
merged = test.merge(ood, on=["method", "seed"])
merged["overhead_pct"] = [(run if m in run.methods else run_decay).cost(m, s)["overhead_pct"]
                          for m, s in zip(merged["method"], merged["seed"])]
COLUMNS = list(nb.CALIBRATION) + ["auroc_mutual_info", "members", "overhead_pct"]
summary = nb.mean_std(merged, COLUMNS)
out.save_table(summary)
nb.pm(summary.drop(columns=["members_std", "overhead_pct_std"]),
      {"accuracy": 100, "ece": 100, "auroc_mutual_info": 100}, digits=2)

# %% [markdown]
# ## Probability versus logit averaging (same members, stored test logits; seed-wise, then mean ± std)

# %%
records = []
for method in (m for m in run.methods if run.cost(m)["members"] > 1):
    for seed in (s for label, s in run.done if label == method):
        logits, labels = run.logits(method, seed, "test")
        for rule in ("prob", "logit"):
            row = metrics.evaluate(logits, labels, combine=rule).loc["ensemble"]
            records.append({"method": f"{method} ({rule})", "variant": method, "combine": rule, "seed": seed,
                            "converged": run.converged(method, seed), **{k: row[k] for k in nb.CALIBRATION}})
averaging = pd.DataFrame(records)  # one row per variant × averaging rule × seed
combine = nb.mean_std(averaging, nb.CALIBRATION, by=["variant", "combine"])
out.save_table(combine, "_combine")
nb.pm(combine, {"accuracy": 100, "ece": 100}, digits=2)

# %% [markdown]
# ## Figures: metrics against M, and the σ drift of the M = 4 variant

# %%
from sve import plots

sizes = summary[summary.index.str.fullmatch(r"sve-m\d+")].reset_index()
figs = {"ensemble_size": plots.shift_curves(sizes, x="members", columns=("accuracy", "ece", "nll"),
                                            by=None, title="SVE versus ensemble size M")}
figs["ensemble_size"].update_xaxes(title_text="members M", type="log", tickvals=[1, 2, 4, 8, 16], dtick=None)
figs["ensemble_size"].update_layout(showlegend=False)
drift = "sve-m4"
figs[f"spectrum_history_{drift}"] = plots.spectrum_history(
    run.spectra_history(drift, config.seeds[0], by="step"),
    title=f"σ drift during training ({drift}, all layers)")
figs.update({k: v for k, v in run.figures().items() if k.startswith("reliability_test")})
for fig in figs.values():
    fig.show()
out.export(figs)

# %% [markdown]
# ## The claims, decided over seeds
# Each claim compares two variants seed by seed (seed s of both: the same data order and init draw)
# on the test set, with a 95 % t-interval of the mean paired difference (`sve.stats`): **held** /
# **did not hold** when the whole interval is on one side of the threshold (for "within ±δ": inside /
# wholly outside ±δ), **inconclusive** when it straddles it, **not converged** when a run of either
# side did not converge by the rule (`converged` column). The σ-decay variant is a second run with the
# same seeds, so its rows pair with `sve-m4`'s. The averaging claim compares the two rules on the same
# members (a derived table: one row per variant, rule and seed). The parameter count of attention-only
# SVE is an exact check.

# %%
from sve.stats import Claim

variant_claims = [
    Claim("sve-m16", "sve-m4", "ece", "lower", threshold=M_GAIN,
          text="Calibration improves as M grows (ECE at M = 16 below M = 4)"),
] + [Claim(variant, "sve-m4", metric, kind="close", threshold=INIT_CLOSE,
           text=f"Robust to init_std: {metric} at init_std {variant[len('sve-std'):]} close to 0.01's")
     for variant in ("sve-std0.001", "sve-std0.1") for metric in ("accuracy", "ece")] + [
    Claim("sve-m4", "sve-attention", "accuracy", "higher",
          text="Attention-only SVE has lower accuracy than all layers"),
    Claim("sve-attention", "sve-m4", "accuracy", "higher", threshold=-ATTN_SLACK,
          text="Attention-only SVE loses only slightly (at most the stated slack)"),
    Claim("sve-decay-pretrained", "sve-m4", "ece", "lower", threshold=OPEN_GAIN,
          text="(open question) σ decay toward pretrained calibrates better than toward 0"),
]
averaging_claim = Claim("sve-m4 (prob)", "sve-m4 (logit)", "ece", "lower", threshold=OPEN_GAIN,
                        text="(open question) probability averaging calibrates better than logit averaging")


def attention_cheaper():
    a, full = summary.loc["sve-attention"], summary.loc["sve-m4"]
    return a["overhead_pct"] < full["overhead_pct"], (
        f"attention-only {a['overhead_pct']:.3f} % of the backbone's parameters vs all layers "
        f"{full['overhead_pct']:.3f} %")


verdicts = [nb.decide(run, variant_claims, table=test), nb.decide(run, [averaging_claim], table=averaging),
            [nb.claim("Attention-only SVE trains fewer parameters", "overhead_pct lower than all layers'",
                      attention_cheaper)]]
nb.verdicts_table(*verdicts)[["verdict", "evidence"]]

# %% [markdown]
# ## What we found
# Written from the verdicts just computed (nothing below is typed in by hand):

# %%
out.conclude(*verdicts)
