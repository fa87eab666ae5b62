"""The SVE layer, `wrap` for any timm / transformers backbone, member fan-out, heads, accounting.

Method (Turkoglu et al., ICML 2026). Each targeted pretrained weight ``W`` (out × in; a Conv2d
kernel is reshaped to out × in·k·k) is decomposed once as ``W = U diag(s) Vᵀ`` (full thin SVD, no
truncation; float64 accuracy by default, see ``thin_svd``). ``U`` and ``V`` are frozen buffers
shared by all ``M`` members. Member ``m`` trains only its singular values ``s_m`` (init
``s·(1+ε)``, ``ε ~ N(0, init_std²)``, kept ≥ 0), its bias (init ``b + N(0, init_std²)``) and its
own linear head (``N(0, 0.01²)``, zero bias).

Layout. Members are *member-major* inside the trunk: a hidden tensor of a batch ``B`` has leading
dimension ``M·B`` and member ``m`` owns rows ``m·B:(m+1)·B``. The trunk before the first targeted
block runs once per batch; a forward pre-hook on that block (and every later block) repeats every
batch-shaped tensor argument (hidden states, attention masks, rotary cos/sin: any tensor with
≥ 2 dims whose first dim is ``B``) ``M`` times. The backbone's pooling sees ``M·B`` rows.
If a target sits before the first block (a CNN stem), the inputs themselves are repeated.

Plug-in hook for other per-member layers (LoRA-Ensemble, BatchEnsemble, ... in ``sve.methods``):

    wrap_with(backbone, layer_factory, num_members, num_classes, targets="all", seed=None,
              method="my-method", options={...}) -> EnsembleModel

- ``layer_factory(module, name, num_members, generator) -> EnsembleLayer`` is called once per
  targeted ``nn.Linear`` / ``nn.Conv2d`` (groups 1; depthwise/grouped convs, weight-standardised
  convs and ``nn.MultiheadAttention``'s projections are skipped). Draw all randomness from
  ``generator``: it is seeded from ``seed`` and the layer's name, so one layer's init does not
  depend on which other layers are targeted.
- Subclass ``EnsembleLayer``: ``forward`` maps (M·B, ..., in) → (M·B, ..., out). The helpers
  ``shared`` (a shared weight with the module's geometry), ``pointwise`` (a 1×1 / linear map),
  ``per_member`` (one weight per member, batched) and ``per_channel`` (scale/shift by a per-member
  channel vector) make linear and conv layers one code path. Implement ``member_weight(m)`` so
  ``merge`` works, and optionally ``decay_anchors()`` (what weight decay pulls toward).
- Name trainable parameters with a method prefix (``lora_A``, ``be_r``...). ``save`` stores every
  parameter with ``requires_grad``; ``load`` rebuilds SVE with ``wrap`` and any other method with
  ``sve.methods.build(method, backbone, num_members, num_classes, **options)``.
"""

from __future__ import annotations

import contextlib
import copy
import fnmatch
import math
import zlib
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.autograd.function import once_differentiable

from sve.errors import ConfigError, DataError, SVEError

HEAD_INIT_STD = 0.01
ADAPTER_FORMAT = "sve-adapter/1"
MODES = ("auto", "dense", "factored")
POSITIVITY = ("clamp", "softplus")
_ATTENTION_WORDS = ("attn", "attention")
_TEXT_INPUTS = ("input_ids", "attention_mask", "token_type_ids", "position_ids")


# ----------------------------------------------------------------------------------------------
# per-member layers


