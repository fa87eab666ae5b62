"""Checks of what the user typed or uploaded, before anything trains.

Every check returns an error message (a string naming the problem and the fix) or raises
``sve.errors.DataError``; the page shows it with ``st.error`` and stays usable. Data sets given by
path are validated by ``sve.data`` itself (``image_folder`` / ``text_csv``), so the app and the
library refuse exactly the same inputs. Uploads are written once to
``<cache>/uploads/<content hash>/`` so that the run config can name them by path and the run can be
reproduced after a restart.
"""

from __future__ import annotations

import hashlib
import io
import re
import zipfile
import zlib
from collections.abc import Iterable, Sequence
from pathlib import Path

from sve.errors import DataError

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff"}
UPLOAD_TYPES = ["csv", "zip", *sorted(s.lstrip(".") for s in IMAGE_SUFFIXES)]
HUB_PREFIXES = ("timm:", "hf:")
#: an uploaded ZIP may expand to at most this many bytes in all, and hold at most this many files
MAX_ZIP_BYTES = 1 << 30
MAX_ZIP_FILES = 100_000


def safe_name(name: str, default: str = "file") -> str:
    """A file name that is safe on every OS: ``"ECE / NLL (T=1.2)"`` → ``"ECE_NLL_T_1.2"``."""
    stem = re.sub(r"[^A-Za-z0-9._-]+", "_", str(name)).strip("._-")
    return stem[:120] or default


def check_backbone(name: str, zoo: Iterable[str]) -> str | None:
    """None if ``name`` is a zoo name or a ``timm:``/``hf:`` pass-through name, else the error."""
    zoo = list(zoo)
    name = (name or "").strip()
    if name in zoo or (name.startswith(HUB_PREFIXES) and len(name.split(":", 1)[1]) > 0):
        return None
    return (f"Unknown backbone {name!r}. Use a zoo name ({', '.join(zoo)}) or a pass-through name "
            "'timm:<model name>' / 'hf:<model id or local path>'.")


def check_data_path(path: str, ood: bool = False) -> str | None:
    """None if ``path`` is an image folder or a text CSV that ``sve.data`` accepts, else the error.
    ``ood=True``: a CSV needs only a text column (OOD samples have no label)."""
    from sve import data

    p = Path(path).expanduser()
    if not p.exists():
        return (f"No such file or folder: {str(p)!r}. Give an image folder (one sub-folder per class) "
                "or a CSV.")
    try:
        if p.is_dir():
            data.image_folder(p)
        elif p.suffix.lower() == ".csv":
            data.text_csv(p, label_column=None if ood else "label")
        else:
            return (f"{p.name!r} is neither a folder of images nor a .csv file. Give an image folder "
                    "(one sub-folder per class) or a CSV with text and label columns.")
    except Exception as exc:  # noqa: BLE001 - every reason becomes a message
        return f"{p}: {describe(exc)}"
    return None


def same_data(a: str, b: str) -> bool:
    """True when two data specs (zoo names or paths) name the same data."""
    def norm(spec: str) -> str:
        p = Path(spec).expanduser()
        return str(p.resolve()) if p.exists() else spec.strip().lower()
    return norm(a) == norm(b)


def check_ood(dataset: str, ood: Sequence[str]) -> str | None:
    """An OOD set equal to the ID set is refused (AUROC would be meaningless)."""
    clash = [o for o in ood if same_data(dataset, o)]
    if clash:
        return (f"The OOD set {clash[0]!r} is the in-distribution data set itself; choose a different "
                "OOD set (or none).")
    return None


def describe(exc: BaseException) -> str:
    """One line for the page: the message of our own errors, the type for anything else."""
    msg = str(exc).strip() or type(exc).__name__
    return msg if type(exc).__module__.startswith("sve") else f"{type(exc).__name__}: {msg}"


