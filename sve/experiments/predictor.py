"""Predictions of a finished run on single inputs: the ML behind the dashboard's Predict tab.

A :class:`Predictor` opens a run folder once: the run's backbone (:func:`run_backbone`, the options
the runner trained with) is loaded on first use, and each method × seed's saved adapter
(``<method>/seed<k>/adapter.safetensors``) is rebuilt on it with :func:`sve.io.load` once and kept.

A raw input (an image: encoded bytes, a PIL image or a uint8 array; or a text) becomes a one-item
:class:`sve.data.Dataset` shaped like the run's own data (an image is converted to the run's
grayscale / RGB layout and resized to the size of the run's raw images), then goes through
:func:`sve.data.prepare` with the run's ``image_size`` / ``max_length``, exactly as the runner
prepares its splits, and :func:`sve.train.predict` gives its member logits ``(1, M, C)``. From them
(:class:`Prediction`):

- ``member_probs`` ``(M, C)``: each member's softmax; ``probs`` ``(C,)``: the ensemble's prediction
  (``sve.metrics.predictive_probs`` with the method's ``combine``);
- ``scores``: every score of ``sve.metrics.SCORES`` for that input (higher = more uncertain):
  predictive ``entropy``, ``mutual_info`` (epistemic part, 0 for one member), ``disagreement`` (share
  of members whose top class differs from the ensemble's), ``msp``, ``energy``, ...

:meth:`Predictor.score_context` places a score among the run's own: the test-set (ID) and every OOD
set's scores of that method from ``logits.npz``, and per OOD set the threshold at 95 % TPR (the
lowest score that still flags 95 % of that OOD set as OOD, i.e. where the run's ``fpr95`` is read).
Samples of the run come back by split and index (:meth:`Predictor.sample`, the same order as the
rows of ``logits.npz``); :meth:`Predictor.pick` lists the most uncertain, the most confident or the
misclassified ones from the stored logits.
"""
from __future__ import annotations

import io
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from sve.errors import ConfigError, DataError, SVEError
from sve.experiments.results import Run, load_run
from sve.experiments.runner import run_backbone

#: what :meth:`Predictor.pick` can list
PICKS = ("most_uncertain", "most_confident", "misclassified")
#: image modes read as one channel / as three (an alpha band is dropped); any other is refused
GRAY_MODES = ("1", "L", "LA", "I", "I;16", "F")
RGB_MODES = ("RGB", "RGBA", "RGBX", "P", "PA", "YCbCr")
#: the largest image accepted, in pixels (checked from the header, before decoding)
MAX_PIXELS = 40_000_000


class MissingAdapterError(SVEError, FileNotFoundError):
    """A finished method × seed of a run has no saved adapter, so it cannot predict new inputs."""


@dataclass
class Prediction:
    """What a method says about one input. ``logits`` ``(1, M, C)``; ``member_probs`` ``(M, C)``;
    ``probs`` ``(C,)`` the ensemble's; ``scores`` ``{name: value}`` (higher = more uncertain);
    ``label``: the true class index when known (a sample of the run), else None; ``notes``: what was
    done to the input (converted, resized, truncated)."""

    method: str
    seed: int
    classes: list[str]
    logits: np.ndarray
    member_probs: np.ndarray
    probs: np.ndarray
    scores: dict[str, float]
    label: int | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def members(self) -> int:
        return int(self.member_probs.shape[0])

    @property
    def predicted(self) -> int:
        return int(self.probs.argmax())

    @property
    def predicted_class(self) -> str:
        return self.classes[self.predicted]

    @property
    def confidence(self) -> float:
        return float(self.probs.max())

    def member_predictions(self) -> list[str]:
        """Each member's top class."""
        return [self.classes[int(i)] for i in self.member_probs.argmax(1)]


@dataclass
class ScoreContext:
    """One score over a run's eval sets: ``id_scores`` (test) and ``ood_scores[set]`` (``set`` without
    the ``ood:`` prefix), and ``thresholds[set]``: the threshold at 95 % TPR for that OOD set."""

    score: str
    id_scores: np.ndarray
    ood_scores: dict[str, np.ndarray]
    thresholds: dict[str, float]

    def flagged(self, value: float, ood_set: str) -> bool:
        """Whether ``value`` is at or above that set's 95 %-TPR threshold (called OOD)."""
        return bool(value >= self.thresholds[ood_set])

    def percentile(self, value: float) -> float:
        """Share (%) of the test set's scores below ``value``."""
        return float(100 * np.mean(self.id_scores < value))


