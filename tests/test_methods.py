"""sve.methods: one battery over the method table (PEFT-style), plus method-specific checks.

Backbones: a tiny random timm ViT (16 px, 2 blocks) for the battery, a tiny random HF BERT and
timm ResNet (conv paths) for shapes / init / merge, and the real offline dinov2-small (the session
fixture) for "at init the adapters reproduce the backbone". Data: sklearn digits via sve.data.
"""

from __future__ import annotations

import contextlib
import functools

import pytest
import tiny
import torch
import torch.nn.functional as F
from torch import nn

import sve
from sve import ensemble, methods, train
from sve.ensemble import member_seed
from sve.errors import ConfigError, DataError, UnknownNameError
from sve.methods import deep_ensemble
from sve.train import fit, predict

M, C = 2, 4
HEADS = ("sve_head_weight", "sve_head_bias")
# (method, options): the method table plus the option variants that change what trains
CASES = [(name, {}) for name in methods.METHODS] + [
    ("batch_ensemble", {"train_shared": True}),
    ("lora_ensemble", {"rank": 2, "alpha": 4.0, "init": "xavier", "init_gain": 2.0}),
]
IDS = [name + "".join(f"-{k}={v}" for k, v in opts.items()) for name, opts in CASES]


pytestmark = pytest.mark.usefixtures("one_thread")


# ----------------------------------------------------------------------------------------------
# backbones and data


_vit = functools.cache(lambda: tiny.vit(img_size=16, depth=2))
_bert = functools.cache(lambda: tiny.bert(layers=2))
_resnet = functools.cache(tiny.resnet)


def _inputs(kind: str, n: int = 3) -> dict:
    gen = torch.Generator().manual_seed(1)
    if kind == "bert":
        ids = torch.randint(1, 100, (n, 7), generator=gen)
        mask = torch.ones_like(ids)
        mask[0, 4:] = 0  # one padded row
        return {"input_ids": ids * mask, "attention_mask": mask}
    return {"pixel_values": torch.randn(n, 3, 16 if kind == "vit" else 32, 16 if kind == "vit" else 32,
                                        generator=gen)}


BACKBONES = {"vit": _vit, "bert": _bert, "resnet": _resnet}


@functools.cache
def _digits(limit: int = 128):
    from sve import data

    ds = data.prepare(data.load_dataset("digits", "train", limit=limit), _vit())
    return ds, torch.stack([ds[i]["labels"] for i in range(len(ds))])


def _members(name: str) -> int:
    return methods.METHODS[name].members or M


def _trainable(model: nn.Module) -> dict[str, torch.Tensor]:
    return {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}