class EnsembleLayer(nn.Module):
    """Base of the per-member layers that replace a targeted ``nn.Linear`` / ``nn.Conv2d``.

    Holds the wrapped module's geometry and a weight-less copy of it (``template``, on the meta
    device, not registered) from which ``merged(m)`` rebuilds a plain module for member ``m``.
    """

    def __init__(self, module: nn.Module, num_members: int):
        super().__init__()
        self.num_members = num_members
        self.conv = isinstance(module, nn.Conv2d)
        self.weight_shape = tuple(module.weight.shape)
        self.out_features = self.weight_shape[0]
        self.in_features = self.weight_shape[1]
        self.fan_in = math.prod(self.weight_shape[1:])
        if self.conv:
            self.stride, self.padding, self.dilation = module.stride, module.padding, module.dilation
            self.same = type(module).__name__ == "Conv2dSame"
        object.__setattr__(self, "template", copy.deepcopy(module).to("meta"))

    # -- geometry helpers shared by every member-layer type ------------------------------------
    def _conv(self, x: Tensor, weight: Tensor, groups: int = 1) -> Tensor:
        if self.same:  # timm's TF-"same" padding
            from timm.layers import pad_same

            x = pad_same(x, self.weight_shape[2:], self.stride, self.dilation)
        return F.conv2d(x, weight, None, self.stride, self.padding, self.dilation, groups)

    def shared(self, x: Tensor, weight: Tensor) -> Tensor:
        """Apply one weight (out', in[, k, k]) to all rows with the module's geometry."""
        return self._conv(x, weight) if self.conv else F.linear(x, weight)

    def pointwise(self, z: Tensor, weight: Tensor) -> Tensor:
        """Channel map (out, r): ``F.linear`` on the last dim, or a 1×1 conv."""
        return F.conv2d(z, weight[:, :, None, None]) if self.conv else F.linear(z, weight)

    def per_member(self, x: Tensor, weights: Tensor) -> Tensor:
        """Apply member m's weight ``weights[m]`` (M, out, in[, k, k]) to member m's rows."""
        M = weights.shape[0]
        if not self.conv:
            xs = x.reshape(M, -1, x.shape[-1])
            return torch.bmm(xs, weights.transpose(1, 2)).reshape(*x.shape[:-1], -1)
        B = x.shape[0] // M  # (M·B, C, H, W) -> (B, M·C, H, W): one grouped conv with M groups
        xs = x.reshape(M, B, *x.shape[1:]).transpose(0, 1).reshape(B, -1, *x.shape[2:])
        y = self._conv(xs, weights.reshape(-1, *weights.shape[2:]), groups=M)
        return y.reshape(B, M, -1, *y.shape[2:]).transpose(0, 1).reshape(M * B, -1, *y.shape[2:])

    def per_channel(self, z: Tensor, v: Tensor, add: bool = False) -> Tensor:
        """``z * v[m]`` (or ``+``) on the channel dim of member m's rows; v is (M, channels)."""
        M = v.shape[0]
        zs = z.reshape(M, -1, *z.shape[1:])
        shape = [M] + [1] * (zs.ndim - 1)
        shape[2 if self.conv else -1] = v.shape[1]
        v = v.to(z.dtype).view(shape)
        return (zs + v if add else zs * v).reshape(z.shape)

    def check_rows(self, x: Tensor) -> None:
        if x.shape[0] % self.num_members:
            raise SVEError(
                f"an ensemble layer got a batch of {x.shape[0]} rows, not a multiple of "
                f"num_members={self.num_members}: the members were not fanned out before it. "
                "Wrap with fan_out='input' to repeat the inputs instead."
            )

    # -- what other modules use ----------------------------------------------------------------
    def member_weight(self, m: int) -> tuple[Tensor, Tensor | None]:
        """Member m's dense (weight, bias) in the wrapped module's shapes."""
        raise NotImplementedError

    def decay_anchors(self) -> dict[str, Tensor]:
        """``{parameter name: value}`` that "decay toward the pretrained value" pulls toward."""
        return {}

    def merged(self, m: int) -> nn.Module:
        """A plain copy of the wrapped module holding member m's weight and bias."""
        weight, bias = self.member_weight(m)
        module = copy.deepcopy(self.template).to_empty(device=weight.device)
        with torch.no_grad():
            module.weight.copy_(weight)
            if module.bias is not None:
                module.bias.copy_(bias)
        return module.requires_grad_(False)


