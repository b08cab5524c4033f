"""The Tokens page in a real browser: the demo's surviving patches are drawn, the keep-rate slider
moves with the keyboard, and Evaluate shows dense vs token-pruned accuracy and MACs."""

import os
import re
from pathlib import Path

import pytest
from appdriver import browser_page, go_to, serve_app, wait_idle

pytestmark = pytest.mark.slow


def _metric(page, label: str) -> str:
    box = page.locator('[data-testid="stMetric"]').filter(
        has=page.locator('[data-testid="stMetricLabel"]', has_text=re.compile(f"^{re.escape(label)}$")))
    return box.locator('[data-testid="stMetricValue"]').inner_text(timeout=300_000)


def test_tokens_page_in_chromium(tmp_path):
    shots = Path(os.environ.get("PRUNEKIT_SCREENSHOTS", tmp_path))
    with serve_app() as url, browser_page(height=2200) as page:
        page.goto(url)
        page.get_by_role("link", name="Tokens", exact=True).wait_for(timeout=180_000)
        go_to(page, "Tokens")
        page.get_by_text("Patch tokens per block: 45 → 45 → 32 → 32 → 23 → 17 → 17").wait_for(timeout=300_000)
        page.get_by_role("tab", name="A clip").click()
        page.get_by_text("after block 4: 17 of 45 patches").wait_for(timeout=300_000)
        slider = page.get_by_role("slider").first
        slider.focus()
        page.keyboard.press("ArrowLeft")  # 0.70 -> 0.65
        page.get_by_text("Patch tokens per block: 45 → 45 → 30 → 30 → 20 → 13 → 13").wait_for(timeout=120_000)
        wait_idle(page)
        page.get_by_role("tab", name="Accuracy and MACs").click()
        page.get_by_role("button", name="Evaluate on the test split").click()
        pruned = _metric(page, "Accuracy, token-pruned")
        assert pruned.endswith("%") and 50 < float(pruned.rstrip("%")) <= 100
        assert float(_metric(page, "MACs per clip, token-pruned").rstrip(" M")) < float(
            _metric(page, "MACs per clip, original").rstrip(" M"))
        page.locator(".js-plotly-plot").first.wait_for(timeout=120_000)
        wait_idle(page)
        page.screenshot(path=str(shots / "tokens.png"), full_page=True)
        assert page.locator('[data-testid="stException"]').count() == 0
