"""Downloads: every figure as PNG / SVG / PDF, tables as CSV, and one "download all" ZIP.

Files are produced only when a button is clicked (``st.download_button`` with a callable), through
``sve.plots.export`` (kaleido + the system Chromium, many figures per browser start). File names go
through ``safe_name``.
"""

from __future__ import annotations

import io
import tempfile
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import streamlit as st

from app.inputs import safe_name

FORMATS = ("png", "svg", "pdf")
MIME = {"png": "image/png", "svg": "image/svg+xml", "pdf": "application/pdf", "csv": "text/csv",
        "zip": "application/zip"}


def export_bytes(figs: dict[str, Any], formats: tuple[str, ...]) -> dict[str, bytes]:
    """``{safe file name: bytes}`` for every figure × format, in one batched export."""
    from sve import plots

    with tempfile.TemporaryDirectory(prefix="sve-export-") as tmp:
        named = {safe_name(name, "figure"): fig for name, fig in figs.items()}
        plots.export(named, tmp, formats=formats)
        return {p.name: p.read_bytes() for p in sorted(Path(tmp).rglob("*")) if p.is_file()}


def _one(fig: Any, name: str, fmt: str) -> Callable[[], bytes]:
    def make() -> bytes:
        files = export_bytes({name: fig}, (fmt,))
        return next(iter(files.values()))
    return make


def figure_buttons(fig: Any, name: str, key: str) -> None:
    """Three small download buttons (PNG, SVG, PDF) under a figure."""
    cols = st.columns(len(FORMATS) + 3)
    for col, fmt in zip(cols, FORMATS):
        col.download_button(fmt.upper(), data=_one(fig, name, fmt), file_name=f"{safe_name(name)}.{fmt}",
                            mime=MIME[fmt], key=f"dl-{key}-{fmt}", on_click="ignore",
                            icon=":material/download:")


def show(fig: Any, name: str, key: str) -> None:
    """Draw a Plotly figure with its download buttons."""
    st.plotly_chart(fig, key=f"fig-{key}")
    figure_buttons(fig, name, key)


def csv_text(table: Any) -> str:
    """CSV of a DataFrame; the index is written only when it is named (not the default 0..n-1)."""
    return table.to_csv(index=any(name is not None for name in table.index.names))


def csv_button(table: Any, name: str, key: str, label: str = "Metrics CSV") -> None:
    st.download_button(label, data=lambda: csv_text(table).encode(),
                       file_name=f"{safe_name(name)}.csv", mime=MIME["csv"], key=f"dl-{key}-csv",
                       on_click="ignore", icon=":material/table:")


def zip_bytes(figs: dict[str, Any], tables: dict[str, Any]) -> bytes:
    """A ZIP with every figure in every format and every table as CSV."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in export_bytes(figs, FORMATS).items():
            zf.writestr(f"figures/{name}", data)
        for name, table in tables.items():
            zf.writestr(f"{safe_name(name)}.csv", csv_text(table))
    return buf.getvalue()


def zip_button(figs: Callable[[], dict[str, Any]], tables: Callable[[], dict[str, Any]], name: str,
               key: str) -> None:
    """One "download all" button; the figures are built and exported only when it is clicked."""
    st.download_button("Download all (ZIP: figures as PNG/SVG/PDF + metrics CSV)",
                       data=lambda: zip_bytes(figs(), tables()), file_name=f"{safe_name(name)}.zip",
                       mime=MIME["zip"], key=f"dl-{key}-zip", on_click="ignore", type="primary",
                       icon=":material/folder_zip:")
