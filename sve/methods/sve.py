"""Singular Value Ensembles: the SVD, the two exact paths, ``SVELayer``, ``wrap``, ``spectra``.

Method (Turkoglu et al., ICML 2026). Each targeted pretrained weight ``W`` (out × in; a Conv2d
kernel is reshaped to out × in·k·k) is decomposed once as ``W = U diag(s) Vᵀ`` (full thin SVD, no
truncation; float64 accuracy by default, see ``thin_svd``). ``U`` and ``V`` are frozen buffers
shared by all ``M`` members. Member ``m`` trains only its singular values ``s_m`` (init
``s·(1+ε)``, ``ε ~ N(0, init_std²)``, kept ≥ 0), its bias (init ``b + N(0, init_std²)``) and its
own linear head (``N(0, 0.01²)``, zero bias; ``sve.ensemble``).

Read top to bottom: the SVD (``thin_svd``) → the two exact autograd paths of a linear layer
(``_Factored``: ``y = U(σ ⊙ Vᵀx)``; ``_Dense``: ``W_m = U diag(σ_m) Vᵀ`` rebuilt in the backward)
and their costs (``path_costs``) → ``SVELayer`` (positivity map, path choice, eval weight cache,
conv layers) → ``wrap`` (``sve.ensemble.wrap_with`` with an SVE layer factory) → ``spectra``.
Everything method-agnostic (fan-out of the members inside the trunk, heads, target selection)
lives in ``sve.ensemble``.
"""
from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.autograd.function import once_differentiable

from sve.ensemble import (
    EnsembleLayer,
    EnsembleModel,
    as_backbone,
    one_thread,
    unwrap,
    wrap_with,
)
from sve.errors import ConfigError

MODES = ("auto", "dense", "factored")
POSITIVITY = ("clamp", "softplus")


# ----------------------------------------------------------------------------------------------
# the SVD


_SVD_CACHE: dict[str, dict[tuple, tuple[Tensor, Tensor, Tensor]]] = {}  # fingerprint -> entries


SVD_CACHE_MAX_ELEMENTS = 64_000_000  # ~256 MB of float32 U, s, Vᵀ; the oldest backbones go first


DENSE_CACHE_MAX_ELEMENTS = 32_000_000  # per layer: M dense weights bigger than this are not kept


GRAM_MAX_CONDITION = 1e6  # beyond this κ the Gram route loses the smallest s (error ~1e-16·κ²): gesdd


GRAM_QR_CONDITION = 1e3  # beyond this κ the Gram route's U is re-orthonormalised (QR)


def clear_svd_cache() -> None:
    """Forget every cached SVD (benchmarks time the decomposition itself)."""
    _SVD_CACHE.clear()


