"""The user's own data: a folder of class sub-folders (``image_folder``) or a CSV of texts (``text_csv``)."""

from __future__ import annotations

import os
import re
import warnings
from pathlib import Path

import numpy as np
from PIL import Image

from sve.data.container import Dataset, check_int, new_dataset
from sve.errors import DataError


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
        check_int("size", size, 1)
    elif len({p.size for p in pics}) > 1:
        size = 224
    if size is not None:
        pics = [p.resize((size, size), Image.BILINEAR) for p in pics]
    images = np.stack([np.asarray(p.convert(mode), dtype=np.uint8) for p in pics])
    return new_dataset(str(root), "image", labels, classes, images=images)


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
        return new_dataset(str(p), "text", np.full(len(texts), -1), [], texts=texts)
    values = df[label_column].str.strip()
    uniq = sorted(set(values))
    if all(re.fullmatch(r"-?\d+", v) for v in uniq):
        uniq = sorted(uniq, key=int)
    lookup = {v: i for i, v in enumerate(uniq)}
    return new_dataset(str(p), "text", [lookup[v] for v in values], uniq, texts=texts)
