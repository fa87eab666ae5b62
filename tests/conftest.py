"""Shared test set-up: offline, deterministic, few threads.

Fixtures that load real backbones are session-scoped so each is converted once per run.
Treat them as read-only: a test that changes a trunk (e.g. ``sve.methods.wrap`` in place) must work
on ``copy.deepcopy(backbone)``.

Backbone fixtures (``sve.backbones.Backbone``, frozen, eval mode):

- ``dinov2_small``: the real DINOv2 ViT-S/14 (timm form) at **56 px** (4x4 patches), feature 384.
- ``minilm_l3``: the real paraphrase-MiniLM-L3-v2 with its tokenizer, mean pooling, feature 384.
- ``tiny_vit``: a random timm ViT (32 px, patch 8, width 32, 2 blocks, 2 heads), feature 32.
- ``tiny_bert``: a random HF BertModel (width 32, 2 layers) with the MiniLM tokenizer, feature 32.
- ``tiny_llama``: a random HF LlamaModel (width 32, 2 layers) with the MiniLM tokenizer as a
  stand-in (same vocab size), last-token pooling, feature 32.
"""

from __future__ import annotations

import os

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("PYTHONHASHSEED", "0")

TINY_TEXT = {"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2, "intermediate_size": 64,
             "vocab_size": 30522, "max_position_embeddings": 128}


@pytest.fixture(scope="module")
def one_thread():
    """One torch thread for a module (``pytestmark = pytest.mark.usefixtures("one_thread")``):
    on a shared 2-core machine LAPACK's threaded SVD can slow down ~30×."""
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="session")
def dinov2_small():
    from sve.backbones import load_backbone

    return load_backbone("dinov2-small", image_size=56)


@pytest.fixture(scope="session")
def minilm_l3():
    from sve.backbones import load_backbone

    return load_backbone("minilm-l3")


@pytest.fixture(scope="session")
def tiny_vit():
    from sve.backbones import load_backbone

    return load_backbone("timm:vit_tiny_patch16_224", random=True, img_size=32, patch_size=8, embed_dim=32,
                         depth=2, num_heads=2, num_classes=0)


@pytest.fixture(scope="session")
def minilm_tokenizer(minilm_l3):
    return minilm_l3.tokenizer


@pytest.fixture(scope="session")
def tiny_bert(minilm_tokenizer):
    import torch
    from transformers import BertConfig, BertModel

    from sve.backbones import from_model

    torch.manual_seed(0)
    return from_model(BertModel(BertConfig(**TINY_TEXT)), minilm_tokenizer, name="tiny-bert", max_length=64)


@pytest.fixture(scope="session")
def tiny_llama(minilm_tokenizer):
    import torch
    from transformers import LlamaConfig, LlamaModel

    from sve.backbones import from_model

    torch.manual_seed(0)
    config = LlamaConfig(**TINY_TEXT, num_key_value_heads=1, pad_token_id=0)
    return from_model(LlamaModel(config), minilm_tokenizer, name="tiny-llama", max_length=64)