def _perturb(model: nn.Module, seed: int = 0) -> None:
    """Move every trainable tensor off its init (seeded), as training would."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            if p.requires_grad:
                p.add_(torch.randn(p.shape, generator=gen) * 0.02)


# ----------------------------------------------------------------------------------------------
# what each method should train, and how many parameters that is (from the definitions)


def _intended(name: str, opts: dict, model: nn.Module, pname: str) -> bool:
    leaf = pname.rpartition(".")[2]
    if leaf in HEADS:
        return name != "single" or pname in HEADS
    if name in ("sve", "svf"):
        return leaf in ("sve_sigma", "sve_bias")
    if name in ("single", "mc_dropout"):
        return pname.startswith("trunk.")
    if name == "deep_ensemble":
        return pname.startswith("members.")
    if name == "lora_ensemble":
        return leaf in ("lora_A", "lora_B")
    if name == "batch_ensemble":
        shared = opts.get("train_shared") and leaf == "weight" and isinstance(
            model.get_submodule(pname.rpartition(".")[0]), methods.BatchEnsembleLayer)
        return leaf in ("be_r", "be_s", "be_bias") or bool(shared)
    return False  # head_ensemble: heads only


def _expected_count(name: str, opts: dict, bb, members: int) -> int:
    """Trainable parameters by the formulas of the sve.methods docstring."""
    trunk, n_heads = bb.model, 1 if name == "mc_dropout" else members  # MC dropout: one head
    base, heads = sum(p.numel() for p in trunk.parameters()), n_heads * (bb.feature_dim + 1) * C
    layers = [trunk.get_submodule(n) for n in ensemble.select_targets(bb, "all")]
    has_bias = lambda mod: mod.bias is not None
    fan_in = lambda mod: mod.weight[0].numel()
    per_layer = {
        "sve": lambda m: min(m.weight.shape[0], fan_in(m)) + m.weight.shape[0] * has_bias(m),
        "lora_ensemble": lambda m: opts.get("rank", 8) * (fan_in(m) + m.weight.shape[0]),
        "batch_ensemble": lambda m: m.weight.shape[1] + m.weight.shape[0] * (1 + has_bias(m)),
    }
    per_layer["svf"] = per_layer["sve"]
    if name in per_layer:
        shared = sum(m.weight.numel() for m in layers) if opts.get("train_shared") else 0
        return members * sum(per_layer[name](m) for m in layers) + shared + heads
    trunk_copies = {"single": 1, "mc_dropout": 1, "deep_ensemble": members, "head_ensemble": 0}[name]
    return trunk_copies * base + heads


# ----------------------------------------------------------------------------------------------
# the battery


@pytest.mark.parametrize("kind", list(BACKBONES))
@pytest.mark.parametrize("name", list(methods.METHODS))
def test_output_shape(name, kind):
    model = methods.build(name, BACKBONES[kind](), M, C, seed=0)
    inputs = _inputs(kind)
    with torch.no_grad():
        z = model(**inputs)
        f = model.features(**inputs)
    assert z.shape == (3, _members(name), C) and torch.isfinite(z).all()
    assert f.shape[:2] == (3, _members(name)) and f.shape[2] == BACKBONES[kind]().feature_dim
    assert model.config["method"] == name


@pytest.mark.parametrize(("name", "opts"), CASES, ids=IDS)
def test_only_intended_parameters_train(name, opts):
    bb = _vit()
    model = methods.build(name, bb, M, C, seed=0, **opts)
    named = dict(model.named_parameters())
    wrong = [n for n, p in named.items() if p.requires_grad != _intended(name, opts, model, n)]
    assert not wrong, f"{name}: requires_grad wrong for {wrong[:5]}"
    count = sve.count_parameters(model)
    assert count.trainable == sum(p.numel() for p in named.values() if p.requires_grad)
    assert count.trainable == _expected_count(name, opts, bb, _members(name))

    before = {n: t.detach().clone() for n, t in model.state_dict().items()}
    model.train()
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    model(**_inputs("vit")).logsumexp(-1).mean().backward()
    assert all(p.grad is not None for p in named.values() if p.requires_grad)
    assert all(p.grad is None for p in named.values() if not p.requires_grad)
    opt.step()
    after = model.state_dict()
    trainable = {n for n, p in named.items() if p.requires_grad}
    moved = {n for n in before if not torch.equal(before[n], after[n])}
    assert moved == trainable, f"frozen moved: {moved - trainable}; trainable did not: {trainable - moved}"


@pytest.mark.parametrize("name", list(methods.METHODS))
def test_loss_falls_on_digits(name):
    ds, labels = _digits()
    model = methods.build(name, _vit(), M, 10, seed=0)

    def loss() -> float:
        z = predict(model, ds)
        return float(F.cross_entropy(z.flatten(0, 1), labels.repeat_interleave(z.shape[1])))

    start = loss()
    result = fit(model, ds, None, epochs=3, warmup_epochs=0, lr=methods.default_lr(name), batch_size=16,
                 seed=0, progress=False)
    train_losses = [row["train_loss"] for row in result.history]
    assert loss() < start
    assert train_losses == sorted(train_losses, reverse=True) and train_losses[-1] < train_losses[0]


@pytest.mark.parametrize(("name", "opts"), CASES, ids=IDS)
def test_save_load_round_trip(name, opts, tmp_path):
    bb = _vit()
    model = methods.build(name, bb, M, C, seed=3, **opts)
    _perturb(model)
    path = sve.save(model, tmp_path / "adapter.safetensors")
    loaded = sve.load(bb, path)
    assert type(loaded) is type(model) and loaded.config == model.config
    x = _inputs("vit")
    with torch.no_grad():
        assert torch.equal(model(**x), loaded(**x))


@pytest.mark.parametrize("name", list(methods.METHODS))
def test_same_seed_same_model(name):
    a, b, c = (methods.build(name, _vit(), M, C, seed=s) for s in (7, 7, 8))
    ta, tb, tc = _trainable(a), _trainable(b), _trainable(c)
    assert all(torch.equal(ta[n], tb[n]) for n in ta)
    assert any(not torch.equal(ta[n], tc[n]) for n in ta)
    x = _inputs("vit")
    with torch.no_grad():
        assert torch.equal(a(**x), b(**x))


def test_method_table_and_learning_rates():
    assert set(methods.METHODS) == {"sve", "svf", "single", "deep_ensemble", "lora_ensemble",
                                    "batch_ensemble", "mc_dropout", "head_ensemble"}
    for info in methods.METHODS.values():
        assert info.description and "seed" in info.options
    # the paper's learning rates (full fine-tuning 1e-4, LoRA-Ensemble / SVE 1e-3) and ours for the rest
    expected = {"sve": 1e-3, "svf": 1e-3, "lora_ensemble": 1e-3, "batch_ensemble": 1e-3,
                "head_ensemble": 1e-3, "single": 1e-4, "deep_ensemble": 1e-4, "mc_dropout": 1e-4}
    assert {name: methods.default_lr(name) for name in methods.METHODS} == expected
    assert methods.METHODS["lora_ensemble"].options["rank"] == 8
    # single / svf are one model whatever the ensemble size asked for
    assert methods.build("single", _vit(), 4, C, seed=0).num_members == 1
    assert methods.build("svf", _vit(), 4, C, seed=0).num_members == 1


# ----------------------------------------------------------------------------------------------
# LoRA-Ensemble and BatchEnsemble


@pytest.mark.parametrize("kind", list(BACKBONES))
@pytest.mark.parametrize(("name", "opts"), [("lora_ensemble", {}), ("batch_ensemble", {"init": "ones"})],
                         ids=["lora-B0", "be-ones"])
def test_adapters_at_init_reproduce_the_backbone(name, opts, kind):
    bb, inputs = BACKBONES[kind](), _inputs(kind)
    with torch.no_grad():
        base = bb.features(**inputs)
        feats = methods.build(name, bb, M, C, seed=0, **opts).features(**inputs)
        jittered = methods.build("batch_ensemble", bb, M, C, seed=0).features(**inputs)
    assert torch.allclose(feats, base[:, None].expand_as(feats), atol=1e-5, rtol=1e-4)
    # control: BatchEnsemble's default N(1, 0.01²) init moves the features and splits the members
    assert not torch.allclose(jittered[:, 0], jittered[:, 1], atol=1e-6)


@pytest.mark.parametrize("kind", ["vit", "resnet"])
@pytest.mark.parametrize("name", ["lora_ensemble", "batch_ensemble"])
def test_merge_reproduces_each_member(name, kind):
    """member_weight(m) (the dense W_m, b_m) agrees with the batched forward, linear and conv."""
    model = methods.build(name, BACKBONES[kind](), M, C, seed=0)
    _perturb(model, seed=1)
    x = _inputs(kind)
    with torch.no_grad():
        z = model(**x)
        assert not torch.allclose(z[:, 0], z[:, 1])
        for m in range(M):
            assert torch.allclose(sve.merge(model, m)(**x), z[:, m], atol=1e-5, rtol=1e-4)


def test_lora_math_on_one_layer():
    layer = nn.Linear(6, 5)
    lora = methods.LoRALayer(layer, 2, torch.Generator().manual_seed(0), rank=3, alpha=6.0)
    _perturb(lora)
    x = torch.randn(2 * 4, 6)
    with torch.no_grad():
        y = lora(x).reshape(2, 4, 5)
        for m in range(2):
            W = layer.weight + 2.0 * lora.lora_B[m] @ lora.lora_A[m]  # alpha / rank = 2
            assert torch.allclose(y[m], x.reshape(2, 4, 6)[m] @ W.T + layer.bias, atol=1e-6)


def test_batch_ensemble_math_on_one_layer_and_decay_anchors():
    layer = nn.Linear(6, 5)
    be = methods.BatchEnsembleLayer(layer, 2, torch.Generator().manual_seed(0), init="sign")
    assert set(be.be_r.unique().tolist()) == {-1.0, 1.0} and torch.equal(be.be_bias[0], layer.bias.detach())
    _perturb(be)
    x = torch.randn(2 * 4, 6)
    with torch.no_grad():
        y = be(x).reshape(2, 4, 5)
        for m in range(2):
            W = layer.weight * torch.outer(be.be_r[m], be.be_s[m])
            assert torch.allclose(y[m], x.reshape(2, 4, 6)[m] @ W.T + be.be_bias[m], atol=1e-6)
    assert torch.equal(be.decay_anchors()["be_r"], torch.ones(2, 5))


def test_batch_ensemble_trains_with_decay_toward_one():
    ds, _ = _digits(32)
    model = methods.build("batch_ensemble", _vit(), M, 10, seed=0, init="ones")
    fit(model, ds, None, epochs=1, warmup_epochs=0, weight_decay=0.5, batch_size=16, seed=0,
        sigma_decay="pretrained", progress=False)
    layer = next(iter(model.layers().values()))
    assert torch.isfinite(layer.be_r).all() and not torch.equal(layer.be_r, torch.ones_like(layer.be_r))


# ----------------------------------------------------------------------------------------------
# deep ensemble


# lr 3e-3 on these 64 + 32 digits: the two singles pick different best epochs, both before the last
KW = dict(epochs=4, warmup_epochs=1, lr=3e-3, batch_size=16, grad_clip=0.05, progress=False)


@functools.cache
def _digits_split() -> tuple:
    ds, _ = _digits(96)
    return torch.utils.data.Subset(ds, range(64)), torch.utils.data.Subset(ds, range(64, 96))


@pytest.fixture(scope="module")
def singles():
    """`single` models trained alone, model m built with seed member_seed(5, m) = 5 + 1000·m and fit with
    seed member_seed(3, m) (its own data order), clipped and early-stopped on its own: (model, FitResult,
    train logits)."""
    tr, va = _digits_split()
    out = []
    for m in range(2):
        model = methods.build("single", _vit(), 1, 10, seed=member_seed(5, m))
        result = fit(model, tr, va, seed=member_seed(3, m), **KW)
        out.append((model, result, predict(model, tr)[:, 0]))
    return out


@pytest.mark.parametrize("vectorize", [True, False], ids=["vmap", "loop"])
def test_deep_ensemble_member_equals_a_single_trained_alone(vectorize, singles, tmp_path):
    """Member m of a deep ensemble (build seed 5, fit seed 3) = the single of build seed
    member_seed(5, m) trained alone by fit(seed=member_seed(3, m)): own data order, own gradient
    clipping, own best epoch."""
    tr, va = _digits_split()
    assert singles[0][1].best_epoch != singles[1][1].best_epoch  # the own-best-epoch part is tested
    model = methods.build("deep_ensemble", _vit(), 2, 10, seed=5, vectorize=vectorize)
    result = fit(model, tr, va, seed=3, checkpoint_dir=tmp_path, **KW)
    assert model.vectorize == vectorize  # vmap did not fall back to the loop
    z = predict(model, tr)
    assert result.member_best_epochs == [r.best_epoch for _, r, _ in singles]
    assert result.best_epoch == max(result.member_best_epochs)
    for m, (_, alone, single) in enumerate(singles):
        if vectorize:  # batched kernels round differently
            torch.testing.assert_close(z[:, m], single, atol=1e-5, rtol=1e-5)
        else:
            assert torch.equal(z[:, m], single)
        own = train.member_histories(result.history)[m]
        assert [r["val_nll"] for r in own] == pytest.approx([r["val_nll"] for r in alone.history], abs=1e-5)
    assert result.converged == all(r.converged for _, r, _ in singles)
    saved = sve.load(_vit(), tmp_path / "best.safetensors")  # the assembled best members
    assert torch.equal(predict(saved, tr), z)


def test_deep_ensemble_joint_training_shares_the_batches():
    """independent=False: every member sees fit's one data order, so (no clip, no validation) member m
    = the single of build seed member_seed(5, m) trained by fit with the same seed."""
    tr, _ = _digits_split()
    kw = dict(KW, epochs=2, grad_clip=None)
    model = methods.build("deep_ensemble", _vit(), 2, 10, seed=5, vectorize=False)
    result = fit(model, tr, None, seed=3, independent=False, **kw)
    assert result.member_best_epochs is None
    z = predict(model, tr)
    for m in range(2):
        single = methods.build("single", _vit(), 1, 10, seed=member_seed(5, m))
        fit(single, tr, None, seed=3, **kw)
        assert torch.equal(z[:, m], predict(single, tr)[:, 0])


def test_deep_ensemble_member_batches():
    model = methods.build("deep_ensemble", _vit(), M, C, seed=0)
    _perturb(model)
    x = _inputs("vit", n=2 * M)["pixel_values"]
    with torch.no_grad():
        own = model(x, member_batches=True)  # member m on rows 2m, 2m + 1
        for m in range(M):
            torch.testing.assert_close(own[:, m], model(x[2 * m:2 * m + 2])[:, m], atol=1e-5, rtol=1e-5)
        with pytest.raises(DataError, match="member-major"):
            model(x[:3], member_batches=True)


def test_stack_makes_a_deep_ensemble_of_trained_singles(singles, tmp_path):
    ds, _ = _digits_split()
    model = methods.stack([s for s, _, _ in singles])
    z = predict(model, ds)
    for m, (_, _, single) in enumerate(singles):
        torch.testing.assert_close(z[:, m], single, atol=1e-5, rtol=1e-5)
    loaded = sve.load(_vit(), sve.save(model, tmp_path / "stacked.safetensors"))
    assert torch.equal(predict(loaded, ds), z)
    with pytest.raises(ConfigError, match="single"):
        methods.stack([model])
    with pytest.raises(ConfigError, match="single"):
        methods.stack([])


def test_deep_ensemble_vmap_matches_loop_and_merge_on_text_and_conv():
    for kind in ("bert", "resnet"):
        a, b = (methods.build("deep_ensemble", BACKBONES[kind](), M, C, seed=0, vectorize=v)
                for v in (True, False))
        for model in (a, b):
            _perturb(model)
        with torch.no_grad():
            za, zb = a(**_inputs(kind)), b(**_inputs(kind))
        assert a.vectorize and not torch.allclose(za[:, 0], za[:, 1])
        torch.testing.assert_close(za, zb, atol=1e-5, rtol=1e-5)
        with torch.no_grad():
            for m in range(M):
                torch.testing.assert_close(b.merge_member(m)(**_inputs(kind)), zb[:, m], atol=1e-5, rtol=1e-5)

    # the GPU-only workarounds leave the CPU path alone, also under CPU autocast
    cpu = torch.device("cpu")
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert not deep_ensemble._gpu_autocast(cpu)
    assert isinstance(deep_ensemble._vmap_safe_attention(cpu), contextlib.nullcontext)


# ----------------------------------------------------------------------------------------------
# MC dropout


def test_mc_dropout_samples_are_random_but_reproducible():
    model = methods.build("mc_dropout", _vit(), 4, C, seed=0, rate=0.3)
    x = _inputs("vit")
    rng = torch.get_rng_state()
    with torch.no_grad():
        z1, z2 = model(**x), model(**x)
    assert torch.equal(torch.get_rng_state(), rng)  # eval masks come from a private seed
    assert torch.equal(z1, z2) and z1.shape == (3, 4, C)
    assert not torch.allclose(z1[:, 0], z1[:, 1])
    model.train()
    assert model(**x).shape == (3, 1, C)
    assert all(m.p == 0.3 for m in model.trunk.modules() if isinstance(m, nn.Dropout))


def test_mc_dropout_head_rate():
    assert methods.build("mc_dropout", _vit(), M, C, seed=0).config["head_rate"] == 0.0
    cnn = methods.build("mc_dropout", _resnet(), M, C, seed=0, rate=0.2)  # no nn.Dropout in the trunk
    assert cnn.config["head_rate"] == 0.2
    with pytest.raises(ConfigError, match="head_rate"):
        methods.build("mc_dropout", _resnet(), M, C, seed=0, rate=0.2, head_rate=0.0)


# ----------------------------------------------------------------------------------------------
# the real backbone


@pytest.mark.parametrize(("name", "opts"), [("lora_ensemble", {}), ("batch_ensemble", {"init": "ones"}),
                                            ("deep_ensemble", {}), ("head_ensemble", {})])
def test_real_dinov2_at_init_reproduces_its_features(dinov2_small, name, opts):
    x = torch.randn(2, 3, 56, 56, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        base = dinov2_small.features(pixel_values=x)
        model = methods.build(name, dinov2_small, M, C, seed=0, **opts)
        feats, z = model.features(pixel_values=x), model(pixel_values=x)
    assert torch.allclose(feats, base[:, None].expand_as(feats), atol=1e-4, rtol=1e-4)
    assert z.shape == (2, M, C) and not torch.allclose(z[:, 0], z[:, 1])


# ----------------------------------------------------------------------------------------------
# bad input


def test_unknown_method_lists_the_valid_ones():
    for call in (lambda: methods.build("deep-ensemble", _vit(), M, C), lambda: methods.default_lr("lora")):
        with pytest.raises(UnknownNameError) as err:
            call()
        assert all(name in str(err.value) for name in methods.METHODS)


@pytest.mark.parametrize(("name", "opts", "words"), [
    ("single", {"rank": 8}, ["'rank'", "'single'", "seed", "dropout"]),
    ("head_ensemble", {"targets": "all"}, ["'targets'", "head_ensemble", "seed"]),
    ("sve", {"train_shared": True}, ["'train_shared'", "init_std"]),
    ("mc_dropout", {"vectorize": False}, ["'vectorize'", "rate"]),
    ("lora_ensemble", {"rank": 0}, ["rank=0", "integer"]),
    ("lora_ensemble", {"init": "sign"}, ["init='sign'", "gaussian", "xavier"]),
    ("batch_ensemble", {"train_shared": "yes"}, ["train_shared", "True or False"]),
    ("batch_ensemble", {"init_std": -1}, ["init_std", "≥ 0"]),
    ("mc_dropout", {"rate": 1.0}, ["rate", "[0, 1)"]),
    ("deep_ensemble", {"seed": 1.5}, ["seed=1.5", "integer"]),
])
def test_inapplicable_or_invalid_options_are_refused_by_name(name, opts, words):
    with pytest.raises(ConfigError) as err:
        methods.build(name, _vit(), M, C, **opts)
    assert all(w in str(err.value) for w in words), str(err.value)


@pytest.mark.parametrize(("members", "classes", "word"), [(0, C, "num_members"), (2.5, C, "num_members"),
                                                          (M, 1, "num_classes"), (True, C, "num_members")])
def test_bad_sizes(members, classes, word):
    with pytest.raises(ConfigError, match=word):
        methods.build("head_ensemble", _vit(), members, classes)


def test_an_already_built_model_is_refused_as_backbone():
    model = methods.build("head_ensemble", _vit(), M, C, seed=0)
    with pytest.raises(ConfigError, match="already wrapped"):
        methods.build("single", model, 1, C)


def test_deep_ensembles_at_different_seeds_share_no_member():
    """Runs at seeds 0 … 4 are independent ensembles: no member seed (head draw, data order) repeats
    across them, and member 0 is the single model of the same seed."""
    seeds = [member_seed(s, m) for s in range(5) for m in range(16)]
    assert len(set(seeds)) == len(seeds) and [member_seed(s, 0) for s in range(5)] == list(range(5))
    heads = [methods.build("deep_ensemble", _vit(), 2, C, seed=s).sve_head_weight.detach() for s in (0, 1)]
    assert not torch.equal(heads[0][1], heads[1][0])  # with seed + m these two were the same draw
    single = methods.build("single", _vit(), 1, C, seed=1).sve_head_weight.detach()
    assert torch.equal(heads[1][0], single[0])
