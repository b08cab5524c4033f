"""Responsiveness of the app (issue #4 targets), measured, written to bench/results/app.json.

    .venv/bin/python bench/app.py        # needs chromium (scripts/ensure-chromium); about 3 min

1. Startup: `streamlit run` to the overview rendered in chromium (title and model facts shown),
   and to its dense-accuracy metric, (a) cold: an empty prunekit cache, so the demo set is
   generated, featurised and evaluated; (b) warm: a second start on the same cache. Target 20 s.
2. First Fisher scores of the demo (1000 validation clips, the default) on the Head importance
   page, empty score cache, features cached: target 60 s.
3. Reruns with cached scores: median of 10 slider moves on the Prune page and of 10 matrix
   changes on the Head importance page (AppTest reruns, the page script end to end). Target 0.5 s.
4. Apply + evaluation of the demo's test split (1,330 clips) on the Prune page, the unpruned
   model's evaluation already shown (as it is before Apply appears). Target 10 s.
5. What a head attends to (Head importance): the first render for a clip (eager attention on a
   copy, every layer), then switching to another head of the same clip (cached), median of 5.
6. The Prune page with 10 applied variants in the history: median of 5 reruns (switching the
   history chart's axis), the page end to end. Target 0.5 s.
Run it on an otherwise idle machine: 2-thread torch slows 3-5x when another process takes a core.
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path

from prunekit.ui.driver import browser_page, serve_app

REPO = Path(__file__).resolve().parent.parent


def startup(cache: Path) -> dict:
    started = time.perf_counter()
    with serve_app(env={"PRUNEKIT_CACHE": str(cache)}) as url, browser_page() as page:
        page.goto(url)
        page.get_by_role("heading", name="prunekit", exact=True).wait_for(timeout=300_000)
        page.get_by_text("Layers", exact=True).wait_for(timeout=300_000)
        facts = time.perf_counter() - started
        page.get_by_text("Accuracy on the test split").wait_for(timeout=600_000)
        accuracy = time.perf_counter() - started
    return {"overview_rendered_s": round(facts, 2), "dense_accuracy_shown_s": round(accuracy, 2)}


def app_test(page: str | None = None, *, timeout: float = 900, **state):
    """The app under AppTest with ``state`` set before its first run; with ``page``, run once and
    switched to that page (not yet run). Shared with bench/ast_base_app.py."""
    from streamlit.testing.v1 import AppTest

    at = AppTest.from_file(str(REPO / "app.py"), default_timeout=timeout)
    for key, value in state.items():
        at.session_state[key] = value
    if page:
        at.run()
        at.switch_page(f"pages/{page}.py")
    return at


def timed(run) -> float:
    """Seconds ``run()`` takes."""
    start = time.perf_counter()
    run()
    return time.perf_counter() - start


def first_fisher() -> float:
    at = app_test("importance", imp_scorer="fisher")
    return timed(at.run)


def reruns() -> dict:
    at = app_test("prune", prune_scorer="magnitude")
    at.run()
    values = [0.05 * k for k in (4, 6, 8, 10, 12, 14, 8, 6, 4, 10)]
    slider = [timed(lambda v=v: at.slider(key="prune_sparsity").set_value(v).run()) for v in values]
    imp = app_test("importance")
    imp.run()
    views = ["W_q", "W_k", "W_v", "W_o", "QK pair", "VO pair", "Whole head"] * 2
    heatmap = [timed(lambda v=v: imp.selectbox(key="imp_view").set_value(v).run()) for v in views[:10]]
    return {
        "prune_slider_median_s": round(statistics.median(slider), 3),
        "prune_slider_max_s": round(max(slider), 3),
        "importance_view_median_s": round(statistics.median(heatmap), 3),
        "importance_view_max_s": round(max(heatmap), 3),
    }


def apply_and_evaluate() -> dict:
    at = app_test("prune", prune_scorer="magnitude")
    at.run()
    times = [timed(lambda: at.button(key="prune_apply").click().run()) for _ in range(3)]
    return {"apply_median_s": round(statistics.median(times), 2), "apply_all_s": [round(t, 2) for t in times]}


def attention_view() -> dict:
    at = app_test("importance", imp_scorer="magnitude")
    at.run()
    first = timed(lambda: at.toggle(key="imp_attention").set_value(True).run())
    heads = [1, 2, 3, 4, 5]
    switch = [timed(lambda h=h: at.selectbox(key="imp_head").set_value(h).run()) for h in heads]
    return {
        "attention_first_render_s": round(first, 2),
        "attention_other_head_median_s": round(statistics.median(switch), 3),
    }


def history_with_ten_variants() -> dict:
    at = app_test("prune", prune_scorer="magnitude")
    at.run()
    for k in range(10):
        at.slider(key="prune_sparsity").set_value(0.05 * (k + 2)).run()
        at.button(key="prune_apply").click().run()
    axes = ["Latency b1 (ms)", "MACs per clip (M)"] * 3
    times = [timed(lambda a=a: at.radio(key="prune_history_axis").set_value(a).run()) for a in axes[:5]]
    return {"variants": 10, "history_rerun_median_s": round(statistics.median(times), 3)}


def main() -> None:
    results: dict = {"machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores"}
    with tempfile.TemporaryDirectory() as tmp:
        results["startup_cold"] = startup(Path(tmp))
        results["startup_warm"] = startup(Path(tmp))
        os.environ["PRUNEKIT_CACHE"] = tmp  # the AppTest runs below share this cache
        results["first_fisher_1000_clips_s"] = round(first_fisher(), 2)
        results["reruns"] = reruns()
        results["apply"] = apply_and_evaluate()
        results["attention_view"] = attention_view()
        results["history"] = history_with_ten_variants()
    out = REPO / "bench" / "results" / "app.json"
    out.write_text(json.dumps(results, indent=2) + "\n")
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
