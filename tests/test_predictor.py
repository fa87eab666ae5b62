"""sve.experiments.predictor: one input through a finished run's saved adapters (the Predict tab's ML).

Two tiny real runs are trained once per module (DINOv2-S at 28 px on MNIST digits with SVE and the
single model; MiniLM-L3 on BBC News with SVE); every prediction is checked against what the runner
itself stored, so the predictor and the runner cannot prepare inputs differently unnoticed.
"""

from __future__ import annotations

import io
import shutil

import numpy as np
import pytest
from PIL import Image

from sve import experiments, metrics
from sve.errors import ConfigError, DataError, MissingAssetError
from sve.experiments import predictor as pred
from sve.experiments.predictor import MissingAdapterError, Predictor

pytestmark = pytest.mark.usefixtures("one_thread")

IMAGE_RUN = dict(name="pred", backbone="dinov2-small", image_size=28, dataset="mnist5k", ood=["animal-mnist"],
                 methods=["sve", "single"], members=2, targets="last:2", epochs=1, warmup_epochs=0,
                 batch_size=16, train_limit=48, val_limit=32, test_limit=24, ood_limit=24, seeds=[0])
TEXT_RUN = dict(name="pred-text", backbone="minilm-l3", dataset="bbc-news", ood=["chatterbot"],
                methods=["sve"], members=2, targets="last:1", epochs=1, warmup_epochs=0, batch_size=16,
                max_length=16, train_limit=32, val_limit=16, test_limit=16, ood_limit=16, seeds=[0])


@pytest.fixture(scope="module")
def image_run(tmp_path_factory):
    return experiments.run(IMAGE_RUN, tmp_path_factory.mktemp("runs"))


@pytest.fixture(scope="module")
def image_predictor(image_run):
    return Predictor(image_run)


@pytest.fixture(scope="module")
def text_predictor(tmp_path_factory):
    return Predictor(experiments.run(TEXT_RUN, tmp_path_factory.mktemp("runs")))


def _png(array: np.ndarray, mode: str | None = None) -> bytes:
    buf = io.BytesIO()
    pic = Image.fromarray(array)
    (pic.convert(mode) if mode else pic).save(buf, format="PNG" if mode != "CMYK" else "JPEG")
    return buf.getvalue()


@pytest.mark.parametrize("method", ["sve", "single"])
@pytest.mark.parametrize("split", ["test", "ood:animal-mnist"])
def test_a_sample_predicts_what_the_run_stored(image_predictor, method, split):
    stored, labels = image_predictor.run.logits(method, 0, split)
    for index in (0, len(stored) - 1):
        p = image_predictor.predict_sample(method, split, index)
        np.testing.assert_allclose(p.logits[0], stored[index], atol=2e-4)
        assert p.label == (int(labels[index]) if labels[index] >= 0 else None)
        assert p.notes == []                           # the run's own sample needs no conversion


def test_prediction_holds_members_ensemble_and_scores(image_predictor):
    p = image_predictor.predict_sample("sve", "test", 3)
    assert p.members == 2 and p.member_probs.shape == (2, 10) and p.probs.shape == (10,)
    np.testing.assert_allclose(p.member_probs.sum(1), 1.0, atol=1e-9)
    np.testing.assert_allclose(p.probs, p.member_probs.mean(0), atol=1e-9)        # combine="prob"
    assert set(p.scores) == set(metrics.SCORES)
    assert p.scores["entropy"] == pytest.approx(p.scores["expected_entropy"] + p.scores["mutual_info"])
    assert p.scores["disagreement"] == np.mean([c != p.predicted_class for c in p.member_predictions()])
    assert p.classes[p.predicted] == p.predicted_class and p.confidence == p.probs.max()
    single = image_predictor.predict_sample("single", "test", 3)
    assert single.members == 1 and single.scores["mutual_info"] == 0.0


def test_backbone_and_adapters_are_loaded_once(image_run, monkeypatch):
    calls = []
    real = pred.run_backbone
    monkeypatch.setattr(pred, "run_backbone", lambda config: calls.append(1) or real(config))
    p = Predictor(image_run)
    first = p.model("sve")
    for _ in range(3):
        p.predict_sample("sve", "test", 0)
        p.predict_sample("single", "test", 0)
    assert p.model("sve") is first and len(calls) == 1 and len(p._models) == 2


def test_an_uploaded_image_is_shaped_like_the_runs_data(image_predictor):
    digit, _ = image_predictor.sample("test", 0)
    same = image_predictor.predict(_png(digit), "sve")
    stored = image_predictor.predict_sample("sve", "test", 0)
    np.testing.assert_allclose(same.logits, stored.logits, atol=2e-4)
    assert same.notes == [] and same.label is None
    big_rgb = np.stack([np.kron(digit, np.ones((2, 2), dtype=np.uint8))] * 3 + [np.full((56, 56), 255,
                                                                                       np.uint8)], -1)
    p = image_predictor.predict(_png(big_rgb), "sve")             # RGBA, 56 px: converted, resized
    assert p.probs.shape == (10,)
    joined = " ".join(p.notes)
    assert "alpha channel" in joined and "from RGB to grayscale" in joined and "56×56 to 28×28" in joined
    assert image_predictor.predict(digit, "sve").notes == []       # a uint8 array works as well