_SVD_CACHE: dict[str, dict[tuple, tuple[Tensor, Tensor, Tensor]]] = {}  # fingerprint -> entries
SVD_CACHE_MAX_ELEMENTS = 64_000_000  # ~256 MB of float32 U, s, Vᵀ; the oldest backbones go first
DENSE_CACHE_MAX_ELEMENTS = 32_000_000  # per layer: M dense weights bigger than this are not kept
GRAM_MAX_CONDITION = 1e6  # beyond this κ the Gram route loses the smallest s (error ~1e-16·κ²): gesdd
GRAM_QR_CONDITION = 1e3  # beyond this κ the Gram route's U is re-orthonormalised (QR)


@contextlib.contextmanager
def _one_thread():
    """LAPACK's threaded SVD / eigh is up to ~30× slower on a busy 2-core machine (its threads
    spin-wait for each other); decompositions run single-threaded, then the count is restored.
    Switching costs ~20 ms, so ``wrap_with`` holds one thread over all its layers (nested: no-op)."""
    n = torch.get_num_threads()
    if n == 1:
        yield
        return
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(n)


def _gram_svd(w: Tensor) -> tuple[Tensor, Tensor, Tensor]:
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

    ``dtype="float64"``: float64 accuracy through ``_gram_svd`` (gesdd where the matrix is
    ill-conditioned); ``"float32"``: LAPACK's gesdd in float32, as the authors. Single-threaded
    (``_one_thread``). U, Vᵀ are returned in the weight's dtype, s in float32. With a ``key``
    (``wrap`` uses (backbone fingerprint, layer name, dtype, device)) the result is kept in a small
    in-memory cache, so wrapping the same backbone again (another seed or M, ``load``) skips the
    SVD. Cached tensors are shared read-only by the models that use them.
    """
    store = _SVD_CACHE.get(key[0], {}) if key is not None else {}
    if key in store:
        return store[key]
    w = weight.detach()
    m = w.reshape(w.shape[0], -1)
    with _one_thread():
        if dtype == "float64":
            U, s, Vh = _gram_svd(m.double())
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
#
# Shapes: x (M, T, in) (member m's T rows contiguous), σ (M, r), b (M, out) or None, U (out, r),
# Vᵀ (r, in), y (M, T, out). Costs in multiply-adds for R = M·T rows (see docs/PERFORMANCE.md):
#   factored  forward R·r·(in+out)          backward R·out·r (+ R·r·in for ∂x)
#   dense     forward R·out·in + M·out·r·in backward R·out·in + M·out·in·r (+ R·out·in + M·out·r·in for ∂x)
#   a plain linear layer (the limit): forward R·out·in, backward 2·R·out·in (∂x and ∂W)


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
        ``sve_sigma`` changes (its version counter; after a ``.data`` edit call ``clear_cache``)."""
        key = (self.sve_sigma._version, self.sve_sigma.data_ptr(), self.U.dtype, self.U.device)
        if self._cache is not None and self._cache[0] == key and self._caching():
            return self._cache[1]
        W = _member_weights(self.U, self.sigma().to(self.U.dtype), self.Vh)  # (M, out, fan_in)
        W = W.reshape(self.num_members, *self.weight_shape)
        self._cache = (key, W) if self._caching() else None
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
# target selection and fan-out


def supported(module: nn.Module, parent: nn.Module | None = None) -> bool:
    """Modules a per-member layer can replace: ``nn.Linear``; ``nn.Conv2d`` (or timm's
    ``Conv2dSame``) with groups 1 and zero padding. Depthwise/grouped convs, subclasses with their
    own weight maths (e.g. weight-standardised convs) and ``nn.MultiheadAttention``'s projections
    (it reads their weights directly) are not supported."""
    if isinstance(parent, nn.MultiheadAttention):
        return False
    if isinstance(module, nn.Linear):
        return True
    return (type(module) is nn.Conv2d or type(module).__name__ == "Conv2dSame") and (
        module.groups == 1 and module.padding_mode == "zeros"
    )


def candidates(trunk: nn.Module) -> list[str]:
    """Names of every module in ``trunk`` that a per-member layer can replace, in order."""
    parents = {name: mod for name, mod in trunk.named_modules()}
    return [name for name, mod in trunk.named_modules()
            if name and supported(mod, parents.get(name.rpartition(".")[0]))]


