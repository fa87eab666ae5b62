"""Experiment runs: one config → trained methods → a run folder shared by notebooks, app and CLI.

``run(config)`` trains every method × seed of an :class:`ExperimentConfig`, evaluates each on the
test, validation, OOD and shifted sets, and writes ``runs/<id>/``::

    config.yaml  env.json  metrics.csv  status.json
    <label>/seed<k>/  logits.npz  metrics.json  history.json  spectra.npz  adapter.safetensors
                      cost.json  done.json

Conventions
- Logits are ``(N, M, C)`` (``M = 1`` for a single model); ``logits.npz`` holds one array per eval
  set (``test``, ``val``, ``ood:<name>``, ``shift:<corruption>:<severity>``) and the labels of each
  as ``labels:<set>`` (``-1`` for OOD).
- Every file is written to a temporary name in the same folder and renamed (``os.replace``), so a
  crash never leaves a half-written file under its final name. A method/seed is complete only
  when its ``done.json`` exists; on resume, complete pairs are skipped and anything else in their
  folder is discarded and retrained.
- A run folder is owned by one process at a time through an advisory ``flock`` on ``.lock``; the
  kernel releases it when the process dies (even by SIGKILL), which is how a killed run is told
  apart from a live one. New folders are created with ``exist_ok=False`` under a unique id
  ``<YYYYmmdd-HHMMSS>-<name>-<6 hex>``, so two runs started at once never share a folder.
- ``format_version`` is stored in ``config.yaml`` and ``status.json``; a folder from another
  version is refused with :class:`RunFormatError` instead of failing later.
"""

from __future__ import annotations

import contextlib
import dataclasses
import difflib
import hashlib
import io
import json
import os
import re
import secrets
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sve.errors import ConfigError, SVEError

FORMAT_VERSION = 1
#: events sent to run callbacks, in order
EVENTS = ("run_start", "method_start", "step", "epoch", "method_end", "run_end")
COMBINE = ("prob", "logit")
SIGMA_DECAY = ("zero", "pretrained")
TARGET_WORDS = ("all", "attention", "mlp")
METHOD_KEYS = ("name", "label", "members", "lr", "epochs", "sigma_decay", "combine", "options")
#: cost.json entries repeated on every metrics row of a method × seed (the last columns)
COST_COLUMNS = ("trainable_params", "overhead_pct", "train_time_s", "train_peak_rss_mb", "eval_time_s")

Callback = Callable[[str, dict], Any]


class RunFormatError(SVEError, ValueError):
    """A folder is not a run folder of this version of `sve` (missing files or another format)."""


# --------------------------------------------------------------------------------------------
# config


@dataclass
class MethodSpec:
    """One entry of ``ExperimentConfig.methods`` with the run-level defaults filled in.

    ``label`` names the method's folder and its rows in the metrics table (default: ``name``);
    two entries of the same method with different options need different labels.
    """

    name: str
    label: str
    members: int
    lr: float | None
    epochs: int
    sigma_decay: str = "zero"
    combine: str = "prob"
    options: dict = field(default_factory=dict)


