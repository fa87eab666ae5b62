"""Baselines under one call shape: ``build(name, backbone, num_members, num_classes, **options)``.

Every method returns an ``sve.core.EnsembleModel`` (or a subclass): ``model(**inputs)`` gives
logits ``(B, M, C)``, ``sve.train.fit`` trains it, ``sve.save`` / ``sve.load`` round-trip it (only
trainable tensors are stored; ``load`` calls ``build`` again with the saved config) and
``sve.count_parameters`` counts its trainable tensors. The trunk always runs in eval mode (frozen
BatchNorm statistics; dropout off unless a method says otherwise), as for SVE, so methods differ
only in what they train. ``|trunk|`` = number of backbone parameters, ``D`` = feature width,
``C`` = classes, ``t`` = a targeted layer (``targets``, as for SVE: every Linear / Conv2d inside the
blocks by default) with ``out_t`` outputs and ``fan_in_t`` = in·k·k inputs.

method: what trains — trainable parameters — default lr

- ``sve``: per-member singular values + biases (``sve.core.wrap``), M heads
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

import contextlib
import copy
import inspect
import math
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

from sve.core import (
    HEAD_INIT_STD,
    EnsembleLayer,
    EnsembleModel,
    MergedMember,
    _as_backbone,
    _input_channels,
    _seed_for,
    _unwrap,
    wrap,
    wrap_with,
)
from sve.errors import ConfigError, SVEError, UnknownNameError

# ----------------------------------------------------------------------------------------------
# the method table


@dataclass(frozen=True)
class MethodInfo:
    """One registry entry: a one-line description, the default learning rate, the options the
    method takes (name → default) and ``members`` (1 for one-model methods, None = ``num_members``)."""

    description: str
    lr: float
    options: dict[str, Any] = field(default_factory=dict)
    members: int | None = None


def _keywords(fn: Callable, skip: tuple[str, ...]) -> dict[str, Any]:
    """A function's optional arguments and defaults (so the SVE options follow ``sve.core``)."""
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
    """
    info = _method(name)
    _check_sizes(num_members, num_classes)
    opts = _options(name, options)
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
    return _plain(cls, backbone, name, M, num_classes, opts)


def _plain(cls: type[EnsembleModel], backbone: Any, name: str, M: int, C: int,
           opts: dict[str, Any]) -> EnsembleModel:
    """An EnsembleModel (subclass) with no per-member layers on a copy of the trunk; the trunk is
    trainable for the full fine-tuning methods (all but ``head_ensemble``)."""
    backbone = _as_backbone(backbone)
    fingerprint = backbone.fingerprint()
    base_params = sum(p.numel() for p in backbone.model.parameters())
    backbone = copy.copy(backbone)
    backbone.model = copy.deepcopy(backbone.model).requires_grad_(name != "head_ensemble")
    config = dict(method=name, num_members=M, num_classes=C, **opts)
    gen = torch.Generator().manual_seed(_seed_for(opts["seed"], "sve_head"))
    return cls(backbone, M, C, None, config, fingerprint, base_params, _input_channels(backbone.model), gen)


# ----------------------------------------------------------------------------------------------
# per-member layers for wrap_with


def _add_bias(layer: EnsembleLayer, y: Tensor, bias: Tensor | None) -> Tensor:
    if bias is None:
        return y
    return y + (bias.to(y.dtype).view(-1, 1, 1) if layer.conv else bias.to(y.dtype))


def _per_member_channels(layer: EnsembleLayer, z: Tensor, weights: Tensor) -> Tensor:
    """Member m's channel map ``weights[m]`` (M, out, r) on member m's rows (linear, or 1×1 conv)."""
    if not layer.conv:
        return layer.per_member(z, weights)
    M = weights.shape[0]
    zs = z.reshape(M, -1, *z.shape[1:])
    y = torch.einsum("mbrhw,mor->mbohw", zs, weights.to(z.dtype))
    return y.reshape(z.shape[0], weights.shape[1], *z.shape[2:])


def _frozen(t: Tensor | None) -> nn.Parameter | None:
    return None if t is None else nn.Parameter(t.detach().clone(), requires_grad=False)


class LoRALayer(EnsembleLayer):
    """LoRA-Ensemble layer: ``y_m = W x + b + (α/r)·B_m (A_m x)``, W and b frozen and shared.

    ``lora_A`` (M, r, in[, k, k]) applies with the wrapped module's geometry (stride, padding);
    ``lora_B`` (M, out, r) is a per-member channel map, zero at init. Parameters: M·r·(fan_in + out).
    """

    def __init__(self, module: nn.Module, num_members: int, generator: torch.Generator, rank: int = 8,
                 alpha: float | None = None, init: str = "gaussian", init_std: float = 0.02,
                 init_gain: float = 1.0):
        super().__init__(module, num_members)
        self.weight, self.bias = _frozen(module.weight), _frozen(module.bias)
        self.rank, self.scale = rank, (alpha if alpha is not None else rank) / rank
        shape = (num_members, rank, self.fan_in)
        if init == "gaussian":
            A = torch.randn(shape, generator=generator) * init_std
        else:  # Xavier-uniform of an r × fan_in matrix
            bound = init_gain * math.sqrt(6.0 / (self.fan_in + rank))
            A = (torch.rand(shape, generator=generator) * 2 - 1) * bound
        self.lora_A = nn.Parameter(A.reshape(num_members, rank, *self.weight_shape[1:]))
        self.lora_B = nn.Parameter(torch.zeros(num_members, self.out_features, rank))

    def forward(self, x: Tensor) -> Tensor:
        self.check_rows(x)
        y = _add_bias(self, self.shared(x, self.weight.to(x.dtype)), self.bias)
        z = self.per_member(x, self.lora_A.to(x.dtype))
        return y + self.scale * _per_member_channels(self, z, self.lora_B.to(x.dtype))

    def member_weight(self, m: int) -> tuple[Tensor, Tensor | None]:
        delta = self.lora_B[m].detach() @ self.lora_A[m].detach().reshape(self.rank, -1)
        W = self.weight.detach() + self.scale * delta.reshape(self.weight_shape).to(self.weight.dtype)
        return W, None if self.bias is None else self.bias.detach()

    def extra_repr(self) -> str:
        return f"M={self.num_members}, weight={self.weight_shape}, rank={self.rank}, scale={self.scale:g}"


class BatchEnsembleLayer(EnsembleLayer):
    """BatchEnsemble layer: ``W_m = W ∘ (r_m s_mᵀ)``, ``y_m = ((x ∘ s_m) W) ∘ r_m + b_m``.

    ``be_s`` (M, in) scales input channels, ``be_r`` (M, out) output channels, ``be_bias`` (M, out)
    (only if the layer has a bias). ``weight`` is W, frozen unless ``train_shared``.
    """

    def __init__(self, module: nn.Module, num_members: int, generator: torch.Generator,
                 init: str = "normal", init_std: float = 0.01, train_shared: bool = False):
        super().__init__(module, num_members)
        self.weight = _frozen(module.weight).requires_grad_(train_shared)
        M, out, inp = num_members, self.out_features, self.in_features

        def fast(n: int) -> Tensor:
            if init == "normal":
                return 1 + torch.randn(M, n, generator=generator) * init_std
            if init == "sign":
                return torch.randint(0, 2, (M, n), generator=generator).float() * 2 - 1
            return torch.ones(M, n)

        self.be_r, self.be_s = nn.Parameter(fast(out)), nn.Parameter(fast(inp))
        self.be_bias = None
        if module.bias is not None:
            noise = torch.randn(M, out, generator=generator) * init_std if init == "normal" else 0
            self.be_bias = nn.Parameter(module.bias.detach().float().expand(M, out) + noise)

    def forward(self, x: Tensor) -> Tensor:
        self.check_rows(x)
        y = self.per_channel(self.shared(self.per_channel(x, self.be_s), self.weight.to(x.dtype)), self.be_r)
        return y if self.be_bias is None else self.per_channel(y, self.be_bias, add=True)

    def member_weight(self, m: int) -> tuple[Tensor, Tensor | None]:
        extra = [1] * (len(self.weight_shape) - 2)
        r = self.be_r[m].detach().view(-1, 1, *extra)
        s = self.be_s[m].detach().view(1, -1, *extra)
        W = (self.weight.detach() * r * s).to(self.weight.dtype)
        return W, None if self.be_bias is None else self.be_bias[m].detach()

    def decay_anchors(self) -> dict[str, Tensor]:
        return {"be_r": torch.ones_like(self.be_r.detach()), "be_s": torch.ones_like(self.be_s.detach())}

    def extra_repr(self) -> str:
        return f"M={self.num_members}, weight={self.weight_shape}, train_shared={self.weight.requires_grad}"


# ----------------------------------------------------------------------------------------------
# methods without per-member layers


class HeadEnsemble(EnsembleModel):
    """M independently initialised linear heads on one frozen trunk; the trunk runs once per batch.
    Trainable: the heads only, M·(D+1)·C."""

    def features(self, *args: Tensor, **inputs: Tensor) -> Tensor:
        f = self.backbone.features(**self._inputs(args, inputs))
        return f[:, None].expand(-1, self.num_members, -1)


class _ScaleGrad(torch.autograd.Function):
    """Identity forward; multiplies the gradient by ``k`` on the way back."""

    @staticmethod
    def forward(ctx: Any, x: Tensor, k: float) -> Tensor:
        ctx.k = k
        return x.view_as(x)

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor, None]:
        return grad * ctx.k, None


class _Features(nn.Module):
    """``backbone.features`` as a module whose parameters are the trunk's (for functional_call)."""

    def __init__(self, backbone: Any):
        super().__init__()
        self.trunk, self._backbone = backbone.model, backbone

    def forward(self, inputs: dict[str, Tensor]) -> Tensor:
        return self._backbone.features(**inputs)


