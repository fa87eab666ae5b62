"""sve.ensemble + sve.methods.sve: one battery over a table of backbones (PEFT-style), plus bad input.

Cases: tiny random timm ViT, HF BERT (padding mask), HF Llama (last-token pooling), timm ResNet
(3×3 and 1×1 convs, stride 2), and the real offline dinov2-small (28 px), minilm-l3 and
efficientnet-lite0 (its TF-"same" stem conv targeted, so members fan out at the input).
"""

from __future__ import annotations

import functools
import math

import pytest
import tiny
import torch
from torch import nn

import sve
from sve import accounting, ensemble, io
from sve.backbones import from_model, load_backbone
from sve.errors import ConfigError, DataError, MissingAssetError
from sve.methods import sve as svem

M, C = 3, 4


pytestmark = pytest.mark.usefixtures("one_thread")


# ----------------------------------------------------------------------------------------------
# the case table


def _images(n: int = 4, size: int = 32, seed: int = 1) -> dict:
    return {"pixel_values": torch.randn(n, 3, size, size, generator=torch.Generator().manual_seed(seed))}


def _tokens(n: int = 4, length: int = 9, vocab: int = 100, seed: int = 1) -> dict:
    gen = torch.Generator().manual_seed(seed)
    ids = torch.randint(1, vocab, (n, length), generator=gen)
    mask = torch.ones(n, length, dtype=torch.long)
    for i in range(n):  # right padding of different lengths
        mask[i, length - 2 * i:] = 0
        ids[i, length - 2 * i:] = 0
    return {"input_ids": ids, "attention_mask": mask}


def _llama():
    from transformers import LlamaConfig, LlamaModel

    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=100, hidden_size=32, num_hidden_layers=3, num_attention_heads=2,
                      num_key_value_heads=1, intermediate_size=64)
    return from_model(LlamaModel(cfg)), _tokens()


def _real(name: str, **kw):
    try:
        return load_backbone(name, **kw)
    except MissingAssetError as e:
        pytest.skip(f"asset not installed: {e}")


# name -> (build(request) -> (backbone, inputs), targets); the real ones come from conftest's
# session fixtures (dinov2-small at 56 px) where there is one
CASES = {
    "vit": (lambda r: (tiny.vit(), _images()), "all"),
    "bert": (lambda r: (tiny.bert(), _tokens()), "all"),
    "llama": (lambda r: _llama(), "all"),
    "resnet": (lambda r: (tiny.resnet(), _images()), "all"),
    "dinov2-small": (lambda r: (r.getfixturevalue("dinov2_small"), _images(size=56)), "all"),
    "minilm-l3": (lambda r: (r.getfixturevalue("minilm_l3"), _tokens(vocab=30000)), "all"),
    "efficientnet-lite0": (lambda r: (_real("efficientnet-lite0"), _images()),
                           ["conv_stem", "blocks.*", "conv_head"]),
}
_BUILT: dict[str, tuple] = {}


def _build(name: str, request: pytest.FixtureRequest | None = None) -> tuple:
    """(backbone, inputs) of a case, built once per module (real ones need ``request``)."""
    if name not in _BUILT:
        try:
            _BUILT[name] = CASES[name][0](request)
        except MissingAssetError as e:
            pytest.skip(f"asset not installed: {e}")
    return _BUILT[name]


@functools.cache
def _wrapped(name: str, **kw) -> ensemble.EnsembleModel:
    """A cached wrap for tests that do not change the model (tests that do build their own)."""
    return _wrap(name, **kw)


def _wrap(name: str, **kw) -> ensemble.EnsembleModel:
    bb, _ = _build(name)
    kw = {"num_members": M, "num_classes": C, "targets": CASES[name][1], "seed": 0, **kw}
    return sve.wrap(bb, **kw)


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(((a - b).norm() / b.norm()).detach())


case = pytest.mark.parametrize("name", list(CASES))


# ----------------------------------------------------------------------------------------------
# the battery


