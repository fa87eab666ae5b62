"""LoRA-Ensemble (Halbheer et al. 2024): ``y_m = W x + b + (α/r)·B_m A_m x``, W and b frozen and shared."""
from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from sve.ensemble import (
    EnsembleLayer,
    frozen_parameter,
)


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


class LoRALayer(EnsembleLayer):
    """LoRA-Ensemble layer: ``y_m = W x + b + (α/r)·B_m (A_m x)``, W and b frozen and shared.

    ``lora_A`` (M, r, in[, k, k]) applies with the wrapped module's geometry (stride, padding);
    ``lora_B`` (M, out, r) is a per-member channel map, zero at init. Parameters: M·r·(fan_in + out).
    """

    def __init__(self, module: nn.Module, num_members: int, generator: torch.Generator, rank: int = 8,
                 alpha: float | None = None, init: str = "gaussian", init_std: float = 0.02,
                 init_gain: float = 1.0):
        super().__init__(module, num_members)
        self.weight, self.bias = frozen_parameter(module.weight), frozen_parameter(module.bias)
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
