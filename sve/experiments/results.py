"""Reading a run: :class:`Run` (metrics, logits, histories, spectra, costs) and its figures.

One query API over a run folder, used by the app, the notebooks and the CLI alike, so one run
shows one set of numbers everywhere.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from sve.errors import ConfigError, SVEError
from sve.experiments.config import ExperimentConfig
from sve.experiments.runner import load_split, split_names
from sve.experiments.store import check_format, read_json, read_status, slug


class Run:
    """A run folder, read lazily: what notebooks, the app and ``sve report`` use.

    ``metrics`` (pandas) has one row per method × seed × eval set × member × calibration (see
    :func:`evaluate_logits`); ``member`` is ``"ensemble"`` or the member index as a string,
    ``calibration`` is ``"none"`` or ``"ts"`` (temperature-scaled). ``seed=None`` in the accessors
    means the first finished seed of that method.
    """

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        check_format(self.path)
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
        if by not in ("epoch", "step"):
            raise ConfigError(f"by={by!r}: use 'epoch' or 'step'.")
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
        key = slug(split.split(":", 1)[1])
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
            check_format(path)
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