@dataclass
class ExperimentConfig:
    """Everything that defines an experiment; saved as ``config.yaml`` in the run folder.

    ``methods`` entries are method names or dicts ``{"name", "label", "members", "lr", "epochs",
    "sigma_decay", "combine", "options"}`` overriding the run-level values for that method (so one
    run can hold an ablation). Sample limits of ``None`` use
    the whole split. ``lr=None`` takes each method's default (``sve.methods.default_lr``).
    ``seeds`` are the training seeds (member init, batch order); ``data_seed`` fixes the split.
    ``init_std`` goes to the SVE-like methods and ``targets`` to every method that takes targets
    (:func:`method_options`). ``sigma_decay``: weight decay of the singular values toward
    ``"zero"`` (AdamW's, as the authors' code) or toward the ``"pretrained"`` values
    (``sve.train.fit``). ``adapter_max_mb``: adapters bigger than this are not saved (e.g. full
    deep-ensemble copies); ``None`` always saves. Fields are validated on construction and again
    by :func:`run`; numeric strings such as ``"1e-3"`` (YAML 1.1 reads them as text) are accepted.
    """

    name: str = "quick-demo"
    backbone: str = "dinov2-small"
    backbone_options: dict = field(default_factory=dict)
    dataset: str = "mnist5k"
    holdout: list[str] = field(default_factory=list)
    ood: list[str] = field(default_factory=lambda: ["animal-mnist"])
    shifts: list[str] = field(default_factory=list)
    severities: list[int] = field(default_factory=lambda: [1, 3, 5])
    methods: list[Any] = field(default_factory=lambda: ["sve"])
    members: int = 4
    epochs: int = 3
    warmup_epochs: int = 1
    batch_size: int = 16
    eval_batch_size: int = 64
    lr: float | None = None
    weight_decay: float = 0.05
    sigma_decay: str = "zero"
    grad_clip: float | None = 1.0
    init_std: float = 0.01
    targets: Any = "all"
    image_size: int | None = None
    max_length: int | None = None
    train_limit: int | None = 512
    val_limit: int | None = 128
    test_limit: int | None = 256
    ood_limit: int | None = 256
    seeds: list[int] = field(default_factory=lambda: [0])
    data_seed: int = 0
    combine: str = "prob"
    adapter_max_mb: float | None = 200.0

    def __post_init__(self) -> None:
        self.validate()

    # -- validation ----------------------------------------------------------------------------
    def validate(self) -> None:
        """Check every field's type and range; raise :class:`ConfigError` naming the field."""
        for name in ("name", "backbone", "dataset"):
            value = getattr(self, name)
            _need(name, value, isinstance(value, str) and value.strip(), "a non-empty string")
        _need("backbone_options", self.backbone_options, isinstance(self.backbone_options, dict),
              "a mapping of backbone options, e.g. {random: true}")
        for name in ("holdout", "ood", "shifts"):
            value = getattr(self, name)
            _need(name, value, isinstance(value, list) and all(isinstance(v, str) and v for v in value),
                  "a list of names")
        _need("severities", self.severities, isinstance(self.severities, list)
              and all(_is_int(s) and 1 <= s <= 5 for s in self.severities), "a list of integers in 1..5")
        for name, low in (("members", 1), ("epochs", 1), ("warmup_epochs", 0), ("batch_size", 1),
                          ("eval_batch_size", 1)):
            _need(name, getattr(self, name), _is_int(getattr(self, name)) and getattr(self, name) >= low,
                  f"an integer >= {low}")
        _need("data_seed", self.data_seed, _is_int(self.data_seed) and self.data_seed >= 0, "an integer >= 0")
        for i, name in enumerate(self.ood):
            if name == self.dataset:
                raise ConfigError(f"config field 'ood[{i}]' = {name!r} is the ID dataset itself: pick "
                                  "another set (e.g. animal-mnist for mnist5k), or use 'holdout' for "
                                  "held-out classes of the same dataset")
        for name in ("image_size", "max_length", "train_limit", "val_limit", "test_limit", "ood_limit"):
            value = getattr(self, name)
            _need(name, value, value is None or (_is_int(value) and value >= 1), "null or an integer >= 1")
        self.lr = _float("lr", self.lr, optional=True, positive=True)
        self.weight_decay = _float("weight_decay", self.weight_decay)
        self.grad_clip = _float("grad_clip", self.grad_clip, optional=True, positive=True)
        self.init_std = _float("init_std", self.init_std)
        self.adapter_max_mb = _float("adapter_max_mb", self.adapter_max_mb, optional=True)
        _choice("sigma_decay", self.sigma_decay, SIGMA_DECAY)
        _choice("combine", self.combine, COMBINE)
        _check_targets("targets", self.targets)
        _need("seeds", self.seeds, isinstance(self.seeds, list) and self.seeds
              and all(_is_int(s) for s in self.seeds) and len(set(self.seeds)) == len(self.seeds),
              "a non-empty list of distinct integers")
        _need("methods", self.methods, isinstance(self.methods, list) and self.methods, "a non-empty list")
        self.method_specs()  # validates every entry

    def method_specs(self) -> list[MethodSpec]:
        """The ``methods`` entries with run-level defaults filled in (labels unique)."""
        specs = []
        for i, entry in enumerate(self.methods):
            where = f"methods[{i}]"
            if isinstance(entry, str):
                entry = {"name": entry}
            _need(where, entry, isinstance(entry, dict), "a method name or a mapping with keys "
                  + ", ".join(METHOD_KEYS))
            unknown = [k for k in entry if k not in METHOD_KEYS]
            if unknown:
                raise ConfigError(_unknown_message(f"{where}.{unknown[0]}", unknown[0], METHOD_KEYS))
            name, label = entry.get("name"), entry.get("label", entry.get("name"))
            _need(f"{where}.name", name, isinstance(name, str) and name, "a method name")
            ok = isinstance(label, str) and re.fullmatch(r"[A-Za-z0-9_.+=-]+", label)
            _need(f"{where}.label", label, ok, "letters, digits and _ . + = - (it names a folder)")
            members = entry.get("members", self.members)
            epochs = entry.get("epochs", self.epochs)
            _need(f"{where}.members", members, _is_int(members) and members >= 1, "an integer >= 1")
            _need(f"{where}.epochs", epochs, _is_int(epochs) and epochs >= 1, "an integer >= 1")
            lr = _float(f"{where}.lr", entry.get("lr", self.lr), optional=True, positive=True)
            sigma_decay = entry.get("sigma_decay", self.sigma_decay)
            combine = entry.get("combine", self.combine)
            _choice(f"{where}.sigma_decay", sigma_decay, SIGMA_DECAY)
            _choice(f"{where}.combine", combine, COMBINE)
            options = entry.get("options", {})
            _need(f"{where}.options", options, isinstance(options, dict), "a mapping of method options")
            specs.append(MethodSpec(name, label, members, lr, epochs, sigma_decay, combine, dict(options)))
        labels = [s.label for s in specs]
        for label in labels:
            if labels.count(label) > 1:
                raise ConfigError(f"config field 'methods' has two entries labelled {label!r}: give each "
                                  "a distinct 'label', e.g. {name: sve, label: sve-std0.1, options: {...}}")
        return specs

    def check_names(self) -> None:
        """Check backbone, dataset, OOD, shift and method names against the registries.

        Imports the heavy modules, so :func:`run` calls it before training (not ``__init__``).
        """
        from sve import backbones, data

        if not self.backbone.startswith(("timm:", "hf:")) and not Path(self.backbone).exists():
            _choice("backbone", self.backbone, tuple(backbones.list_backbones()) + ("timm:<name>", "hf:<id>"))
        known = tuple(data.list_datasets())
        if not Path(self.dataset).exists():
            _choice("dataset", self.dataset, known + ("<image folder>", "<CSV path>"))
        for i, name in enumerate(self.ood):
            if not Path(name).exists():
                _choice(f"ood[{i}]", name, known + ("<image folder>", "<CSV path>"))
        for i, name in enumerate(self.shifts):
            _choice(f"shifts[{i}]", name, tuple(data.CORRUPTIONS) + tuple(data.TEXT_CORRUPTIONS))
        names, methods = _method_names(), _methods_module()
        for i, spec in enumerate(self.method_specs()):
            _choice(f"methods[{i}].name", spec.name, names)
            if "seed" in spec.options:
                raise ConfigError(f"config field 'methods[{i}].options' sets 'seed': use the run-level "
                                  "'seeds' list instead")
            accepted = list(methods.METHODS[spec.name].options) if methods is not None else []
            for key in spec.options if methods is not None else ():
                if key not in accepted:
                    raise ConfigError(f"config field 'methods[{i}].options': method {spec.name!r} has no "
                                      f"option {key!r}{_did_you_mean(key, accepted)}; its options are "
                                      + ", ".join(accepted))

    # -- (de)serialisation -----------------------------------------------------------------------
    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> ExperimentConfig:
        """Build from a mapping; unknown keys are refused by name. A ``format_version`` key (written
        by :meth:`save`) must be this version's."""
        if not isinstance(data, dict):
            raise ConfigError(f"a config must be a mapping of fields, got {type(data).__name__}")
        version = data.get("format_version", FORMAT_VERSION)
        if version != FORMAT_VERSION:
            raise ConfigError(f"config has format_version {version!r}, but this sve reads format_version "
                              f"{FORMAT_VERSION}: remove the key to try it anyway, or use the sve release "
                              "that wrote it")
        data = {k: v for k, v in data.items() if k != "format_version"}
        allowed = [f.name for f in dataclasses.fields(cls)]
        for key in data:
            if key not in allowed:
                raise ConfigError(_unknown_message(str(key), str(key), allowed))
        return cls(**data)

    @classmethod
    def load(cls, path: str | os.PathLike) -> ExperimentConfig:
        """Read a ``.yaml``/``.yml`` or ``.json`` config file."""
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"config file {str(path)!r} does not exist: pass a .yaml or .json file "
                              "(examples in configs/)")
        text = path.read_text(encoding="utf-8")
        is_json = path.suffix.lower() == ".json"
        try:
            if is_json:
                data = json.loads(text)
            else:
                import yaml

                data = yaml.safe_load(text)
        except Exception as err:  # json.JSONDecodeError, yaml.YAMLError
            kind = "JSON" if is_json else "YAML"
            raise ConfigError(f"config file {str(path)!r} is not valid {kind}: {err}") from None
        return cls.from_dict(data or {})

    def save(self, path: str | os.PathLike) -> Path:
        """Write atomically as YAML (or JSON when the suffix is ``.json``), with ``format_version``."""
        path = Path(path)
        data = {"format_version": FORMAT_VERSION, **self.to_dict()}
        if path.suffix.lower() == ".json":
            text = json.dumps(data, indent=2)
        else:
            import yaml

            text = yaml.safe_dump(data, sort_keys=False)
        atomic_write(path, text)
        return path

    def with_overrides(self, assignments: Iterable[str]) -> ExperimentConfig:
        """A copy with ``key=value`` assignments applied (values parsed as YAML; ``a.b=v`` for nested
        dicts such as ``backbone_options.random=true``)."""
        import yaml

        data = self.to_dict()
        for item in assignments:
            if "=" not in item:
                raise ConfigError(f"override {item!r} is not of the form key=value (e.g. epochs=2)")
            key, raw = item.split("=", 1)
            try:
                value = yaml.safe_load(raw) if raw.strip() else ""
            except Exception as err:
                raise ConfigError(f"override {item!r}: the value is not valid YAML ({err})") from None
            parts = key.strip().split(".")
            target = data
            for part in parts[:-1]:
                if not isinstance(target.get(part), dict):
                    raise ConfigError(f"override {item!r}: {part!r} is not a mapping field")
                target = target[part]
            if len(parts) == 1 and parts[0] not in data:
                raise ConfigError(_unknown_message(parts[0], parts[0], list(data)))
            target[parts[-1]] = value
        return ExperimentConfig.from_dict(data)

    def fingerprint(self) -> str:
        """sha256 of the canonical JSON of the config: equal configs ⇔ equal fingerprints."""
        return hashlib.sha256(json.dumps(self.to_dict(), sort_keys=True).encode()).hexdigest()[:16]


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _need(name: str, value: Any, ok: Any, allowed: str) -> None:
    if not ok:
        raise ConfigError(f"config field {name!r} = {value!r} is invalid: allowed values are {allowed}")


