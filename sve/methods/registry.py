"""Baselines under one call shape: ``build(name, backbone, num_members, num_classes, **options)``.

Every method returns an ``sve.ensemble.EnsembleModel`` (or a subclass): ``model(**inputs)`` gives
logits ``(B, M, C)``, ``sve.train.fit`` trains it, ``sve.save`` / ``sve.load`` round-trip it (only
trainable tensors are stored; ``load`` calls ``build`` again with the saved config) and
``sve.count_parameters`` counts its trainable tensors. The trunk always runs in eval mode (frozen
BatchNorm statistics; dropout off unless a method says otherwise), as for SVE, so methods differ
only in what they train. ``|trunk|`` = number of backbone parameters, ``D`` = feature width,
``C`` = classes, ``t`` = a targeted layer (``targets``, as for SVE: every Linear / Conv2d inside the
blocks by default) with ``out_t`` outputs and ``fan_in_t`` = in·k·k inputs.

method: what trains — trainable parameters — default lr

- ``sve``: per-member singular values + biases (``sve.methods.wrap``), M heads
  — M·Σ_t (min(out_t, fan_in_t) + out_t) + M·(D+1)·C — 1e-3
- ``svf``: SVE with M = 1 (singular-value fine-tuning, the paper's "Single w/ SVF") — the same, M = 1 — 1e-3
- ``single``: full fine-tuning of the trunk, one head, M = 1 — |trunk| + (D+1)·C — 1e-4
- ``deep_ensemble``: M fully fine-tuned trunk copies, M heads — M·|trunk| + M·(D+1)·C — 1e-4
- ``lora_ensemble``: per-member LoRA A_m, B_m (rank r) on the targets, M heads
  — M·Σ_t r·(fan_in_t + out_t) + M·(D+1)·C — 1e-3
- ``batch_ensemble``: per-member fast weights r_m, s_m and biases on the targets, M heads
  — M·Σ_t (in_t + 2·out_t) + M·(D+1)·C — 1e-3
- ``mc_dropout``: full fine-tuning with dropout, one head; M dropout samples at test
  — |trunk| + (D+1)·C — 1e-4
- ``head_ensemble``: M heads on the frozen trunk — M·(D+1)·C — 1e-3

(``batch_ensemble``: the ``out_t`` bias term only for layers that have a bias; with
``train_shared=True`` add Σ_t |W_t|. Learning rates: the paper's for single / deep ensemble (1e-4)
and LoRA-Ensemble / SVE (1e-3); 1e-3 for the other parameter-efficient methods, 1e-4 for the
other full fine-tuning one. ``single`` and ``svf`` are one model: they always have M = 1 whatever
``num_members`` says, see ``METHODS[name].members``.)

Definitions (``W``, ``b`` = a targeted pretrained weight and bias, frozen unless said):

- LoRA-Ensemble (Halbheer et al. 2024): ``y_m = W x + b + (α/r)·B_m A_m x``; ``A_m`` (r × fan_in)
  ~ N(0, init_std²) (``init="gaussian"``, std 0.02 as their default) or Xavier-uniform with
  ``init_gain``; ``B_m`` (out × r) = 0, so at init every member is the backbone. α = r by default
  (scale 1). The original puts LoRA on Q, K, V, O only; here it uses SVE's targets for a like-for-like
  comparison (pass ``targets="attention"`` for theirs).
- BatchEnsemble (Wen et al. 2020): ``W_m = W ∘ (r_m s_mᵀ)``, computed as ``y_m = ((x ∘ s_m) W) ∘ r_m
  + b_m`` (for a conv ``s_m`` scales input channels, ``r_m`` output channels). Init
  ``"normal"``: r, s ~ N(1, init_std²), b_m = b + N(0, init_std²) (init_std 0.01, SVE's jitter, so the
  two differ only in parametrisation); ``"sign"``: r, s random ±1 (Wen et al.; this scrambles a
  pretrained trunk at init); ``"ones"``: r = s = 1 and b_m = b (every member is the backbone).
  ``W`` is frozen and shared unless ``train_shared=True``. Per-member biases exist only where the
  layer has a bias. With ``fit(sigma_decay="pretrained")`` r and s decay toward 1 (with the
  default ``"zero"``, AdamW decays them toward 0, as it does SVE's σ).
- Deep ensemble: see :class:`DeepEnsemble` (what is and is not independent between members).
- MC dropout: see :class:`MCDropout`.
"""
from __future__ import annotations

