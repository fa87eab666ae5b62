"""Executed copies of the paper notebooks, so that a reader sees their results without running them.

``python notebooks/export.py [NAME ...]`` (``make notebooks NB="00_quickstart 02_ood"``) executes each
jupytext source ``notebooks/<NAME>.py`` in a fresh kernel with nbclient and writes
``notebooks/executed/<NAME>.ipynb`` with its outputs; no NAME: all ten notebooks.

Mode: as in ``nbtools`` — ``QUICK=1`` quick mode (tiny settings; tables and figures go to a
temporary folder), ``QUICK=0`` (default) full mode, ``QUICK=0 MEDIUM=1`` medium mode. Full and
medium mode rewrite ``notebooks/results/<NAME>*.csv`` and ``notebooks/figures/<NAME>/``, exactly as
running the notebook by hand does, so the copy and those files come from the same run.

What a copy holds (the repository stays lean):

- figures as PNG only: the kernel runs with ``PLOTLY_RENDERER=png``, so every ``fig.show()`` is drawn
  by kaleido and the system Chromium into an ``image/png`` output, never Plotly JSON;
- outputs of the mimetypes in :data:`KEEP` only (widget views, scripts and the like are dropped), no
  widget state, no execution timings, stream output coalesced; absolute paths of this checkout, of
  the temporary output folder and of the Python environment are replaced by ``<repo>``, ``<out>``
  and ``<venv>``; the kernel imports this checkout's ``sve`` (``PYTHONPATH``);
- a first markdown cell (:data:`BANNER_TAG`) naming the mode and the command that made it;
- notebook metadata ``sve_export``: ``mode``, ``source`` and its ``source_sha256``, ``results``
  (``{file name: sha256}`` of the results CSVs this run wrote), ``commit`` and ``executed`` (UTC).
  ``tests/test_notebook_export.py`` checks every committed copy against its source and, for full or
  medium mode, against ``notebooks/results/``.
"""

from __future__ import annotations

import argparse
import copy
import datetime as dt
import hashlib
import os
import subprocess
import sys
import tempfile
from collections.abc import Iterable, Sequence
from pathlib import Path

import jupytext
import nbclient
import nbformat

from sve.errors import SVEError, UnknownNameError
from sve.plots import find_browser

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
EXECUTED = HERE / "executed"
#: output mimetypes a copy keeps; everything else (Plotly JSON, widget views, JavaScript) is dropped
KEEP = ("text/plain", "text/html", "text/markdown", "text/latex", "image/png")
#: tag of the banner cell the export puts first
BANNER_TAG = "sve-export-banner"
#: wall-clock guard per cell (full mode trains in some cells)
CELL_TIMEOUT = 6 * 3600


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def notebook_sources(names: Iterable[str] = (), folder: Path = HERE) -> list[Path]:
    """The jupytext sources ``<folder>/<name>.py`` (all ``NN_*.py`` when ``names`` is empty)."""
    known = {p.stem: p for p in sorted(folder.glob("[0-9][0-9]_*.py"))}
    names = list(names) or list(known)
    unknown = [n for n in names if n.removesuffix(".py") not in known]
    if unknown:
        raise UnknownNameError(f"no notebook named {unknown} in {folder}; choose from {sorted(known)}.")
    return [known[n.removesuffix(".py")] for n in names]


def results_files(folder: Path, name: str) -> dict[str, str]:
    """``{file name: sha256}`` of notebook ``name``'s tables in ``folder``: ``<name>.csv`` and
    ``<name>_<suffix>.csv`` (the suffixes of ``nbtools.Outputs.save_table``)."""
    paths = [folder / f"{name}.csv", *folder.glob(f"{name}_*.csv")]
    return {p.name: sha256(p) for p in sorted(paths) if p.is_file()}


def strip(nb, replace: dict[str, str] | None = None):
    """A copy of ``nb`` fit to commit: outputs of the :data:`KEEP` mimetypes only, no widget state,
    no execution timings; each ``replace`` key (an absolute path) in text outputs becomes its value."""
    nb = copy.deepcopy(nb)
    nb.metadata.pop("widgets", None)
    pairs = sorted((replace or {}).items(), key=lambda kv: -len(kv[0]))   # longest path first

    def clean(text):
        joined = "".join(text) if isinstance(text, list) else text
        for old, new in pairs:
            joined = joined.replace(old, new)
        return joined

    for cell in nb.cells:
        cell.metadata.pop("execution", None)
        if cell.cell_type != "code":
            continue
        kept = []
        for out in cell.outputs:
            if out.output_type == "stream":
                out.text = clean(out.text)
            elif out.output_type in ("display_data", "execute_result"):
                out.data = {k: (clean(v) if k.startswith("text/") else v)
                            for k, v in out.data.items() if k in KEEP}
                out.metadata = {k: v for k, v in out.get("metadata", {}).items() if k in KEEP}
                if not out.data:
                    continue
            kept.append(out)
        cell.outputs = kept
    return nb


