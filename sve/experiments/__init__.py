"""Experiments: one config → trained methods → a run folder, read back by one results API.

- ``config``: :class:`ExperimentConfig` / :class:`MethodSpec` (YAML → validated config);
- ``store``: run folders on disk (atomic files, the owner lock, status, ``list_runs``);
- ``runner``: ``run(config)`` trains and evaluates every method × seed (resumable);
- ``results``: :class:`Run` (``load_run``) — metrics, logits, histories, spectra, costs, figures —
  used by the app, the notebooks and the CLI alike.
"""

from sve.experiments.config import COMBINE, SIGMA_DECAY, ExperimentConfig, MethodSpec, as_config
from sve.experiments.results import Run, list_runs, load_run, run_figures
from sve.experiments.runner import (
    COST_COLUMNS,
    EVENTS,
    SVE_LIKE,
    build_method,
    environment,
    evaluate_logits,
    load_split,
    method_options,
    run,
    split_names,
)
from sve.experiments.store import (
    FORMAT_VERSION,
    RunFormatError,
    RunLock,
    atomic_write,
    new_run_dir,
    read_json,
    read_status,
    write_json,
    write_npz,
)

__all__ = ["COMBINE", "SIGMA_DECAY", "ExperimentConfig", "MethodSpec", "as_config", "Run", "load_run",
           "run_figures", "COST_COLUMNS", "EVENTS", "SVE_LIKE", "build_method", "environment",
           "evaluate_logits", "load_split", "method_options", "run", "split_names", "FORMAT_VERSION",
           "RunFormatError", "RunLock", "atomic_write", "list_runs", "new_run_dir", "read_json",
           "read_status", "write_json", "write_npz"]
