"""One member as a plain model: ``merge(model, m)`` → :class:`MergedMember`."""
from __future__ import annotations

import copy
from typing import Any

import torch
from torch import Tensor, nn

from sve.ensemble.fanout import FanOut
from sve.ensemble.layer import EnsembleLayer
from sve.ensemble.model import unwrap
from sve.errors import ConfigError


class MergedMember(nn.Module):
    """One member as a plain model: the backbone's own modules (member weights written into
    them, same parameter names) + a linear head. ``forward(**inputs)`` → logits (B, C)."""

    def __init__(self, backbone: Any, head: nn.Linear, input_names: tuple[str, ...]):
        super().__init__()
        self.backbone, self.trunk, self.head, self.input_names = backbone, backbone.model, head, input_names

    def forward(self, *args: Tensor, **inputs: Tensor) -> Tensor:
        inputs = {k: v for k, v in inputs.items() if k != "labels"}
        if args:
            inputs[self.input_names[0]] = args[0]
        return self.head(self.backbone.features(**inputs))


def merge(model: nn.Module, m: int) -> MergedMember:
    """Member ``m`` of a wrapped model as a plain backbone + head (a deep copy; no sve layers).

    Dispatch: a model with its own ``merge_member(m)`` (``deep_ensemble``: member weights live
    outside the trunk) is merged by it. A model with one head (``mc_dropout``: its members are
    dropout samples of one network) merges only as m = 0, the network itself with dropout off.
    """
    model = unwrap(model)
    if hasattr(model, "merge_member"):
        return model.merge_member(m)
    if not isinstance(m, int) or not 0 <= m < model.num_members:
        raise ConfigError(f"member m={m!r}: must be an integer from 0 to {model.num_members - 1}.")
    heads = model.sve_head_weight.shape[0]
    if m >= heads:
        raise ConfigError(
            f"member m={m} of method {model.config.get('method')!r} has no weights of its own: the "
            f"model has {heads} set(s) of weights and its {model.num_members} members are stochastic "
            "samples of it (e.g. MC dropout). merge(model, 0) gives the network itself (dropout off).")
    backbone = copy.copy(model.backbone)
    backbone.model = trunk = copy.deepcopy(model.trunk)
    for module in trunk.modules():
        for key in [k for k, h in module._forward_pre_hooks.items() if isinstance(h, FanOut)]:
            del module._forward_pre_hooks[key]
            module._forward_pre_hooks_with_kwargs.pop(key, None)
    for name, layer in list(trunk.named_modules()):
        if isinstance(layer, EnsembleLayer):
            parent, _, child = name.rpartition(".")
            setattr(trunk.get_submodule(parent) if parent else trunk, child, layer.merged(m))
    C, D = model.sve_head_weight.shape[1:]
    head = nn.Linear(D, C).to(model.sve_head_weight.device)
    with torch.no_grad():
        head.weight.copy_(model.sve_head_weight[m])
        head.bias.copy_(model.sve_head_bias[m])
    return MergedMember(backbone, head.requires_grad_(False), model.input_names).eval()
