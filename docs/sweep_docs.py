"""Copy a finished demo sweep's results into docs/sweep-demo/ and draw its figure as a PNG.

    .venv/bin/python -m prunekit sweep --out cache/sweeps/demo-grid     # the 8-configuration grid
    .venv/bin/python docs/sweep_docs.py cache/sweeps/demo-grid          # -> docs/sweep-demo/

The figure is rendered by Debian's chromium (plotly's own PNG export needs kaleido, which we do
not install), from the same plotly figure the Experiments page shows.
"""

import shutil
import sys
import tempfile
from pathlib import Path

import plotly.io as pio

from prunekit.recovery import sweep
from prunekit.report import figures
from prunekit.ui.driver import browser_page

REPO = Path(__file__).resolve().parent.parent
FILES = (sweep.SWEEP_FILE, sweep.RESULTS_FILE, sweep.STRUCTURE_FILE, sweep.TABLE_FILE, sweep.TABLE_MARKDOWN)


def main(source: Path, target: Path = REPO / "docs" / "sweep-demo") -> None:
    status = sweep.sweep_status(source)
    if status["state"] != "finished":
        raise SystemExit(f"{source} is not a finished sweep (state: {status['state']})")
    target.mkdir(parents=True, exist_ok=True)
    for name in FILES:
        shutil.copy2(source / name, target / name)
    results, _ = sweep.read_results(source)
    pio.templates.default = (
        "plotly"  # importing streamlit made the app's template (placeholder colours) the default
    )
    figure = figures.sweep_curves(results)
    with tempfile.TemporaryDirectory() as tmp, browser_page(width=1200, height=520) as page:
        html = Path(tmp) / "figure.html"
        figure.write_html(html, include_plotlyjs=True, full_html=True, default_width=1150, default_height=480)
        page.goto(html.as_uri())
        page.locator(".js-plotly-plot").wait_for()
        page.wait_for_timeout(1000)
        page.screenshot(path=str(target / "accuracy.png"))
    print(f"wrote {', '.join(FILES)} and accuracy.png to {target}")


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else REPO / "cache" / "sweeps" / "demo-grid")
