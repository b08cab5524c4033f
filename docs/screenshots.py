"""Re-make the README's screenshots: serve the app, open its pages in Debian's chromium, save PNGs.

    .venv/bin/python docs/screenshots.py        # needs `apt-get install chromium` (see DESIGN.md)

Prints how long the overview took to render from `streamlit run` (model load included).
"""

import subprocess
import sys
import time
from pathlib import Path

from playwright.sync_api import sync_playwright

REPO = Path(__file__).resolve().parent.parent
PORT = 8599
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--no-first-run"]


def main() -> None:
    server = subprocess.Popen([sys.executable, "-m", "streamlit", "run", "app.py", "--server.port", str(PORT),
                               "--server.address", "127.0.0.1"], cwd=REPO,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    started = time.time()
    try:
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path="/usr/bin/chromium", args=FLAGS)
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            for _ in range(60):  # the server needs a moment before it accepts connections
                try:
                    page.goto(f"http://127.0.0.1:{PORT}/")
                    break
                except Exception:
                    time.sleep(1)
            page.get_by_role("heading", name="prunekit", exact=True).wait_for(timeout=120_000)
            page.get_by_text("Layers").first.wait_for(timeout=120_000)
            print(f"overview rendered {time.time() - started:.1f} s after streamlit run")
            page.goto(f"http://127.0.0.1:{PORT}/importance")
            page.get_by_role("heading", name="Head importance", exact=True).wait_for(timeout=120_000)
            page.locator(".js-plotly-plot").nth(1).wait_for(timeout=120_000)
            time.sleep(2)  # let plotly finish drawing
            page.screenshot(path=str(REPO / "docs" / "importance.png"), full_page=True)
            print(f"wrote {REPO / 'docs' / 'importance.png'}")
            browser.close()
    finally:
        server.terminate()
        server.wait()


if __name__ == "__main__":
    main()