@case
def test_zero_noise_reproduces_base_features(name, request):
    bb, x = _build(name, request)
    model = _wrapped(name, init_std=0.0)
    with torch.no_grad():
        base, feats = bb.features(**x), model.features(**x)
    assert feats.shape == (base.shape[0], M, base.shape[1])
    for m in range(M):
        assert _rel(feats[:, m], base) <= 1e-5
    for layer in model.layers().values():  # and U diag(s) Vᵀ rebuilds the pretrained weight
        assert torch.equal(layer.sigma()[0], layer.sigma0)


@case
def test_noise_makes_members_differ(name, request):
    _, x = _build(name, request)
    model = _wrapped(name)
    with torch.no_grad():
        feats, logits = model.features(**x), model(**x)
    assert logits.shape == (x[next(iter(x))].shape[0], M, C)
    for m in range(1, M):
        assert _rel(feats[:, m], feats[:, 0]) > 1e-4
        assert not torch.allclose(logits[:, m], logits[:, 0])


@case
def test_only_adapter_tensors_train(name, request):
    _, x = _build(name, request)
    model = _wrap(name)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2, weight_decay=0.05)
    model.train()
    model(**x).logsumexp(-1).mean().backward()
    grads = {n for n, p in model.named_parameters() if p.grad is not None}
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert grads == trainable
    assert all(n.rpartition(".")[2] in ("sve_sigma", "sve_bias", "sve_head_weight", "sve_head_bias")
               for n in trainable)
    opt.step()
    after = model.state_dict()
    for k, v in before.items():
        changed = not torch.equal(v, after[k])
        assert changed == (k in trainable), k  # U, Vh, all base weights and buffers unchanged


@case
def test_dense_equals_factored(name, request):
    _, x = _build(name, request)
    model = _wrapped(name)
    outs = {}
    try:
        for mode in ("dense", "factored"):
            svem.set_mode(model, mode)
            model.zero_grad()
            logits = model(**x)
            logits.pow(2).mean().backward()
            grads = torch.cat([p.grad.flatten() for p in model.parameters() if p.requires_grad])
            with torch.no_grad():
                outs[mode] = (logits.detach(), grads, model(**x))
    finally:
        svem.set_mode(model, "auto")
        model.zero_grad()
    (ld, gd, ed), (lf, gf, ef) = outs["dense"], outs["factored"]
    assert _rel(ld, lf) < 1e-5 and _rel(ed, ef) < 1e-5 and _rel(gd, gf) < 1e-4
    assert torch.equal(ld, ed)  # the no-grad (cached) dense path gives the same numbers


@case
def test_save_load_round_trip(name, tmp_path, request):
    bb, x = _build(name, request)
    model = _wrapped(name)
    path = io.save(model, tmp_path / "adapter.safetensors")
    loaded = io.load(bb, path)
    trainable = {n: p for n, p in model.named_parameters() if p.requires_grad}
    for n, p in loaded.named_parameters():
        assert p.requires_grad == (n in trainable)
        if n in trainable:
            assert torch.equal(p, trainable[n]), n
    with torch.no_grad():
        assert torch.equal(loaded(**x), model(**x))
    n_bytes = sum(p.numel() * p.element_size() for p in trainable.values())
    assert n_bytes <= path.stat().st_size <= n_bytes + 16_384  # tensors + a small JSON header


@case
def test_merge_reproduces_member(name, request):
    bb, x = _build(name, request)
    model = _wrapped(name)
    with torch.no_grad():
        logits = model(**x)
        for m in (0, M - 1):
            merged = ensemble.merge(model, m)
            assert not any(isinstance(mod, ensemble.EnsembleLayer) for mod in merged.modules())
            assert merged.trunk.state_dict().keys() == bb.model.state_dict().keys()
            out = merged(**x)
            assert out.shape == (logits.shape[0], C)
            assert _rel(out, logits[:, m]) < 1e-5
    with torch.no_grad():  # merging leaves the ensemble as it was
        assert torch.equal(model(**x), logits)


