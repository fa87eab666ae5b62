"""Method-agnostic machinery of an implicit ensemble: per-member layers inside a shared trunk.

- ``layer``: :class:`EnsembleLayer`, the base every per-member layer subclasses;
- ``targets``: which trunk layers are replaced (``select_targets``);
- ``fanout``: repeating batch-shaped tensors M times (member-major) inside the trunk;
- ``model``: :class:`EnsembleModel` (trunk + M heads, logits (B, M, C)) and ``wrap_with``;
- ``merge``: one member as a plain model.

Imports flow one way: ``sve.ensemble`` knows no method; ``sve.methods`` builds on it.
"""

from sve.ensemble.layer import EnsembleLayer, frozen_parameter
from sve.ensemble.merge import MergedMember, merge
from sve.ensemble.model import (
    HEAD_INIT_STD,
    TEXT_INPUTS,
    EnsembleModel,
    as_backbone,
    build_plain,
    check_inputs,
    input_channels,
    member_seed,
    one_thread,
    seed_for,
    unwrap,
    wrap_with,
)
from sve.ensemble.targets import candidates, select_targets, supported

__all__ = ["EnsembleLayer", "frozen_parameter", "MergedMember", "merge", "HEAD_INIT_STD", "TEXT_INPUTS",
           "EnsembleModel", "as_backbone", "build_plain", "check_inputs", "input_channels", "one_thread",
           "seed_for", "member_seed", "unwrap", "wrap_with", "candidates", "select_targets", "supported"]