def gram_svd(w: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Thin SVD of a float64 matrix through the eigendecomposition of its small Gram matrix.

    out ≥ in: ``WᵀW = V diag(s²) Vᵀ`` (eigh), ``U = W V / s``; out < in: the same on Wᵀ. On CPU this
    is ~2× faster than LAPACK's gesdd, at float64 accuracy of ``U diag(s) Vᵀ`` (exact up to V's
    orthogonality). With condition number κ, s_j carries a relative error ~1e-16·κ² and U's columns
    drift from orthonormal by as much: above ``GRAM_QR_CONDITION`` U is re-orthonormalised by a QR
    (which moves ``U diag(s) Vᵀ`` by only ~1e-16·κ relative); above ``GRAM_MAX_CONDITION``
    (or rank-deficient, or non-finite) LAPACK's gesdd is used instead.
    """
    tall = w.shape[0] >= w.shape[1]
    a = w if tall else w.T
    lam, Q = torch.linalg.eigh(a.T @ a)  # ascending eigenvalues
    s, Q = lam.flip(0).clamp(min=0).sqrt(), Q.flip(1)
    if not bool(s[-1] * GRAM_MAX_CONDITION > s[0]):  # also catches s = 0 and NaN
        return torch.linalg.svd(w, full_matrices=False)
    P = (a @ Q) / s
    if s[0] > GRAM_QR_CONDITION * s[-1]:
        P, R = torch.linalg.qr(P)
        P = P * R.diagonal().sign()
    return (P, s, Q.T) if tall else (Q, s, P.T)


def thin_svd(weight: Tensor, dtype: str = "float64",
             key: tuple | None = None) -> tuple[Tensor, Tensor, Tensor]:
    """``U (out, r), s (r,), Vᵀ (r, fan_in)`` of ``weight`` reshaped to out × fan_in.

    ``dtype="float64"``: float64 accuracy through ``gram_svd`` (gesdd where the matrix is
    ill-conditioned); ``"float32"``: LAPACK's gesdd in float32, as the authors. Single-threaded
    (``one_thread``). U, Vᵀ are returned in the weight's dtype, s in float32. With a ``key``
    (``wrap`` uses (backbone fingerprint, layer name, dtype, device)) the result is kept in a small
    in-memory cache, so wrapping the same backbone again (another seed or M, ``load``) skips the
    SVD. Cached tensors are shared read-only by the models that use them.
    """
    store = _SVD_CACHE.get(key[0], {}) if key is not None else {}
    if key in store:
        return store[key]
    w = weight.detach()
    m = w.reshape(w.shape[0], -1)
    with one_thread():
        if dtype == "float64":
            U, s, Vh = gram_svd(m.double())
        else:
            U, s, Vh = torch.linalg.svd(m.float(), full_matrices=False)
    result = (U.to(w.dtype).contiguous(), s.float(), Vh.to(w.dtype).contiguous())
    if key is not None:
        _SVD_CACHE[key[0]] = {**_SVD_CACHE.pop(key[0], {}), key: result}  # most recent last
        size = lambda: sum(t.numel() for e in _SVD_CACHE.values() for r in e.values() for t in r)
        while _SVD_CACHE and size() > SVD_CACHE_MAX_ELEMENTS:
            _SVD_CACHE.pop(next(iter(_SVD_CACHE)))
    return result


# ----------------------------------------------------------------------------------------------
# the two exact paths of a linear SVE layer, as autograd Functions on member-major rows


def _member_weights(U: Tensor, sigma: Tensor, Vh: Tensor) -> Tensor:
    """All members' dense weights ``W_m = (U·σ_m) Vᵀ``, (M, out, in): one batched GEMM."""
    return torch.matmul(U * sigma[:, None, :], Vh)


def _apply_dense(x: Tensor, W: Tensor, bias: Tensor | None) -> Tensor:
    """``y_m = x_m W_mᵀ + b_m`` as one batched GEMM with the bias fused (baddbmm)."""
    Wt = W.transpose(1, 2)
    return torch.bmm(x, Wt) if bias is None else torch.baddbmm(bias[:, None, :], x, Wt)


class _Factored(torch.autograd.Function):
    """``y_m = (x_m V) (U diag(σ_m))ᵀ + b_m``; no per-member weight of size out × in is built.

    Forward: ``z = x V`` (one GEMM over all members' rows), then a batched GEMM with the small
    per-member factor ``U diag(σ_m)`` (M, out, r), bias fused. Saves only z (M, T, r).
    Backward (g = ∂L/∂y): ``P = g U``; ``∂σ_m = Σ_t z ⊙ P``; ``∂x_m = P_m (diag(σ_m) Vᵀ)``;
    ``∂b_m = Σ_t g_m``. σ is folded into the (M, ·, r) factors, so no elementwise pass scales the
    activations.
    """

    @staticmethod
    def forward(ctx: Any, x: Tensor, sigma: Tensor, bias: Tensor | None, U: Tensor, Vh: Tensor) -> Tensor:
        z = torch.matmul(x, Vh.T)
        Us = (U * sigma[:, None, :]).transpose(1, 2)
        y = torch.bmm(z, Us) if bias is None else torch.baddbmm(bias[:, None, :], z, Us)
        ctx.save_for_backward(z, sigma, U, Vh)
        return y

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, g: Tensor) -> tuple[Tensor | None, ...]:
        z, sigma, U, Vh = ctx.saved_tensors
        need_x, need_s, need_b = ctx.needs_input_grad[:3]
        P = torch.matmul(g, U) if need_x or need_s else None
        gx = torch.bmm(P, sigma[:, :, None] * Vh) if need_x else None
        gs = (z * P).sum(1) if need_s else None
        gb = g.sum(1) if need_b else None
        return gx, gs, gb, None, None


