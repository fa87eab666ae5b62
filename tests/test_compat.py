"""Files written by sve 0.1.0 (before the package layout changed) still load: every method's adapter
gives the logits it gave when saved, and the run folder opens with its metrics, logits and figures.

The fixtures and the script that made them: ``tests/fixtures/v0.1.0/`` (README.md).
"""

from __future__ import annotations

from pathlib import Path

import pytest
import tiny
import torch
from safetensors.torch import load_file

import sve
from sve import experiments
from sve.backbones import load_backbone

FIXTURES = Path(__file__).parent / "fixtures" / "v0.1.0"
METHODS = ("sve", "svf", "lora_ensemble", "batch_ensemble", "deep_ensemble", "mc_dropout", "head_ensemble")


@pytest.fixture(scope="module")
def old_backbone():
    bb = tiny.vit(seed=0, depth=2)
    bb.model.load_state_dict(load_file(str(FIXTURES / "tiny_vit.safetensors")))
    return bb


@pytest.mark.parametrize("method", METHODS)
def test_old_adapter_loads_and_predicts_as_saved(old_backbone, method):
    expected = load_file(str(FIXTURES / "expected.safetensors"))
    model = sve.load(old_backbone, FIXTURES / f"{method}.safetensors")
    assert model.config["method"] == method
    with torch.no_grad():
        logits = model(pixel_values=expected["pixel_values"])
    torch.testing.assert_close(logits, expected[f"logits/{method}"], atol=1e-5, rtol=1e-5)


def test_old_run_folder_opens():
    run = experiments.load_run(FIXTURES / "run-compat")
    assert run.done == [("sve", 0)]
    table = run.metrics
    assert {"method", "seed", "split", "member", "calibration", "ece", "accuracy"} <= set(table.columns)
    logits, labels = run.logits("sve", 0, "test")
    assert logits.shape == (16, 2, 10) and labels.shape == (16,)
    assert run.spectra("sve", 0) and run.history("sve", 0)["epoch"].shape[0] == 1
    assert {"reliability_test", "cost", "spectrum_sve"} <= set(run.figures())


def test_old_run_adapter_loads_onto_its_backbone():
    run = experiments.load_run(FIXTURES / "run-compat")
    config = run.config
    backbone = load_backbone(config.backbone, image_size=config.image_size, **config.backbone_options)
    model = sve.load(backbone, FIXTURES / "run-compat" / "sve" / "seed0" / "adapter.safetensors")
    assert model.num_members == 2 and model.config["targets"] == "last:1"
