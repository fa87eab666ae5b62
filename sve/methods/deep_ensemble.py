"""Deep ensemble: M fully fine-tuned copies of the trunk, vectorised over members with torch.func."""
from __future__ import annotations

import contextlib
import copy
import warnings
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor, nn

from sve.ensemble import (
    HEAD_INIT_STD,
    EnsembleModel,
    MergedMember,
    build_plain,
    seed_for,
    unwrap,
)
from sve.errors import ConfigError, SVEError


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
                gen = torch.Generator().manual_seed(seed_for(seed + m, "sve_head"))
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
        """Member m as a plain backbone + head with its own trunk weights (``sve.merge`` dispatches
        here: the trunk the members run through holds only the frozen pretrained skeleton)."""
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
    singles = [unwrap(m) for m in models]
    if not singles or any(s.config.get("method") != "single" for s in singles):
        raise ConfigError("stack takes a non-empty list of models built with build('single', ...).")
    first = singles[0]
    if any((s.fingerprint, s.num_classes) != (first.fingerprint, first.num_classes) for s in singles):
        raise ConfigError("stack: every model must share the backbone weights and num_classes.")
    options = {"seed": first.config["seed"], "dropout": False, "vectorize": True}
    model = build_plain(DeepEnsemble, first.backbone, "deep_ensemble", len(singles), first.num_classes,
                        options)
    model.fingerprint, model.base_params = first.fingerprint, first.base_params
    with torch.no_grad():
        trained = [dict(s.trunk.named_parameters()) for s in singles]
        for name, p in model.members.named_parameters():
            p.copy_(torch.stack([t[name].detach() for t in trained]))
        model.sve_head_weight.copy_(torch.cat([s.sve_head_weight.detach() for s in singles]))
        model.sve_head_bias.copy_(torch.cat([s.sve_head_bias.detach() for s in singles]))
    return model
