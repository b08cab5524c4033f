"""What the multi-label paths cost: the paired mAP bootstrap at three sizes, and generating the
synthetic tagging set.

    .venv/bin/python bench/multilabel.py             # writes bench/results/multilabel.json
    .venv/bin/python bench/multilabel.py --no-generate   # the bootstrap only

1. ``paired.bootstrap_map_difference`` (what Apply and ``prune`` run on multi-label data) on
   random scores and tags (10 % positives) at the tagging set's test split (456 clips x 14
   tags), a Speech-Commands-sized split (1,330 x 35) and an FSD50K-eval-sized one (10,231 x
   200). Each size is timed ``--repeats`` times in turn, round after round, and the median and
   the range are kept; the largest runs 50 resamples and is scaled to 1,000 (the time is linear
   in the resamples: one chunk of draws after another).
2. ``tagging.generate`` of the whole default set (4,608 clips) into a temporary folder, once.

The machine's load average is recorded beside the numbers: on a shared machine they are only
as good as it was idle.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

from prunekit.data import tagging
from prunekit.evaluation.paired import bootstrap_map_difference

REPO = Path(__file__).resolve().parent.parent
SIZES = (("tagging set test", 456, 14, 1000), ("1,330 x 35", 1330, 35, 1000), ("FSD50K eval", 10231, 200, 50))


def bootstrap(repeats: int) -> list[dict]:
    rng = np.random.default_rng(0)
    cases = []
    for name, n, c, resamples in SIZES:
        targets = (rng.random((n, c)) < 0.1).astype(float)
        cases.append((name, n, c, resamples, targets, rng.random((n, c)), rng.random((n, c))))
    times = {name: [] for name, *_ in cases}
    for _ in range(repeats):  # in turn, round after round: a slow spell hits every size alike
        for name, _n, _c, resamples, targets, a, b in cases:
            start = time.perf_counter()
            bootstrap_map_difference(a, b, targets, resamples=resamples)
            times[name].append((time.perf_counter() - start) * 1000 / resamples)  # s per 1,000
    return [
        {
            "case": name,
            "clips": n,
            "classes": c,
            "resamples_timed": resamples,
            "seconds_per_1000_resamples_median": round(statistics.median(times[name]), 2),
            "seconds_per_1000_resamples_range": [round(min(times[name]), 2), round(max(times[name]), 2)],
        }
        for name, n, c, resamples, *_ in cases
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--no-generate", action="store_true")
    parser.add_argument("--out", default=str(REPO / "bench" / "results" / "multilabel.json"))
    args = parser.parse_args()
    results = {
        "machine": f"{platform.machine()}, {os.cpu_count()} cores",
        "load_average_before": os.getloadavg()[0],
        "bootstrap": bootstrap(args.repeats),
    }
    if not args.no_generate:
        with tempfile.TemporaryDirectory() as tmp:
            start = time.perf_counter()
            tagging.generate(Path(tmp) / "set")
            results["generate_tagging_set_seconds"] = round(time.perf_counter() - start, 1)
    results["load_average_after"] = os.getloadavg()[0]
    Path(args.out).write_text(json.dumps(results, indent=2) + "\n")
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
