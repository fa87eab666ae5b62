"""Preprocessing to a backbone's input: ``prepare(ds, backbone)`` → a torch Dataset of dict items.

Images become ``pixel_values`` float ``(3,S,S)`` = ``(resize_bilinear(x)/255 − mean)/std``
(grayscale repeated to 3 channels); texts become ``input_ids``/``attention_mask``[/``token_type_ids``]
padded to ``max_length``. Both paths give the same items.

Two image paths, picked by size (``lazy=None``):

- cached (small sets): the resized uint8 pixels of the whole set are computed once and cached under
  ``sve.paths.cache_dir("data")``, keyed by a hash of the data's content and labels (so split, seed,
  limit, holdout and corruption are all in it; files: their paths, sizes and mtimes) plus the size.
  Normalisation is applied per item, so it needs no key. Texts (token ids) are always cached.
- lazy (large sets): when the resized pixels would take more than ``max_cached_bytes()`` (512 MiB,
  or ``$SVE_PREPARE_MAX_BYTES``), nothing is materialised: each batch's source images (an array at
  its native size, or files) are gathered, decoded, resized and normalised when the batch is drawn
  (``__getitems__``), so memory stays at the source images plus a few batches. CIFAR-100's 50,000
  training images at 224 px would need 7.5 GB as cached uint8 pixels (30 GB as float32);
  lazily they need the 150 MB source array. ``prepared.loader(batch_size, ...)`` gives a
  DataLoader with worker processes that take whole batches at once.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import tempfile
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, default_collate

from sve.data.container import Dataset, ImageFiles, check_int
from sve.data.pixels import decode_resized
from sve.errors import ConfigError

_CACHE_VERSION = "1"
MAX_BYTES_ENV = "SVE_PREPARE_MAX_BYTES"
MAX_CACHED_BYTES = 512 << 20


def max_cached_bytes() -> int:
    """Largest resized-pixel size (bytes, uint8) that ``prepare`` materialises and caches:
    ``$SVE_PREPARE_MAX_BYTES`` if set, else 512 MiB. Larger image sets take the lazy path."""
    env = os.environ.get(MAX_BYTES_ENV)
    if not env:
        return MAX_CACHED_BYTES
    try:
        return int(env)
    except ValueError:
        raise ConfigError(f"{MAX_BYTES_ENV}={env!r} is not an integer number of bytes; "
                          f"unset it or give e.g. {MAX_CACHED_BYTES}") from None


def resized_bytes(n: int, channels: int, size: int) -> int:
    """Bytes of ``n`` resized uint8 images ``(channels,size,size)``: the cached path's memory."""
    return n * channels * size * size


def _normalise(px: torch.Tensor, mean: torch.Tensor, std: torch.Tensor, shared: bool = False) -> torch.Tensor:
    """uint8 ``(...,C,S,S)`` → float ``(...,3,S,S)``: ``(px/255 − mean)/std``, gray repeated to 3.

    Computed in place in one output tensor; ``shared=True`` puts that tensor in shared memory (a
    DataLoader worker's batch then reaches the main process without another copy).
    """
    out = torch.empty((*px.shape[:-3], 3, *px.shape[-2:]), dtype=torch.float32)
    if shared:
        out.share_memory_()
    torch.div(px.expand_as(out), 255, out=out)
    return out.sub_(mean).div_(std)


class _Batch(list):
    """The items of one batch (a list, so ``default_collate`` works), carrying them already stacked
    in ``batch`` for :func:`collate`."""

    batch: dict[str, Any]


def collate(items: list[dict[str, Any]]) -> dict[str, Any]:
    """DataLoader ``collate_fn``: a batch built whole by ``__getitems__`` as is, else ``default_collate``."""
    return items.batch if isinstance(items, _Batch) else default_collate(items)


