"""MC dropout (Gal & Ghahramani 2016): one fine-tuned model, dropout kept on at test, M samples."""
from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from sve.ensemble import (
    EnsembleModel,
    seed_for,
)
from sve.errors import ConfigError


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
                torch.manual_seed(seed_for(self.config["seed"], "mc_dropout"))
                f = self.head_drop(self.features(*args, **inputs))
        return f @ self.sve_head_weight[0].to(f.dtype).T + self.sve_head_bias[0]