def test_bad_images_are_refused_by_name(image_predictor, text_predictor):
    with pytest.raises(DataError, match="not an image"):
        image_predictor.predict(b"name,label\nthis is a CSV,1\n", "sve")
    with pytest.raises(DataError, match="empty"):
        image_predictor.predict(b"", "sve")
    with pytest.raises(DataError, match="4 channels .mode CMYK.* have 1 .grayscale"):
        image_predictor.predict(_png(np.zeros((28, 28, 3), np.uint8), "CMYK"), "sve")
    with pytest.raises(DataError, match=r"\(H, W, 3\) RGB; got shape \(28, 28, 2\)"):
        image_predictor.predict(np.zeros((28, 28, 2), np.uint8), "sve")
    with pytest.raises(DataError, match="trained on images"):
        image_predictor.predict("a text for an image run", "sve")
    with pytest.raises(DataError, match="trained on text"):
        text_predictor.predict(_png(np.zeros((28, 28), np.uint8)), "sve")


def test_a_decompression_bomb_is_refused_before_decoding(image_predictor, monkeypatch):
    monkeypatch.setattr(pred, "MAX_PIXELS", 100)
    with pytest.raises(DataError, match="11×11 pixels, more than the 100 accepted"):
        image_predictor.predict(_png(np.zeros((11, 11), np.uint8)), "sve")


def test_text_empty_long_and_a_stored_sample(text_predictor):
    stored, _ = text_predictor.run.logits("sve", 0, "test")
    text, label = text_predictor.sample("test", 2)
    p = text_predictor.predict(text, "sve", label=label)
    np.testing.assert_allclose(p.logits[0], stored[2], atol=2e-4)
    assert p.classes == text_predictor.sample_set("test").classes and p.label == label
    for empty in ("", "   \n"):
        with pytest.raises(DataError, match="the text is empty"):
            text_predictor.predict(empty, "sve")
    long = " ".join(["market"] * 40)
    p = text_predictor.predict(long, "sve")
    assert any("only the first 16" in n for n in p.notes), p.notes
    short = text_predictor.predict("shares fell", "sve")
    assert short.notes == []
    cut = text_predictor.predict(" ".join(["market"] * 14), "sve")    # 14 words + 2 special tokens = 16
    assert cut.notes == []


def test_a_missing_adapter_is_named_with_the_fix(image_run, tmp_path):
    copy = shutil.copytree(image_run, tmp_path / "copy", ignore=shutil.ignore_patterns(".lock"))
    (copy / "single" / "seed0" / "adapter.safetensors").unlink()
    p = Predictor(copy)
    with pytest.raises(MissingAdapterError, match="single/seed0 .* has no saved adapter.*train it again"):
        p.predict_sample("single", "test", 0)
    assert p.predict_sample("sve", "test", 0).members == 2         # the other method still predicts
    with pytest.raises(ConfigError, match="no finished seed.*finished: sve/seed0, single/seed0"):
        p.model("lora_ensemble")


def test_a_backbone_that_is_not_installed_is_named(image_run, monkeypatch):
    def missing(config):
        raise MissingAssetError("the Python package 'x' is not installed; install it with: pip install x")

    monkeypatch.setattr(pred, "run_backbone", missing)
    with pytest.raises(MissingAssetError, match="pip install x"):
        Predictor(image_run).predict_sample("sve", "test", 0)


def test_pick_lists_uncertain_confident_and_misclassified(image_predictor):
    z, y = image_predictor.run.logits("sve", 0, "test")
    h = metrics.entropy(z)
    most = image_predictor.pick("sve", "test", "most_uncertain", k=5)
    least = image_predictor.pick("sve", "test", "most_confident", k=5)
    assert list(h[most]) == sorted(h, reverse=True)[:5] and list(h[least]) == sorted(h)[:5]
    wrong = image_predictor.pick("sve", "test", "misclassified", k=len(y))
    predicted = metrics.predictive_probs(z).argmax(1)
    assert set(wrong) == set(np.flatnonzero(predicted != y)) and list(h[wrong]) == sorted(h[wrong])
    with pytest.raises(ConfigError, match="no labels"):
        image_predictor.pick("sve", "ood:animal-mnist", "misclassified")
    with pytest.raises(ConfigError, match="use one of"):
        image_predictor.pick("sve", "test", "random")


def test_score_context_threshold_is_the_fpr95_one(image_predictor):
    ctx = image_predictor.score_context("sve", "entropy")
    z_id = image_predictor.run.logits("sve", 0, "test")[0]
    z_ood = image_predictor.run.logits("sve", 0, "ood:animal-mnist")[0]
    np.testing.assert_allclose(ctx.id_scores, metrics.entropy(z_id))
    ood = ctx.ood_scores["animal-mnist"]
    t = ctx.thresholds["animal-mnist"]
    np.testing.assert_allclose(ood, metrics.entropy(z_ood))
    assert np.mean(ood >= t) >= 0.95
    assert np.mean(ctx.id_scores >= t) == pytest.approx(metrics.fpr_at_tpr(ctx.id_scores, ood))
    assert ctx.flagged(t, "animal-mnist") and not ctx.flagged(np.nextafter(t, -np.inf), "animal-mnist")
    assert ctx.percentile(np.inf) == 100.0 and ctx.percentile(-np.inf) == 0.0


def test_history_has_each_members_validation_accuracy(image_predictor):
    run = image_predictor.run
    epochs = run.history("sve")["epoch"]
    z, y = run.logits("sve", 0, "val")                 # one epoch: the stored val logits are that epoch's
    for m in range(2):
        assert epochs[f"member{m}_val_acc"].iloc[-1] == pytest.approx(np.mean(z[:, m].argmax(-1) == y))
    single = run.history("single")["epoch"].columns
    assert not any(c.startswith("member") and c.endswith("_val_acc") for c in single)
