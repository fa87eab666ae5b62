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
    member_seed,
    seed_for,
    unwrap,
)
from sve.errors import ConfigError, DataError, SVEError


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
    """M full fine-tuned copies of the trunk, each with its own head: M independently trained models.

    Storage: ``members`` holds every trunk parameter stacked to (M, *shape) (named like the trunk's,
    ``members.blocks.0.attn.qkv.weight``); ``trunk`` keeps the frozen pretrained weights as the
    skeleton the members run through (one extra frozen copy in memory; its weights are never used).
    Forward: ``torch.func.vmap`` over the members of ``functional_call(trunk, member params)``
    (``vectorize=True``; if the backbone cannot be vmapped it falls back, with a warning, to the
    loop), or a Python loop over members (``vectorize=False``). Both are exact. On a GPU the vmapped
    path runs attention with the math kernel and, under autocast, the loop is used (both because of
    backward failures seen on an H200; docs/PERFORMANCE.md).

    Inputs: ``forward(**inputs)`` runs every member on the same batch of B rows (prediction);
    ``forward(**inputs, member_batches=True)`` takes a member-major batch of M·B rows and runs
    member m on rows ``m·B … (m+1)·B − 1`` only (vmapped with ``in_dims=0`` over the inputs too), so
    that the members can take different batches in one step. Logits are (B, M, C) either way.

    Init and seeds: every member starts from the pretrained trunk; member m's head is drawn exactly
    as ``build("single", ..., seed=member_seed(seed, m))`` (``seed + 1000·m``) draws its head, so
    member 0 is the single model of the same seed and runs at different seeds share no member.

    Training (``independent_members = True``: ``sve.train.fit`` trains the members as M separate
    fine-tunings, see its module docstring): member m gets its own data order, the one
    ``fit(seed=member_seed(s, m))`` gives a model alone (its own shuffling seed); the logits' gradient is
    multiplied by M on the way back, so that member m's gradient is that of its own cross-entropy
    (fit's loss is the mean over members); the gradient norm is clipped per member (each member's own
    norm); AdamW acts per element; and each member keeps its own best epoch (its own validation
    accuracy, ties: NLL, as ``fit`` picks a model's best epoch). So member m of a deep ensemble built
    with ``seed=b`` and trained by ``fit(seed=s)`` follows the trajectory of ``build("single",
    seed=member_seed(b, m))`` trained alone by ``fit(seed=member_seed(s, m))`` with the same data and
    settings (up to float rounding of the batched kernels; bitwise with ``vectorize=False``). Not
    matched: global random draws inside the forward (``dropout=True``), which ``fit`` seeds once for
    the whole ensemble.
    ``fit(..., independent=False)`` trains the members jointly instead (all on the same batches, one
    clip norm, one best epoch), the deep ensemble of earlier versions. :func:`stack` combines M
    ``single`` models trained separately.
    Trainable: M·|trunk| + M·(D+1)·C.
    """

    #: ``sve.train.fit`` trains the members as M separate models (own batches, clip norm, best epoch);
    #: every trainable tensor holds the members on dim 0
    independent_members = True

    def __init__(self, *args: Any, **kw: Any):
        super().__init__(*args, **kw)
        M, seed = self.num_members, self.config["seed"]
        self.vectorize = self.config["vectorize"]
        self.trunk.requires_grad_(False)
        self.members = _stacked_copy(self.trunk, M)
        object.__setattr__(self, "_runner", _Features(self.backbone))  # not a registered submodule
        with torch.no_grad():
            for m in range(M):  # member m's head = the head of `single` with member_seed(seed, m)
                gen = torch.Generator().manual_seed(seed_for(member_seed(seed, m), "sve_head"))
                head = torch.randn(1, *self.sve_head_weight.shape[1:], generator=gen) * HEAD_INIT_STD
                self.sve_head_weight[m] = head[0]

    def _member_features(self, params: dict[str, Tensor], inputs: dict[str, Tensor]) -> Tensor:
        return torch.func.functional_call(self._runner, params, (inputs,))

    def _per_member(self, inputs: dict[str, Tensor]) -> dict[str, Tensor]:
        """A member-major batch of M·B rows as (M, B, ...) per input."""
        M, n = self.num_members, next(iter(inputs.values())).shape[0]
        if n % M:
            raise DataError(f"member_batches=True takes a member-major batch of M·B rows (M={M}); got {n} "
                            "rows. Concatenate one batch of B rows per member (member 0 first).")
        return {k: v.reshape(M, n // M, *v.shape[1:]) for k, v in inputs.items()}

    def features(self, *args: Tensor, member_batches: bool = False, **inputs: Tensor) -> Tensor:
        """Member features (B, M, D): every member on the same B rows, or with ``member_batches=True``
        member m on its own rows of a member-major batch of M·B rows (class docstring)."""
        inputs = self._inputs(args, inputs)
        if member_batches:
            inputs = self._per_member(inputs)
        params = {"trunk." + n: p for n, p in self.members.named_parameters()}
        device = next(iter(params.values())).device
        if self.vectorize and not _gpu_autocast(device):
            try:
                run = torch.func.vmap(self._member_features, in_dims=(0, 0 if member_batches else None),
                                      randomness="different")
                with _vmap_safe_attention(device), warnings.catch_warnings():
                    # ops without a batching rule loop inside vmap: still exact
                    warnings.filterwarnings("ignore", message="There is a performance drop")
                    return run(params, inputs).transpose(0, 1)
            except SVEError:
                raise
            except Exception as e:  # an op without a batching rule: the exact loop instead
                warnings.warn(f"deep_ensemble: torch.func.vmap failed on this backbone ({type(e).__name__}: "
                              f"{e}); using the member loop from now on.", stacklevel=2)
                self.vectorize = False
        feats = [self._member_features({n: p[m] for n, p in params.items()},
                                       {k: v[m] for k, v in inputs.items()} if member_batches else inputs)
                 for m in range(self.num_members)]
        return torch.stack(feats, 1)

    def forward(self, *args: Tensor, member_batches: bool = False, **inputs: Tensor) -> Tensor:
        """Logits (B, M, C); ``member_batches`` as in :meth:`features`. The gradient is scaled by M
        (class docstring)."""
        logits = super().forward(*args, member_batches=member_batches, **inputs)  # reaches features()
        return _ScaleGrad.apply(logits, float(self.num_members))

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
    """A deep ensemble from separately trained ``single`` models (same backbone, classes): member m =
    ``models[m]`` exactly (``fit`` trains a ``DeepEnsemble``'s members the same way in one run)."""
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
