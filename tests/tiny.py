"""Tiny random backbones shared by the test modules (imported as ``tiny``; tests/ is on sys.path).

Each builder seeds torch itself, so two calls give the same weights.
"""

from __future__ import annotations

import torch
from torch import nn

from sve.backbones import Backbone, from_model


def vit(seed: int = 0, depth: int = 3, img_size: int = 32) -> Backbone:
    """A random timm ViT: patch 8, width 32, 2 heads, ``depth`` blocks, no classifier."""
    from timm.models.vision_transformer import VisionTransformer

    torch.manual_seed(seed)
    return from_model(VisionTransformer(img_size=img_size, patch_size=8, embed_dim=32, depth=depth,
                                        num_heads=2, num_classes=0))


def bert(layers: int = 3) -> Backbone:
    """A random HF BertModel: vocab 100, width 32, 2 heads, no pooler."""
    from transformers import BertConfig, BertModel

    torch.manual_seed(0)
    cfg = BertConfig(vocab_size=100, hidden_size=32, num_hidden_layers=layers, num_attention_heads=2,
                     intermediate_size=64, max_position_embeddings=32)
    return from_model(BertModel(cfg, add_pooling_layer=False))


def resnet() -> Backbone:
    """A random timm ResNet-10 (widths 8–64) with non-trivial BatchNorm statistics and affines
    (the trunk runs in eval mode, so they matter)."""
    from timm.models.resnet import BasicBlock, ResNet

    torch.manual_seed(0)
    model = ResNet(BasicBlock, [1, 1, 1, 1], channels=(8, 16, 32, 64), stem_width=8, num_classes=0)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(-0.1, 0.1)
                m.running_var.uniform_(0.5, 1.5)
                m.weight.uniform_(0.5, 1.5)
    return from_model(model)