def threshold_at_tpr(id_scores: Any, ood_scores: Any, tpr: float = 0.95) -> float:
    """The score threshold ``t`` (``score >= t`` → OOD) at the first ROC point that flags at least
    ``tpr`` of the OOD scores: the threshold ``sve.metrics.fpr_at_tpr`` reads its FPR at."""
    from sve import metrics

    _, tprs, thresholds = metrics.roc_curve(id_scores, ood_scores)
    return float(thresholds[int(np.argmax(tprs >= tpr - 1e-12))])


class Predictor:
    """A run folder opened for prediction; backbone and adapters are loaded once, on first use.

    ``run``: a :class:`~sve.experiments.results.Run` or its path. Every method × seed in ``run.done``
    can predict if its adapter was saved (else :class:`MissingAdapterError` names why it was not).
    """

    def __init__(self, run: Run | str | os.PathLike) -> None:
        self.run = run if isinstance(run, Run) else load_run(run)
        self.config = self.run.config
        self._backbone: Any = None
        self._models: dict[tuple[str, int], Any] = {}
        self._samples: dict[str, Any] = {}

    # -- loading ----------------------------------------------------------------------------------
    @property
    def backbone(self) -> Any:
        """The run's backbone (loaded on first use; ``MissingAssetError`` if it is not installed)."""
        if self._backbone is None:
            self._backbone = run_backbone(self.config)
        return self._backbone

    @property
    def modality(self) -> str:
        """``"image"`` or ``"text"``: the run's data (read from its test split)."""
        return self.sample_set("test").modality

    def _seed(self, method: str, seed: int | None) -> int:
        seeds = [s for m, s in self.run.done if m == method]
        if not seeds:
            finished = ", ".join(f"{m}/seed{s}" for m, s in self.run.done) or "none"
            raise ConfigError(f"method {method!r} has no finished seed in run {self.run.path.name!r}; "
                              f"finished: {finished}. Pick one of those, or wait for it to finish.")
        if seed is None:
            return seeds[0]
        if seed not in seeds:
            raise ConfigError(f"seed {seed!r} of method {method!r} is not finished; finished seeds: {seeds}")
        return int(seed)

    def adapter_path(self, method: str, seed: int | None = None) -> Path:
        """The adapter file of a finished method × seed; :class:`MissingAdapterError` when absent."""
        seed = self._seed(method, seed)
        folder = self.run.path / method / f"seed{seed}"
        path = folder / "adapter.safetensors"
        if not path.is_file():
            try:
                why = self.run.cost(method, seed).get("adapter") or "no adapter recorded"
            except (OSError, ValueError):
                why = "cost.json is missing too"
            raise MissingAdapterError(
                f"{method}/seed{seed} of run {self.run.path.name!r} has no saved adapter ({path} is missing; "
                f"the run recorded: {why}). Its stored test and OOD results still show in the other "
                "tabs; to predict new inputs, train it again (raise adapter_max_mb if the adapter was "
                "too big to save).")
        return path

    def model(self, method: str, seed: int | None = None) -> Any:
        """The trained model of ``method`` × ``seed`` (rebuilt from its adapter once, then kept)."""
        from sve.io import load

        seed = self._seed(method, seed)
        key = (method, seed)
        if key not in self._models:
            path = self.adapter_path(method, seed)
            self._models[key] = load(self.backbone, path).eval()
        return self._models[key]

    def combine(self, method: str) -> str:
        """``Run.combine``: the method's own ``combine``, else the run's."""
        return self.run.combine(method)

    # -- the run's own samples --------------------------------------------------------------------
    def sample_set(self, split: str) -> Any:
        """The raw :class:`sve.data.Dataset` of a split (``test``, ``ood:<name>``, ...), built once."""
        if split not in self._samples:
            self._samples[split] = self.run.samples(split)
        return self._samples[split]

    @property
    def classes(self) -> list[str]:
        ds = self.sample_set("test")
        return list(ds.classes)

    def sample(self, split: str, index: int) -> tuple[Any, int | None]:
        """``(image array or text, true label or None)`` of item ``index`` of ``split``."""
        ds = self.sample_set(split)
        if not 0 <= int(index) < len(ds):
            raise ConfigError(f"index {index} is out of range: {split} has {len(ds)} samples "
                              f"(0..{len(ds) - 1})")
        label = int(ds.labels[index])
        item = ds.images[index] if ds.images is not None else ds.texts[index]
        return item, (label if label >= 0 else None)

    def pick(self, method: str, split: str, kind: str, k: int = 12, seed: int | None = None,
             score: str = "entropy") -> np.ndarray:
        """Indices (into ``split``) of up to ``k`` samples from the stored logits: ``most_uncertain``
        (highest ``score``), ``most_confident`` (lowest), ``misclassified`` (wrong ensemble prediction,
        most confident first; ID splits only)."""
        from sve import metrics

        if kind not in PICKS:
            raise ConfigError(f"kind={kind!r}: use one of {PICKS}.")
        z, y = self.run.logits(method, self._seed(method, seed), split)
        values = metrics.uncertainty(z, score, self.combine(method))
        if kind == "misclassified":
            if (y < 0).all():
                raise ConfigError(f"{split} has no labels (an OOD set), so nothing in it is misclassified; "
                                  "pick misclassified samples from test.")
            wrong = np.flatnonzero(metrics.predictive_probs(z, self.combine(method)).argmax(1) != y)
            return wrong[np.argsort(values[wrong], kind="stable")][:k]
        order = np.argsort(values, kind="stable")
        return (order[::-1] if kind == "most_uncertain" else order)[:k]

    # -- inputs -----------------------------------------------------------------------------------
    def image_input(self, image: Any) -> tuple[np.ndarray, list[str]]:
        """An image (encoded bytes, PIL image or uint8 array) as the run's raw layout: ``(H, W)``
        uint8 for a grayscale run, ``(H, W, 3)`` for RGB, at the size of the run's images. Returns
        it and notes on what was changed. ``DataError`` for anything that is not such an image."""
        from PIL import Image

        ds = self.sample_set("test")
        if ds.images is None:
            raise DataError(f"run {self.run.path.name!r} was trained on text ({self.config.dataset}); "
                            "type a text instead of uploading an image.")
        pic, notes = _as_pil(image)
        gray_run = ds.images.ndim == 3
        want = "L" if gray_run else "RGB"
        if pic.mode not in GRAY_MODES + RGB_MODES:
            bands = len(pic.getbands())
            raise DataError(f"the image has {bands} channels (mode {pic.mode}); this run's images have "
                            f"{1 if gray_run else 3} ({'grayscale' if gray_run else 'RGB'}). Upload a "
                            "grayscale or RGB PNG/JPEG.")
        if "A" in pic.getbands():
            notes.append("its alpha channel was dropped")
        is_gray = pic.mode in GRAY_MODES
        if pic.mode in ("I", "I;16", "F"):    # 16/32-bit grayscale: scaled to 0..255
            arr = np.asarray(pic, dtype=np.float64)
            span = float(arr.max() - arr.min()) or 1.0
            pic = Image.fromarray(np.round(255 * (arr - arr.min()) / span).astype(np.uint8))
        if is_gray != gray_run:
            notes.append(f"converted from {'grayscale' if is_gray else 'RGB'} to "
                         f"{'grayscale' if gray_run else 'RGB'}, like the run's images")
        pic = pic.convert(want)
        height, width = ds.images.shape[1:3]
        if pic.size != (width, height):
            notes.append(f"resized from {pic.size[0]}×{pic.size[1]} to {width}×{height}, the size of "
                         "the run's images")
            pic = pic.resize((width, height), Image.BILINEAR)
        return np.array(pic, dtype=np.uint8), notes

    def text_input(self, text: Any) -> tuple[str, list[str]]:
        """A text checked for a text run: ``DataError`` when empty; a note when it is longer than the
        run's token limit (it is truncated there, as the training data was)."""
        ds = self.sample_set("test")
        if ds.texts is None:
            raise DataError(f"run {self.run.path.name!r} was trained on images ({self.config.dataset}); "
                            "upload an image or pick a sample instead of typing text.")
        if not isinstance(text, str) or not text.strip():
            raise DataError("the text is empty; type a sentence or a paragraph to classify.")
        limit = self.max_length
        tokenizer = getattr(self.backbone, "tokenizer", None)
        notes = []
        if tokenizer is not None:
            n = len(tokenizer(text, truncation=False, verbose=False)["input_ids"])
            if n > limit:
                notes.append(f"the text has {n} tokens; only the first {limit} (the run's limit) were "
                             "read, as in training")
        return text, notes

    @property
    def max_length(self) -> int:
        """The token limit the run's texts were cut at (as :func:`sve.data.prepare` chooses it)."""
        return int(self.config.max_length or getattr(self.backbone, "max_length", None) or 128)

    # -- prediction -------------------------------------------------------------------------------
    def predict(self, item: Any, method: str, seed: int | None = None, label: int | None = None,
                notes: list[str] | None = None) -> Prediction:
        """Predict one raw input (image or text, see :meth:`image_input` / :meth:`text_input`)."""
        from sve import data, metrics
        from sve.train import predict

        seed = self._seed(method, seed)
        if isinstance(item, str):
            item, extra = self.text_input(item)
            ds = data.Dataset("input", "text", np.array([-1]), self.classes, texts=[item], split="input")
        else:
            item, extra = self.image_input(item)
            ds = data.Dataset("input", "image", np.array([-1]), self.classes, images=item[None],
                              split="input")
        model = self.model(method, seed)
        prepared = data.prepare(ds, self.backbone, image_size=self.config.image_size,
                                max_length=self.config.max_length, cache=False)
        z = predict(model, prepared, batch_size=1).numpy().astype(np.float64)
        combine = self.combine(method)
        scores = {k: float(v[0]) for k, v in metrics.uncertainty_scores(z, "all", combine).items()}
        return Prediction(method, seed, self.classes, z, metrics.member_probs(z)[0],
                          metrics.predictive_probs(z, combine)[0], scores, label,
                          list(notes or []) + extra)

    def predict_sample(self, method: str, split: str, index: int, seed: int | None = None) -> Prediction:
        """Predict item ``index`` of one of the run's eval sets (its true label attached)."""
        item, label = self.sample(split, index)
        return self.predict(item, method, seed, label=label)

    def score_context(self, method: str, score: str, seed: int | None = None) -> ScoreContext:
        """The run's test and OOD scores of ``method`` for ``score``, with the 95 %-TPR thresholds."""
        from sve import metrics

        seed, combine = self._seed(method, seed), self.combine(method)
        id_scores = metrics.uncertainty(self.run.logits(method, seed, "test")[0], score, combine)
        ood, thresholds = {}, {}
        for split in (s for s in self.run.splits if s.startswith("ood:")):
            values = metrics.uncertainty(self.run.logits(method, seed, split)[0], score, combine)
            ood[split[4:]] = values
            thresholds[split[4:]] = threshold_at_tpr(id_scores, values)
        return ScoreContext(score, id_scores, ood, thresholds)