def _stacked_copy(trunk: nn.Module, M: int) -> nn.Module:
    """A parameter holder with ``trunk``'s module tree and parameter names, each parameter stacked
    to (M, *shape) (tied parameters stay tied); buffers dropped. Never called, only read."""
    holder = copy.deepcopy(trunk)
    stacked: dict[int, nn.Parameter] = {}
    for module in holder.modules():
        module._buffers.clear()
        for key, p in module._parameters.items():
            if p is not None:
                if id(p) not in stacked:
                    stacked[id(p)] = nn.Parameter(p.detach().unsqueeze(0).repeat(M, *[1] * p.ndim))
                module._parameters[key] = stacked[id(p)]
    return holder


def _vmap_safe_attention(device: torch.device) -> contextlib.AbstractContextManager:
    """On a GPU, the fused attention kernels (flash / memory-efficient) of
    ``scaled_dot_product_attention`` fail in the backward under ``vmap`` ("LSE is not correctly
    aligned", torch 2.11 on an H200); the math kernel batches and differentiates exactly. CPU: as is."""
    if device.type == "cpu":
        return contextlib.nullcontext()
    from torch.nn.attention import SDPBackend, sdpa_kernel

    return sdpa_kernel(SDPBackend.MATH)


def _gpu_autocast(device: torch.device) -> bool:
    """Under a GPU's autocast the vmapped members failed in the backward on an H200 (torch 2.11:
    "expected input and grad types to match"); the member loop is used there instead (exact)."""
    return device.type != "cpu" and torch.is_autocast_enabled(device.type)


