"""Linear probe of a frozen backbone: how much do its pooled features know at a given input size?

``linear_probe(config, image_size)`` extracts the frozen trunk's pooled features (the same
features every method's heads read) of the config's *training* and *test* images — the same
samples a run of ``config`` uses (``sve.experiments.load_split``) — standardises them with the
training mean / std, fits a multinomial logistic regression (L2, ``C``; scikit-learn's lbfgs) on
the training features and reports its test accuracy. No fine-tuning: it measures the backbone at
that input size, which is how the study picks its image size (the smallest size within 2
percentage points of the best probe; ``docs/RESULTS.md``).
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch

from sve.experiments.config import ExperimentConfig, as_config
from sve.experiments.runner import load_split


@dataclass
class ProbeResult:
    """One probe: backbone, input size, sample counts, test accuracy of the logistic regression
    (and its training accuracy), and the seconds spent on features and on the fit."""

    backbone: str
    image_size: int
    train: int
    test: int
    accuracy: float
    train_accuracy: float
    feature_seconds: float
    fit_seconds: float

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@torch.no_grad()
def features(backbone: Any, prepared: Any, batch_size: int = 64) -> tuple[np.ndarray, np.ndarray]:
    """Pooled features ``(N, D)`` and labels ``(N,)`` of a prepared dataset (``sve.data.prepare``)."""
    from torch.utils.data import DataLoader

    feats, labels = [], []
    for batch in DataLoader(prepared, batch_size=batch_size, shuffle=False):
        inputs = {k: v for k, v in batch.items() if k != "labels"}
        feats.append(backbone.features(**inputs).float().numpy())
        labels.append(batch["labels"].numpy())
    return np.concatenate(feats), np.concatenate(labels)


def linear_probe(config: ExperimentConfig | dict | str, image_size: int, C: float = 1.0,
                 backbone: Any = None) -> ProbeResult:
    """Test accuracy of a logistic regression on the frozen features of ``config``'s backbone at
    ``image_size`` px, fitted on the config's training images (see the module docstring)."""
    from sklearn.linear_model import LogisticRegression

    from sve import backbones, data

    config = as_config(config)
    if backbone is None:
        backbone = backbones.load_backbone(config.backbone, image_size=image_size, **config.backbone_options)
    start = time.perf_counter()
    (x_train, y_train), (x_test, y_test) = (
        features(backbone, data.prepare(load_split(config, split), backbone, image_size=image_size))
        for split in ("train", "test"))
    feature_seconds = time.perf_counter() - start
    mean, std = x_train.mean(0), x_train.std(0) + 1e-6
    x_train, x_test = (x_train - mean) / std, (x_test - mean) / std
    start = time.perf_counter()
    clf = LogisticRegression(C=C, max_iter=3000).fit(x_train, y_train)
    return ProbeResult(backbone=config.backbone, image_size=image_size, train=len(y_train), test=len(y_test),
                       accuracy=float((clf.predict(x_test) == y_test).mean()),
                       train_accuracy=float((clf.predict(x_train) == y_train).mean()),
                       feature_seconds=feature_seconds, fit_seconds=time.perf_counter() - start)
