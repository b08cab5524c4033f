"""Development tooling: serve the app with `streamlit run` and drive it with Debian's chromium
through playwright (a test dependency, imported when a page is opened).

Shared by the end-to-end test, the README screenshots (docs/screenshots.py) and the
responsiveness benchmark (bench/app.py). Chromium comes from apt: playwright cannot download browsers on these machines.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

__all__ = [
    "CHROMIUM_FLAGS",
    "IDLE_SCRIPT",
    "REPO",
    "browser_page",
    "chromium_path",
    "free_port",
    "go_to",
    "metric_value",
    "serve_app",
    "wait_idle",
]

REPO = Path(__file__).resolve().parents[2]  # the checkout: app.py and pages/ live there
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


def chromium_path() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def serve_app(env: dict[str, str] | None = None, timeout: float = 120) -> Iterator[str]:
    """Start ``streamlit run app.py`` on a free local port; yield its URL once its health
    endpoint answers; stop it afterwards."""
    port = free_port()
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "streamlit",
            "run",
            "app.py",
            "--server.port",
            str(port),
            "--server.address",
            "127.0.0.1",
            "--server.headless",
            "true",
            "--browser.gatherUsageStats",
            "false",
        ],
        cwd=REPO,
        env={**os.environ, **(env or {})},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + timeout
        while True:
            if server.poll() is not None:
                raise RuntimeError(
                    f"streamlit exited with {server.returncode}: {server.stderr.read().decode()[-2000:]}"
                )
            try:
                with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2) as reply:
                    if reply.status == 200:
                        break
            except OSError:
                if time.monotonic() > deadline:
                    raise TimeoutError(f"streamlit did not answer on {url} within {timeout:.0f} s") from None
                time.sleep(0.2)
        yield url
    finally:
        server.terminate()
        try:
            server.wait(timeout=20)
        except subprocess.TimeoutExpired:
            server.kill()


@contextlib.contextmanager
def browser_page(width: int = 1400, height: int = 1000):
    """A chromium page (playwright), closed afterwards."""
    from playwright.sync_api import sync_playwright

    executable = chromium_path()
    if executable is None:
        raise RuntimeError(
            "chromium is not installed: run `scripts/ensure-chromium` (apt-get install chromium)"
        )
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=executable, args=CHROMIUM_FLAGS)
        try:
            yield browser.new_page(viewport={"width": width, "height": height})
        finally:
            browser.close()


def go_to(page, title: str, timeout: float = 120_000) -> None:
    """Open a page of the app through the sidebar (keeps the session) and wait for its title."""
    page.get_by_role("link", name=title, exact=True).click()
    heading = "prunekit" if title == "Overview" else title
    page.get_by_role("heading", name=heading, exact=True).wait_for(timeout=timeout)


# True once a rerun has finished: the condition of ``wait_idle``, for drivers of their own (the
# asynchronous playwright API in bench/sessions.py).
IDLE_SCRIPT = '() => !document.querySelector(\'[data-testid="stStatusWidget"], [data-stale="true"]\')'


def wait_idle(page, timeout: float = 300_000) -> None:
    """Wait until the app has finished its rerun: no status widget (Streamlit shows one while a
    run is slow) and no stale element (what the previous run drew and this one has not replaced
    yet; a page whose layout changed, as after generating the demo set, can show a section twice
    until the run ends)."""
    page.wait_for_timeout(300)
    page.wait_for_function(IDLE_SCRIPT, timeout=timeout)


def metric_value(page, label: str, timeout: float = 300_000) -> str:
    """The value shown by the ``st.metric`` whose label is exactly ``label``."""
    import re

    box = page.locator('[data-testid="stMetric"]').filter(
        has=page.locator('[data-testid="stMetricLabel"]', has_text=re.compile(f"^{re.escape(label)}$"))
    )
    return box.locator('[data-testid="stMetricValue"]').inner_text(timeout=timeout)
