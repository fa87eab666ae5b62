"""Save and load a wrapped model's adapter (safetensors), for every method of the registry.

An adapter file is a safetensors file holding only the trainable tensors (``requires_grad``:
``sve_sigma``, ``sve_bias``, ``sve_head_*`` for SVE; ``lora_*``, ``be_*``, full trunks for the
baselines), with string metadata: ``format`` = "sve-adapter/1", ``config`` (JSON: the arguments
that rebuild the model with ``sve.methods.build``), ``fingerprint`` (sha256 of the backbone
weights it was trained on), ``backbone`` (its name) and ``temperature``. U and V are not stored:
``load`` recomputes them from the same backbone (the fingerprint guarantees the same weights).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from torch import nn

from sve.ensemble import EnsembleModel, as_backbone, unwrap
from sve.errors import ConfigError, DataError
from sve.methods import build

ADAPTER_FORMAT = "sve-adapter/1"


def save(model: nn.Module, path: str | Path) -> Path:
    """Write the trainable tensors + config + backbone fingerprint to ``path`` (safetensors)."""
    from safetensors.torch import save_file

    model = unwrap(model)
    tensors = {n: p.detach().cpu().contiguous() for n, p in model.named_parameters() if p.requires_grad}
    meta = {"format": ADAPTER_FORMAT, "config": json.dumps(model.config),
            "fingerprint": model.fingerprint, "backbone": str(getattr(model.backbone, "name", "")),
            "temperature": repr(float(model.temperature))}
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(path), metadata=meta)
    return path


def read_metadata(path: str | Path) -> dict[str, Any]:
    """The metadata of an adapter file (config decoded), without loading its tensors."""
    from safetensors import safe_open

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no adapter file at {path}; save one with sve.save(model, path).")
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
    except Exception as e:  # safetensors raises its own error types for corrupt headers
        raise DataError(f"{path} is not a safetensors file ({e}); save adapters with sve.save.") from e
    if meta.get("format") != ADAPTER_FORMAT:
        raise DataError(f"{path} is not an sve adapter (format {meta.get('format')!r}, expected "
                        f"{ADAPTER_FORMAT!r}); save adapters with sve.save(model, path).")
    return {**meta, "config": json.loads(meta["config"]), "temperature": float(meta["temperature"])}


def load(backbone: Any, path: str | Path) -> EnsembleModel:
    """Rebuild the wrapped model saved at ``path`` on ``backbone`` (same weights required)."""
    from safetensors.torch import load_file

    meta = read_metadata(path)
    backbone = as_backbone(backbone)
    if backbone.fingerprint() != meta["fingerprint"]:
        raise ConfigError(
            f"{path} was trained on backbone {meta['backbone']!r} (weights fingerprint "
            f"{meta['fingerprint'][:12]}…), but the backbone passed is "
            f"{getattr(backbone, 'name', '?')!r} ({backbone.fingerprint()[:12]}…). Load it onto the "
            "same pretrained weights it was trained on."
        )
    config = dict(meta["config"])
    method = config.pop("method")
    model = build(method, backbone, **config)
    tensors = load_file(str(path))
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    if set(tensors) != trainable:
        raise DataError(f"{path} does not fit the rebuilt model: missing "
                        f"{sorted(trainable - set(tensors))[:5]}, unexpected "
                        f"{sorted(set(tensors) - trainable)[:5]}.")
    model.load_state_dict(tensors, strict=False)
    model.temperature = meta["temperature"]
    return model
