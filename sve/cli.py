"""The ``sve`` command line: ``python -m sve run|report|list|bundle`` (also the ``sve`` console script).

    sve run CONFIG [--out DIR] [--set key=value ...] [--new]   train + evaluate, write a run folder
    sve run CONFIG --check            validate CONFIG offline (names, sizes, sources; what would be
                                      downloaded) without loading weights or training
    sve run RUN_DIR                                            continue a killed / stopped run
    sve report RUN [--no-figures]     print the metrics table, export figures to RUN/figures/
    sve list [--root DIR]             the runs under DIR (default: runs/), newest first
    sve bundle --backbone NAME --dataset NAME --train N --test N --out DIR
                                      weights + data subset for a machine without the assets

``run`` continues an unfinished run of the same config under the same root unless ``--new`` is
given. Errors print one line on stderr and exit with code 2; ``--debug`` shows the traceback.
"""

from __future__ import annotations

import argparse
import io
import os
import sys
from pathlib import Path
from typing import Any

#: the ensemble metrics `report` prints per eval set (those present in the table)
REPORT_COLUMNS = ("accuracy", "nll", "brier", "ece", "auroc_entropy", "auroc_mutual_info",
                  "fpr95_mutual_info")


def _parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--debug", action="store_true", help="show the full traceback on errors")
    parser = argparse.ArgumentParser(prog="sve", description="Singular Value Ensembles: experiment runs.",
                                     parents=[common])
    sub = parser.add_subparsers(dest="command", required=True, metavar="{run,report,list,bundle}")

    p = sub.add_parser("run", parents=[common], help="train and evaluate the methods of a config",
                       description="Train every method x seed of CONFIG and write a run folder.")
    p.add_argument("config", help="a .yaml/.json config (see configs/), or a run folder to continue")
    p.add_argument("--out", help="folder that holds run folders (default: $SVE_RUNS or runs/)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config field, e.g. --set epochs=2 --set backbone_options.random=true")
    p.add_argument("--new", action="store_true", help="always start a new run folder (no resume)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.add_argument("--check", action="store_true",
                   help="only validate the config offline (names, sizes, that each source is known, what "
                        "would be downloaded); loads no weights, trains nothing")
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("report", parents=[common], help="print a run's metrics and export its figures",
                       description="Print the metrics table of RUN and export every figure to RUN/figures/.")
    p.add_argument("run", help="a run folder (see `sve list`)")
    p.add_argument("--formats", default="png,svg,pdf", help="figure formats (default: png,svg,pdf)")
    p.add_argument("--no-figures", action="store_true", help="only print the table")
    p.set_defaults(func=cmd_report)

    p = sub.add_parser("list", parents=[common], help="list run folders, newest first")
    p.add_argument("--root", help="folder that holds run folders (default: $SVE_RUNS or runs/)")
    p.set_defaults(func=cmd_list)
    _add_bundle_parser(sub, common)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point; returns the exit code (0 ok, 2 error, 130 interrupted)."""
    args = _parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print("sve: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        _silence_stdout()  # the reader (e.g. `| head`) left early: stop quietly, like other tools
        return 141
    except Exception as err:
        if args.debug:
            raise
        print(f"sve: error: {_one_line(err)}", file=sys.stderr)
        return 2


def _silence_stdout() -> None:
    """Point stdout at /dev/null so the interpreter's final flush does not raise again."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError, AttributeError, io.UnsupportedOperation):
        pass


def _one_line(err: BaseException) -> str:
    from sve.errors import SVEError

    text = " ".join(str(err).split()) or type(err).__name__
    if isinstance(err, (SVEError, FileNotFoundError)):
        return text
    return f"{type(err).__name__}: {text} (run with --debug for the traceback)"


# --------------------------------------------------------------------------------------------
# run


class Progress:
    """A ``sve.experiments`` callback drawing one tqdm bar per method × seed (on stderr)."""

    def __init__(self, enabled: bool = True) -> None:
        self.enabled = enabled
        self.bar: Any = None

    def __call__(self, event: str, info: dict) -> None:
        from tqdm.auto import tqdm

        if not self.enabled:
            return
        if event == "run_start":
            done, total = info.get("done", 0), info.get("total", 0)
            tqdm.write(f"run {info['run_dir']}: {done}/{total} method x seed done", file=sys.stderr)
        elif event == "method_start":
            self._close()
            self.bar = tqdm(total=info.get("steps"), desc=f"{info['method']} seed{info['seed']}",
                            unit="step", file=sys.stderr, dynamic_ncols=True, leave=True)
        elif event == "step" and self.bar is not None:
            self.bar.update(1)
            if "loss" in info:
                self.bar.set_postfix(epoch=info.get("epoch"), loss=f"{info['loss']:.4f}", refresh=False)
        elif event == "method_end":
            self._close()
            summary = ", ".join(f"{k} {v:.4g}" for k, v in info.get("summary", {}).items())
            tqdm.write(f"{info['method']} seed{info['seed']} done ({summary})", file=sys.stderr)
        elif event == "run_end":
            self._close()

    def _close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None


