"""Adapters of a wrapped model: save / load (safetensors), merge one member, count, spectra.

An adapter file is a safetensors file holding only the trainable tensors (``requires_grad``:
``sve_sigma``, ``sve_bias``, ``sve_head_*`` for SVE), with string metadata:
``format`` = "sve-adapter/1", ``config`` (JSON: the arguments that rebuild the model),
``fingerprint`` (sha256 of the backbone weights it was trained on), ``backbone`` (its name) and
``temperature``. U and V are not stored: ``load`` recomputes them from the same backbone (the
fingerprint guarantees the same weights). Re-exported by ``sve.core``.
"""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from sve.core import (
    ADAPTER_FORMAT,
    EnsembleLayer,
    EnsembleModel,
    SVELayer,
    _as_backbone,
    _FanOut,
    _unwrap,
    select_targets,
    wrap,
)
from sve.errors import ConfigError, DataError


def save(model: nn.Module, path: str | Path) -> Path:
    """Write the trainable tensors + config + backbone fingerprint to ``path`` (safetensors)."""
    from safetensors.torch import save_file

    model = _unwrap(model)
    tensors = {n: p.detach().cpu().contiguous() for n, p in model.named_parameters() if p.requires_grad}
    meta = {"format": ADAPTER_FORMAT, "config": json.dumps(model.config),
            "fingerprint": model.fingerprint, "backbone": str(getattr(model.backbone, "name", "")),
            "temperature": repr(float(model.temperature))}
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(path), metadata=meta)
    return path


def read_metadata(path: str | Path) -> dict[str, Any]:
    """The metadata of an adapter file (config decoded), without loading its tensors."""
    from safetensors import safe_open

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no adapter file at {path}; save one with sve.save(model, path).")
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
    except Exception as e:  # safetensors raises its own error types for corrupt headers
        raise DataError(f"{path} is not a safetensors file ({e}); save adapters with sve.save.") from e
    if meta.get("format") != ADAPTER_FORMAT:
        raise DataError(f"{path} is not an sve adapter (format {meta.get('format')!r}, expected "
                        f"{ADAPTER_FORMAT!r}); save adapters with sve.save(model, path).")
    return {**meta, "config": json.loads(meta["config"]), "temperature": float(meta["temperature"])}


def load(backbone: Any, path: str | Path) -> EnsembleModel:
    """Rebuild the wrapped model saved at ``path`` on ``backbone`` (same weights required)."""
    from safetensors.torch import load_file

    meta = read_metadata(path)
    backbone = _as_backbone(backbone)
    if backbone.fingerprint() != meta["fingerprint"]:
        raise ConfigError(
            f"{path} was trained on backbone {meta['backbone']!r} (weights fingerprint "
            f"{meta['fingerprint'][:12]}…), but the backbone passed is "
            f"{getattr(backbone, 'name', '?')!r} ({backbone.fingerprint()[:12]}…). Load it onto the "
            "same pretrained weights it was trained on."
        )
    config = dict(meta["config"])
    method = config.pop("method")
    if method == "sve":
        model = wrap(backbone, **config)
    else:
        from sve.methods import build

        model = build(method, backbone, **config)
    tensors = load_file(str(path))
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    if set(tensors) != trainable:
        raise DataError(f"{path} does not fit the rebuilt model: missing "
                        f"{sorted(trainable - set(tensors))[:5]}, unexpected "
                        f"{sorted(set(tensors) - trainable)[:5]}.")
    model.load_state_dict(tensors, strict=False)
    model.temperature = meta["temperature"]
    return model


class MergedMember(nn.Module):
    """One member as a plain model: the backbone's own modules (member weights written into
    them, same parameter names) + a linear head. ``forward(**inputs)`` → logits (B, C)."""

    def __init__(self, backbone: Any, head: nn.Linear, input_names: tuple[str, ...]):
        super().__init__()
        self.backbone, self.trunk, self.head, self.input_names = backbone, backbone.model, head, input_names

    def forward(self, *args: Tensor, **inputs: Tensor) -> Tensor:
        inputs = {k: v for k, v in inputs.items() if k != "labels"}
        if args:
            inputs[self.input_names[0]] = args[0]
        return self.head(self.backbone.features(**inputs))