def _choice(name: str, value: Any, allowed: Sequence[str]) -> None:
    if value not in allowed:
        hint = _did_you_mean(value, allowed)
        raise ConfigError(f"config field {name!r} = {value!r} is invalid{hint}: allowed values are "
                          + ", ".join(repr(a) for a in allowed))


def _float(name: str, value: Any, optional: bool = False, positive: bool = False) -> float | None:
    """A float field: numbers and numeric strings ('1e-3', which YAML 1.1 reads as a string)."""
    if value is None and optional:
        return None
    try:
        if isinstance(value, bool):
            raise TypeError
        number = float(value)
    except (TypeError, ValueError):
        number = float("nan")
    ok = number == number and (number > 0 if positive else number >= 0)
    allowed = ("null or " if optional else "") + ("a number > 0" if positive else "a number >= 0")
    _need(name, value, ok, allowed)
    return number


def _check_targets(name: str, value: Any) -> None:
    words = "'all', 'attention', 'mlp', 'last:K' (K an integer >= 1) or a list of module-name patterns"
    if isinstance(value, str):
        ok = value in TARGET_WORDS or re.fullmatch(r"last:[1-9]\d*", value) is not None
    else:
        ok = isinstance(value, list) and value and all(isinstance(v, str) and v for v in value)
    _need(name, value, ok, words)


