"""BatchEnsemble (Wen et al. 2020): ``W_m = W ∘ (r_m s_mᵀ)``, shared W frozen unless ``train_shared``."""
from __future__ import annotations

import torch
from torch import Tensor, nn

from sve.ensemble import (
    EnsembleLayer,
    frozen_parameter,
)


class BatchEnsembleLayer(EnsembleLayer):
    """BatchEnsemble layer: ``W_m = W ∘ (r_m s_mᵀ)``, ``y_m = ((x ∘ s_m) W) ∘ r_m + b_m``.

    ``be_s`` (M, in) scales input channels, ``be_r`` (M, out) output channels, ``be_bias`` (M, out)
    (only if the layer has a bias). ``weight`` is W, frozen unless ``train_shared``.
    """

    def __init__(self, module: nn.Module, num_members: int, generator: torch.Generator,
                 init: str = "normal", init_std: float = 0.01, train_shared: bool = False):
        super().__init__(module, num_members)
        self.weight = frozen_parameter(module.weight).requires_grad_(train_shared)
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