def merge(model: nn.Module, m: int) -> MergedMember:
    """Member ``m`` of a wrapped model as a plain backbone + head (a deep copy; no sve layers).

    Dispatch: a model with its own ``merge_member(m)`` (``deep_ensemble``: member weights live
    outside the trunk) is merged by it. A model with one head (``mc_dropout``: its members are
    dropout samples of one network) merges only as m = 0, the network itself with dropout off.
    """
    model = _unwrap(model)
    if hasattr(model, "merge_member"):
        return model.merge_member(m)
    if not isinstance(m, int) or not 0 <= m < model.num_members:
        raise ConfigError(f"member m={m!r}: must be an integer from 0 to {model.num_members - 1}.")
    heads = model.sve_head_weight.shape[0]
    if m >= heads:
        raise ConfigError(
            f"member m={m} of method {model.config.get('method')!r} has no weights of its own: the "
            f"model has {heads} set(s) of weights and its {model.num_members} members are stochastic "
            "samples of it (e.g. MC dropout). merge(model, 0) gives the network itself (dropout off).")
    backbone = copy.copy(model.backbone)
    backbone.model = trunk = copy.deepcopy(model.trunk)
    for module in trunk.modules():
        for key in [k for k, h in module._forward_pre_hooks.items() if isinstance(h, _FanOut)]:
            del module._forward_pre_hooks[key]
            module._forward_pre_hooks_with_kwargs.pop(key, None)
    for name, layer in list(trunk.named_modules()):
        if isinstance(layer, EnsembleLayer):
            parent, _, child = name.rpartition(".")
            setattr(trunk.get_submodule(parent) if parent else trunk, child, layer.merged(m))
    C, D = model.sve_head_weight.shape[1:]
    head = nn.Linear(D, C).to(model.sve_head_weight.device)
    with torch.no_grad():
        head.weight.copy_(model.sve_head_weight[m])
        head.bias.copy_(model.sve_head_bias[m])
    return MergedMember(backbone, head.requires_grad_(False), model.input_names).eval()


@dataclass
class ParameterCount:
    """Parameter accounting of an ensemble (all counts are over all M members).

    ``overhead_pct`` = 100·(σ + biases + other)/base; ``extra_members_pct`` = the same for the
    M−1 members beyond the first (the paper's "(M−1)·5/(4d)" accounting); ``*_with_heads``
    adds the M heads.
    """

    base: int
    members: int
    sigma: int
    bias: int
    heads: int
    other: int
    trainable: int
    overhead_pct: float
    extra_members_pct: float
    overhead_with_heads_pct: float


def _count(base: int, members: int, sigma: int, bias: int, heads: int, other: int) -> ParameterCount:
    adapter = sigma + bias + other
    return ParameterCount(
        base=base, members=members, sigma=sigma, bias=bias, heads=heads, other=other,
        trainable=adapter + heads, overhead_pct=100 * adapter / base,
        extra_members_pct=100 * adapter * (members - 1) / members / base,
        overhead_with_heads_pct=100 * (adapter + heads) / base)


def _kind(leaf: str) -> str:
    """Accounting bucket of a trainable tensor's leaf name: ``sve_sigma`` → sigma, ``sve_head_*``
    → heads, any other per-member ``*_bias`` (``sve_bias``, ``be_bias``) → bias, the rest → other
    (LoRA A/B, BatchEnsemble r/s, fully trained trunk tensors such as ``...qkv.bias``)."""
    if leaf == "sve_sigma":
        return "sigma"
    if leaf.startswith("sve_head"):
        return "heads"
    return "bias" if leaf.endswith("_bias") else "other"


def count_parameters(model: Any, num_members: int | None = None, num_classes: int = 0,
                     targets: str | list[str] = "all") -> ParameterCount:
    """Count the parameters of a wrapped model, or estimate SVE's for an unwrapped backbone.

    Wrapped: trainable tensors by name (``sve_sigma``, ``sve_bias``, ``sve_head_*``, others).
    Unwrapped (a Backbone or model + ``num_members``): per targeted layer min(out, fan_in) singular
    values and ``out`` biases (if it has one) per member, plus M heads of ``num_classes`` — works on
    models built on the meta device, so BERT-base costs nothing to count.
    """
    if isinstance(model, EnsembleModel) or isinstance(getattr(model, "module", None), EnsembleModel):
        model = _unwrap(model)
        sizes = {"sigma": 0, "bias": 0, "heads": 0, "other": 0}
        for name, p in model.named_parameters():
            if p.requires_grad:
                sizes[_kind(name.rpartition(".")[2])] += p.numel()
        return _count(model.base_params, model.num_members, **sizes)
    if num_members is None:
        raise ConfigError("count_parameters on an unwrapped backbone needs num_members=M.")
    backbone = _as_backbone(model)
    trunk = backbone.model
    sigma = bias = 0
    for name in select_targets(backbone, targets):
        w = trunk.get_submodule(name).weight
        sigma += min(w.shape[0], w[0].numel())
        bias += w.shape[0] if trunk.get_submodule(name).bias is not None else 0
    heads = num_members * (backbone.feature_dim + 1) * num_classes
    base = sum(p.numel() for p in trunk.parameters())
    return _count(base, num_members, num_members * sigma, num_members * bias, heads, 0)


def spectra(model: nn.Module) -> dict[str, tuple[Tensor, Tensor]]:
    """``{layer name: (σ (M, r) after the positivity map, σ0 (r,) pretrained)}``, CPU float."""
    return {name: (layer.sigma().detach().float().cpu(), layer.sigma0.detach().float().cpu())
            for name, layer in _unwrap(model).layers().items() if isinstance(layer, SVELayer)}


__all__ = ["save", "load", "read_metadata", "merge", "MergedMember", "count_parameters",
           "ParameterCount", "spectra"]
