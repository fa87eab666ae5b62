"""The per-member layer base: what every implicit-ensemble method subclasses.

A targeted ``nn.Linear`` / ``nn.Conv2d`` (groups 1) of the trunk is replaced by an
:class:`EnsembleLayer` that holds M members' versions of it. Rows are *member-major*: a hidden
tensor of a batch ``B`` has leading dimension ``M·B`` and member ``m`` owns rows ``m·B:(m+1)·B``.

Subclass contract:

- ``forward`` maps (M·B, ..., in) → (M·B, ..., out) (or (M·B, C, H, W) for convs);
- ``member_weight(m)`` gives member m's dense (weight, bias) so ``sve.ensemble.merge`` works;
- ``decay_anchors()`` (optional): what "decay toward the pretrained value" pulls each trainable
  tensor toward (``sve.train.fit(sigma_decay="pretrained")``);
- trainable parameters carry a method prefix (``sve_sigma``, ``lora_A``, ``be_r`` ...).

The helpers ``shared`` (a shared weight with the module's geometry), ``pointwise`` (a 1×1 / linear
channel map), ``per_member`` (one weight per member, batched) and ``per_channel`` (scale/shift by a
per-member channel vector) make linear and conv layers one code path.
"""
from __future__ import annotations

import copy
import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from sve.errors import SVEError


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


def frozen_parameter(t: Tensor | None) -> nn.Parameter | None:
    return None if t is None else nn.Parameter(t.detach().clone(), requires_grad=False)
