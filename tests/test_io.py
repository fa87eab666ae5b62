"""sve.io: adapters of every method round-trip through a safetensors file; bad files are refused
with a message that names the fix."""

from __future__ import annotations

import json

import pytest
import tiny
import torch
from safetensors import safe_open
from safetensors.torch import save_file

from sve import io
from sve.errors import ConfigError, DataError
from sve.methods import METHODS, build

OPTIONS = {"lora_ensemble": {"rank": 2}, "mc_dropout": {"head_rate": 0.2}}


@pytest.fixture(scope="module")
def backbone():
    return tiny.vit(seed=0, depth=2)


def _trained(name, backbone):
    """A model of method ``name`` whose trainable tensors moved away from their init."""
    model = build(name, backbone, 2, 3, seed=1, **OPTIONS.get(name, {}))
    gen = torch.Generator().manual_seed(2)
    with torch.no_grad():
        for p in model.parameters():
            if p.requires_grad:
                p.add_(0.01 * torch.randn(p.shape, generator=gen))
    model.temperature = 1.7
    return model


@pytest.mark.parametrize("name", list(METHODS))
def test_every_method_round_trips(name, backbone, tmp_path):
    model = _trained(name, backbone)
    path = io.save(model, tmp_path / f"{name}.safetensors")
    meta = io.read_metadata(path)
    assert meta["format"] == io.ADAPTER_FORMAT and meta["config"]["method"] == name
    assert meta["fingerprint"] == backbone.fingerprint() and meta["temperature"] == 1.7
    with safe_open(str(path), framework="pt") as f:  # only the trainable tensors are stored
        assert set(f.keys()) == {n for n, p in model.named_parameters() if p.requires_grad}
    loaded = io.load(backbone, path)
    assert type(loaded) is type(model) and loaded.temperature == 1.7
    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        torch.testing.assert_close(loaded(pixel_values=x), model(pixel_values=x), rtol=0, atol=0)


def test_load_refuses_another_backbone_and_bad_files(backbone, tmp_path):
    path = io.save(_trained("sve", backbone), tmp_path / "a.safetensors")
    with pytest.raises(ConfigError, match="fingerprint"):
        io.load(tiny.vit(seed=1, depth=2), path)
    with pytest.raises(FileNotFoundError, match="no adapter"):
        io.load(backbone, tmp_path / "missing.safetensors")
    save_file({"x": torch.zeros(2)}, str(tmp_path / "other.safetensors"))
    with pytest.raises(DataError, match="not an sve adapter"):
        io.load(backbone, tmp_path / "other.safetensors")
    (tmp_path / "garbage.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(DataError, match="not a safetensors file"):
        io.load(backbone, tmp_path / "garbage.safetensors")


def test_a_file_that_does_not_fit_its_config_is_refused(backbone, tmp_path):
    path = io.save(_trained("sve", backbone), tmp_path / "a.safetensors")
    with safe_open(str(path), framework="pt") as f:
        meta, tensors = f.metadata(), {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118
    config = json.loads(meta["config"])
    config["targets"] = "last:1"  # the stored σ of the first block no longer has a layer
    save_file(tensors, str(tmp_path / "b.safetensors"), metadata={**meta, "config": json.dumps(config)})
    with pytest.raises(DataError, match="does not fit the rebuilt model"):
        io.load(backbone, tmp_path / "b.safetensors")