def _in_blocks(name: str, blocks: list[str]) -> bool:
    return any(name.startswith(b + ".") for b in blocks)


def _matches(name: str, pattern: str) -> bool:
    return name == pattern or name.endswith("." + pattern) or fnmatch.fnmatchcase(name, pattern)


def select_targets(backbone: Any, targets: str | list[str] | tuple[str, ...] = "all") -> list[str]:
    """Resolve a target spec to module names inside ``backbone.model``.

    ``"all"``: every supported layer inside the repeated blocks (``backbone.blocks``; the whole
    trunk when a backbone lists no blocks); ``"attention"``: those whose name has a part containing
    "attn"/"attention"; ``"mlp"``: the other in-block ones; ``"last:K"``: in-block layers of the last
    K blocks; a list of patterns: exact name, dotted suffix (``"qkv"``) or glob (``"blocks.1*"``),
    matched against every supported layer of the trunk.
    """
    names, blocks = candidates(backbone.model), list(backbone.blocks or [])
    in_blocks = [n for n in names if _in_blocks(n, blocks)] if blocks else names
    is_attn = lambda n: any(w in part.lower() for part in n.split(".") for w in _ATTENTION_WORDS)
    if isinstance(targets, str) and targets.startswith("last:"):
        k = targets[5:]
        if not k.isdigit() or not 1 <= int(k) <= len(blocks):
            raise ConfigError(f"targets={targets!r}: K must be an integer from 1 to the number of "
                              f"blocks ({len(blocks)}), e.g. 'last:2'.")
        selected = [n for n in names if _in_blocks(n, blocks[-int(k):])]
    elif targets == "all":
        selected = in_blocks
    elif targets == "attention":
        selected = [n for n in in_blocks if is_attn(n)]
    elif targets == "mlp":
        selected = [n for n in in_blocks if not is_attn(n)]
    else:
        patterns = [targets] if isinstance(targets, str) else list(targets)
        if not patterns or not all(isinstance(p, str) for p in patterns):
            raise ConfigError(f"targets={targets!r}: use 'all', 'attention', 'mlp', 'last:K' or a "
                              "list of module-name patterns.")
        selected = [n for n in names if any(_matches(n, p) for p in patterns)]
    if not selected:
        shown = ", ".join(names[:60]) + (f", ... ({len(names) - 60} more)" if len(names) > 60 else "")
        raise ConfigError(
            f"targets={targets!r} matched no supported layer of backbone "
            f"{getattr(backbone, 'name', '?')!r}. Its Linear/Conv2d layers (depthwise convs "
            f"excluded) are: {shown or 'none'}. Pass 'all', 'attention', 'mlp', 'last:K' or "
            "patterns from this list."
        )
    return selected


def _map_tensors(obj: Any, fn: Callable[[Tensor], Tensor]) -> Any:
    if isinstance(obj, Tensor):
        return fn(obj)
    if isinstance(obj, (tuple, list)):
        return type(obj)(_map_tensors(o, fn) for o in obj)
    if isinstance(obj, dict):
        return {k: _map_tensors(v, fn) for k, v in obj.items()}
    return obj


def _repeat_batch(obj: Any, batch: int, members: int, min_dim: int = 2) -> Any:
    """Repeat every tensor with ≥ min_dim dims and leading dim ``batch`` member-major."""
    rep = lambda t: t.repeat(members, *[1] * (t.ndim - 1)) if (
        t.ndim >= min_dim and t.shape[0] == batch) else t
    return _map_tensors(obj, rep)


class _FanOut:
    """Forward pre-hook (with kwargs) put on the first targeted block and every later one.

    While the ensemble model runs a batch of ``batch`` rows, it repeats every batch-shaped tensor
    argument M times (member-major); tensors already holding M·batch rows are left alone.
    """

    def __init__(self, num_members: int):
        self.num_members, self.batch = num_members, None

    def __call__(self, module: nn.Module, args: tuple, kwargs: dict) -> tuple[tuple, dict] | None:
        if self.batch is None or self.num_members == 1:
            return None
        return (_repeat_batch(args, self.batch, self.num_members),
                _repeat_batch(kwargs, self.batch, self.num_members))


