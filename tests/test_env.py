"""The installed stack works together: a torchvision that is importable-but-broken would break timm
and transformers (tooling.md §4), and `pip check` does not catch it."""

from __future__ import annotations

import importlib
import subprocess
import sys


def test_torchvision_timm_transformers_import_together():
    import timm
    import torchvision
    from torchvision.ops import nms
    from transformers import BertConfig, BertModel

    assert nms is not None and torchvision.__version__
    model = BertModel(BertConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                                 intermediate_size=64, vocab_size=100))
    assert model.config.hidden_size == 32
    assert timm.create_model("resnet18", pretrained=False, num_classes=3).fc.out_features == 3


def test_import_sve_is_light():
    """`import sve` must not import torch: front ends import it before anything heavy."""
    code = "import sys, sve; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_lazy_attributes_and_unknown_name():
    import pytest

    sve = importlib.import_module("sve")
    assert sve.paths.cache_dir("test-env").is_dir()
    with pytest.raises(AttributeError, match="no attribute"):
        _ = sve.not_a_thing


def test_cache_dir_honours_env(tmp_path, monkeypatch):
    from sve import paths

    monkeypatch.setenv("SVE_CACHE", str(tmp_path / "c"))
    assert paths.cache_dir("x") == tmp_path / "c" / "x"
    monkeypatch.setenv("SVE_RUNS", str(tmp_path / "r"))
    assert paths.runs_dir() == tmp_path / "r"