def _as_pil(image: Any) -> tuple[Any, list[str]]:
    """Bytes / PIL image / array → a loaded PIL image (``DataError`` if it is none of them)."""
    from PIL import Image, UnidentifiedImageError

    if isinstance(image, Image.Image):
        return image, []
    if isinstance(image, np.ndarray):
        arr = image.squeeze(-1) if image.ndim == 3 and image.shape[-1] == 1 else image
        if arr.ndim not in (2, 3) or (arr.ndim == 3 and arr.shape[-1] != 3):
            raise DataError(f"an image array must be (H, W) grayscale or (H, W, 3) RGB; got shape "
                            f"{image.shape} ({image.shape[-1] if image.ndim == 3 else '?'} channels).")
        if arr.dtype != np.uint8:
            raise DataError(f"an image array must be uint8 (0..255); got {arr.dtype}.")
        return Image.fromarray(arr), []
    if isinstance(image, (bytes, bytearray)):
        if not image:
            raise DataError("the uploaded file is empty; upload a PNG or JPEG image.")
        try:
            with Image.open(io.BytesIO(image)) as pic:   # lazy: the size is known before decoding
                if pic.size[0] * pic.size[1] > MAX_PIXELS:
                    raise DataError(f"the image has {pic.size[0]}×{pic.size[1]} pixels, more than the "
                                    f"{MAX_PIXELS:,} accepted; upload a smaller image.")
                pic.load()
                return pic.copy(), []
        except Image.DecompressionBombError:
            raise DataError(f"the image is larger than {MAX_PIXELS:,} pixels; upload a smaller "
                            "one.") from None
        except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as err:
            if isinstance(err, DataError):
                raise
            raise DataError("the uploaded file is not an image (it could not be decoded); upload a "
                            "PNG, JPEG, BMP, GIF, WebP or TIFF image.") from None
    raise DataError(f"cannot read an image from a {type(image).__name__}; pass encoded image bytes, a "
                    "PIL image or a uint8 array.")