def save_upload(files: Sequence[tuple[str, bytes]], role: str, root: Path) -> Path:
    """Write uploaded files under ``root/<hash>/`` and return the data path for the config.

    - one ``.csv`` → ``<hash>/data.csv`` (must be UTF-8 text; its columns are checked by
      ``sve.data.text_csv``);
    - one ``.zip`` → extracted to ``<hash>/images`` (one sub-folder per class inside), unless it would
      expand past ``MAX_ZIP_BYTES`` or hold more than ``MAX_ZIP_FILES`` files (``check_zip``: refused
      before anything is written);
    - image files → ``<hash>/images/<role>/`` (a single class, the shape OOD sets have).
    Raises DataError naming the file that is not what its name says.
    """
    if not files:
        raise DataError("Nothing was uploaded.")
    digest = hashlib.sha256()
    for name, content in files:
        digest.update(name.encode() + b"\0" + content)
    folder = Path(root) / digest.hexdigest()[:16]
    suffixes = [Path(name).suffix.lower() for name, _ in files]
    if suffixes == [".csv"]:
        return _save_csv(files[0], folder, ood=role == "ood")
    if suffixes == [".zip"]:
        return _save_zip(files[0], folder)
    wrong = [name for (name, _), s in zip(files, suffixes) if s not in IMAGE_SUFFIXES]
    if wrong:
        raise DataError(f"Upload {wrong[0]!r} is not an image, a CSV or a ZIP of class folders. Upload "
                        "one CSV (text,label), one ZIP (one sub-folder per class) or image files.")
    return _save_images(files, folder / "images" / safe_name(role, "images"))


def _save_csv(file: tuple[str, bytes], folder: Path, ood: bool = False) -> Path:
    name, content = file
    try:
        content.decode("utf-8")
    except UnicodeDecodeError:
        raise DataError(f"Upload {name!r} is not a CSV: it is not UTF-8 text. Upload a CSV with a "
                        "text and a label column.") from None
    if b"\0" in content:
        raise DataError(f"Upload {name!r} is not a CSV: it holds binary data.")
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "data.csv"
    path.write_bytes(content)
    from sve import data

    try:
        data.text_csv(path, label_column=None if ood else "label")
    except Exception as exc:  # noqa: BLE001
        raise DataError(f"Upload {name!r}: {describe(exc)}") from None
    return path


def check_zip(name: str, archive: zipfile.ZipFile) -> None:
    """Refuse, before anything is written, a ZIP whose members would expand past
    ``MAX_ZIP_BYTES`` in all or that holds more than ``MAX_ZIP_FILES`` files (a decompression bomb).

    The sizes are the ones the archive declares; ``zipfile`` never returns more than a member's
    declared size (a member that holds more fails its CRC check), so the declared total is a bound.
    """
    files = [info for info in archive.infolist() if not info.is_dir()]
    total = sum(info.file_size for info in files)
    if len(files) > MAX_ZIP_FILES:
        raise DataError(f"Upload {name!r} holds {len(files):,} files, more than the {MAX_ZIP_FILES:,} "
                        "accepted; upload fewer images (or give the folder's path instead).")
    if total > MAX_ZIP_BYTES:
        raise DataError(f"Upload {name!r} would expand to {total / 2**20:,.0f} MiB, more than the "
                        f"{MAX_ZIP_BYTES / 2**20:,.0f} MiB accepted (a ZIP that small expanding that much "
                        "is refused as a decompression bomb); nothing was written. Upload a smaller "
                        "archive, or give the folder's path instead.")


def _save_zip(file: tuple[str, bytes], folder: Path) -> Path:
    name, content = file
    try:
        archive = zipfile.ZipFile(io.BytesIO(content))
    except zipfile.BadZipFile:
        raise DataError(f"Upload {name!r} is not a ZIP archive.") from None
    target = folder / "images"
    with archive:
        check_zip(name, archive)
        try:
            for info in archive.infolist():
                parts = [safe_name(p) for p in Path(info.filename).parts if p not in ("", ".", "..")]
                if info.is_dir() or not parts or parts[0] == "__MACOSX":
                    continue
                out = target.joinpath(*parts)          # sanitised parts: no zip-slip outside target
                out.parent.mkdir(parents=True, exist_ok=True)
                out.write_bytes(archive.read(info))
        except (zipfile.BadZipFile, zlib.error, EOFError, NotImplementedError, RuntimeError) as err:
            raise DataError(f"Upload {name!r} is a damaged or unsupported ZIP ({err}); re-create it "
                            "with a standard zip tool (no encryption).") from None
    return target


def _save_images(files: Sequence[tuple[str, bytes]], target: Path) -> Path:
    from PIL import Image, UnidentifiedImageError

    bad = []
    for name, content in files:
        try:
            with Image.open(io.BytesIO(content)) as img:
                img.verify()
        except (UnidentifiedImageError, OSError, SyntaxError, ValueError):
            bad.append(name)
    if bad:
        raise DataError(f"Upload {', '.join(map(repr, bad[:5]))} is not an image (could not be decoded). "
                        "Upload PNG/JPEG/BMP/GIF/WebP/TIFF files.")
    target.mkdir(parents=True, exist_ok=True)
    for name, content in files:
        (target / safe_name(name, "image")).write_bytes(content)
    return target.parent
