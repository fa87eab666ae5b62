"""The dashboard in a real browser: a live ``streamlit run`` server driven by Chromium (Playwright).

Starts the app on a free loopback port with ``SVE_RUNS`` in a temporary folder and the tiny preset
(``SVE_APP_TINY=1``; with ``SVE_BROWSER_QUICK=1`` the real Quick demo, as for the README shot),
presses Train, waits until the comparison the page opens on is drawn (reliability bars of SVE and the
single model side by side, their table and OOD ROC), opens every tab of the details, downloads one
SVG through the page, then predicts an uploaded image and an OOD sample on the Predict tab, and saves
full-page screenshots to ``artifacts/`` (the README's are copied from a ``SVE_BROWSER_QUICK=1`` run to
``docs/screenshots/``). Uses Debian's
``/usr/bin/chromium`` (no ``playwright install``); skipped only where it is absent.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
import urllib.request
from pathlib import Path

import browser
import pytest

ROOT = Path(__file__).resolve().parents[1]
APP = ROOT / "app" / "main.py"
ARTIFACTS = ROOT / "artifacts"
#: how long training may take before the charts must appear (2 shared CPU cores can be slow)
TRAIN_TIMEOUT_MS = 1000 * int(os.environ.get("SVE_BROWSER_TRAIN_TIMEOUT", "480"))
#: tab name -> text that only that tab shows once it has drawn
TAB_MARKERS = {"Reliability": "Temperature scaling", "Spectrum": "Per-layer diversity table",
               "OOD": "FPR at 95% TPR", "Members": "Mean pairwise disagreement",
               "Cost": "peak RSS while training"}

pytestmark = browser.MARKS



@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """``streamlit run app/main.py`` on 127.0.0.1:<free port>; the process group is ended after."""
    port = browser.free_port()
    runs = tmp_path_factory.mktemp("runs")
    ARTIFACTS.mkdir(exist_ok=True)
    log = open(ARTIFACTS / "streamlit-browser-test.log", "w")  # noqa: SIM115 - closed below
    env = {**os.environ, "SVE_RUNS": str(runs), "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    if not os.environ.get("SVE_BROWSER_QUICK"):   # SVE_BROWSER_QUICK=1: the real Quick demo (README shot)
        env["SVE_APP_TINY"] = "1"
    proc = subprocess.Popen(
        [sys.executable, "-m", "streamlit", "run", str(APP), "--server.headless=true",
         "--server.address=127.0.0.1", f"--server.port={port}", "--browser.gatherUsageStats=false",
         "--server.fileWatcherType=none"],
        cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        health = lambda: urllib.request.urlopen(f"{url}/_stcore/health", timeout=2).read() == b"ok"
        browser.wait_for_server(proc, health, f"streamlit (see {ARTIFACTS / 'streamlit-browser-test.log'})")
        yield url, runs
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(5)
        log.close()


_HEIGHT_JS = """() => Math.max(...[...document.querySelectorAll(
    '[data-testid="stMain"], [data-testid="stAppViewContainer"], [data-testid="stSidebarContent"]')]
    .map(e => e.scrollHeight))"""


def _screenshot(page, name: str) -> None:
    """A screenshot of the whole page: Streamlit scrolls inside a container, so ``full_page`` alone
    would stop at the viewport; grow the viewport to the content's height first."""
    size = page.viewport_size
    height = page.evaluate(_HEIGHT_JS)
    for _ in range(5):                     # images and charts can grow the page after a resize
        page.set_viewport_size({"width": size["width"], "height": int(height) + 40})
        page.wait_for_timeout(800)
        grown = page.evaluate(_HEIGHT_JS)
        if grown <= height + 5:
            break
        height = grown
    page.screenshot(path=str(ARTIFACTS / name), full_page=True)
    page.set_viewport_size(size)


def _no_errors(page) -> None:
    assert page.locator('[data-testid="stException"]').count() == 0, page.locator(
        '[data-testid="stException"]').first.inner_text()
    bad = page.get_by_text(re.compile("Cannot draw this tab|Cannot draw the comparison|Cannot predict"))
    assert bad.count() == 0, bad.first.inner_text()


def _digit_png(path: Path) -> Path:
    """A hand-drawn-looking 7 (white strokes on black, 56 px), as a user might upload."""
    from PIL import Image, ImageDraw

    pic = Image.new("L", (56, 56), 0)
    draw = ImageDraw.Draw(pic)
    draw.line([(14, 12), (42, 12), (26, 46)], fill=255, width=6)
    pic.save(path)
    return path


