"""Taking a split of a dataset by name or path: ``load_dataset``, OOD sets (``ood_sets``,
``load_ood``) and the names known (``list_datasets``).

Splits (``load_dataset(name, split, seed)``)
    Stratified per class: each class's items are permuted with ``numpy.random.default_rng(seed)``
    and cut into test (``round(n_c·test_frac)``), val (``round(n_c·val_frac)``) and train (the rest);
    defaults 70/10/20. A dataset with official splits (``info["official_splits"]``: Fashion-MNIST,
    CIFAR, SVHN, Flowers102, Pets, SST-2, ARC) uses them, and carves ``val`` (``val_frac`` of it,
    stratified, seeded) from its official train split when it has no official val split. Splits are
    disjoint by construction, and the same seed gives the same split in any process. ``limit`` then
    keeps a stratified, seeded subsample (largest-remainder allocation per class).

Near-OOD by class split (``holdout=``)
    ``load_dataset("bbc-news", holdout=["sports", "tech"])`` returns the kept classes relabelled
    ``0..k-1`` (in their original order) and ``ds.ood``: the held-out classes' items of the *same*
    split, labels ``-1``. The split is computed before the classes are divided, so the kept items of
    a split do not depend on the holdout. ``holdout=True`` uses ``HOLDOUTS[name]`` (e.g. digits 5–9).

Far-OOD pairs
    ``OOD_PAIRS[id_name]`` names the OOD sets of an ID set: the zoo's (``ZOO_OOD_PAIRS``) and the
    paper's (``PAPER_OOD_PAIRS``: cifar100 → cifar10, svhn; cifar10 → svhn, cifar100);
    ``ood_sets(id_name, split)`` loads them with labels ``-1``.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from sve.data.container import Dataset, check_int
from sve.data.sources import PAPER_OOD_PAIRS, SOURCES
from sve.data.user import image_folder, text_csv
from sve.data.zoo import HOLDOUTS, ZOO, ZOO_OOD_PAIRS
from sve.errors import ConfigError, DataError, MissingAssetError, UnknownNameError

SPLITS = ("train", "val", "test", "all")

#: ID dataset -> its far-OOD datasets (loaded by ``ood_sets``): the zoo's and the paper's
OOD_PAIRS: dict[str, tuple[str, ...]] = {**ZOO_OOD_PAIRS, **PAPER_OOD_PAIRS}


def list_datasets() -> dict[str, str]:
    """Dataset names with a one-line description each: the offline zoo, then the real sources
    (``SOURCES``, read from the user's files). A folder or a .csv path is accepted too."""
    return {**{name: desc for name, (_, desc) in ZOO.items()},
            **{name: src.description for name, src in SOURCES.items()}}


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
    """The full dataset behind a zoo or source name, or a user path (folder → image_folder,
    .csv → text_csv)."""
    key = os.fspath(name)
    if key in ZOO:
        if key != "fashion-mnist" and root is not None:
            raise ConfigError(f"root= applies only to fashion-mnist among the zoo sets, not {key!r}")
        if source_kw:
            raise ConfigError(f"unexpected options {sorted(source_kw)} for zoo dataset {key!r}")
        loader = ZOO[key][0]
        return loader(root) if key == "fashion-mnist" else loader()
    if key in SOURCES:
        return SOURCES[key].load(root, **source_kw)
    path = Path(key)
    if path.is_dir():
        return image_folder(path, **source_kw)
    if path.is_file() and path.suffix.lower() == ".csv":
        return text_csv(path, **source_kw)
    if path.exists():
        raise DataError(f"{path} is neither a folder of class sub-folders nor a .csv file")
    if os.sep in key or "/" in key or path.suffix:
        raise DataError(f"no such file or folder: {path}")
    raise UnknownNameError(f"unknown dataset {key!r}; valid names: {', '.join(list_datasets())} "
                           "(or a path to an image folder or a .csv file)")


def _split_positions(full: Dataset, split: str, seed: int, val_frac: float, test_frac: float) -> np.ndarray:
    """Positions of ``split`` in ``full``: its official splits where it has them (``val`` carved
    from the official train split when there is no official one), else a stratified seeded split."""
    if split == "all":
        return np.arange(len(full))
    official = full.info.get("official_splits")
    if official is None:
        return _split_indices(full.labels, {"test": test_frac, "val": val_frac}, seed)[split]
    carve = "val" not in official and "train" in official
    if carve and split in ("train", "val"):
        train = official["train"]
        return train[_split_indices(full.labels[train], {"val": val_frac}, seed)[split]]
    if split in official:
        return official[split]
    have = [s for s in SPLITS if s in official or s == "all" or (s == "val" and carve)]
    raise ConfigError(f"{full.name!r} has no {split!r} split; its splits: {', '.join(have)}")


def load_dataset(name: str | os.PathLike, split: str = "train", seed: int = 0, limit: int | None = None,
                 holdout: Sequence[str | int] | str | bool | None = None,
                 root: str | os.PathLike | None = None, val_frac: float = 0.1, test_frac: float = 0.2,
                 **source_kw: Any) -> Dataset:
    """Load a dataset by name (``list_datasets()``) or the user's data by path, and take one split.

    split: ``"train" | "val" | "test" | "all"``; stratified and seeded (see the module docstring).
    limit: keep at most this many items (stratified, seeded); with ``holdout`` the near-OOD set
        ``ds.ood`` is limited to the same number.
    holdout: class names (or indices) to hold out as near-OOD, or ``True`` for ``HOLDOUTS[name]``.
    root: where a source's files are (``SOURCES``; e.g. the folder holding ``cifar-100-python/``), or
        where Fashion-MNIST lives (its folder, or a folder where its .deb was unpacked).
    source_kw: ``download=True`` for a source (needs a network), a CIFAR-C folder's ``corruption`` and
        ``severity``, or the options of ``image_folder`` / ``text_csv`` when ``name`` is a path.
    With ``$SVE_BUNDLE`` set to a bundle holding ``name`` (``sve.bundle``), the split comes from there.
    """
    from sve import bundle

    bundled = bundle.dataset_from_env(name, split, seed, limit, holdout, root, val_frac, test_frac, **source_kw)
    if bundled is not None:  # $SVE_BUNDLE: a portable bundle holds this dataset
        return bundled
    if split not in SPLITS:
        raise ConfigError(f"unknown split {split!r}; valid splits: {', '.join(SPLITS)}")
    seed = check_int("seed", seed, 0)
    if limit is not None:
        limit = check_int("limit", limit, 1)
    if not (0 <= val_frac < 1 and 0 <= test_frac < 1 and val_frac + test_frac < 1):
        raise ConfigError(f"need 0 <= val_frac, test_frac and val_frac + test_frac < 1 "
                          f"(got {val_frac}, {test_frac})")
    full = _source(name, root, source_kw)
    idx = _split_positions(full, split, seed, val_frac, test_frac)
    info = {k: v for k, v in full.info.items() if k != "official_splits"}
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
    known = key in ZOO or key in SOURCES
    return not known and Path(key).suffix.lower() == ".csv" and Path(key).is_file()


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