class _Dense(torch.autograd.Function):
    """``y_m = x_m W_mᵀ + b_m`` with ``W_m = U diag(σ_m) Vᵀ`` built in the forward and rebuilt in
    the backward, so the M dense weights are never kept between the two (saves x, as a plain
    linear layer does). Backward: ``G_m = g_mᵀ x_m`` (the dense weight gradient, one batched GEMM),
    ``∂σ_m = diag(Uᵀ G_m V)``, ``∂x_m = g_m W_m``, ``∂b_m = Σ_t g_m``.
    """

    @staticmethod
    def forward(ctx: Any, x: Tensor, sigma: Tensor, bias: Tensor | None, U: Tensor, Vh: Tensor) -> Tensor:
        ctx.save_for_backward(x, sigma, U, Vh)
        return _apply_dense(x, _member_weights(U, sigma, Vh), bias)

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, g: Tensor) -> tuple[Tensor | None, ...]:
        x, sigma, U, Vh = ctx.saved_tensors
        need_x, need_s, need_b = ctx.needs_input_grad[:3]
        gs = (torch.matmul(torch.bmm(g.transpose(1, 2), x), Vh.T) * U).sum(1) if need_s else None
        gx = torch.bmm(g, _member_weights(U, sigma, Vh)) if need_x else None
        gb = g.sum(1) if need_b else None
        return gx, gs, gb, None, None


def path_costs(rows: int, members: int, out: int, fan_in: int, rank: int, train: bool,
               input_grad: bool = True, cached: bool = False) -> tuple[int, int]:
    """Multiply-adds of one SVE layer's (dense, factored) path on ``rows`` = M·T rows.

    ``train``: forward + backward (∂σ always, ∂x if ``input_grad``); else the forward only, where
    cached dense weights cost nothing to build. The formulas are those of ``_Dense`` / ``_Factored``
    (the comment above them); ``SVELayer.use_dense`` takes the cheaper path.
    """
    R, M, o, i, r = rows, members, out, fan_in, rank
    build = M * o * r * i
    if not train:
        return R * o * i + (0 if cached else build), R * r * (i + o)
    dense = 2 * R * o * i + 2 * build + ((R * o * i + build) if input_grad else 0)
    factored = R * r * (i + o) + R * o * r + (R * r * i if input_grad else 0)
    return dense, factored


# ----------------------------------------------------------------------------------------------
# the layer


