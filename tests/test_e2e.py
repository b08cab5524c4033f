"""End to end in a real browser: `streamlit run` on a free port, Debian's chromium through
playwright, every page visited, the sparsity slider moved with the keyboard, pruning applied,
the hand-over report downloaded, metrics and an <audio> element checked. Screenshots go to PRUNEKIT_SCREENSHOTS (docs/screenshots.py
sets it to docs/) or to the test's temporary folder."""

import os
from pathlib import Path

import pytest

from prunekit.ui.driver import browser_page, go_to, metric_value, serve_app, wait_idle

pytestmark = pytest.mark.slow


def test_the_golden_path_in_chromium(tmp_path):
    shots = Path(os.environ.get("PRUNEKIT_SCREENSHOTS", tmp_path))
    with serve_app() as url, browser_page(height=2000) as page:
        page.goto(url)
        page.get_by_role("heading", name="prunekit", exact=True).wait_for(timeout=180_000)
        assert metric_value(page, "Layers") == "6"
        page.get_by_text("Accuracy on the test split").wait_for(timeout=300_000)
        wait_idle(page)
        page.screenshot(path=str(shots / "overview.png"), full_page=True)

        go_to(page, "Head importance")
        page.locator(".js-plotly-plot").nth(1).wait_for(timeout=300_000)
        page.get_by_text("Show what this head attends to on a clip").click()
        page.get_by_text("CLS attention of layer").wait_for(timeout=300_000)  # the map's title
        wait_idle(page)
        page.screenshot(path=str(shots / "importance.png"), full_page=True)

        go_to(page, "Compare scorers")  # magnitude against Fisher: the first Fisher scores
        page.get_by_text("Heads they disagree on most").wait_for(timeout=300_000)
        page.locator(".js-plotly-plot").nth(3).wait_for(timeout=300_000)
        wait_idle(page)
        page.screenshot(path=str(shots / "compare.png"), full_page=True)

        go_to(page, "Prune")
        reached = metric_value(page, "Attention sparsity reached")
        slider = page.get_by_role("slider").first
        slider.focus()
        page.keyboard.press("ArrowRight")  # 0.50 -> 0.55
        page.wait_for_function(
            "old => [...document.querySelectorAll('[data-testid=stMetricValue]')]"
            ".some(e => e.innerText.startsWith('5') && e.innerText !== old)",
            arg=reached,
            timeout=60_000,
        )
        wait_idle(page)
        assert float(metric_value(page, "Attention sparsity reached").rstrip("%")) > float(
            reached.rstrip("%")
        )
        page.get_by_role("slider").first.focus()
        page.keyboard.press("ArrowLeft")  # back to 0.50: the rerun brings the first reading back
        page.wait_for_function(
            "old => [...document.querySelectorAll('[data-testid=stMetricValue]')]"
            ".some(e => e.innerText === old)",
            arg=reached,
            timeout=60_000,
        )
        wait_idle(page)
        assert metric_value(page, "Attention sparsity reached") == reached
        page.get_by_role("button", name="Apply").click()
        pruned = metric_value(page, "Pruned accuracy")
        original = metric_value(page, "Original accuracy")
        assert pruned.endswith("%") and original.endswith("%")
        assert 0 < float(pruned.rstrip("%")) <= 100
        page.get_by_text("This session's variants").wait_for()
        page.get_by_text("pruned variants").wait_for()  # the accuracy-against-MACs chart's legend
        wait_idle(page)
        page.screenshot(path=str(shots / "prune.png"), full_page=True)
        page.get_by_role("button", name="Make a report to hand over (HTML)").click()
        with page.expect_download(timeout=300_000) as download:  # the hand-over report
            page.get_by_role("button", name="Download the report (HTML)").click(timeout=300_000)
        report = tmp_path / "report.html"
        download.value.save_as(report)
        text = report.read_text()
        assert "What pruning did to demo" in text and text.count("<audio") == 6, text[:500]
        assert "Could not make the report" not in text

        go_to(page, "Listen")  # through the sidebar: the session (and its variant) carries over
        page.locator("audio").first.wait_for(state="attached", timeout=120_000)
        page.locator(".js-plotly-plot").nth(1).wait_for(timeout=120_000)
        assert page.get_by_text("No pruned variant yet").count() == 0
        wait_idle(page)
        page.screenshot(path=str(shots / "listen.png"), full_page=True)
        assert page.locator('[data-testid="stException"]').count() == 0

        go_to(page, "Experiments")  # the committed demo grid (docs/sweep-demo) is listed first
        page.get_by_text("Accuracy (%) after recovery at each attention sparsity").wait_for(timeout=120_000)
        page.locator(".js-plotly-plot").nth(1).wait_for(timeout=120_000)
        wait_idle(page)
        page.screenshot(path=str(shots / "experiments.png"), full_page=True)
        assert page.locator('[data-testid="stException"]').count() == 0