import inspect
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch

from sve.ensemble import (
    EnsembleModel,
    build_plain,
    wrap_with,
)
from sve.errors import ConfigError, UnknownNameError
from sve.methods.batch_ensemble import BatchEnsembleLayer
from sve.methods.deep_ensemble import DeepEnsemble
from sve.methods.head_ensemble import HeadEnsemble
from sve.methods.lora_ensemble import LoRALayer
from sve.methods.mc_dropout import MCDropout
from sve.methods.multiple_choice import OPTIONS as MC_OPTIONS
from sve.methods.multiple_choice import attach_answer_head, check_options
from sve.methods.sve import wrap


@dataclass(frozen=True)
class MethodInfo:
    """One registry entry: a one-line description, the default learning rate, the options the
    method takes (name → default) and ``members`` (1 for one-model methods, None = ``num_members``)."""

    description: str
    lr: float
    options: dict[str, Any] = field(default_factory=dict)
    members: int | None = None


def _keywords(fn: Callable, skip: tuple[str, ...]) -> dict[str, Any]:
    """A function's optional arguments and defaults (so the SVE options follow ``wrap``)."""
    params = inspect.signature(fn).parameters.values()
    return {p.name: p.default for p in params if p.default is not p.empty and p.name not in skip}


_WRAP = _keywords(wrap_with, ("inplace", "method", "options"))  # targets, seed, fan_out, dropout


_SVE = _keywords(wrap, ("inplace",))  # the same + init_std, positivity, mode, ...


METHODS: dict[str, MethodInfo] = {
    "sve": MethodInfo("Singular Value Ensemble: per-member singular values, biases and heads on "
                      "shared frozen U, V", 1e-3, _SVE),
    "svf": MethodInfo("Single w/ SVF: SVE with one member (singular-value fine-tuning)", 1e-3, _SVE, 1),
    "single": MethodInfo("one model, full fine-tuning of the trunk and one head", 1e-4,
                         {"seed": None, "dropout": False}, 1),
    "deep_ensemble": MethodInfo("M full fine-tuned trunk copies with their own heads (vectorised "
                                "with torch.func)", 1e-4,
                                {"seed": None, "dropout": False, "vectorize": True}),
    "lora_ensemble": MethodInfo("per-member LoRA (rank r, B = 0 at init) on SVE's targets, frozen "
                                "shared trunk, per-member heads", 1e-3,
                                {**_WRAP, "rank": 8, "alpha": None, "init": "gaussian", "init_std": 0.02,
                                 "init_gain": 1.0}),
    "batch_ensemble": MethodInfo("rank-1 multiplicative fast weights r_m s_mᵀ and biases per member on "
                                 "SVE's targets, shared weights frozen", 1e-3,
                                 {**_WRAP, "init": "normal", "init_std": 0.01, "train_shared": False}),
    "mc_dropout": MethodInfo("one fully fine-tuned model, dropout kept on at test time, M stochastic "
                             "passes", 1e-4, {"seed": None, "rate": 0.1, "head_rate": None}),
    "head_ensemble": MethodInfo("M independently initialised heads on the frozen trunk", 1e-3,
                                {"seed": None}),
}
for _info in METHODS.values():  # every method can read a decoder LM's answer-token logits
    _info.options.update(MC_OPTIONS)


_CHOICES = {"lora_ensemble": ("gaussian", "xavier"), "batch_ensemble": ("normal", "sign", "ones")}


def _method(name: Any) -> MethodInfo:
    if not isinstance(name, str) or name not in METHODS:
        raise UnknownNameError(f"unknown method {name!r}; valid methods: {', '.join(METHODS)}.")
    return METHODS[name]


def default_lr(name: str) -> float:
    """The method's default learning rate (single / deep ensemble 1e-4, LoRA-Ensemble and SVE 1e-3)."""
    return _method(name).lr


