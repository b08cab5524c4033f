"""The Key priors page in a real browser: a short run's priors drawn on the patch grid, the key
sparsity slider moved with the keyboard, and Evaluate shows original, learned-priors and
key-pruned accuracy with the paired comparison."""

import os
from pathlib import Path

import pytest

from prunekit.keys.background import run_learning
from prunekit.keys.learn import KeyLearnConfig
from prunekit.store import cache_dir
from prunekit.ui.driver import browser_page, go_to, serve_app, wait_idle

pytestmark = pytest.mark.slow


def test_key_priors_page_in_chromium(tmp_path):
    shots = Path(os.environ.get("PRUNEKIT_SCREENSHOTS", tmp_path))
    config = KeyLearnConfig(train_clips=256, validation_clips=128)  # seconds on the demo
    run_learning(cache_dir() / "keys" / "browser", "demo", "demo", config)
    with serve_app() as url, browser_page(height=1700) as page:
        page.goto(url)
        page.get_by_role("link", name="Key priors", exact=True).wait_for(timeout=180_000)
        go_to(page, "Key priors")
        page.get_by_role("heading", name="The learned priors", exact=True).wait_for(timeout=300_000)
        page.locator(".js-plotly-plot").first.wait_for(timeout=120_000)
        slider = page.get_by_role("slider").first
        slider.focus()
        page.keyboard.press("ArrowRight")  # 50 % -> 55 %
        page.get_by_text("kept at 55% key sparsity").wait_for(timeout=120_000)
        page.keyboard.press("ArrowLeft")
        page.get_by_text("kept at 50% key sparsity").wait_for(timeout=120_000)
        page.get_by_role("button", name="Evaluate original, learned priors and key-pruned").click()
        page.get_by_text("McNemar").first.wait_for(timeout=600_000)
        wait_idle(page)
        assert page.get_by_text("key-pruned is").count() == 1
        assert page.locator('[data-testid="stException"]').count() == 0
        page.screenshot(path=str(shots / "keys.png"), full_page=True)