def _did_you_mean(key: str, allowed: Sequence[str]) -> str:
    close = difflib.get_close_matches(str(key), [str(a) for a in allowed], n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _unknown_message(where: str, key: str, allowed: Sequence[str]) -> str:
    hint = _did_you_mean(key, allowed)
    return f"unknown config field {where!r}{hint}: allowed fields are " + ", ".join(allowed)


def _methods_module() -> Any:
    """``sve.methods``, or None while that module does not exist yet (see :func:`build_method`)."""
    import importlib
    import importlib.util

    if importlib.util.find_spec("sve.methods") is None:
        return None
    return importlib.import_module("sve.methods")


def _method_names() -> tuple[str, ...]:
    methods = _methods_module()
    return ("sve",) if methods is None else tuple(methods.METHODS)


def as_config(config: ExperimentConfig | dict | str | os.PathLike) -> ExperimentConfig:
    """Accept a config object, a mapping, or a path to a YAML/JSON file (or to a run folder)."""
    if isinstance(config, ExperimentConfig):
        return config
    if isinstance(config, dict):
        return ExperimentConfig.from_dict(config)
    path = Path(config)
    if path.is_dir():
        _check_format(path)
        return ExperimentConfig.load(path / "config.yaml")
    return ExperimentConfig.load(path)


# --------------------------------------------------------------------------------------------
# files: atomic writes


def atomic_write(path: str | os.PathLike, data: bytes | str | Callable[[io.BufferedWriter], Any]) -> Path:
    """Write ``data`` (bytes, text, or a function that writes into a binary file) to ``path``
    through a temporary file in the same folder + ``fsync`` + ``os.replace``: readers see either the
    old file or the complete new one."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    while True:  # like tempfile.mkstemp, but with the usual permissions (0o666 minus the umask)
        tmp = path.parent / f".{path.name}.{secrets.token_hex(4)}.tmp"
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o666)
            break
        except FileExistsError:
            continue
    try:
        with os.fdopen(fd, "wb") as f:
            if callable(data):
                data(f)
            else:
                f.write(data.encode("utf-8") if isinstance(data, str) else data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    return path


def write_json(path: str | os.PathLike, obj: Any) -> Path:
    return atomic_write(path, json.dumps(_jsonable(obj), indent=2, allow_nan=True))


def read_json(path: str | os.PathLike) -> Any:
    return json.loads(Path(path).read_text(encoding="utf-8"))


def write_npz(path: str | os.PathLike, arrays: dict[str, Any]) -> Path:
    """Atomically save a dict of arrays (tensors converted) as an uncompressed ``.npz``."""
    import numpy as np

    arrays = {k: np.asarray(v.detach().cpu() if hasattr(v, "detach") else v) for k, v in arrays.items()}
    return atomic_write(path, lambda f: np.savez(f, **arrays))


def _jsonable(obj: Any) -> Any:
    """Convert numpy/torch scalars and arrays, paths and tuples for ``json.dumps``."""
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, Path):
        return str(obj)
    if hasattr(obj, "tolist"):  # numpy / torch
        return obj.tolist()
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return _jsonable(dataclasses.asdict(obj))
    return obj


# --------------------------------------------------------------------------------------------
# run folders: unique ids, ownership lock, status


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", text).strip("-.")[:40] or "run"


def new_run_dir(root: str | os.PathLike, name: str) -> Path:
    """Create ``root/<YYYYmmdd-HHMMSS>-<name>-<6 hex>`` with ``exist_ok=False`` (retrying on the
    astronomically unlikely collision): a folder no other process can also have created."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    for _ in range(100):
        path = root / f"{time.strftime('%Y%m%d-%H%M%S')}-{_slug(name)}-{secrets.token_hex(3)}"
        try:
            path.mkdir(exist_ok=False)
            return path
        except FileExistsError:
            continue
    raise SVEError(f"could not create a new run folder under {str(root)!r}")


class RunLock:
    """Exclusive ownership of a run folder: a non-blocking ``flock`` on ``<run>/.lock``.

    The kernel drops the lock when its holder exits or is killed, so a held lock means a live run.
    ``acquire()`` returns False when another process (or another open of the file) holds it.
    On systems without ``fcntl`` it falls back to an ``O_EXCL`` marker file.
    """

    def __init__(self, run_dir: str | os.PathLike) -> None:
        self.path = Path(run_dir) / ".lock"
        self._fd: int | None = None

    def acquire(self) -> bool:
        try:
            import fcntl
        except ImportError:  # pragma: no cover - Windows
            try:
                self._fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
                return True
            except FileExistsError:
                return False
        fd = os.open(self.path, os.O_CREAT | os.O_RDWR, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            return False
        os.ftruncate(fd, 0)
        os.write(fd, str(os.getpid()).encode())
        self._fd = fd
        return True

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing drops the flock
            self._fd = None

    def held_elsewhere(self) -> bool:
        """True while another process owns the folder (probes and releases at once)."""
        if not self.path.exists():
            return False
        probe = RunLock(self.path.parent)
        if probe.acquire():
            probe.release()
            return False
        return True


def _check_format(run_dir: Path) -> None:
    """Raise :class:`RunFormatError` unless ``run_dir`` is a run folder of this format version."""
    config = run_dir / "config.yaml"
    if not config.is_file():
        raise RunFormatError(f"{str(run_dir)!r} is not a run folder (no config.yaml): pass a folder "
                             "made by sve.runs.run / `python -m sve run`, see `python -m sve list`")
    import yaml

    try:
        version = (yaml.safe_load(config.read_text(encoding="utf-8")) or {}).get("format_version")
    except Exception as err:
        raise RunFormatError(f"{str(config)!r} is unreadable ({err})") from None
    if version != FORMAT_VERSION:
        raise RunFormatError(
            f"run folder {str(run_dir)!r} has format_version {version!r}, but this sve "
            f"reads format_version {FORMAT_VERSION}: re-run its config with this version "
            "(`python -m sve run <run>/config.yaml`) or open it with the sve release that wrote it")


def read_status(run_dir: str | os.PathLike) -> dict:
    """``status.json`` of a run, with ``state`` reported as ``"interrupted"`` when the file says
    running but no live process owns the folder (the run was killed)."""
    run_dir = Path(run_dir)
    try:
        status = read_json(run_dir / "status.json")
    except (FileNotFoundError, ValueError):
        status = {"state": "unknown"}
    if status.get("state") == "running" and not RunLock(run_dir).held_elsewhere():
        status["state"] = "interrupted"
    return status


def _claim_resumable(root: Path, config: ExperimentConfig) -> tuple[Path, RunLock] | None:
    """Newest unfinished run under ``root`` with exactly this config and no live owner, locked."""
    if not root.is_dir():
        return None
    fingerprint = config.fingerprint()
    for path in sorted((p for p in root.iterdir() if p.is_dir()), reverse=True):
        try:
            _check_format(path)
            status = read_json(path / "status.json")
            same = ExperimentConfig.load(path / "config.yaml").fingerprint() == fingerprint
        except (SVEError, OSError, ValueError):
            continue
        if same and status.get("state") != "complete":
            lock = RunLock(path)
            if lock.acquire():
                return path, lock
    return None


def list_runs(root: str | os.PathLike | None = None) -> list[dict]:
    """Run folders under ``root`` (default :func:`sve.paths.runs_dir`), newest first.

    Each item: ``path``, ``id``, ``name``, ``state`` (running / interrupted / stopped / failed /
    complete, or ``incompatible`` with the reason in ``error``), ``done`` and ``total`` method×seed
    pairs, ``created``, ``updated``.
    """
    from sve.paths import runs_dir

    root = Path(root) if root is not None else runs_dir()
    if not root.is_dir():
        return []
    items = []
    for path in (p for p in root.iterdir() if p.is_dir() and (p / "config.yaml").is_file()):
        item = {"path": path, "id": path.name, "name": None, "state": "incompatible", "done": 0,
                "total": None, "created": None, "updated": None, "error": None}
        try:
            _check_format(path)
            item["name"] = ExperimentConfig.load(path / "config.yaml").name
        except SVEError as err:
            item["error"] = str(err)
        else:
            status = read_status(path)
            item.update({k: status.get(k) for k in ("state", "total", "created", "updated", "error")})
            item["done"] = len(status.get("done", []))
        items.append(item)
    items.sort(key=lambda it: (it["created"] or "", it["id"]), reverse=True)
    return items


# --------------------------------------------------------------------------------------------
# environment and resources


def environment() -> dict:
    """Package versions, Python, platform, device, torch threads and the project's git commit."""
    import platform
    import subprocess
    import sys
    from importlib import metadata

    import torch

    from sve import __version__
    from sve.paths import project_root

    packages = {}
    for name in ("torch", "torchvision", "timm", "transformers", "accelerate", "safetensors", "numpy",
                 "pandas", "scikit-learn", "plotly", "kaleido", "tqdm", "pyyaml"):
        try:
            packages[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            packages[name] = None
    cuda = torch.cuda.is_available()
    env = {
        "sve": __version__, "python": sys.version.split()[0], "platform": platform.platform(),
        "packages": packages, "device": torch.cuda.get_device_name(0) if cuda else "cpu",
        "torch_threads": torch.get_num_threads(), "cpu_count": os.cpu_count(),
        "pid": os.getpid(), "started": _now(), "git": None,
    }
    root = project_root()
    if root is not None and (root / ".git").exists():
        def git(*args: str) -> str:
            return subprocess.run(["git", "-C", str(root), *args], capture_output=True, text=True,
                                  timeout=10).stdout.strip()
        with contextlib.suppress(OSError, subprocess.SubprocessError):
            env["git"] = {"commit": git("rev-parse", "HEAD") or None,
                          "dirty": bool(git("status", "--porcelain", "--untracked-files=no"))}
    return env


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S%z")


class PeakMemory:
    """Peak resident memory (RSS) of this process while the ``with`` block runs.

    A daemon thread samples RSS (psutil) every ``interval`` s; ``peak_mb`` is the largest sample,
    ``delta_mb`` = peak − RSS at entry: the extra memory the block needed. RSS sees torch's C++
    allocations, which ``tracemalloc`` does not; ``ru_maxrss`` is a lifetime maximum, so its delta
    reads 0 once an earlier method went higher. On CUDA, ``cuda_peak_mb`` is
    ``torch.cuda.max_memory_allocated`` over the block.
    """

    def __init__(self, interval: float = 0.05) -> None:
        self.interval = interval
        self.start_mb = self.peak_mb = 0.0
        self.cuda_peak_mb: float | None = None

    def _rss_mb(self) -> float:
        return self._proc.memory_info().rss / 2**20

    def __enter__(self) -> PeakMemory:
        import threading

        import psutil
        import torch

        self._proc = psutil.Process()
        self.start_mb = self.peak_mb = self._rss_mb()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        if torch.cuda.is_available():
            torch.cuda.reset_peak_memory_stats()
        return self

    def _sample(self) -> None:
        while not self._stop.wait(self.interval):
            self.peak_mb = max(self.peak_mb, self._rss_mb())

    def __exit__(self, *exc: Any) -> None:
        import torch

        self._stop.set()
        self._thread.join()
        self.peak_mb = max(self.peak_mb, self._rss_mb())
        if torch.cuda.is_available():
            self.cuda_peak_mb = torch.cuda.max_memory_allocated() / 2**20

    @property
    def delta_mb(self) -> float:
        return self.peak_mb - self.start_mb


# --------------------------------------------------------------------------------------------
# data: every eval set of a config, rebuilt deterministically


def split_names(config: ExperimentConfig) -> list[str]:
    """Eval sets of a run, in order: ``test``, ``val``, ``ood:<name>`` (``ood:holdout`` for the
    held-out classes), ``shift:<corruption>:<severity>``."""
    names = ["test", "val"] + [f"ood:{_ood_key(n)}" for n in config.ood]
    if config.holdout:
        names.append("ood:holdout")
    names += [f"shift:{kind}:{sev}" for kind in config.shifts for sev in config.severities]
    return names


def _ood_key(name: str) -> str:
    """Short key of an OOD set: the zoo name, or the file/folder name of a path."""
    return name if not Path(name).exists() else _slug(Path(name).stem)


def load_split(config: ExperimentConfig, split: str) -> Any:
    """The raw :class:`sve.data.Dataset` of ``split`` (``train`` or any of :func:`split_names`).

    ID splits come from ``config.dataset`` with ``seed=data_seed`` and the split's limit (held-out
    classes removed); ``ood:<name>`` is that set's test split (a user path: all of it), limited to
    ``ood_limit``, labels -1; ``ood:holdout`` is the held-out classes of the test split;
    ``shift:<kind>:<sev>`` is the test split corrupted with ``sve.data.corrupt`` (seed ``data_seed``).
    """
    from sve import data

    holdout = list(config.holdout) or None
    limits = {"train": config.train_limit, "val": config.val_limit, "test": config.test_limit}
    if split in limits:
        return data.load_dataset(config.dataset, split, seed=config.data_seed, limit=limits[split],
                                 holdout=holdout)
    kind, _, rest = split.partition(":")
    if kind == "ood" and rest == "holdout" and holdout:
        ood = data.load_dataset(config.dataset, "test", seed=config.data_seed, holdout=holdout).ood
        return ood if config.ood_limit is None else ood.subset(range(min(config.ood_limit, len(ood))))
    if kind == "ood":
        for name in config.ood:
            if _ood_key(name) == rest:
                part = "all" if Path(name).exists() else "test"
                return data.load_ood(name, part, seed=config.data_seed, limit=config.ood_limit)
    if kind == "shift":
        corruption, _, severity = rest.rpartition(":")
        if corruption in config.shifts and severity.isdigit() and int(severity) in config.severities:
            return data.corrupt(load_split(config, "test"), corruption, int(severity), seed=config.data_seed)
    raise ConfigError(f"split {split!r} is not part of this run; its splits are: train, "
                      + ", ".join(split_names(config)))


# --------------------------------------------------------------------------------------------
# methods


def _load_backbone(config: ExperimentConfig) -> Any:
    """``sve.backbones.load_backbone`` with ``image_size`` / ``max_length`` passed to zoo
    entries that take them (a timm ViT's position table depends on the input size)."""
    import inspect

    from sve import backbones

    options = dict(config.backbone_options)
    entry = backbones.ZOO.get(config.backbone)
    if entry is not None:
        accepted = inspect.signature(entry.loader).parameters
        for key in ("image_size", "max_length"):
            if getattr(config, key) is not None and key in accepted:
                options.setdefault(key, getattr(config, key))
    return backbones.load_backbone(config.backbone, **options)


#: methods whose ``init_std`` is SVE's singular-value jitter (the run-level ``init_std`` applies)
SVE_LIKE = ("sve", "svf")


def method_options(spec: MethodSpec, seed: int, config: ExperimentConfig) -> dict:
    """Options passed to ``sve.methods.build``: ``seed``, the run-level ``targets`` (to methods
    that take targets), ``init_std`` (to SVE-like methods), then the entry's own ``options``."""
    methods = _methods_module()
    accepted = methods.METHODS[spec.name].options if methods is not None else {"targets", "init_std"}
    options: dict[str, Any] = {"seed": seed}
    if "targets" in accepted:
        options["targets"] = config.targets
    if spec.name in SVE_LIKE:
        options["init_std"] = config.init_std
    return {**options, **spec.options}


def build_method(spec: MethodSpec, backbone: Any, num_classes: int, seed: int,
                 config: ExperimentConfig) -> Any:
    """The one place a method is built: ``sve.methods.build`` with :func:`method_options`.

    Until ``sve.methods`` exists, "sve" is built with ``sve.core.wrap`` directly (stand-in).
    """
    options = method_options(spec, seed, config)
    methods = _methods_module()
    if methods is None:  # stand-in until sve.methods lands
        from sve.core import wrap

        return wrap(backbone, spec.members, num_classes, **options)
    return methods.build(spec.name, backbone, spec.members, num_classes, **options)


def _default_lr(spec: MethodSpec) -> float | None:
    if spec.lr is not None:
        return spec.lr
    methods = _methods_module()
    return 1e-3 if methods is None else methods.default_lr(spec.name)


# --------------------------------------------------------------------------------------------
# evaluation: the metrics rows of one method × seed

#: columns of the OOD rows taken from ``sve.metrics.evaluate`` (ID = test, OOD = the set)
_OOD_PREFIXES = ("auroc_", "aupr_in_", "aupr_out_", "fpr95_")


def evaluate_logits(logits: dict[str, Any], labels: dict[str, Any], combine: str = "prob",
                    ) -> tuple[list[dict], dict[str, float]]:
    """Metrics rows for every eval set, for the ensemble and each member, before and after
    temperature scaling; and the temperatures.

    ``logits[split]`` is ``(N, M, C)``. Temperatures are fitted on ``val`` with
    ``sve.calibration.fit_temperature``: one for the ensemble's combined prediction, one per member
    on its own logits. Classification splits (test, val, shift:…) get ``sve.metrics.evaluate``'s
    columns; an ``ood:<name>`` row holds the OOD-detection columns (ID = test, OOD = that set) and
    ``mean_<score>`` = mean uncertainty *on the OOD set*. Members of a single model (M = 1) are not
    repeated as member rows.
    """
    import numpy as np

    from sve import metrics
    from sve.calibration import fit_temperature

    num_members = int(np.asarray(logits["test"]).shape[1])
    members = ["ensemble"] + ([str(m) for m in range(num_members)] if num_members > 1 else [])
    pick = {"ensemble": lambda z: z}
    for m in range(num_members if num_members > 1 else 0):
        pick[str(m)] = lambda z, m=m: z[:, m:m + 1]
    temperatures = {member: fit_temperature(pick[member](logits["val"]), labels["val"], combine=combine)
                    for member in members}
    scores = tuple(metrics.DEFAULT_SCORES)
    rows = []
    for calibration in ("none", "ts"):
        for member in members:
            t = temperatures[member] if calibration == "ts" else 1.0
            z = {split: np.asarray(pick[member](value), dtype=np.float64) / t
                 for split, value in logits.items()}
            for split in logits:
                row = {"split": split, "member": member, "calibration": calibration, "temperature": t,
                       "n": int(z[split].shape[0])}
                if split.startswith("ood:"):
                    table = metrics.evaluate(z["test"], labels["test"], z[split], combine=combine,
                                             scores=scores)
                    values = table.loc["ensemble"].to_dict()
                    row.update({k: v for k, v in values.items() if k.startswith(_OOD_PREFIXES)})
                    ood_scores = metrics.uncertainty_scores(z[split], scores, combine)
                    single = z[split].shape[1] == 1
                    for name, value in ood_scores.items():
                        skip = single and name in metrics.ENSEMBLE_ONLY_SCORES
                        row[f"mean_{name}"] = float("nan") if skip else float(value.mean())
                else:
                    table = metrics.evaluate(z[split], labels[split], combine=combine, scores=scores)
                    row.update(table.loc["ensemble"].to_dict())
                rows.append(row)
    return rows, temperatures


# --------------------------------------------------------------------------------------------
# one process working on one run folder


def run(config: ExperimentConfig | dict | str | os.PathLike, out_dir: str | os.PathLike | None = None,
        callbacks: Iterable[Callback] = (), resume: bool = True) -> Path:
    """Train and evaluate every method × seed of ``config``; return the run folder.

    ``out_dir``: the folder that holds run folders (default :func:`sve.paths.runs_dir`), or an
    existing run folder to continue. With ``resume=True`` an unfinished run of the same config
    under ``out_dir`` that no live process owns is continued (finished method × seed pairs are
    kept); otherwise a new folder is made. ``callbacks``: functions ``(event, info)`` called with the
    events :data:`EVENTS`; ``info`` always holds ``run_dir``, and from ``method_start`` on ``method``
    (the label), ``seed``, ``epochs``, ``steps``; ``step``/``epoch`` add the training loop's values.
    Returning ``False`` (or raising ``sve.train.StopTraining``) stops cleanly after the current
    step: finished pairs are kept, the unfinished one is discarded, ``status.json`` says ``stopped``.
    """
    config = as_config(config)
    config.validate()
    config.check_names()
    run_dir, lock = _open_run_dir(config, out_dir, resume)
    try:
        return _Runner(config, run_dir, list(callbacks)).execute()
    finally:
        lock.release()


def _open_run_dir(config: ExperimentConfig, out_dir: str | os.PathLike | None,
                  resume: bool) -> tuple[Path, RunLock]:
    from sve.paths import runs_dir

    if out_dir is not None and (Path(out_dir) / "config.yaml").is_file():  # an existing run folder
        run_dir = Path(out_dir)
        _check_format(run_dir)
        stored = ExperimentConfig.load(run_dir / "config.yaml").to_dict()
        differ = [k for k, v in config.to_dict().items() if stored.get(k) != v]
        if differ:
            raise ConfigError(f"run folder {str(run_dir)!r} was made with another config (fields {differ} "
                              "differ): continue it with its own config.yaml, or pass the folder that "
                              "holds runs as out_dir to start a new run")
        lock = RunLock(run_dir)
        if not lock.acquire():
            raise SVEError(f"run folder {str(run_dir)!r} is in use by another live process; wait for it "
                           "to finish or stop it first")
        return run_dir, lock
    root = Path(out_dir) if out_dir is not None else runs_dir()
    claimed = _claim_resumable(root, config) if resume else None
    if claimed is not None:
        return claimed
    run_dir = new_run_dir(root, config.name)
    lock = RunLock(run_dir)
    if not lock.acquire():  # pragma: no cover - a folder nobody else can know yet
        raise SVEError(f"could not lock the new run folder {str(run_dir)!r}")
    config.save(run_dir / "config.yaml")
    return run_dir, lock


class _RunData:
    """The backbone and every prepared split of a run, loaded once and shared by all methods."""

    def __init__(self, config: ExperimentConfig) -> None:
        from sve import data

        self.backbone = _load_backbone(config)
        raw = {name: load_split(config, name) for name in ["train", *split_names(config)]}
        self.num_classes = raw["train"].num_classes
        self.labels = {name: ds.labels for name, ds in raw.items()}
        self.prepared = {name: data.prepare(ds, self.backbone, image_size=config.image_size,
                                            max_length=config.max_length) for name, ds in raw.items()}


def _scalars(info: dict) -> dict:
    """The JSON-friendly scalar entries of a training-loop event."""
    out = {}
    for key, value in info.items():
        if hasattr(value, "item") and getattr(value, "ndim", 1) == 0:
            value = value.item()
        if isinstance(value, (int, float, str, bool)) or value is None:
            out[key] = value
    return out


def _spectra_of(model: Any) -> dict | None:
    """``sve.core.spectra(model)`` as numpy, or None for a model without SVE layers."""
    try:
        from sve.core import spectra

        result = spectra(model)
    except (SVEError, TypeError, ValueError, AttributeError):
        return None
    cpu = {name: (s.detach().cpu().numpy(), s0.detach().cpu().numpy()) for name, (s, s0) in result.items()}
    return cpu or None


def _parameter_counts(model: Any) -> dict:
    """``sve.core.count_parameters`` as a dict, plus ``trainable_params``: all trainable
    tensors (heads included) and ``overhead_pct``: 100·(trainable − heads)/base (see
    ``sve.core.ParameterCount``)."""
    from sve.core import count_parameters

    counts = dataclasses.asdict(count_parameters(model))
    return {"trainable_params": counts["trainable"], **counts}


class _Runner:
    """Works through the method × seed pairs of one run folder (which it owns)."""

    def __init__(self, config: ExperimentConfig, run_dir: Path, callbacks: list[Callback]) -> None:
        self.config, self.dir, self.callbacks = config, run_dir, callbacks
        self.pairs = [(spec, seed) for spec in config.method_specs() for seed in config.seeds]
        self.stop_requested = False
        try:
            self.status = read_json(run_dir / "status.json")
        except (FileNotFoundError, ValueError):
            self.status = {"created": _now()}

    # -- bookkeeping ---------------------------------------------------------------------------
    def emit(self, event: str, **info: Any) -> bool:
        """Call every callback; returning ``False`` or raising ``sve.train.StopTraining`` asks to
        stop. Returns True to go on."""
        from sve.train import StopTraining

        info = {"run_dir": self.dir, **info}
        for callback in self.callbacks:
            try:
                if callback(event, info) is False:
                    self.stop_requested = True
            except StopTraining:
                self.stop_requested = True
        return not self.stop_requested

    def pair_dir(self, spec: MethodSpec, seed: int) -> Path:
        return self.dir / spec.label / f"seed{seed}"

    def done_pairs(self) -> list[list]:
        return [[spec.label, seed] for spec, seed in self.pairs
                if (self.pair_dir(spec, seed) / "done.json").is_file()]

    def save_status(self, state: str, **extra: Any) -> None:
        self.status.update({"format_version": FORMAT_VERSION, "state": state, "pid": os.getpid(),
                            "updated": _now(), "done": self.done_pairs(), "total": len(self.pairs), **extra})
        write_json(self.dir / "status.json", self.status)

    def write_env(self) -> None:
        env = environment()
        with contextlib.suppress(FileNotFoundError, ValueError):
            old = read_json(self.dir / "env.json")
            env["previous"] = old.pop("previous", []) + [old]
        write_json(self.dir / "env.json", env)

    def write_metrics(self) -> None:
        """``metrics.csv``: the rows of every finished pair, in config order."""
        import pandas as pd

        rows = []
        for spec, seed in self.pairs:
            folder = self.pair_dir(spec, seed)
            if (folder / "done.json").is_file():
                rows += read_json(folder / "metrics.json")["rows"]
        table = pd.DataFrame(rows)
        last = [c for c in COST_COLUMNS if c in table.columns]
        table = table[[c for c in table.columns if c not in last] + last]
        atomic_write(self.dir / "metrics.csv", table.to_csv(index=False))

    # -- the run -------------------------------------------------------------------------------
    def execute(self) -> Path:
        self.status.pop("error", None)
        self.save_status("running", current=None)   # first: a listing never sees the state "unknown"
        self.write_env()
        try:
            done = len(self.done_pairs())
            go_on = self.emit("run_start", done=done, total=len(self.pairs), config=self.config)
            data = None
            for index, (spec, seed) in enumerate(self.pairs):
                if not go_on:
                    break
                if (self.pair_dir(spec, seed) / "done.json").is_file():
                    continue
                if data is None:  # loaded only when something is left to train
                    data = _RunData(self.config)
                go_on = self.train_pair(spec, seed, index, data)
            self.write_metrics()
        except Exception as err:
            self.save_status("failed", error=f"{type(err).__name__}: {err}", current=None)
            raise
        except BaseException:  # KeyboardInterrupt: the finished pairs stay valid
            self.save_status("stopped", error="interrupted", current=None)
            raise
        complete = len(self.done_pairs()) == len(self.pairs)
        self.save_status("complete" if complete else "stopped", current=None)
        self.emit("run_end", state=self.status["state"], done=len(self.status["done"]), total=len(self.pairs))
        return self.dir

    def train_pair(self, spec: MethodSpec, seed: int, index: int, data: _RunData) -> bool:
        """Train, evaluate and save one method × seed; False when a callback asked to stop."""
        import math

        from sve.train import fit, predict

        config, folder = self.config, self.pair_dir(spec, seed)
        _remove_pair(folder)  # leftovers of an attempt that did not finish
        folder.mkdir(parents=True)
        steps = math.ceil(len(data.prepared["train"]) / config.batch_size) * spec.epochs
        info = {"method": spec.label, "name": spec.name, "seed": seed, "index": index,
                "total": len(self.pairs), "epochs": spec.epochs, "steps": steps}
        self.save_status("running", current={"method": spec.label, "seed": seed, "epoch": 0})
        if not self.emit("method_start", **info):
            _remove_pair(folder)
            return False

        model = build_method(spec, data.backbone, data.num_classes, seed, config)
        recorder = _FitRecorder(self, model, info)
        with PeakMemory() as train_memory:
            start = time.perf_counter()
            result = fit(model, data.prepared["train"], data.prepared["val"], epochs=spec.epochs,
                         lr=_default_lr(spec), weight_decay=config.weight_decay,
                         warmup_epochs=min(config.warmup_epochs, spec.epochs), grad_clip=config.grad_clip,
                         batch_size=config.batch_size, seed=seed, callbacks=[recorder],
                         sigma_decay=spec.sigma_decay, combine=spec.combine, progress=False)
            train_time = time.perf_counter() - start
        if not recorder.finished(spec.epochs):  # a callback stopped training before the end
            _remove_pair(folder)
            return False

        with PeakMemory() as eval_memory:
            start = time.perf_counter()
            logits = {name: predict(model, data.prepared[name], batch_size=config.eval_batch_size)
                      for name in split_names(config)}
            eval_time = time.perf_counter() - start
        logits = {name: value.detach().cpu().float().numpy() for name, value in logits.items()}
        labels = {name: data.labels[name] for name in logits}
        rows, temperatures = evaluate_logits(logits, labels, combine=spec.combine)

        counts = _parameter_counts(model)
        n_eval = sum(len(v) for v in logits.values())
        cost = {**counts, "train_time_s": train_time, "eval_time_s": eval_time,
                "eval_ms_per_sample": 1000 * eval_time / max(n_eval, 1),
                "train_peak_rss_mb": train_memory.peak_mb, "train_rss_delta_mb": train_memory.delta_mb,
                "eval_peak_rss_mb": eval_memory.peak_mb, "eval_rss_delta_mb": eval_memory.delta_mb,
                "train_cuda_peak_mb": train_memory.cuda_peak_mb,
                "memory_method": "peak RSS sampled every 50 ms (psutil)"}
        base = {"method": spec.label, "base_method": spec.name, "seed": seed,
                "members": int(logits["test"].shape[1]), "combine": spec.combine,
                "sigma_decay": spec.sigma_decay}
        cost_columns = {k: cost[k] for k in COST_COLUMNS}
        rows = [{**base, **row, **cost_columns} for row in rows]

        arrays = dict(logits)
        arrays.update({f"labels:{name}": value for name, value in labels.items()})
        write_npz(folder / "logits.npz", arrays)
        write_json(folder / "metrics.json", {"rows": rows, "temperatures": temperatures})
        fit_summary = {"best_epoch": result.best_epoch, "best": result.best, "steps": result.steps,
                       "temperature": result.temperature, "stopped": result.stopped}
        write_json(folder / "history.json", {**recorder.history, "fit": fit_summary})
        if recorder.snapshots:
            write_npz(folder / "spectra.npz", _spectra_arrays(recorder.snapshots))
        cost["adapter"] = self.save_adapter(model, folder)
        write_json(folder / "cost.json", cost)
        write_json(folder / "done.json", {"method": spec.label, "seed": seed, "finished": _now(),
                                          "config": config.fingerprint()})
        self.write_metrics()
        self.save_status("running", current=None)
        test = next(r for r in rows if r["split"] == "test" and r["member"] == "ensemble"
                    and r["calibration"] == "none")
        summary = {k: test[k] for k in ("accuracy", "ece", "nll") if k in test}
        self.emit("method_end", **info, summary=summary, train_time_s=train_time)
        return not self.stop_requested

    def save_adapter(self, model: Any, folder: Path) -> str:
        """``adapter.safetensors`` via ``sve.core.save`` (temporary name, then renamed) unless its
        trainable tensors exceed ``adapter_max_mb``; returns what happened."""
        size_mb = sum(p.numel() * p.element_size() for p in model.parameters() if p.requires_grad) / 2**20
        limit = self.config.adapter_max_mb
        if limit is not None and size_mb > limit:
            return f"not saved: {size_mb:.0f} MB > adapter_max_mb {limit:g}"
        from sve.core import save

        tmp = folder / ".adapter.safetensors.tmp"
        try:
            save(model, tmp)
        except SVEError as err:  # a model sve.core cannot save
            tmp.unlink(missing_ok=True)
            return f"not saved: {err}"
        os.replace(tmp, folder / "adapter.safetensors")
        return "adapter.safetensors"


class _FitRecorder:
    """The ``sve.train.fit`` callback of one method × seed: keeps the step and epoch rows, takes a
    σ snapshot (``sve.core.spectra``) at init and after every epoch for SVE-like models, updates
    ``status.json`` per epoch and forwards the events to the run's callbacks."""

    def __init__(self, runner: _Runner, model: Any, info: dict) -> None:
        self.runner, self.model, self.info = runner, model, info
        self.history: dict[str, list] = {"step": [], "epoch": []}
        self.stopped_at_step = False
        first = _spectra_of(model)
        self.snapshots: list[tuple[int, int, dict]] = [] if first is None else [(0, 0, first)]

    def __call__(self, event: str, fit_info: dict) -> bool:
        record = _scalars(fit_info)
        if event == "step":  # fit counts steps within an epoch; here they run 1..steps over the method
            record["step_in_epoch"], record["step"] = record.get("step"), len(self.history["step"]) + 1
            self.history["step"].append(record)
            go_on = self.runner.emit("step", **{**self.info, **record})
            self.stopped_at_step |= not go_on
            return go_on
        if event == "epoch":
            self.history["epoch"].append(record)
            epoch, step = len(self.history["epoch"]), len(self.history["step"])
            if self.snapshots:
                self.snapshots.append((epoch, step, _spectra_of(self.model)))
            self.runner.save_status("running", current={"method": self.info["method"],
                                                        "seed": self.info["seed"], "epoch": epoch})
            return self.runner.emit("epoch", **{**self.info, **record})
        return not self.runner.stop_requested

    def finished(self, epochs: int) -> bool:
        """Whether every epoch ran to its end (no stop inside an epoch)."""
        return not self.stopped_at_step and len(self.history["epoch"]) == epochs


def _remove_pair(folder: Path) -> None:
    """Delete an unfinished method × seed folder (and its method folder if that is now empty)."""
    import shutil

    shutil.rmtree(folder, ignore_errors=True)
    with contextlib.suppress(OSError):
        folder.parent.rmdir()


def _spectra_arrays(snapshots: list[tuple[int, int, dict]]) -> dict[str, Any]:
    """spectra.npz: ``epochs`` and ``steps`` (E,) of the snapshots (0 = at init, then after each
    epoch), ``sigma/<layer>`` (E, M, r) and ``sigma0/<layer>`` (r,)."""
    import numpy as np

    arrays: dict[str, Any] = {"epochs": np.array([epoch for epoch, _, _ in snapshots]),
                              "steps": np.array([step for _, step, _ in snapshots])}
    for layer, (_, sigma0) in snapshots[0][2].items():
        arrays[f"sigma/{layer}"] = np.stack([snap[layer][0] for _, _, snap in snapshots])
        arrays[f"sigma0/{layer}"] = sigma0
    return arrays


# --------------------------------------------------------------------------------------------
# reading a run folder


class Run:
    """A run folder, read lazily: what notebooks, the app and ``sve report`` use.

    ``metrics`` (pandas) has one row per method × seed × eval set × member × calibration (see
    :func:`evaluate_logits`); ``member`` is ``"ensemble"`` or the member index as a string,
    ``calibration`` is ``"none"`` or ``"ts"`` (temperature-scaled). ``seed=None`` in the accessors
    means the first finished seed of that method.
    """

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        _check_format(self.path)
        self.config = ExperimentConfig.load(self.path / "config.yaml")
        self._metrics = None

    def __repr__(self) -> str:
        return f"Run({str(self.path)!r}, state={self.status.get('state')!r}, done={self.done})"

    @property
    def status(self) -> dict:
        return read_status(self.path)

    @property
    def env(self) -> dict:
        return read_json(self.path / "env.json") if (self.path / "env.json").is_file() else {}

    @property
    def done(self) -> list[tuple[str, int]]:
        """Finished (method label, seed) pairs, in config order."""
        return [(spec.label, seed) for spec in self.config.method_specs() for seed in self.config.seeds
                if (self.path / spec.label / f"seed{seed}" / "done.json").is_file()]

    @property
    def methods(self) -> list[str]:
        """Labels of the methods with at least one finished seed."""
        return list(dict.fromkeys(label for label, _ in self.done))

    @property
    def splits(self) -> list[str]:
        return split_names(self.config)

    @property
    def metrics(self) -> Any:
        import pandas as pd

        if self._metrics is None:
            path = self.path / "metrics.csv"
            if path.is_file() and path.stat().st_size > 1:
                self._metrics = pd.read_csv(path, dtype={"member": str, "method": str, "split": str})
            else:
                self._metrics = pd.DataFrame(columns=["method", "seed", "split", "member", "calibration"])
        return self._metrics

    def _folder(self, method: str, seed: int | None) -> Path:
        seeds = [s for label, s in self.done if label == method]
        if not seeds:
            raise ConfigError(f"method {method!r} has no finished seed in {str(self.path)!r}; finished: "
                              + (", ".join(f"{m}/seed{s}" for m, s in self.done) or "none"))
        if seed is None:
            seed = seeds[0]
        if seed not in seeds:
            raise ConfigError(f"seed {seed!r} of method {method!r} is not finished; finished seeds: {seeds}")
        return self.path / method / f"seed{seed}"

    def logits(self, method: str, seed: int | None = None, split: str = "test") -> tuple[Any, Any]:
        """``(logits (N, M, C) float32, labels (N,))`` of one eval set (labels -1 for OOD)."""
        import numpy as np

        with np.load(self._folder(method, seed) / "logits.npz") as npz:
            if split not in npz.files:
                raise ConfigError(f"split {split!r} is not in this run; its splits are: "
                                  + ", ".join(k for k in npz.files if not k.startswith("labels:")))
            return npz[split], npz[f"labels:{split}"]

    def temperature(self, method: str, seed: int | None = None, member: str = "ensemble") -> float:
        return read_json(self._folder(method, seed) / "metrics.json")["temperatures"][member]

    def history(self, method: str, seed: int | None = None) -> dict:
        """``{"step": DataFrame, "epoch": DataFrame, "fit": dict}`` from the training loop's events."""
        import pandas as pd

        data = read_json(self._folder(method, seed) / "history.json")
        return {"step": pd.DataFrame(data["step"]), "epoch": pd.DataFrame(data["epoch"]), "fit": data["fit"]}

    def cost(self, method: str, seed: int | None = None) -> dict:
        return read_json(self._folder(method, seed) / "cost.json")

    def spectra_history(self, method: str, seed: int | None = None,
                        by: str = "epoch") -> list[tuple[int, dict]]:
        """``[(epoch, {layer: (sigma (M, r), sigma0 (r,))}), ...]`` from epoch 0 (init) to the last
        (``by="step"``: keyed by the global training step instead); empty without SVE layers."""
        _choice("by", by, ("epoch", "step"))
        import numpy as np

        path = self._folder(method, seed) / "spectra.npz"
        if not path.is_file():
            return []
        with np.load(path) as npz:
            layers = [k[len("sigma/"):] for k in npz.files if k.startswith("sigma/")]
            stacks = {layer: (npz[f"sigma/{layer}"], npz[f"sigma0/{layer}"]) for layer in layers}
            epochs = npz[f"{by}s"].tolist()
        return [(epoch, {layer: (s[i], s0) for layer, (s, s0) in stacks.items()})
                for i, epoch in enumerate(epochs)]

    def spectra(self, method: str, seed: int | None = None) -> dict:
        """``{layer: (sigma (M, r), sigma0 (r,))}`` of the trained model (``{}`` without SVE
        layers): the input of ``sve.metrics.spectrum_diversity`` and the spectrum plots. ``fit``
        keeps the best validation epoch, so this is the snapshot after that epoch."""
        history = dict(self.spectra_history(method, seed))
        if not history:
            return {}
        best = self.history(method, seed)["fit"].get("best_epoch")
        return history.get(best + 1 if best is not None else max(history), history[max(history)])

    def samples(self, split: str) -> Any:
        """The raw :class:`sve.data.Dataset` (images or texts) of ``split``, rebuilt from the config;
        item i matches row i of ``logits(..., split)``."""
        return load_split(self.config, split)

    def figures(self, seed: int | None = None) -> dict[str, Any]:
        """The standard Plotly figures of the run, ``{file-safe name: figure}``."""
        return run_figures(self, seed)


def load_run(path: str | os.PathLike) -> Run:
    """Open a run folder (:class:`RunFormatError` if it is not one of this format version)."""
    return Run(path)


def run_figures(run: Run, seed: int | None = None) -> dict[str, Any]:
    """The standard figures of a run (first finished seed of each method unless ``seed``):

    reliability diagrams on test before/after temperature scaling, confidence histograms,
    risk–coverage curves, per OOD set the ROC curves of every method (predictive entropy, defined
    for single models too) and the four score histograms of the first ensemble method, accuracy /
    ECE / entropy versus shift severity (mean over corruptions; severity 0 = clean test), and for
    the first method with SVE layers its spectrum, deviation heatmap, member distances and σ drift
    over epochs; cost bars over methods.
    """
    from sve import metrics, plots

    methods = run.methods
    if not methods:
        return {}
    figs: dict[str, Any] = {}
    test = {m: run.logits(m, seed, "test") for m in methods}
    scaled = {m: (z / run.temperature(m, seed), y) for m, (z, y) in test.items()}
    figs["reliability_test"] = plots.reliability_diagram(test, title="Reliability on test")
    figs["reliability_test_ts"] = plots.reliability_diagram(
        scaled, title="Reliability on test, after temperature scaling")
    figs["confidence_test"] = plots.confidence_histogram({m: z for m, (z, _) in test.items()})
    figs["risk_coverage_test"] = plots.risk_coverage_curves(test)
    ensembles = [m for m in methods if test[m][0].shape[1] > 1]
    for split in (s for s in run.splits if s.startswith("ood:")):
        key = _slug(split.split(":", 1)[1])
        ood = {m: run.logits(m, seed, split)[0] for m in methods}
        figs[f"ood_{key}_roc"] = plots.roc_curves(
            {m: (metrics.entropy(test[m][0]), metrics.entropy(ood[m])) for m in methods},
            title=f"OOD detection: test vs {split[4:]} (predictive entropy)")
        if ensembles:
            m = ensembles[0]
            figs[f"ood_{key}_scores_{m}"] = plots.ood_histograms(
                {s: (metrics.uncertainty(test[m][0], s), metrics.uncertainty(ood[m], s))
                 for s in metrics.DEFAULT_SCORES}, title=f"{m}: test vs {split[4:]}")
    table = run.metrics
    shifted = table[table["split"].str.startswith("shift:")] if len(table) else table
    if len(shifted):
        rows = table[(table["member"] == "ensemble") & (table["calibration"] == "none")]
        rows = rows[rows["split"].str.startswith("shift:") | (rows["split"] == "test")].copy()
        rows["severity"] = [int(s.rsplit(":", 1)[1]) if s.startswith("shift:") else 0 for s in rows["split"]]
        curve = rows.groupby(["method", "severity"], sort=False)[["accuracy", "ece", "mean_entropy"]].mean()
        figs["shift"] = plots.shift_curves(curve.reset_index())
    sve_like = next((m for m in methods if run.spectra_history(m, seed)), None)
    if sve_like is not None:
        history = run.spectra_history(sve_like, seed)
        final = run.spectra(sve_like, seed)
        figs[f"spectrum_{sve_like}"] = plots.spectrum_plot(final)
        figs[f"spectrum_heatmap_{sve_like}"] = plots.spectrum_heatmap(final)
        if final[next(iter(final))][0].shape[0] > 1:
            figs[f"member_distances_{sve_like}"] = plots.member_distance_matrix(final)
        if len(history) > 1:
            figs[f"spectrum_history_{sve_like}"] = plots.spectrum_history(
                run.spectra_history(sve_like, seed, by="step"))
    if len(table):
        cost = table[(table["split"] == "test") & (table["member"] == "ensemble")]
        columns = ["trainable_params", "train_time_s", "train_peak_rss_mb"]
        cost = cost.groupby("method", sort=False)[columns].mean()
        cost.columns = ["params", "time_s", "memory_mb"]
        figs["cost"] = plots.cost_bars(cost.reset_index())
    return figs
