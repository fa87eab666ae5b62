"""Which layers of a trunk a per-member layer replaces: ``supported``, ``candidates``, ``select_targets``."""
from __future__ import annotations

import fnmatch
from typing import Any

from torch import nn

from sve.errors import ConfigError

_ATTENTION_WORDS = ("attn", "attention")


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