class _Prepared(torch.utils.data.Dataset):
    """What both prepared datasets share: ``modality``, ``labels``, ``mean``/``std``, ``loader()``."""

    modality: str
    lazy: bool = False
    cache_path: Path | None = None
    from_cache: bool = False

    def _set_norm(self, mean: Sequence[float] | None, std: Sequence[float] | None) -> None:
        self.mean = torch.tensor(mean if mean is not None else (0.0, 0.0, 0.0)).view(3, 1, 1)
        self.std = torch.tensor(std if std is not None else (1.0, 1.0, 1.0)).view(3, 1, 1)

    def loader(self, batch_size: int, shuffle: bool = False, seed: int = 0,
               num_workers: int | None = None) -> DataLoader:
        """A DataLoader over this set (seeded shuffling). ``num_workers`` default: up to 4 worker
        processes on the lazy path (one fewer than the CPUs), none on the cached path."""
        if num_workers is None:
            num_workers = min(4, (os.cpu_count() or 1) - 1) if self.lazy else 0
        gen = torch.Generator().manual_seed(seed)
        return DataLoader(self, batch_size=check_int("batch_size", batch_size, 1), shuffle=shuffle,
                          generator=gen, num_workers=max(0, num_workers), collate_fn=collate,
                          worker_init_fn=release_freed_memory)


#: glibc's mallopt parameter M_MMAP_THRESHOLD
_M_MMAP_THRESHOLD = -3


def release_freed_memory(worker_id: int = 0) -> None:
    """DataLoader ``worker_init_fn``: have glibc serve every block ≥ 128 kB with its own mmap.

    A worker allocates and frees a few MB-sized buffers per batch; with glibc's default, adaptive
    threshold these come from the heap, which fragments and grows over an epoch instead of going
    back to the OS (about +0.35 GB per worker after 600 batches of 16 at 224 px, benchmarks/memory.py).
    No-op where the C library is not glibc.
    """
    import ctypes

    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").mallopt(_M_MMAP_THRESHOLD, 128 * 1024)


class PreparedDataset(_Prepared):
    """A map-style torch dataset of dict items, built by :func:`prepare` (the cached path).

    Images are kept as resized uint8 ``pixels`` ``(N,C,S,S)`` (C = 1 or 3) and turned into
    ``pixel_values = (pixels/255 − mean)/std`` (3 channels) per item. Texts keep their token tensors.
    ``from_cache`` tells whether the tensors came from the on-disk cache (``cache_path``).
    """

    def __init__(self, tensors: dict[str, Any], modality: str, mean: Sequence[float] | None = None,
                 std: Sequence[float] | None = None, cache_path: Path | None = None,
                 from_cache: bool = False):
        self.tensors, self.modality = tensors, modality
        self.cache_path, self.from_cache = cache_path, from_cache
        self._set_norm(mean, std)

    def __len__(self) -> int:
        return len(self.tensors["labels"])

    @property
    def labels(self) -> Any:
        return self.tensors["labels"]

    def __getitem__(self, i: int) -> dict[str, Any]:
        if self.modality == "text":
            return {k: v[i] for k, v in self.tensors.items()}
        return {"pixel_values": _normalise(self.tensors["pixels"][i], self.mean, self.std),
                "labels": self.tensors["labels"][i]}


class LazyImageDataset(_Prepared):
    """Images decoded, resized and normalised per batch, never materialised (the lazy path).

    Holds the source images (a uint8 array at its native size, or :class:`ImageFiles`) and labels;
    ``__getitems__`` (used by torch's DataLoader for a whole batch) gathers the batch's images,
    resizes them in one call and normalises them, giving the same items as :class:`PreparedDataset`.
    """

    modality = "image"
    lazy = True

    def __init__(self, images: np.ndarray | ImageFiles, labels: Any, size: int,
                 mean: Sequence[float] | None = None, std: Sequence[float] | None = None):
        self.images, self.size = images, size
        self._labels = torch.as_tensor(np.asarray(labels), dtype=torch.long)
        self._set_norm(mean, std)

    def __len__(self) -> int:
        return len(self._labels)

    @property
    def labels(self) -> Any:
        return self._labels

    def __getitems__(self, idx: Sequence[int]) -> _Batch:
        idx = np.asarray(idx, dtype=np.int64)
        in_worker = torch.utils.data.get_worker_info() is not None
        pv = _normalise(decode_resized(self.images, idx, self.size), self.mean, self.std, shared=in_worker)
        labels = self._labels[torch.from_numpy(idx)]
        out = _Batch({"pixel_values": pv[j], "labels": labels[j]} for j in range(len(idx)))
        out.batch = {"pixel_values": pv, "labels": labels}
        return out

    def __getitem__(self, i: int) -> dict[str, Any]:
        return self.__getitems__([int(i)])[0]


