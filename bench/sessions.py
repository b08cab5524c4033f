"""Five browser sessions at once through the golden path (issue 12, item 3), measured, written to
bench/results/sessions.json.

    .venv/bin/python bench/sessions.py      # needs chromium (scripts/ensure-chromium); about 10 min

One `streamlit run` (as `make app` starts it, on 127.0.0.1) and one chromium with five
browser contexts, that is five Streamlit sessions, driven concurrently (playwright's async API).
Each session:

1. opens the Overview: the demo model's facts and its dense accuracy on the test split;
2. opens Prune and scores with magnitude (Fisher's 1,000 validation clips, five times at once,
   would take most of the run on two shared cores; the Apply path is the same);
3. moves the sparsity slider to its own values (session i: 0.51 + 0.05 i, then + 0.01 three
   times) and presses Apply four times: each Apply prunes and evaluates 1,330 test clips. With
   at most 3 models in memory per session (the default), the first variant goes to the
   session's folder under cache/sessions/;
4. downloads its history table (CSV) and checks that it names exactly its own four variants;
5. opens Listen on its oldest variant, which is read back from disk, and waits for the clip's
   audio and the two models' answers.

Measured: the server's peak RSS (VmHWM of the streamlit process, and RSS sampled every 0.2 s),
the time of every Apply (click to the end of the rerun), the Listen read-back, and, once the
browsers have closed (sessions dropped after `server.disconnectedSessionTTL`, set to 5 s here),
how long until the session folders are gone. The cache is a fresh temporary folder holding the
demo set and its features (linked from cache/): scores and evaluations are computed cold.
"""

from __future__ import annotations

import asyncio
import contextlib
import csv
import io
import json
import os
import platform
import re
import shutil
import statistics
import tempfile
import threading
import time
from pathlib import Path

import psutil

from prunekit.ui.driver import CHROMIUM_FLAGS, IDLE_SCRIPT, chromium_path, serve_app

REPO = Path(__file__).resolve().parent.parent
SESSIONS = int(os.environ.get("BENCH_SESSIONS", 5))  # other counts write sessions_<n>.json
APPLIES = 4
SCORER = "magnitude"  # Fisher's 1,000 clips x 5 sessions would dominate a shared 2-core machine
TIMEOUT = 1_800_000  # ms: five sessions share two cores


class Sampler(threading.Thread):
    """RSS of the streamlit server process (and any children), every 0.2 s."""

    def __init__(self, pid: int) -> None:
        super().__init__(daemon=True)
        self.process = psutil.Process(pid)
        self.peak = 0
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.stop.is_set():
            try:
                rss = self.process.memory_info().rss + sum(
                    c.memory_info().rss for c in self.process.children(recursive=True)
                )
            except psutil.Error:
                return
            self.peak = max(self.peak, rss)
            time.sleep(0.2)


