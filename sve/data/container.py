"""The dataset container of :mod:`sve.data`: :class:`Dataset`, images kept on disk
(:class:`ImageFiles`), and the small validators the loaders share.

A :class:`Dataset` holds ``images`` (uint8, ``(N,H,W)`` grayscale or ``(N,H,W,3)`` RGB, or an
:class:`ImageFiles` for sets too large to decode up front) or ``texts`` (``list[str]``), ``labels``
(int64, ``-1`` = unlabeled / OOD), ``classes``, per-row ``fields`` (e.g. a multiple-choice item's
choices) and provenance.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
from PIL import Image

from sve.errors import ConfigError, DataError


class ImageFiles:
    """Images kept as files and decoded on access: a stand-in for a uint8 ``(N,H,W,3)`` array.

    ``files[i]`` decodes image ``i`` (uint8 ``(H,W,3)``, or ``(H,W)`` for ``mode="L"``); indexing
    with a slice, a list or an index array gives another ``ImageFiles`` (nothing decoded). Sizes may
    differ between files, so ``shape`` is ``(N, None, None, 3)``.
    """

    dtype = np.dtype(np.uint8)

    def __init__(self, paths: Sequence[str | os.PathLike] | np.ndarray, mode: str = "RGB"):
        self.paths = np.asarray([os.fspath(p) for p in paths], dtype=object)
        self.mode = mode

    def __len__(self) -> int:
        return len(self.paths)

    @property
    def ndim(self) -> int:
        return 3 if self.mode == "L" else 4

    @property
    def shape(self) -> tuple[int | None, ...]:
        return (len(self), None, None) + ((3,) if self.ndim == 4 else ())

    def decode(self, i: int) -> np.ndarray:
        """Image ``i`` as uint8 ``(H,W,3)`` (``(H,W)`` in mode ``L``)."""
        path = self.paths[i]
        try:
            with Image.open(path) as im:
                return np.array(im.convert(self.mode), dtype=np.uint8)
        except (OSError, ValueError, SyntaxError) as e:
            raise DataError(f"cannot read image {path}: {e}; replace or remove the file") from e

    def __getitem__(self, idx: Any) -> Any:
        if isinstance(idx, (int, np.integer)):
            return self.decode(int(idx))
        return ImageFiles(self.paths[idx], self.mode)

    def __repr__(self) -> str:
        return f"ImageFiles({len(self)} files, mode={self.mode})"


@dataclass
class Dataset:
    """A labelled (or unlabeled, ``labels == -1``) set of images or texts.

    ``indices`` are the items' positions in the source's full ordering (``split="all"``), so splits
    can be checked for disjointness and traced back. ``ood`` holds the held-out classes' items when
    the dataset was loaded with ``holdout=``. ``fields`` holds extra per-row columns (a list per
    name, e.g. a multiple-choice item's ``choice_texts``); ``row(i)`` gathers them.
    ``info`` records how it was made (seed, limit, ...).
    """

    name: str
    modality: str  # "image" | "text"
    labels: np.ndarray  # int64 (N,)
    classes: list[str]
    images: np.ndarray | ImageFiles | None = None  # uint8 (N,H,W) or (N,H,W,3), or files
    texts: list[str] | None = None
    split: str = "all"
    indices: np.ndarray | None = None
    ood: Dataset | None = None
    info: dict[str, Any] = field(default_factory=dict)
    fields: dict[str, list[Any]] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def on_disk(self) -> bool:
        """True when the images are files decoded on access (:class:`ImageFiles`)."""
        return isinstance(self.images, ImageFiles)

    def subset(self, idx: Sequence[int] | np.ndarray, **changes: Any) -> Dataset:
        """The items at ``idx`` (a copy), with other fields replaced by ``changes``."""
        idx = np.asarray(idx, dtype=np.int64)
        parts: dict[str, Any] = {
            "labels": self.labels[idx],
            "images": None if self.images is None else self.images[idx],
            "texts": None if self.texts is None else [self.texts[i] for i in idx],
            "indices": (np.arange(len(self)) if self.indices is None else self.indices)[idx],
            "ood": None,
            "info": dict(self.info),
            "fields": {k: [v[i] for i in idx] for k, v in self.fields.items()},
        }
        parts.update(changes)
        return replace(self, **parts)

    def as_ood(self) -> Dataset:
        """A copy with every label set to ``-1`` (the OOD convention) and no classes."""
        return replace(self, labels=np.full(len(self), -1, dtype=np.int64), classes=[], ood=None)

    def row(self, i: int) -> dict[str, Any]:
        """Item ``i`` as a dict: ``label``, ``text`` or ``image``, and every entry of ``fields``."""
        out: dict[str, Any] = {"label": int(self.labels[i])}
        if self.texts is not None:
            out["text"] = self.texts[i]
        if self.images is not None:
            out["image"] = self.images[int(i)]
        out.update({k: v[i] for k, v in self.fields.items()})
        return out

    def in_memory(self, size: int | None = None) -> Dataset:
        """A copy whose images are decoded into one uint8 array (files resized to ``size``x``size``;
        needed when they differ in size). For sets that fit in memory, e.g. before ``corrupt``."""
        if not self.on_disk:
            return self
        from sve.data.pixels import decode_resized

        if size is None:
            first = self.images[0] if len(self) else np.zeros((1, 1, 3), np.uint8)
            size = max(first.shape[:2])
        arr = decode_resized(self.images, np.arange(len(self)), check_int("size", size, 1))
        arr = arr[:, 0] if self.images.ndim == 3 else arr.permute(0, 2, 3, 1)
        return replace(self, images=arr.numpy())

    def summary(self) -> str:
        """One line, e.g. ``mnist5k/train: 3500 images 28x28 gray, 10 classes``."""
        if self.on_disk:
            kind = f"images in files ({self.images.mode})"
        elif self.images is not None:
            kind = f"images {self.images.shape[1]}x{self.images.shape[2]} "
            kind += "RGB" if self.images.ndim == 4 else "gray"
        else:
            kind = "texts"
        cls = f"{self.num_classes} classes" if self.num_classes else "unlabeled"
        return f"{self.name}/{self.split}: {len(self)} {kind}, {cls}"

    __repr__ = summary


def new_dataset(name: str, modality: str, labels: Any, classes: Sequence[str], **kw: Any) -> Dataset:
    """A full source dataset (``split="all"``, ``indices = 0..N-1``) with int64 labels."""
    labels = np.asarray(labels, dtype=np.int64)
    return Dataset(name, modality, labels, list(classes), indices=np.arange(len(labels)), **kw)


def check_int(name: str, value: Any, low: int, high: int | None = None) -> int:
    """``value`` as an int in ``low..high``, else a ConfigError naming the range."""
    ok = isinstance(value, (int, np.integer)) and not isinstance(value, bool)
    if not ok or value < low or (high is not None and value > high):
        rng = f"{low}..{high}" if high is not None else f">= {low}"
        raise ConfigError(f"{name} must be an integer {rng}, got {value!r}")
    return int(value)