def _fan_out_block(trunk: nn.Module, blocks: list[str], targets: list[str]) -> str | None:
    """The first block holding a target, or None (fan out at the input) when a target runs
    before it (module registration order is taken as execution order) or lies outside blocks."""
    order = {name: i for i, (name, _) in enumerate(trunk.named_modules())}
    first = min(order[t] for t in targets)
    block = next((b for b in blocks if any(t.startswith(b + ".") for t in targets)), None)
    return block if block is not None and order[block] < first else None


# ----------------------------------------------------------------------------------------------
# the wrapped model


def _as_backbone(backbone: Any) -> Any:
    """A ``sve.backbones.Backbone`` (or duck-typed equivalent); raw models go through from_model."""
    if isinstance(backbone, EnsembleModel):
        raise ConfigError("this model is already wrapped; pass its backbone (model.backbone) instead.")
    if isinstance(backbone, nn.Module):
        from sve.backbones import from_model

        return from_model(backbone)
    missing = [a for a in ("model", "features", "blocks", "modality", "feature_dim")
               if not hasattr(backbone, a)]
    if missing:
        raise ConfigError(f"expected a sve.backbones.Backbone or a timm / transformers model, got "
                          f"{type(backbone).__name__} (missing {missing}). Load one with "
                          "sve.backbones.load_backbone(name) or pass the nn.Module itself.")
    return backbone


def _seed_for(seed: int, name: str) -> int:
    return (seed * 1_000_003 + zlib.crc32(name.encode())) % (2**63 - 1)


def _input_channels(trunk: nn.Module) -> int | None:
    return next((m.in_channels for m in trunk.modules() if isinstance(m, nn.Conv2d)), None)


class EnsembleModel(nn.Module):
    """A backbone whose targeted layers are per-member layers, plus M linear heads.

    ``forward(**inputs)`` takes the backbone's own inputs (``pixel_values``; or ``input_ids``,
    ``attention_mask``, ...; one positional tensor = ``pixel_values`` / ``input_ids``) and returns
    logits (B, M, C). ``features(**inputs)`` gives the pooled member features (B, M, D).
    The trunk always runs in eval mode (frozen BatchNorm statistics; dropout off unless
    ``dropout=True``, then its ``nn.Dropout`` modules follow ``train()``).
    """

    def __init__(self, backbone: Any, num_members: int, num_classes: int, fan_out_at: str | None,
                 config: dict, fingerprint: str, base_params: int, in_channels: int | None,
                 generator: torch.Generator):
        super().__init__()
        self.backbone, self.trunk = backbone, backbone.model
        self.num_members, self.num_classes = num_members, num_classes
        self.fan_out_at, self.config, self.fingerprint = fan_out_at, config, fingerprint
        self.base_params, self.in_channels, self.temperature = base_params, in_channels, 1.0
        D = backbone.feature_dim
        self.sve_head_weight = nn.Parameter(
            torch.randn(num_members, num_classes, D, generator=generator) * HEAD_INIT_STD)
        self.sve_head_bias = nn.Parameter(torch.zeros(num_members, num_classes))
        self._fan = _FanOut(num_members)
        if fan_out_at is not None and num_members > 1:
            blocks = list(backbone.blocks)
            for name in blocks[blocks.index(fan_out_at):]:
                self.trunk.get_submodule(name).register_forward_pre_hook(self._fan, with_kwargs=True)
        self.train(False)

    @property
    def input_names(self) -> tuple[str, ...]:
        return ("pixel_values",) if self.backbone.modality == "image" else _TEXT_INPUTS

    def train(self, mode: bool = True) -> EnsembleModel:
        super().train(mode)
        self.trunk.eval()
        if mode and self.config.get("dropout"):
            for m in self.trunk.modules():
                if isinstance(m, nn.Dropout):
                    m.train()
        return self

    def layers(self) -> dict[str, EnsembleLayer]:
        """The per-member layers, by module name inside the trunk."""
        return {n: m for n, m in self.trunk.named_modules() if isinstance(m, EnsembleLayer)}

    def _inputs(self, args: tuple, inputs: dict) -> dict[str, Tensor]:
        inputs = {k: v for k, v in inputs.items() if k != "labels"}
        if args:
            if len(args) > 1 or not isinstance(args[0], Tensor) or self.input_names[0] in inputs:
                raise DataError(f"pass one positional tensor ({self.input_names[0]}) or keyword "
                                f"inputs {self.input_names}.")
            inputs[self.input_names[0]] = args[0]
        check_inputs(inputs, self.backbone.modality, self.in_channels)
        return inputs

    def features(self, *args: Tensor, **inputs: Tensor) -> Tensor:
        """Pooled features of every member, (B, M, D)."""
        inputs = self._inputs(args, inputs)
        M, B = self.num_members, next(iter(inputs.values())).shape[0]
        if self.fan_out_at is None and M > 1:
            inputs = _repeat_batch(inputs, B, M, min_dim=1)
        self._fan.batch = B
        try:
            feats = self.backbone.features(**inputs)
        except SVEError:
            raise
        except (RuntimeError, AssertionError, ValueError, IndexError, TypeError) as e:
            if isinstance(e, torch.OutOfMemoryError):
                raise
            shapes = {k: (tuple(v.shape), str(v.dtype).replace("torch.", "")) for k, v in inputs.items()}
            raise DataError(f"the backbone {getattr(self.backbone, 'name', '')!r} failed on inputs "
                            f"{shapes}: {e}. Check the image size / token ids match the backbone "
                            "(sve.data.prepare(ds, backbone) makes matching batches).") from e
        finally:
            self._fan.batch = None
        if feats.shape[0] != M * B:
            raise SVEError(f"the trunk returned {feats.shape[0]} rows for a batch of {B} and "
                           f"{M} members; wrap with fan_out='input'.")
        return feats.reshape(M, B, -1).transpose(0, 1)

    def forward(self, *args: Tensor, **inputs: Tensor) -> Tensor:
        f = self.features(*args, **inputs)
        return torch.einsum("bmd,mcd->bmc", f, self.sve_head_weight.to(f.dtype)) + self.sve_head_bias


