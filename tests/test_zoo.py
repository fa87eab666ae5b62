"""The Backbone contract, checked the same way on every entry of the offline zoo (timm-style: one
uniform contract, tests parametrised over every model). Entries whose asset package is not
installed are skipped with the install command; model-specific checks (exactness against the
source ONNX / GGUF, pooling details) live in ``tests/test_backbones.py``."""

from __future__ import annotations

import pytest
import torch

from sve import backbones as B
from sve.errors import DataError, MissingAssetError

#: small inputs per entry: image side (a multiple of the patch) or text max_length
SMALL = {"dinov2-small": {"image_size": 28}, "efficientnet-lite0": {"image_size": 64},
         "minilm-l6": {"max_length": 16}, "minilm-l3": {"max_length": 16}, "smollm2-135m": {"max_length": 16}}
_LOADED: dict[tuple[str, bool], B.Backbone] = {}


def _load(name: str, pretrained: bool = True) -> B.Backbone:
    if (name, pretrained) not in _LOADED:
        try:
            _LOADED[name, pretrained] = B.load_backbone(name, pretrained=pretrained, **SMALL.get(name, {}))
        except MissingAssetError as e:
            pytest.skip(f"asset not installed: {e}")
    return _LOADED[name, pretrained]


def _inputs(bb: B.Backbone, n: int = 3) -> dict[str, torch.Tensor]:
    if bb.modality == "image":
        side = bb.image_size
        return {"pixel_values": torch.randn(n, 3, side, side, generator=torch.Generator().manual_seed(0))}
    texts = ["a short one", "a somewhat longer sentence about the weather", "x"][:n]
    return bb.tokenize(texts)


def test_every_entry_is_checked():
    assert set(SMALL) == set(B.ZOO), "add the new zoo entry to SMALL"


@pytest.mark.parametrize("name", list(B.ZOO))
def test_backbone_contract(name):
    bb, info = _load(name), B.backbone_info(name)
    # what the zoo says about the entry without loading it is what loads
    assert bb.name == name and bb.pretrained
    assert bb.family in B.FAMILIES and bb.modality == info["modality"]
    assert bb.feature_dim == info["feature_dim"]
    params = sum(p.numel() for p in bb.model.parameters()) / 1e6
    assert abs(params - info["params_m"]) / info["params_m"] < 0.05, (params, info["params_m"])
    # frozen, eval mode
    assert not bb.model.training and not any(p.requires_grad for p in bb.model.parameters())
    # repeated blocks exist, in order (targets="last:K" relies on them)
    assert bb.blocks and all(bb.model.get_submodule(b) is not None for b in bb.blocks)
    order = [n for n, _ in bb.model.named_modules()]
    assert [order.index(b) for b in bb.blocks] == sorted(order.index(b) for b in bb.blocks)
    # preprocessing attributes of its modality
    if bb.modality == "image":
        assert bb.image_size and len(bb.mean) == len(bb.std) == 3
    else:
        assert bb.tokenizer is not None and bb.max_length
    # features: (N, D), deterministic, finite
    x = _inputs(bb)
    with torch.no_grad():
        f = bb.features(**x)
        assert f.shape == (3, bb.feature_dim) and torch.isfinite(f).all()
        torch.testing.assert_close(bb.features(**x), f)
    # the fingerprint is stable and depends on the weights (the random twin differs)
    assert bb.fingerprint() == bb.fingerprint()
    assert _load(name, pretrained=False).fingerprint() != bb.fingerprint()


@pytest.mark.parametrize("name", list(B.ZOO))
def test_pooling_takes_member_major_batches(name):
    """Pooling sees M·B rows once members fan out inside the trunk: member m's rows pool as the
    plain batch does (the attention mask is tiled M times)."""
    bb, M = _load(name), 2
    x = _inputs(bb)
    with torch.no_grad():
        out = bb.forward_trunk(**x)
        plain = bb.pool(out, x)
        tiled = type(out)(**{k: v.repeat(M, *[1] * (v.ndim - 1)) for k, v in out.items()}) \
            if hasattr(out, "items") else out.repeat(M, *[1] * (out.ndim - 1))
        pooled = bb.pool(tiled, x)
    assert pooled.shape == (M * 3, bb.feature_dim)
    torch.testing.assert_close(pooled[3:], plain)


@pytest.mark.parametrize("name", list(B.ZOO))
def test_bad_input_names_the_fix(name):
    bb = _load(name)
    wrong = ({"input_ids": torch.zeros(1, 3, dtype=torch.long)} if bb.modality == "image"
             else {"pixel_values": torch.zeros(1, 3, 28, 28)})
    with pytest.raises(DataError):
        bb.features(**wrong)
