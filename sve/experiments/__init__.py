"""Experiments: one config → trained methods → a run folder, read back by one results API.

- ``config``: :class:`ExperimentConfig` / :class:`MethodSpec` (YAML → validated config);
- ``store``: run folders on disk (atomic files, the owner lock, status, ``list_runs``);
- ``runner``: ``run(config)`` trains and evaluates every method × seed (resumable);
- ``results``: :class:`Run` (``load_run``) — metrics, logits, histories, spectra, costs — and one
  query API over it (``rows``, ``mean_std``/``pm``, ``shift_table``, ``cost_table``, ``Run.claims``,
  every figure), used by the app, the notebooks and the CLI alike.
"""

from sve.experiments.config import COMBINE, SIGMA_DECAY, ExperimentConfig, MethodSpec, as_config
from sve.experiments.results import (
    CALIBRATION_COLUMNS,
    CLAIM_ROWS,
    SHIFT_COLUMNS,
    Run,
    cost_table,
    list_runs,
    load_run,
    mean_std,
    pm,
    reliability_figure,
    rows,
    run_figures,
    shift_table,
    spectrum_figures,
)
from sve.experiments.runner import (
    COST_COLUMNS,
    EVENTS,
    SVE_LIKE,
    build_method,
    environment,
    evaluate_logits,
    history_converged,
    load_split,
    method_options,
    run,
    split_names,
    zero_shot,
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
           "run_figures", "reliability_figure", "spectrum_figures", "rows", "mean_std", "pm", "shift_table",
           "cost_table", "CALIBRATION_COLUMNS", "CLAIM_ROWS", "SHIFT_COLUMNS", "COST_COLUMNS", "EVENTS",
           "SVE_LIKE",
           "build_method", "environment", "evaluate_logits", "history_converged", "load_split",
           "method_options", "run", "split_names", "zero_shot", "FORMAT_VERSION",
           "RunFormatError", "RunLock", "atomic_write", "list_runs", "new_run_dir", "read_json",
           "read_status", "write_json", "write_npz"]
