"""The runner: ``run(config)`` trains every method × seed of an experiment config, evaluates each
on the test, validation, OOD and shifted sets, and writes the run folder (``sve.experiments.store``).

Conventions
- Logits are ``(N, M, C)`` (``M = 1`` for a single model); ``logits.npz`` holds one array per eval
  set (``test``, ``val``, ``ood:<name>``, ``shift:<corruption>:<severity>``) and the labels of each
  as ``labels:<set>`` (``-1`` for OOD).
- Runs resume: complete (method, seed) pairs are skipped.
"""
from __future__ import annotations

import contextlib
import dataclasses
import itertools
import os
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from sve.errors import ConfigError, SVEError
from sve.experiments.config import ExperimentConfig, MethodSpec, as_config
from sve.experiments.store import (
    FORMAT_VERSION,
    RunLock,
    atomic_write,
    check_format,
    new_run_dir,
    read_json,
    slug,
    write_json,
    write_npz,
)
from sve.methods import METHODS, build, default_lr

#: events sent to run callbacks, in order
EVENTS = ("run_start", "method_start", "step", "epoch", "method_end", "run_end")


#: cost.json entries repeated on every metrics row of a method × seed (the last columns)
COST_COLUMNS = ("trainable_params", "overhead_pct", "train_time_s", "train_peak_rss_mb", "eval_time_s")
#: key of ``fit``'s epoch info holding one validation NLL per member, for a model whose members train
#: (and are judged) independently; recorded as ``history.json["members"]``
def history_converged(history: dict) -> bool:
    """Whether one method × seed converged, by ``sve.stats.converged`` on its ``history.json``:
    member-wise (every member converged on its own validation NLL) when the epoch rows hold one
    per member (``member<m>_val_nll``: a deep ensemble of independently trained members, see
    ``sve.train.member_histories``), else on the epoch rows' ``val_nll`` (the combined prediction)."""
    from sve.stats import converged
    from sve.train import member_histories

    members = member_histories(history["epoch"])
    return converged(members if members else history["epoch"])


Callback = Callable[[str, dict], Any]


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
    return name if not Path(name).exists() else slug(Path(name).stem)


def load_split(config: ExperimentConfig, split: str, clean_test: Any = None) -> Any:
    """The raw :class:`sve.data.Dataset` of ``split`` (``train`` or any of :func:`split_names`).

    ID splits come from ``config.dataset`` with ``seed=data_seed`` and the split's limit (held-out
    classes removed); ``ood:<name>`` is that set's test split (a user path: all of it), limited to
    ``ood_limit``, labels -1; ``ood:holdout`` is the held-out classes of the test split;
    ``shift:<kind>:<sev>`` is the test split corrupted with ``sve.data.corrupt`` (seed ``data_seed``),
    or with ``shift_source`` set, read from the published corrupted files (:func:`_published_shift`).
    ``clean_test``: the already loaded ``test`` split, used by the shifted splits instead of loading
    it again (a run passes it once for all its corruption × severity sets).
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
            clean = load_split(config, "test") if clean_test is None else clean_test
            if config.shift_source is None:
                return data.corrupt(clean, corruption, int(severity), seed=config.data_seed)
            return _published_shift(config, corruption, int(severity), clean.classes)
    raise ConfigError(f"split {split!r} is not part of this run; its splits are: train, "
                      + ", ".join(split_names(config)))


def _published_shift(config: ExperimentConfig, corruption: str, severity: int, classes: list[str]) -> Any:
    """The test split read from the published corrupted files (``config.shift_source``): image i of
    ``<corruption>.npy``'s severity block is test image i corrupted, so the same limit and seed pick
    the same images as the clean ``test`` split. Its classes must be the run dataset's ``classes``."""
    from sve import data

    shifted = data.load_dataset(config.shift_source, "test", seed=config.data_seed, limit=config.test_limit,
                                corruption=corruption, severity=severity)
    if list(shifted.classes) != list(classes):
        raise ConfigError(f"config field 'shift_source' = {config.shift_source!r} holds the classes of "
                          f"{config.shift_source.removesuffix('-c')}, not those of the run's dataset "
                          f"{config.dataset!r}: use the corrupted copy of {config.dataset!r}'s own test set")
    return shifted