@case
def test_last_k_equals_full_wrap_restricted(name, request):
    bb, x = _build(name, request)
    last = bb.blocks[-1]
    names = [n for n in ensemble.candidates(bb.model) if n.startswith(last + ".")]
    if not names:
        pytest.skip("the last block has no supported layer")
    a = _wrapped(name, targets="last:1")
    b = _wrap(name, targets=names)
    c = _wrap(name, targets=names, fan_out="input")
    full = _wrapped(name, targets="all")
    assert sorted(a.layers()) == sorted(names) and a.fan_out_at == last and c.fan_out_at is None
    with torch.no_grad():
        la, lb, lc = a(**x), b(**x), c(**x)
    assert torch.equal(la, lb)
    assert _rel(la, lc) < 1e-5  # fanning out at the last block == running the whole trunk M times
    for n in names:  # a layer's init depends on the seed and its name, not on the other targets
        assert torch.equal(a.layers()[n].sve_sigma, full.layers()[n].sve_sigma)


@case
def test_same_seed_same_model(name, request):
    _, x = _build(name, request)
    with torch.no_grad():
        a, b = _wrapped(name)(**x), _wrap(name)(**x)
        c, d = _wrapped(name, targets="last:1")(**x), _wrap(name, targets="last:1", seed=1)(**x)
    assert torch.equal(a, b)
    assert not torch.allclose(c, d)


# ----------------------------------------------------------------------------------------------
# layer details


def test_cache_is_used_and_invalidated_when_sigma_changes():
    bb, x = _build("vit")
    model = sve.wrap(bb, M, C, seed=0, mode="dense")
    layer = next(iter(model.layers().values()))
    with torch.no_grad():
        first = model(**x)
        W = layer._cache[1]
        assert torch.equal(model(**x), first) and layer._cache[1] is W  # reused
    opt = torch.optim.SGD([layer.sve_sigma], lr=0.1)
    layer.sve_sigma.grad = torch.ones_like(layer.sve_sigma)
    opt.step()
    with torch.no_grad():
        second = model(**x)
    assert layer._cache[1] is not W and not torch.equal(second, first)
    svem.set_mode(model, "factored")
    with torch.no_grad():
        assert _rel(model(**x), second) < 1e-5
    model(**x)  # a training forward drops the cached dense weights (they are stale after a step)
    assert all(la._cache is None for la in model.layers().values())


def test_auto_mode_picks_from_shapes():
    layer = svem.SVELayer(nn.Linear(64, 64), num_members=4)
    few, many = torch.randn(4, 64), torch.randn(4, 4096, 64)
    assert not layer.use_dense(few)  # building 4 dense 64×64 weights costs more than 4 rows
    assert layer.use_dense(many)  # W x (d²) beats U(σ⊙Vᵀx) (2d²) once the build is amortised
    with torch.no_grad():
        assert layer.use_dense(few)  # autograd off: the dense weights are cached, so free


def test_sve_layer_matches_the_math():
    torch.manual_seed(0)
    lin = nn.Linear(6, 5)
    layer = svem.SVELayer(lin, num_members=2, init_std=0.1, generator=torch.Generator().manual_seed(0))
    U, s, Vh = torch.linalg.svd(lin.weight.detach(), full_matrices=False)
    assert torch.allclose(layer.sigma0, s)
    eps = layer.sve_sigma / s - 1
    assert 0.03 < float(eps.detach().std()) < 0.3 and (layer.sve_sigma >= 0).all()  # s·(1+ε), ε ~ N(0, 0.1²)
    assert 0.03 < float((layer.sve_bias - lin.bias).detach().std()) < 0.3
    x = torch.randn(2 * 3, 6)
    y = layer(x)
    for m in range(2):
        W = layer.U @ torch.diag(layer.sigma()[m]) @ layer.Vh
        assert torch.allclose(y[3 * m:3 * (m + 1)], x[3 * m:3 * (m + 1)] @ W.T + layer.sve_bias[m], atol=1e-5)
    with torch.no_grad():
        layer.sve_sigma[0, 0] = -1.0  # the clamp keeps σ ≥ 0
    assert layer.sigma()[0, 0] == 0


