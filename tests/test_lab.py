"""The executed notebook copies (``notebooks/export.py``, ``make notebooks``) and the ``make lab`` command.

- every committed copy ``notebooks/executed/<nb>.ipynb`` was executed from the current source
  ``notebooks/<nb>.py``; a full- or medium-mode copy records exactly the results CSVs in
  ``notebooks/results/`` (sha256) and their ``mode`` column; a copy holds PNG figures, no Plotly
  JSON and no widget state;
- :func:`export.strip` and :func:`export.export` on a synthetic two-cell notebook (a real kernel);
- ``make lab-server`` adds ``--allow-root`` for root only (the browser test runs the server itself).
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
NB_DIR = ROOT / "notebooks"
COPIES = sorted((NB_DIR / "executed").glob("*.ipynb"))

nbformat = pytest.importorskip("nbformat")
pytest.importorskip("nbclient")
pytest.importorskip("jupytext")


@pytest.fixture(scope="module")
def export():
    sys.path.insert(0, str(NB_DIR))
    import export

    return export


def _outputs(nb):
    return [o for c in nb.cells if c.cell_type == "code" for o in c.outputs]


@pytest.mark.parametrize("path", COPIES, ids=lambda p: p.stem)
def test_executed_copy_is_in_step(path, export):
    nb = nbformat.read(path, as_version=4)
    meta = nb.metadata.get("sve_export")
    assert meta, f"{path.name}: not made by notebooks/export.py"
    source = NB_DIR / meta["source"]
    redo = f"{'QUICK=1 ' if meta['mode'] == 'quick' else ''}make notebooks NB={source.stem}"
    assert source.is_file() and source.stem == path.stem, f"{path.name}: no source {source.name}"
    assert meta["source_sha256"] == export.sha256(source), (
        f"{path.name} was executed from an older {source.name}; re-export it: {redo}")
    first = nb.cells[0]
    assert export.BANNER_TAG in first.metadata.get("tags", [])
    assert f"{meta['mode'].upper()} mode" in first.source
    if meta["mode"] == "quick":
        assert "not results" in first.source
    else:   # the copy and notebooks/results/ come from the same run
        results = export.results_files(NB_DIR / "results", source.stem)
        assert results and meta["results"] == results, (
            f"notebooks/results/{source.stem}*.csv changed after {path.name} was executed; re-export: {redo}")
        import pandas as pd

        for name in results:
            modes = set(pd.read_csv(NB_DIR / "results" / name)["mode"])
            assert modes == {meta["mode"]}, f"{name}: mode column {modes}, copy says {meta['mode']}"
    outputs = _outputs(nb)
    assert "widgets" not in nb.metadata
    kinds = {k for o in outputs for k in o.get("data", {})}
    assert kinds <= set(export.KEEP), f"{path.name}: outputs of {kinds - set(export.KEEP)}"
    if ".show()" in source.read_text():
        assert "image/png" in kinds, f"{path.name}: its figures are missing"


def test_strip_keeps_png_and_drops_plotly_widgets_timings(export):
    v4 = nbformat.v4
    cell = v4.new_code_cell("fig.show()", outputs=[
        v4.new_output("display_data", {"application/vnd.plotly.v1+json": {"data": []},
                                       "text/html": "<div>/tmp/out-x/fig</div>"}),
        v4.new_output("display_data", {"image/png": "iVBORw0KGgo="}),
        v4.new_output("display_data", {"application/vnd.jupyter.widget-view+json": {"model_id": "m"}}),
        v4.new_output("stream", name="stdout", text="saved /work/repo/notebooks/results/x.csv\n")])
    cell.metadata["execution"] = {"iopub.status.idle": "2026-01-01T00:00:00Z"}
    nb = v4.new_notebook(cells=[cell], metadata={"widgets": {"state": {}}})
    out = export.strip(nb, {"/tmp/out-x": "<out>", "/work/repo": "<repo>"})
    kept = out.cells[0].outputs
    assert [sorted(o.get("data", {})) for o in kept] == [["text/html"], ["image/png"], []]
    assert kept[0].data["text/html"] == "<div><out>/fig</div>" and kept[2].text.startswith("saved <repo>/")
    assert "widgets" not in out.metadata and "execution" not in out.cells[0].metadata
    assert len(nb.cells[0].outputs) == 4, "strip must not change its input"


def test_unknown_notebook_name_lists_the_known_ones(export):
    from sve.errors import UnknownNameError

    with pytest.raises(UnknownNameError, match="00_quickstart"):
        export.notebook_sources(["99_nothing"])
    assert [p.stem for p in export.notebook_sources(["02_ood.py"])] == ["02_ood"]


TINY = '''# %% [markdown]
# # Tiny

# %% tags=["parameters"]
QUICK = 0

# %%
import os
from pathlib import Path

import plotly.graph_objects as go
import sve
from tqdm.auto import tqdm  # without ipywidgets: a warning that the copy must not show

results = Path(os.environ["SVE_NB_OUT"]) / "results"
results.mkdir(parents=True)
(results / "99_tiny.csv").write_text("a,mode\\n1,quick\\n")
print(os.environ["QUICK"], Path(sve.__file__).parent, results)
go.Figure(go.Bar(y=[1, 3, 2])).show()
'''


@pytest.mark.skipif(not Path("/usr/bin/chromium").exists(), reason="PNG figures need chromium (kaleido)")
def test_export_writes_png_figures_and_records_results(export, tmp_path, monkeypatch):
    monkeypatch.setenv("PYDEVD_DISABLE_FILE_VALIDATION", "1")
    source = tmp_path / "99_tiny.py"
    source.write_text(TINY)
    target = export.export(source, tmp_path / "executed", quick=True, timeout=120)
    nb = nbformat.read(target, as_version=4)
    meta = nb.metadata["sve_export"]
    assert meta["mode"] == "quick" and meta["source_sha256"] == export.sha256(source)
    assert meta["results"] == {"99_tiny.csv": hashlib.sha256(b"a,mode\n1,quick\n").hexdigest()}
    assert "QUICK mode" in nb.cells[0].source and "QUICK=1 make notebooks NB=99_tiny" in nb.cells[0].source
    outputs = _outputs(nb)
    assert not [o.text for o in outputs if o.get("name") == "stderr"]
    printed = "".join(o.text for o in outputs if o.output_type == "stream")
    assert printed.split()[:3] == ["1", "<repo>/sve", "<out>/results"]   # this checkout's sve, paths hidden
    png = [o.data["image/png"] for o in outputs if "image/png" in o.get("data", {})]
    assert len(png) == 1 and png[0].startswith("iVBORw0KGgo")                 # base64 of a PNG header
    assert not any("plotly" in k for o in outputs for k in o.get("data", {}))
    assert "jupytext" not in nb.metadata and os.environ.get("PLOTLY_RENDERER") != "png"


def _lab_command(*prefix: str) -> str:
    return subprocess.run([*prefix, "make", "-n", "--no-print-directory", "lab-server", "BIN=/venv/bin"],
                          cwd=ROOT, capture_output=True, text=True, check=True).stdout


@pytest.mark.skipif(shutil.which("make") is None, reason="needs GNU make")
def test_lab_server_allows_root_only_for_root():
    command = _lab_command()
    assert "/venv/bin/jupyter lab" in command
    settings = ROOT / ".jupyter" / "lab" / "settings"
    assert f'--LabApp.app_settings_dir="{settings}"' in command
    json5 = pytest.importorskip("json5")
    viewers = json5.loads((settings / "overrides.json5").read_text())[
        "@jupyterlab/docmanager-extension:plugin"]["defaultViewers"]
    assert viewers["python"] == "Jupytext Notebook"
    assert ("--allow-root" in command) == (os.getuid() == 0)
    if os.getuid() == 0 and shutil.which("setpriv"):                        # and as a normal user
        nobody = ("setpriv", "--reuid=65534", "--regid=65534", "--clear-groups")
        assert "--allow-root" not in _lab_command(*nobody)