def _predict(page, source: str, shot: str) -> None:
    """Choose an input source on the Predict tab, wait for the member bars, take a screenshot."""
    page.get_by_text(source, exact=True).click()
    resized = page.get_by_text(re.compile(r"resized from 56×56 to \d+×\d+"))
    if source.startswith("Upload"):
        page.get_by_text("Upload an image to see").wait_for(timeout=60_000)
        page.locator('[data-testid="stFileUploaderDropzoneInput"]').set_input_files(
            str(_digit_png(ARTIFACTS / "digit-7.png")))
        resized.wait_for(timeout=60_000)          # the upload's own note: not a stale sample
    else:
        resized.wait_for(state="detached", timeout=60_000)
    page.get_by_text(re.compile(r"each member's class probabilities")).first.wait_for(timeout=60_000)
    page.get_by_text(re.compile(r"At the threshold that catches 95 %")).first.wait_for(timeout=60_000)
    bars = page.locator(".js-plotly-plot g.trace.bars g.point path").filter(visible=True)
    bars.first.wait_for(timeout=60_000)        # a class with probability 0 is a hidden zero-height bar
    page.wait_for_timeout(1500)
    _no_errors(page)
    _screenshot(page, shot)


def test_quick_demo_trains_and_draws_every_tab(server):
    from playwright.sync_api import sync_playwright

    url, runs = server
    with sync_playwright() as p:
        ctx = browser.launch(p, 1400, 1100, accept_downloads=True)
        try:
            page = ctx.new_page()
            page.goto(url)
            page.get_by_text("No runs yet").wait_for(timeout=60_000)
            page.get_by_role("button", name="Train", exact=True).click()
            page.locator('[data-testid="stProgress"]').wait_for(timeout=60_000)
            finished = page.get_by_text("Training finished")
            stepping = page.get_by_text(re.compile(r"step [1-9]\d*/\d+")).or_(finished)
            stepping.first.wait_for(timeout=TRAIN_TIMEOUT_MS)
            page.locator(".js-plotly-plot").first.wait_for(timeout=60_000)   # the live curve
            _screenshot(page, "dashboard_training.png")
            # the run ends, the picker selects it and the comparison draws both methods' bars
            # (visible=True: an empty bin is a zero-height path, which Playwright calls hidden)
            finished.wait_for(timeout=TRAIN_TIMEOUT_MS)
            page.get_by_text("Best score per method").wait_for(timeout=60_000)
            bars = page.locator(".js-plotly-plot g.trace.bars g.point path").filter(visible=True)
            bars.first.wait_for(timeout=60_000)
            page.get_by_text(re.compile(r"single · ECE")).first.wait_for(timeout=60_000)
            page.wait_for_timeout(1500)
            _no_errors(page)
            assert page.get_by_text("Training finished").count() == 1
            assert page.get_by_text(re.compile(r"sve · ECE")).count() >= 1
            assert len([d for d in runs.iterdir() if (d / "config.yaml").is_file()]) == 1
            _screenshot(page, "dashboard.png")

            page.get_by_role("tab", name="Details").click()
            for tab, marker in TAB_MARKERS.items():
                page.get_by_role("tab", name=tab).click()
                page.get_by_text(marker).first.wait_for(timeout=60_000)
                page.locator(".js-plotly-plot .main-svg").first.wait_for(timeout=60_000)
                page.wait_for_timeout(1200)
                _no_errors(page)
                _screenshot(page, f"dashboard_{tab.lower()}.png")

            with page.expect_download(timeout=90_000) as download:
                page.get_by_role("button", name="SVG", exact=True).first.click()
            target = ARTIFACTS / download.value.suggested_filename
            download.value.save_as(target)
            assert target.suffix == ".svg" and "/" not in download.value.suggested_filename
            head = target.read_text(errors="replace")[:400]
            assert "<svg" in head, head

            page.get_by_role("tab", name="Predict").click()
            _predict(page, "Upload an image", "dashboard_predict_upload.png")
            _predict(page, "OOD sample", "dashboard_predict_ood.png")
        except Exception:
            with contextlib.suppress(Exception):           # what the page showed, for CI logs
                page.screenshot(path=str(ARTIFACTS / "failure.png"), full_page=True)
            raise
        finally:
            ctx.close()
