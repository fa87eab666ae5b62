"""Member fan-out: repeat batch-shaped tensors M times (member-major) inside the trunk.

The trunk before the first targeted block runs once per batch; a forward pre-hook (:class:`FanOut`)
on that block and every later one repeats every batch-shaped tensor argument (hidden states,
attention masks, rotary cos/sin: any tensor with ≥ 2 dims whose first dim is ``B``) ``M`` times.
If a target sits before the first block (a CNN stem), the inputs themselves are repeated.
"""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

from torch import Tensor, nn


def _map_tensors(obj: Any, fn: Callable[[Tensor], Tensor]) -> Any:
    if isinstance(obj, Tensor):
        return fn(obj)
    if isinstance(obj, (tuple, list)):
        return type(obj)(_map_tensors(o, fn) for o in obj)
    if isinstance(obj, dict):
        return {k: _map_tensors(v, fn) for k, v in obj.items()}
    return obj


def repeat_batch(obj: Any, batch: int, members: int, min_dim: int = 2) -> Any:
    """Repeat every tensor with ≥ min_dim dims and leading dim ``batch`` member-major."""
    rep = lambda t: t.repeat(members, *[1] * (t.ndim - 1)) if (
        t.ndim >= min_dim and t.shape[0] == batch) else t
    return _map_tensors(obj, rep)


class FanOut:
    """Forward pre-hook (with kwargs) put on the first targeted block and every later one.

    While the ensemble model runs a batch of ``batch`` rows, it repeats every batch-shaped tensor
    argument M times (member-major); tensors already holding M·batch rows are left alone.
    """

    def __init__(self, num_members: int):
        self.num_members, self.batch = num_members, None

    def __call__(self, module: nn.Module, args: tuple, kwargs: dict) -> tuple[tuple, dict] | None:
        if self.batch is None or self.num_members == 1:
            return None
        return (repeat_batch(args, self.batch, self.num_members),
                repeat_batch(kwargs, self.batch, self.num_members))


def fan_out_block(trunk: nn.Module, blocks: list[str], targets: list[str]) -> str | None:
    """The first block holding a target, or None (fan out at the input) when a target runs
    before it (module registration order is taken as execution order) or lies outside blocks."""
    order = {name: i for i, (name, _) in enumerate(trunk.named_modules())}
    first = min(order[t] for t in targets)
    block = next((b for b in blocks if any(t.startswith(b + ".") for t in targets)), None)
    return block if block is not None and order[block] < first else None
