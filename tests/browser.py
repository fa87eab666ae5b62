"""Shared set-up of the browser tests (imported as ``browser``; tests/ is on sys.path): Debian's
Chromium driven by Playwright with no ``playwright install``, flags that work offline and as root,
a free loopback port, and the marks that skip a browser test where Chromium is absent."""

from __future__ import annotations

import socket
import tempfile
from pathlib import Path
from typing import Any

import pytest

CHROMIUM = Path("/usr/bin/chromium")
#: headless, as root, and without the background connections this closed network refuses
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
#: ``pytestmark = browser.MARKS`` in a browser test module
MARKS = [pytest.mark.browser,
         pytest.mark.skipif(not CHROMIUM.exists(),
                            reason="needs Debian chromium: apt-get install -y chromium")]


def free_port() -> int:
    """A free TCP port on 127.0.0.1."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch(playwright: Any, width: int, height: int, **options: Any) -> Any:
    """A persistent Chromium context with a fresh profile (Playwright refuses --user-data-dir)."""
    return playwright.chromium.launch_persistent_context(
        tempfile.mkdtemp(prefix="sve-chromium-"), executable_path=str(CHROMIUM), headless=True,
        args=CHROMIUM_ARGS, viewport={"width": width, "height": height}, **options)


def wait_for_server(proc: Any, ready: Any, what: str, timeout: float = 60) -> None:
    """Poll ``ready()`` (True once the server answers; OSError counts as not yet) until it is, or fail
    the test when ``proc`` exits or ``timeout`` seconds pass; ``what`` says where to look."""
    import contextlib
    import time

    deadline = time.monotonic() + timeout
    while True:
        with contextlib.suppress(OSError):
            if ready():
                return
        if proc.poll() is not None or time.monotonic() > deadline:
            pytest.fail(f"{what} did not start (exit code {proc.poll()})")
        time.sleep(0.3)
