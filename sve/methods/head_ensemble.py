"""Head ensemble: M independently initialised linear heads on one frozen trunk."""
from __future__ import annotations

from torch import Tensor

from sve.ensemble import (
    EnsembleModel,
)


class HeadEnsemble(EnsembleModel):
    """M independently initialised linear heads on one frozen trunk; the trunk runs once per batch.
    Trainable: the heads only, M·(D+1)·C."""

    def features(self, *args: Tensor, **inputs: Tensor) -> Tensor:
        f = self.backbone.features(**self._inputs(args, inputs))
        return f[:, None].expand(-1, self.num_members, -1)