def cmd_run(args: argparse.Namespace) -> int:
    from sve import experiments

    target = Path(args.config)
    config = experiments.as_config(target)
    if args.set:
        config = config.with_overrides(args.set)
    if args.check:
        for line in check_config(config, source=str(target)):
            print(line)
        return 0
    out = target if target.is_dir() else args.out
    progress = Progress(not args.no_progress)
    path = experiments.run(config, out_dir=out, callbacks=[progress], resume=not args.new)
    state = experiments.read_status(path).get("state")
    print(path)
    if state != "complete":
        print(f"sve: run is {state}; continue it with: python -m sve run {path}", file=sys.stderr)
    return 0


def check_config(config: Any, source: str = "config") -> list[str]:
    """Validate ``config`` offline without loading weights or data: every name against its registry
    (backbone via ``sve.backbones.describe_source``, datasets via ``sve.data.list_datasets``, shifts,
    methods and their options), sizes, the task against the backbone; returns the report lines
    (what is used, where each source's files are, what would be downloaded). Raises the first
    problem as an ``SVEError`` naming the field and the fix."""
    from sve import backbones
    from sve.errors import ConfigError

    config.validate()
    config.check_names()
    source_info = backbones.describe_source(config.backbone, **config.backbone_options)
    zoo_decoder = source_info["kind"] != "zoo" or "decoder" in backbones.list_backbones()[config.backbone]
    if config.task == "multiple_choice" and not zoo_decoder:  # the zoo says which entries are decoder LMs
        raise ConfigError(f"config field 'task' = 'multiple_choice' needs a decoder LM backbone (e.g. "
                          f"smollm2-135m or hf:<causal LM>), not {config.backbone!r}")
    specs = config.method_specs()
    where = "on this machine" if source_info["local"] else "NOT on this machine"
    kind = "pretrained" if source_info["pretrained"] else "random init"
    lines = [f"{source}: ok (nothing loaded, nothing trained)",
             f"  name        {config.name}  (task {config.task})",
             f"  backbone    {config.backbone}  ({kind}; weights: {source_info['weights']}, {where})"]
    sizes = [f"image_size {config.image_size}" if config.image_size else "",
             f"max_length {config.max_length}" if config.max_length else "",
             f"batch {config.batch_size}", f"epochs {config.epochs} (warm-up {config.warmup_epochs})",
             f"seeds {config.seeds}"]
    lines.append("  sizes       " + ", ".join(x for x in sizes if x))
    limits = {k: getattr(config, f"{k}_limit") for k in ("train", "val", "test", "ood")}
    lines.append("  limits      " + ", ".join(f"{k} {'all' if v is None else v}" for k, v in limits.items()))
    downloads = [f"backbone: {source_info['download']}"] if source_info["download"] else []
    for role, name in [("dataset", config.dataset)] + [(f"ood[{i}]", n) for i, n in enumerate(config.ood)]:
        text, fetch = _data_source(name)
        lines.append(f"  {role:<11} {name}: {text}")
        if fetch:
            downloads.append(f"{role} {name}: {fetch}")
    if config.shifts:
        made = "sve.data.corrupt on the test split" if config.shift_source is None else config.shift_source
        lines.append(f"  shifts      {', '.join(config.shifts)} at severities {config.severities} ({made})")
        if config.shift_source is not None:
            text, fetch = _data_source(config.shift_source)
            lines.append(f"  shift data  {config.shift_source}: {text}")
            if fetch:
                downloads.append(f"shift_source {config.shift_source}: {fetch}")
    for spec in specs:
        lr = spec.lr if spec.lr is not None else _method_lr(spec.name)
        members = _method_members(spec.name, spec.members)
        extra = f", options {spec.options}" if spec.options else ""
        heads = f" (heads {config.head_lr:g})" if config.head_lr is not None else ""
        lines.append(f"  method      {spec.label}: {spec.name}, M = {members}, lr {lr:g}{heads}, "
                     f"epochs {spec.epochs}{extra}")
    nothing = "none (everything is on this machine)"
    lines.append("  downloads   " + ("; ".join(downloads) if downloads else nothing))
    return lines


def _method_lr(name: str) -> float:
    from sve.methods import default_lr

    return default_lr(name)


def _method_members(name: str, members: int) -> int:
    from sve.methods import METHODS

    return METHODS[name].members or members


def _data_source(name: str) -> tuple[str, str | None]:
    """(what a dataset name is and where its files are, what would be downloaded or None)."""
    from sve import data

    if Path(name).exists():
        return f"a local {'folder' if Path(name).is_dir() else 'file'}", None
    sources = getattr(data, "SOURCES", {})  # the real datasets read from the user's files
    if name in sources:
        src = sources[name]
        folder = src.folder(None)
        present = (folder / src.marker).exists()
        if present:
            return f"files found in {folder}", None
        where = f"looked in {folder}; set ${src.env} or $SVE_DATA_ROOT, or pass root="
        if src.fetch is None:  # e.g. the published CIFAR-C folders: no downloader, the user brings them
            return f"files not found ({where}; no download: layout {src.layout})", None
        return (f"files not found ({where})",
                f"into {folder} (download=True or $SVE_DATA_DOWNLOAD=1; needs a network)")
    return "offline zoo dataset (ships with a pip / Debian package)", None


