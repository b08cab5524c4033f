"""The hand-over report on the demo: how long `prunekit report` takes and how big the page is.

    nice -n 10 .venv/bin/python bench/report.py

Prunes the demo one-shot (Fisher, per-head, global, 50 %) into cache/bench-report/pruned (not
timed), then times ``build_report`` end to end (both evaluations of the 1,330 test clips, the
interleaved latency timing, the six clips) and writes the page to cache/bench-report/report.html.
Results go to bench/results/report.json.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import torch

from prunekit.data.datasets import demo_dataset
from prunekit.heads.pipeline import describe_plan
from prunekit.heads.planner import make_plan
from prunekit.heads.scoring import score_split
from prunekit.heads.surgery import apply_plan, save_pruned
from prunekit.models import load_model
from prunekit.report.handover import build_report, write_report

REPO = Path(__file__).resolve().parent.parent
WORK = REPO / "cache" / "bench-report"


def main() -> None:
    torch.set_num_threads(int(os.environ.get("BENCH_THREADS", "2")))
    original = load_model("demo")
    data = demo_dataset()
    scores = score_split(*original, "fisher", data, clips=1000)
    plan = make_plan(scores, "per-head", "global", 0.5)
    pruned = apply_plan(original.model, plan)
    save_pruned(pruned, WORK / "pruned", plan=plan, labels=original.labels, origin="demo", overwrite=True)
    load = " ".join(f"{v:.1f}" for v in os.getloadavg())
    start = time.perf_counter()
    text = build_report(
        original,
        pruned,
        data,
        "test",
        original_name="demo",
        pruned_name=describe_plan(plan),
        data_name=data.name,
    )
    seconds = time.perf_counter() - start
    path = write_report(WORK / "report.html", text, overwrite=True)
    result = {
        "plan": describe_plan(plan),
        "seconds": round(seconds, 1),
        "bytes": path.stat().st_size,
        "audio_elements": text.count("<audio"),
        "svg_figures": text.count("<svg"),
        "load_before": load,
        "threads": torch.get_num_threads(),
        "note": "both evaluations computed (the dense one may come from the disk cache), 20 timed rounds",
    }
    out = REPO / "bench" / "results" / "report.json"
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