def _content_hash(ds: Dataset, params: dict[str, Any]) -> str:
    """blake2b over the data (files: their paths, sizes and mtimes), the labels and the parameters."""
    h = hashlib.blake2b(digest_size=16)
    h.update(repr((_CACHE_VERSION, ds.modality, sorted(params.items()))).encode())
    if isinstance(ds.images, ImageFiles):
        h.update(ds.images.mode.encode())
        for p in ds.images.paths:
            st = os.stat(p)
            h.update(repr((p, st.st_size, st.st_mtime_ns)).encode())
    elif ds.images is not None:
        h.update(repr(ds.images.shape).encode())
        h.update(np.ascontiguousarray(ds.images).data)
    for t in ds.texts or []:
        b = t.encode("utf-8", "surrogatepass")
        h.update(len(b).to_bytes(8, "little") + b)
    h.update(np.ascontiguousarray(ds.labels, dtype=np.int64).data)
    return h.hexdigest()


def _image_size(ds: Dataset, backbone: Any, image_size: int | None) -> int:
    native = 224 if ds.on_disk else max(ds.images.shape[1:3])
    size = image_size or getattr(backbone, "image_size", None) or native
    size = check_int("image_size", size, 1)
    patch = getattr(backbone, "patch_size", None)
    if patch and size % patch:
        lo, hi = max(patch, size // patch * patch), (size // patch + 1) * patch
        raise ConfigError(f"image_size {size} is not a multiple of the patch size {patch} of backbone "
                          f"{getattr(backbone, 'name', '?')!r}; use {lo} or {hi}")
    return size


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
            cache: bool = True, lazy: bool | None = None) -> PreparedDataset | LazyImageDataset:
    """Turn ``ds`` into the backbone's input (a torch Dataset of dict items), cached on disk.

    Uses the backbone's attributes only (``modality``, ``image_size``, ``patch_size``, ``mean``,
    ``std``, ``tokenizer`` / ``tokenize``, ``max_length``), so any object carrying them works.
    Images: resized bilinearly to ``image_size`` (default ``backbone.image_size``; a multiple of
    ``backbone.patch_size``), grayscale repeated to 3 channels, normalised with ``mean``/``std``.
    Texts: tokenized, truncated and padded to ``max_length`` (default ``backbone.max_length`` or 128).
    lazy: images only; ``None`` picks the lazy per-batch path when the resized pixels would exceed
    ``max_cached_bytes()`` (see the module docstring), ``True``/``False`` force it.
    """
    modality = getattr(backbone, "modality", ds.modality)
    if modality != ds.modality:
        raise ConfigError(f"dataset {ds.name!r} is {ds.modality} data but backbone "
                          f"{getattr(backbone, 'name', '?')!r} takes {modality}; pick a matching backbone")
    mean, std = getattr(backbone, "mean", None), getattr(backbone, "std", None)
    if ds.modality == "image":
        params: dict[str, Any] = {"size": _image_size(ds, backbone, image_size)}
        if lazy is None:
            channels = 1 if ds.images.ndim == 3 else 3
            lazy = resized_bytes(len(ds), channels, params["size"]) > max_cached_bytes()
        if lazy:
            return LazyImageDataset(ds.images, ds.labels, params["size"], mean, std)
    else:
        params = {"max_length": check_int("max_length", max_length or getattr(backbone, "max_length", None)
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
            tensors = {"pixels": decode_resized(ds.images, np.arange(len(ds)), params["size"])}
        else:
            tensors = _tokenize(ds, backbone, params["max_length"])
        tensors["labels"] = torch.as_tensor(ds.labels, dtype=torch.long)
        if path is not None:
            _cache_save(path, tensors)
    return PreparedDataset(tensors, ds.modality, mean, std, cache_path=path, from_cache=hit)
