"""``make lab`` in a real browser: the jupytext notebooks open as notebooks, the executed copies show figures.

Starts the exact server of ``make lab`` (its ``lab-server`` target, run with this interpreter's
environment as ``BIN`` so that nothing is installed) on a free loopback port, as whoever runs the
tests (root here: the target must add ``--allow-root`` by itself). JupyterLab's user settings and
workspaces go to temporary folders, so only the project's ``.jupyter/lab/settings/overrides.json5``
decides the default viewer. Chromium (Debian's ``/usr/bin/chromium`` through Playwright, no
``playwright install``) double-clicks ``00_quickstart.py`` in the file browser and must get the
notebook view, not the text editor; then opens ``executed/00_quickstart.ipynb`` and waits for a
rendered PNG figure, saving ``artifacts/lab_notebook.png`` (the README's
``docs/screenshots/lab_notebook.png`` is a copy). The server is shut down through
its API, and no process it started may outlive the test.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import browser
import pytest

ROOT = Path(__file__).resolve().parents[1]
COPY = ROOT / "notebooks" / "executed" / "00_quickstart.ipynb"
ARTIFACTS = ROOT / "artifacts"
#: copied by hand to docs/screenshots/ (a test does not write into the source tree)
SCREENSHOT = ARTIFACTS / "lab_notebook.png"
LOG = ARTIFACTS / "lab-browser-test.log"
#: JupyterLab's first page load compiles nothing but is large; 2 shared cores can be slow
PAGE_TIMEOUT_MS = 45_000

pytestmark = browser.MARKS



def _marked_processes(marker: str) -> list[int]:
    """Pids of live processes whose environment holds ``SVE_LAB_TEST=<marker>`` (Linux /proc)."""
    needle = f"SVE_LAB_TEST={marker}".encode()
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError):
                if needle in (entry / "environ").read_bytes().split(b"\0"):
                    found.append(int(entry.name))
    return found


def _api(url: str, token: str, path: str, method: str = "GET") -> bytes:
    req = urllib.request.Request(f"{url}{path}", method=method, headers={"Authorization": f"token {token}"})
    with urllib.request.urlopen(req, timeout=5) as resp:
        return resp.read()


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    """``make lab-server`` on 127.0.0.1:<free port> with a random token; yields (url, token)."""
    port, token, marker = browser.free_port(), secrets.token_hex(16), secrets.token_hex(8)
    home = tmp_path_factory.mktemp("jupyter")
    env = {**os.environ, "SVE_LAB_TEST": marker, "HF_HUB_OFFLINE": "1",
           "JUPYTERLAB_SETTINGS_DIR": str(home / "user-settings"),
           "JUPYTERLAB_WORKSPACES_DIR": str(home / "workspaces"),
           "JUPYTER_RUNTIME_DIR": str(home / "runtime")}
    env.pop("MAKEFLAGS", None)
    ARTIFACTS.mkdir(exist_ok=True)
    log = open(LOG, "w")  # noqa: SIM115 - closed below
    proc = subprocess.Popen(
        ["make", "--no-print-directory", "lab-server", f"BIN={Path(sys.executable).parent}",
         f"LAB_PORT={port}", f"LAB_ARGS=--IdentityProvider.token={token}"],
        cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        browser.wait_for_server(proc, lambda: json.loads(_api(url, token, "/api/status")).get("started"),
                                f"`make lab-server` (see {LOG})")
        yield url, token
    finally:
        with contextlib.suppress(OSError, urllib.error.URLError):   # stops the kernels too
            _api(url, token, "/api/shutdown", method="POST")
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(10)
        log.close()
        deadline = time.monotonic() + 15
        while _marked_processes(marker) and time.monotonic() < deadline:
            time.sleep(0.3)
        stray = _marked_processes(marker)
        for pid in stray:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        assert not stray, f"processes left behind by the lab server: {stray}"


def _open(page, name: str) -> None:
    """Double-click ``name`` in JupyterLab's file browser (a file opens with its default viewer)."""
    item = page.locator(".jp-DirListing-item", has=page.get_by_text(name, exact=True))
    item.first.dblclick(timeout=PAGE_TIMEOUT_MS)


@pytest.mark.skipif(not COPY.is_file(), reason=f"no executed copy {COPY.relative_to(ROOT)}: "
                    "QUICK=1 make notebooks NB=00_quickstart")
def test_lab_opens_notebooks_and_shows_figures(lab):
    from playwright.sync_api import sync_playwright

    url, token = lab
    with sync_playwright() as p:
        ctx = browser.launch(p, 1400, 900)
        page = ctx.new_page()
        try:
            page.goto(f"{url}/?token={token}")          # as the link `make lab` prints; opens notebooks/
            _open(page, "00_quickstart.py")            # the jupytext source: notebook view by default
            opened = page.locator(".jp-NotebookPanel, .jp-FileEditor").filter(
                has=page.get_by_text("Quickstart: four singular"))
            opened.first.wait_for(timeout=PAGE_TIMEOUT_MS)
            assert page.locator(".jp-FileEditor").count() == 0, "00_quickstart.py opened in the text editor"
            assert page.locator(".jp-NotebookPanel").count() == 1

            _open(page, "executed")
            _open(page, "00_quickstart.ipynb")
            copy = page.locator(".jp-NotebookPanel:visible")
            banner = copy.locator(".jp-RenderedMarkdown").get_by_text("Executed copy, QUICK mode")
            banner.wait_for(timeout=PAGE_TIMEOUT_MS)
            image = copy.locator(".jp-RenderedImage img").first
            image.scroll_into_view_if_needed(timeout=PAGE_TIMEOUT_MS)
            image.wait_for(timeout=PAGE_TIMEOUT_MS)
            page.wait_for_function("img => img.complete && img.naturalWidth > 0", arg=image.element_handle(),
                                   timeout=PAGE_TIMEOUT_MS)
            page.screenshot(path=str(SCREENSHOT))
        except Exception:
            with contextlib.suppress(Exception):           # what the page showed, for CI logs
                page.screenshot(path=str(ARTIFACTS / "lab-failure.png"))
            raise
        finally:
            ctx.close()