def check_inputs(inputs: dict[str, Any], modality: str, in_channels: int | None = None) -> None:
    """Raise ``DataError`` (naming the fix) unless ``inputs`` is a valid batch for ``modality``."""
    if modality == "image":
        x = inputs.get("pixel_values")
        extra = sorted(set(inputs) - {"pixel_values"})
        if not isinstance(x, Tensor) or extra:
            raise DataError(f"an image model takes one tensor `pixel_values` (B, C, H, W); got keys "
                            f"{sorted(inputs)}.")
        if not x.is_floating_point():
            raise DataError(f"pixel_values has dtype {x.dtype}; expected float. Convert with "
                            "x.float() / 255 and normalise with the backbone's mean/std "
                            "(sve.data.prepare does this).")
        if x.ndim != 4 or (in_channels is not None and x.shape[1] != in_channels) or not len(x):
            raise DataError(f"pixel_values has shape {tuple(x.shape)}; expected (batch, "
                            f"{in_channels or 'C'}, H, W) with batch ≥ 1. Add a batch dim with "
                            "x.unsqueeze(0); repeat grey images to 3 channels.")
        return
    ids = inputs.get("input_ids")
    extra = sorted(set(inputs) - set(_TEXT_INPUTS))
    if not isinstance(ids, Tensor) or extra:
        raise DataError(f"a text model takes `input_ids` (+ attention_mask, token_type_ids); got keys "
                        f"{sorted(inputs)}. Tokenize with backbone.tokenize(texts).")
    if ids.is_floating_point() or ids.is_complex() or ids.dtype == torch.bool or ids.ndim != 2:
        raise DataError(f"input_ids has dtype {ids.dtype} and shape {tuple(ids.shape)}; expected an "
                        "integer tensor (batch, seq_len). Tokenize with backbone.tokenize(texts).")
    for key in ("attention_mask", "token_type_ids"):
        if key in inputs and tuple(inputs[key].shape) != tuple(ids.shape):
            raise DataError(f"{key} has shape {tuple(inputs[key].shape)} but input_ids has "
                            f"{tuple(ids.shape)}; they must match.")