class SVELayer(EnsembleLayer):
    """Singular Value Ensemble layer: member m uses ``W_m = U diag(s_m) Vᵀ`` and bias ``b_m``.

    Math (fan_in = in·k·k for a conv, r = min(out, fan_in)):
        W = U diag(s) Vᵀ                  full thin SVD, once; U, Vᵀ frozen buffers shared by members
        s_m = max(s·(1+ε_m), 0),  ε_m ~ N(0, init_std²)      trainable ``sve_sigma`` (M, r)
        b_m = b + η_m,            η_m ~ N(0, init_std²)      trainable ``sve_bias``  (M, out)
        σ_m = clamp(sve_sigma, 0)  or  softplus(sve_sigma)   (positivity="softplus": smooth)
        y_m = W_m x_m + b_m, two exact paths on member m's rows x_m:
          dense:    W_m = (U·σ_m) Vᵀ, then one batched GEMM (``_Dense``: rebuilt in the backward,
                    never kept; the σ gradient is the dense weight gradient projected on U, V)
          factored: y_m = U (σ_m ⊙ (Vᵀ x_m))    (``_Factored``: no per-member weight is built)
    Linear layers use the two autograd Functions above; conv layers the same math with plain
    autograd (a grouped conv for dense, shared conv + 1×1 for factored).
    ``mode="auto"`` picks the cheaper path per layer and call by ``path_costs`` (shapes, autograd
    mode, whether the input needs a gradient): with autograd off the dense W_m are cached until
    ``sve_sigma`` changes (unless M·out·fan_in > ``DENSE_CACHE_MAX_ELEMENTS``), so their build counts
    as free; the choice never depends on the cache's state, so the same inputs give the same bits.

    The SVD runs in ``svd_dtype`` (float64 by default, see ``thin_svd``: its rounding to float32
    rebuilds W ~5× more exactly than a float32 SVD, as the authors use).
    U, Vᵀ are stored in the weight's dtype; σ, biases and heads are float32 parameters.
    """

    def __init__(self, module: nn.Module, num_members: int, init_std: float = 0.01,
                 generator: torch.Generator | None = None, positivity: str = "clamp",
                 mode: str = "auto", svd_dtype: str = "float64", svd_key: tuple | None = None):
        super().__init__(module, num_members)
        U, s, Vh = thin_svd(module.weight, svd_dtype, svd_key)
        self.register_buffer("U", U)
        self.register_buffer("Vh", Vh)
        self.register_buffer("sigma0", s, persistent=False)
        self.positivity, self.mode, self._cache = positivity, mode, None
        eps = torch.randn(num_members, s.numel(), generator=generator) * init_std
        self.sve_sigma = nn.Parameter(self._raw((s * (1 + eps)).clamp(min=0)))
        self.sve_bias = None
        if module.bias is not None:
            noise = torch.randn(num_members, self.out_features, generator=generator) * init_std
            self.sve_bias = nn.Parameter(module.bias.detach().float() + noise)

    def _raw(self, s: Tensor) -> Tensor:  # inverse of sigma(): softplus⁻¹(s) = log(expm1(s))
        if self.positivity == "clamp":
            return s
        s = s.clamp(min=1e-8)
        return torch.where(s > 20, s, torch.log(torch.expm1(s)))

    def sigma(self) -> Tensor:
        """Per-member singular values after the positivity map, (M, r)."""
        raw = self.sve_sigma
        return raw.clamp(min=0) if self.positivity == "clamp" else F.softplus(raw)

    def _caching(self) -> bool:  # autograd off and the M dense weights not too big to keep
        return not torch.is_grad_enabled() and (
            self.num_members * self.out_features * self.fan_in <= DENSE_CACHE_MAX_ELEMENTS)

    def weights(self) -> Tensor:
        """All members' dense weights (M, *weight_shape); cached while autograd is off, until
        ``sve_sigma`` changes.

        The cache keeps a copy of ``sve_sigma`` (M·r numbers, small beside the M·out·fan_in of W)
        and compares values, not the tensor's version counter: a fused optimizer step (AdamW with
        ``fused=True``) and ``.data`` edits change σ without bumping that counter."""
        sigma = self.sve_sigma.detach()
        cached = self._cache
        if (cached is not None and self._caching() and cached[0].dtype == sigma.dtype
                and cached[0].device == sigma.device and cached[1].dtype == self.U.dtype
                and torch.equal(cached[0], sigma)):
            return cached[1]
        W = _member_weights(self.U, self.sigma().to(self.U.dtype), self.Vh)  # (M, out, fan_in)
        W = W.reshape(self.num_members, *self.weight_shape)
        self._cache = (sigma.clone(), W) if self._caching() else None
        return W

    def clear_cache(self) -> None:
        self._cache = None

    def use_dense(self, x: Tensor) -> bool:
        """The path this call takes: ``mode``, or for "auto" the cheaper one by ``path_costs``."""
        if self.mode != "auto":
            return self.mode == "dense"
        rows = x.numel() // self.in_features // (math.prod(self.stride) if self.conv else 1)
        train = torch.is_grad_enabled() and (self.sve_sigma.requires_grad or x.requires_grad)
        dense, factored = path_costs(rows, self.num_members, self.out_features, self.fan_in,
                                     self.Vh.shape[0], train, x.requires_grad, self._caching())
        return dense <= factored

    def forward(self, x: Tensor) -> Tensor:
        self.check_rows(x)
        if self._cache is not None and torch.is_grad_enabled():
            self._cache = None  # training resumed: σ will change, don't carry M dense weights through it
        if self.conv:
            return self._conv_forward(x)
        M, dense = self.num_members, self.use_dense(x)
        dtype = x.dtype
        if torch.is_autocast_enabled(x.device.type):  # run the Functions in autocast's dtype
            dtype = torch.get_autocast_dtype(x.device.type)
        xs = x.reshape(M, -1, self.in_features).to(dtype)
        bias = None if self.sve_bias is None else self.sve_bias.to(dtype)
        with torch.autocast(x.device.type, enabled=False):
            if dense and self._caching():
                y = _apply_dense(xs, self.weights().to(dtype), bias)
            else:
                fn = _Dense if dense else _Factored
                y = fn.apply(xs, self.sigma().to(dtype), bias, self.U.to(dtype), self.Vh.to(dtype))
        return y.reshape(*x.shape[:-1], self.out_features)

    def _conv_forward(self, x: Tensor) -> Tensor:
        if self.use_dense(x):
            y = self.per_member(x, self.weights().to(x.dtype))
        else:
            z = self.shared(x, self.Vh.reshape(-1, *self.weight_shape[1:]).to(x.dtype))
            y = self.pointwise(self.per_channel(z, self.sigma()), self.U.to(x.dtype))
        return y if self.sve_bias is None else self.per_channel(y, self.sve_bias, add=True)

    def member_weight(self, m: int) -> tuple[Tensor, Tensor | None]:
        W = (self.U.float() * self.sigma()[m].detach().float()) @ self.Vh.float()
        bias = None if self.sve_bias is None else self.sve_bias[m].detach()
        return W.reshape(self.weight_shape).to(self.U.dtype), bias

    def decay_anchors(self) -> dict[str, Tensor]:
        return {"sve_sigma": self._raw(self.sigma0.float())}

    def extra_repr(self) -> str:
        return (f"M={self.num_members}, weight={self.weight_shape}, r={self.Vh.shape[0]}, "
                f"positivity={self.positivity}, mode={self.mode}")


