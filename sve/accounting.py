"""Parameter accounting of an ensemble: ``count_parameters`` → :class:`ParameterCount`."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sve.ensemble import EnsembleModel, as_backbone, select_targets, unwrap
from sve.errors import ConfigError


@dataclass
class ParameterCount:
    """Parameter accounting of an ensemble (all counts are over all M members).

    ``overhead_pct`` = 100·(σ + biases + other)/base; ``extra_members_pct`` = the same for the
    M−1 members beyond the first (the paper's "(M−1)·5/(4d)" accounting); ``*_with_heads``
    adds the M heads.
    """

    base: int
    members: int
    sigma: int
    bias: int
    heads: int
    other: int
    trainable: int
    overhead_pct: float
    extra_members_pct: float
    overhead_with_heads_pct: float


def _count(base: int, members: int, sigma: int, bias: int, heads: int, other: int) -> ParameterCount:
    adapter = sigma + bias + other
    return ParameterCount(
        base=base, members=members, sigma=sigma, bias=bias, heads=heads, other=other,
        trainable=adapter + heads, overhead_pct=100 * adapter / base,
        extra_members_pct=100 * adapter * (members - 1) / members / base,
        overhead_with_heads_pct=100 * (adapter + heads) / base)


def _kind(leaf: str) -> str:
    """Accounting bucket of a trainable tensor's leaf name: ``sve_sigma`` → sigma, ``sve_head_*``
    → heads, any other per-member ``*_bias`` (``sve_bias``, ``be_bias``) → bias, the rest → other
    (LoRA A/B, BatchEnsemble r/s, fully trained trunk tensors such as ``...qkv.bias``)."""
    if leaf == "sve_sigma":
        return "sigma"
    if leaf.startswith("sve_head"):
        return "heads"
    return "bias" if leaf.endswith("_bias") else "other"


def count_parameters(model: Any, num_members: int | None = None, num_classes: int = 0,
                     targets: str | list[str] = "all") -> ParameterCount:
    """Count the parameters of a wrapped model, or estimate SVE's for an unwrapped backbone.

    Wrapped: trainable tensors by name (``sve_sigma``, ``sve_bias``, ``sve_head_*``, others).
    Unwrapped (a Backbone or model + ``num_members``): per targeted layer min(out, fan_in) singular
    values and ``out`` biases (if it has one) per member, plus M heads of ``num_classes`` — works on
    models built on the meta device, so BERT-base costs nothing to count.
    """
    if isinstance(model, EnsembleModel) or isinstance(getattr(model, "module", None), EnsembleModel):
        model = unwrap(model)
        sizes = {"sigma": 0, "bias": 0, "heads": 0, "other": 0}
        for name, p in model.named_parameters():
            if p.requires_grad:
                sizes[_kind(name.rpartition(".")[2])] += p.numel()
        return _count(model.base_params, model.num_members, **sizes)
    if num_members is None:
        raise ConfigError("count_parameters on an unwrapped backbone needs num_members=M.")
    backbone = as_backbone(model)
    trunk = backbone.model
    sigma = bias = 0
    for name in select_targets(backbone, targets):
        w = trunk.get_submodule(name).weight
        sigma += min(w.shape[0], w[0].numel())
        bias += w.shape[0] if trunk.get_submodule(name).bias is not None else 0
    heads = num_members * (backbone.feature_dim + 1) * num_classes
    base = sum(p.numel() for p in trunk.parameters())
    return _count(base, num_members, num_members * sigma, num_members * bias, heads, 0)


# ----------------------------------------------------------------------------------------------
# the cost study (notebooks/08_cost): overhead tables and the SVD set-up time

#: the paper's large backbones, as architectures only (the meta device: no weights, no memory),
#: with the M and the number of classes the paper uses for them
PAPER_ARCHITECTURES = {"bert-base (meta)": (8, 2), "llama-2-7b (meta)": (16, 4)}


def paper_architecture(name: str) -> Any:
    """BERT-base or LLaMA-2-7B (``PAPER_ARCHITECTURES``) built on the meta device, as a Backbone:
    enough to count what SVE would add to them without their weights."""
    import torch
    from transformers import BertConfig, BertModel, LlamaConfig, LlamaModel

    from sve.backbones import from_model

    if name not in PAPER_ARCHITECTURES:
        raise ConfigError(f"unknown paper architecture {name!r}; use one of {list(PAPER_ARCHITECTURES)}.")
    with torch.device("meta"):
        if name.startswith("bert"):
            model = BertModel(BertConfig(), add_pooling_layer=False)
        else:
            model = LlamaModel(LlamaConfig(hidden_size=4096, intermediate_size=11008, num_hidden_layers=32,
                                           num_attention_heads=32, vocab_size=32000))
    return from_model(model, name=name)


def overhead_table(entries: dict[str, tuple[Any, int, int]], members: tuple[int, ...] = (1, 4, 8, 16)) -> Any:
    """SVE's counted parameter overhead next to the paper's formula, one row per backbone × M.

    ``entries``: ``{name: (backbone, paper_M, num_classes)}``. Columns: ``d`` (feature width), ``base``,
    ``sve_params`` (σ + per-member biases of all M members), ``overhead_pct``, ``extra_members_pct``
    (see :class:`ParameterCount`), ``formula_pct`` = 100·(M−1)·5/(4d) (the papernotes formula: it
    assumes separate Q, K, V projections and counts only the blocks' matrices) and ``paper_m``
    (this M is the one the paper uses for the model). Indexed by (backbone, M).
    """
    import pandas as pd

    records = []
    for name, (backbone, paper_m, classes) in entries.items():
        d = as_backbone(backbone).feature_dim
        for m in sorted({*members, paper_m}):
            count = count_parameters(backbone, num_members=m, num_classes=classes)
            records.append({"backbone": name, "M": m, "d": d, "base": count.base,
                            "sve_params": count.sigma + count.bias, "overhead_pct": count.overhead_pct,
                            "extra_members_pct": count.extra_members_pct,
                            "formula_pct": 100 * (m - 1) * 5 / (4 * d), "paper_m": m == paper_m})
    return pd.DataFrame(records).set_index(["backbone", "M"])


def svd_setup_seconds(backbone: Any, num_members: int, num_classes: int, targets: str | list[str] = "all",
                      ) -> dict[str, Any]:
    """Wall time of ``sve.wrap`` (dominated by the SVD of every targeted weight) on ``backbone``.

    The SVD cache is cleared first, so the decomposition itself is timed. Returns ``layers`` (how
    many weights were decomposed) and ``svd_setup_s``."""
    import time

    from sve.methods.sve import clear_svd_cache, wrap

    layers = len(select_targets(as_backbone(backbone), targets))
    clear_svd_cache()
    start = time.perf_counter()
    wrap(backbone, num_members, num_classes, targets=targets)
    return {"layers": layers, "svd_setup_s": time.perf_counter() - start}
