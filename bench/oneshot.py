"""One-shot pruning of the demo (no recovery): test accuracy per scorer x pattern x threshold.

    .venv/bin/python bench/oneshot.py      # writes bench/results/oneshot.csv and prints a table

What an interactive user tries first: score once (1000 validation clips for the gradient
scorers), prune to 30 % and 50 % attention sparsity, evaluate on the 1,330 test clips of
held-out voices. ``random`` is the floor a scorer must beat (mean of 3 seeds).
"""

from __future__ import annotations

import time
from pathlib import Path

import pandas as pd
import torch

REPO = Path(__file__).resolve().parent.parent

from prunekit.data.datasets import demo_dataset
from prunekit.evaluation import metrics
from prunekit.heads.planner import make_plan
from prunekit.heads.scoring import score, scoring_data
from prunekit.heads.surgery import apply_plan
from prunekit.models import load_model

SCORERS = ("fisher", "fisher-sample", "fisher-gate", "taylor", "magnitude", "random")
SPARSITIES = (0.3, 0.5)


def main() -> None:
    torch.set_num_threads(2)
    started = time.perf_counter()
    model, extractor, labels = load_model("demo")
    dataset = demo_dataset()
    data = scoring_data(dataset, extractor, labels, "validation", clips=1000)
    dense = metrics.evaluate(model, extractor, labels, dataset, "test").accuracy
    rows = []
    for scorer in SCORERS:
        seeds = (0, 1, 2) if scorer == "random" else (0,)
        for seed in seeds:
            scores = score(model, scorer, data, seed=seed)
            for pattern in ("entire-head", "per-head", "same-channel"):
                for threshold in ("global", "local"):
                    for target in SPARSITIES:
                        plan = make_plan(scores, pattern, threshold, target)
                        pruned = apply_plan(model, plan)
                        accuracy = metrics.evaluate(pruned, extractor, labels, dataset, "test").accuracy
                        rows.append({"scorer": scorer, "seed": seed, "pattern": pattern, "threshold": threshold,
                                     "target": target, "sparsity": round(plan.attention_sparsity(), 4),
                                     "accuracy": accuracy, "dense_accuracy": dense})
        print(f"{scorer} done ({time.perf_counter() - started:.0f} s)", flush=True)
    frame = pd.DataFrame(rows)
    out = REPO / "bench" / "results" / "oneshot.csv"
    frame.to_csv(out, index=False)
    table = (frame.groupby(["pattern", "threshold", "target", "scorer"])["accuracy"].mean()
             .unstack("scorer")[list(SCORERS)].mul(100).round(1))
    print(f"dense test accuracy {100 * dense:.1f} %; one-shot accuracy (%) by scorer:")
    print(table.to_string())
    print(f"written to {out} ({time.perf_counter() - started:.0f} s)")


if __name__ == "__main__":
    main()