def _is_num(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


_CHECKS: dict[str, tuple[Callable[[Any], bool], str]] = {  # option -> (valid?, what is expected)
    "seed": (lambda v: v is None or (isinstance(v, int) and not isinstance(v, bool)), "None or an integer"),
    "init_std": (lambda v: _is_num(v) and v >= 0, "a number ≥ 0"),
    "init_gain": (lambda v: _is_num(v) and v > 0, "a number > 0"),
    "rank": (lambda v: isinstance(v, int) and not isinstance(v, bool) and v >= 1, "an integer ≥ 1"),
    "alpha": (lambda v: v is None or (_is_num(v) and v > 0), "None (= rank) or a number > 0"),
    "rate": (lambda v: _is_num(v) and 0 <= v < 1, "a number in [0, 1)"),
    "head_rate": (lambda v: v is None or (_is_num(v) and 0 <= v < 1), "None or a number in [0, 1)"),
    "dropout": (lambda v: isinstance(v, bool), "True or False"),
    "vectorize": (lambda v: isinstance(v, bool), "True or False"),
    "train_shared": (lambda v: isinstance(v, bool), "True or False"),
}


def _options(name: str, given: dict[str, Any]) -> dict[str, Any]:
    """The method's defaults updated with ``given``; refuses options that don't apply, by name."""
    info = _method(name)
    for key, value in given.items():
        if key not in info.options:
            raise ConfigError(f"option {key!r} does not apply to method {name!r}; its options are: "
                              f"{', '.join(info.options) or 'none'}.")
        valid, expected = _CHECKS.get(key, (lambda v: True, ""))
        if key == "init":
            valid, expected = (lambda v: v in _CHOICES[name]), f"one of {_CHOICES[name]}"
        if not valid(value):
            raise ConfigError(f"{name}: option {key}={value!r} is invalid; expected {expected}.")
    return {**info.options, **given}


def _check_sizes(num_members: Any, num_classes: Any) -> None:
    for what, value, low in (("num_members", num_members, 1), ("num_classes", num_classes, 2)):
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise ConfigError(f"{what}={value!r}: must be an integer ≥ {low}.")


def build(name: str, backbone: Any, num_members: int, num_classes: int, **options: Any) -> EnsembleModel:
    """Build method ``name`` (a key of ``METHODS``) on ``backbone``; logits ``(B, M, C)``.

    ``backbone``: a ``sve.backbones.Backbone`` or a raw timm / transformers model; it is never
    modified (trunks are copied). ``options``: the method's options (``METHODS[name].options``, with
    their defaults); anything else is refused by name. Unknown ``name`` → ``UnknownNameError``.
    ``answer_tokens`` (every method): heads = the LM-head rows of these tokens, frozen unless
    ``answer_head_trainable`` (multiple choice with a decoder LM, ``sve.methods.multiple_choice``).
    """
    info = _method(name)
    _check_sizes(num_members, num_classes)
    opts = _options(name, options)
    mc = {k: opts.pop(k) for k in MC_OPTIONS}
    check_options(mc["answer_tokens"], mc["answer_head_trainable"])
    model = _build(name, info, backbone, num_members, num_classes, opts)
    if mc["answer_tokens"] is not None:
        attach_answer_head(model, model.backbone, mc["answer_tokens"], mc["answer_head_trainable"])
    return model


def _build(name: str, info: MethodInfo, backbone: Any, num_members: int, num_classes: int,
           opts: dict[str, Any]) -> EnsembleModel:
    M = info.members or num_members
    if name in ("sve", "svf"):
        model = wrap(backbone, M, num_classes, **opts)
        model.config["method"] = name
        return model
    if name in ("lora_ensemble", "batch_ensemble"):
        wrap_opts = {k: opts.pop(k) for k in _WRAP}
        layer = LoRALayer if name == "lora_ensemble" else BatchEnsembleLayer
        factory = lambda module, name, num_members, generator: layer(module, num_members, generator, **opts)
        return wrap_with(backbone, factory, M, num_classes, method=name, options=opts, **wrap_opts)
    if opts["seed"] is None:
        opts["seed"] = int(torch.randint(0, 2**31 - 1, ()))
    cls = {"single": EnsembleModel, "deep_ensemble": DeepEnsemble, "mc_dropout": MCDropout,
           "head_ensemble": HeadEnsemble}[name]
    return build_plain(cls, backbone, name, M, num_classes, opts)
