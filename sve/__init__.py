"""Singular Value Ensembles (SVE): calibrated uncertainty from one pretrained model.

Each targeted pretrained weight ``W = U diag(s) Vᵀ`` keeps its singular vectors ``U, V`` frozen
and shared; every ensemble member ``m`` trains only its own singular values ``s_m`` (plus its bias
and classification head). See ``docs/DESIGN.md`` for the module map.

The heavy submodules (torch, timm, transformers) are imported lazily, so ``import sve`` is cheap.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

#: public name -> submodule that defines it
_LAZY = {
    "wrap": "sve.methods",
    "build": "sve.methods",
    "spectra": "sve.methods",
    "save": "sve.io",
    "load": "sve.io",
    "merge": "sve.ensemble",
    "count_parameters": "sve.accounting",
    "fit": "sve.train",
    "predict": "sve.train",
}
_SUBMODULES = {
    "backbones", "data", "ensemble", "methods", "io", "accounting", "train", "metrics", "calibration",
    "plots", "experiments", "paths", "stats",
}

__all__ = sorted(_LAZY) + sorted(_SUBMODULES)


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    if name in _SUBMODULES:
        return importlib.import_module(f"sve.{name}")
    raise AttributeError(f"module 'sve' has no attribute {name!r}")