# ----------------------------------------------------------------------------------------------
# wrap a backbone


def wrap(backbone: Any, num_members: int, num_classes: int, targets: str | list[str] = "all",
         init_std: float = 0.01, seed: int | None = None, *, positivity: str = "clamp",
         mode: str = "auto", svd_dtype: str = "float64", fan_out: str = "auto",
         dropout: bool = False, inplace: bool = False) -> EnsembleModel:
    """Turn a pretrained backbone into a Singular Value Ensemble of ``num_members`` members.

    Args:
        backbone: a ``sve.backbones.Backbone`` or a raw timm / transformers model.
        num_members: M ≥ 1 (M = 1 is "SVF", singular-value fine-tuning).
        num_classes: width C of each member's head. ``forward`` returns logits (B, M, C).
        targets: "all" | "attention" | "mlp" | "last:K" | list of module-name patterns
            (see ``select_targets``).
        init_std: σ of the multiplicative singular-value noise and the additive bias noise.
        seed: makes the init reproducible (None: drawn from torch's global RNG).
        positivity: "clamp" (the paper: σ = max(raw, 0)) or "softplus" (smooth, σ = softplus(raw)).
        mode: "auto" | "dense" | "factored", the forward path of every SVE layer (see SVELayer).
        svd_dtype: "float64" (default, more exact) or "float32" (the authors; faster on CPU).
        fan_out: "auto" (members fan out at the first targeted block) or "input".
        dropout: let the trunk's nn.Dropout modules be active in training (off by default).
        inplace: modify ``backbone.model`` instead of a deep copy.
    """
    if not isinstance(init_std, (int, float)) or not init_std >= 0:
        raise ConfigError(f"init_std={init_std!r}: must be a number ≥ 0 (default 0.01).")
    if positivity not in POSITIVITY:
        raise ConfigError(f"positivity={positivity!r}: use one of {POSITIVITY}.")
    if mode not in MODES:
        raise ConfigError(f"mode={mode!r}: use one of {MODES}.")
    if svd_dtype not in ("float64", "float32"):
        raise ConfigError(f"svd_dtype={svd_dtype!r}: use 'float64' or 'float32'.")
    backbone = as_backbone(backbone)
    fingerprint = backbone.fingerprint()
    factory = lambda module, name, num_members, generator: SVELayer(
        module, num_members, init_std, generator, positivity, mode, svd_dtype,
        svd_key=(fingerprint, name, svd_dtype, str(module.weight.device)))
    return wrap_with(backbone, factory, num_members, num_classes, targets, seed, fan_out=fan_out,
                     dropout=dropout, inplace=inplace, method="sve",
                     options=dict(init_std=init_std, positivity=positivity, mode=mode, svd_dtype=svd_dtype))


def set_mode(model: nn.Module, mode: str) -> None:
    """Force every SVE layer's forward path: "auto", "dense" or "factored"."""
    if mode not in MODES:
        raise ConfigError(f"mode={mode!r}: use one of {MODES}.")
    for layer in unwrap(model).layers().values():
        if isinstance(layer, SVELayer):
            layer.mode = mode


def spectra(model: nn.Module) -> dict[str, tuple[Tensor, Tensor]]:
    """``{layer name: (σ (M, r) after the positivity map, σ0 (r,) pretrained)}``, CPU float."""
    return {name: (layer.sigma().detach().float().cpu(), layer.sigma0.detach().float().cpu())
            for name, layer in unwrap(model).layers().items() if isinstance(layer, SVELayer)}
