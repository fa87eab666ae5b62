"""The experiment config: one YAML file → :class:`ExperimentConfig` (validated, with clear errors).

A config names a backbone, a dataset (+ OOD sets, corruptions), sizes, seeds, the training recipe
and a list of methods (:class:`MethodSpec`); ``run`` (``sve.experiments.runner``) trains every
method × seed of it.
"""
from __future__ import annotations

import dataclasses
import difflib
import hashlib
import json
import os
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sve.errors import ConfigError
from sve.experiments.store import FORMAT_VERSION, atomic_write, check_format
from sve.methods import METHODS
from sve.methods.multiple_choice import TASKS

COMBINE = ("prob", "logit")
#: training precision (``sve.train.fit(mixed_precision=...)``; null: the launcher's, else fp32)
MIXED_PRECISION = ("no", "fp16", "bf16")


SIGMA_DECAY = ("zero", "pretrained")
#: where ``shift:<corruption>:<severity>`` sets come from when not ``sve.data.corrupt``: the published
#: corrupted-CIFAR folders (``sve.data`` sources; their ``<corruption>.npy`` names)
SHIFT_SOURCES = ("cifar10-c", "cifar100-c")


TARGET_WORDS = ("all", "attention", "mlp")


METHOD_KEYS = ("name", "label", "members", "lr", "epochs", "sigma_decay", "combine", "options")


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
    ``task``: ``"classification"`` (a linear head per member on the pooled feature) or
    ``"multiple_choice"`` (decoder LMs: every split becomes lettered prompts and the heads are the
    LM head's answer-token rows, ``sve.methods.multiple_choice``; a classification text set is posed
    as a topic question, its texts cut to ``max_words`` words). Whether the backbone was pretrained
    or its random twin (``backbone_options: {random: true}``) is recorded in the run folder's
    ``backbone.json``.
    """

    name: str = "quick-demo"
    backbone: str = "dinov2-small"
    backbone_options: dict = field(default_factory=dict)
    dataset: str = "mnist5k"
    holdout: list[str] = field(default_factory=list)
    ood: list[str] = field(default_factory=lambda: ["animal-mnist"])
    shifts: list[str] = field(default_factory=list)
    shift_source: str | None = None
    severities: list[int] = field(default_factory=lambda: [1, 3, 5])
    methods: list[Any] = field(default_factory=lambda: ["sve"])
    members: int = 4
    epochs: int = 3
    warmup_epochs: int = 1
    batch_size: int = 16
    eval_batch_size: int = 64
    lr: float | None = None
    weight_decay: float = 0.05
    head_lr: float | None = None
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
    task: str = "classification"
    max_words: int | None = None
    mixed_precision: str | None = None

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
        _need("shift_source", self.shift_source, self.shift_source is None
              or (isinstance(self.shift_source, str) and self.shift_source in SHIFT_SOURCES),
              "null (corrupt the test split with sve.data.corrupt) or one of " + ", ".join(SHIFT_SOURCES))
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
        self.head_lr = _float("head_lr", self.head_lr, optional=True, positive=True)
        self.grad_clip = _float("grad_clip", self.grad_clip, optional=True, positive=True)
        self.init_std = _float("init_std", self.init_std)
        self.adapter_max_mb = _float("adapter_max_mb", self.adapter_max_mb, optional=True)
        check_choice("sigma_decay", self.sigma_decay, SIGMA_DECAY)
        check_choice("combine", self.combine, COMBINE)
        check_choice("task", self.task, TASKS)
        if self.mixed_precision is not None:
            check_choice("mixed_precision", self.mixed_precision, MIXED_PRECISION)
        _need("max_words", self.max_words, self.max_words is None or (_is_int(self.max_words)
              and self.max_words >= 1), "null or an integer >= 1")
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
            check_choice(f"{where}.sigma_decay", sigma_decay, SIGMA_DECAY)
            check_choice(f"{where}.combine", combine, COMBINE)
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
            hub = ("timm:<name>", "hf:<id>")
            check_choice("backbone", self.backbone, tuple(backbones.list_backbones()) + hub)
        known = tuple(data.list_datasets())
        if not Path(self.dataset).exists():
            check_choice("dataset", self.dataset, known + ("<image folder>", "<CSV path>"))
        for i, name in enumerate(self.ood):
            if not Path(name).exists():
                check_choice(f"ood[{i}]", name, known + ("<image folder>", "<CSV path>"))
        published = tuple(data.CIFAR_C_CORRUPTIONS)
        for i, name in enumerate(self.shifts):
            if self.shift_source is not None:  # the published files' corruption names
                check_choice(f"shifts[{i}]", name, published)
            else:
                check_choice(f"shifts[{i}]", name, tuple(data.CORRUPTIONS) + tuple(data.TEXT_CORRUPTIONS))
        for i, spec in enumerate(self.method_specs()):
            check_choice(f"methods[{i}].name", spec.name, tuple(METHODS))
            if "seed" in spec.options:
                raise ConfigError(f"config field 'methods[{i}].options' sets 'seed': use the run-level "
                                  "'seeds' list instead")
            accepted = list(METHODS[spec.name].options)
            for key in spec.options:
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


def check_choice(name: str, value: Any, allowed: Sequence[str]) -> None:
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


def as_config(config: ExperimentConfig | dict | str | os.PathLike) -> ExperimentConfig:
    """Accept a config object, a mapping, or a path to a YAML/JSON file (or to a run folder)."""
    if isinstance(config, ExperimentConfig):
        return config
    if isinstance(config, dict):
        return ExperimentConfig.from_dict(config)
    path = Path(config)
    if path.is_dir():
        check_format(path)
        return ExperimentConfig.load(path / "config.yaml")
    return ExperimentConfig.load(path)