class DeepEnsemble(EnsembleModel):
    """M full fine-tuned copies of the trunk, each with its own head, trained jointly by ``fit``.

    Storage: ``members`` holds every trunk parameter stacked to (M, *shape) (named like the trunk's,
    ``members.blocks.0.attn.qkv.weight``); ``trunk`` keeps the frozen pretrained weights as the
    skeleton the members run through (one extra frozen copy in memory; its weights are never used).
    Forward: ``torch.func.vmap`` over the members of ``functional_call(trunk, member params)`` on the
    same batch (``vectorize=True``; if the backbone cannot be vmapped it falls back, with a warning, to
    the loop), or a Python loop over members (``vectorize=False``). Both are exact. On a GPU the
    vmapped path runs attention with the math kernel and, under autocast, the loop is used (both
    because of backward failures seen on an H200; docs/PERFORMANCE.md).

    Init and seeds: every member starts from the pretrained trunk; member m's head is drawn exactly
    as ``build("single", ..., seed=seed + m)`` draws its head.

    What equals M independently trained models: the logits' gradient is multiplied by M on the way
    back, so member m's gradient is that of its own cross-entropy (fit's loss is the mean over
    members), and AdamW acts per element, so member m follows exactly the trajectory of
    ``single`` with seed ``seed + m`` trained by ``fit`` with the same data, seed and settings
    (up to float rounding of the batched kernels; bitwise with ``vectorize=False``), provided
    ``grad_clip=None`` and ``val=None``. What differs: (1) all members see the same batches in the
    same order (fit has one loader), so the data-order part of deep-ensemble diversity is absent
    (a per-member permutation of the rows of one batch would not restore it, the members would still
    see the same examples per step); (2) ``grad_clip`` clips the norm of all members' gradients
    together; (3) the best epoch is picked on the ensemble's validation accuracy, for all members at
    once. For fully independent members (own data order, clip, early stopping), train M ``single``
    models with ``fit(seed=k)`` and combine them with :func:`stack`.
    Trainable: M·|trunk| + M·(D+1)·C.
    """

    def __init__(self, *args: Any, **kw: Any):
        super().__init__(*args, **kw)
        M, seed = self.num_members, self.config["seed"]
        self.vectorize = self.config["vectorize"]
        self.trunk.requires_grad_(False)
        self.members = _stacked_copy(self.trunk, M)
        object.__setattr__(self, "_runner", _Features(self.backbone))  # not a registered submodule
        with torch.no_grad():
            for m in range(M):  # member m's head = the head of `single` with seed + m
                gen = torch.Generator().manual_seed(_seed_for(seed + m, "sve_head"))
                head = torch.randn(1, *self.sve_head_weight.shape[1:], generator=gen) * HEAD_INIT_STD
                self.sve_head_weight[m] = head[0]

    def _member_features(self, params: dict[str, Tensor], inputs: dict[str, Tensor]) -> Tensor:
        return torch.func.functional_call(self._runner, params, (inputs,))

    def features(self, *args: Tensor, **inputs: Tensor) -> Tensor:
        inputs = self._inputs(args, inputs)
        params = {"trunk." + n: p for n, p in self.members.named_parameters()}
        device = next(iter(params.values())).device
        if self.vectorize and not _gpu_autocast(device):
            try:
                run = torch.func.vmap(lambda p: self._member_features(p, inputs), randomness="different")
                with _vmap_safe_attention(device), warnings.catch_warnings():
                    # ops without a batching rule loop inside vmap: still exact
                    warnings.filterwarnings("ignore", message="There is a performance drop")
                    return run(params).transpose(0, 1)
            except SVEError:
                raise
            except Exception as e:  # an op without a batching rule: the exact loop instead
                warnings.warn(f"deep_ensemble: torch.func.vmap failed on this backbone ({type(e).__name__}: "
                              f"{e}); using the member loop from now on.", stacklevel=2)
                self.vectorize = False
        feats = [self._member_features({n: p[m] for n, p in params.items()}, inputs)
                 for m in range(self.num_members)]
        return torch.stack(feats, 1)

    def forward(self, *args: Tensor, **inputs: Tensor) -> Tensor:
        return _ScaleGrad.apply(super().forward(*args, **inputs), float(self.num_members))

    def merge_member(self, m: int) -> MergedMember:
        """Member m as a plain backbone + head (its own trunk weights; ``sve.merge`` would use the
        frozen pretrained skeleton, so call this instead until ``merge`` dispatches here)."""
        if not isinstance(m, int) or not 0 <= m < self.num_members:
            raise ConfigError(f"member m={m!r}: must be an integer from 0 to {self.num_members - 1}.")
        backbone = copy.copy(self.backbone)
        backbone.model = trunk = copy.deepcopy(self.trunk)
        C, D = self.sve_head_weight.shape[1:]
        head = nn.Linear(D, C).to(self.sve_head_weight.device)
        with torch.no_grad():
            for name, p in trunk.named_parameters():
                p.copy_(self.members.get_parameter(name)[m])
            head.weight.copy_(self.sve_head_weight[m])
            head.bias.copy_(self.sve_head_bias[m])
        return MergedMember(backbone, head.requires_grad_(False), self.input_names).eval()


