"""Foundation figures: synthetic data generation time, demo model load time, evaluation
throughput, MACs and latency, and the demo's held-out-voice test accuracy.

    .venv/bin/python bench/foundation.py            # writes bench/results/foundation.json

Generation is timed into a fresh temporary cache so a warm cache cannot flatter it.
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parent.parent


def timed(fn):
    start = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - start


def main() -> None:
    torch.set_num_threads(2)
    from prunekit.data.datasets import demo_dataset
    from prunekit.data.features import clip_features
    from prunekit.evaluation import cost, metrics
    from prunekit.models import load_model

    results: dict = {"machine": f"{platform.machine()}, {os.cpu_count()} cores", "torch": torch.__version__}

    with tempfile.TemporaryDirectory() as tmp:
        os.environ["PRUNEKIT_CACHE"] = tmp
        data, seconds = timed(lambda: demo_dataset(0))
        results["generate_default_set_s"] = round(seconds, 1)
        results["default_set_clips"] = len(data.clips)
        results["default_set_splits"] = {s: len(data.split(s)) for s in ("train", "validation", "test")}
    os.environ["PRUNEKIT_CACHE"] = str(REPO / "cache")
    data = demo_dataset(0)

    loads = [timed(lambda: load_model("demo"))[1] for _ in range(5)]
    results["demo_load_s_median"] = round(statistics.median(loads), 3)
    model, extractor, labels = load_model("demo")

    clips = data.split("test")
    feats, feat_s = timed(lambda: clip_features(clips, extractor, use_cache=False))
    _logits, fwd_s = timed(lambda: metrics.predict_logits(model, feats, batch_size=32))
    results["features_clips_per_s"] = round(len(clips) / feat_s, 1)
    results["forward_clips_per_s_b32"] = round(len(clips) / fwd_s, 1)
    results["evaluate_end_to_end_clips_per_s"] = round(len(clips) / (feat_s + fwd_s), 1)

    result = metrics.evaluate(model, extractor, labels, data, "test")
    results["demo_test_accuracy"] = round(result.accuracy, 4)
    results["demo_test_clips"] = len(clips)
    results["demo_validation_accuracy"] = round(
        metrics.evaluate(model, extractor, labels, data, "validation").accuracy, 4
    )

    row = cost.cost(model, repeats=30).iloc[0]
    results.update({k: (float(v) if "latency" in k else int(v)) for k, v in row.items()})

    out = REPO / "bench" / "results" / "foundation.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2) + "\n")
    for key, value in results.items():
        print(f"{key:34s} {value}")
    print(f"written to {out}")


if __name__ == "__main__":
    main()