@pytest.mark.parametrize("conv", [
    dict(in_channels=4, out_channels=6, kernel_size=3, stride=2, padding=1),
    dict(in_channels=4, out_channels=6, kernel_size=1),
    dict(in_channels=6, out_channels=4, kernel_size=(3, 1), dilation=2, padding=(2, 0), bias=False),
])
def test_conv_layer_paths_match_per_member_convs(conv):
    torch.manual_seed(0)
    module = nn.Conv2d(**conv)
    layer = svem.SVELayer(module, num_members=2, init_std=0.05, generator=torch.Generator().manual_seed(1))
    x = torch.randn(2 * 3, module.in_channels, 9, 8)
    ref = torch.cat([layer.merged(m)(x[3 * m:3 * (m + 1)]) for m in range(2)])
    for mode in ("dense", "factored"):
        layer.mode = mode
        assert _rel(layer(x), ref) < 1e-5


def test_depthwise_convs_are_skipped():
    model = nn.Sequential(nn.Conv2d(8, 8, 3, groups=8), nn.Conv2d(8, 4, 1), nn.Linear(4, 4))
    assert ensemble.candidates(model) == ["1", "2"]


def test_softplus_positivity():
    bb, x = _build("vit")
    model = sve.wrap(bb, M, C, init_std=0.0, seed=0, positivity="softplus")
    with torch.no_grad():
        feats = model.features(**x)
        base = bb.features(**x)
    assert _rel(feats[:, 0], base) <= 1e-5
    model.train()
    model(**x).sum().backward()
    layer = next(iter(model.layers().values()))
    assert layer.sve_sigma.grad.abs().sum() > 0
    with torch.no_grad():
        layer.sve_sigma.fill_(-50.0)
    assert (layer.sigma() > 0).all()


def test_wrap_accepts_a_raw_timm_model_and_keeps_the_backbone():
    from timm.models.vision_transformer import VisionTransformer

    torch.manual_seed(0)
    raw = VisionTransformer(img_size=32, patch_size=8, embed_dim=32, depth=2, num_heads=2, num_classes=7)
    model = sve.wrap(raw, 2, C, init_std=0.0)
    x = _images()["pixel_values"]
    assert model(x).shape == (4, 2, C)
    assert isinstance(raw.blocks[0].attn.qkv, nn.Linear)  # inplace=False: the original is untouched
    with torch.no_grad():
        base = raw.forward_head(raw.forward_features(x), pre_logits=True)
        assert _rel(model.features(x)[:, 1], base) < 1e-5


def test_fan_out_point_and_trunk_modes():
    assert _wrapped("bert").fan_out_at == "encoder.layer.0"
    assert _wrapped("vit", targets="last:1").fan_out_at == "blocks.2"
    bb, x = _build("bert")  # BERT's hidden dropout is 0.1
    for dropout in (False, True):
        model = sve.wrap(bb, 2, C, seed=0, dropout=dropout).train()
        with torch.no_grad():
            assert torch.equal(model(**x), model(**x)) != dropout  # dropout only when asked for
            assert torch.equal(model.eval()(**x), model(**x))


def test_targets_attention_mlp_and_patterns():
    bb, _ = _build("bert")
    attn = set(ensemble.select_targets(bb, "attention"))
    mlp = set(ensemble.select_targets(bb, "mlp"))
    assert attn and mlp and not attn & mlp
    assert attn | mlp == set(ensemble.select_targets(bb, "all"))
    assert all("attention" in n for n in attn)
    expected = [f"encoder.layer.{i}.attention.self.query" for i in range(3)]
    assert ensemble.select_targets(bb, ["query"]) == expected
    assert set(ensemble.select_targets(bb, ["encoder.layer.0.*"])) == {n for n in attn | mlp
                                                                   if n.startswith("encoder.layer.0.")}