def stack(models: Sequence[nn.Module]) -> DeepEnsemble:
    """A deep ensemble from independently trained ``single`` models (same backbone, classes):
    member m = ``models[m]`` exactly. This is the deep ensemble with independent data order,
    clipping and early stopping per member (train each with ``fit(seed=k)``)."""
    singles = [_unwrap(m) for m in models]
    if not singles or any(s.config.get("method") != "single" for s in singles):
        raise ConfigError("stack takes a non-empty list of models built with build('single', ...).")
    first = singles[0]
    if any((s.fingerprint, s.num_classes) != (first.fingerprint, first.num_classes) for s in singles):
        raise ConfigError("stack: every model must share the backbone weights and num_classes.")
    model = build("deep_ensemble", first.backbone, len(singles), first.num_classes, seed=first.config["seed"])
    model.fingerprint, model.base_params = first.fingerprint, first.base_params
    with torch.no_grad():
        trained = [dict(s.trunk.named_parameters()) for s in singles]
        for name, p in model.members.named_parameters():
            p.copy_(torch.stack([t[name].detach() for t in trained]))
        model.sve_head_weight.copy_(torch.cat([s.sve_head_weight.detach() for s in singles]))
        model.sve_head_bias.copy_(torch.cat([s.sve_head_bias.detach() for s in singles]))
    return model