def run_backbone(config: ExperimentConfig) -> Any:
    """The backbone of a run: ``sve.backbones.load_backbone`` with ``image_size`` / ``max_length``
    passed to zoo entries that take them (a timm ViT's position table depends on the input size)."""
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
    accepted = METHODS[spec.name].options
    options: dict[str, Any] = {"seed": seed}
    if "targets" in accepted:
        options["targets"] = config.targets
    if spec.name in SVE_LIKE:
        options["init_std"] = config.init_std
    return {**options, **spec.options}


def build_method(spec: MethodSpec, backbone: Any, num_classes: int, seed: int,
                 config: ExperimentConfig) -> Any:
    """The one place a method is built: ``sve.methods.build`` with :func:`method_options` (for
    ``task: multiple_choice`` the heads are the answer-token rows of the LM head)."""
    options = method_options(spec, seed, config)
    if config.task == "multiple_choice":
        from sve.methods import answer_token_ids

        options.setdefault("answer_tokens", answer_token_ids(backbone.tokenizer, num_classes))
    return build(spec.name, backbone, spec.members, num_classes, **options)


def _default_lr(spec: MethodSpec) -> float | None:
    if spec.lr is not None:
        return spec.lr
    return default_lr(spec.name)


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
        check_format(run_dir)
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
    claimed = claim_resumable(root, config) if resume else None
    if claimed is not None:
        return claimed
    run_dir = new_run_dir(root, config.name)
    lock = RunLock(run_dir)
    if not lock.acquire():  # pragma: no cover - a folder nobody else can know yet
        raise SVEError(f"could not lock the new run folder {str(run_dir)!r}")
    config.save(run_dir / "config.yaml")
    return run_dir, lock


class _RunData:
    """The backbone and every prepared split of a run, loaded once and shared by all methods
    (``prepare_train=False``: the eval splits only, for evaluating an untrained model)."""

    def __init__(self, config: ExperimentConfig, prepare_train: bool = True) -> None:
        from sve import data

        self.backbone = run_backbone(config)
        raw = {name: load_split(config, name) for name in ("train", "test")}
        raw |= {name: load_split(config, name, clean_test=raw["test"])
                for name in split_names(config) if name not in raw}
        if config.task == "multiple_choice":  # lettered prompts; OOD texts get the ID choices
            from sve.methods import as_multiple_choice
            from sve.methods.multiple_choice import left_truncating

            left_truncating(self.backbone)
            choices = raw["train"].classes
            raw = {name: as_multiple_choice(ds, choices=choices, max_words=config.max_words)
                   for name, ds in raw.items()}
            self.example_prompt = raw["test"].texts[0]
        self.num_classes = raw["train"].num_classes
        self.labels = {name: ds.labels for name, ds in raw.items()}
        self.prepared = {name: data.prepare(ds, self.backbone, image_size=config.image_size,
                                            max_length=config.max_length)
                         for name, ds in raw.items() if prepare_train or name != "train"}


def zero_shot(config: ExperimentConfig | dict | str | os.PathLike) -> tuple[Any, str]:
    """A multiple-choice run's pretrained answers, nothing trained: the frozen trunk with the LM
    head's answer-token rows as its one head (``head_ensemble``, M = 1), on the run's own prompts
    and eval sets. Returns the metrics rows (as :func:`evaluate_logits` makes them; method
    ``zero_shot``, seed 0) and one test prompt, to show what the model reads."""
    import pandas as pd

    from sve.train import predict

    config = as_config(config)
    if config.task != "multiple_choice":
        raise ConfigError(f"zero_shot needs a config with task: multiple_choice (this one has "
                          f"task: {config.task}); its heads are the LM head's answer letters.")
    data = _RunData(config, prepare_train=False)
    spec = MethodSpec(name="head_ensemble", label="zero_shot", members=1, lr=None, epochs=1)
    model = build_method(spec, data.backbone, data.num_classes, 0, config)
    logits = {name: predict(model, prepared, batch_size=config.eval_batch_size).numpy()
              for name, prepared in data.prepared.items()}
    rows, _ = evaluate_logits(logits, {name: data.labels[name] for name in logits})
    table = pd.DataFrame(rows).assign(method="zero_shot", base_method="zero_shot", seed=0)
    return table, data.example_prompt


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
    """``sve.methods.spectra(model)`` as numpy, or None for a model without SVE layers."""
    try:
        from sve.methods import spectra

        result = spectra(model)
    except (SVEError, TypeError, ValueError, AttributeError):
        return None
    cpu = {name: (s.detach().cpu().numpy(), s0.detach().cpu().numpy()) for name, (s, s0) in result.items()}
    return cpu or None