def _commit() -> str | None:
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True,
                              text=True, check=True).stdout.strip() or None
    except (OSError, subprocess.CalledProcessError):
        return None


def banner(name: str, mode: str, commit: str | None, executed: str) -> str:
    """The first cell of a copy: which mode, what that means, and the command that made it."""
    command = {"quick": "QUICK=1 ", "medium": "MEDIUM=1 ", "full": ""}[mode] + f"make notebooks NB={name}"
    meaning = {
        "quick": "tiny settings and one seed: these outputs only show that the notebook runs end to end; "
                 "**they are not results**.",
        "medium": f"the run that wrote `notebooks/results/{name}*.csv` in medium mode (smaller samples "
                  "than the committed config, same seeds).",
        "full": f"the run that wrote `notebooks/results/{name}*.csv` and `notebooks/figures/{name}/`.",
    }[mode]
    made = f"sve {commit}, " if commit else ""
    return (f"> **Executed copy, {mode.upper()} mode** — {meaning}\n>\n"
            f"> Made by `{command}` from `notebooks/{name}.py` ({made}{executed}). The `.py` file is the "
            "source to edit and run; this copy is overwritten by the next export.")


def export(source: Path, out_dir: Path = EXECUTED, quick: bool | None = None,
           timeout: int = CELL_TIMEOUT) -> Path:
    """Execute the jupytext notebook ``source`` and write ``<out_dir>/<name>.ipynb`` (see the module
    docstring); returns that path. ``quick`` defaults to ``$QUICK``."""
    name = source.stem
    quick = bool(int(os.environ.get("QUICK", 0))) if quick is None else quick
    mode = "quick" if quick else ("medium" if int(os.environ.get("MEDIUM", 0)) else "full")
    saved = {k: os.environ.get(k) for k in ("QUICK", "SVE_NB_OUT", "PLOTLY_RENDERER", "BROWSER_PATH",
                                            "PYTHONPATH", "PYTHONWARNINGS")}
    with tempfile.TemporaryDirectory(prefix="sve-export-") as tmp:
        # the kernel inherits this environment; it imports this checkout's sve, and tqdm's advice to
        # install ipywidgets (progress bars as widgets) has no place in a static copy
        path = os.pathsep.join(p for p in (str(ROOT), saved["PYTHONPATH"]) if p)
        warnings = ",".join(w for w in (saved["PYTHONWARNINGS"], "ignore:IProgress not found") if w)
        os.environ.update(QUICK=str(int(quick)), SVE_NB_OUT=tmp, PLOTLY_RENDERER="png",
                          BROWSER_PATH=find_browser(), PYTHONPATH=path, PYTHONWARNINGS=warnings)
        results_dir = Path(tmp) / "results" if quick else source.parent / "results"
        nb = jupytext.read(source)
        client = nbclient.NotebookClient(
            nb, timeout=timeout, kernel_name="python3", resources={"metadata": {"path": str(source.parent)}},
            record_timing=False, store_widget_state=False, coalesce_streams=True)
        try:
            client.execute()
        except nbclient.exceptions.CellExecutionError as err:
            raise SVEError(f"{source.name} failed in {mode} mode, so no copy was written; fix the "
                           f"notebook (the failing cell and its traceback follow):\n{err}") from err
        finally:
            for key, value in saved.items():
                if value is None:
                    os.environ.pop(key, None)
                else:
                    os.environ[key] = value
        results = results_files(results_dir, name)
        nb = strip(nb, {str(Path(tmp).resolve()): "<out>", tmp: "<out>", str(ROOT): "<repo>",
                        sys.prefix: "<venv>"})
    executed = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    commit = _commit()
    cell = nbformat.v4.new_markdown_cell(banner(name, mode, commit, executed))
    cell.metadata["tags"] = [BANNER_TAG]
    nb.cells.insert(0, cell)
    nb.metadata["sve_export"] = {"mode": mode, "source": source.name, "source_sha256": sha256(source),
                                 "results": results, "commit": commit, "executed": executed}
    nb.metadata.pop("jupytext", None)          # an unpaired copy, not a jupytext pair of the source
    out_dir.mkdir(parents=True, exist_ok=True)
    target = out_dir / f"{name}.ipynb"
    nbformat.write(nb, target)
    return target


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("names", nargs="*", help="notebooks to export (default: all), e.g. 00_quickstart")
    parser.add_argument("--out", type=Path, default=EXECUTED, help="folder of the executed copies")
    args = parser.parse_args(argv)
    try:
        for source in notebook_sources(args.names):
            print(f"executing {source.name} ...", flush=True)
            target = export(source, args.out)
            size = target.stat().st_size / 1024
            print(f"  wrote {target.relative_to(ROOT) if target.is_relative_to(ROOT) else target} "
                  f"({size:.0f} KiB)", flush=True)
    except SVEError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