# --------------------------------------------------------------------------------------------
# report


def summary_table(metrics: Any) -> Any:
    """Ensemble rows, mean ± std over seeds, one row per method × eval set × calibration: the
    results API of ``sve.experiments.results`` (``rows``, ``mean_std``, ``pm``), as in the app and
    the notebooks."""
    from sve.experiments import results

    part = results.rows(metrics, split=None, calibration=None)
    columns = [c for c in REPORT_COLUMNS if c in part.columns and part[c].notna().any()]
    summary = results.mean_std(part, columns, by=["method", "split", "calibration"])
    return results.pm(summary, digits=4).rename(columns={"n_seeds": "seeds"})


def convergence_line(metrics: Any) -> str:
    """``converged: sve 3/3 seeds, single 2/3 seeds`` (``sve.stats.converged`` per method × seed)."""
    from sve.experiments import results

    flags = results.rows(metrics).groupby("method", sort=False)["converged"]
    return "converged (sve.stats rule): " + ", ".join(
        f"{method} {int(v.sum())}/{len(v)} seeds" for method, v in flags)


def cmd_report(args: argparse.Namespace) -> int:
    import pandas as pd

    from sve import experiments

    run = experiments.load_run(args.run)
    if run.metrics.empty:
        print(f"sve: run {run.path} has no finished method yet (state: {run.status.get('state')})",
              file=sys.stderr)
        return 0
    with pd.option_context("display.width", 200, "display.max_rows", 500, "display.max_columns", 50):
        print(summary_table(run.metrics).to_string(sparsify=False))   # every key on every line
    print(convergence_line(run.metrics))
    print(f"full table: {run.path / 'metrics.csv'}")
    if not args.no_figures:
        from sve import plots

        formats = tuple(f.strip() for f in args.formats.split(",") if f.strip())
        figures = run.figures()
        written = plots.export(figures, run.path / "figures", formats=formats)
        print(f"{len(figures)} figures exported to {run.path / 'figures'} ({len(written)} files)")
    return 0


# --------------------------------------------------------------------------------------------
# list


def cmd_list(args: argparse.Namespace) -> int:
    from sve import experiments
    from sve.paths import runs_dir

    root = Path(args.root) if args.root else runs_dir()
    items = experiments.list_runs(root)
    if not items:
        print(f"no runs under {root}")
        return 0
    width = max(len(it["id"]) for it in items)
    print(f"{'id':<{width}}  {'state':<12} {'done':>7}  name")
    for it in items:
        done = f"{it['done']}/{it['total'] if it['total'] is not None else '?'}"
        print(f"{it['id']:<{width}}  {it['state']:<12} {done:>7}  {it['name'] or ''}")
        if it["state"] == "incompatible":
            print(f"{'':<{width}}  {it['error']}")
    return 0


# --------------------------------------------------------------------------------------------
# bundle


def _add_bundle_parser(sub: Any, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser("bundle", parents=[common], help="write a portable backbone + data bundle",
                       description="Write a backbone's converted weights and a seeded subset of a dataset "
                                   "to DIR (sve.bundle), to train where the asset packages are missing "
                                   "(SVE_BUNDLE=DIR).")
    p.add_argument("--backbone", default="dinov2-small", help="a timm image backbone (default: dinov2-small)")
    p.add_argument("--dataset", default="fashion-mnist", help="an image dataset (default: fashion-mnist)")
    for split, n in (("train", 2048), ("val", 512), ("test", 2048)):
        p.add_argument(f"--{split}", type=int, default=n, metavar="N", help=f"{split} items (default: {n})")
    p.add_argument("--seed", type=int, default=0, help="the data split seed (default: 0)")
    p.add_argument("--image-size", type=int, default=224, help="default load size in px (default: 224)")
    p.add_argument("--dtype", default="float16", help="weight storage dtype (default: float16)")
    p.add_argument("--max-mb", type=float, default=50.0, help="refuse a bigger bundle (default: 50)")
    p.add_argument("--out", required=True, help="the bundle folder to write")
    p.add_argument("--force", action="store_true", help="replace --out if it exists")
    p.set_defaults(func=cmd_bundle)


def cmd_bundle(args: argparse.Namespace) -> int:
    from sve import bundle

    path = bundle.write(args.out, backbone=args.backbone, dataset=args.dataset, train=args.train,
                        val=args.val, test=args.test, seed=args.seed, image_size=args.image_size,
                        dtype=args.dtype, max_mb=args.max_mb, force=args.force)
    manifest = bundle.read_manifest(path, verify=())
    counts = ", ".join(f"{k} {v['count']}" for k, v in manifest["dataset"]["splits"].items())
    print(f"{path}: {manifest['backbone']['name']} ({manifest['backbone']['dtype']}), "
          f"{manifest['dataset']['name']} ({counts}), {manifest['total_mb']:.1f} MiB")
    print(f"use it with: SVE_BUNDLE={path}")
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