def wrap_with(backbone: Any, layer_factory: Callable[..., EnsembleLayer], num_members: int,
              num_classes: int, targets: str | list[str] = "all", seed: int | None = None, *,
              fan_out: str = "auto", dropout: bool = False, inplace: bool = False,
              method: str = "custom", options: dict | None = None) -> EnsembleModel:
    """Replace the targeted layers of ``backbone`` by ``layer_factory(...)`` and add M heads.

    The generic part of every implicit ensemble (see the module docstring). ``fan_out``:
    ``"auto"`` (at the first targeted block) or ``"input"`` (repeat the inputs; the trunk runs
    M times). ``inplace=False`` deep-copies the trunk so ``backbone`` stays the base model.
    """
    if isinstance(num_members, bool) or not isinstance(num_members, int) or num_members < 1:
        raise ConfigError(f"num_members={num_members!r}: must be an integer ≥ 1 (the paper uses 4–16).")
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 2:
        raise ConfigError(f"num_classes={num_classes!r}: must be an integer ≥ 2.")
    if fan_out not in ("auto", "input"):
        raise ConfigError(f"fan_out={fan_out!r}: use 'auto' or 'input'.")
    backbone = _as_backbone(backbone)
    names = select_targets(backbone, targets)
    fingerprint = backbone.fingerprint()
    base_params = sum(p.numel() for p in backbone.model.parameters())
    if not inplace:
        backbone = copy.copy(backbone)
        backbone.model = copy.deepcopy(backbone.model)
    trunk = backbone.model.requires_grad_(False)
    in_channels = _input_channels(trunk)
    if seed is None:
        seed = int(torch.randint(0, 2**31 - 1, ()))
    with _one_thread():  # the SVDs of SVE layers (see thin_svd)
        for name in names:
            parent_name, _, child = name.rpartition(".")
            gen = torch.Generator().manual_seed(_seed_for(seed, name))
            layer = layer_factory(trunk.get_submodule(name), name=name, num_members=num_members,
                                  generator=gen)
            setattr(trunk.get_submodule(parent_name) if parent_name else trunk, child, layer)
    fan_out_at = _fan_out_block(trunk, list(backbone.blocks or []), names) if fan_out == "auto" else None
    config = dict(method=method, num_members=num_members, num_classes=num_classes,
                  targets=targets if isinstance(targets, str) else list(targets), seed=seed,
                  fan_out=fan_out, dropout=dropout, **(options or {}))
    gen = torch.Generator().manual_seed(_seed_for(seed, "sve_head"))
    return EnsembleModel(backbone, num_members, num_classes, fan_out_at, config, fingerprint,
                         base_params, in_channels, gen)


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
    backbone = _as_backbone(backbone)
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
    for layer in _unwrap(model).layers().values():
        if isinstance(layer, SVELayer):
            layer.mode = mode


def _unwrap(model: nn.Module) -> EnsembleModel:
    """The EnsembleModel inside a DDP / Accelerate wrapper."""
    while not isinstance(model, EnsembleModel) and isinstance(getattr(model, "module", None), nn.Module):
        model = model.module
    if not isinstance(model, EnsembleModel):
        raise ConfigError(f"expected a model made by sve.wrap, got {type(model).__name__}.")
    return model


# save / load / merge / count_parameters / spectra live in sve/adapters.py (re-exported here)
from sve.adapters import (  # noqa: E402
    MergedMember,
    ParameterCount,
    count_parameters,
    load,
    merge,
    read_metadata,
    save,
    spectra,
)

__all__ = ["EnsembleLayer", "SVELayer", "EnsembleModel", "wrap", "wrap_with", "set_mode", "path_costs",
           "select_targets", "candidates", "supported", "check_inputs", "save", "load",
           "read_metadata", "merge", "MergedMember", "count_parameters", "ParameterCount", "spectra"]
