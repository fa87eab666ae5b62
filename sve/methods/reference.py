"""The authors' SVE layer as a reference: the published dense rebuild, for tests and benchmarks.

Every forward rebuilds all M dense weights with one ``einsum``,
``W_m = U diag(max(σ_m, 0)) Vᵀ`` (``einsum("ok,mk,ki->moi", U, σ.clamp(0), Vᵀ)``), and applies them
to a *sample-major* view ``(B, M, ..., in)`` of a ``repeat_interleave``-d batch (row ``b·M + m`` is
sample b for member m): ``y = einsum("bm...i,moi->bm...o", x, W) + b_m``. The trunk runs on all
B·M rows from the input on. Float32 SVD, as the authors. A Conv2d target (not in the authors' code,
which targets linear layers) applies member m's rebuilt kernel to its rows with ``F.conv2d``.

Same parameters, names and init as :class:`sve.methods.sve.SVELayer` (clamp positivity, the same
draws from the layer's generator), so a model built here with ``seed=s`` and ``sve.wrap(...,
seed=s, svd_dtype="float32", fan_out="input")`` hold the same ensemble: ``tests/test_core.py``
checks the two against each other on every case of its battery, and ``benchmarks/bench.py`` times
this layout as "authors".
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from sve.ensemble import EnsembleLayer, EnsembleModel, wrap_with
from sve.methods.sve import thin_svd


class AuthorsLayer(EnsembleLayer):
    """The published SVE layer (see the module docstring); linear and Conv2d targets."""

    def __init__(self, module: nn.Module, num_members: int, generator: torch.Generator,
                 init_std: float = 0.01):
        super().__init__(module, num_members)
        U, s, Vh = thin_svd(module.weight, "float32")
        self.register_buffer("U", U)
        self.register_buffer("Vh", Vh)
        eps = torch.randn(num_members, s.numel(), generator=generator) * init_std
        self.sve_sigma = nn.Parameter((s * (1 + eps)).clamp(min=0))
        self.sve_bias = None
        if module.bias is not None:
            noise = torch.randn(num_members, self.out_features, generator=generator) * init_std
            self.sve_bias = nn.Parameter(module.bias.detach().float() + noise)

    def dense(self) -> Tensor:
        """All members' dense weights, (M, out, fan_in)."""
        return torch.einsum("ok,mk,ki->moi", self.U, self.sve_sigma.clamp(min=0), self.Vh)

    def forward(self, x: Tensor) -> Tensor:
        M, W = self.num_members, self.dense().to(x.dtype)
        xs = x.reshape(-1, M, *x.shape[1:])  # sample-major: (B, M, ...)
        if self.conv:
            kernels = W.reshape(M, *self.weight_shape)
            ys = [self._conv(xs[:, m], kernels[m]) for m in range(M)]
            y = torch.stack(ys, 1)
            if self.sve_bias is not None:
                y = y + self.sve_bias.to(x.dtype).view(1, M, -1, 1, 1)
            return y.reshape(-1, *y.shape[2:])
        y = torch.einsum("bm...i,moi->bm...o", xs, W)
        if self.sve_bias is not None:
            y = y + self.sve_bias.to(x.dtype).view(M, *[1] * (x.ndim - 2), -1)
        return y.reshape(*x.shape[:-1], -1)

    def member_weight(self, m: int) -> tuple[Tensor, Tensor | None]:
        W = self.dense()[m].detach().reshape(self.weight_shape)
        return W, None if self.sve_bias is None else self.sve_bias[m].detach()


class AuthorsModel(EnsembleModel):
    """Inputs ``repeat_interleave``-d M times at the input (sample-major rows ``b·M + m``), the
    whole trunk runs on B·M rows, features viewed as (B, M, D)."""

    def features(self, *args: Tensor, **inputs: Tensor) -> Tensor:
        inputs = self._inputs(args, inputs)
        B, M = next(iter(inputs.values())).shape[0], self.num_members
        feats = self.backbone.features(**{k: v.repeat_interleave(M, 0) for k, v in inputs.items()})
        return feats.reshape(B, M, -1)


def authors_model(backbone: Any, num_members: int, num_classes: int, targets: str | list[str] = "all",
                  seed: int = 0, init_std: float = 0.01) -> AuthorsModel:
    """The authors' SVE on ``backbone`` (``targets`` as for ``sve.wrap``)."""
    factory = lambda module, name, num_members, generator: AuthorsLayer(module, num_members, generator,
                                                                         init_std)
    model = wrap_with(backbone, factory, num_members, num_classes, targets, seed, fan_out="input",
                      method="authors")
    model.__class__ = AuthorsModel  # same state, features() swapped for the sample-major layout
    return model