def test_spectra():
    bb, x = _build("vit")
    model = _wrapped("vit")
    spec = svem.spectra(model)
    assert set(spec) == set(model.layers())
    qkv = bb.model.blocks[0].attn.qkv.weight
    sigma, sigma0 = spec["blocks.0.attn.qkv"]
    assert sigma.shape == (M, min(qkv.shape)) and sigma.device.type == "cpu"
    assert torch.allclose(sigma0, torch.linalg.svdvals(qkv))
    assert (sigma >= 0).all() and not torch.equal(sigma[0], sigma0)


# ----------------------------------------------------------------------------------------------
# parameter accounting


def _bert_like(d: int, layers: int, device: str = "cpu"):
    from transformers import BertConfig, BertModel

    cfg = BertConfig(vocab_size=30522, hidden_size=d, num_hidden_layers=layers,
                     num_attention_heads=max(1, d // 64), intermediate_size=4 * d)
    with torch.device(device):
        return from_model(BertModel(cfg, add_pooling_layer=False))


def test_count_matches_the_paper_formula_on_a_bert_like_config():
    d, L, members = 64, 2, 8
    bb = _bert_like(d, L)
    est = accounting.count_parameters(bb, num_members=members)
    # per member and layer: σ of Q, K, V, O, FFN1, FFN2 (6d) + their biases (4d + 4d + d)
    assert est.sigma == members * L * 6 * d and est.bias == members * L * 9 * d
    block_weights = L * 12 * d * d  # Q, K, V, O (4d²) + FFN (8d²)
    extra = (est.sigma + est.bias) * (members - 1) / members
    assert math.isclose(extra / block_weights, (members - 1) * 5 / (4 * d))
    model = sve.wrap(bb, members, C)  # the real count of a wrapped model agrees with the estimate
    real = accounting.count_parameters(model)
    assert (real.sigma, real.bias, real.base) == (est.sigma, est.bias, est.base)
    assert real.heads == members * (d + 1) * C and real.trainable == sum(
        p.numel() for p in model.parameters() if p.requires_grad)


def test_bert_base_overhead_is_about_one_percent():
    est = accounting.count_parameters(_bert_like(768, 12, device="meta"), num_members=8)
    assert 0.95 < est.overhead_pct < 1.05  # the README: "~1.0 %" for BERT-base, M = 8


def test_vit_s_and_minilm_overhead_below_one_percent(minilm_l3):
    import timm

    with torch.device("meta"):
        vits = from_model(timm.create_model("vit_small_patch16_224", num_classes=0))
    v = accounting.count_parameters(vits, num_members=4, num_classes=102)
    assert v.sigma + v.bias == 4 * 12 * 13 * 384  # 13d per block and member (paper.md §4)
    assert v.extra_members_pct < 1 and v.overhead_pct < 1.2
    m = accounting.count_parameters(minilm_l3, num_members=4)
    assert m.overhead_pct < 1 and m.extra_members_pct < 1


# ----------------------------------------------------------------------------------------------
# bad input


@pytest.mark.parametrize("members", [0, -1, 1.5, True, "4"])
def test_bad_num_members(members):
    with pytest.raises(ConfigError, match="num_members"):
        sve.wrap(_build("vit")[0], members, C)


def test_bad_options():
    bb = _build("vit")[0]
    for kw, word in [({"num_classes": 1}, "num_classes"), ({"init_std": -1.0}, "init_std"),
                     ({"positivity": "relu"}, "positivity"), ({"mode": "fast"}, "mode"),
                     ({"fan_out": "middle"}, "fan_out"), ({"targets": "last:9"}, "last:9"),
                     ({"svd_dtype": "float16"}, "svd_dtype")]:
        with pytest.raises(ConfigError, match=word):
            sve.wrap(bb, **{"num_members": 2, "num_classes": C, **kw})
    with pytest.raises(ConfigError, match="already wrapped"):
        sve.wrap(_wrapped("vit"), 2, C)
    with pytest.raises(ConfigError, match="member"):
        ensemble.merge(_wrapped("vit"), M)


def test_targets_matching_nothing_lists_the_layers():
    bb = _build("vit")[0]
    with pytest.raises(ConfigError, match=r"matched no supported layer.*blocks\.0\.attn\.qkv.*fc2") as e:
        sve.wrap(bb, 2, C, targets=["q_proj"])
    assert "patch_embed.proj" in str(e.value)
    with pytest.raises(ConfigError, match="matched no"):
        sve.wrap(_build("resnet")[0], 2, C, targets="attention")


@pytest.mark.parametrize("bad, word", [
    (torch.zeros(2, 3, 32, 32, dtype=torch.uint8), "float"),
    (torch.randn(2, 1, 32, 32), "shape"),
    (torch.randn(3, 32, 32), "shape"),
    (torch.randn(2, 3, 24, 24), "px"),
])
def test_bad_image_input(bad, word):
    model = _wrapped("vit")
    with pytest.raises(DataError, match=word):
        model(bad)


def test_bad_text_input():
    model = _wrapped("bert")
    x = _tokens()
    with pytest.raises(DataError, match="integer"):
        model(input_ids=x["input_ids"].float(), attention_mask=x["attention_mask"])
    with pytest.raises(DataError, match="must match"):
        model(input_ids=x["input_ids"], attention_mask=x["attention_mask"][:, :3])
    with pytest.raises(DataError, match="input_ids"):
        model(pixel_values=torch.randn(2, 3, 32, 32))


# ----------------------------------------------------------------------------------------------
# adapters on the baselines (merge dispatch, accounting buckets)


def test_merge_dispatches_to_deep_ensemble_and_refuses_mc_dropout_samples():
    from sve import methods

    bb, x = _build("vit")
    deep = methods.build("deep_ensemble", bb, 2, C, seed=0)
    with torch.no_grad():  # make member 1's trunk differ from the pretrained skeleton
        for p in deep.members.parameters():
            p[1].add_(0.05 * torch.randn_like(p[1]))
        z = deep(**x)
        assert not torch.allclose(z[:, 0], z[:, 1], atol=1e-4)
        for m in range(2):
            torch.testing.assert_close(ensemble.merge(deep, m)(**x), z[:, m], atol=1e-5, rtol=1e-4)
    with pytest.raises(ConfigError, match="member"):
        ensemble.merge(deep, 2)
    mc = methods.build("mc_dropout", bb, 3, C, seed=0, rate=0.2)
    with torch.no_grad():  # m = 0 is the network itself, dropout off
        single = ensemble.merge(mc, 0)
        assert torch.equal(single(**x), single(**x))
    with pytest.raises(ConfigError, match="no weights of its own.*merge\\(model, 0\\)"):
        ensemble.merge(mc, 1)


def test_count_files_per_member_biases_under_bias():
    from sve import methods

    bb = _build("vit")[0]
    be = methods.build("batch_ensemble", bb, 2, C, seed=0)
    count = accounting.count_parameters(be)
    layers = be.layers().values()
    assert count.bias == sum(la.be_bias.numel() for la in layers if la.be_bias is not None) > 0
    assert count.other == sum(la.be_r.numel() + la.be_s.numel() for la in layers)
    assert count.trainable == sum(p.numel() for p in be.parameters() if p.requires_grad)
    deep = accounting.count_parameters(methods.build("deep_ensemble", bb, 2, C, seed=0))
    assert deep.bias == 0 and deep.other == 2 * deep.base  # trunk biases are trunk weights


# ----------------------------------------------------------------------------------------------
# fast paths: the autograd Functions, the path choice, the SVD


@pytest.mark.parametrize("fn", ["_Dense", "_Factored"])
@pytest.mark.parametrize("bias", [True, False])
def test_path_functions_have_exact_gradients(fn, bias):
    gen = torch.Generator().manual_seed(0)
    M, T, o, i = 3, 4, 5, 7
    U, s, Vh = torch.linalg.svd(torch.randn(o, i, generator=gen, dtype=torch.float64), full_matrices=False)
    x = torch.randn(M, T, i, generator=gen, dtype=torch.float64, requires_grad=True)
    sigma = (s * (1 + 0.1 * torch.randn(M, s.numel(), generator=gen, dtype=torch.float64))).requires_grad_()
    b = torch.randn(M, o, generator=gen, dtype=torch.float64, requires_grad=True) if bias else None
    f = getattr(svem, fn).apply
    assert torch.autograd.gradcheck(lambda *a: f(*a, U, Vh), (x, sigma, b))
    W = torch.einsum("or,mr,ri->moi", U, sigma, Vh)  # the authors' dense rebuild as the reference
    ref = torch.einsum("mti,moi->mto", x, W) + (b[:, None] if bias else 0)
    torch.testing.assert_close(f(x, sigma, b, U, Vh), ref)
    x2 = x.detach()  # no input gradient asked: only σ (and b) get one
    g = torch.autograd.grad(f(x2, sigma, b, U, Vh).square().sum(), sigma)[0]
    torch.testing.assert_close(g, torch.autograd.grad(ref.square().sum(), sigma)[0])


def test_dense_training_keeps_no_member_weights_for_the_backward():
    layer = svem.SVELayer(nn.Linear(48, 48), num_members=4, mode="dense")
    x = torch.randn(4 * 10, 48, requires_grad=True)
    saved: list[torch.Tensor] = []
    with torch.autograd.graph.saved_tensors_hooks(lambda t: saved.append(t) or t, lambda t: t):
        y = layer(x)
    assert saved and max(t.numel() for t in saved) < 4 * 48 * 48  # x (40×48) and factors, no (M, 48, 48)
    y.sum().backward()
    assert layer.sve_sigma.grad is not None and x.grad is not None


def test_auto_training_choice_follows_the_cost_model():
    sq = svem.SVELayer(nn.Linear(64, 64), num_members=4)
    wide = svem.SVELayer(nn.Linear(64, 256), num_members=4)  # a 4:1 MLP layer
    long = torch.randn(4 * 1024, 64, requires_grad=True)  # T = 1024 rows per member ≫ 3·64
    short = torch.randn(4 * 64, 64, requires_grad=True)
    assert sq.use_dense(long) and not sq.use_dense(short)
    assert not wide.use_dense(long)  # factored: 2·r·(in+out)+… < 3·in·out
    d, f = svem.path_costs(4 * 1024, 4, 256, 64, 64, train=True)
    assert f < d < 1.1 * 3 * 4 * 1024 * 256 * 64  # factored beats the limit's 3·R·out·in here
    with torch.no_grad():
        assert wide.use_dense(long)  # evaluation: cached dense weights are never slower


def test_bf16_autocast_runs_both_paths():
    layer = svem.SVELayer(nn.Linear(32, 16), num_members=2)
    x = torch.randn(2 * 5, 32, requires_grad=True)
    ref = layer(x)
    for mode in ("dense", "factored"):
        layer.mode = mode
        with torch.autocast("cpu", dtype=torch.bfloat16):
            y = layer(x)
        assert y.dtype == torch.bfloat16 and _rel(y.float(), ref) < 2e-2
        y.float().sum().backward()
        assert x.grad.dtype == torch.float32 and layer.sve_sigma.grad.dtype == torch.float32


@pytest.mark.parametrize("shape", [(40, 12), (12, 40), (16, 16)])
def test_gram_svd_matches_lapack(shape):
    gen = torch.Generator().manual_seed(0)
    w = torch.randn(shape, generator=gen, dtype=torch.float64)
    U, s, Vh = svem.gram_svd(w)
    torch.testing.assert_close(s, torch.linalg.svdvals(w))
    torch.testing.assert_close((U * s) @ Vh, w)
    eye = torch.eye(s.numel(), dtype=torch.float64)
    torch.testing.assert_close(U.T @ U, eye)
    torch.testing.assert_close(Vh @ Vh.T, eye)
    Q1, _ = torch.linalg.qr(torch.randn(shape[0], s.numel(), generator=gen, dtype=torch.float64))
    Q2, _ = torch.linalg.qr(torch.randn(shape[1], s.numel(), generator=gen, dtype=torch.float64))
    s_ill = torch.logspace(0, -5, s.numel(), dtype=torch.float64)  # κ = 1e5: the QR-corrected route
    ill = (Q1 * s_ill) @ Q2.T
    U, s, Vh = svem.gram_svd(ill)
    torch.testing.assert_close(s, s_ill, rtol=1e-5, atol=0)
    torch.testing.assert_close((U * s) @ Vh, ill, rtol=0, atol=1e-12)
    torch.testing.assert_close(U.T @ U, eye, rtol=0, atol=1e-12)
    low = w[:, :1] @ w[:1, :]  # rank 1: the Gram route would divide by 0, gesdd takes over
    U, s, Vh = svem.gram_svd(low)
    assert torch.isfinite(U).all() and torch.isfinite(Vh).all()
    torch.testing.assert_close((U * s) @ Vh, low)


def test_eval_cache_follows_a_fused_optimizer_step():
    """A fused AdamW step changes σ without bumping its version counter: an evaluation before the
    step must not be served again after it."""
    model = sve.wrap(tiny.vit(depth=2), 2, 3, seed=0)
    svem.set_mode(model, "dense")
    x = torch.randn(2, 3, 32, 32)
    model.train()
    model(x).logsumexp(-1).sum().backward()
    trainable = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(trainable, lr=0.05, fused=True)
    model.eval()
    with torch.no_grad():
        before = model(x)
        opt.step()
        after = model(x)
        for layer in model.layers().values():
            layer.clear_cache()
        fresh = model(x)
    assert not torch.allclose(before, fresh)
    torch.testing.assert_close(after, fresh)


def test_position_ids_reach_the_backbone():
    """``position_ids`` (accepted by the ensemble model) are passed to a backbone that takes them."""
    bb = tiny.bert(layers=2)
    model = sve.wrap(bb, 2, 3, seed=0)
    ids = torch.randint(5, 100, (2, 6))
    mask = torch.ones_like(ids)
    positions = torch.arange(6).expand(2, 6)
    with torch.no_grad():
        plain = model(input_ids=ids, attention_mask=mask)
        same = model(input_ids=ids, attention_mask=mask, position_ids=positions)
        shifted = model(input_ids=ids, attention_mask=mask, position_ids=positions + 3)
    torch.testing.assert_close(same, plain)
    assert not torch.allclose(shifted, plain)
    with pytest.raises(DataError, match="position_ids"):
        model(input_ids=ids, attention_mask=mask, position_ids=positions[:, :3])


@case
def test_authors_reference_computes_the_same_ensemble(name, request):
    """The authors' dense rebuild (``sve.methods.reference``: sample-major rows, einsum weights,
    float32 SVD) and SVELayer hold the same ensemble: same init draws, same logits."""
    from sve.methods import reference

    bb, x = _build(name, request)
    targets = CASES[name][1]
    ours = sve.wrap(bb, M, C, targets, seed=0, svd_dtype="float32")
    ref = reference.authors_model(bb, M, C, targets, seed=0)
    assert list(ref.layers()) == list(ours.layers())
    for a, b in zip(ref.layers().values(), ours.layers().values(), strict=True):
        torch.testing.assert_close(a.sve_sigma, b.sigma())
    with torch.no_grad():
        assert _rel(ref(**x), ours(**x)) < 1e-4
