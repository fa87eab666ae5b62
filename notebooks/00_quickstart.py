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
# # 00 · Quickstart: four singular-value members on one pretrained ViT
# **Full scale:** `configs/paper/table1-flowers102-dino-vits16.yaml` (`python -m sve run CONFIG`)
#
# **Mirrors** the paper's core recipe (§1 of the method): every linear layer of a pretrained
# DINOv2 ViT-S/14 is decomposed once, W = U diag(s) Vᵀ; U and V stay frozen and shared, and each of
# M = 4 members trains only its own singular values s_m (initialised at s·(1+ε), ε ~ N(0, 0.01²)),
# its own biases and its own linear head. The members train jointly on the same batches.
#
# **Offline analog.** MNIST-5k digits (in distribution) and Animal-MNIST sketches (out of
# distribution), both pip-installable, stand in for the paper's natural-image sets; DINOv2-S is the
# paper's own Oxford-Pets backbone.
#
# **Sizes (full mode, `configs/00_quickstart.yaml`):** 28 px inputs, 512 training / 128 validation / 256
# test / 256 OOD images, 3 epochs (1 warm-up), batch 16, M = 4, 3 seeds. Medium mode (`QUICK=0 MEDIUM=1`,
# for a slow machine): the same with 256 / 64 / 256 / 256 samples and 2 epochs (1 warm-up).
# QUICK mode (tests): 64 / 32 / 32 / 32 images, 1 epoch, M = 2, one seed, members in the last 2 blocks
# only. The same experiment from a shell: `python -m sve run configs/00_quickstart.yaml`.
#
# **What to look for:** the ensemble's reliability diagram hugging the diagonal more closely than its
# members', and members whose singular values drift apart from the pretrained spectrum — the source
# of their disagreement — for well under 1 % extra parameters.

# %% tags=["parameters"]
QUICK = 0  # 1: the tiniest real settings (tests); 0: full mode

# %%
import nbtools as nb

QUICK = nb.quick_mode(QUICK)
out = nb.outputs("00_quickstart", QUICK)
config = nb.load_config("00_quickstart", QUICK)
print(nb.describe(config, QUICK))

# %% [markdown]
# ## Train the members

# %%
run = nb.run(config, out)
run

# %% [markdown]
# ## Ensemble versus its own members (test set, mean ± std over seeds)
# Accuracy and ECE in %. `member` 0…M−1 are the individual members, each scored on its own.

# %%
test = run.metrics
test = test[(test["split"] == "test") & (test["calibration"] == "none")].copy()
test["model"] = ["ensemble" if m == "ensemble" else "single member" for m in test["member"]]
by_model = nb.mean_std(test, nb.CALIBRATION, by=["model"])
per_member = nb.mean_std(test, nb.CALIBRATION, by=["member"])
out.save_table(per_member)
nb.pm(by_model, {"accuracy": 100, "ece": 100}, digits=2)

# %%
nb.pm(per_member, {"accuracy": 100, "ece": 100}, digits=2)

# %% [markdown]
# ## Out-of-distribution: MNIST test digits versus Animal-MNIST
# AUROC (OOD = positive) of four uncertainty scores of the ensemble; mutual information exists only
# for an ensemble.

# %%
ood = nb.rows(run, split="ood:animal-mnist")
ood_summary = nb.mean_std(ood, [f"auroc_{s}" for s in ("msp", "entropy", "mutual_info", "energy")])
nb.pm(ood_summary, 100, digits=1)

# %% [markdown]
# ## Cost: trainable parameters beyond the frozen backbone

# %%
cost = run.cost("sve")
{k: cost[k] for k in ("base", "members", "sigma", "bias", "heads", "overhead_pct", "train_time_s")}

# %% [markdown]
# ## Figures: reliability, σ spectra, member distances, OOD score histograms

# %%
figs = run.figures()
keep = [k for k in figs if k.startswith(("reliability_test", "spectrum", "member_distances", "ood_"))]
figs = {k: figs[k] for k in keep}
for fig in figs.values():
    fig.show()
out.export(figs)

# %% [markdown]
# ## What we found
# Decided from the tables above (the rules are stated next to each verdict):

# %%
members = per_member.drop(index="ensemble")


def ensemble_better_calibrated():
    e, m = per_member.loc["ensemble", "ece"], members["ece"].mean()
    return e < m, f"ensemble ECE {100 * e:.2f} % vs mean member ECE {100 * m:.2f} %"


def ensemble_not_less_accurate():
    e, m = per_member.loc["ensemble", "accuracy"], members["accuracy"].mean()
    return e >= m, f"ensemble accuracy {100 * e:.2f} % vs mean member {100 * m:.2f} %"


def overhead_below_one_percent():
    pct = cost["overhead_pct"]
    return pct < 1.0, (f"{pct:.3f} % of the backbone's {cost['base']:,} parameters "
                       f"(σ + biases, M = {cost['members']}; the M − 1 extra members: "
                       f"{cost['extra_members_pct']:.3f} %)")


claims = [
    nb.claim("Averaging the members calibrates better than a member alone", "ensemble ECE < mean member ECE",
             ensemble_better_calibrated),
    nb.claim("Averaging costs no accuracy", "ensemble accuracy ≥ mean member accuracy",
             ensemble_not_less_accurate),
    nb.claim("SVE adds under 1 % parameters", "overhead_pct (σ + biases, heads excluded) < 1",
             overhead_below_one_percent),
]
out.conclude(claims)