class MCDropout(EnsembleModel):
    """One fully fine-tuned model whose dropout stays on at test time; member m = dropout sample m.

    Every ``nn.Dropout`` of the trunk gets p = ``rate``, plus a dropout of ``head_rate`` on the pooled
    features; ``head_rate=None`` means ``rate`` for a trunk without ``nn.Dropout`` modules (CNNs,
    Llama) and 0 otherwise (resolved at build and stored in the config). Dropout inside fused
    attention kernels (HF / timm SDPA) follows the trunk's eval mode and stays off.
    Training (``model.train()``): one dropout pass, logits (B, 1, C) (standard dropout training).
    Eval: the batch is repeated M times (member-major) and run in one pass, so each row gets its
    own mask; logits (B, M, C). The masks are drawn from a generator seeded with ``seed`` at every
    eval forward (the global RNG is saved and restored), so predictions are reproducible; a row's
    masks depend on its position in the batch. Trainable: |trunk| + (D+1)·C (one head).
    """

    def __init__(self, *args: Any, **kw: Any):
        super().__init__(*args, **kw)
        drops = [m for m in self.trunk.modules() if isinstance(m, nn.Dropout)]
        rate, head_rate = self.config["rate"], self.config["head_rate"]
        if head_rate is None:
            head_rate = self.config["head_rate"] = 0.0 if drops else rate
        if not (drops and rate > 0) and head_rate == 0:
            raise ConfigError(f"mc_dropout: backbone {getattr(self.backbone, 'name', '?')!r} has "
                              f"{len(drops)} nn.Dropout modules and rate={rate}, head_rate={head_rate}, "
                              "so nothing is random; pass rate > 0 and/or head_rate > 0 (dropout on the "
                              "pooled features).")
        for m in drops:
            m.p = rate
        self.head_drop = nn.Dropout(head_rate)
        self.sve_head_weight = nn.Parameter(self.sve_head_weight.detach()[:1].clone())
        self.sve_head_bias = nn.Parameter(self.sve_head_bias.detach()[:1].clone())
        self.train(False)

    def train(self, mode: bool = True) -> MCDropout:
        super().train(mode)
        for m in self.modules():
            if isinstance(m, nn.Dropout):
                m.train()
        return self

    def forward(self, *args: Tensor, **inputs: Tensor) -> Tensor:
        if self.training:
            f = self.head_drop(self.backbone.features(**self._inputs(args, inputs)))[:, None]
        else:
            device = self.sve_head_weight.device
            with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
                torch.manual_seed(_seed_for(self.config["seed"], "mc_dropout"))
                f = self.head_drop(self.features(*args, **inputs))
        return f @ self.sve_head_weight[0].to(f.dtype).T + self.sve_head_bias[0]


__all__ = ["METHODS", "MethodInfo", "build", "default_lr", "stack", "LoRALayer", "BatchEnsembleLayer",
           "DeepEnsemble", "MCDropout", "HeadEnsemble"]
