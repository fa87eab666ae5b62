"""Real datasets by name: torchvision sets, CIFAR-C folders and Hugging Face ``datasets`` sets.

Each :class:`Source` reads files the user already has, in the source's own published layout, from
the first of: ``root=``; the source's environment variable (e.g. ``$SVE_CIFAR100_ROOT``);
``$SVE_DATA_ROOT/<subdir>``; ``sve.paths.cache_dir("datasets")/<subdir>``. A ``root`` may be the
folder that holds the layout or that folder's parent. Missing files raise
:class:`~sve.errors.MissingAssetError` naming the first missing file and the expected layout.
``download=True`` (or ``$SVE_DATA_DOWNLOAD=1``) fetches them there first, which needs a network.

Vision (torchvision reads them; their checksum checks stay on)
    ``cifar10``, ``cifar100``: ``cifar-10-batches-py/`` (``data_batch_1..5``, ``test_batch``,
    ``batches.meta``) / ``cifar-100-python/`` (``train``, ``test``, ``meta``); official 50k train
    + 10k test, fine labels for CIFAR-100. ``svhn``: ``train_32x32.mat``, ``test_32x32.mat``
    (digit ``0`` stored as 10 maps to 0). ``flowers102``: ``flowers-102/jpg/image_00001.jpg...``,
    ``imagelabels.mat``, ``setid.mat``; official train/val/test. ``oxford-pets``:
    ``oxford-iiit-pet/images/*.jpg``, ``annotations/trainval.txt``, ``annotations/test.txt``;
    37 breeds. Flowers and Pets keep their JPEGs on disk (:class:`ImageFiles`), decoded per batch.
    ``cifar10-c``, ``cifar100-c``: the published corrupted-CIFAR folder, ``<corruption>.npy``
    (uint8 ``(50000,32,32,3)`` = severities 1..5 × the 10,000 test images, in that order; any
    ``5·n`` images are read the same way) and ``labels.npy``; pick ``corruption=`` and
    ``severity=`` (options of ``load_dataset``); only a ``test`` split.

Text (Hugging Face ``datasets``, the optional extra ``pip install 'sve[hf]'``)
    ``sst2`` (``stanfordnlp/sst2``: ``sentence``, ``label`` 0 negative / 1 positive): the hub's
    ``train`` is split into train/val, its labelled ``validation`` is the test split (the hub's
    ``test`` has no labels). ``arc-easy``, ``arc-challenge`` (``allenai/ai2_arc``): official
    train/validation/test. An ARC row keeps ``fields`` ``id``, ``question``, ``choice_labels``,
    ``choice_texts``, ``answer_key``; its label is the answer's position among the choices
    (``classes`` name positions A, B, ...) and its text is :func:`multiple_choice_prompt`. An
    item whose answer key is not among its choice labels is refused with its id.
    Files: a folder written by ``DatasetDict.save_to_disk`` (needs ``datasets``), or the hub's
    parquet files, ``<root>/<dir>/<split>-00000-of-00001.parquet`` (``dir`` = ``data`` for
    sst2, ``ARC-Easy`` / ``ARC-Challenge`` for ARC; read with pandas, no ``datasets`` needed).

A source's full dataset has ``info["official_splits"]``: split name → positions;
``load_dataset`` carves ``val`` out of ``train`` when a source has no official val split.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

from sve.data.container import Dataset, ImageFiles, check_int, new_dataset
from sve.errors import ConfigError, DataError, MissingAssetError

DATA_ROOT_ENV = "SVE_DATA_ROOT"
DOWNLOAD_ENV = "SVE_DATA_DOWNLOAD"
HF_INSTALL = "pip install 'sve[hf]'  (or: pip install datasets)"

CIFAR10_CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
CIFAR100_CLASSES = [
    "apple", "aquarium_fish", "baby", "bear", "beaver", "bed", "bee", "beetle", "bicycle", "bottle",
    "bowl", "boy", "bridge", "bus", "butterfly", "camel", "can", "castle", "caterpillar", "cattle",
    "chair", "chimpanzee", "clock", "cloud", "cockroach", "couch", "crab", "crocodile", "cup", "dinosaur",
    "dolphin", "elephant", "flatfish", "forest", "fox", "girl", "hamster", "house", "kangaroo", "keyboard",
    "lamp", "lawn_mower", "leopard", "lion", "lizard", "lobster", "man", "maple_tree", "motorcycle",
    "mountain", "mouse", "mushroom", "oak_tree", "orange", "orchid", "otter", "palm_tree", "pear",
    "pickup_truck", "pine_tree", "plain", "plate", "poppy", "porcupine", "possum", "rabbit", "raccoon",
    "ray", "road", "rocket", "rose", "sea", "seal", "shark", "shrew", "skunk", "skyscraper", "snail",
    "snake", "spider", "squirrel", "streetcar", "sunflower", "sweet_pepper", "table", "tank", "telephone",
    "television", "tiger", "tractor", "train", "trout", "tulip", "turtle", "wardrobe", "whale",
    "willow_tree", "wolf", "woman", "worm",
]
#: the corruptions of the published CIFAR-10-C / CIFAR-100-C (the 15 benchmark ones, then 4 extra)
CIFAR_C_CORRUPTIONS = (
    "gaussian_noise", "shot_noise", "impulse_noise", "defocus_blur", "glass_blur", "motion_blur",
    "zoom_blur", "snow", "frost", "fog", "brightness", "contrast", "elastic_transform", "pixelate",
    "jpeg_compression", "speckle_noise", "gaussian_blur", "spatter", "saturate")
CIFAR_C_PER_SEVERITY = 10_000


@dataclass(frozen=True)
class Source:
    """A dataset read from the user's files (see the module docstring for each layout).

    ``read(folder, **options)`` returns the full dataset (``split="all"``) from ``folder`` (the
    resolved root); ``fetch(folder)`` downloads into it; ``marker`` is a path relative to the root
    whose presence says the layout is there (used to accept a root's ``subdir`` too).
    """

    name: str
    modality: str
    description: str
    subdir: str
    layout: str
    marker: str
    read: Callable[..., Dataset]
    fetch: Callable[[Path], None] | None = None
    options: tuple[str, ...] = ()

    @property
    def env(self) -> str:
        """The environment variable naming this source's root, e.g. ``SVE_OXFORD_PETS_ROOT``."""
        return "SVE_" + self.name.upper().replace("-", "_") + "_ROOT"

    def folder(self, root: str | os.PathLike | None) -> Path:
        """Where this source's files are (or would be downloaded to); see the module docstring."""
        given = root if root is not None else os.environ.get(self.env)
        if given:
            base = Path(given).expanduser()
        elif os.environ.get(DATA_ROOT_ENV):
            base = Path(os.environ[DATA_ROOT_ENV]).expanduser() / self.subdir
        else:
            from sve.paths import cache_dir

            base = cache_dir("datasets") / self.subdir
        for cand in (base, base / self.subdir, base.parent):
            if (cand / self.marker).exists():
                return cand
        return base

    def missing(self, folder: Path, rel: str) -> MissingAssetError:
        """The error for a missing file ``folder/rel``: what is missing, the layout, the fixes."""
        return MissingAssetError(
            f"{self.name}: {folder / rel} is missing. Put the files in this layout under a folder "
            f"ROOT: {self.layout}; then pass root=ROOT, or set {self.env}=ROOT (or {DATA_ROOT_ENV}=DIR "
            f"with DIR/{self.subdir}/ as ROOT)"
            + (f"; with a network, download=True (or {DOWNLOAD_ENV}=1) fetches them"
               if self.fetch else ""))

    def require(self, folder: Path, rels: Sequence[str]) -> None:
        """Raise :meth:`missing` for the first of ``rels`` that does not exist under ``folder``."""
        for rel in rels:
            if not (folder / rel).exists():
                raise self.missing(folder, rel)

    def load(self, root: str | os.PathLike | None = None, download: bool | None = None,
             **options: Any) -> Dataset:
        """The full dataset, read from :meth:`folder` (downloaded first when asked to)."""
        unknown = sorted(set(options) - set(self.options))
        if unknown:
            accepted = ", ".join(("root", "download", *self.options))
            raise ConfigError(f"unexpected options {unknown} for dataset {self.name!r}; "
                              f"it accepts: {accepted}")
        folder = self.folder(root)
        if download is None:
            download = os.environ.get(DOWNLOAD_ENV, "") == "1"
        present = (folder / self.marker).exists() or (folder / "dataset_dict.json").exists()
        if download and self.fetch is not None and not present:
            try:
                folder.mkdir(parents=True, exist_ok=True)
                self.fetch(folder)
            except Exception as e:  # no network, server error, ...: say where the files go instead
                raise MissingAssetError(f"{self.name}: the download into {folder} failed ({e}); without a "
                                        f"network put the files there yourself, in this layout: "
                                        f"{self.layout}") from e
        return _read_cached(self, str(folder.resolve()), tuple(sorted(options.items())),
                            _fingerprint(folder, self.marker))


def _fingerprint(folder: Path, marker: str) -> tuple[tuple[str, int], ...]:
    """mtimes of the folder, its marker and the marker's sub-folders: they change when files are
    added or removed there, so a changed layout is read again."""
    top = folder / marker
    paths = [folder, top, *(sorted(p for p in top.iterdir() if p.is_dir()) if top.is_dir() else [])]
    return tuple((str(p), p.stat().st_mtime_ns) for p in paths if p.exists())


@lru_cache(maxsize=4)
def _read_cached(source: Source, folder: str, options: tuple[tuple[str, Any], ...],
                 fingerprint: tuple[tuple[str, int], ...]) -> Dataset:
    """Per-process cache of the last few sources read (a run loads each split separately)."""
    return source.read(Path(folder), **dict(options))


def _official(parts: Sequence[tuple[str, int]]) -> dict[str, np.ndarray]:
    """``[("train", n1), ("test", n2)]`` → positions of each part in their concatenation."""
    out, start = {}, 0
    for name, n in parts:
        out[name] = np.arange(start, start + n)
        start += n
    return out


def _torchvision(src: Source, folder: Path, make: Callable[[], Any]) -> Any:
    """Run a torchvision dataset constructor; its checksum failure becomes a DataError."""
    try:
        return make()
    except RuntimeError as e:
        raise DataError(f"{src.name}: torchvision refused the files in {folder} ({e}): they are damaged "
                        f"or not the published files; replace them (layout: {src.layout})") from e


# ---------------------------------------------------------------------------------------------- vision


def _cifar_reader(name: str, cls_name: str, base: str, files: Sequence[str]) -> Callable[..., Dataset]:
    def read(folder: Path) -> Dataset:
        from torchvision import datasets as tvd

        src = SOURCES[name]
        src.require(folder, [f"{base}/{f}" for f in files])
        cls = getattr(tvd, cls_name)
        parts = [_torchvision(src, folder, lambda t=t: cls(str(folder), train=t)) for t in (True, False)]
        images = np.concatenate([p.data for p in parts])
        labels = np.concatenate([np.asarray(p.targets) for p in parts])
        return new_dataset(name, "image", labels, parts[0].classes, images=images,
                           info={"official_splits": _official([("train", len(parts[0].data)),
                                                               ("test", len(parts[1].data))])})

    return read


def _cifar_fetch(cls_name: str) -> Callable[[Path], None]:
    def fetch(folder: Path) -> None:
        from torchvision import datasets as tvd

        getattr(tvd, cls_name)(str(folder), train=True, download=True)

    return fetch


def _read_svhn(folder: Path) -> Dataset:
    from torchvision.datasets import SVHN

    src = SOURCES["svhn"]
    src.require(folder, ["train_32x32.mat", "test_32x32.mat"])
    parts = [_torchvision(src, folder, lambda s=s: SVHN(str(folder), split=s)) for s in ("train", "test")]
    images = np.concatenate([p.data.transpose(0, 2, 3, 1) for p in parts])  # (N,3,H,W) → (N,H,W,3)
    labels = np.concatenate([p.labels for p in parts])
    return new_dataset("svhn", "image", labels, [str(i) for i in range(10)], images=images,
                       info={"official_splits": _official([("train", len(parts[0])),
                                                           ("test", len(parts[1]))])})


def _fetch_svhn(folder: Path) -> None:
    from torchvision.datasets import SVHN

    for split in ("train", "test"):
        SVHN(str(folder), split=split, download=True)


def _image_parts(src: Source, folder: Path, parts: list[tuple[str, Any]], paths_of: Callable[[Any], list],
                 classes: list[str]) -> Dataset:
    """Files + labels of torchvision file datasets (one per official split), checked to exist."""
    files = [str(f) for _, p in parts for f in paths_of(p)]
    for f in files:
        if not os.path.isfile(f):
            raise src.missing(folder, os.path.relpath(f, folder))
    labels = np.concatenate([np.asarray(p._labels, dtype=np.int64) for _, p in parts])
    return new_dataset(src.name, "image", labels, classes, images=ImageFiles(files),
                       info={"official_splits": _official([(s, len(p)) for s, p in parts])})


def _read_flowers(folder: Path) -> Dataset:
    from torchvision.datasets import Flowers102

    src = SOURCES["flowers102"]
    src.require(folder, ["flowers-102/imagelabels.mat", "flowers-102/setid.mat", "flowers-102/jpg"])
    parts = [(s, _torchvision(src, folder, lambda s=s: Flowers102(str(folder), split=s)))
             for s in ("train", "val", "test")]
    return _image_parts(src, folder, parts, lambda p: p._image_files, list(Flowers102.classes))


def _fetch_flowers(folder: Path) -> None:
    from torchvision.datasets import Flowers102

    Flowers102(str(folder), download=True)


def _read_pets(folder: Path) -> Dataset:
    from torchvision.datasets import OxfordIIITPet

    src = SOURCES["oxford-pets"]
    src.require(folder, ["oxford-iiit-pet/annotations/trainval.txt", "oxford-iiit-pet/annotations/test.txt",
                         "oxford-iiit-pet/images"])
    parts = [(s, _torchvision(src, folder, lambda s=s: OxfordIIITPet(str(folder), split=s)))
             for s in ("trainval", "test")]
    classes = list(parts[0][1].classes)
    if list(parts[1][1].classes) != classes:
        raise DataError(f"oxford-pets: trainval.txt and test.txt in {folder}/oxford-iiit-pet/annotations "
                        "name different breeds; use the published annotation files")
    return _image_parts(src, folder, [("train", parts[0][1]), ("test", parts[1][1])],
                        lambda p: p._images, classes)


def _fetch_pets(folder: Path) -> None:
    from torchvision.datasets import OxfordIIITPet

    OxfordIIITPet(str(folder), download=True)


def _cifar_c_reader(name: str, classes: list[str]) -> Callable[..., Dataset]:
    def read(folder: Path, corruption: str | None = None, severity: int | None = None) -> Dataset:
        src = SOURCES[name]
        src.require(folder, ["labels.npy"])
        found = sorted(p.stem for p in folder.glob("*.npy") if p.stem != "labels")
        if corruption is None or severity is None:
            raise ConfigError(f"{name} needs corruption=<name> and severity=1..5; corruptions in {folder}: "
                              f"{', '.join(found) or 'none'}")
        severity = check_int("severity", severity, 1, 5)
        if not (folder / f"{corruption}.npy").is_file():
            known = ", ".join(found) or f"none (the published set has: {', '.join(CIFAR_C_CORRUPTIONS)})"
            raise MissingAssetError(f"{name}: {folder / (corruption + '.npy')} is missing; corruptions "
                                    f"found in {folder}: {known}")
        images = np.load(folder / f"{corruption}.npy", mmap_mode="r")
        labels = np.load(folder / "labels.npy", mmap_mode="r")
        n = len(images)
        if (images.ndim != 4 or images.shape[-1] != 3 or images.dtype != np.uint8 or n % 5
                or labels.shape != (n,)):
            raise DataError(f"{name}: {folder / (corruption + '.npy')} must hold uint8 (5·n,H,W,3) images "
                            f"(published: ({5 * CIFAR_C_PER_SEVERITY},32,32,3)) and labels.npy (5·n,); got "
                            f"{images.dtype} {images.shape} and {labels.shape}")
        per = n // 5
        part = slice((severity - 1) * per, severity * per)
        labels = np.asarray(labels[part], dtype=np.int64)
        if labels.min(initial=0) < 0 or labels.max(initial=0) >= len(classes):
            raise DataError(f"{name}: labels.npy in {folder} has labels outside 0..{len(classes) - 1}")
        return new_dataset(name, "image", labels, classes, images=np.array(images[part]),
                           info={"official_splits": {"test": np.arange(per)},
                                 "corruption": (corruption, severity)})

    return read


# ---------------------------------------------------------------------------------------------- text


def _import_datasets() -> Any:
    try:
        import datasets
    except ImportError as e:
        raise MissingAssetError(f"reading a saved Hugging Face dataset needs the `datasets` package; "
                                f"install it with: {HF_INSTALL}") from e
    return datasets


def _hf_tables(src: Source, folder: Path, hf_splits: Sequence[str], parquet_dir: str) -> dict[str, Any]:
    """The hub splits ``hf_splits`` as pandas DataFrames, from ``save_to_disk`` output or parquet."""
    import pandas as pd

    for cand in (folder, folder / parquet_dir):
        if (cand / "dataset_dict.json").is_file():
            dd = _import_datasets().load_from_disk(str(cand))
            absent = [s for s in hf_splits if s not in dd]
            if absent:
                raise MissingAssetError(f"{src.name}: the saved dataset in {cand} has no split {absent[0]!r} "
                                        f"(it has {', '.join(dd)}); save the splits {', '.join(hf_splits)}")
            return {s: dd[s].to_pandas() for s in hf_splits}
    out = {}
    for split in hf_splits:
        shards = sorted((folder / parquet_dir).glob(f"{split}-*.parquet"))
        if not shards:
            raise src.missing(folder, f"{parquet_dir}/{split}-00000-of-00001.parquet")
        try:
            out[split] = pd.concat([pd.read_parquet(p) for p in shards], ignore_index=True)
        except ImportError as e:  # pandas has no parquet engine
            raise MissingAssetError(f"reading {src.name}'s parquet files needs pyarrow; install it with: "
                                    f"{HF_INSTALL}") from e
        except Exception as e:  # pyarrow raises several types for a damaged file
            raise DataError(f"{src.name}: cannot read {shards[0].parent}/{split}-*.parquet ({e}); "
                            "replace the files with the hub's") from e
    return out


def _hf_fetch(hub_id: str, config: str | None) -> Callable[[Path], None]:
    def fetch(folder: Path) -> None:
        _import_datasets().load_dataset(hub_id, config).save_to_disk(str(folder))

    return fetch


def _columns(src: Source, table: Any, split: str, cols: Sequence[str]) -> None:
    absent = [c for c in cols if c not in table.columns]
    if absent:
        raise DataError(f"{src.name}: split {split!r} lacks column(s) {absent} (columns: "
                        f"{list(table.columns)}); use the hub's files (layout: {src.layout})")


def _read_sst2(folder: Path) -> Dataset:
    src = SOURCES["sst2"]
    tables = _hf_tables(src, folder, ("train", "validation"), "data")
    for split, t in tables.items():
        _columns(src, t, split, ("sentence", "label"))
    texts = [str(s) for t in tables.values() for s in t["sentence"]]
    labels = np.concatenate([t["label"].to_numpy(dtype=np.int64) for t in tables.values()])
    if not np.isin(labels, (0, 1)).all():
        raise DataError(f"sst2: labels must be 0/1 (got {sorted(set(labels.tolist()))[:5]}); the hub's "
                        "test split is unlabeled, so it cannot stand in for validation")
    return new_dataset("sst2", "text", labels, ["negative", "positive"], texts=texts,
                       info={"official_splits": _official([("train", len(tables["train"])),
                                                           ("test", len(tables["validation"]))])})


def multiple_choice_prompt(question: str, labels: Sequence[str], texts: Sequence[str]) -> str:
    """``"<question>\\nA. <choice>\\nB. <choice>...\\nAnswer:"``: the text of a multiple-choice row."""
    return "\n".join([question, *(f"{lab}. {txt}" for lab, txt in zip(labels, texts)), "Answer:"])


def _arc_reader(name: str, config: str) -> Callable[..., Dataset]:
    def read(folder: Path) -> Dataset:
        src = SOURCES[name]
        tables = _hf_tables(src, folder, ("train", "validation", "test"), config)
        cols: dict[str, list[Any]] = {k: [] for k in ("id", "question", "choice_labels", "choice_texts",
                                                      "answer_key")}
        answers = []
        for split, t in tables.items():
            _columns(src, t, split, ("id", "question", "choices", "answerKey"))
            for row in t.itertuples(index=False):
                labels_ = [str(x) for x in row.choices["label"]]
                texts_ = [str(x) for x in row.choices["text"]]
                if row.answerKey not in labels_:
                    raise DataError(f"{name}: item {row.id!r} ({split}) has answer key {row.answerKey!r}, "
                                    f"which is not among its choice labels {labels_}; fix or drop the item")
                for key, value in zip(cols, (row.id, row.question, labels_, texts_, row.answerKey)):
                    cols[key].append(value)
                answers.append(labels_.index(row.answerKey))
        width = max((len(c) for c in cols["choice_labels"]), default=0)
        texts = [multiple_choice_prompt(q, ls, ts)
                 for q, ls, ts in zip(cols["question"], cols["choice_labels"], cols["choice_texts"])]
        official = _official([(s, len(tables[h])) for s, h in
                              (("train", "train"), ("val", "validation"), ("test", "test"))])
        return new_dataset(name, "text", answers, [chr(ord("A") + i) for i in range(width)], texts=texts,
                           fields=cols, info={"official_splits": official, "multiple_choice": True})

    return read


# ---------------------------------------------------------------------------------------------- registry


def _hf_layout(parquet_dir: str, splits: str) -> str:
    return (f"a folder written by DatasetDict.save_to_disk (dataset_dict.json, one folder per split: "
            f"{splits}), or the hub's parquet files ROOT/{parquet_dir}/<split>-00000-of-00001.parquet "
            f"for the splits {splits}")


SOURCES: dict[str, Source] = {s.name: s for s in [
    Source("cifar10", "image", "CIFAR-10 (32x32 RGB, 10 classes, 50k train + 10k test); torchvision files",
           "cifar10", "ROOT/cifar-10-batches-py/{data_batch_1..5, test_batch, batches.meta} "
           "(the extracted cifar-10-python.tar.gz)", "cifar-10-batches-py",
           _cifar_reader("cifar10", "CIFAR10", "cifar-10-batches-py",
                         [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch", "batches.meta"]),
           _cifar_fetch("CIFAR10")),
    Source("cifar100", "image", "CIFAR-100 (32x32 RGB, 100 fine classes, 50k train + 10k test); "
           "torchvision files", "cifar100", "ROOT/cifar-100-python/{train, test, meta} (the extracted "
           "cifar-100-python.tar.gz)", "cifar-100-python",
           _cifar_reader("cifar100", "CIFAR100", "cifar-100-python", ["train", "test", "meta"]),
           _cifar_fetch("CIFAR100")),
    Source("svhn", "image", "SVHN street-view digits (32x32 RGB, 73k train + 26k test); far-OOD for CIFAR",
           "svhn", "ROOT/train_32x32.mat and ROOT/test_32x32.mat (the cropped-digits format)",
           "test_32x32.mat", _read_svhn, _fetch_svhn),
    Source("flowers102", "image", "Oxford Flowers-102 (JPEG, 102 classes, official 1020/1020/6149 "
           "train/val/test)", "flowers102", "ROOT/flowers-102/{jpg/image_00001.jpg..., imagelabels.mat, "
           "setid.mat}", "flowers-102", _read_flowers, _fetch_flowers),
    Source("oxford-pets", "image", "Oxford-IIIT Pet (JPEG, 37 breeds, 3680 trainval + 3669 test)",
           "oxford-pets", "ROOT/oxford-iiit-pet/{images/<Breed_name>_<n>.jpg, annotations/trainval.txt, "
           "annotations/test.txt}", "oxford-iiit-pet", _read_pets, _fetch_pets),
    Source("cifar100-c", "image", "CIFAR-100-C (CIFAR-100 test set under 19 corruptions x 5 severities); "
           "pick corruption= and severity=", "CIFAR-100-C",
           "ROOT/<corruption>.npy (uint8 (50000,32,32,3): severity 1..5 x 10,000) and ROOT/labels.npy",
           "labels.npy", _cifar_c_reader("cifar100-c", CIFAR100_CLASSES), options=("corruption", "severity")),
    Source("cifar10-c", "image", "CIFAR-10-C (CIFAR-10 test set under 19 corruptions x 5 severities); "
           "pick corruption= and severity=", "CIFAR-10-C",
           "ROOT/<corruption>.npy (uint8 (50000,32,32,3): severity 1..5 x 10,000) and ROOT/labels.npy",
           "labels.npy", _cifar_c_reader("cifar10-c", CIFAR10_CLASSES), options=("corruption", "severity")),
    Source("sst2", "text", "SST-2 movie-review sentences, 2 classes (67k train; the 872 labelled "
           "validation sentences are the test split); Hugging Face files", "sst2",
           _hf_layout("data", "train, validation"), "data", _read_sst2, _hf_fetch("stanfordnlp/sst2", None)),
    Source("arc-easy", "text", "ARC-Easy grade-school science questions, multiple choice (official "
           "train/validation/test); Hugging Face files", "arc-easy",
           _hf_layout("ARC-Easy", "train, validation, test"), "ARC-Easy", _arc_reader("arc-easy", "ARC-Easy"),
           _hf_fetch("allenai/ai2_arc", "ARC-Easy")),
    Source("arc-challenge", "text", "ARC-Challenge science questions, multiple choice (official "
           "train/validation/test); Hugging Face files", "arc-challenge",
           _hf_layout("ARC-Challenge", "train, validation, test"), "ARC-Challenge",
           _arc_reader("arc-challenge", "ARC-Challenge"), _hf_fetch("allenai/ai2_arc", "ARC-Challenge")),
]}

#: the paper's ID → far-OOD pairs over these sources (``ood_sets`` reads ``OOD_PAIRS``, which holds both)
PAPER_OOD_PAIRS: dict[str, tuple[str, ...]] = {
    "cifar100": ("cifar10", "svhn"),
    "cifar10": ("svhn", "cifar100"),
}