def vm_hwm(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("no VmHWM")


RESULT_HEADING = """() => {
    const h = [...document.querySelectorAll("h3")].find(e => e.innerText.startsWith("Result: "));
    return h ? h.innerText : "";
}"""


async def idle(page) -> None:
    """The rerun started by the last action has ended (the status widget came and went)."""
    with contextlib.suppress(Exception):  # a short rerun may have come and gone already
        await page.wait_for_selector('[data-testid="stStatusWidget"]', timeout=3_000)
    await page.wait_for_function(IDLE_SCRIPT, timeout=TIMEOUT)


async def metric(page, label: str) -> str:
    box = page.locator('[data-testid="stMetric"]').filter(
        has=page.locator('[data-testid="stMetricLabel"]', has_text=re.compile(f"^{re.escape(label)}$"))
    )
    return await box.locator('[data-testid="stMetricValue"]').inner_text(timeout=TIMEOUT)


async def go_to(page, title: str) -> None:
    await page.get_by_role("link", name=title, exact=True).click()
    heading = "prunekit" if title == "Overview" else title
    await page.get_by_role("heading", name=heading, exact=True).wait_for(timeout=TIMEOUT)


async def one_session(browser, url: str, i: int, start: float) -> dict:
    context = await browser.new_context(viewport={"width": 1400, "height": 2000}, accept_downloads=True)
    context.set_default_timeout(TIMEOUT)  # a click waits for a rerun that a loaded machine makes slow
    page = await context.new_page()
    times: dict = {"session": i}
    try:
        await page.goto(url)
        await page.get_by_role("heading", name="prunekit", exact=True).wait_for(timeout=TIMEOUT)
        await page.get_by_text("Accuracy on the test split").wait_for(timeout=TIMEOUT)
        times["overview_done_s"] = round(time.perf_counter() - start, 1)
        print(f"session {i}: overview at {times['overview_done_s']} s", flush=True)

        await go_to(page, "Prune")
        await page.locator('[data-testid="stSelectbox"]').filter(has_text="Scorer").click()
        await page.get_by_role("option", name=SCORER, exact=True).click()  # interrupts Fisher's run
        await idle(page)
        await page.get_by_text(f"{SCORER} scores").first.wait_for(state="detached", timeout=TIMEOUT)
        await metric(page, "Attention sparsity reached")  # the scores are in
        await idle(page)
        times["scores_done_s"] = round(time.perf_counter() - start, 1)
        print(f"session {i}: scores at {times['scores_done_s']} s", flush=True)
        slider = page.get_by_role("slider").first
        for _ in range(5 * i):  # 0.50 -> 0.50 + 0.05 i, one rerun per step
            await slider.focus()
            await page.keyboard.press("ArrowRight")
            await idle(page)
        applies, reached = [], []
        for _ in range(APPLIES):
            await slider.focus()
            await page.keyboard.press("ArrowRight")
            await idle(page)
            reached.append(await metric(page, "Attention sparsity reached"))
            before = await page.evaluate(RESULT_HEADING)
            clicked = time.perf_counter()
            await page.get_by_role("button", name="Apply").click()
            # Done when the result's heading names the new variant (each Apply here is a new name).
            await page.wait_for_function(
                f"prev => ({RESULT_HEADING})() !== prev", arg=before, timeout=TIMEOUT
            )
            await idle(page)
            await metric(page, "Pruned accuracy")
            applies.append(round(time.perf_counter() - clicked, 2))
            print(f"session {i}: Apply {len(applies)} took {applies[-1]} s", flush=True)
        times["apply_s"] = applies
        times["sparsity_reached"] = reached

        async with page.expect_download() as download:
            await page.get_by_role("button", name="Download this table (CSV)").click()
        table = (await (await download.value).path()).read_text()
        rows = list(csv.DictReader(io.StringIO(table)))
        times["history"] = [r["Variant"] for r in rows]

        await go_to(page, "Listen")
        await page.get_by_text("Pruned variants").wait_for(timeout=TIMEOUT)
        await idle(page)  # the newest is chosen; add the oldest beside it
        await page.locator('[data-testid="stMultiSelect"]').filter(has_text="Pruned variants").click()
        clicked = time.perf_counter()
        await page.get_by_role("option", name=re.compile(rf"^{APPLIES - 1}: ")).click()  # the oldest
        await idle(page)
        await page.locator("audio").first.wait_for(state="attached", timeout=TIMEOUT)
        await page.get_by_text("True label:").wait_for(timeout=TIMEOUT)
        times["listen_oldest_s"] = round(time.perf_counter() - clicked, 2)
        times["exceptions_shown"] = await page.locator('[data-testid="stException"]').count()
        times["errors_shown"] = await page.locator('[data-testid="stAlertContentError"]').count()
    finally:
        await context.close()
    return times


async def drive(url: str) -> list[dict]:
    from playwright.async_api import async_playwright

    async with async_playwright() as p:
        browser = await p.chromium.launch(executable_path=chromium_path(), args=CHROMIUM_FLAGS)
        try:
            start = time.perf_counter()
            return await asyncio.gather(*(one_session(browser, url, i, start) for i in range(SESSIONS)))
        finally:
            await browser.close()


def fresh_cache(tmp: Path) -> None:
    """The demo set and its features from cache/ (linked), nothing else."""
    real = REPO / "cache"
    for folder in real.glob("synthetic-speech-commands-*"):
        if folder.is_dir():  # the set, not its lock file (a linked lock cannot be locked)
            (tmp / folder.name).symlink_to(folder)
    shutil.copytree(real / "features", tmp / "features")


def main() -> None:
    results: dict = {
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores",
        "load_average_before": [round(x, 2) for x in os.getloadavg()],
        "sessions": SESSIONS,
        "applies_per_session": APPLIES,
        "max_variants": int(os.environ.get("PRUNEKIT_MAX_VARIANTS", "3")),
    }
    with tempfile.TemporaryDirectory() as tmp:
        cache = Path(tmp)
        fresh_cache(cache)
        env = {"PRUNEKIT_CACHE": tmp, "STREAMLIT_SERVER_DISCONNECTED_SESSION_TTL": "5"}
        with serve_app(env=env) as url:
            server = next(c for c in psutil.Process().children() if "streamlit" in " ".join(c.cmdline()))
            sampler = Sampler(server.pid)
            sampler.start()
            rss_idle = server.memory_info().rss
            started = time.perf_counter()
            sessions = asyncio.run(drive(url))
            results["wall_s"] = round(time.perf_counter() - started, 1)
            results["load_average_after"] = [round(x, 2) for x in os.getloadavg()]
            folders = sorted((cache / "sessions").glob("*"))
            results["session_folders_after_run"] = len(folders)
            results["parked_models_after_run"] = len(list((cache / "sessions").glob("*/variant-*")))
            # The browsers are closed: Streamlit keeps a session 5 s (the TTL set above) for a
            # reconnect, then drops it; its folder goes when its state is freed. Another session's
            # arrival makes Streamlit reap the expired ones, so one more visit is paid after 10 s.
            closed = time.perf_counter()
            time.sleep(10)
            asyncio.run(_visit(url))
            while any(f.exists() for f in folders) and time.perf_counter() - closed < 120:
                time.sleep(1)
            left = [f.name for f in folders if f.exists()]
            results["session_folders_left_after_close"] = len(left)
            results["session_folders_removed_within_s"] = (
                None if left else round(time.perf_counter() - closed, 1)
            )
            sampler.stop.set()
            results["server_rss_idle_mb"] = round(rss_idle / 2**20)
            results["server_peak_rss_mb"] = round(vm_hwm(server.pid) / 2**20)
            results["server_peak_rss_sampled_mb"] = round(sampler.peak / 2**20)
    applies = [t for s in sessions for t in s["apply_s"]]
    results["apply_s"] = {
        "slowest": max(applies),
        "median": statistics.median(applies),
        "fastest": min(applies),
        "count": len(applies),
    }
    results["listen_oldest_s_max"] = max(s["listen_oldest_s"] for s in sessions)
    own = []
    for s in sessions:
        variants = s["history"][1:]
        others = {v for t in sessions if t is not s for v in t["history"][1:]}
        own.append(len(variants) == APPLIES and not set(variants) & others and s["history"][0] == "original")
    results["every_session_saw_only_its_own_history"] = all(own)
    results["per_session"] = sessions
    print(json.dumps(results, indent=2))
    name = "sessions.json" if SESSIONS == 5 else f"sessions_{SESSIONS}.json"
    (REPO / "bench" / "results" / name).write_text(json.dumps(results, indent=2) + "\n")


async def _visit(url: str) -> None:
    from playwright.async_api import async_playwright

    async with async_playwright() as p:
        browser = await p.chromium.launch(executable_path=chromium_path(), args=CHROMIUM_FLAGS)
        page = await browser.new_page()
        await page.goto(url)
        await page.get_by_role("heading", name="prunekit", exact=True).wait_for(timeout=TIMEOUT)
        await browser.close()


if __name__ == "__main__":
    main()