def _parameter_counts(model: Any) -> dict:
    """``sve.accounting.count_parameters`` as a dict, plus ``trainable_params``: all trainable
    tensors (heads included) and ``overhead_pct``: 100·(trainable − heads)/base (see
    ``sve.accounting.ParameterCount``)."""
    from sve.accounting import count_parameters

    counts = dataclasses.asdict(count_parameters(model))
    return {"trainable_params": counts["trainable"], **counts}


class _Runner:
    """Works through the method × seed pairs of one run folder (which it owns)."""

    def __init__(self, config: ExperimentConfig, run_dir: Path, callbacks: list[Callback]) -> None:
        self.config, self.dir, self.callbacks = config, run_dir, callbacks
        # seed-major: a run stopped part-way holds whole seeds, each one a paired comparison
        self.pairs = [(spec, seed) for seed in config.seeds for spec in config.method_specs()]
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
        """``metrics.csv``: the rows of every finished pair, in config order (method by method)."""
        import pandas as pd

        rows = []
        for spec, seed in itertools.product(self.config.method_specs(), self.config.seeds):
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
        if not (self.dir / "backbone.json").is_file():  # which weights: pretrained or the random twin
            write_json(self.dir / "backbone.json", data.backbone.summary())
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
                         sigma_decay=spec.sigma_decay, combine=spec.combine, progress=False,
                         mixed_precision=config.mixed_precision, head_lr=config.head_lr)
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
        converged = history_converged(recorder.history)
        base = {"method": spec.label, "base_method": spec.name, "seed": seed,
                "members": int(logits["test"].shape[1]), "combine": spec.combine,
                "sigma_decay": spec.sigma_decay, "converged": converged}
        cost_columns = {k: cost[k] for k in COST_COLUMNS}
        rows = [{**base, **row, **cost_columns} for row in rows]

        arrays = dict(logits)
        arrays.update({f"labels:{name}": value for name, value in labels.items()})
        write_npz(folder / "logits.npz", arrays)
        write_json(folder / "metrics.json", {"rows": rows, "temperatures": temperatures})
        fit_summary = {"best_epoch": result.best_epoch, "best": result.best, "steps": result.steps,
                       "temperature": result.temperature, "stopped": result.stopped, "converged": converged,
                       "member_best_epochs": result.member_best_epochs,
                       "skipped_steps": result.skipped_steps, "warmup_epochs": result.warmup_epochs}
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
        """``adapter.safetensors`` via ``sve.io.save`` (temporary name, then renamed) unless its
        trainable tensors exceed ``adapter_max_mb``; returns what happened."""
        size_mb = sum(p.numel() * p.element_size() for p in model.parameters() if p.requires_grad) / 2**20
        limit = self.config.adapter_max_mb
        if limit is not None and size_mb > limit:
            return f"not saved: {size_mb:.0f} MB > adapter_max_mb {limit:g}"
        from sve.io import save

        tmp = folder / ".adapter.safetensors.tmp"
        try:
            save(model, tmp)
        except SVEError as err:  # a model sve.io cannot save
            tmp.unlink(missing_ok=True)
            return f"not saved: {err}"
        os.replace(tmp, folder / "adapter.safetensors")
        return "adapter.safetensors"


class _FitRecorder:
    """The ``sve.train.fit`` callback of one method × seed: keeps the step and epoch rows (and each
    member's validation NLL when ``fit`` reports them), takes a
    σ snapshot (``sve.methods.spectra``) at init and after every epoch for SVE-like models, updates
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


def claim_resumable(root: Path, config: ExperimentConfig) -> tuple[Path, RunLock] | None:
    """Newest unfinished run under ``root`` with exactly this config and no live owner, locked."""
    if not root.is_dir():
        return None
    fingerprint = config.fingerprint()
    for path in sorted((p for p in root.iterdir() if p.is_dir()), reverse=True):
        try:
            check_format(path)
            status = read_json(path / "status.json")
            same = ExperimentConfig.load(path / "config.yaml").fingerprint() == fingerprint
        except (SVEError, OSError, ValueError):
            continue
        if same and status.get("state") != "complete":
            lock = RunLock(path)
            if lock.acquire():
                return path, lock
    return None
